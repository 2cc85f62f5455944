"""The `cityedge` command: one entry point, sub-commands per area.

Each area registers its own sub-commands (library first, CLI second); this module only wires
them together and is the one place that turns an exception into a message and an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console

from host_tools import __version__

# (module, function) pairs; each function takes the sub-parsers object of its level.
TOP_LEVEL = (
    ("host_tools.demo", "add_parser"),
    ("edge_gateway.cli", "add_parser"),
    ("calibration.cli", "add_parser"),
    ("host_tools.release", "add_parser"),  # OTA bundles (docs/ota.md)
)
NODE_LEVEL = (
    ("host_tools.simnode", "add_parser"),
    ("host_tools.field_cli", "add_parsers"),
)

EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130

err_console = Console(stderr=True)


class CityEdgeError(Exception):
    """An error a user can act on. `hint` says what to do."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = EXIT_FAILED):
        super().__init__(message)
        self.hint = hint
        self.exit_code = exit_code


def _register(sub: Any, entries: Sequence[tuple[str, str]]) -> list[str]:
    """Call each area's registration function. An area whose optional dependencies are not
    installed (e.g. the fitting tool's numpy on a gateway Pi) is left out and reported."""
    missing: list[str] = []
    for module_name, func_name in entries:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing.append(f"{module_name} (needs {exc.name})")
            continue
        register: Callable[[Any], None] = getattr(module, func_name)
        register(sub)
    return missing


def build_parser() -> tuple[argparse.ArgumentParser, list[str]]:
    parser = argparse.ArgumentParser(
        prog="cityedge",
        description="CityEdge: city sensor nodes, site gateways, calibration and field tools.",
    )
    parser.add_argument("--version", action="version", version=f"cityedge {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    missing = _register(sub, TOP_LEVEL)
    node = sub.add_parser("node", help="simulate, flash, deploy, provision and verify nodes")
    node_sub = node.add_subparsers(dest="node_command", metavar="NODE_COMMAND")
    node.set_defaults(func=lambda args: _print_help(node))
    missing += _register(node_sub, NODE_LEVEL)
    return parser, missing


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    parser, missing = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        if missing:
            err_console.print(f"[yellow]not installed here:[/] {', '.join(missing)}")
        return EXIT_USAGE
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return EXIT_INTERRUPTED
    except CityEdgeError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        if exc.hint:
            err_console.print(f"[cyan]what to do:[/] {exc.hint}")
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the CLI boundary: translate, never dump a traceback on a user
        hint = getattr(exc, "hint", None)
        err_console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}")
        if hint:
            err_console.print(f"[cyan]what to do:[/] {hint}")
        if args.verbose:
            err_console.print_exception()
        else:
            err_console.print("(run with -v for the full traceback)")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
