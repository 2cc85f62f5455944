# The node application: wires config, board, outbox, MQTT link and the node kind together
# and runs them as asyncio tasks (sampling, publishing, status, commands, watchdog, WiFi).
# No task sleeps by blocking; every network wait has a timeout (node.mqtt).
# RAM: an ESP32 without PSRAM has ~100 KB of heap for everything. Modules needed only now and
# then (config, state, board, status, commands, selftest) are imported, used and unloaded
# (use()/drop()), so their code does not sit in RAM between uses.
import asyncio
import gc
import json
import os
import sys

import machine
from micropython import const

import node
from node import FW, clock

_WINDOW = const(8)  # readings in flight (published, custody not yet confirmed)
_WDT_MS = const(30000)  # hardware watchdog: generous for a slow flash write or an NTP exchange
# A `set` is applied at the next boot, where the heap is clean (node/state.py pending_set):
# the raw command waits in _SET_FILE, its ack (formatted at boot, without "t") in _ACK_FILE.
_SET_FILE = const("data/set_cmd.json")
_SET_TMP = const("data/set_cmd.json.tmp")
_ACK_FILE = const("data/set_ack.json")


def log(msg):
    print("node:", msg)


async def _until(t):
    d = clock.ticks_diff(t, clock.ticks_ms())
    if d > 0:
        await asyncio.sleep_ms(d)


def use(name):
    """Import node.<name> for a moment; drop() gives its RAM back."""
    return __import__("node." + name, None, None, (name,))


def drop(name):
    sys.modules.pop("node." + name, None)
    try:
        delattr(node, name)
    except (AttributeError, KeyError):  # not imported (MicroPython says KeyError)
        pass
    gc.collect()


class App:
    def __init__(self):
        self.config_error = None
        self.rtc_state = None
        self.boot = 0
        self.seq = 0
        self.t0_ms = clock.ticks_ms()
        self.uptime_base_s = 0
        self.sensors = []
        self.buses = {}
        self.battery = None
        self.led = None
        self.kind = None
        self.wlan = None
        self.link = None
        self.rssi = None
        self.wake = asyncio.Event()  # the publisher has something to do
        self.net_up = asyncio.Event()
        self._cmds = []
        self._cmd_ev = asyncio.Event()
        self._beat_ms = clock.ticks_ms()
        self._custody_ms = clock.ticks_ms()
        self._status_now = False
        self.place = ""
        use("startup").init(self)  # config, board, outbox: see node/startup.py
        drop("startup")

    # --- bring-up (node/startup.py, unloaded after use) ---

    def new_boot(self):
        use("startup").new_boot(self)
        drop("startup")

    def bring_up(self):
        use("startup").bring_up(self)
        drop("startup")

    def make_link(self):
        use("startup").make_link(self)
        drop("startup")

    def retry_sensor(self, s):
        b = use("board")
        ok = b.bring_up(s, self.board, self.buses)
        drop("board")
        return ok

    def state_msg(self, state):
        # Retained (birth and last will), with where the node was provisioned (self.place, set
        # by startup.make_link): the gateway knows it as soon as it subscribes, also when it
        # starts after the node, and puts it on the observations.
        return '{"v":1,"device_id":"%s","state":"%s","boot":%d,"fw":"%s"%s}' % (
            self.device_id,
            state,
            self.boot,
            FW,
            self.place,
        )

    # --- readings ---

    def uptime_s(self):
        return self.uptime_base_s + clock.ticks_diff(clock.ticks_ms(), self.t0_ms) // 1000

    def battery_v(self):
        if self.battery is None:
            return None
        v = self.battery.read()
        return None if v is None else round(v[0], 3)

    def emit(self, values, t, window_s, n, alarm):
        """Turn one kind result into a reading staged in the outbox. The JSON is formatted
        directly (ASCII only: names, units and numbers), without a dict per channel, and kept
        as a list of short pieces: no 400-byte string has to find room in a fragmented heap
        (the outbox writes the pieces one after the other)."""
        v = self.battery_v()
        if v is not None:
            values["battery"] = v
        units = self.kind.UNITS
        tf = ("false", "true")
        parts = [
            '{"v":1,"device_id":"%s","kind":"%s","fw":"%s","boot":%d,"seq":%d,"t":%d,'
            '"synced":%s,"window_s":%d,"n":%d,"alarm":%s,"raw":{'
            % (
                self.device_id,
                self.kind_name,
                FW,
                self.boot,
                self.seq,
                t,
                tf[clock.synced],
                window_s,
                n,
                tf[alarm],
            )
        ]
        for ch, v in values.items():
            u, places = units.get(ch, ("V", 3))  # else: battery, mV
            if isinstance(v, bool):
                v = tf[v]
            elif v != v or v - v != 0:  # NaN, or +-inf (inf - inf is NaN)
                continue  # never a non-number on the wire (a driver fault)
            else:
                v = repr(round(v, places))
            parts.append('%s"%s":{"v":%s,"u":"%s"}' % ("," if len(parts) > 1 else "", ch, v, u))
        if len(parts) == 1:
            return False  # every sensor failed: no reading (the errors are in the status)
        parts.append("}}")  # closes raw, then the reading
        self.outbox.add(self.boot, self.seq, parts)
        self.seq += 1
        return True

    async def sample_once(self):
        r = await self.kind.sample(clock.mono())
        if r is not None:
            self.emit(r[0], clock.now(), r[1], r[2], r[3])
        if self.outbox.staged:
            self.outbox.flush()
            log("stored %d/%d depth %d" % (self.boot, self.seq - 1, self.outbox.depth))
            self.wake.set()
        return r

    async def sampler(self):
        iv = self.cfg["intervals"]
        nxt = clock.ticks_ms()
        while True:
            lead = self.kind.lead_ms()
            if lead:
                await _until(clock.ticks_add(nxt, -lead))
                await self.kind.prepare()
            await _until(nxt)
            self._beat_ms = clock.ticks_ms()
            try:
                await self.sample_once()
            except Exception as e:  # flash full, heap short: say so, keep sampling
                log("sample failed: %r" % (e,))
                gc.collect()
            period = int(iv["sample_s"] * 1000)
            nxt = clock.ticks_add(nxt, period)
            if clock.ticks_diff(clock.ticks_ms(), nxt) > period:
                nxt = clock.ticks_ms()  # fell far behind: skip, do not burst

    # --- publishing from the outbox ---

    async def publisher(self):
        ob = self.outbox
        link = self.link
        while True:
            await link.up.wait()
            rec = ob.next_unsent(_WINDOW)
            if rec is None:
                custody_ms = int(self.cfg["intervals"]["custody_s"] * 1000)
                self.wake.clear()
                try:
                    await asyncio.wait_for_ms(self.wake.wait(), max(custody_ms // 4, 20))
                except asyncio.TimeoutError:
                    pass
                if ob.sent and clock.ticks_diff(clock.ticks_ms(), self._custody_ms) > custody_ms:
                    # No custody for a while (gateway down or an ack lost): go back to the
                    # oldest unconfirmed reading and resend; the gateway de-duplicates.
                    log("no custody: resending %d" % ob.depth)
                    ob.rewind()
                    self._custody_ms = clock.ticks_ms()
                ob.maybe_persist()
                continue
            if ob.sent == 0:
                self._custody_ms = clock.ticks_ms()
            try:
                await link.publish(self.t_reading, rec[2], 1)
            except OSError:
                continue  # the link dropped: on_connect rewinds and we start over
            ob.mark_sent(rec[:2])

    def on_custody(self, payload):
        try:
            m = json.loads(payload)
            b, a, z = m["boot"], m["from"], m["to"]
            if m["v"] != 1 or type(b) is not int or type(a) is not int or type(z) is not int:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            log("bad custody message ignored")
            return
        if self.outbox.custody(b, a, z):
            self._custody_ms = clock.ticks_ms()
            self.wake.set()

    def on_message(self, topic, payload):
        if topic == self.t_custody:
            self.on_custody(payload)
        elif topic == self.t_cmd and len(self._cmds) < 4:
            self._cmds.append(bytes(payload))
            self._cmd_ev.set()

    async def on_connect(self):
        self.outbox.rewind()  # everything not in custody goes again, in order
        self._custody_ms = clock.ticks_ms()
        self.wake.set()
        try:
            await self.link.publish(self.t_state, self.state_msg("online"), 1, True)
            try:  # the ack of a `set` applied at this boot (node.state pending_set)
                with open(_ACK_FILE) as f:
                    await self.link.publish(self.t_ack, '%s, "t": %d}' % (f.read(), clock.now()), 1)
                os.remove(_ACK_FILE)  # only once sent: else the next connect sends it
                log("set: ack sent")
            except OSError:
                pass  # none waiting
            if not self.deep_sleep:  # a battery node sends it once per radio wake itself
                await self.send_status()
        except OSError:
            pass

    # --- status and commands ---

    async def send_status(self):
        msg = use("status").build(self)  # a list of short pieces, sent one after the other
        drop("status")
        log("status free_heap %d depth %d" % (gc.mem_free(), self.outbox.depth))
        await self.link.publish(self.t_status, msg, 1)

    def request_status(self):
        self._status_now = True

    async def commands(self):
        while True:
            await self._cmd_ev.wait()
            self._cmd_ev.clear()
            while self._cmds:
                raw = self._cmds.pop(0)
                await self.command(raw)

    async def command(self, raw):
        try:
            m = json.loads(raw)
            if m.get("cmd") == "set":
                # Not checked or applied in this fragmented heap: stored on flash (≤ 384
                # bytes: the MQTT buffer drops larger packets), then the node restarts (a
                # battery board: sleeps on) and node.state pending_set applies it at boot;
                # App.on_connect sends the ack. Readings are on flash: none is lost.
                m = None
                with open(_SET_TMP, "w") as f:
                    f.write(raw)
                os.rename(_SET_TMP, _SET_FILE)
                log("set stored: applied at the next boot or wake")
                if not self.deep_sleep:
                    self.outbox.flush()
                    self.outbox.persist()
                    await asyncio.sleep_ms(200)  # its PUBACK leaves (a clean session anyway)
                    machine.reset()
                return
        except (ValueError, AttributeError, MemoryError):
            pass  # not JSON, not an object (or the heap short): node.commands answers
        except OSError as e:
            log("set not stored: %r" % (e,))
            return
        m = None
        for attempt in (1, 2):  # once more after a collect if the heap was short
            try:
                await use("commands").handle(self, raw)
                attempt = 0
            except MemoryError as e:
                log("command: %r (attempt %d)" % (e, attempt))
            except Exception as e:  # a bad command must never stop the node
                log("command failed: %r" % (e,))
                attempt = 0
            drop("commands")
            if not attempt:
                break

    async def health(self):
        """Every second: feed the watchdog (only while the sampler beats), persist the
        custody watermark when due, send the status when due."""
        iv = self.cfg["intervals"]
        try:
            wdt = machine.WDT(timeout=_WDT_MS)
        except (AttributeError, ValueError, OSError):
            wdt = None
        last = clock.ticks_ms()
        while True:
            stall_ms = int((iv["sample_s"] * 3 + iv["warmup_s"]) * 1000) + 20000
            if self.kind is None or clock.ticks_diff(clock.ticks_ms(), self._beat_ms) < stall_ms:
                if wdt is not None:
                    wdt.feed()
            else:
                log("sampler stalled: letting the watchdog reset the node")
            period = int(iv["status_s"] * 1000)
            now = clock.ticks_ms()
            late = clock.ticks_diff(now, last)
            if self._status_now or late >= period:
                self._status_now = False
                # The next one a period after this one was due, not after now: this loop
                # wakes up to a quarter period late (more behind a slow driver read), and
                # re-arming from now lost that every time. Far behind (or asked for): now.
                last = clock.ticks_add(last, period) if period <= late < 2 * period else now
                self.outbox.maybe_persist()
                if self.link.up.is_set():
                    try:
                        await self.send_status()
                    except OSError:
                        pass
                    except MemoryError as e:  # said, and the watchdog stays fed
                        log("status: %r" % (e,))
            await asyncio.sleep_ms(min(1000, max(period // 4, 10)))

    # --- entry ---

    async def run(self):
        if self.deep_sleep and not self.safe:
            await use("sleep").run(self)
            return
        self.new_boot()
        log(
            "boot %d, %s, reset cause %s%s"
            % (self.boot, self.kind_name, self.reset_cause, " SAFE MODE" if self.safe else "")
        )
        self.bring_up()
        self.make_link()
        from node import net

        asyncio.create_task(net.keep_up(self))
        asyncio.create_task(self.publisher())
        asyncio.create_task(self.health())
        asyncio.create_task(self.commands())
        if self.kind is not None:
            asyncio.create_task(self.sampler())
        gc.collect()
        await self.link.run(clock.ticks_ms, clock.ticks_diff, asyncio.sleep_ms)


def main():
    try:
        asyncio.run(App().run())
    except KeyboardInterrupt:
        raise
    except Exception as e:  # last resort: log, then reset like a crashed device would
        sys.print_exception(e)
        import time

        time.sleep(5)
        machine.reset()
