"""`cityedge gateway maintenance …` (talks to the running gateway's status page with the
token), `cityedge fleet serve` and `cityedge report completeness`."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1


def add_maintenance(gateway_sub: Any) -> None:
    """Register ``maintenance`` under ``cityedge gateway``."""
    m = gateway_sub.add_parser(
        "maintenance", help="put a device in maintenance (not counted as down, no alerts) or end it")
    m.add_argument("--config", required=True, metavar="FILE", help="the gateway's TOML config")
    m.add_argument("action", choices=("start", "end", "list"))
    m.add_argument("device", nargs="?", help="device id (start, end)")
    m.add_argument("--hours", type=float, default=None,
                   help="how long (default: until `end`)")
    m.add_argument("--reason", default="", help="shown on the page (e.g. 'sensor swap')")
    m.set_defaults(func=cmd_maintenance)


def _fail(message: str, hint: str) -> Exception:
    from host_tools.cli import CityEdgeError

    return CityEdgeError(message, hint=hint)


def _request(url: str, token: str | None, body: dict[str, Any] | None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error", "")
        except ValueError:
            detail = ""
        raise _fail(f"the gateway refused: HTTP {exc.code} {detail}",
                    "check the device id and that the token file is the gateway's") from None
    except OSError as exc:
        raise _fail(f"cannot reach the gateway's status page at {url}: {exc}",
                    "is the gateway running, with status.enabled = true? (systemctl "
                    "status cityedge-gateway)") from None


def cmd_maintenance(args: argparse.Namespace) -> int:
    from edge_gateway.cli import _load

    config = _load(args.config)
    s = config.status
    host = "127.0.0.1" if s.host in ("0.0.0.0", "::", "") else s.host
    base = f"http://{host}:{s.port}"
    if args.action == "list":
        rows = _request(f"{base}/api/devices?state=maintenance", None, None)
        for r in rows:
            m = r.get("maintenance") or {}
            print(f"{r['device_id']}  {m.get('reason', '')}")
        return EXIT_OK
    if not args.device:
        raise _fail("give the device id", "e.g. cityedge gateway maintenance --config "
                    "gateway.toml start ce-a1b2c3d4e5f6 --hours 24 --reason 'sensor swap'")
    token_path = Path(s.token_file) if s.token_file else Path(config.data_dir) / "status-token"
    try:
        token = token_path.read_text().strip()
    except OSError as exc:
        raise _fail(f"cannot read the status token {token_path}: {exc.strerror}",
                    "run as the gateway's user (sudo -u cityedge …)") from None
    body: dict[str, Any] = {"action": args.action, "reason": args.reason}
    if args.hours is not None:
        body["hours"] = args.hours
    out = _request(f"{base}/api/devices/{args.device}/maintenance", token, body)
    print(f"{out['device_id']}: {out['state']} ({out['reason']})")
    return EXIT_OK
