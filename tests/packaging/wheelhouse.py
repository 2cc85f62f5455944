"""An offline wheelhouse for fresh-venv install tests.

CityEdge's own wheel is built from a clean copy of the checkout (the files git would clone, so a
stale build/ or an untracked file cannot leak into it). Every other wheel is repacked from the
distribution the test venv already has installed: the files its RECORD lists, its WHEEL tag,
its metadata. That needs no index and no network, and the fresh venvs get exactly the versions
the rest of the suite ran with. Only what the requested installs need is repacked.

The fresh venvs then install with `pip --no-index --find-links <wheelhouse>` and pip's own
resolver: a dependency missing from pyproject.toml is a dependency missing from the wheelhouse,
and the install fails.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT = "cityedge"
_SKIP_DIST_INFO = {"INSTALLER", "REQUESTED", "RECORD", "direct_url.json"}


class WheelhouseError(RuntimeError):
    pass


def _installed(name: str) -> metadata.Distribution:
    try:
        return metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise WheelhouseError(
            f"{name} is needed but not installed in the test venv ({sys.prefix}); "
            "reinstall it with ./run test"
        ) from None


def _marker_holds(marker: Marker | None, extras: Iterable[str], env: Mapping[str, str]) -> bool:
    if marker is None:
        return True
    wanted = list(extras) or [""]
    return any(marker.evaluate({**env, "extra": e}) for e in wanted)


def project_requirements(
    extras: Iterable[str] = (), env: Mapping[str, str] | None = None
) -> list[Requirement]:
    """CityEdge's own requirements for these extras (from pyproject.toml, via the installed
    metadata), with markers evaluated for `env` (default: this machine)."""
    dist = _installed(PROJECT)
    extras = list(extras)
    out = []
    for text in dist.requires or []:
        req = Requirement(text)
        if _marker_holds(req.marker, extras, env or {}):
            out.append(req)
    return out


def closure(
    extras: Iterable[str] = (), env: Mapping[str, str] | None = None
) -> dict[str, metadata.Distribution]:
    """Every installed distribution a `pip install 'cityedge[extras]'` needs (CityEdge itself
    excluded), by canonical name; markers evaluated for `env` (default: this machine)."""
    env = dict(env or {})
    found: dict[str, metadata.Distribution] = {}
    done: set[tuple[str, frozenset[str]]] = set()
    todo: list[Requirement] = project_requirements(extras, env)
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in done:
            continue
        done.add(key)
        if name == PROJECT:  # a self-reference such as cityedge[tools,fit,sim]
            todo.extend(project_requirements(req.extras, env))
            continue
        dist = found.get(name) or _installed(req.name)
        if not req.specifier.contains(dist.version, prereleases=True):
            raise WheelhouseError(
                f"the test venv has {req.name} {dist.version}, pyproject wants {req}"
            )
        found[name] = dist
        for text in dist.requires or []:
            sub = Requirement(text)
            if _marker_holds(sub.marker, req.extras, env):
                todo.append(sub)
    return found


def wheel_tags(dist: metadata.Distribution) -> list[str]:
    text = dist.read_text("WHEEL") or ""
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]


def is_pure(dist: metadata.Distribution) -> bool:
    tags = wheel_tags(dist)
    return bool(tags) and all(t.endswith("-none-any") for t in tags)


def _entry_point_scripts(dist: metadata.Distribution) -> set[str]:
    return {ep.name for ep in dist.entry_points if ep.group in ("console_scripts", "gui_scripts")}


def _record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def repack(dist: metadata.Distribution, out_dir: Path) -> Path:
    """Write an installed distribution back out as a wheel (stored, not compressed: fast)."""
    tags = wheel_tags(dist)
    if not tags:
        raise WheelhouseError(
            f"{dist.metadata['Name']} was not installed from a wheel (no WHEEL file)"
        )
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"]).lower()
    version = dist.version
    data_dir = f"{name}-{version}.data"
    site = Path(str(dist.locate_file(""))).resolve()
    prefix = Path(sys.prefix).resolve()
    scripts = Path(sysconfig.get_path("scripts")).resolve()
    skip_scripts = _entry_point_scripts(dist)  # pip writes these wrappers itself
    parts = [list(dict.fromkeys(t.split("-")[i] for t in tags)) for i in range(3)]
    tag = "-".join(".".join(p) for p in parts)  # py2-none-any + py3-none-any: py2.py3-none-any
    target = out_dir / f"{name}-{version}-{tag}.whl"
    record: list[str] = []
    dist_info: str | None = None
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as zf:
        for f in dist.files or []:
            rel = str(f)
            if "__pycache__" in f.parts or rel.endswith(".pyc"):
                continue
            top = f.parts[0]
            if top.endswith(".dist-info"):
                dist_info = top
                if f.name in _SKIP_DIST_INFO and len(f.parts) == 2:
                    continue
            path = (site / f).resolve()
            if not path.is_file():
                continue
            if rel.startswith(".."):
                if path.parent == scripts:
                    if path.name in skip_scripts:
                        continue
                    arcname = f"{data_dir}/scripts/{path.name}"
                elif prefix in path.parents:
                    arcname = f"{data_dir}/data/{path.relative_to(prefix).as_posix()}"
                else:
                    continue
            else:
                arcname = f.as_posix()
            data = path.read_bytes()
            if (
                arcname.startswith(f"{data_dir}/scripts/")
                and data.startswith(b"#!")
                and b"python" in data.split(b"\n", 1)[0]
            ):
                data = b"#!python\n" + data.split(b"\n", 1)[1]  # pip rewrites it for the new venv
            zf.writestr(arcname, data)
            record.append(_record_line(arcname, data))
        if dist_info is None:
            raise WheelhouseError(f"{dist.metadata['Name']}: no .dist-info in its RECORD")
        record.append(f"{dist_info}/RECORD,,")
        zf.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return target


def _checkout_files(repo: Path) -> list[str]:
    """The files a clone would have: tracked ones, plus new ones git does not ignore."""
    proc = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise WheelhouseError(f"git ls-files failed in {repo}: {proc.stderr.decode().strip()}")
    return [p for p in proc.stdout.decode().split("\0") if p and (repo / p).is_file()]


def build_project_wheel(repo: Path, out_dir: Path, scratch: Path) -> Path:
    """Build CityEdge's wheel from a clean copy of the checkout, offline (the test venv's
    setuptools, no build isolation)."""
    src = scratch / "checkout"
    for rel in _checkout_files(repo):
        dest = src / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, dest)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-w",
            str(out_dir),
            str(src),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise WheelhouseError(f"building the cityedge wheel failed:\n{proc.stdout}\n{proc.stderr}")
    wheels = sorted(out_dir.glob(f"{PROJECT}-*.whl"))
    if len(wheels) != 1:
        raise WheelhouseError(f"expected one cityedge wheel in {out_dir}, found {wheels}")
    return wheels[0]


def build(
    repo: Path, out_dir: Path, scratch: Path, extras_sets: Iterable[Iterable[str]]
) -> list[Path]:
    """The wheelhouse for these installs (each an iterable of extras; () is the base install)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    wheels = [build_project_wheel(repo, out_dir, scratch)]
    needed: dict[str, metadata.Distribution] = {}
    for extras in extras_sets:
        needed.update(closure(extras))
    wheels += [repack(dist, out_dir) for dist in needed.values()]
    return wheels
