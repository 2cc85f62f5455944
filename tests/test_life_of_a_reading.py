"""docs/architecture.md's "life of a reading" table names real code: every `file:function` in
it exists (a module-level function, or Class.method), so the table cannot drift from the tree."""

from __future__ import annotations

import ast
import re

from tests.support.tools import REPO

_REF = re.compile(r"`([\w/.]+\.py):([\w.]+)`")


def _table() -> list[str]:
    doc = (REPO / "docs" / "architecture.md").read_text()
    start = doc.index("## The life of a reading")
    end = doc.index("\n## ", start + 1)
    rows = [line for line in doc[start:end].splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) >= 15, "the life of a reading lost its steps"
    return rows


def _defined(path: str) -> set[str]:
    """Qualified names of the functions a file defines (``f``, ``Class.method``)."""
    tree = ast.parse((REPO / path).read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(f"{node.name}.{item.name}")
    return names


def test_every_step_names_a_function_that_exists() -> None:
    missing = []
    for row in _table():
        refs = _REF.findall(row)
        assert refs, f"a step without its file:function: {row}"
        for path, name in refs:
            if not (REPO / path).is_file() or name not in _defined(path):
                missing.append(f"{path}:{name}")
    assert not missing, f"docs/architecture.md names code that does not exist: {missing}"


def test_the_path_runs_from_the_node_to_the_platform() -> None:
    rows = _table()
    assert "firmware/node/" in rows[0] and "city_platform/" in rows[-1]
