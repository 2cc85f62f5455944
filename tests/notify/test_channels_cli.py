"""`cityedge alerts test` end to end, as a process, on every channel: LINE (fake Messaging API),
the signed webhook, SMTP with a password (aiosmtpd) and ntfy. Secrets come from files and
environment variables and appear in no output, log or listing (grepped)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from edge_gateway.notify.outbox import Outbox
from host_tools.cli import main as cli_main
from tests.notify.conftest import GROUP, HOOK_SECRET, LINE_TOKEN
from tests.support.fake_services import FakeLine, WebhookReceiver, _Server, smtp_server

REPO = Path(__file__).resolve().parents[2]
SMTP_PASSWORD = "smtp-pass-Hq83LmZ0"
NTFY_TOKEN = "tk_ntfy9d8Vx2LpQ"


class FakeNtfy(_Server):
    """ntfy's JSON publish (POST / with topic, message, title, priority, tags)."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[dict[str, object]] = []

    def app(self) -> web.Application:
        app = web.Application()

        async def publish(request: web.Request) -> web.Response:
            if request.headers.get("Authorization") != f"Bearer {NTFY_TOKEN}":
                return web.json_response(
                    {"code": 40101, "http": 401, "error": "unauthorized"}, status=401
                )
            body = await request.json()
            if not body.get("topic"):
                return web.json_response(
                    {"code": 40001, "http": 400, "error": "invalid topic"}, status=400
                )
            self.published.append(body)
            return web.json_response({"id": "abc", "event": "message", "topic": body["topic"]})

        app.router.add_post("/", publish)
        return app


def _cityedge(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "cityedge"), "-vv", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env=env,
    )


def _every_channel_config(
    tmp_path: Path, line: FakeLine, hook: WebhookReceiver, smtp_port: int, ntfy: FakeNtfy
) -> Path:
    config = tmp_path / "alerts.toml"
    config.write_text(f'''
outbox = "notify.sqlite"
[channels.line]
type = "line"
to = "{GROUP}"
token_file = "line.token"
api_base = "{line.url}"
[channels.hook]
type = "webhook"
url = "{hook.url}/hook"
secret_file = "hook.secret"
[channels.mail]
type = "smtp"
host = "127.0.0.1"
port = {smtp_port}
starttls = false
username = "alerts@city.example"
password_env = "CITYEDGE_SMTP_PASSWORD"
sender = "alerts@city.example"
recipients = ["eoc@city.example", "it@city.example"]
[channels.ntfy]
type = "ntfy"
url = "{ntfy.url}"
topic = "city-canal-alerts"
token_env = "NTFY_TOKEN"
''')
    return config


def _check_sent_once_everywhere(
    tmp_path: Path, line: FakeLine, hook: WebhookReceiver, smtp: Any, ntfy: FakeNtfy
) -> None:
    assert len(line.delivered) == 1 and "ทดสอบการแจ้งเตือน" in line.delivered[0]["text"]
    assert len(hook.received) == 1 and hook.bad_signatures == 0
    assert len(smtp.messages) == 1
    mail = smtp.messages[0]
    assert mail["To"] == "eoc@city.example, it@city.example"
    assert "CityEdge test alert" in mail.get_content()
    assert mail["Message-ID"].endswith("@cityedge>")
    assert ntfy.published[0]["topic"] == "city-canal-alerts"
    outbox = Outbox(tmp_path / "notify.sqlite")
    assert outbox.pending()[0] == 0 and len(outbox.sent_rows()) == 4
    outbox.close()


def test_alerts_test_on_every_channel_and_no_secret_in_any_output(
    tmp_path: Path, line: FakeLine, hook: WebhookReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    ntfy = FakeNtfy().start()
    (tmp_path / "line.token").write_text(LINE_TOKEN + "\n")
    (tmp_path / "hook.secret").write_text(HOOK_SECRET)
    env = {**os.environ, "CITYEDGE_SMTP_PASSWORD": SMTP_PASSWORD, "NTFY_TOKEN": NTFY_TOKEN}
    try:
        with smtp_server("alerts@city.example", SMTP_PASSWORD) as smtp:
            config = _every_channel_config(tmp_path, line, hook, smtp.port, ntfy)
            out = _cityedge("alerts", "test", "--config", str(config), env=env)
            assert out.returncode == 0, out.stdout + out.stderr
            for name in ("line", "hook", "mail", "ntfy"):
                assert f"{name}: sent" in out.stdout
            _check_sent_once_everywhere(tmp_path, line, hook, smtp, ntfy)
            # A wrong LINE token: refused with LINE's 401 message, the token still not shown.
            (tmp_path / "line.token").write_text("wrong-" + LINE_TOKEN)
            line_only = ["--channel", "line", "--wait-s", "1"]
            bad = _cityedge("alerts", "test", "--config", str(config), *line_only, env=env)
            assert bad.returncode == 1 and "line: NOT sent" in bad.stdout
            assert "HTTP 401 Authentication failed" in bad.stderr
            # A secret written in the file itself is refused with what to do.
            config.write_text(
                config.read_text().replace('token_file = "line.token"', f'token = "{LINE_TOKEN}"')
            )
            assert cli_main(["alerts", "list", "--config", str(config)]) == 2
            refused = capsys.readouterr()
            assert "token_file" in refused.err
    finally:
        ntfy.stop()
    everything = "".join(p.stdout + p.stderr for p in (out, bad)) + refused.out + refused.err
    for secret in (LINE_TOKEN, HOOK_SECRET, SMTP_PASSWORD, NTFY_TOKEN):
        assert secret not in everything
    assert "DEBUG" in everything or "INFO" in everything  # the logs were there to grep


JOIN_EVENT = json.dumps(
    {
        "destination": "U" + "0" * 32,
        "events": [
            {
                "type": "join",
                "mode": "active",
                "timestamp": 1780000000000,
                "source": {"type": "group", "groupId": "C" + "a1" * 16},
                "webhookEventId": "01HZZZZZZZZZZZZZZZZZZZZZZZ",
                "replyToken": "r",
                "deliveryContext": {"isRedelivery": False},
            }
        ],
    }
).encode()


def _post_join(port: int, signature: str) -> int:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/line/webhook",
        data=JOIN_EVENT,
        headers={"x-line-signature": signature, "Content-Type": "application/json"},
    )
    try:
        return int(urllib.request.urlopen(req, timeout=5).status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_line_group_id_helper_prints_the_group_of_a_signed_join_event(tmp_path: Path) -> None:
    import base64
    import hashlib
    import hmac
    import socket
    import time

    secret = "channel-secret-0123456789abcdef"
    (tmp_path / "secret").write_text(secret)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "cityedge"),
            "alerts",
            "line-group-id",
            "--secret-file",
            str(tmp_path / "secret"),
            "--port",
            str(port),
            "--count",
            "1",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    body = JOIN_EVENT
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status = _post_join(port, "bad")
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert status == 401
        good = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
        assert _post_join(port, good) == 200
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert f"group id: C{'a1' * 16}" in out and "wrong x-line-signature" in out
    assert secret not in out
