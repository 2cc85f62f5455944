"""The `cityedge` command: one entry point, sub-commands per area.

Each area registers its own sub-commands (library first, CLI second); this module only wires
them together and is the one place that turns an exception into a message and an exit code:
any exception that carries a `hint` (and, if not 1, an `exit_code`) is the user's to fix
(`calibration.errors.user_error`, duck-typed, so no area imports this module to raise).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape

from calibration.errors import user_error
from host_tools import __version__, extras

# (module, function) pairs; each function takes the sub-parsers object of its level.
TOP_LEVEL = (
    ("host_tools.sim.demo", "add_parser"),
    ("edge_gateway.cli", "add_parser"),
    ("calibration.cli", "add_parser"),
    ("host_tools.field.completion", "add_parser"),
    ("edge_gateway.status.cli", "add_parsers"),
    ("edge_gateway.notify.cli", "add_parser"),
    ("city_platform.cli", "add_parser"),
    ("host_tools.field.release", "add_parser"),  # OTA bundles (docs/ota.md)
    ("edge_gateway.ota.cli", "add_parser"),  # OTA rollouts through a gateway
)
NODE_LEVEL = (
    ("host_tools.sim.simnode", "add_parser"),
    ("host_tools.field.field_parsers", "add_parsers"),
)

EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130

err_console = Console(stderr=True)


class CityEdgeError(Exception):
    """An error a user can act on. `hint` says what to do. Any exception with a `hint` gets the
    same treatment at the boundary; this class is for errors of the CLI's own."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = EXIT_FAILED):
        super().__init__(message)
        self.hint = hint
        self.exit_code = exit_code


def _register(sub: Any, entries: Sequence[tuple[str, str]]) -> list[str]:
    """Call each area's registration function.

    Registration imports only the base dependencies (optional ones are imported by the command
    that uses them; tests/packaging checks this in fresh venvs). Should an optional import slip
    into registration anyway, that area is left out and reported instead of breaking every
    command, the gateway's included."""
    missing: list[str] = []
    for module_name, func_name in entries:
        try:
            module = importlib.import_module(module_name)
            register: Callable[[Any], None] = getattr(module, func_name)
            register(sub)
        except ModuleNotFoundError as exc:
            missing.append(f"{module_name} (needs {exc.name})")
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
    _describe(parser)
    return parser, missing


def _describe(parser: argparse.ArgumentParser) -> None:
    """Every sub-command's own --help starts with a description: the one-line help its parent
    lists, unless the area gave a longer one."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, child in action.choices.items():
                if not child.description and helps.get(name):
                    text = str(helps[name])
                    child.description = text[0].upper() + text[1:] + "."
                _describe(child)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_USAGE


def _report(message: str, hint: str | None) -> None:
    # Escaped: messages and hints hold brackets ("pip install 'cityedge[sim]'", paths).
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    if hint:
        err_console.print(f"[cyan]what to do:[/] {escape(hint)}", highlight=False)


def main(argv: Sequence[str] | None = None) -> int:
    parser, missing = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG
        if args.verbose > 1
        else logging.INFO
        if args.verbose
        else logging.WARNING,
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
    except Exception as exc:  # noqa: BLE001 - the CLI boundary: translate, never dump a traceback on a user
        if isinstance(exc, ModuleNotFoundError) and (missing_extra := extras.missing_message(exc)):
            _report(*missing_extra)  # an optional dependency of this command: name its extra
            return EXIT_FAILED
        known = user_error(exc)  # duck-typed: `python -m host_tools.cli` has two CityEdgeErrors
        if known is not None:  # the user's to fix, not a bug to report
            message, hint, code = known
            _report(message, hint)
            if args.verbose:
                err_console.print_exception()
            return code
        _report(f"{type(exc).__name__}: {exc}", None)
        if args.verbose:
            err_console.print_exception()
        else:
            err_console.print("(run with -v for the full traceback)")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
