# Water-level node: ultrasonic distance (sensor face -> water) or a pressure transducer.
# Reports the window median every report_s; reports at once and then every alarm_report_s
# while the level is at/above the warning level or rising fast (alarm: true), so a riverside
# community is warned within one sample period instead of one report period.
from array import array

from node.filters import Window, const

CHANNELS = ("distance", "air_temp", "pressure", "baro")
# driver -> the channel of each value it returns (node.sensors; None: not reported); an
# ultrasonic sensor's second name is the temperature that compensates its speed of sound.
_US = const(("distance", "air_temp"))
NAMES = {
    "sht3x": ("air_temp",),
    "bme280": ("air_temp", None, "baro"),
    "pressure": ("pressure",),
    "a02yyuw": _US,
    "jsn-sr04t": _US,
    "hc-sr04": _US,
    "jsn-sr04t-pulse": _US,
}
_RHO_G = const(9806.65)  # Pa per metre of fresh water (1000 kg/m3 * 9.80665 m/s2)
_P_STD_KPA = const(101.325)  # standard atmosphere, when there is no barometer


def _med3(a, b, c):
    return max(min(a, b), min(max(a, b), c))


def level_of(values):
    """A number that grows with the water level: -distance, or the pressure depth in m."""
    d = values.get("distance")
    if d is not None:
        return -d
    p = values.get("pressure")
    if p is not None:
        return (p - values.get("baro", _P_STD_KPA)) * 1000.0 / _RHO_G
    return None


UNITS = {  # channel: (SenML unit, decimals kept)
    "distance": ("m", 3),
    "air_temp": ("Cel", 2),
    "pressure": ("kPa", 3),
    "baro": ("kPa", 3),
}


class Kind:
    UNITS = UNITS
    name = "water"

    def __init__(self, app):
        self.app = app
        self.win = Window(CHANNELS, self._per())
        self.t_start = None
        self.alarm = False
        self.since = 0  # samples since the last report
        self._t = array("i", bytes(4 * 6))  # last 6 level samples (ring): time, level
        self._lv = array("f", bytes(4 * 6))
        self._k = 0

    def lead_ms(self):
        return 0

    async def prepare(self):
        pass

    def _iv(self, k):
        return self.app.cfg["intervals"][k]

    def _per(self):
        return round(self._iv("report_s") / self._iv("sample_s"))  # samples per report

    def _rise_m_per_min(self, t, lv):
        """Median of the last 3 levels against the median of the 3 before, per minute: one
        bad echo (a leaf, a bird) moves neither median, so it cannot raise an alarm."""
        k = self._k
        self._t[k % 6] = t
        self._lv[k % 6] = lv
        self._k = k + 1
        if k < 5:
            return 0.0
        a = self._lv
        new = _med3(a[k % 6], a[(k - 1) % 6], a[(k - 2) % 6])
        old = _med3(a[(k - 3) % 6], a[(k - 4) % 6], a[(k - 5) % 6])
        dt = self._t[(k - 1) % 6] - self._t[(k - 4) % 6]  # middle sample of each triple
        if dt <= 0:
            return 0.0
        return (new - old) * 60.0 / dt

    def _alarming(self, values, t):
        th = self.app.cfg["thresholds"]
        lv = level_of(values)
        if lv is None:
            return self.alarm  # no level this sample: keep the state
        rise = self._rise_m_per_min(t, lv)
        d = values.get("distance")
        warn = th["warn_distance_m"]
        return (d is not None and warn > 0 and d <= warn) or rise > th["rise_m_per_min"]

    async def sample(self, t):
        values = {}
        for s in self.app.sensors:
            await s.read(values, self.app)
        if self.t_start is None:
            self.t_start = t
        self.win.fit(self._per())
        self.win.add(values)
        self.since += 1
        was = self.alarm
        self.alarm = self._alarming(values, t)
        if self.alarm:
            per = max(1, round(self._iv("alarm_report_s") / self._iv("sample_s")))
        else:
            per = self._per()
        if not (self.alarm and not was) and self.since < per:
            return None
        out = self.win.medians()
        n = self.win.samples
        w = t - self.t_start
        self.t_start = t
        self.since = 0
        self.win.reset()
        return out, w, n, self.alarm

    def save(self):
        return [
            self.t_start,
            self.alarm,
            self.since,
            self._k,
            list(self._t),
            list(self._lv),
            self.win.save(),
        ]

    def load(self, s):
        self.t_start, self.alarm, self.since, self._k = s[0], s[1], s[2], s[3]
        for i in range(6):
            self._t[i] = s[4][i]
            self._lv[i] = s[5][i]
        self.win.load(s[6])
