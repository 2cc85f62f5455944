"""Fixtures for the alert dispatcher tests: fake LINE, webhook receiver, an alerts.toml."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_gateway.notify.settings import NotifySettings, load_settings
from tests.support.fake_services import FakeLine, WebhookReceiver

LINE_TOKEN = "line-token-Zq9x7PvW3kT2mN8rB5"
HOOK_SECRET = "hook-secret-4Jd8sLq2VbN7"
GROUP = "C4af4980629" + "0" * 22


@pytest.fixture
def line() -> Iterator[FakeLine]:
    server = FakeLine(LINE_TOKEN, quota=None).start()
    yield server  # type: ignore[misc]
    server.stop()


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(HOOK_SECRET).start()
    yield server  # type: ignore[misc]
    server.stop()


@pytest.fixture
def alerts_config(tmp_path: Path, line: FakeLine, hook: WebhookReceiver) -> Callable[..., Path]:
    (tmp_path / "line.token").write_text(LINE_TOKEN + "\n")
    (tmp_path / "hook.secret").write_text(HOOK_SECRET)

    def make(extra: str = "", line_extra: str = "", routes: str | None = None) -> Path:
        text = f'''
mode = "gateway"
outbox = "notify.sqlite"
status_url = "https://status.example.go.th/device/{{device_id}}"
retry_min_s = 0.2
retry_max_s = 2
{extra}
[channels.line]
type = "line"
to = "{GROUP}"
token_file = "line.token"
api_base = "{line.url}"
rate_per_min = 6000
burst = 50
timeout_s = 5
{line_extra}
[channels.hook]
type = "webhook"
url = "{hook.url}/hook"
secret_file = "hook.secret"
rate_per_min = 6000
burst = 50
''' + (
            routes
            if routes is not None
            else """
[[routes]]
channels = ["line", "hook"]
"""
        )
        path = tmp_path / "alerts.toml"
        path.write_text(text)
        return path

    return make


def settings_of(path: Path) -> NotifySettings:
    return load_settings(path)


def water_alert(
    device: str, name: str, state: str, t: float, value: float, site: str = "bkk-canal-01"
) -> dict[str, Any]:
    return {
        "v": 1,
        "site_id": site,
        "gateway_id": "gw-bkk-canal-01",
        "device_id": device,
        "kind": "water",
        "alert": name,
        "state": state,
        "severity": "warning" if state == "raised" else "info",
        "t": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)),
        "value": value,
        "unit": "m",
        "threshold": 1.2,
        "band": None,
        "message": "level",
        "message_th": "ระดับ",
    }


async def wait_until(pred: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)
