# Air node: PMS5003 particulates + T/RH, averaged over report_s with outlier-robust filtering.
# The PMS5003 fan sleeps between samples when they are far apart: its laser and fan have a
# limited life (~8000 h, Plantower manual) and the airflow needs ~30 s to settle after wake-up
# (manual: "at least 30 seconds ... after the sensor wakes up"), so the node wakes it
# warmup_s before each sample when sample_s >= 4 * warmup_s (2 min at the defaults).
from node.filters import Window

CHANNELS = ("pm1_cf1", "pm25_cf1", "pm10_cf1", "pm1_atm", "pm25_atm", "pm10_atm", "temp", "rh")
# driver -> the channel of each value it returns (node.sensors)
NAMES = {"pms5003": CHANNELS[:6], "sht3x": CHANNELS[6:], "bme280": CHANNELS[6:]}


UNITS = {  # channel: (SenML unit, decimals kept: below the sensor's resolution)
    "pm1_cf1": ("ug/m3", 1),
    "pm25_cf1": ("ug/m3", 1),
    "pm10_cf1": ("ug/m3", 1),
    "pm1_atm": ("ug/m3", 1),
    "pm25_atm": ("ug/m3", 1),
    "pm10_atm": ("ug/m3", 1),
    "temp": ("Cel", 2),
    "rh": ("%RH", 2),
}


class Kind:
    UNITS = UNITS
    name = "air"

    def __init__(self, app):
        self.app = app
        self.win = Window(CHANNELS, self._per())
        self.t_start = None

    def _iv(self, k):
        return self.app.cfg["intervals"][k]

    def _per(self):
        return round(self._iv("report_s") / self._iv("sample_s"))  # samples per report

    def sleeps_sensor(self):
        return self._iv("sample_s") >= 4 * self._iv("warmup_s")

    def lead_ms(self):
        return int(self._iv("warmup_s") * 1000) if self.sleeps_sensor() else 0

    async def prepare(self):
        if self.sleeps_sensor():
            for s in self.app.sensors:
                s.power(True)

    async def sample(self, t):
        """One sample; returns (values, window_s, n, alarm) when a report is due, else None."""
        values = {}
        for s in self.app.sensors:
            await s.read(values, self.app)
        if self.sleeps_sensor():
            for s in self.app.sensors:
                s.power(False)
        if self.t_start is None:
            self.t_start = t
        per = self._per()
        self.win.fit(per)
        self.win.add(values)
        if self.win.samples < per:
            return None
        out = self.win.robust(self.app.cfg["thresholds"]["outlier_mads"])
        n = self.win.samples
        w = t - self.t_start
        self.t_start = t
        self.win.reset()
        return out, w, n, False

    def save(self):
        return [self.t_start, self.win.save()]

    def load(self, s):
        self.t_start = s[0]
        self.win.load(s[1])
