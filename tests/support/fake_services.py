"""Local servers that speak the real APIs the alert dispatcher talks to, on loopback.

* :class:`FakeLine` — the LINE Messaging API: ``POST /v2/bot/message/push`` (Bearer token
  checked, JSON body checked as LINE does: ``to``, 1–5 ``messages`` of ``type`` text with
  ``text`` ≤ 5000), ``X-Line-Retry-Key`` semantics (a UUID; a key already accepted answers 409
  with ``x-line-accepted-request-id`` and is *not* delivered again), 429 with LINE's error body
  (``{"message": "You have reached your monthly limit."}``) once the quota is used, and
  ``GET /v2/bot/message/quota`` / ``/quota/consumption``. ``delay_s`` makes a push slow (the
  message is accepted before the answer is sent, as a real platform may do before a timeout).
* :class:`WebhookReceiver` — checks ``X-CityEdge-Signature`` (HMAC-SHA256 over
  ``<timestamp>.<body>``), answers 401 on a bad one, keeps repeats of ``Idempotency-Key`` apart.
* :func:`smtp_server` — an aiosmtpd SMTP server collecting messages.

Each runs its own event loop in a thread, so a test can drive a dispatcher process against it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web


class _Server:
    def __init__(self) -> None:
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.lock = threading.Lock()

    def app(self) -> web.Application:
        raise NotImplementedError

    def start(self) -> _Server:
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop

            async def up() -> None:
                self._runner = web.AppRunner(self.app())
                await self._runner.setup()
                site = web.TCPSite(self._runner, "127.0.0.1", 0)
                await site.start()
                self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
                ready.set()

            loop.run_until_complete(up())
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())  # type: ignore[union-attr]
            loop.close()

        self._thread = threading.Thread(target=main, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)


class FakeLine(_Server):
    def __init__(
        self, token: str, quota: int | None = 500, used: int = 0, delay_s: float = 0.0
    ) -> None:
        super().__init__()
        self.token = token
        self.quota = quota
        self.used = used
        self.delay_s = delay_s
        self.force_429: str | None = None  # e.g. "Too Many Requests" for a rate limit
        self.delivered: list[dict[str, Any]] = []  # {"to", "text", "retry_key"}
        self.accepted: dict[str, str] = {}  # retry key -> request id
        self.requests = 0
        self.conflicts = 0
        self.throttled = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v2/bot/message/push", self.push)
        app.router.add_get("/v2/bot/message/quota", self.get_quota)
        app.router.add_get("/v2/bot/message/quota/consumption", self.consumption)
        return app

    def _auth(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response(
                {
                    "message": "Authentication failed due to the following reason: invalid token. "
                    "Confirm that the access token in the authorization header is valid."
                },
                status=401,
            )
        return None

    async def get_quota(self, request: web.Request) -> web.Response:
        bad = self._auth(request)
        if bad is not None:
            return bad
        if self.quota is None:
            return web.json_response({"type": "none"})
        return web.json_response({"type": "limited", "value": self.quota})

    async def consumption(self, request: web.Request) -> web.Response:
        return self._auth(request) or web.json_response({"totalUsage": self.used})

    @staticmethod
    def _body_errors(body: Any) -> list[dict[str, str]]:
        """What the Messaging API says is wrong with a push body, as its "details"."""
        messages = body.get("messages") if isinstance(body, dict) else None
        errors = []
        if not isinstance(body, dict) or not body.get("to"):
            errors.append({"message": "must be specified", "property": "to"})
        if not isinstance(messages, list) or not 1 <= len(messages) <= 5:
            errors.append({"message": "Size must be between 1 and 5", "property": "messages"})
        else:
            for i, m in enumerate(messages):
                if m.get("type") != "text" or not isinstance(m.get("text"), str):
                    errors.append(
                        {"message": "must be specified", "property": f"messages[{i}].text"}
                    )
                elif len(m["text"]) > 5000:
                    errors.append(
                        {
                            "message": "Length must be between 0 and 5000",
                            "property": f"messages[{i}].text",
                        }
                    )
        return errors

    def _deliver(self, key: str | None, body: dict[str, Any]) -> web.Response | str:
        """A valid push: refused as a repeat (409) or over the quota (429), else delivered;
        returns the request id."""
        messages = body["messages"]
        with self.lock:
            if key is not None and key in self.accepted:
                self.conflicts += 1
                return web.json_response(
                    {"message": "The retry key is already accepted", "sentMessages": []},
                    status=409,
                    headers={"x-line-accepted-request-id": self.accepted[key]},
                )
            if self.force_429 or (
                self.quota is not None and self.used + len(messages) > self.quota
            ):
                self.throttled += 1
                return web.json_response(
                    {"message": self.force_429 or "You have reached your monthly limit."},
                    status=429,
                )
            request_id = str(uuid.uuid4())
            if key is not None:
                self.accepted[key] = request_id
            self.used += len(messages)
            for m in messages:
                self.delivered.append({"to": body["to"], "text": m["text"], "retry_key": key})
        return request_id

    async def push(self, request: web.Request) -> web.Response:
        with self.lock:
            self.requests += 1
        bad = self._auth(request)
        if bad is not None:
            return bad
        key = request.headers.get("X-Line-Retry-Key")
        if key is not None:
            try:
                uuid.UUID(key)
            except ValueError:
                return web.json_response(
                    {"message": "The value for the 'X-Line-Retry-Key' header is invalid"},
                    status=400,
                )
        try:
            body = await request.json()
        except ValueError:
            return web.json_response(
                {
                    "message": "The request body has 1 error(s)",
                    "details": [{"message": "invalid JSON"}],
                },
                status=400,
            )
        errors = self._body_errors(body)
        if errors:
            return web.json_response(
                {"message": f"The request body has {len(errors)} error(s)", "details": errors},
                status=400,
            )
        request_id = self._deliver(key, body)
        if isinstance(request_id, web.Response):
            return request_id
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return web.json_response(
            {
                "sentMessages": [
                    {"id": str(uuid.uuid4().int)[:18], "quoteToken": "q"} for _ in body["messages"]
                ]
            },
            headers={"x-line-request-id": request_id},
        )


class WebhookReceiver(_Server):
    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret
        self.received: list[dict[str, Any]] = []
        self.bad_signatures = 0
        self.repeats = 0
        self._keys: set[str] = set()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        return app

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        stamp = request.headers.get("X-CityEdge-Timestamp", "")
        want = (
            "sha256="
            + hmac.new(
                self.secret.encode(), stamp.encode() + b"." + body, hashlib.sha256
            ).hexdigest()
        )
        if not hmac.compare_digest(want, request.headers.get("X-CityEdge-Signature", "")):
            with self.lock:
                self.bad_signatures += 1
            return web.json_response({"message": "bad signature"}, status=401)
        key = request.headers.get("Idempotency-Key", "")
        with self.lock:
            if key in self._keys:
                self.repeats += 1
            else:
                self._keys.add(key)
                self.received.append(json.loads(body))
        return web.json_response({"ok": True})


@contextmanager
def smtp_server(username: str | None = None, password: str | None = None) -> Iterator[Any]:
    """An aiosmtpd server on loopback; yields the handler (``.messages``: email messages)."""
    from aiosmtpd.controller import Controller

    class Handler:
        def __init__(self) -> None:
            self.messages: list[Any] = []

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            from email import message_from_bytes
            from email.policy import default

            self.messages.append(message_from_bytes(envelope.content, policy=default))
            return "250 OK"

    handler = Handler()
    kwargs: dict[str, Any] = {}
    if username is not None:

        def auth(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            from aiosmtpd.smtp import AuthResult

            ok = data.login.decode() == username and data.password.decode() == password
            return AuthResult(success=ok)

        kwargs = {"authenticator": auth, "auth_require_tls": False}
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(handler, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    handler.port = port  # type: ignore[attr-defined]
    try:
        yield handler
    finally:
        controller.stop()
