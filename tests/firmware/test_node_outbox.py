"""The node's flash outbox, run by the real MicroPython unix port: readings survive SIGKILL
(a power cut) at any moment, come back in order exactly once, torn slots are skipped, and a
full ring drops the oldest and counts it."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.tools import FIRMWARE, micropython

pytestmark = pytest.mark.micropython

# A producer that boots (new boot id), writes batches of readings and, like a gateway, takes
# custody of some of them. It prints what it has durably done, line-buffered, so the test
# knows what must survive a kill.
PRODUCER = r"""
import sys, random
from node import state
from node.outbox import Outbox
state.ensure_dir("data")
ob = Outbox("data", CAP, 0)
boot = state.next_boot("data", ob.last_boot)
print("BOOT", boot, ob.depth)
random.seed(SEED)
seq = 0
while seq < LIMIT:
    k = random.randint(1, 4)
    for i in range(k):
        ob.add(boot, seq, '{"boot":%d,"seq":%d,"pad":"%s"}' % (boot, seq, "x" * random.randint(0, 300)))
        seq += 1
    ob.flush()
    ob.maybe_persist()
    print("FLUSHED", boot, seq - 1)
    if ob.depth > 6:
        r = ob.next_unsent(4)
        if r is not None:
            b, s, _ = r
            # The gateway has stored b/s..s+2 before it acknowledges: say so first.
            print("ACKED", b, s, 3)
            ob.custody(b, s, s + 2)
            ob.maybe_persist()
"""

DRAIN = r"""
import json
from node.outbox import Outbox
ob = Outbox("data", CAP, 0)
print("DEPTH", ob.depth, ob.dropped, ob.corrupt)
while True:
    r = ob.next_unsent(1)
    if r is None:
        break
    b, s, p = r
    m = json.loads(bytes(p))
    assert m["boot"] == b and m["seq"] == s
    print("REC", b, s)
    ob.custody(b, s, s)
ob.persist()
print("LEFT", ob.depth)
"""


def _run(script: str, flash: Path, **subs: int) -> subprocess.Popen[str]:
    for k, v in subs.items():
        script = script.replace(k, str(v))
    (flash / "prog.py").write_text(script)
    return subprocess.Popen(
        [micropython(), "-X", "heapsize=256k", "prog.py"],
        cwd=flash,
        env={"MICROPYPATH": f"{FIRMWARE}:.frozen"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )


def _drain(flash: Path, cap: int) -> tuple[list[tuple[int, int]], list[int]]:
    p = _run(DRAIN, flash, CAP=cap)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0, out
    recs = [
        (int(a), int(b))
        for _, a, b in (ln.split() for ln in out.splitlines() if ln.startswith("REC"))
    ]
    depth = [
        int(x) for x in next(ln for ln in out.splitlines() if ln.startswith("DEPTH")).split()[1:]
    ]
    assert "LEFT 0" in out
    return recs, depth


def test_readings_survive_sigkill_in_order_exactly_once(tmp_path: Path) -> None:
    rng = random.Random(7)
    cap = 64
    flushed: set[tuple[int, int]] = set()
    acked: set[tuple[int, int]] = set()
    boots: list[int] = []
    for round_ in range(6):
        p = _run(PRODUCER, tmp_path, CAP=cap, SEED=round_ + 1, LIMIT=100000)
        assert p.stdout is not None
        first = p.stdout.readline()  # BOOT: the boot id is on flash; now cut the power
        deadline = time.monotonic() + rng.uniform(0.0, 0.1)
        while time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.002)
        p.send_signal(signal.SIGKILL)
        # Read the rest from the same buffered stream readline() used: communicate() with a
        # timeout reads the raw pipe and would lose lines readline() had already buffered
        # (an ACKED line lost that way made acknowledged readings look lost).
        out = p.stdout.read()
        p.wait(timeout=30)
        # Only complete lines count: a line cut by the kill was printed before its action.
        lines = (first + out).split("\n")[:-1]
        for ln in lines:
            parts = ln.split()
            if parts and parts[0] == "BOOT":
                boots.append(int(parts[1]))
            if parts and parts[0] == "FLUSHED":
                b, last = int(parts[1]), int(parts[2])
                flushed.update((b, s) for s in range(last + 1))
            elif parts and parts[0] == "ACKED":
                b, first, n = int(parts[1]), int(parts[2]), int(parts[3])
                acked.update((b, s) for s in range(first, first + n))
    recs, (depth, dropped, _corrupt) = _drain(tmp_path, cap)
    assert dropped == 0, "the ring never filled in this test"
    assert len(recs) == depth
    assert recs == sorted(recs), "readings come back in (boot, seq) order"
    assert len(set(recs)) == len(recs), "no reading twice"
    missing = flushed - acked - set(recs)
    assert not missing, f"flushed readings lost: {sorted(missing)[:10]}"
    assert boots == list(range(6)), "the boot id goes up by one on every boot, kills included"


def test_torn_slot_is_skipped_and_counted(tmp_path: Path) -> None:
    p = _run(PRODUCER, tmp_path, CAP=16, SEED=3, LIMIT=10)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 0, out
    last = max(int(ln.split()[2]) for ln in out.splitlines() if ln.startswith("FLUSHED"))
    # Tear the newest slot: power lost half-way through its payload.
    blob = bytearray((tmp_path / "data" / "outbox.bin").read_bytes())
    slot = (last % 16) * 512
    blob[slot + 20 : slot + 40] = b"\xff" * 20
    (tmp_path / "data" / "outbox.bin").write_bytes(bytes(blob))
    recs, _ = _drain(tmp_path, 16)
    assert recs and recs[-1][1] == last - 1, "the torn newest reading is not delivered"
    assert all(s != last for _, s in recs)


def test_full_ring_drops_oldest_and_counts(tmp_path: Path) -> None:
    script = PRODUCER.replace("if ob.depth > 6", "if False")
    p = _run(script, tmp_path, CAP=8, SEED=5, LIMIT=20)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 0, out
    last = max(int(ln.split()[2]) for ln in out.splitlines() if ln.startswith("FLUSHED"))
    recs, (depth, dropped, _c) = _drain(tmp_path, 8)
    assert depth == 8
    assert dropped == last + 1 - 8, "every overwritten reading is counted"
    assert [s for _, s in recs] == list(range(last - 7, last + 1)), "the newest 8 are kept"
    assert json.loads((tmp_path / "data" / "state.json").read_text())["boot"] == 0
