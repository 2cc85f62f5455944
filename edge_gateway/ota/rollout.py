"""A rollout's plan and state (docs/ota.md): waves, per-device state, halting.

On disk, under ``<data_dir>/ota/``:

* ``rollouts/<version>/`` — the signed bundle (``manifest.txt``, ``manifest.sig``, ``files/``)
  and ``plan.json`` (``cityedge ota publish`` writes them; the gateway never signs anything);
* ``state.json`` — what the gateway's OTA service last knew (``cityedge ota status`` reads it).

A plan is a list of waves, each a device count (``1``) or a share of the devices (``25%``),
cumulative: ``1,25%,100%`` is a canary, then a quarter, then all. A wave starts once every
device of the previous one is healthy or failed and their failure rate is within the limit;
above it the rollout halts and no further device is offered the update.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TERMINAL_OK = "healthy"
FAILED = ("refused", "rolled_back")
STATES = ("offered", "downloading", "installed", "healthy", "rolled_back", "refused")


class PlanError(ValueError):
    """A plan that cannot be run; the message says what to write instead."""


def parse_waves(text: str) -> list[str]:
    waves = [w.strip() for w in text.split(",") if w.strip()]
    if not waves:
        raise PlanError("a plan needs at least one wave, e.g. 1,25%,100%")
    for w in waves:
        try:
            n = float(w[:-1]) if w.endswith("%") else int(w)
        except ValueError:
            raise PlanError(f"wave {w!r}: give a device count (1) or a share (25%)") from None
        if n <= 0 or (w.endswith("%") and n > 100):
            raise PlanError(f"wave {w!r}: must be above 0 (and at most 100%)")
    if not waves[-1].endswith("%") or float(waves[-1][:-1]) != 100:
        waves.append("100%")  # a rollout ends with every device
    return waves


def wave_sizes(waves: list[str], n: int) -> list[int]:
    """Cumulative device counts of each wave for `n` devices (each at least one more)."""
    out: list[int] = []
    for w in waves:
        k = math.ceil(n * float(w[:-1]) / 100) if w.endswith("%") else int(w)
        k = min(n, max(k, (out[-1] + 1) if out else 1))
        if not out or k > out[-1]:
            out.append(k)
    return out


def read_manifest(bundle: Path) -> tuple[dict[str, Any], dict[str, int], int]:
    """Header, {path: size} and the bundle's total bytes a node fetches (manifest included)."""
    raw = (bundle / "manifest.txt").read_bytes()
    lines = raw.decode("ascii").splitlines()
    head = json.loads(lines[0])
    if not isinstance(head, dict) or not isinstance(head.get("version"), int):
        raise ValueError("manifest header has no version")
    files: dict[str, int] = {}
    for line in lines[1:]:
        size, _, path = line.split(" ", 2)
        files[path] = int(size)
    total = len(raw) + (bundle / "manifest.sig").stat().st_size + sum(files.values())
    return head, files, total


@dataclass
class Device:
    state: str = "offered"
    ver: int = 0
    pct: float = 0.0
    reason: str | None = None
    running: int | None = None
    t: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Rollout:
    version: int
    waves: list[str]
    max_failure: float
    devices: list[str] = field(default_factory=list)  # in wave order, fixed at start
    wave: int = 0  # index of the wave being run
    halted: str | None = None
    done: bool = False
    state: dict[str, Device] = field(default_factory=dict)

    def sizes(self) -> list[int]:
        return wave_sizes(self.waves, len(self.devices))

    def current(self) -> list[str]:
        """Devices offered the update so far (every wave up to the current one)."""
        if not self.devices:
            return []
        sizes = self.sizes()
        return self.devices[: sizes[min(self.wave, len(sizes) - 1)]]

    def step(self) -> bool:
        """Advance or halt when the current wave is complete. True if something changed."""
        if self.halted or self.done or not self.devices:
            return False
        sizes = self.sizes()
        lo = sizes[self.wave - 1] if self.wave else 0
        members = self.devices[lo : sizes[self.wave]]
        states = [self.state.get(d, Device()).state for d in members]
        failed = sum(s in FAILED for s in states)
        if failed / len(members) > self.max_failure:
            self.halted = (
                f"wave {self.wave + 1} ({self.waves[self.wave]}): {failed} of {len(members)} "
                f"failed, above the limit of {self.max_failure:.0%}"
            )
            return True
        if all(s == TERMINAL_OK or s in FAILED for s in states):
            if self.wave + 1 >= len(sizes):
                self.done = True
            else:
                self.wave += 1
            return True
        return False

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "waves": self.waves,
            "max_failure": self.max_failure,
            "devices": self.devices,
            "wave": self.wave,
            "halted": self.halted,
            "done": self.done,
            "state": {d: s.as_dict() for d, s in sorted(self.state.items())},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Rollout:
        r = cls(int(d["version"]), list(d["waves"]), float(d["max_failure"]))
        r.devices = list(d.get("devices", []))
        r.wave = int(d.get("wave", 0))
        r.halted = d.get("halted")
        r.done = bool(d.get("done"))
        r.state = {k: Device(**v) for k, v in d.get("state", {}).items()}
        return r


def ota_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "ota"


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def latest_plan(root: Path) -> tuple[Path, dict[str, Any]] | None:
    """The published rollout with the highest version (its bundle dir and plan)."""
    best: tuple[Path, dict[str, Any]] | None = None
    for plan_path in (root / "rollouts").glob("*/plan.json"):
        try:
            plan = json.loads(plan_path.read_text())
            if best is None or int(plan["version"]) > int(best[1]["version"]):
                best = plan_path.parent, plan
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return best


def now() -> float:
    return time.time()
