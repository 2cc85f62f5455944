"""The dispatcher's own config file (``alerts.toml``): channels, routes, escalation, heartbeat.

Secrets (LINE channel access token, webhook HMAC secret, SMTP password, ntfy token) are never
written in the file itself: each is read from ``<name>_file`` (a file readable by the service
only) or ``<name>_env`` (an environment variable). They are kept in :class:`Secret`, whose
``repr``/``str`` is ``***``, so they cannot leak into a log line or a status page by accident.

``mode`` says where the dispatcher runs, so no message is sent twice: ``"gateway"`` (inside
``cityedge gateway run``, the default) or ``"central"`` (``cityedge alerts serve`` on the
platform's alert stream). Each refuses a file written for the other.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_gateway.config import ConfigError

CHANNEL_TYPES = ("line", "webhook", "smtp", "ntfy")
TIERS = ("info", "watch", "warning", "critical")


class Secret:
    """A secret value that prints as ``***``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__


def _secret(
    table: dict[str, Any], name: str, key: str, base: Path, required: bool
) -> Secret | None:
    if name in table:
        raise ConfigError(
            f"{key}.{name}",
            "secrets are not written in this file",
            hint=f"put it in a file readable by the service only and set {name}_file, "
            f"or in an environment variable and set {name}_env",
        )
    path, env = table.pop(f"{name}_file", None), table.pop(f"{name}_env", None)
    if path is not None:
        p = Path(str(path))
        p = p if p.is_absolute() else base / p
        try:
            return Secret(p.read_text("utf-8").strip())
        except OSError as exc:
            raise ConfigError(
                f"{key}.{name}_file", f"cannot read {str(p)!r}: {exc.strerror}"
            ) from None
    if env is not None:
        value = os.environ.get(str(env))
        if not value:
            raise ConfigError(f"{key}.{name}_env", f"environment variable {env} is not set")
        return Secret(value)
    if required:
        raise ConfigError(
            f"{key}.{name}_file", f"{name} is required: give {name}_file or {name}_env"
        )
    return None


@dataclass(frozen=True)
class Channel:
    name: str
    type: str
    rate_per_min: float = 60.0
    burst: int = 5
    timeout_s: float = 10.0
    # line
    to: str = ""
    api_base: str = "https://api.line.me"
    quota_reserve: int = 20
    quota_check_s: float = 300.0
    # webhook / ntfy
    url: str = ""
    topic: str = ""
    # smtp
    host: str = ""
    port: int = 587
    starttls: bool = True
    username: str | None = None
    sender: str = ""
    recipients: tuple[str, ...] = ()
    secret: Secret | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Route:
    """Which incidents go where: ``channels`` is a failover chain (the first that works);
    ``escalate_to`` is the next contact list when nobody acknowledges within ``escalate_after_s``."""

    channels: tuple[str, ...]
    sites: tuple[str, ...] = ("*",)
    devices: tuple[str, ...] = ("*",)
    tiers: tuple[str, ...] = ("watch", "warning", "critical")
    escalate_after_s: float | None = None
    escalate_to: tuple[str, ...] = ()

    def matches(self, site: str, device: str, tier: str) -> bool:
        return (
            ("*" in self.sites or site in self.sites)
            and ("*" in self.devices or device in self.devices)
            and tier in self.tiers
        )


@dataclass(frozen=True)
class NotifySettings:
    mode: str = "gateway"
    outbox: str = ""
    status_url: str | None = None  # e.g. "https://status.city.example/device/{device_id}"
    templates: str | None = None
    languages: tuple[str, ...] = ("th", "en")
    cap: bool = True  # water notifications carry OASIS CAP 1.2 XML (webhook body "cap")
    cap_sender: str | None = None  # CAP <sender>; default "cityedge.<site>"
    channels: dict[str, Channel] = field(default_factory=dict)
    routes: tuple[Route, ...] = ()
    retry_min_s: float = 2.0
    retry_max_s: float = 300.0
    attempts_before_failover: int = 3
    digest_hour: int | None = 8  # local hour of the daily digest (None: off)
    utc_offset_h: float = 7.0  # Asia/Bangkok
    heartbeat_channels: tuple[str, ...] = ()
    heartbeat_hour: int = 8
    heartbeat_ping_url: str | None = None  # an uptime monitor's URL, GET every ping_interval_s
    heartbeat_ping_interval_s: float = 60.0
    heartbeat_publish_s: float = 5.0  # gateway mode: heartbeat to the platform this often
    quiet_after_s: float = 180.0  # central: a dispatcher whose heartbeat is this late is quiet
    silent_grace_s: float = 60.0
    default_report_s: float = 60.0  # central: a device's interval when its status has none
    rules_interval_s: float = 5.0  # central: how often the silence rules are evaluated
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None  # central mode only (the gateway serves its own)
    # central mode: the platform broker
    broker_host: str = "127.0.0.1"
    broker_port: int = 1883
    broker_username: str | None = None
    broker_password: Secret | None = field(default=None, repr=False)
    broker_client_id: str = "cityedge-alerts"
    source: str = "<dict>"


_TOP = {
    "mode",
    "outbox",
    "status_url",
    "templates",
    "languages",
    "retry_min_s",
    "retry_max_s",
    "attempts_before_failover",
    "digest_hour",
    "utc_offset_h",
    "silent_grace_s",
    "quiet_after_s",
    "default_report_s",
    "rules_interval_s",
    "cap",
    "cap_sender",
    "metrics_host",
    "metrics_port",
    "channels",
    "routes",
    "heartbeat",
    "broker",
}
_CHANNEL_KEYS = {
    "type",
    "rate_per_min",
    "burst",
    "timeout_s",
    "to",
    "api_base",
    "quota_reserve",
    "quota_check_s",
    "url",
    "topic",
    "host",
    "port",
    "starttls",
    "username",
    "sender",
    "recipients",
}


def _check_keys(table: dict[str, Any], allowed: set[str], key: str) -> None:
    for k in table:
        if k not in allowed:
            raise ConfigError(
                f"{key}.{k}" if key else k, f"unknown key; valid keys: {', '.join(sorted(allowed))}"
            )


def _tuple(value: Any, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(key, "must be a list of strings")
    return tuple(value)


def _channel(name: str, raw: dict[str, Any], base: Path) -> Channel:
    key = f"channels.{name}"
    table = dict(raw)
    kind = table.get("type")
    if kind not in CHANNEL_TYPES:
        raise ConfigError(f"{key}.type", f"must be one of {', '.join(CHANNEL_TYPES)}")
    secret_name = {"line": "token", "webhook": "secret", "smtp": "password", "ntfy": "token"}[kind]
    secret = _secret(table, secret_name, key, base, required=kind in ("line", "webhook"))
    _check_keys(table, _CHANNEL_KEYS, key)
    values: dict[str, Any] = {k: v for k, v in table.items() if k != "recipients"}
    if "recipients" in table:
        values["recipients"] = _tuple(table["recipients"], f"{key}.recipients")
    try:
        ch = Channel(name=name, secret=secret, **values)
    except TypeError as exc:
        raise ConfigError(key, str(exc)) from None
    need = {
        "line": ("to",),
        "webhook": ("url",),
        "smtp": ("host", "sender", "recipients"),
        "ntfy": ("url", "topic"),
    }[kind]
    for k in need:
        if not getattr(ch, k):
            raise ConfigError(f"{key}.{k}", f"is required for a {kind} channel")
    if ch.rate_per_min <= 0 or ch.burst < 1:
        raise ConfigError(f"{key}.rate_per_min", "rate_per_min must be > 0 and burst >= 1")
    return ch


def settings_from_dict(
    data: dict[str, Any], base: Path, source: str = "<dict>", default_outbox: str | None = None
) -> NotifySettings:
    try:
        return _build(dict(data), base, source, default_outbox)
    except ConfigError as exc:
        raise ConfigError(exc.key, exc.detail, source, exc.hint) from None


def _route(raw: Any, key: str, channels: Mapping[str, Any]) -> Route:
    """One ``[[routes]]`` table; its channels must be defined."""
    _check_keys(
        raw, {"channels", "sites", "devices", "tiers", "escalate_after_s", "escalate_to"}, key
    )
    route = Route(
        channels=_tuple(raw.get("channels", []), f"{key}.channels"),
        sites=_tuple(raw.get("sites", ["*"]), f"{key}.sites"),
        devices=_tuple(raw.get("devices", ["*"]), f"{key}.devices"),
        tiers=_tuple(raw.get("tiers", ["watch", "warning", "critical"]), f"{key}.tiers"),
        escalate_after_s=raw.get("escalate_after_s"),
        escalate_to=_tuple(raw.get("escalate_to", []), f"{key}.escalate_to"),
    )
    for name in (*route.channels, *route.escalate_to):
        if name not in channels:
            raise ConfigError(
                f"{key}.channels",
                f"no channel named {name!r} (defined: {', '.join(channels) or 'none'})",
            )
    if not route.channels:
        raise ConfigError(f"{key}.channels", "needs at least one channel")
    for t in route.tiers:
        if t not in TIERS:
            raise ConfigError(f"{key}.tiers", f"{t!r} is not one of {', '.join(TIERS)}")
    return route


def _check_settings(settings: NotifySettings, channels: Mapping[str, Any]) -> None:
    """What is checked once the settings are made: the status link, the templates file, the
    heartbeat's channels, the retry bounds."""
    if settings.status_url is not None:
        try:
            settings.status_url.format(device_id="ce-000000000000", site_id="site-x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                "status_url", f"only {{device_id}} and {{site_id}} can be filled in ({exc})"
            ) from None
    if settings.templates is not None:
        try:
            tomllib.loads(Path(settings.templates).read_text("utf-8"))
        except OSError as exc:
            raise ConfigError(
                "templates",
                f"cannot read {settings.templates!r}: {exc.strerror}",
                hint="copy edge_gateway/notify/templates.toml and edit it",
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("templates", f"{settings.templates}: not valid TOML: {exc}") from None
    for name in settings.heartbeat_channels:
        if name not in channels:
            raise ConfigError("heartbeat.channels", f"no channel named {name!r}")
    if settings.retry_min_s <= 0 or settings.retry_max_s < settings.retry_min_s:
        raise ConfigError("retry_min_s", "must be > 0 and <= retry_max_s")


def _build(
    data: dict[str, Any], base: Path, source: str, default_outbox: str | None
) -> NotifySettings:
    _check_keys(data, _TOP, "")
    if data.get("mode", "gateway") not in ("gateway", "central"):
        raise ConfigError("mode", 'must be "gateway" or "central"')
    channels = {}
    for name, raw in (data.pop("channels", None) or {}).items():
        if not isinstance(raw, dict):
            raise ConfigError(f"channels.{name}", "must be a table")
        channels[name] = _channel(name, raw, base)
    routes = [
        _route(raw, f"routes[{i}]", channels)
        for i, raw in enumerate(data.pop("routes", None) or [])
    ]
    hb = dict(data.pop("heartbeat", None) or {})
    _check_keys(hb, {"channels", "hour", "ping_url", "ping_interval_s", "publish_s"}, "heartbeat")
    broker = dict(data.pop("broker", None) or {})
    password = _secret(broker, "password", "broker", base, required=False)
    _check_keys(broker, {"host", "port", "username", "client_id"}, "broker")
    if "languages" in data:
        data["languages"] = _tuple(data["languages"], "languages")
    outbox = data.pop("outbox", None) or default_outbox or "notify.sqlite"
    outbox = str(Path(outbox) if Path(outbox).is_absolute() else base / outbox)
    templates = data.pop("templates", None)
    if templates is not None and not Path(templates).is_absolute():
        templates = str(base / templates)
    try:
        settings = NotifySettings(
            outbox=outbox,
            templates=templates,
            channels=channels,
            routes=tuple(routes),
            heartbeat_channels=_tuple(hb.get("channels", []), "heartbeat.channels"),
            heartbeat_hour=int(hb.get("hour", 8)),
            heartbeat_ping_url=hb.get("ping_url"),
            heartbeat_ping_interval_s=float(hb.get("ping_interval_s", 60.0)),
            heartbeat_publish_s=float(hb.get("publish_s", 5.0)),
            broker_host=broker.get("host", "127.0.0.1"),
            broker_port=int(broker.get("port", 1883)),
            broker_username=broker.get("username"),
            broker_password=password,
            broker_client_id=broker.get("client_id", "cityedge-alerts"),
            source=source,
            **data,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError("", f"invalid value: {exc}") from None
    _check_settings(settings, channels)
    return settings


def load_settings(path: str | Path, default_outbox: str | None = None) -> NotifySettings:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError("", f"alerts config {str(p)!r} not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"not valid TOML: {exc}", str(p)) from None
    return settings_from_dict(data, p.resolve().parent, str(p), default_outbox)
