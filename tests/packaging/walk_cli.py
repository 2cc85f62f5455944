"""Build the `cityedge` parser and ask every command for its --help; print a JSON report.

Run by tests/packaging with the Python of the install under test (a fresh venv), or with
`--block` in the test venv: then every optional dependency (host_tools.extras) is made
unimportable first, as in a base install.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.abc
import io
import json
import sys
from collections.abc import Iterator

from host_tools.extras import PROVIDED_BY


class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        if fullname.split(".")[0] in PROVIDED_BY:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked)", name=fullname)


def _commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, ...]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _commands(sub, (*prefix, name))


def main() -> None:
    if "--block" in sys.argv:
        for name in list(sys.modules):
            if name.split(".")[0] in PROVIDED_BY:
                del sys.modules[name]
        sys.meta_path.insert(0, _Blocker())
    import host_tools
    from host_tools.cli import build_parser
    from host_tools.cli import main as cli_main

    parser, missing = build_parser()
    helps: dict[str, int | str | None] = {}
    for command in _commands(parser):
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                cli_main([*command, "--help"])
            code: int | str | None = "returned instead of exiting"
        except SystemExit as exc:
            code = exc.code
        helps[" ".join(command)] = code if "usage:" in out.getvalue() else f"{code}: no usage text"
    optional = sorted({m.split(".")[0] for m in sys.modules} & set(PROVIDED_BY))
    print(
        json.dumps(
            {
                "host_tools": host_tools.__file__,
                "missing": missing,
                "help": helps,
                "optional_imported": optional,
            }
        )
    )


if __name__ == "__main__":
    main()
