# The node application: wires config, board, outbox, MQTT link and the node kind together
# and runs them as asyncio tasks (sampling, publishing, health, commands, watchdog). No task
# sleeps by blocking; every network wait has a timeout (node.mqtt).
import gc
import json
import asyncio
import machine
from node import FW, clock

_ROOT = "cityedge/v1/node/"
UNITS = {
    "pm1_cf1": "ug/m3", "pm25_cf1": "ug/m3", "pm10_cf1": "ug/m3",
    "pm1_atm": "ug/m3", "pm25_atm": "ug/m3", "pm10_atm": "ug/m3",
    "temp": "Cel", "rh": "%RH", "distance": "m", "air_temp": "Cel",
    "pressure": "kPa", "baro": "kPa", "mag_x": "uT", "mag_y": "uT", "mag_z": "uT",
    "field_delta": "uT", "occupied": "/", "battery": "V",
}
# Decimal places kept per unit: below the sensors' resolution, so nothing real is lost.
_PLACES = {"ug/m3": 1, "Cel": 2, "%RH": 2, "m": 3, "kPa": 3, "uT": 2, "V": 3}
_WINDOW = 8  # readings in flight (published, custody not yet confirmed)
_RESET_NAMES = {1: "power_on", 2: "hard_reset", 3: "watchdog", 4: "deep_sleep", 5: "soft_reset"}


def log(msg):
    print("node:", msg)


def reset_cause():
    try:
        return _RESET_NAMES.get(machine.reset_cause(), "other")
    except (AttributeError, OSError):
        return "other"


def mac_id():
    b = machine.unique_id()
    return "ce-" + "".join("%02x" % x for x in b[-6:])


class App:
    def __init__(self):
        from node import config, state

        state.ensure_dir()
        self.cfg, self.config_error = config.load()
        cfg = self.cfg
        if self.config_error:
            log("SAFE MODE: " + self.config_error)
        if not config.valid_device_id(cfg["device_id"]):
            cfg["device_id"] = mac_id()
        self.device_id = cfg["device_id"]
        self.kind_name = cfg["kind"]
        self.reset_cause = reset_cause()
        self.safe = self.config_error is not None
        try:
            from node import board as _b

            self.board = _b.load()
        except (OSError, ValueError) as e:
            self.board = {}
            if not self.safe:
                self.safe = True
                self.config_error = "board.json: %s" % e
        self.deep_sleep = bool(self.board.get("power", {}).get("deep_sleep"))
        self.rtc_state = None
        if self.deep_sleep and not self.safe:
            from node import sleep

            self.rtc_state = sleep.restore(self)
        from node.outbox import Outbox

        self.outbox = Outbox("data", cfg["outbox_slots"],
                             int(cfg["intervals"]["custody_s"] * 2000), clock.ticks_ms,
                             clock.ticks_diff, self.rtc_state and self.rtc_state["ob"])
        self.boot = None
        self.seq = 0
        self.t0_ms = clock.ticks_ms()
        self.uptime_base_s = 0
        topic = _ROOT + self.device_id + "/"
        self.t_reading = topic + "reading"
        self.t_status = topic + "status"
        self.t_state = topic + "state"
        self.t_ack = topic + "ack"
        self.t_cmd = (topic + "cmd").encode()
        self.t_custody = (topic + "custody").encode()
        self.sensors = []
        self.battery = None
        self.led = None
        self.kind = None
        self.wlan = None
        self.link = None
        self.wdt = None
        self.wake = asyncio.Event()  # publisher has something to do
        self.net_up = asyncio.Event()
        self._cmds = []
        self._cmd_ev = asyncio.Event()
        self._beat_ms = clock.ticks_ms()
        self._custody_ms = clock.ticks_ms()
        self._status_now = False
        self.rssi = None
        gc.collect()

    # --- bring-up ---

    def new_boot(self):
        from node import state

        self.boot = state.next_boot("data", self.outbox.last_boot)
        self.seq = 0

    def bring_up(self):
        from node import board as _b

        self.led = _b.Led(self.board.get("status_led"))
        self.battery = _b.battery(self.board)
        if not self.safe:
            self.sensors = _b.sensors(self.board, self.kind_name)
            mod = __import__("node." + self.kind_name, None, None, ("Kind",))
            self.kind = mod.Kind(self)
        gc.collect()

    def state_msg(self, state):
        return json.dumps({"v": 1, "device_id": self.device_id, "state": state,
                           "boot": self.boot, "fw": FW})

    def make_link(self):
        from node import mqtt

        m = self.cfg["mqtt"]
        core = mqtt.Core(self.device_id, m["username"] or None, m["password"] or None,
                         m["keepalive_s"], self.t_state, self.state_msg("offline"))
        subs = [(self.t_cmd, 1), (self.t_custody, 1)]
        self.link = mqtt.Link(core, m["host"], m["port"], subs, self.on_message,
                              self.on_connect, log=log, ready=self.net_up)

    # --- readings ---

    def uptime_s(self):
        return self.uptime_base_s + clock.ticks_diff(clock.ticks_ms(), self.t0_ms) // 1000

    def emit(self, values, t, window_s, n, alarm):
        """Turn one kind result into a reading in the outbox (staged; flushed by the caller)."""
        if self.battery is not None:
            v = self.battery.volts()
            if v is not None:
                values["battery"] = v
        raw = {}
        for ch, v in values.items():
            u = UNITS.get(ch, "/")
            if not isinstance(v, bool):
                v = round(v, _PLACES.get(u, 3))
            raw[ch] = {"v": v, "u": u}
        if not raw:
            return False  # every sensor failed: no reading (the errors are in the status)
        msg = json.dumps({"v": 1, "device_id": self.device_id, "kind": self.kind_name,
                          "fw": FW, "boot": self.boot, "seq": self.seq, "t": t,
                          "synced": clock.synced, "window_s": window_s, "n": n,
                          "alarm": alarm, "raw": raw})
        self.outbox.add(self.boot, self.seq, msg)
        self.seq += 1
        return True

    async def sample_once(self):
        k = self.kind
        r = await k.sample(clock.now())
        if r is not None:
            self.emit(r[0], clock.now(), r[1], r[2], r[3])
        if self.outbox.staged:
            self.outbox.flush()
            self.wake.set()
        return r

    async def sampler(self):
        iv = self.cfg["intervals"]
        nxt = clock.ticks_ms()
        while True:
            lead = self.kind.lead_ms()
            period = int(iv["sample_s"] * 1000)
            if lead:
                await self.sleep_until(clock.ticks_add(nxt, -lead))
                await self.kind.prepare()
            await self.sleep_until(nxt)
            self._beat_ms = clock.ticks_ms()
            try:
                await self.sample_once()
            except OSError as e:  # flash full or failing: say so, keep sampling
                log("sample: %r" % (e,))
            nxt = clock.ticks_add(nxt, period)
            if clock.ticks_diff(clock.ticks_ms(), nxt) > period:
                nxt = clock.ticks_ms()  # fell far behind (e.g. blocked): do not burst

    async def sleep_until(self, when):
        d = clock.ticks_diff(when, clock.ticks_ms())
        if d > 0:
            await asyncio.sleep_ms(d)

    # --- publishing from the outbox ---

    async def publisher(self):
        ob = self.outbox
        link = self.link
        custody_ms = int(self.cfg["intervals"]["custody_s"] * 1000)
        while True:
            await link.up.wait()
            rec = ob.next_unsent(_WINDOW)
            if rec is None:
                self.wake.clear()
                try:
                    await asyncio.wait_for_ms(self.wake.wait(), max(custody_ms // 4, 50))
                except asyncio.TimeoutError:
                    pass
                if ob.sent and clock.ticks_diff(clock.ticks_ms(), self._custody_ms) > custody_ms:
                    # No custody for a while (gateway down or an ack lost): go back and
                    # resend from the oldest unconfirmed reading; the gateway de-duplicates.
                    log("custody timeout: resending %d" % ob.depth)
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
            ob.mark_sent()

    def on_custody(self, payload):
        try:
            m = json.loads(payload)
            b, a, z = m["boot"], m["from"], m["to"]
            if m.get("v") != 1 or not isinstance(b, int) or not isinstance(a, int) \
                    or not isinstance(z, int):
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
        elif topic == self.t_cmd:
            if len(self._cmds) < 4:
                self._cmds.append(bytes(payload))
                self._cmd_ev.set()

    async def on_connect(self):
        self.outbox.rewind()  # everything not in custody goes again, in order
        self._custody_ms = clock.ticks_ms()
        self.wake.set()
        try:
            await self.link.publish(self.t_state, self.state_msg("online"), 1, True)
            await self.send_status()
        except OSError:
            pass

    # --- status and commands ---

    def status_msg(self):
        from node import status

        return status.build(self)

    async def send_status(self):
        gc.collect()
        await self.link.publish(self.t_status, self.status_msg(), 1)

    async def commands(self):
        while True:
            await self._cmd_ev.wait()
            self._cmd_ev.clear()
            while self._cmds:
                raw = self._cmds.pop(0)
                from node import commands

                try:
                    await commands.handle(self, raw)
                except Exception as e:  # a bad command must never stop the node
                    log("command failed: %r" % (e,))

    async def health(self):
        iv = self.cfg["intervals"]
        last = clock.ticks_ms()
        while True:
            period = int(iv["status_s"] * 1000)
            wait = period - clock.ticks_diff(clock.ticks_ms(), last)
            if wait > 0 and not self._status_now:
                try:
                    await asyncio.wait_for_ms(self._status_wait(), min(wait, 1000))
                except asyncio.TimeoutError:
                    pass
                continue
            self._status_now = False
            last = clock.ticks_ms()
            self.outbox.maybe_persist()
            if self.link is not None and self.link.up.is_set():
                try:
                    await self.send_status()
                except OSError:
                    pass

    async def _status_wait(self):
        while not self._status_now:
            await asyncio.sleep_ms(100)

    def request_status(self):
        self._status_now = True

    async def watchdog(self):
        # Fed only while the sampler keeps beating: a hung sampler (or a blocked loop)
        # lets the hardware watchdog reset the node.
        from node import watchdog

        await watchdog.run(self)

    async def wifi(self):
        from node import net

        await net.keep_up(self)

    # --- entry ---

    async def run(self):
        if self.deep_sleep and not self.safe:
            from node import sleep

            await sleep.run(self)
            return
        self.new_boot()
        log("boot %d, %s, reset cause %s%s" % (self.boot, self.kind_name, self.reset_cause,
                                               " SAFE MODE" if self.safe else ""))
        self.bring_up()
        self.make_link()
        tasks = [asyncio.create_task(self.wifi()), asyncio.create_task(self.watchdog()),
                 asyncio.create_task(self.publisher()), asyncio.create_task(self.health()),
                 asyncio.create_task(self.commands())]
        if self.kind is not None:
            tasks.append(asyncio.create_task(self.sampler()))
        await self.link.run(clock.ticks_ms, clock.ticks_diff, asyncio.sleep_ms)


def main():
    try:
        app = App()
        asyncio.run(app.run())
    except KeyboardInterrupt:
        raise
    except Exception as e:  # last resort: log, then reset like a crashed device would
        import sys

        sys.print_exception(e)
        import time

        time.sleep(5)
        machine.reset()
