"""The one error boundary: `cityedge`'s entry point turns any exception that carries a `hint`
into "error: …" / "what to do: …" and its `exit_code`; anything else is a bug (exit 1)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from host_tools import cli

REPO = Path(__file__).resolve().parents[2]


class _Foreign(Exception):
    """Raised by no CityEdge package: only its attributes make it a user's error."""

    hint = "plug the sensor back in"
    exit_code = 7


def test_any_exception_with_a_hint_gets_its_message_and_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(path: str) -> None:
        raise _Foreign("the sensor is gone")

    monkeypatch.setattr("edge_gateway.cli.load_config", fail)
    assert cli.main(["gateway", "run", "--config", "x.toml"]) == 7
    err = capsys.readouterr().err
    assert "error: the sensor is gone" in err and "what to do: plug the sensor back in" in err
    assert "traceback" not in err


def test_an_exception_without_a_hint_is_a_bug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(path: str) -> None:
        raise KeyError("oops")

    monkeypatch.setattr("edge_gateway.cli.load_config", fail)
    assert cli.main(["gateway", "run", "--config", "x.toml"]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "KeyError" in err and "run with -v for the full traceback" in err


def test_python_m_host_tools_cli_keeps_the_exit_code(tmp_path: Path) -> None:
    """Run as `python -m host_tools.cli`, the module is loaded twice (as __main__ and as
    host_tools.cli): the boundary reads attributes, so a config error still exits 2."""
    out = subprocess.run(
        [sys.executable, "-m", "host_tools.cli", "gateway", "run", "--config", "missing.toml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2, out.stderr
    assert "not found" in out.stderr and "what to do:" in out.stderr


def test_python_m_calibration_reports_without_host_tools(tmp_path: Path) -> None:
    bad = tmp_path / "records.toml"
    bad.write_text("[[record]]\nnot toml at all = = =\n")
    out = subprocess.run(
        [sys.executable, "-m", "calibration", "check", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1 and out.stderr.startswith("error: "), out.stderr
    assert "Traceback" not in out.stderr
