"""The senders: LINE Messaging API push, a signed JSON webhook, SMTP e-mail, ntfy.

Each ``send`` returns an :class:`Outcome`: ``sent``; ``retry`` (a timeout, a connection error,
a 5xx: try the same channel again after a back-off, with the same idempotency key);
``failover`` (LINE's 429 — the monthly quota or the rate limit — or its quota nearly used:
go to the next channel at once); ``refused`` (a 4xx that no retry fixes — a wrong token or
group id: the next channel at once, and the reason logged).

Why plain aiohttp (the project's HTTP library) and not a library: Apprise covers all four
channels, but it is synchronous, hides the HTTP status (a LINE 429 and a 500 look the same to
its caller: no failover decision possible), and sets no ``X-Line-Retry-Key``, so a retry after
a timeout can deliver twice; ``line-bot-sdk`` (v3) exposes the retry key and the quota
endpoints, but it is LINE only and pulls in its own generated client, pydantic and
aenum/urllib3 for two HTTP calls. Each API here is one documented request.

LINE (https://developers.line.biz/en/reference/messaging-api/): ``POST /v2/bot/message/push``
with ``Authorization: Bearer <channel access token>``, body ``{"to", "messages": [{"type":
"text", "text"}]}`` (text ≤ 5000 characters); 200 with ``{"sentMessages": [...]}``; a repeated
``X-Line-Retry-Key`` of an accepted request answers 409 (with ``x-line-accepted-request-id``):
that message *was* delivered; 429 ``{"message": "You have reached your monthly limit."}`` or
rate limiting. Quota: ``GET /v2/bot/message/quota`` → ``{"type": "limited", "value": N}`` or
``{"type": "none"}``; ``GET /v2/bot/message/quota/consumption`` → ``{"totalUsage": M}``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, ClassVar

from edge_gateway.notify.settings import Channel

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger(__name__)

LINE_TEXT_MAX = 5000


@dataclass
class Outcome:
    status: str  # sent / retry / failover / refused
    reason: str = ""
    retry_after_s: float | None = None


def need_aiohttp() -> Any:
    try:
        import aiohttp
    except ModuleNotFoundError:
        from edge_gateway.config import ConfigError

        raise ConfigError(
            "", "alert delivery needs aiohttp", hint="pip install 'cityedge[alerts]'"
        ) from None
    return aiohttp


class TokenBucket:
    """Per-channel rate limit: ``rate_per_min`` sustained, ``burst`` at once."""

    def __init__(self, rate_per_min: float, burst: int) -> None:
        self.rate = rate_per_min / 60.0
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def wait_s(self) -> float:
        """0 and take a token, or the seconds until one is free."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class Sender:
    def __init__(self, channel: Channel, session: aiohttp.ClientSession) -> None:
        self.channel = channel
        self.session = session
        self.bucket = TokenBucket(channel.rate_per_min, channel.burst)
        self.blocked_until = 0.0  # after a LINE 429: skip this channel until then

    async def send(self, message: dict[str, Any], key: str) -> Outcome:
        raise NotImplementedError

    def status(self) -> dict[str, Any]:
        return {"type": self.channel.type}

    async def _http(self, method: str, url: str, **kw: Any) -> tuple[int, dict[str, Any], Any]:
        aiohttp = need_aiohttp()
        timeout = aiohttp.ClientTimeout(total=self.channel.timeout_s)
        async with self.session.request(method, url, timeout=timeout, **kw) as resp:
            text = await resp.text()
            try:
                body = json.loads(text) if text else {}
            except ValueError:
                body = {"message": text[:200]}
            return resp.status, dict(resp.headers), body


def _http_outcome(status: int, body: Any) -> Outcome:
    message = body.get("message", "") if isinstance(body, dict) else ""
    if 200 <= status < 300:
        return Outcome("sent")
    if status == 429 or status >= 500 or status == 408:
        return Outcome("retry", f"HTTP {status} {message}".strip())
    return Outcome("refused", f"HTTP {status} {message}".strip())


class LineSender(Sender):
    """LINE Messaging API push to a user, group or room id, with quota tracking."""

    def __init__(self, channel: Channel, session: aiohttp.ClientSession) -> None:
        super().__init__(channel, session)
        self.quota: int | None = None  # None: unlimited ("type": "none") or not known yet
        self.used: int | None = None
        self.quota_checked = 0.0

    def _headers(self) -> dict[str, str]:
        assert self.channel.secret is not None
        return {"Authorization": f"Bearer {self.channel.secret.get()}"}

    @property
    def remaining(self) -> int | None:
        if self.quota is None or self.used is None:
            return None
        return self.quota - self.used

    async def refresh_quota(self) -> None:
        base = self.channel.api_base.rstrip("/")
        try:
            s1, _, quota = await self._http(
                "GET", f"{base}/v2/bot/message/quota", headers=self._headers()
            )
            s2, _, used = await self._http(
                "GET", f"{base}/v2/bot/message/quota/consumption", headers=self._headers()
            )
        except Exception as exc:  # noqa: BLE001 - aiohttp.ClientError, OSError, timeouts
            log.warning("LINE channel %s: quota check failed: %s", self.channel.name, exc)
            return
        self.quota_checked = time.monotonic()
        if s1 == 200 and isinstance(quota, dict):
            self.quota = int(quota["value"]) if quota.get("type") == "limited" else None
        if s2 == 200 and isinstance(used, dict) and "totalUsage" in used:
            self.used = int(used["totalUsage"])

    async def send(self, message: dict[str, Any], key: str) -> Outcome:
        if time.monotonic() - self.quota_checked >= self.channel.quota_check_s:
            await self.refresh_quota()
        remaining = self.remaining
        if remaining is not None and remaining <= self.channel.quota_reserve:
            return Outcome("failover", f"LINE quota nearly used ({remaining} left)")
        text = message["text"]
        if len(text) > LINE_TEXT_MAX:
            text = text[: LINE_TEXT_MAX - 1] + "…"
        body = {"to": self.channel.to, "messages": [{"type": "text", "text": text}]}
        status, headers, answer = await self._http(
            "POST",
            f"{self.channel.api_base.rstrip('/')}/v2/bot/message/push",
            headers={**self._headers(), "X-Line-Retry-Key": key},
            json=body,
        )
        if status == 409:  # this retry key was accepted before: the message went out
            return Outcome("sent", "accepted earlier (409)")
        if status == 429:
            message_text = answer.get("message", "") if isinstance(answer, dict) else ""
            if "monthly limit" in message_text and self.quota is not None:
                self.used = self.quota
            retry_after = headers.get("Retry-After")
            self.blocked_until = time.monotonic() + (
                float(retry_after) if retry_after and retry_after.isdigit() else 60.0
            )
            return Outcome("failover", f"HTTP 429 {message_text}".strip())
        outcome = _http_outcome(status, answer)
        if outcome.status == "sent" and self.used is not None:
            self.used += 1
        return outcome

    def status(self) -> dict[str, Any]:
        return {"type": "line", "quota": self.quota, "used": self.used, "remaining": self.remaining}


class WebhookSender(Sender):
    """POST the notification as JSON, signed: ``X-CityEdge-Signature: sha256=<hex>`` is
    HMAC-SHA256 with the shared secret over ``<X-CityEdge-Timestamp>.<body>``; the receiver
    recomputes it, refuses a mismatch or an old timestamp, and drops repeats of
    ``Idempotency-Key``."""

    async def send(self, message: dict[str, Any], key: str) -> Outcome:
        assert self.channel.secret is not None
        body = json.dumps({"id": key, **message}, ensure_ascii=False, separators=(",", ":"))
        stamp = str(int(time.time()))
        sig = sign(self.channel.secret.get(), stamp, body.encode())
        status, _, answer = await self._http(
            "POST",
            self.channel.url,
            data=body.encode(),
            headers={
                "Content-Type": "application/json",
                "Idempotency-Key": key,
                "X-CityEdge-Timestamp": stamp,
                "X-CityEdge-Signature": f"sha256={sig}",
            },
        )
        return _http_outcome(status, answer)


def sign(secret: str, stamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class NtfySender(Sender):
    """ntfy publish as JSON to the server root (https://docs.ntfy.sh/publish/#publish-as-json)."""

    _PRIORITY: ClassVar[dict[str, int]] = {"critical": 5, "warning": 4, "watch": 3, "info": 2}

    async def send(self, message: dict[str, Any], key: str) -> Outcome:
        headers = {}
        if self.channel.secret is not None:
            headers["Authorization"] = f"Bearer {self.channel.secret.get()}"
        body = {
            "topic": self.channel.topic,
            "title": message.get("title", "CityEdge"),
            "message": message["text"],
            "priority": self._PRIORITY.get(message.get("tier", ""), 3),
            "tags": ["cityedge", str(message.get("kind", ""))],
        }
        status, _, answer = await self._http(
            "POST", self.channel.url.rstrip("/") + "/", json=body, headers=headers
        )
        return _http_outcome(status, answer)


class SmtpSender(Sender):
    """E-mail over SMTP (STARTTLS by default), in a thread; Message-ID from the retry key so a
    mail client shows a repeat after a crash as the same message."""

    async def send(self, message: dict[str, Any], key: str) -> Outcome:
        return await asyncio.to_thread(self._send, message, key)

    def _send(self, message: dict[str, Any], key: str) -> Outcome:
        ch = self.channel
        mail = EmailMessage()
        mail["From"] = ch.sender
        mail["To"] = ", ".join(ch.recipients)
        mail["Subject"] = str(message.get("title", "CityEdge alert"))
        mail["Message-ID"] = f"<{key}@cityedge>"
        mail.set_content(message["text"])
        try:
            with smtplib.SMTP(ch.host, ch.port, timeout=ch.timeout_s) as smtp:
                if ch.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if ch.username and ch.secret is not None:
                    smtp.login(ch.username, ch.secret.get())
                smtp.send_message(mail)
        except smtplib.SMTPAuthenticationError as exc:
            return Outcome("refused", f"SMTP authentication failed ({exc.smtp_code})")
        except smtplib.SMTPRecipientsRefused:
            return Outcome("refused", "SMTP recipients refused")
        except (smtplib.SMTPException, OSError) as exc:
            return Outcome("retry", f"SMTP: {type(exc).__name__}: {exc}"[:200])
        return Outcome("sent")


SENDERS: dict[str, type[Sender]] = {
    "line": LineSender,
    "webhook": WebhookSender,
    "ntfy": NtfySender,
    "smtp": SmtpSender,
}
