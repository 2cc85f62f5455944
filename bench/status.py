"""Status-page benchmark: the city view at 5 000 devices on 250 sites, and what the status
page adds to a gateway.

    python bench/status.py            # 5 000 devices / 250 sites; gateway runs of 60 s
    python bench/status.py --quick    # the same city, gateway runs of 20 s

1. **City view** — a real Mosquitto as the platform broker holds the retained health of 250
   gateways and the retained status of 5 000 devices (a tenth of them silent for an hour, one
   gateway down by its last will). ``cityedge fleet serve`` runs as its own process. Reported:
   the time from starting it until all 5 000 are in; the time until the page is usable in
   headless Chromium (navigation start → ``load`` event, from the Performance API; the sites
   page, a site page, and the 5 000-row device table) — goal under 1 s; the p50/p99 of the
   JSON API over 200 sequential requests each; the RSS (VmRSS, VmHWM) of ``fleet serve``.
2. **Gateway cost** — the gateway process with ``[status] enabled = false`` and then ``true``,
   50 devices sending one reading a second each, while a browser-like client polls the page
   (``/live`` every 5 s) in the second run: VmHWM and CPU seconds (utime + stime from /proc)
   of the gateway over the run, side by side.

The last line printed is one line of ``key=value`` figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_gateway import contract
from edge_gateway.ingest import iso_utc
from host_tools.sim.brokers import MosquittoBroker, free_port, wait_for_port

SITES, PER_SITE = 250, 20


def _proc_mem(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024.0
    return out


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return bytes(r.read())


def _pcts(xs: list[float]) -> tuple[float, float]:
    xs = sorted(xs)
    return statistics.median(xs), xs[min(len(xs) - 1, round(0.99 * (len(xs) - 1)))]


def publish_city(broker: MosquittoBroker) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-city")
    c.connect(broker.host, broker.port)
    c.loop_start()
    now = time.time()
    infos = []
    for s in range(SITES):
        site, gw = f"bench-site-{s:03d}", f"gw-bench-{s:03d}"
        state = "offline" if s == 7 else "online"
        health = {"v": 1, "site_id": site, "gateway_id": gw, "state": state, "t": iso_utc(now)}
        infos.append(
            c.publish(contract.gateway_health_topic(site, gw), json.dumps(health), 1, retain=True)
        )
        for d in range(PER_SITE):
            dev = f"ce-{s:06x}{d:06x}"
            silent = (s * PER_SITE + d) % 10 == 0
            body = {
                "v": 1,
                "site_id": site,
                "gateway_id": gw,
                "device_id": dev,
                "kind": "air",
                "state": "offline" if silent else "online",
                "last_seen": iso_utc(now - (3600 if silent else 20)),
                "last_reading": iso_utc(now - (3600 if silent else 20)),
                "battery_v": 3.9,
                "rssi_dbm": -70,
                "outbox_depth": 0,
                "outbox_dropped": 0,
                "completeness": 0.98,
                "received_24h": 1411,
                "expected_24h": 1440,
                "sensor_errors": {},
                "fw": "0.1.0",
                "report_s": 60.0,
            }
            infos.append(
                c.publish(contract.device_status_topic(site, dev), json.dumps(body), 1, retain=True)
            )
    for i in infos:
        i.wait_for_publish(30)
    c.loop_stop()
    c.disconnect()


def browser_load_ms(urls: list[str], work: Path) -> list[float]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "chromium"
    for f in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={work / 'profile'}",
    ):
        opts.add_argument(f)
    drv = webdriver.Chrome(
        service=Service(shutil.which("chromedriver") or "chromedriver"), options=opts
    )
    out = []
    try:
        drv.get(urls[0])  # warm the browser itself (its start is not the page's cost)
        for url in urls:
            runs = []
            for _ in range(3):
                drv.get(url)
                runs.append(
                    float(
                        drv.execute_script(
                            "var n = performance.getEntriesByType('navigation')[0];"
                            "return n.loadEventEnd - n.startTime;"
                        )
                    )
                )
            out.append(statistics.median(runs))
    finally:
        drv.quit()
    return out


def start_fleet_view(broker: MosquittoBroker, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "host_tools.cli",
            "fleet",
            "serve",
            "--broker",
            broker.address,
            "--port",
            str(port),
            "--lang",
            "en",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_all_sites(base: str, port: int) -> None:
    """Until the view has every site's gateway and every device."""
    wait_for_port("127.0.0.1", port, 30)
    while True:
        sites = json.loads(_get(f"{base}/api/sites"))
        if sum(x["counts"]["devices"] for x in sites) >= SITES * PER_SITE and all(
            x["gateway"] for x in sites
        ):
            return
        time.sleep(0.1)


def api_latencies(base: str) -> dict[str, tuple[float, float]]:
    """p50 and p99 of each API call, in ms."""
    api: dict[str, tuple[float, float]] = {}
    for name, path in (
        ("summary", "/api/summary"),
        ("sites", "/api/sites"),
        ("devices_offline", "/api/devices?state=offline"),
        ("device", "/api/devices/ce-00000300000a"),
        ("devices_all", "/api/devices"),
    ):
        lat = []
        for _ in range(200 if name != "devices_all" else 40):
            a = time.perf_counter()
            _get(base + path)
            lat.append((time.perf_counter() - a) * 1000)
        api[name] = _pcts(lat)
    return api


def city(work: Path) -> dict[str, Any]:
    broker = MosquittoBroker("bench-platform", workdir=work / "platform").start()
    try:
        t0 = time.monotonic()
        publish_city(broker)
        publish_s = time.monotonic() - t0
        port = free_port()
        t1 = time.monotonic()
        proc = start_fleet_view(broker, port)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_all_sites(base, port)
            ready_s = time.monotonic() - t1
            summary = json.loads(_get(f"{base}/api/summary"))
            pages = [f"{base}/", f"{base}/site/bench-site-003", f"{base}/site/bench-site-007"]
            page_ms = browser_load_ms(pages, work)
            api = api_latencies(base)
            mem = _proc_mem(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
    finally:
        broker.stop()
    return {
        "publish_s": publish_s,
        "ready_s": ready_s,
        "summary": summary,
        "page_ms": page_ms,
        "api": api,
        "mem": mem,
    }


def air_reading(dev: str, seq: int) -> dict[str, Any]:
    return {
        "v": 1,
        "device_id": dev,
        "kind": "air",
        "fw": "0.1.0",
        "boot": 1,
        "seq": seq,
        "t": time.time(),
        "synced": True,
        "raw": {
            "pm25_cf1": {"v": 20.0 + seq % 9, "u": "ug/m3"},
            "pm25_atm": {"v": 18.0, "u": "ug/m3"},
            "pm10_atm": {"v": 25.0, "u": "ug/m3"},
            "temp": {"v": 31.0, "u": "Cel"},
            "rh": {"v": 60.0, "u": "%RH"},
            "battery": {"v": 3.9, "u": "V"},
        },
    }


def start_site_gateway(
    work: Path, local: MosquittoBroker, enabled: bool, port: int
) -> subprocess.Popen[bytes]:
    """A gateway without a platform, its status page on or off."""
    conf = work / f"gw-{enabled}.toml"
    conf.write_text(
        f'gateway_id = "gw-bench-01"\nsite_id = "bench-site-01"\n'
        f'data_dir = "{work / f"gw-data-{enabled}"}"\n'
        f'[local]\nhost = "{local.host}"\nport = {local.port}\n[upstream]\nenabled = false\n'
        f"[metrics]\nenabled = false\n[store]\nmin_free_bytes = 0\n"
        f"[status]\nenabled = {'true' if enabled else 'false'}\nport = {port}\n"
    )
    return subprocess.Popen(
        [sys.executable, "-m", "edge_gateway", "--config", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def feed(c: mqtt.Client, seconds: float, devices: int, live_url: str | None) -> list[float]:
    """A reading a second from each device for ``seconds``; the live page polled every 5 s
    (with ``live_url``). Returns the polls' latencies in ms."""
    t_end = time.monotonic() + seconds
    seq = 0
    next_poll = time.monotonic()
    polls = []
    while time.monotonic() < t_end:
        tick = time.monotonic()
        for d in range(devices):
            dev = f"ce-0000000b{d:04x}"
            c.publish(contract.node_topic(dev, "reading"), json.dumps(air_reading(dev, seq)), 1)
        seq += 1
        if live_url is not None and time.monotonic() >= next_poll:
            a = time.perf_counter()
            _get(live_url)
            polls.append((time.perf_counter() - a) * 1000)
            next_poll += 5
        time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    return polls


def gateway_run(work: Path, enabled: bool, seconds: float, devices: int = 50) -> dict[str, float]:
    local = MosquittoBroker(f"gw-local-{enabled}", workdir=work / f"local-{enabled}").start()
    port = free_port()
    proc = start_site_gateway(work, local, enabled, port)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-nodes")
    c.connect(local.host, local.port)
    c.loop_start()
    try:
        time.sleep(3)
        cpu0 = _cpu_s(proc.pid)
        live = f"http://127.0.0.1:{port}/live?view=site" if enabled else None
        polls = feed(c, seconds, devices, live)
        cpu = _cpu_s(proc.pid) - cpu0
        mem = _proc_mem(proc.pid)
    finally:
        c.loop_stop()
        c.disconnect()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        local.stop()
    out = {
        "cpu_s": cpu,
        "cpu_pct": 100 * cpu / seconds,
        "hwm_mb": mem.get("VmHWM", 0.0),
        "rss_mb": mem.get("VmRSS", 0.0),
    }
    if polls:
        out["live_p50_ms"], out["live_p99_ms"] = _pcts(polls)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    seconds = 20.0 if args.quick else 60.0
    with tempfile.TemporaryDirectory(prefix="cityedge-bench-status-") as tmp:
        work = Path(tmp)
        c = city(work)
        s = c["summary"]
        print(
            f"city view: {SITES} sites, {SITES * PER_SITE} devices "
            f"(online {s['online']}, offline {s['offline']}, unknown {s['unknown']})"
        )
        print(
            f"  retained messages published in {c['publish_s']:.2f} s; fleet serve had all "
            f"of them {c['ready_s']:.2f} s after it started"
        )
        names = ("sites page", "site page (20 devices)", "site page, gateway down")
        for n, ms in zip(names, c["page_ms"], strict=True):
            print(f"  usable in Chromium (load event): {n}: {ms:.0f} ms (goal < 1000 ms)")
        for name, (p50, p99) in c["api"].items():
            print(f"  API {name}: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        print(
            f"  fleet serve RSS {c['mem'].get('VmRSS', 0):.1f} MB "
            f"(peak {c['mem'].get('VmHWM', 0):.1f} MB)"
        )
        off = gateway_run(work, False, seconds)
        on = gateway_run(work, True, seconds)
        print(f"gateway, 50 devices x 1 reading/s for {seconds:.0f} s:   status off | on")
        print(f"  peak RSS MB                 {off['hwm_mb']:8.1f} | {on['hwm_mb']:.1f}")
        print(
            f"  CPU s (% of one core)       {off['cpu_s']:5.1f} ({off['cpu_pct']:.1f} %) | "
            f"{on['cpu_s']:.1f} ({on['cpu_pct']:.1f} %)"
        )
        if "live_p99_ms" in on:
            print(
                f"  page poll /live p50 {on['live_p50_ms']:.1f} ms, p99 {on['live_p99_ms']:.1f} ms"
            )
        figures = {
            "city_ready_s": round(c["ready_s"], 2),
            "sites_page_ms": round(c["page_ms"][0]),
            "site_page_ms": round(c["page_ms"][1]),
            "api_summary_p99_ms": round(c["api"]["summary"][1], 1),
            "api_devices_offline_p99_ms": round(c["api"]["devices_offline"][1], 1),
            "api_device_p99_ms": round(c["api"]["device"][1], 1),
            "fleet_rss_mb": round(c["mem"].get("VmRSS", 0), 1),
            "gw_hwm_off_mb": round(off["hwm_mb"], 1),
            "gw_hwm_on_mb": round(on["hwm_mb"], 1),
            "gw_cpu_off_pct": round(off["cpu_pct"], 1),
            "gw_cpu_on_pct": round(on["cpu_pct"], 1),
        }
        print(" ".join(f"{k}={v}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
