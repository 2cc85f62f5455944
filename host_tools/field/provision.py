"""Give a node its identity: device id, site, location, WiFi, broker and its own credential.

Library first: `provision_board()` does one board; the CLI and batch mode call it. The node's
`/config.json` is written to a temporary file and renamed on the board, and the inventory rows
are committed only after that rename succeeded, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boards import KINDS
from host_tools.field import broker_auth
from host_tools.field.board import Board
from host_tools.field.errors import FieldError, ProvisionError
from host_tools.field.inventory import Device, Inventory, utc_now

REPO = Path(__file__).resolve().parents[2]
BOARDS_DIR = REPO / "boards"
CONFIG_PATH = "/config.json"
_SITE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_MAC_RE = re.compile(r"^[0-9a-f]{12}$")
NAME_MAX = 64  # the node's config and status (node_status schema) hold at most this much


def device_id_from_mac(mac: str | bytes) -> str:
    """`ce-` + the 12 lower-case hex digits of the MAC (docs/contract.md)."""
    text = mac.hex() if isinstance(mac, bytes) else mac.lower().replace(":", "").replace("-", "")
    if not _MAC_RE.match(text):
        raise ProvisionError(f"{mac!r} is not a 6-byte MAC address")
    return "ce-" + text


def board_names(boards_dir: Path = BOARDS_DIR) -> list[str]:
    return sorted(p.stem for p in boards_dir.glob("*.json"))


def load_board_checked(name: str, boards_dir: Path = BOARDS_DIR) -> dict[str, Any]:
    """The board definition `boards/<name>.json`, checked by the boards loader."""
    if not (boards_dir / f"{name}.json").is_file():
        known = ", ".join(board_names(boards_dir)) or "none"
        raise ProvisionError(f"no board definition {name!r} in {boards_dir} (known: {known})")
    try:
        from boards import BoardError, load_board
    except ImportError:  # the loader is optional: fall back to reading the JSON
        loaded: dict[str, Any] = json.loads((boards_dir / f"{name}.json").read_text())
        return loaded
    try:
        return load_board(boards_dir / f"{name}.json")
    except BoardError as exc:
        raise ProvisionError(str(exc), hint=getattr(exc, "hint", "") or None) from exc


@dataclass(frozen=True)
class BrokerTarget:
    """Where the node's MQTT client connects (the site gateway's broker)."""

    host: str
    port: int = 1883
    tls: bool = False
    keepalive_s: int = 60

    @classmethod
    def parse(cls, text: str, tls: bool = False) -> BrokerTarget:
        scheme, sep, rest = text.partition("://")
        if sep:  # a URL (http://…, mqtt://…): the node wants the host and port only
            bare = rest.split("/", 1)[0]
            raise ProvisionError(
                f"broker {text!r} is a URL; give HOST[:PORT] without {scheme}://",
                hint=f"For example --broker {bare} (add --tls for an encrypted listener).",
            )
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
        if not host:
            raise ProvisionError(
                f"broker {text!r} has no host name", hint="Give --broker HOST[:PORT]."
            )
        try:
            port_n = int(port) if port else (8883 if tls else 1883)
        except ValueError:
            raise ProvisionError(f"broker port {port!r} is not a number") from None
        return cls(host=host, port=port_n, tls=tls)


@dataclass(frozen=True)
class NodeSpec:
    """What the technician says about one node; the MAC-derived id comes from the board."""

    kind: str
    site_id: str
    board: str
    lat: float
    lon: float
    wifi_ssid: str
    wifi_password: str
    broker: BrokerTarget
    name: str | None = None
    elev_m: float | None = None
    intervals: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)

    def validate(self, boards_dir: Path = BOARDS_DIR) -> NodeSpec:
        if self.kind not in KINDS:
            raise ProvisionError(f"kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not _SITE_RE.match(self.site_id):
            raise ProvisionError(
                f"site id {self.site_id!r} must be lower-case letters, digits and '-'",
                hint="Use a short name such as rayong-school-01.",
            )
        board = load_board_checked(self.board, boards_dir)
        if not board.get("sensors", {}).get(self.kind):
            raise ProvisionError(
                f"board {self.board!r} has no {self.kind} sensors",
                hint=f"Pick a board whose definition wires {self.kind} sensors, or a different kind.",
            )
        for label, value, limit in (("lat", self.lat, 90.0), ("lon", self.lon, 180.0)):
            if not (math.isfinite(value) and -limit <= value <= limit):
                raise ProvisionError(f"{label} {value} is outside ±{limit:g} degrees")
        if self.name is not None and (
            len(self.name) > NAME_MAX or any(not ch.isprintable() for ch in self.name)
        ):
            raise ProvisionError(
                f"name {self.name!r} must be at most {NAME_MAX} printable characters",
                hint="Use a short name people know the place by, e.g. 'canal gate, pole 2'.",
            )
        if self.elev_m is not None and not math.isfinite(self.elev_m):
            raise ProvisionError(f"elev_m {self.elev_m} is not a finite number")
        if not self.wifi_ssid:
            raise ProvisionError("no WiFi network name given", hint="Give --ssid NAME.")
        if not 0 < self.broker.port < 65536:
            raise ProvisionError(f"broker port {self.broker.port} is out of range")
        return self


def build_config(
    spec: NodeSpec, device_id: str, password: str, credential_version: int
) -> dict[str, Any]:
    """The node's /config.json (docs/architecture.md, "Node config")."""
    location: dict[str, Any] = {"lat": spec.lat, "lon": spec.lon}
    if spec.elev_m is not None:
        location["elev_m"] = spec.elev_m
    if spec.name:  # the node reports it in its status; the gateway puts it on observations
        location["name"] = spec.name
    config: dict[str, Any] = {
        "device_id": device_id,
        "kind": spec.kind,
        "site_id": spec.site_id,
        "location": location,
        "wifi": {"ssid": spec.wifi_ssid, "password": spec.wifi_password},
        "mqtt": {
            "host": spec.broker.host,
            "port": spec.broker.port,
            "username": device_id,
            "password": password,
            "tls": spec.broker.tls,
            "keepalive_s": spec.broker.keepalive_s,
        },
        "credential_version": credential_version,
    }
    if spec.intervals:
        config["intervals"] = dict(spec.intervals)
    if spec.thresholds:
        config["thresholds"] = dict(spec.thresholds)
    return config


@dataclass(frozen=True)
class ProvisionResult:
    device_id: str
    port: str
    site_id: str
    kind: str
    credential_version: int
    rotated: bool  # an earlier credential was replaced


def provision_board(
    board: Board,
    spec: NodeSpec,
    inventory: Inventory,
    *,
    firmware_version: str | None = None,
    chip: str | None = None,
) -> ProvisionResult:
    """Provision the board behind `board`; returns what was done. Raises FieldError."""
    spec.validate()
    device_id = device_id_from_mac(board.mac())
    previous = inventory.device(device_id)
    version = (previous.credential_version + 1) if previous else 1
    password = broker_auth.new_password()
    now = utc_now()
    device = Device(
        device_id=device_id,
        mac=device_id[3:],
        chip=chip or (previous.chip if previous else None),
        kind=spec.kind,
        board=spec.board,
        site_id=spec.site_id,
        name=spec.name,
        lat=spec.lat,
        lon=spec.lon,
        elev_m=spec.elev_m,
        firmware_version=firmware_version,
        credential_version=version,
        password_hash=broker_auth.hash_password(password),
        created_at=previous.created_at if previous else now,
        updated_at=now,
    )
    config = build_config(spec, device_id, password, version)
    data = json.dumps(config, separators=(",", ":")).encode()
    before = board.read_file(CONFIG_PATH)  # put back if the inventory cannot record the new one
    replaced = False
    try:
        with inventory.provisioning(device, board.port):
            board.write_file_atomic(CONFIG_PATH, data)
            replaced = True
    except BaseException:
        if replaced:  # the board has the new config but the inventory does not: undo it
            _restore_config(board, before)
        raise
    return ProvisionResult(
        device_id, board.port, spec.site_id, spec.kind, version, previous is not None
    )


def _restore_config(board: Board, before: bytes | None) -> None:
    """Put the board's config back as it was before a provision whose inventory write failed,
    so the node never holds a credential the inventory (and so the broker) does not know."""
    try:
        if before is None:
            board.remove(CONFIG_PATH)
        else:
            board.write_file_atomic(CONFIG_PATH, before)
    except FieldError as exc:
        raise ProvisionError(
            f"the inventory did not record the new credential, and the board's previous config "
            f"could not be put back ({exc})",
            hint="Run the same provision command again: it writes a fresh config and records it.",
        ) from exc


def export_broker_files(inventory: Inventory, out_dir: Path, site_id: str) -> tuple[Path, Path]:
    """Write `passwd` and `acl` for one site's Mosquitto from the inventory's current hashes.

    Only that site's gateway account(s) and devices are in it, and only their current
    credentials, so a rotated credential stops working as soon as the broker reloads these
    files (SIGHUP, or `systemctl reload mosquitto`).
    """
    users: dict[str, str] = {}
    gateways: list[str] = []
    for user, (role, hashed) in inventory.broker_users(site_id).items():
        users[user] = hashed
        if role == "gateway":
            gateways.append(user)
    passwd, acl = out_dir / "passwd", out_dir / "acl"
    broker_auth.write_broker_files(passwd, acl, users, gateways, out_dir / "cityedge.conf")
    return passwd, acl


def check_site_has_devices(inventory: Inventory, site_id: str) -> None:
    """Refuse to write broker files for a site without devices: installed on the gateway, an
    empty password file locks every node out (a mistyped --site does exactly that)."""
    sites = inventory.sites()
    if sites.get(site_id):
        return
    known = ", ".join(f"{s} ({n} device{'' if n == 1 else 's'})" for s, n in sites.items())
    raise ProvisionError(
        f"site {site_id!r} has no devices in the inventory {inventory.path} "
        f"(known sites: {known or 'none yet'})",
        hint="Check the spelling of --site. For a first install, before any node is "
        "provisioned, add --gateway-user to create the gateway's account.",
    )


def create_gateway_credential(inventory: Inventory, username: str, site_id: str) -> str:
    """A new password for a site gateway's broker account; only its hash is kept."""
    broker_auth.check_username(username)
    if not _SITE_RE.match(site_id):
        raise ProvisionError(f"site id {site_id!r} must be lower-case letters, digits and '-'")
    password = broker_auth.new_password()
    inventory.set_broker_user(username, "gateway", site_id, broker_auth.hash_password(password))
    return password
