"""Delivery against local servers speaking the real APIs: LINE failover on 429 and on a nearly
used quota (nothing lost, visible in the metrics), the webhook's HMAC, retry-key semantics."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_gateway.notify.dispatcher import Dispatcher
from tests.notify.conftest import GROUP, settings_of, wait_until, water_alert
from tests.support.fake_services import FakeLine, WebhookReceiver


async def _run_until(d: Dispatcher, pred: Callable[[], bool], timeout_s: float = 20.0) -> None:
    task = asyncio.create_task(d.run())
    try:
        await wait_until(pred, timeout_s)
    finally:
        d.stop()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, 10)


def _raise_n(d: Dispatcher, n: int) -> None:
    t0 = time.time()
    for i in range(n):
        d.record(
            [water_alert(f"ce-0000000000{i:02d}", "water_warning", "raised", t0, 1.3 + i / 100)]
        )


def test_line_push_uses_the_real_api_and_a_retry_key(
    alerts_config: Any, line: FakeLine, hook: WebhookReceiver
) -> None:
    d = Dispatcher(settings_of(alerts_config()))
    _raise_n(d, 3)
    asyncio.run(_run_until(d, lambda: len(line.delivered) == 3))
    assert {m["to"] for m in line.delivered} == {GROUP}
    assert len({m["retry_key"] for m in line.delivered}) == 3
    text = line.delivered[0]["text"]
    assert "ce-000000000000" in text and "1.30 m" in text and "ระดับน้ำในคลอง" in text
    assert "https://status.example.go.th/device/ce-000000000000" in text
    assert hook.received == []
    # The same retry key again is a 409 at LINE and counts as sent, not as a second message.
    d2 = Dispatcher(settings_of(alerts_config()))
    with d2.outbox.transaction() as db:
        db.execute("UPDATE outbox SET state = 0")
    asyncio.run(_run_until(d2, lambda: d2.outbox.pending()[0] == 0))
    assert len(line.delivered) == 3 and line.conflicts == 3
    d.close()
    d2.close()


def test_line_429_fails_over_to_the_webhook_nothing_lost(
    alerts_config: Any, line: FakeLine, hook: WebhookReceiver
) -> None:
    line.force_429 = "You have reached your monthly limit."
    d = Dispatcher(settings_of(alerts_config()))
    _raise_n(d, 6)
    asyncio.run(_run_until(d, lambda: len(hook.received) == 6))
    assert line.delivered == [] and line.throttled >= 1
    assert hook.bad_signatures == 0 and len({m["id"] for m in hook.received}) == 6
    assert sorted(m["device_id"] for m in hook.received) == [
        f"ce-0000000000{i:02d}" for i in range(6)
    ]
    metrics = d.metrics_text()
    assert 'cityedge_notify_failovers_total{from="line",to="hook",reason="429"}' in metrics
    assert 'cityedge_notify_sent_total{channel="hook"} 6' in metrics
    assert d.outbox.pending()[0] == 0
    d.close()


def test_quota_nearly_used_fails_over_before_the_429(
    alerts_config: Any, line: FakeLine, hook: WebhookReceiver
) -> None:
    line.quota, line.used = 100, 88
    d = Dispatcher(settings_of(alerts_config(line_extra="quota_reserve = 10")))
    _raise_n(d, 5)
    asyncio.run(_run_until(d, lambda: len(line.delivered) + len(hook.received) == 5))
    # 88 used of 100 with a reserve of 10: two go on LINE, then the rest on the webhook.
    assert len(line.delivered) == 2 and len(hook.received) == 3 and line.throttled == 0
    assert 'reason="quota"' in d.metrics_text()
    assert 'cityedge_notify_line_quota_remaining{channel="line"} 10' in d.metrics_text()
    d.close()


def test_webhook_signature_checked_by_the_receiver(
    alerts_config: Any, hook: WebhookReceiver, tmp_path: Path
) -> None:
    (tmp_path / "hook.secret").write_text("a-different-secret")
    routes = '[[routes]]\nchannels = ["hook"]\n'
    d = Dispatcher(settings_of(alerts_config(routes=routes)))
    _raise_n(d, 1)
    asyncio.run(_run_until(d, lambda: hook.bad_signatures >= 2, 20))
    assert hook.received == [] and d.outbox.pending()[0] == 1  # kept, not lost
    d.close()


def test_the_example_config_loads(tmp_path: Path, monkeypatch: Any) -> None:
    import tomllib

    from edge_gateway.config import ConfigError
    from edge_gateway.notify.settings import settings_from_dict

    example = Path(__file__).resolve().parents[2] / "edge_gateway/examples/alerts.toml"
    data = tomllib.loads(example.read_text())
    monkeypatch.setenv("CITYEDGE_SMTP_PASSWORD", "x")
    for name in ("line-canal", "eoc"):
        secret = tmp_path / name
        secret.write_text("s")
        key = "token_file" if name == "line-canal" else "secret_file"
        data["channels"][name][key] = str(secret)
    s = settings_from_dict(data, tmp_path)
    assert [r.channels for r in s.routes] == [("line-canal", "eoc"), ("phones",)]
    assert s.routes[0].escalate_to == ("duty-mail", "phones")
    data["routes"][0]["channels"] = ["nope"]
    try:
        settings_from_dict(data, tmp_path)
    except ConfigError as exc:
        assert "routes[0].channels" in str(exc) and "no channel named 'nope'" in str(exc)
    else:
        raise AssertionError("an unknown channel must be refused")


def test_a_bad_alerts_file_is_named_by_the_gateway_config(tmp_path: Path) -> None:
    from edge_gateway.config import ConfigError, GatewayConfig

    bad = tmp_path / "alerts.toml"
    bad.write_text('[channels.x]\ntype = "line"\nto = "C1"\ntoken_env = "CITYEDGE_NO_SUCH_VAR"\n')
    try:
        GatewayConfig.from_dict(
            {"gateway_id": "gw-a-01", "site_id": "site-a-01", "notify": {"config": str(bad)}}
        )
    except ConfigError as exc:
        assert exc.key == "notify.config"
        assert "channels.x.token_env: environment variable CITYEDGE_NO_SUCH_VAR is not set" in str(
            exc
        )
    else:
        raise AssertionError("a broken alerts file must be refused")


def test_a_city_edits_the_templates(alerts_config: Any, tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text(
        '[en]\nraised = "FLOOD WATCH {place}: {value} {unit}\\n{link}"\n'
        '[words.th]\nwater_level = "น้ำในคลองแสนแสบ"\n'
    )
    d = Dispatcher(settings_of(alerts_config(extra='templates = "mine.toml"')))
    _raise_n(d, 1)
    (message,) = [r.message for r in d.outbox.due(time.time() + 1)]
    assert "FLOOD WATCH ce-000000000000: 1.30 m" in message["text"]
    assert "น้ำในคลองแสนแสบ" in message["text"]  # the Thai template, with the city's word
    assert "Status: https://status.example.go.th/device/ce-000000000000" in message["text"]
    d.close()


def test_line_only_route_waits_out_a_429_and_delivers_later(
    alerts_config: Any, line: FakeLine, hook: WebhookReceiver
) -> None:
    line.force_429 = "Too Many Requests"
    d = Dispatcher(settings_of(alerts_config(routes='[[routes]]\nchannels = ["line"]\n')))
    _raise_n(d, 2)

    async def go() -> None:
        task = asyncio.create_task(d.run())
        try:
            await wait_until(lambda: line.throttled >= 1, 10)
            await asyncio.sleep(0.3)
            assert line.delivered == [] and d.outbox.pending()[0] == 2  # kept, not dropped
            line.force_429 = None
            for s in d.senders.values():
                s.blocked_until = 0.0  # (LINE's Retry-After would say when; here: now)
            with d.outbox.transaction() as db:
                db.execute("UPDATE outbox SET next_at = 0")
            d.wake()
            await wait_until(lambda: len(line.delivered) == 2, 10)
        finally:
            d.stop()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 10)

    asyncio.run(go())
    assert d.failovers == {}  # no other channel: no failover, just a wait
    d.close()


def test_config_mistakes_are_named_and_a_template_typo_does_not_stop_a_warning(
    alerts_config: Any, tmp_path: Path
) -> None:
    from edge_gateway.config import ConfigError
    from edge_gateway.notify.settings import settings_from_dict

    for data, key in (
        ({"status_url": "https://s.example/{id}"}, "status_url"),
        ({"templates": "missing.toml"}, "templates"),
    ):
        try:
            settings_from_dict(data, tmp_path)
        except ConfigError as exc:
            assert exc.key == key
        else:
            raise AssertionError(f"{data} must be refused")
    (tmp_path / "mine.toml").write_text('[en]\nraised = "Level {value:.2f} at {place} {oops}"\n')
    d = Dispatcher(settings_of(alerts_config(extra='templates = "mine.toml"')))
    _raise_n(d, 1)
    (message,) = [r.message for r in d.outbox.due(time.time() + 1)]
    assert "Level {value:.2f} at {place} {oops}" in message["text"]  # shown as typed, still sent
    d.close()
