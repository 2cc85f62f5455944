"""Breach-to-LINE latency: from a node publishing a reading above its canal's warning level to
the LINE Messaging API (a local fake speaking its API) accepting the push.

    python bench/alerts.py [--breaches 20] [--line-delay-ms 150]

A real gateway process with real Mosquitto brokers (site and platform), the dispatcher inside
the gateway (its default), and the same through the central dispatcher (`cityedge alerts serve`
on the platform broker). Each breach is a different gauge going from 1.98 m to 2.00 m MSL
(warning 2.0 m), rising 2 cm a minute. Prints p50 / p90 / max per mode, side by side, and the goal (30 s).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_gateway import contract
from host_tools.sim.brokers import MosquittoBroker
from tests.gateway.test_basic_path import STAGE
from tests.support.fake_services import FakeLine

TOKEN = "bench-line-token"
GROUP = "C" + "1" * 32


def reading(dev: str, seq: int, level: float, t: float) -> bytes:
    return json.dumps(
        {
            "v": 1,
            "device_id": dev,
            "kind": "water",
            "fw": "0.1.0",
            "boot": 1,
            "seq": seq,
            "t": t,
            "synced": True,
            "raw": {"distance": {"v": 4.0 - level, "u": "m"}, "air_temp": {"v": 30.0, "u": "Cel"}},
        }
    ).encode()


def write_configs(
    mode: str, work: Path, devices: list[str], local: int, platform: int, line_url: str
) -> None:
    """stage.toml (a stage record a device), alerts.toml (LINE, generous rate) and
    gateway.toml (the devices in its inventory; the dispatcher in it in gateway mode)."""
    (work / "line.token").write_text(TOKEN)
    (work / "stage.toml").write_text("".join(STAGE.replace("ce-0000000d0001", d) for d in devices))
    channel = (
        f'[channels.line]\ntype = "line"\nto = "{GROUP}"\ntoken_file = "line.token"\n'
        f'api_base = "{line_url}"\nrate_per_min = 6000\nburst = 100\n'
        '[[routes]]\nchannels = ["line"]\n'
    )
    (work / "alerts.toml").write_text(
        f'mode = "{mode}"\noutbox = "notify.sqlite"\n[broker]\nport = {platform}\n' + channel
    )
    inventory = "".join(
        f'[[inventory.device]]\nid = "{d}"\nkind = "water"\n'
        "water_warning_m = 2.0\nwater_critical_m = 3.0\n"
        for d in devices
    )
    notify = f'[notify]\nconfig = "{work / "alerts.toml"}"\n' if mode == "gateway" else ""
    (work / "gateway.toml").write_text(
        f'gateway_id = "gw-bench-01"\nsite_id = "bench-site-01"\ndata_dir = "{work / "gw"}"\n'
        f"[local]\nport = {local}\n[upstream]\nport = {platform}\n"
        f"[store]\nmin_free_bytes = 0\n[metrics]\nenabled = false\n"
        f'[calibration]\nrecords = "{work / "stage.toml"}"\n{notify}{inventory}'
    )


def start_processes(mode: str, work: Path) -> list[subprocess.Popen[bytes]]:
    """The gateway, and in central mode `cityedge alerts serve`, logging to procs.log."""
    log = (work / "procs.log").open("ab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    commands = [[sys.executable, "-m", "edge_gateway", "--config", str(work / "gateway.toml")]]
    if mode == "central":
        cityedge = str(Path(sys.executable).parent / "cityedge")
        commands.append([cityedge, "alerts", "serve", "--config", str(work / "alerts.toml")])
    return [
        subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        for cmd in commands
    ]


def measure(client: mqtt.Client, line: FakeLine, devices: list[str]) -> list[float]:
    """Per device, the seconds from a reading past the warning level to the LINE message."""
    latencies: list[float] = []
    time.sleep(3.0)  # processes up and subscribed
    # A gauge rising 2 cm a minute: 1.98 m sampled a minute ago, then 2.00 m now. (A jump
    # faster than QC's rate-of-change limit, 0.01 m/s, would wait for the next reading.)
    for dev in devices:
        client.publish(
            contract.node_topic(dev, "reading"), reading(dev, 0, 1.98, time.time() - 60), qos=1
        )
    time.sleep(1.0)
    for dev in devices:
        before = len(line.delivered)
        start = time.monotonic()
        client.publish(
            contract.node_topic(dev, "reading"), reading(dev, 1, 2.0, time.time()), qos=1
        )
        deadline = start + 60
        while len(line.delivered) == before and time.monotonic() < deadline:
            time.sleep(0.002)
        latencies.append(time.monotonic() - start)
        time.sleep(0.2)
    return latencies


def run_mode(mode: str, work: Path, breaches: int, delay_ms: int) -> list[float]:
    work.mkdir(parents=True)
    local = MosquittoBroker(name="local", workdir=work / "local")
    platform = MosquittoBroker(name="platform", workdir=work / "platform")
    local.start()
    platform.start()
    line = FakeLine(TOKEN, quota=None, delay_s=delay_ms / 1000).start()
    devices = [f"ce-0000bench{i:04d}" for i in range(breaches)]
    write_configs(mode, work, devices, local.port, platform.port, line.url)
    procs = start_processes(mode, work)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-nodes")
    client.connect("127.0.0.1", local.port)
    client.loop_start()
    try:
        return measure(client, line, devices)
    finally:
        client.loop_stop()
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(20)
        line.stop()
        local.stop()
        platform.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--breaches", type=int, default=20)
    ap.add_argument(
        "--line-delay-ms",
        type=int,
        default=150,
        help="how long the fake LINE takes to answer a push (the internet's share)",
    )
    args = ap.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cityedge-bench-alerts-") as tmp:
        for mode in ("gateway", "central"):
            lat = run_mode(mode, Path(tmp) / mode, args.breaches, args.line_delay_ms)
            lat.sort()
            results[mode] = {
                "p50_ms": statistics.median(lat) * 1000,
                "p90_ms": lat[int(0.9 * (len(lat) - 1))] * 1000,
                "max_ms": lat[-1] * 1000,
                "n": len(lat),
            }
    print(
        f"breach-to-LINE latency, {args.breaches} breaches, fake LINE answering in "
        f"{args.line_delay_ms} ms (goal: < 30 000 ms)"
    )
    print(f"{'':24}{'in the gateway':>18}{'central':>14}")
    for key in ("p50_ms", "p90_ms", "max_ms"):
        print(f"{key:24}{results['gateway'][key]:>18.0f}{results['central'][key]:>14.0f}")


if __name__ == "__main__":
    main()
