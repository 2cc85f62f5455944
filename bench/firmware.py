"""Node firmware figures, one key=value line per node kind (not a test; see docs/firmware.md).

    python bench/firmware.py [--quick]

- mpy_total_bytes: every firmware file compiled with mpy-cross (what a deploy copies);
  mpy_resident_bytes: the modules this kind keeps loaded while it runs.
- min_heap: the smallest `-X heapsize` (the firmware's share; SimNode adds the simulated
  board's own allowance on top) with which the node runs for a simulated stretch without a
  MemoryError or a reset, found by stepping down; free_heap_at_min: what its status reports.
- radio_wakes_per_day: the battery board (sim-battery, deep sleep), counted in simulation over
  a simulated stretch and scaled to a day; the mains board keeps its link up (1).
- battery_days: the battery-board life the power model in docs/firmware.md implies at the
  firmware's default intervals (and at sample_s=60 for comparison).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from boards import KINDS
from host_tools.field.build import build_firmware
from host_tools.sim.brokers import MosquittoBroker
from host_tools.sim.simnode import SimNode, firmware_intervals, micropython_path

CORE = ("__init__", "app", "clock", "mqtt", "outbox", "net", "sensors")
RESIDENT = {
    "air": CORE + ("air", "filters", "drivers/pms5003", "drivers/sht3x"),
    "water": CORE + ("water", "filters", "drivers/ultrasonic", "drivers/sht3x"),
    "parking": CORE + ("parking", "drivers/qmc5883l"),
}

# Power model (docs/firmware.md "Power model"); charges in millicoulomb (mA * s).
SLEEP_UA = 80.0  # boards/sim-battery.json: ESP32 deep sleep 10 uA + LDO + divider
WAKE_S = 1.0  # a deep-sleep wake: boot, import .mpy, sample, write flash (estimate)
ACTIVE_MA = 50.0  # boards/sim-battery.json: CPU busy, radio off
RADIO_MC = 300.0  # anchors.md: one WiFi association wake ~4 s and ~300 mC
SENSOR_MC = {"air": 30.0 * 100.0, "water": 0.3 * 15.0, "parking": 0.01 * 0.1}
# air: PMS5003 fan+laser 30 s warm-up at <= 100 mA (Plantower manual); water: JSN-SR04T
# ~15 mA for 5 pings; parking: QMC5883L 100 uA for one conversion (QST datasheet).
CAPACITY_MAH = 2500.0  # boards/sim-battery.json
USABLE = 0.8  # keep 20 % for cold, ageing and the brown-out margin


def mpy_sizes() -> tuple[int, dict[str, int]]:
    """Per module, the bytes of the one firmware build (what deploy copies, what the
    simulation runs)."""
    sizes: dict[str, int] = {}
    for path, data in build_firmware().files.items():
        key = path.lstrip("/").rsplit(".", 1)[0].replace("node/", "")
        sizes[key] = len(data)
    return sum(sizes.values()), sizes


def runs_ok(
    kind: str,
    heap_k: int,
    broker: MosquittoBroker,
    seconds: float,
    speed: float,
    board: str = "sim",
    overrides: dict[str, Any] | None = None,
) -> tuple[bool, SimNode]:
    node = SimNode(
        kind,
        broker=broker.address,
        heap=f"{heap_k}k",
        speed=speed,
        seed=11 + KINDS.index(kind),  # a device id (MQTT client id) per kind: they run at once
        board=board,
        config_overrides=overrides or {},
    )
    node.start()
    try:
        time.sleep(seconds)
    finally:
        node.stop()
    log = "\n".join(node.log)
    statuses = sum(ln.startswith("node: status ") for ln in node.log)
    stored = sum(ln.startswith("node: stored ") for ln in node.log)
    ok = "MemoryError" not in log and node.boots == 1 and statuses >= 1 and stored >= 2
    node.close()
    return ok, node


def min_heap(kind: str, broker: MosquittoBroker, quick: bool) -> tuple[int, int]:
    """Step down 8 KB at a time from 112k; returns (smallest working heap in k, its free heap)."""
    overrides = {
        "intervals": {"sample_s": 60, "report_s": 300, "status_s": 300, "heartbeat_s": 120}
    }
    seconds = 5.0 if quick else 12.0
    best, free = 0, 0
    for heap_k in range(112, 40, -8):
        ok, node = runs_ok(kind, heap_k, broker, seconds, 120.0, overrides=overrides)
        if not ok:
            break
        best = heap_k
        frees = [int(ln.split()[3]) for ln in node.log if ln.startswith("node: status free_heap")]
        free = min(frees) if frees else 0
    return best, free


def radio_wakes_per_day(broker: MosquittoBroker, quick: bool) -> dict[str, float]:
    """Count radio wakes of the battery board per wake (sample_s=60, batch_s=900), scaled to a day."""
    want = 32 if quick else 92  # wakes: 2 or 6 batch periods after the power-on one, + 1
    speed = 240.0
    iv = {"sample_s": 60, "report_s": 300, "batch_s": 900, "status_s": 900}
    node = SimNode(
        "water",
        broker=broker.address,
        heap="112k",
        speed=speed,
        seed=99,
        board="sim-battery",
        config_overrides={"intervals": iv},
    )
    node.start()
    deadline = time.monotonic() + (50.0 if quick else 150.0)
    try:
        while time.monotonic() < deadline:
            if sum(ln.startswith("node: wake:") for ln in node.log) >= want:
                break
            time.sleep(0.25)
    finally:
        node.stop()
    reasons: dict[str, int] = {}
    for ln in node.log:
        if ln.startswith("node: radio: "):
            why = ln[len("node: radio: ") :]
            reasons[why] = reasons.get(why, 0) + 1
    wakes = sum(ln.startswith("node: wake:") for ln in node.log)
    node.close()
    # The power-on wake always says hello; the steady state is what the battery sees.
    if reasons.get("batch"):
        reasons["batch"] -= 1
        wakes -= 1
    # Per wake, then a day of wakes: a wake can take longer in real time than the sped-up
    # sample period, so simulated time is not the right denominator.
    per_day = 86400.0 / iv["sample_s"] / max(wakes, 1)
    return {why: n * per_day for why, n in reasons.items()}


def battery_days(
    kind: str, sample_s: float, batch_s: float, radio_per_day: float | None = None
) -> float:
    samples = 86400.0 / sample_s
    radio = radio_per_day if radio_per_day is not None else 86400.0 / batch_s
    mc_day = (
        SLEEP_UA / 1000.0 * 86400.0
        + samples * (WAKE_S * ACTIVE_MA + SENSOR_MC[kind])
        + radio * RADIO_MC
    )
    return CAPACITY_MAH * 3600.0 * USABLE / mc_day


def ota_figures() -> None:
    """OTA signature check per candidate algorithm (bench/ota_verify.py, docs/ota.md)."""
    from bench.ota_verify import ota_verify_figures

    for fig in ota_verify_figures():
        print("ota " + " ".join(f"{k}={v}" for k, v in fig.items()), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="shorter simulations (under a minute)")
    args = ap.parse_args()
    total, sizes = mpy_sizes()
    defaults = firmware_intervals(micropython_path(), str(REPO / "firmware"))
    broker = MosquittoBroker("bench").start()
    try:
        results: dict[str, tuple[int, int]] = {}
        threads = [
            threading.Thread(
                target=lambda k=k: results.__setitem__(k, min_heap(k, broker, args.quick))
            )
            for k in KINDS
        ]
        for t in threads:
            t.start()
        wakes_box: list[dict[str, float]] = []
        tw = threading.Thread(
            target=lambda: wakes_box.append(radio_wakes_per_day(broker, args.quick))
        )
        tw.start()
        for t in threads:
            t.join()
        tw.join()
    finally:
        broker.close()
    by_reason = wakes_box[0]
    wakes = sum(by_reason.values())
    for kind in KINDS:
        resident = sum(sizes.get(m, 0) for m in RESIDENT[kind])
        heap_k, free = results[kind]
        d_default = battery_days(kind, defaults["sample_s"], defaults["batch_s"])
        d_60 = battery_days(kind, 60.0, defaults["batch_s"], wakes)
        print(
            f"kind={kind} mpy_total_bytes={total} mpy_resident_bytes={resident} "
            f"min_heap={heap_k}k free_heap_at_min={free} "
            f"radio_wakes_per_day_battery={wakes:.0f} "
            f"alarm_wakes_per_day_battery={by_reason.get('alarm', 0.0):.0f} "
            f"radio_wakes_per_day_mains=1 "
            f"battery_days_default={d_default:.0f} battery_days_sample60={d_60:.0f}",
            flush=True,
        )
    ota_figures()
    print(json.dumps({"defaults": defaults}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
