"""`cityedge ota publish` and `cityedge ota status` (docs/ota.md), run on the site's gateway
(or wherever its data_dir is), with its config, like `cityedge report`."""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from edge_gateway.errors import GatewayError
from edge_gateway.ota import rollout as ro

EXIT_OK = 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "ota",
        help="roll a signed firmware bundle out through a site's gateway",
        description="Hand a signed bundle to the site's gateway with a rollout plan, and watch "
        "each device's update state. docs/ota.md gives the whole release procedure.",
    )
    sub = p.add_subparsers(dest="ota_command", metavar="OTA_COMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    pub = sub.add_parser("publish", help="start a rollout of BUNDLE at the site")
    pub.add_argument("bundle", metavar="BUNDLE", help="a directory `cityedge release sign` signed")
    pub.add_argument("--site", required=True, help="the site (the gateway's site_id)")
    pub.add_argument("--config", required=True, metavar="FILE", help="the gateway's TOML config")
    pub.add_argument(
        "--plan", default="1,25%,100%", help="waves, cumulative: a count or a share (1,25%%,100%%)"
    )
    pub.add_argument(
        "--max-failure",
        type=float,
        default=0.2,
        help="halt when more than this share of a wave fails (default 0.2)",
    )
    pub.add_argument("--devices", help="comma-separated device ids (default: all the site's)")
    pub.set_defaults(func=cmd_publish)
    st = sub.add_parser("status", help="each device's update state at the site")
    st.add_argument("--site", required=True, help="the site (the gateway's site_id)")
    st.add_argument("--config", required=True, metavar="FILE", help="the gateway's TOML config")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(func=cmd_status)


def _config(args: argparse.Namespace) -> Any:
    from edge_gateway.cli import _load

    config = _load(args.config)
    if args.site != config.site_id:
        raise GatewayError(
            f"--site {args.site} is not this gateway's site ({config.site_id})",
            "run it with the config of the site's own gateway",
        )
    return config


def check_bundle(bundle: Path) -> dict[str, Any]:
    """The bundle's header once it is complete and signed (the nodes check the signature)."""
    try:
        head, files, _ = ro.read_manifest(bundle)
        sig = (bundle / "manifest.sig").stat().st_size
    except (OSError, ValueError, IndexError) as exc:
        raise GatewayError(
            f"{bundle} is not a signed bundle ({exc})",
            "give the directory `cityedge release build` wrote, after `cityedge release sign`",
        ) from None
    if not sig:
        raise GatewayError(f"{bundle}/manifest.sig is empty", "sign it: cityedge release sign")
    lines = (bundle / "manifest.txt").read_text("ascii").splitlines()[1:]
    for line in lines:
        size, digest, path = line.split(" ", 2)
        f = bundle / "files" / path
        if not f.is_file() or hashlib.sha256(f.read_bytes()).hexdigest() != digest:
            raise GatewayError(f"{f} is missing or differs from the manifest", "rebuild the bundle")
    return head


def cmd_publish(args: argparse.Namespace) -> int:
    config = _config(args)
    try:
        waves = ro.parse_waves(args.plan)
    except ro.PlanError as exc:
        raise GatewayError(str(exc), "e.g. --plan 1,25%,100%") from None
    if not 0 <= args.max_failure < 1:
        raise GatewayError("--max-failure must be from 0 to below 1", "e.g. --max-failure 0.2")
    head = check_bundle(Path(args.bundle))
    root = ro.ota_dir(config.data_dir) / "rollouts"
    dest = root / str(head["version"])
    if dest.exists():
        raise GatewayError(
            f"version {head['version']} was already published at {args.site}",
            "build a new version (release build --version N+1)",
        )
    latest = ro.latest_plan(ro.ota_dir(config.data_dir))
    if latest and int(latest[1]["version"]) > head["version"] and not head.get("downgrade"):
        raise GatewayError(
            f"version {head['version']} is older than the published {latest[1]['version']}",
            "build a signed downgrade (release build --downgrade) to go back",
        )
    tmp = root / f".{head['version']}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(args.bundle, tmp)
    devices = [d.strip() for d in (args.devices or "").split(",") if d.strip()]
    plan = {
        "version": head["version"],
        "label": head.get("label"),
        "waves": waves,
        "max_failure": args.max_failure,
        "devices": devices,
        "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    ro.write_json(tmp / "plan.json", plan)
    tmp.rename(dest)  # the gateway's service picks it up (it polls every few seconds)
    print(
        f"published version {head['version']} ({head.get('label')}) at {args.site}: "
        f"waves {','.join(waves)}, halts above {args.max_failure:.0%} failures per wave"
    )
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    config = _config(args)
    try:
        saved = json.loads((ro.ota_dir(config.data_dir) / "state.json").read_text())
    except (OSError, ValueError):
        saved = {"rollout": None}
    r = saved.get("rollout")
    if args.json:
        print(json.dumps(saved, indent=1, sort_keys=True))
        return EXIT_OK
    if not r:
        print(f"{args.site}: no rollout (publish one: cityedge ota publish)")
        return EXIT_OK
    sizes = ro.wave_sizes(r["waves"], len(r["devices"])) if r["devices"] else []
    phase = (
        f"HALTED: {r['halted']}"
        if r["halted"]
        else "done"
        if r["done"]
        else f"wave {r['wave'] + 1} of {len(sizes) or len(r['waves'])}"
    )
    print(f"{args.site}: version {r['version']}, waves {','.join(r['waves'])}: {phase}")
    for dev in r["devices"] or sorted(r["state"]):
        st = r["state"].get(dev)
        if st is None:
            print(f"  {dev:<28} waiting for its wave")
            continue
        what = st["state"]
        if what == "downloading":
            what += f" {st.get('pct', 0):.0f}%"
        if st.get("reason"):
            what += f" ({st['reason']})"
        print(f"  {dev:<28} {what}")
    return EXIT_OK
