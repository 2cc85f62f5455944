"""The site link: the gateway's session on the site broker, where the nodes publish.

:class:`SiteLink` subscribes to the node topics (QoS 1, a persistent session, manual acks),
classifies each message (:func:`edge_gateway.ingest.classify`): bad ones go to the dead-letter
topic, counted by reason; readings are queued for the committer (:mod:`edge_gateway.committer`)
and PUBACKed only after their group commit. After a commit it sends the nodes their custody
ranges (what the gateway now holds, so a node may forget it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiomqtt

from edge_gateway import contract
from edge_gateway.backpressure import BoundedQueue, TokenBucket
from edge_gateway.ingest import Accepted, classify, deadletter_payload
from edge_gateway.qos2link import InboundGate, Reconnect, make_client, manual_ack, puback

if TYPE_CHECKING:
    from edge_gateway.app import Gateway

log = logging.getLogger("edge_gateway")

# Memory bounds (edge_gateway/backpressure.py): readings waiting for the committer, in messages
# and payload bytes; devices tracked beyond the inventory; dead letters published per second.
QUEUE_MESSAGES = 1024
QUEUE_BYTES = 2 << 20
MAX_DEVICES = 1000
DEAD_LETTERS_PER_S = 200.0  # on average; bursts of up to DEAD_LETTERS_BURST
DEAD_LETTERS_BURST = 500.0

Ack = tuple[aiomqtt.Client, int, int]  # (site client, mid, qos): PUBACK after the commit


@dataclass
class Incoming:
    device_id: str
    body: dict[str, Any]
    received: float
    ack: Ack | None = None
    size: int = 0  # payload bytes (the committer queue is bounded in bytes too)


def ack_message(ack: Ack | None) -> None:
    """PUBACK a site-broker message (manual ack). On a connection that is gone this does
    nothing: the broker sends the message again on the next connection."""
    if ack is not None:
        puback(*ack)


def custody_ranges(keys: list[tuple[str, int, int]]) -> list[tuple[str, int, int, int]]:
    """Collapse (device, boot, seq) keys into (device, boot, from, to) contiguous ranges."""
    by: dict[tuple[str, int], set[int]] = defaultdict(set)
    for dev, boot, seq in keys:
        by[(dev, boot)].add(seq)
    out: list[tuple[str, int, int, int]] = []
    for (dev, boot), seqs in sorted(by.items()):
        ordered = sorted(seqs)
        start = prev = ordered[0]
        for s in ordered[1:]:
            if s != prev + 1:
                out.append((dev, boot, start, prev))
                start = s
            prev = s
        out.append((dev, boot, start, prev))
    return out


async def publish_quietly(
    client: aiomqtt.Client, topic: str, payload: bytes, qos: int, retain: bool = False
) -> bool:
    try:
        await client.publish(topic, payload, qos=qos, retain=retain)
        return True
    except aiomqtt.MqttError as exc:
        log.debug("publish to %s failed: %s", topic, exc)
        return False


class SiteLink:
    """The site broker side of one gateway run: :meth:`run` until cancelled."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.queue: BoundedQueue[Incoming] = BoundedQueue(
            QUEUE_MESSAGES, QUEUE_BYTES, lambda item: item.size
        )
        self.reconnect = asyncio.Event()  # set when the site settings changed
        self.client: aiomqtt.Client | None = None  # while connected
        self._dead_letter_rate = TokenBucket(DEAD_LETTERS_PER_S, DEAD_LETTERS_BURST)

    async def run(self) -> None:
        gw = self.gw
        delay = gw.config.local.reconnect_min_s
        while True:
            gw.check_stop()
            section = gw.config.local
            self.reconnect.clear()
            try:
                client = make_client(
                    section, f"cityedge-{gw.config.gateway_id}", clean_session=False
                )
                # A reading is PUBACKed to the site broker only after its group commit: until
                # then the broker keeps it in our persistent session and, after a crash, sends
                # it again *before* newer readings — so a crash does not reorder a device's
                # readings (a node's own resend would arrive after newer ones).
                manual_ack(client)
                gate = InboundGate(client)  # stop reading the socket while behind
                async with client:
                    for topic in contract.NODE_SUBSCRIPTIONS:
                        await client.subscribe(topic, qos=1)
                    self.client = client
                    log.info("connected to the site broker %s:%d", section.host, section.port)
                    delay = section.reconnect_min_s
                    await self._receive(client, gate)
            except aiomqtt.MqttError as exc:
                log.warning("site broker %s:%d: %s", section.host, section.port, exc)
            except Reconnect:
                log.info("reconnecting to the site broker with new settings")
                delay = 0.0
            finally:
                self.client = None
            await asyncio.sleep(delay)
            delay = min(max(delay * 2, section.reconnect_min_s), section.reconnect_max_s)

    async def _receive(self, client: aiomqtt.Client, gate: InboundGate | None = None) -> None:
        reconnect = asyncio.create_task(self.reconnect.wait())
        messages = aiter(client.messages)
        nxt: asyncio.Future[aiomqtt.Message] | None = None
        try:
            while True:
                nxt = asyncio.ensure_future(anext(messages))
                done, _ = await asyncio.wait([nxt, reconnect], return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    raise Reconnect()
                message = nxt.result()
                nxt = None
                if gate is not None:
                    gate.check()
                await self.on_message(
                    client, str(message.topic), message.payload, (client, message.mid, message.qos)
                )
        finally:
            reconnect.cancel()
            if nxt is not None:
                nxt.cancel()
                with contextlib.suppress(BaseException):
                    await nxt

    async def on_message(
        self, client: aiomqtt.Client, topic: str, payload: Any, ack: Ack | None = None
    ) -> None:
        self.gw.counters["messages_in"] += 1
        data = payload if isinstance(payload, bytes) else str(payload).encode()
        try:
            await self._handle_message(client, topic, data, ack)
        except Exception as exc:  # noqa: BLE001 - that message's problem, never the gateway's
            self.gw.reasons(
                logging.ERROR,
                "ingest",
                "handling a message from %s failed: %s: %s",
                topic[:120],
                type(exc).__name__,
                exc,
            )
            self.dead_letter(
                client,
                topic,
                data,
                "processing",
                f"processing failed: {type(exc).__name__}: {exc}"[:500],
            )
            ack_message(ack)

    async def _handle_message(
        self, client: aiomqtt.Client, topic: str, data: bytes, ack: Ack | None
    ) -> None:
        gw, cfg = self.gw, self.gw.config
        known = None if cfg.inventory.allow_unknown else self._known_kind
        result = classify(topic, data, cfg.store.max_payload_bytes, known)
        now = time.time()
        if not isinstance(result, Accepted):
            self.dead_letter(client, topic, data, result.reason_code, result.reason)
            ack_message(ack)
            return
        devices = gw.devices
        if (
            result.device_id not in devices.devices
            and len(devices.devices) >= MAX_DEVICES
            and cfg.device(result.device_id) is None
        ):
            self.dead_letter(
                client,
                topic,
                data,
                "too_many_devices",
                f"more than {MAX_DEVICES} devices not in the inventory",
            )
            ack_message(ack)
            return
        gw.status_feed.message(result.leaf, result.device_id, result.body, now)
        if result.leaf == "reading":
            gw.counters["readings_in"] += 1
            devices.reading(result.device_id, result.body, now)
            await self.queue.put(Incoming(result.device_id, result.body, now, ack, len(data)))
            return
        elif result.leaf == "status":
            devices.status(result.device_id, result.body, now)
        elif result.leaf == "state":
            devices.presence(result.device_id, result.body, now)
        else:
            gw.counters["command_acks"] += 1
            devices.seen(result.device_id, now)
        ack_message(ack)

    def _known_kind(self, device_id: str) -> str | None:
        entry = self.gw.config.device(device_id)
        return entry.kind if entry is not None else None

    def dead_letter(
        self, client: aiomqtt.Client | None, topic: str, data: bytes, code: str, reason: str
    ) -> None:
        gw = self.gw
        gw.counters[f"dead_letter_{code}"] += 1
        gw.status_feed.dead_letter(topic, code, reason, time.time())
        gw.reasons(
            logging.WARNING, code, "dead letter (%s) from %s: %s", code, topic[:120], reason[:200]
        )
        if client is None:
            return
        if not self._dead_letter_rate.allow():  # a flood is counted, not echoed
            gw.counters["dead_letters_unpublished"] += 1
            return
        body = deadletter_payload(gw.config.gateway_id, topic, data, reason)
        gw.spawn(publish_quietly(client, contract.deadletter_topic(gw.config.gateway_id), body, 0))

    def send_custody(self, keys: list[tuple[str, int, int]]) -> None:
        """Tell the nodes which of their readings the gateway holds now (QoS 1)."""
        client = self.client
        if client is None:
            return  # nodes resend what was not acknowledged; those are duplicates then, re-acked
        for dev, boot, lo, hi in custody_ranges(keys):
            body = json.dumps({"v": 1, "boot": boot, "from": lo, "to": hi}, separators=(",", ":"))
            self.gw.counters["custody_acks"] += 1
            self.gw.spawn(
                publish_quietly(client, contract.node_topic(dev, "custody"), body.encode(), 1)
            )
