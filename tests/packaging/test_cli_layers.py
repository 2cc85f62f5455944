"""Which dependency each layer may import, checked in the test venv (fast; the fresh-venv
installs in test_installs.py check the same for real)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from host_tools import extras

REPO = Path(__file__).resolve().parents[2]
WALK = Path(__file__).with_name("walk_cli.py")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# Every command a user or a guide names; each must build and answer --help on a base install.
COMMANDS = {
    "demo",
    "gateway run",
    "gateway check-config",
    "gateway stats",
    "calibrate fit",
    "calibrate check",
    "calibrate aqi",
    "node simulate",
    "node list",
    "node flash",
    "node deploy",
    "node provision",
    "node verify",
    "node monitor",
    "node label",
    "node inventory",
    "node broker-files",
}


def walk(python: str, *args: str, cwd: Path | None = None) -> dict:  # type: ignore[type-arg]
    proc = subprocess.run(
        [python, str(WALK), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def check_walk(report: dict) -> None:  # type: ignore[type-arg]
    assert report["missing"] == [], "a command's parser imports an optional dependency"
    assert COMMANDS <= set(report["help"]), sorted(COMMANDS - set(report["help"]))
    failed = {cmd: code for cmd, code in report["help"].items() if code != 0}
    assert failed == {}, failed
    assert report["optional_imported"] == []


def test_every_parser_builds_without_the_optional_dependencies() -> None:
    # The test venv has every extra; --block makes them unimportable, as on a gateway Pi.
    check_walk(walk(sys.executable, "--block"))


def test_building_the_parser_imports_no_optional_dependency() -> None:
    # Not even when installed: `cityedge --help` stays fast and cannot break through an extra.
    report = walk(sys.executable)
    assert report["optional_imported"] == []


def test_every_extra_requirement_is_known_to_the_missing_extra_message() -> None:
    known = {canonicalize_name(dist): extra for dist, extra in extras.PROVIDED_BY.values()}
    for extra in ("tools", "fit", "sim", "platform"):
        for text in PYPROJECT["project"]["optional-dependencies"][extra]:
            name = canonicalize_name(Requirement(text).name)
            if name in extras.NOT_IMPORTED:
                continue
            assert name in known, f"{name} ({extra}) is missing from host_tools.extras.PROVIDED_BY"
            wanted = [
                e
                for e, reqs in PYPROJECT["project"]["optional-dependencies"].items()
                if any(canonicalize_name(Requirement(r).name) == name for r in reqs)
            ]
            assert known[name] in wanted, (name, known[name], wanted)


def test_the_fit_forms_in_the_parser_are_the_ones_fit_fits() -> None:
    from calibration import cli, fit

    assert cli.FIT_FORMS == fit.FORMS


def test_packaging_metadata_is_current() -> None:
    # PEP 639 licence expression (setuptools >= 77 reads it; the table form is deprecated).
    assert PYPROJECT["project"]["license"] == "MIT"
    assert (REPO / "LICENSE").is_file()
    requires = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    setuptools = next(r for r in requires if r.name == "setuptools")
    assert not setuptools.specifier.contains("76.9") and setuptools.specifier.contains("77.0")
    # ./run installs in a supported editable mode (compat mode is deprecated by setuptools).
    assert not re.search(r"editable_mode\s*=\s*compat", (REPO / "run").read_text())
