# Simulated ESP32 `network` module: one station interface whose association takes time, whose
# RSSI wanders, and which can be made to fail for outage scenarios:
#   - /sim.json "wifi": {"fail": true}            the AP is never found;
#   - a file "sim_wifi_down" in the flash dir       the link drops (and cannot associate) while
#                                                    it exists; `touch`/`rm` it from a test.
# The launcher's broker relay goes silent at the same time (SimNode.set_wifi), so open sockets
# behave as over a vanished link; the firmware learns of the drop from isconnected() or from
# its own keepalive timeouts, as on a device.
import time

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_BEACON_TIMEOUT = 200
STAT_ASSOC_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204
AUTH_OPEN = 0
AUTH_WPA2_PSK = 3

_DOWN_FILE = "sim_wifi_down"
_ifaces = {}


def _down():
    try:
        import os

        os.stat(_DOWN_FILE)
        return True
    except OSError:
        return False


class WLAN:
    PM_NONE = 0
    PM_PERFORMANCE = 1
    PM_POWERSAVE = 2
    IF_STA = STA_IF
    IF_AP = AP_IF

    def __new__(cls, interface=STA_IF):
        w = _ifaces.get(interface)
        if w is None:  # one object per interface, as on the ESP32 port
            w = object.__new__(cls)
            w._init(interface)
            _ifaces[interface] = w
        return w

    def __init__(self, interface=STA_IF):
        pass

    def _init(self, interface):
        import json

        import machine

        try:
            with open("sim.json") as f:
                sim = json.load(f)
        except (OSError, ValueError):
            sim = {}
        cfg = sim.get("wifi") or {}
        base = machine.unique_id()
        self._if = interface
        self._active = False
        self._status = STAT_IDLE
        self._ssid = None
        self._t_assoc = 0
        self._assoc_ms = int(cfg.get("assoc_ms", 800))
        self._fail = bool(cfg.get("fail", False))
        self._rssi0 = int(cfg.get("rssi_dbm", -67))
        self._ap_ssid = cfg.get("ssid")  # None: any SSID is found
        self._rssi = self._rssi0
        self._rng = (int(sim.get("seed", 1)) * 2654435761 + 1) & 0x7FFFFFFF or 1
        self._ip = cfg.get("ip", "192.168.4.%d" % (20 + base[5] % 200))
        if interface == AP_IF:  # the ESP32's soft-AP MAC is base MAC + 1
            base = base[:5] + bytes(((base[5] + 1) & 0xFF,))
        self._mac = base
        self._pm = WLAN.PM_PERFORMANCE
        self._txpower = 20

    def active(self, is_active=None):
        if is_active is None:
            return self._active
        self._active = bool(is_active)
        if not self._active:
            self._status = STAT_IDLE
        return None

    def connect(self, ssid=None, key=None, *, bssid=None):
        if not self._active:
            raise OSError("Wifi Not Started")  # the ESP32 port's message for an inactive STA
        self._ssid = ssid
        self._status = STAT_CONNECTING
        self._t_assoc = time.ticks_ms()

    def disconnect(self):
        self._status = STAT_IDLE

    def _update(self):
        s = self._status
        if not self._active:
            self._status = STAT_IDLE
            return
        if s == STAT_GOT_IP and _down():
            print("sim: WiFi link lost (beacon timeout)")
            self._status = STAT_BEACON_TIMEOUT
            return
        if (
            s == STAT_CONNECTING
            and time.ticks_diff(time.ticks_ms(), self._t_assoc) >= self._assoc_ms
        ):
            if self._fail or _down() or (self._ap_ssid is not None and self._ssid != self._ap_ssid):
                self._status = STAT_NO_AP_FOUND
            else:
                self._status = STAT_GOT_IP

    def status(self, param=None):
        self._update()
        if param is None:
            return self._status
        if param == "rssi":
            if self._status != STAT_GOT_IP:
                raise OSError("STA is not connected")
            # A seeded random walk held within +-8 dB of the configured level: slow fading.
            x = self._rng
            x ^= (x << 13) & 0x7FFFFFFF
            x ^= x >> 17
            x ^= (x << 5) & 0x7FFFFFFF
            self._rng = x
            r = self._rssi + (x % 5) - 2
            lo = self._rssi0 - 8
            hi = self._rssi0 + 8
            self._rssi = lo if r < lo else hi if r > hi else r
            return self._rssi
        if param == "stations":
            return []
        raise ValueError("unknown status param")

    def isconnected(self):
        self._update()
        return self._status == STAT_GOT_IP

    def config(self, *args, **kw):
        if kw:
            for k, v in kw.items():
                if k == "pm":
                    self._pm = v
                elif k == "txpower":
                    self._txpower = v
                elif k in (
                    "reconnects",
                    "channel",
                    "ssid",
                    "essid",
                    "key",
                    "security",
                    "max_clients",
                    "hidden",
                    "protocol",
                ):
                    pass
                else:
                    raise ValueError("unknown config param")
            return None
        p = args[0]
        if p == "mac":
            return self._mac
        if p in ("essid", "ssid"):
            return self._ssid or ""
        if p == "pm":
            return self._pm
        if p == "txpower":
            return self._txpower
        if p == "channel":
            return 6
        raise ValueError("unknown config param")

    def ifconfig(self, cfg=None):
        if cfg is not None:
            self._ip = cfg[0]
            return None
        if self.isconnected():
            return (self._ip, "255.255.255.0", "192.168.4.1", "192.168.4.1")
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")
