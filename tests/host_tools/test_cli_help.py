"""`cityedge --help` describes every command and option, listing commands speak JSON, and the
generated shell completion completes commands and options in a real bash."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from host_tools.cli import build_parser
from host_tools.cli import main as cityedge
from host_tools.field.completion import bash_script, command_tree
from host_tools.field.inventory import Inventory
from tests.host_tools.test_broker_auth import _device, _store

LISTING = ("node list", "node inventory", "gateway stats")


def _walk(parser: argparse.ArgumentParser, path: str = "") -> dict[str, argparse.ArgumentParser]:
    found = {path: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.update(_walk(child, f"{path} {name}".strip()))
    return found


def test_every_command_has_a_description_and_every_option_help() -> None:
    parser, _ = build_parser()
    missing = []
    for path, p in _walk(parser).items():
        if not p.description:
            missing.append(f"{path or 'cityedge'}: no description")
        for a in p._actions:
            if (
                not isinstance(
                    a, argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction
                )
                and not a.help
            ):
                missing.append(f"{path}: {'/'.join(a.option_strings) or a.dest} has no help")
    assert not missing, "\n".join(missing)


def test_listing_commands_have_json() -> None:
    parser, _ = build_parser()
    commands = _walk(parser)
    for path in LISTING:
        assert any("--json" in a.option_strings for a in commands[path]._actions), path


def test_inventory_json_has_no_password_hashes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inv_path = tmp_path / "inv.sqlite"
    with Inventory(inv_path) as inv:
        _store(inv, _device("ce-aaaaaaaaaaa1", "rayong-school-01", "x"))
    capsys.readouterr()
    assert cityedge(["node", "inventory", "--json", "--inventory", str(inv_path)]) == 0
    devices = json.loads(capsys.readouterr().out)
    assert [d["device_id"] for d in devices] == ["ce-aaaaaaaaaaa1"]
    assert devices[0]["site_id"] == "rayong-school-01" and "password_hash" not in devices[0]
    assert (
        cityedge(
            [
                "node",
                "inventory",
                "--json",
                "--history",
                "ce-aaaaaaaaaaa1",
                "--inventory",
                str(inv_path),
            ]
        )
        == 0
    )
    events = json.loads(capsys.readouterr().out)
    assert events and events[0]["action"] == "provision"


def _complete(script: Path, line: str) -> list[str]:
    """What bash's completion offers for ``line`` (the cursor at its end)."""
    words = line.split(" ")
    program = (
        f"source {script}\nCOMP_WORDS=({' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n_cityedge\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n"
    )
    out = subprocess.run(
        ["bash", "--norc", "-c", program], capture_output=True, text=True, timeout=30, check=True
    )
    return out.stdout.split()


def test_bash_completion_completes_commands_and_options(tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    parser, _ = build_parser()
    script = tmp_path / "cityedge.bash"
    script.write_text(bash_script(command_tree(parser)))
    assert {"node", "gateway", "calibrate", "demo", "completion"} <= set(
        _complete(script, "cityedge ")
    )
    assert _complete(script, "cityedge node pro") == ["provision"]
    assert _complete(script, "cityedge -v node fl") == ["flash"]
    assert set(_complete(script, "cityedge gateway stats --")) == {"--config", "--json", "--help"}
    assert "--lat" in _complete(script, "cityedge node provision --kind air --l")
    assert _complete(script, "cityedge calibrate aqi p") == ["pm10", "pm25"]


def test_completion_command_prints_a_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert cityedge(["completion", "zsh"]) == 0
    out = capsys.readouterr().out
    assert (
        out.startswith("autoload -U +X bashcompinit")
        and "complete -o filenames -F _cityedge" in out
    )
