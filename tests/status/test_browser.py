"""The real-browser test: Debian's headless Chromium (driven by Selenium through the system
chromedriver) loads the status page from a gateway running as its own process, fed by two
simulated nodes (the real firmware under the MicroPython unix port). One node is killed (a
power cut); without a reload, the page shows it offline with the reason within two report
intervals plus the margin. Screenshots of the site page and a device page go to docs/img/."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from host_tools.sim.brokers import MosquittoBroker
from host_tools.sim.simnode import SimNode

pytestmark = [pytest.mark.broker, pytest.mark.micropython]

SITE = "browser-school-01"
SPEED = 30.0  # report_s 60 → 2 s of real time; status_s 300 → 10 s
MARGIN_S = 4.0  # status.offline_margin_s (60 s in service; short here so the test is quick)
IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
    "--lang=th",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    chromium, driver_bin = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.skip("needs Debian's chromium and chromium-driver (tests/system-packages.txt)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for f in FLAGS:
        opts.add_argument(f)
    opts.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    drv = webdriver.Chrome(service=Service(driver_bin), options=opts)
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()


def _gateway_config(
    cfg: Path, tmp_path: Path, local_broker: MosquittoBroker, nodes: list[SimNode], port: int
) -> None:
    inventory = "".join(
        f'[[inventory.device]]\nid = "{n.device_id}"\nkind = "air"\nname = "{name}"\n'
        f'location = {{ lat = 13.75, lon = 100.5, name = "{place}" }}\n'
        for n, name, place in zip(
            nodes, ("ห้อง 1 / room 1", "สนาม / playground"), ("อาคาร A", "อาคาร B"), strict=True
        )
    )
    cfg.write_text(
        f'gateway_id = "gw-browser-01"\nsite_id = "{SITE}"\ndata_dir = "{tmp_path / "gw"}"\n'
        f'[local]\nhost = "{local_broker.host}"\nport = {local_broker.port}\n'
        "[upstream]\nenabled = false\n[metrics]\nenabled = false\n[health]\ninterval_s = 1\n"
        f"[status]\nport = {port}\nlate_grace_s = 1\noffline_margin_s = {MARGIN_S}\n"
        f"{inventory}"
    )


def _wait_both_online(base: str, nodes: list[SimNode]) -> None:
    """Both online, and their status (which carries their own cadence, 2 s) is in."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            devs = _get(f"{base}/api/devices")
        except OSError:
            devs = []
        if len(devs) == 2 and all(d["state"] == "online" and d["cadence_s"] == 2.0 for d in devs):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"nodes not online on the page: {devs}\n" + "\n".join(nodes[0].log[-20:]))


def _cell(browser: Any, device_id: str) -> dict[str, str]:
    # One script call: the table is replaced every poll, so no element is held.
    got: dict[str, str] = browser.execute_script(
        "var c = document.querySelector(arguments[0]);"
        "return c ? {state: c.getAttribute('data-state'),"
        " reason: c.querySelector('.reason').textContent} : {};",
        f"#row-{device_id} td.state",
    )
    return got


def _screenshots(browser: Any, base: str, device_id: str, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # docs/img is rewritten only when asked (CITYEDGE_UPDATE_SCREENSHOTS=1), so a test run
    # leaves the tree clean; otherwise the screenshots go to the test's directory.
    img = IMG if os.environ.get("CITYEDGE_UPDATE_SCREENSHOTS") == "1" else tmp_path
    img.mkdir(parents=True, exist_ok=True)
    browser.get(f"{base}/")  # the Thai page (the default language)
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "table"))
    browser.save_screenshot(str(img / "status-site.png"))
    browser.get(f"{base}/device/{device_id}?lang=en")
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "facts"))
    browser.save_screenshot(str(img / "status-device.png"))
    assert "readings" in browser.page_source
    for name in ("status-site.png", "status-device.png"):
        assert (img / name).read_bytes().startswith(b"\x89PNG")


def _stop(gateway: subprocess.Popen[bytes]) -> bytes:
    gateway.send_signal(signal.SIGTERM)
    try:
        out, _ = gateway.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        gateway.kill()
        out, _ = gateway.communicate()
    return out


def test_page_shows_a_killed_node_offline_with_its_reason_without_a_reload(
    tmp_path: Path, local_broker: MosquittoBroker, browser: Any
) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    nodes = [
        SimNode(
            "air",
            broker=local_broker.address,
            speed=SPEED,
            seed=700 + i,
            flash_dir=tmp_path / f"node{i}",
            site_id=SITE,
        )
        for i in range(2)
    ]
    port = _free_port()
    cfg = tmp_path / "gateway.toml"
    _gateway_config(cfg, tmp_path, local_broker, nodes, port)
    gateway = subprocess.Popen(
        [sys.executable, "-m", "edge_gateway", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for n in nodes:
            n.start()
        _wait_both_online(base, nodes)
        browser.get(f"{base}/?lang=en")
        for n in nodes:
            assert _cell(browser, n.device_id)["state"] == "online"
        browser.execute_script("window.__notReloaded = true;")
        browser.save_screenshot(str(tmp_path / "before.png"))

        victim = nodes[0]
        victim.kill()  # a power cut: the process dies, nothing flushed
        killed_at = time.monotonic()
        cadence = 60.0 / SPEED

        def offline(drv: Any) -> bool:
            return _cell(browser, victim.device_id).get("state") == "offline"

        # Two intervals + the margin after the last reading, plus one poll of the page (5 s).
        WebDriverWait(browser, 2 * cadence + MARGIN_S + 5 + 10, poll_frequency=0.5).until(offline)
        took = time.monotonic() - killed_at
        assert took <= 2 * cadence + MARGIN_S + 5 + 10
        assert browser.execute_script("return window.__notReloaded === true;"), "page reloaded"
        reason = _cell(browser, victim.device_id)["reason"]
        assert "no reading for" in reason and "expected every 2 s" in reason, reason
        assert _cell(browser, nodes[1].device_id)["state"] == "online"
        offline_count = "return document.querySelector('[data-count=\"offline\"]').textContent;"
        assert browser.execute_script(offline_count) == "1"
        _screenshots(browser, base, nodes[1].device_id, tmp_path)
    finally:
        for n in nodes:
            n.close()
        out = _stop(gateway)
    assert gateway.returncode == 0, out.decode()[-2000:]
