"""Gateway configuration: a TOML file read into frozen dataclasses, validated on load.

Every error names the offending key as a dotted path (``upstream.port``); an unknown key names
itself and lists the keys that are valid at that place. ``docs/gateway.md`` documents every key.

    from edge_gateway.config import GatewayConfig, load_config
    config = load_config("/etc/cityedge/gateway.toml")
    config = GatewayConfig.from_dict({"gateway_id": "gw-x", "site_id": "site-x"})
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from edge_gateway.errors import EXIT_CONFIG

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{2,40}$")
_KINDS = ("air", "water", "parking")


class ConfigError(ValueError):
    """The config is missing or invalid; ``key`` is the dotted path of the offending key."""

    exit_code = EXIT_CONFIG  # restarting cannot fix the file (the unit's RestartPreventExitStatus)

    def __init__(self, key: str, message: str, source: str = "", hint: str | None = None) -> None:
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {message}" if key else f"{where}{message}")
        self.key = key
        self.detail = message
        self.hint = hint or (
            "fix that key (docs/gateway.md lists every key), then run again"
            if key
            else "give the path of the gateway's TOML config (example: "
            "edge_gateway/examples/gateway.toml)"
        )


@dataclass(frozen=True)
class Location:
    lat: float = 0.0
    lon: float = 0.0
    elev_m: float | None = None
    name: str | None = None

    def validate(self, key: str) -> None:
        if not -90.0 <= self.lat <= 90.0:
            raise ConfigError(f"{key}.lat", f"{self.lat} is outside -90..90")
        if not -180.0 <= self.lon <= 180.0:
            raise ConfigError(f"{key}.lon", f"{self.lon} is outside -180..180")

    def as_contract(self) -> dict[str, Any]:
        out: dict[str, Any] = {"lat": self.lat, "lon": self.lon}
        if self.elev_m is not None:
            out["elev_m"] = self.elev_m
        if self.name:
            out["name"] = self.name[:120]
        return out


@dataclass(frozen=True)
class BrokerSection:
    """Connection to an MQTT broker (the site's local broker or the city platform's)."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str | None = None
    keepalive_s: int = 30
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = field(default=None, repr=False)
    tls_insecure: bool = False
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    timeout_s: float = 10.0

    def validate(self, key: str) -> None:
        if not self.host:
            raise ConfigError(f"{key}.host", "is required")
        if not 0 < self.port < 65536:
            raise ConfigError(f"{key}.port", f"{self.port} is not a TCP port (1-65535)")
        if self.keepalive_s < 5:
            raise ConfigError(f"{key}.keepalive_s", "must be at least 5")
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError(f"{key}.cert_file", "cert_file and key_file go together")
        if (self.ca_file or self.cert_file) and not self.tls:
            raise ConfigError(f"{key}.tls", "set tls = true when giving ca_file or cert_file")
        for name in ("ca_file", "cert_file", "key_file"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                raise ConfigError(f"{key}.{name}", f"file {value!r} does not exist")
        if self.password is not None and self.username is None:
            raise ConfigError(f"{key}.username", "a password needs a username")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ConfigError(f"{key}.reconnect_min_s", "must be > 0 and <= reconnect_max_s")
        if self.timeout_s <= 0:
            raise ConfigError(f"{key}.timeout_s", "must be > 0")


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class UpstreamSection(BrokerSection):
    """The city platform's broker. Plain TCP is refused for anything but loopback unless
    ``allow_plaintext`` says so: readings and credentials cross the internet."""

    enabled: bool = True
    allow_plaintext: bool = False

    def validate(self, key: str) -> None:
        super().validate(key)
        if not self.tls and not self.allow_plaintext and self.host not in _LOOPBACK:
            raise ConfigError(
                f"{key}.tls",
                f"the platform broker {self.host} is not on this machine: set tls = true and "
                "ca_file (or allow_plaintext = true if the link is protected otherwise)",
            )


@dataclass(frozen=True)
class StoreSection:
    path: str | None = None
    max_bytes: int = 512 * 1024 * 1024
    max_age_s: float = 30 * 86400.0
    min_free_bytes: int = 256 * 1024 * 1024
    commit_max_readings: int = 256
    commit_max_ms: float = 20.0
    synchronous: str = "full"
    dedup_horizon_s: float = 7 * 86400.0
    max_payload_bytes: int = 16384

    def validate(self, key: str) -> None:
        if self.max_bytes < 4096:
            raise ConfigError(f"{key}.max_bytes", "must be at least 4096")
        if self.max_age_s <= 0:
            raise ConfigError(f"{key}.max_age_s", "must be > 0")
        if self.min_free_bytes < 0:
            raise ConfigError(f"{key}.min_free_bytes", "must be >= 0")
        if not 1 <= self.commit_max_readings <= 100_000:
            raise ConfigError(f"{key}.commit_max_readings", "must be 1..100000")
        if not 0 <= self.commit_max_ms <= 10_000:
            raise ConfigError(f"{key}.commit_max_ms", "must be 0..10000")
        if self.synchronous not in ("full", "normal"):
            raise ConfigError(f"{key}.synchronous", 'must be "full" or "normal"')
        if self.dedup_horizon_s < 60:
            raise ConfigError(f"{key}.dedup_horizon_s", "must be at least 60")
        if not 256 <= self.max_payload_bytes <= 1_048_576:
            raise ConfigError(f"{key}.max_payload_bytes", "must be 256..1048576")


@dataclass(frozen=True)
class ForwardSection:
    # QoS 2 messages unfinished at once. Must not exceed the platform broker's in-flight limit
    # for a client (Mosquitto: max_inflight_messages, default 20): beyond it Mosquitto 2.0
    # answers PUBREC for a message it only queued and loses it (docs/gateway.md).
    max_inflight: int = 20
    drain_rate_per_s: float = 200.0
    live_first: bool = True
    batch: int = 256
    delete_max_ms: float = 20.0

    def validate(self, key: str) -> None:
        if not 1 <= self.max_inflight <= 16384:  # row packet ids: 32767, see upstream.py
            raise ConfigError(f"{key}.max_inflight", "must be 1..16384")
        if self.drain_rate_per_s <= 0:
            raise ConfigError(f"{key}.drain_rate_per_s", "must be > 0")
        if not 1 <= self.batch <= 10_000:
            raise ConfigError(f"{key}.batch", "must be 1..10000")
        if not 0 <= self.delete_max_ms <= 10_000:
            raise ConfigError(f"{key}.delete_max_ms", "must be 0..10000")


@dataclass(frozen=True)
class DeviceEntry:
    id: str = ""
    kind: str = ""
    name: str | None = None
    location: Location | None = None
    report_s: float | None = None
    water_watch_m: float | None = None
    water_warning_m: float | None = None
    water_critical_m: float | None = None

    def validate(self, key: str) -> None:
        if not _ID_RE.match(self.id):
            raise ConfigError(f"{key}.id", f"{self.id!r} is not a device id (ce-<12 hex>)")
        if self.kind not in _KINDS:
            raise ConfigError(f"{key}.kind", f"must be one of {', '.join(_KINDS)}")
        if self.location is not None:
            self.location.validate(f"{key}.location")
        if self.report_s is not None and self.report_s <= 0:
            raise ConfigError(f"{key}.report_s", "must be > 0")
        if (
            self.water_warning_m is not None
            and self.water_critical_m is not None
            and self.water_critical_m <= self.water_warning_m
        ):
            raise ConfigError(f"{key}.water_critical_m", "must be above water_warning_m")
        _check_watch(self.water_watch_m, self.water_warning_m, self.water_critical_m, key)


def _check_watch(
    watch: float | None, warning: float | None, critical: float | None, key: str
) -> None:
    """The watch level is the lowest tier (watch < warning < critical / danger)."""
    for name, above in (("water_warning_m", warning), ("water_critical_m", critical)):
        if watch is not None and above is not None and watch >= above:
            raise ConfigError(f"{key}.water_watch_m", f"must be below {name}")


@dataclass(frozen=True)
class InventorySection:
    allow_unknown: bool = True
    default_report_s: float = 60.0
    device: tuple[DeviceEntry, ...] = ()

    def validate(self, key: str) -> None:
        seen: set[str] = set()
        for i, dev in enumerate(self.device):
            dev.validate(f"{key}.device[{i}]")
            if dev.id in seen:
                raise ConfigError(f"{key}.device[{i}].id", f"{dev.id} is listed twice")
            seen.add(dev.id)
        if self.default_report_s <= 0:
            raise ConfigError(f"{key}.default_report_s", "must be > 0")

    def get(self, device_id: str) -> DeviceEntry | None:
        for dev in self.device:
            if dev.id == device_id:
                return dev
        return None


@dataclass(frozen=True)
class CalibrationSection:
    records: str | None = None
    fleet_defaults: bool = True

    def validate(self, key: str) -> None:
        if self.records is not None and not Path(self.records).exists():
            raise ConfigError(f"{key}.records", f"{self.records!r} does not exist")


@dataclass(frozen=True)
class AlertsSection:
    water_watch_m: float | None = None
    water_warning_m: float | None = None
    water_critical_m: float | None = None
    water_rising_m_per_h: float = 0.3
    water_hysteresis_m: float = 0.05
    hold_s: float = 300.0
    pm25_band_alerts: bool = True

    def validate(self, key: str) -> None:
        if (
            self.water_warning_m is not None
            and self.water_critical_m is not None
            and self.water_critical_m <= self.water_warning_m
        ):
            raise ConfigError(f"{key}.water_critical_m", "must be above water_warning_m")
        _check_watch(self.water_watch_m, self.water_warning_m, self.water_critical_m, key)
        if self.water_rising_m_per_h <= 0:
            raise ConfigError(f"{key}.water_rising_m_per_h", "must be > 0")
        if self.water_hysteresis_m < 0:
            raise ConfigError(f"{key}.water_hysteresis_m", "must be >= 0")
        if self.hold_s < 0:
            raise ConfigError(f"{key}.hold_s", "must be >= 0")


@dataclass(frozen=True)
class HealthSection:
    interval_s: float = 30.0
    device_offline_s: float = 900.0

    def validate(self, key: str) -> None:
        if self.interval_s < 0.1:
            raise ConfigError(f"{key}.interval_s", "must be at least 0.1")
        if self.device_offline_s <= 0:
            raise ConfigError(f"{key}.device_offline_s", "must be > 0")


@dataclass(frozen=True)
class MetricsSection:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9108

    def validate(self, key: str) -> None:
        if not 0 <= self.port < 65536:
            raise ConfigError(f"{key}.port", f"{self.port} is not a TCP port (0 picks a free one)")


@dataclass(frozen=True)
class StatusSection:
    """The status page and JSON API (edge_gateway.status, docs/status.md)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9180
    token_file: str | None = None  # default <data_dir>/status-token, made (0600) if missing
    late_grace_s: float = 30.0
    offline_margin_s: float = 60.0
    history_max_bytes: int = 8 * 1024 * 1024
    low_battery_v: float = 3.5
    lang: str = "th"
    # The page's address as people reach it (a LAN address, a reverse proxy): alert messages
    # link to <url>/device/<id>; unset, a non-loopback, non-wildcard host:port is used.
    url: str | None = None

    def page_url(self) -> str | None:
        """The address alert messages link to, or None (loopback only: no link works)."""
        if not self.enabled:
            return None
        if self.url:
            return self.url.rstrip("/")
        if self.host in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "::", "") or self.port == 0:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def validate(self, key: str) -> None:
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"{key}.url", f"{self.url!r} must start with http:// or https://")
        if not 0 <= self.port < 65536:
            raise ConfigError(f"{key}.port", f"{self.port} is not a TCP port (0 picks a free one)")
        if self.host not in ("127.0.0.1", "::1", "localhost") and not self.token_file:
            raise ConfigError(
                f"{key}.token_file",
                f"host {self.host!r} is not loopback: a LAN address needs a token file",
                hint="set status.token_file to a file holding a long random token (readable "
                'only by the gateway\'s user), or keep status.host = "127.0.0.1"',
            )
        for name in ("late_grace_s", "offline_margin_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{key}.{name}", "must be >= 0")
        if self.history_max_bytes < 64 * 1024:
            raise ConfigError(f"{key}.history_max_bytes", "must be at least 65536")
        if self.lang not in ("th", "en"):
            raise ConfigError(f"{key}.lang", "must be th or en")


@dataclass(frozen=True)
class NotifySection:
    """``config``: the alert dispatcher's own file (alerts.toml, docs/alerts.md)."""

    config: str | None = None

    def validate(self, key: str) -> None:
        if self.config is not None and not Path(self.config).is_file():
            raise ConfigError(f"{key}.config", f"file {self.config!r} does not exist")
        if self.config is not None:  # its own errors name its own keys (and the file)
            from edge_gateway.notify.settings import load_settings

            try:
                load_settings(self.config)
            except ConfigError as exc:
                raise ConfigError(f"{key}.config", str(exc), hint=exc.hint) from None


@dataclass(frozen=True)
class GatewayConfig:
    """The whole gateway configuration. Build with :func:`load_config` or :meth:`from_dict`."""

    gateway_id: str = ""
    site_id: str = ""
    data_dir: str = "/var/lib/cityedge-gateway"
    log_level: str = "info"
    location: Location = field(default_factory=Location)
    local: BrokerSection = field(default_factory=BrokerSection)
    upstream: UpstreamSection = field(default_factory=UpstreamSection)
    store: StoreSection = field(default_factory=StoreSection)
    forward: ForwardSection = field(default_factory=ForwardSection)
    inventory: InventorySection = field(default_factory=InventorySection)
    calibration: CalibrationSection = field(default_factory=CalibrationSection)
    alerts: AlertsSection = field(default_factory=AlertsSection)
    health: HealthSection = field(default_factory=HealthSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    status: StatusSection = field(default_factory=StatusSection)
    notify: NotifySection = field(default_factory=NotifySection)
    source: str = field(default="<dict>", compare=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> GatewayConfig:
        """Validate a plain mapping (as TOML gives it); raises :class:`ConfigError`."""
        try:
            values = _build_fields(cls, data, "", exclude={"source"})
            config = cls(**values, source=source)
            config._validate_top()
            for f in dataclasses.fields(config):
                section = getattr(config, f.name)
                check = getattr(section, "validate", None)
                if check is not None:
                    check(f.name)
        except ConfigError as exc:
            raise ConfigError(exc.key, exc.detail, source) from None
        return config

    def _validate_top(self) -> None:
        for name in ("gateway_id", "site_id"):
            value = getattr(self, name)
            if not value:
                raise ConfigError(name, 'is required (e.g. "rayong-school-01")')
            if not _ID_RE.match(value):
                raise ConfigError(
                    name,
                    f"{value!r} must be 3-41 characters of a-z, 0-9 and '-', starting with a "
                    "letter or digit",
                )
        self.location.validate("location")
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ConfigError("log_level", "must be one of debug, info, warning, error")
        if not self.data_dir:
            raise ConfigError("data_dir", "must name a directory")

    @property
    def store_path(self) -> Path:
        if self.store.path:
            return Path(self.store.path)
        return Path(self.data_dir) / "store.sqlite"

    def device(self, device_id: str) -> DeviceEntry | None:
        return self.inventory.get(device_id)


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a TOML config file; raises :class:`ConfigError` naming the key."""
    p = Path(path)
    try:
        text = p.read_text("utf-8")
    except FileNotFoundError:
        raise ConfigError("", f"config file {str(p)!r} not found") from None
    except OSError as exc:
        raise ConfigError("", f"cannot read config file {str(p)!r}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"not valid TOML: {exc}", str(p)) from None
    base = p.resolve().parent
    data = _resolve_paths(data, base)
    return GatewayConfig.from_dict(data, source=str(p))


_PATH_KEYS = {
    ("store", "path"),
    ("status", "token_file"),
    ("calibration", "records"),
    ("notify", "config"),
    ("local", "ca_file"),
    ("local", "cert_file"),
    ("local", "key_file"),
    ("upstream", "ca_file"),
    ("upstream", "cert_file"),
    ("upstream", "key_file"),
}


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative file paths in a config file are relative to the file's directory."""
    out = dict(data)
    if isinstance(out.get("data_dir"), str) and not Path(out["data_dir"]).is_absolute():
        out["data_dir"] = str(base / out["data_dir"])
    for section, key in _PATH_KEYS:
        table = out.get(section)
        if isinstance(table, dict) and isinstance(table.get(key), str):
            value = table[key]
            if value and not Path(value).is_absolute():
                out[section] = {**table, key: str(base / value)}
    return out


# --- generic, typed construction --------------------------------------------------------------


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "none"
    if isinstance(tp, type):
        return {
            "str": "a string",
            "int": "an integer",
            "float": "a number",
            "bool": "true/false",
        }.get(
            tp.__name__, f"a table ({tp.__name__})" if dataclasses.is_dataclass(tp) else tp.__name__
        )
    return str(tp)


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors: list[str] = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _convert(opt, value, key)
            except ConfigError as exc:
                errors.append(exc.detail)
        raise ConfigError(key, errors[0] if errors else "invalid value")
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(key, f"must be an array (got {type(value).__name__})")
        return tuple(_convert(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"must be a table (got {type(value).__name__})")
        return tp(**_build_fields(tp, value, key))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false (got {value!r})")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer (got {value!r})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"must be a number (got {value!r})")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string (got {value!r})")
        return value
    raise ConfigError(key, f"unsupported type {_type_name(tp)}")


def _build_fields(
    cls: type, data: Mapping[str, Any], prefix: str, exclude: set[str] | None = None
) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name not in (exclude or set())]
    if not isinstance(data, Mapping):
        raise ConfigError(prefix or "(top level)", "must be a table")
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(
                dotted,
                f"unknown key; valid keys{' in ' + prefix if prefix else ' at the top level'}: "
                f"{', '.join(names)}",
            )
        out[key] = _convert(hints[key], value, dotted)
    return out
