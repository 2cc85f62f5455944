"""The gateway's OTA service (docs/ota.md): its own MQTT client on the site broker.

It runs the newest published rollout (edge_gateway/ota/rollout.py): offers the update to the
devices of the current wave (``node/<id>/ota/offer``, retained, so a battery node finds it at
its next wake and a node that reconnects gets it again), serves the chunks a node asks for
(``ota/get`` "<offset> <n> <name>" → ``ota/c`` "<offset> <name>\\n" + bytes), follows what the
nodes report on ``ota/state``, withdraws an offer once its device has an outcome, and moves to
the next wave or halts. The state goes to ``<data_dir>/ota/state.json`` for ``cityedge ota
status``, the device status page and the metrics (:func:`device_states`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt

from edge_gateway import contract
from edge_gateway.ota import rollout as ro
from edge_gateway.qos2link import make_client

if TYPE_CHECKING:
    from edge_gateway.app import Gateway

log = logging.getLogger("edge_gateway.ota")

CHUNK_MAX = 256  # the node's 384-byte MQTT input buffer holds topic + header + 256 bytes
POLL_S = 2.0


class OtaService:
    def __init__(self, data_dir: str | Path) -> None:
        self.root = ro.ota_dir(data_dir)
        self.rollout: ro.Rollout | None = None
        self.bundle: Path | None = None
        self.files: dict[str, int] = {}
        self.total = 0
        self.known: set[str] = set()  # devices seen on the site broker (retained births)
        self.served: dict[str, dict[str, int]] = {}  # device → file → highest byte served
        self.offered: set[str] = set()
        self.bytes_sent = 0
        self._dirty = True
        self.plan_devices: list[str] = []
        saved = self.root / "state.json"
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            self.rollout = ro.Rollout.from_dict(json.loads(saved.read_text())["rollout"])

    # -- rollout --------------------------------------------------------------------------

    def load_latest(self) -> None:
        found = ro.latest_plan(self.root)
        if found is None:
            return
        bundle, plan = found
        version = int(plan["version"])
        if self.rollout is None or self.rollout.version != version:
            if self.rollout is not None and version < self.rollout.version:
                return
            self.rollout = ro.Rollout(version, list(plan["waves"]), float(plan["max_failure"]))
            self.offered.clear()
            self._dirty = True
            log.info("rollout of version %d: waves %s", version, ",".join(plan["waves"]))
        if self.bundle != bundle:
            try:
                _, self.files, self.total = ro.read_manifest(bundle)
            except (OSError, ValueError) as exc:
                log.error("rollout %d: bundle %s unreadable: %s", version, bundle, exc)
                return
            self.bundle = bundle
            self.plan_devices = [str(d) for d in plan.get("devices") or []]

    def assign(self) -> None:
        """Fix the rollout's device order once devices are known (canary = first)."""
        r = self.rollout
        if r is None or r.devices or self.bundle is None:
            return
        devices = self.plan_devices or sorted(self.known)
        if devices:
            r.devices = devices
            self._dirty = True

    async def offers(self, client: aiomqtt.Client) -> None:
        r = self.rollout
        if r is None or self.bundle is None:
            return
        if r.step():
            self._dirty = True
            if r.halted:
                log.error("rollout %d halted: %s", r.version, r.halted)
            elif r.done:
                log.info("rollout %d done", r.version)
        for dev in r.current() if not r.halted else []:
            if dev in self.offered:
                continue
            st = r.state.setdefault(dev, ro.Device(ver=r.version, t=ro.now()))
            if st.state in ro.FAILED or st.state == ro.TERMINAL_OK:
                continue
            body = json.dumps({"v": 1, "version": r.version, "total": self.total})
            await client.publish(contract.node_topic(dev, "ota/offer"), body, 1, retain=True)
            self.offered.add(dev)
            self._dirty = True
        if r.halted:  # withdraw the offers nobody has started on
            for dev in sorted(self.offered):
                if r.state.get(dev, ro.Device()).state == "offered":
                    await self.withdraw(client, dev)

    async def withdraw(self, client: aiomqtt.Client, dev: str) -> None:
        await client.publish(contract.node_topic(dev, "ota/offer"), b"", 1, retain=True)
        self.offered.discard(dev)

    # -- messages -------------------------------------------------------------------------

    async def on_message(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if len(parts) < 4 or parts[2] != "node":
            return
        dev, leaf = parts[3], "/".join(parts[4:])
        if leaf == "state":
            if payload:
                self.known.add(dev)
        elif leaf == "ota/get":
            await self.serve(client, dev, payload)
        elif leaf == "ota/state":
            await self.report(client, dev, payload)

    async def serve(self, client: aiomqtt.Client, dev: str, payload: bytes) -> None:
        r = self.rollout
        try:
            off_s, n_s, name = payload.decode("ascii").split(" ", 2)
            off, n = int(off_s), min(int(n_s), CHUNK_MAX)
        except (UnicodeDecodeError, ValueError):
            log.warning("%s: bad chunk request %r ignored", dev, payload[:60])
            return
        if r is None or self.bundle is None or dev not in self.offered or off < 0 or n < 0:
            return  # not offered to it (or withdrawn): no answer, the node gives up
        if name in ("manifest.txt", "manifest.sig"):
            path = self.bundle / name
        elif name in self.files:
            path = self.bundle / "files" / name
        else:
            log.warning("%s: asked for %r, not in bundle %d", dev, name[:60], r.version)
            return
        data = await asyncio.to_thread(_read, path, off, n)
        body = f"{off} {name}\n".encode() + data
        await client.publish(contract.node_topic(dev, "ota/c"), body, 0)
        self.bytes_sent += len(body)
        done = self.served.setdefault(dev, {})
        done[name] = max(done.get(name, 0), off + len(data))
        st = r.state.setdefault(dev, ro.Device(ver=r.version))
        if st.state in ("offered", "downloading"):
            st.state = "downloading"
            pct = round(100 * sum(done.values()) / max(self.total, 1), 1)
            if pct - st.pct >= 5 or st.pct == 0:
                self._dirty = True
            st.pct, st.t = min(pct, 100.0), ro.now()

    async def report(self, client: aiomqtt.Client, dev: str, payload: bytes) -> None:
        r = self.rollout
        try:
            m = json.loads(payload)
            state, ver = m["state"], m["ver"]
            if state not in ro.STATES or not isinstance(ver, int):
                raise ValueError(state)
        except (ValueError, KeyError, TypeError):
            if payload:
                log.warning("%s: bad OTA state %r ignored", dev, payload[:80])
            return
        if r is None or ver != r.version:
            return
        st = r.state.setdefault(dev, ro.Device(ver=ver))
        st.state, st.reason, st.t = state, m.get("reason"), ro.now()
        st.running = m.get("running") if isinstance(m.get("running"), int) else None
        if state in ("installed", "healthy"):
            st.pct = 100.0
        log.info("%s: update %d %s%s", dev, ver, state, f" ({st.reason})" if st.reason else "")
        self._dirty = True
        if state == ro.TERMINAL_OK or state in ro.FAILED:  # an outcome: offer no more
            await self.withdraw(client, dev)

    def save(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        self.root.mkdir(parents=True, exist_ok=True)
        data = {
            "rollout": self.rollout.as_dict() if self.rollout else None,
            "bytes_sent": self.bytes_sent,
        }
        ro.write_json(self.root / "state.json", data)


def _read(path: Path, off: int, n: int) -> bytes:
    with path.open("rb") as f:
        f.seek(off)
        return f.read(n)


def device_states(data_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Each device's update state from the service's last state.json ({} if none)."""
    try:
        saved = json.loads((ro.ota_dir(data_dir) / "state.json").read_text())
        return dict(saved["rollout"]["state"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


async def run(gateway: Gateway) -> None:
    """The service's loop: connect, subscribe, react; reconnect on any broker failure."""
    cfg = gateway.config
    svc = OtaService(cfg.data_dir)
    gateway.ota = svc
    delay = cfg.local.reconnect_min_s
    while True:
        try:
            # its own session beside the site link's (never the site link's client id)
            section = dataclasses.replace(cfg.local, client_id=None)
            client = make_client(section, f"cityedge-{cfg.gateway_id}-ota")
            async with client:
                for leaf in ("state", "ota/get", "ota/state"):
                    await client.subscribe(contract.node_topic("+", leaf), qos=1)
                svc.offered.clear()  # offers are retained; re-sent to be sure after a restart
                delay = cfg.local.reconnect_min_s
                await _serve(svc, client)
        except aiomqtt.MqttError as exc:
            log.warning("OTA: site broker: %s", exc)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # never stop the gateway
            log.error("OTA: %s", exc)
        await asyncio.sleep(delay)
        delay = min(max(delay * 2, cfg.local.reconnect_min_s), cfg.local.reconnect_max_s)


async def _serve(svc: OtaService, client: aiomqtt.Client) -> None:
    messages = aiter(client.messages)
    nxt: asyncio.Task[aiomqtt.Message] | None = None
    first = True
    while True:
        await asyncio.to_thread(svc.load_latest)
        if not first:  # the retained births have arrived by now
            svc.assign()
        first = False
        await svc.offers(client)
        await asyncio.to_thread(svc.save)
        deadline = asyncio.get_running_loop().time() + POLL_S
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            if nxt is None:
                nxt = asyncio.ensure_future(anext(messages))
            done, _ = await asyncio.wait({nxt}, timeout=left)
            if not done:
                break
            msg, nxt = nxt.result(), None
            payload = msg.payload if isinstance(msg.payload, bytes) else b""
            await svc.on_message(client, str(msg.topic), payload)
            if svc._dirty:
                break  # a device reported or progressed: the wave may be complete
