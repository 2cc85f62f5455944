"""Quarantine: a reading that made the gateway process die is never retried into a crash loop.

Every exception while processing a message is caught and makes that message a dead letter. But
a process can still die *with* a message in hand (a bug in a C extension, the kernel's OOM
killer, an error outside the per-message guard), and since a reading is acknowledged to the site
broker only after its commit, the broker and the node send the same reading again after the
restart — and the process dies again, for the whole site.

So the store thread writes the keys ``(device_id, boot, seq)`` of the group it is about to
process to ``processing.json`` in the data directory (one small write per group commit, not
fsynced: it only has to survive the process, not a power cut) and empties the file after the
commit. At start-up, a non-empty file names the group that was in hand when the process died:

* a group of several readings: each becomes a *suspect*; suspects are processed one per group
  commit when they come again, so the next death names one reading;
* a group of one reading, for the second time: that reading is *quarantined* (one death alone
  could still be a coincidence, such as a SIGKILL at that moment): when it comes again it is not
  processed but dead-lettered (reason ``quarantined``, the payload in the dead letter and kept
  in ``quarantine.json``), remembered for de-duplication and confirmed to the node with custody,
  so the node moves on.

A SIGKILL or power cut in the middle of a group makes its readings suspects once; they are then
processed singly, which costs a few more commits and nothing else. ``quarantine.json`` keeps the
last ``MAX_KEPT`` quarantined readings for the operator (``cityedge gateway stats`` counts them).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Key = tuple[str, int, int]
MAX_KEPT = 1000
MAX_SUSPECTS = 10_000


class Quarantine:
    """Crash bookkeeping of the store thread. Use from the store thread only."""

    def __init__(self, data_dir: Path) -> None:
        self.marker_path = data_dir / "processing.json"
        self.path = data_dir / "quarantine.json"
        self.suspects: set[Key] = set()
        self.quarantined: dict[Key, dict[str, Any]] = {}
        self.strikes: dict[Key, int] = {}  # deaths with this reading alone in hand
        self._fd: int | None = None
        self._marked = False

    def open(self) -> list[Key]:
        """Read what the last process left; returns the keys newly quarantined."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        saved = _read_json(self.path) or {}
        for item in saved.get("quarantined", []):
            with contextlib.suppress(KeyError, TypeError, ValueError):
                self.quarantined[(str(item["device_id"]), int(item["boot"]), int(item["seq"]))] = (
                    item
                )
        for item in saved.get("suspects", []):
            with contextlib.suppress(TypeError, ValueError):
                self.suspects.add((str(item[0]), int(item[1]), int(item[2])))
        for item in saved.get("strikes", []):
            with contextlib.suppress(TypeError, ValueError):
                self.strikes[(str(item[0]), int(item[1]), int(item[2]))] = int(item[3])
        died_with: list[Key] = []
        for item in _read_json(self.marker_path) or []:
            with contextlib.suppress(TypeError, ValueError):
                died_with.append((str(item[0]), int(item[1]), int(item[2])))
        new: list[Key] = []
        if len(died_with) == 1:
            key = died_with[0]
            self.strikes[key] = self.strikes.get(key, 0) + 1
            self.suspects.add(key)
            if self.strikes[key] >= 2 and key not in self.quarantined:
                self.suspects.discard(key)
                del self.strikes[key]
                self.quarantined[key] = {
                    "device_id": key[0],
                    "boot": key[1],
                    "seq": key[2],
                    "since": time.time(),
                    "payload_b64": None,
                }
                new.append(key)
        elif died_with:
            self.suspects.update(died_with)
            while len(self.suspects) > MAX_SUSPECTS:
                self.suspects.pop()
        if died_with:
            log.warning(
                "the gateway stopped while processing %d readings (%s); %s",
                len(died_with),
                ", ".join(f"{d}/{b}/{s}" for d, b, s in died_with[:5]),
                f"quarantined {new[0]}" if new else "they will be processed one by one",
            )
            self._save()
        self._fd = os.open(self.marker_path, os.O_RDWR | os.O_CREAT, 0o600)
        self._marked = True
        self._clear_marker()
        return new

    def close(self) -> None:
        if self._fd is not None:
            self._clear_marker()
            os.close(self._fd)
            self._fd = None

    def groups(self, keys: Sequence[Key]) -> list[list[int]]:
        """Indices of ``keys`` in processing groups, in their order (store order is the order
        readings are forwarded in): runs of ordinary readings together, every suspect alone."""
        if not self.suspects:
            return [list(range(len(keys)))]
        out: list[list[int]] = []
        run: list[int] = []
        for i, key in enumerate(keys):
            if key in self.suspects:
                if run:
                    out.append(run)
                    run = []
                out.append([i])
            else:
                run.append(i)
        if run:
            out.append(run)
        return out

    def is_quarantined(self, key: Key) -> bool:
        return key in self.quarantined

    def begin(self, keys: Sequence[Key]) -> None:
        """Before processing a group: name it in the marker file."""
        if self._fd is None or not keys:
            return
        data = json.dumps([list(k) for k in keys], separators=(",", ":")).encode()
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
        except OSError:  # a full disk: the commit will fail too and say so
            return
        self._marked = True

    def end(self, keys: Sequence[Key]) -> None:
        """After the group's commit: nothing is in hand any more; suspects that made it are
        cleared."""
        self._clear_marker()
        if self.suspects:
            cleared = [k for k in keys if k in self.suspects]
            if cleared:
                self.suspects.difference_update(cleared)
                for key in cleared:
                    self.strikes.pop(key, None)
                self._save()

    def abort(self) -> None:
        """The group's commit raised (and will be tried again): nothing is in hand."""
        self._clear_marker()

    def record_payload(self, key: Key, payload: bytes) -> None:
        """Keep the payload of a quarantined reading that came again (for the operator)."""
        item = self.quarantined.get(key)
        if item is not None and item.get("payload_b64") is None:
            item["payload_b64"] = base64.b64encode(payload[:4096]).decode("ascii")
            self._save()

    def _clear_marker(self) -> None:
        if self._fd is not None and self._marked:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            self._marked = False

    def _save(self) -> None:
        kept = sorted(self.quarantined.values(), key=lambda i: float(i.get("since") or 0))
        kept = kept[-MAX_KEPT:]
        self.quarantined = {(str(i["device_id"]), int(i["boot"]), int(i["seq"])): i for i in kept}
        body = {
            "quarantined": kept,
            "suspects": [list(k) for k in sorted(self.suspects)],
            "strikes": [[*k, n] for k, n in sorted(self.strikes.items())],
        }
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(body, separators=(",", ":")))
            os.replace(tmp, self.path)
        except OSError as exc:  # a full disk: the state stays in memory
            log.warning("cannot save %s: %s", self.path, exc)


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError:
        return None
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError:
        log.warning("%s is not JSON; ignored", path)
        return None
