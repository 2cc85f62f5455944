"""The import rules between CityEdge's packages, read from the source with `ast`.

- the gateway, calibration, the city platform and the board definitions never import the field
  tools (`host_tools`): a Pi install, a platform server, needs none of them;
- the field tools (`host_tools.field`) never import the simulator (`host_tools.sim`): what a
  technician runs on real boards does not depend on the test doubles;
- one module touches paho-mqtt's private attributes (the QoS 2 link), each access marked with
  a `# paho-private:` comment on its line or the line above, so a paho upgrade has one place to
  check.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Packages below the field tools: they never import host_tools.
LOWER = ("edge_gateway", "calibration", "city_platform", "boards")
# The one module that may touch paho's privates (its path from the repository root).
PAHO_LINK = "edge_gateway/qos2link.py"
PAHO_MARK = "# paho-private:"
# paho.mqtt.client.Client's internals the gateway reaches (and aiomqtt's `_client`, the paho
# client inside aiomqtt.Client): exact names, and prefixes of families.
PAHO_PRIVATE = re.compile(
    r"^_(client|sock|in_packet|out_packet|mid_generate|in_messages|out_messages|"
    r"inflight_messages|max_inflight_messages|callback_mutex|out_message_mutex|"
    r"(send|handle|packet)_\w+)$"
)


def _sources(*packages: str) -> Iterator[Path]:
    for package in packages:
        root = REPO / package.replace(".", "/")
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" not in path.parts:
                yield path


def _module_of(path: Path) -> str:
    rel = (path.relative_to(REPO) if path.is_relative_to(REPO) else Path(path.name)).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in `path`, top level or inside a function, and every
    `importlib.import_module("...")` with a literal name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_of(path).rsplit(".", 1)[0] if path.name != "__init__.py" else None
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = (package or _module_of(path)).split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield node.lineno, base
            for alias in node.names:  # `from host_tools import sim` imports host_tools.sim
                yield node.lineno, f"{base}.{alias.name}"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(packages: tuple[str, ...], forbidden: str) -> list[str]:
    return [
        f"{path.relative_to(REPO)}:{line}: imports {module}"
        for path in _sources(*packages)
        for line, module in imported_modules(path)
        if _within(module, forbidden)
    ]


def paho_private_accesses(path: Path) -> Iterator[tuple[int, str]]:
    """(line, name) of each `x._name` (not on self/cls) and getattr/setattr/hasattr(x, "_name")
    whose name is one of paho's internals."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Attribute) and PAHO_PRIVATE.match(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                yield node.lineno, node.attr
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and PAHO_PRIVATE.match(node.args[1].value)
        ):
            yield node.lineno, node.args[1].value


def paho_violations(packages: tuple[str, ...] = LOWER + ("host_tools",)) -> list[str]:
    allowed = {PAHO_LINK}
    found: list[str] = []
    for path in _sources(*packages):
        rel = path.relative_to(REPO).as_posix()
        lines = path.read_text().splitlines()
        for line, name in paho_private_accesses(path):
            if rel not in allowed:
                found.append(f"{rel}:{line}: touches paho's {name} outside {PAHO_LINK}")
            elif PAHO_MARK not in lines[line - 1] and not (
                line >= 2 and lines[line - 2].strip().startswith(PAHO_MARK)
            ):
                found.append(f"{rel}:{line}: paho's {name} without a '{PAHO_MARK}' comment")
    return found


@pytest.mark.parametrize("package", LOWER)
def test_lower_layers_never_import_the_field_tools(package: str) -> None:
    assert violations((package,), "host_tools") == []


def test_the_field_tools_never_import_the_simulator() -> None:
    assert violations(("host_tools.field",), "host_tools.sim") == []


def test_only_the_qos2_link_touches_paho_privates_and_marks_each_access() -> None:
    assert paho_violations() == []


def test_the_rules_see_what_they_forbid(tmp_path: Path) -> None:
    """The parser finds imports inside functions, `from x import y` and import_module."""
    src = tmp_path / "m.py"
    src.write_text(
        "def f():\n    from host_tools import sim\n    import importlib\n"
        "    importlib.import_module('host_tools.sim.simnode')\n    c._client._sock\n"
    )
    found = [m for _, m in imported_modules(src)]
    assert "host_tools.sim" in found and "host_tools.sim.simnode" in found
    assert [n for _, n in paho_private_accesses(src)] == ["_sock", "_client"]
