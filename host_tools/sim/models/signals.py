# Seeded, physically plausible signals for the simulated board. Pure Python that runs on
# CPython (the launcher serves the node's sensors from it) and MicroPython alike.
#
# Every value is a pure function of (seed, simulated UTC time t in seconds since 1970): a few
# sine/exp terms plus smooth "value noise" drawn from an integer hash, so a run is reproducible
# from its seed, any instant can be evaluated directly (no state, no tables) and a simulated
# burning-season day is one `start` date away. Local time is Asia/Bangkok (UTC+7, no DST).
#
# Model(sim_json_dict) gives, for one node:
#   weather(t)  -> {"temp" C, "rh" %, "pressure" hPa, "rain" mm/h}
#   pm(t, rh)   -> {"pm1", "pm25", "pm10" (PMS5003 atmospheric channel), "pm1_cf1", "pm25_cf1",
#                   "pm10_cf1", "true_pm25"} ug/m3
#   canal(t)    -> {"level" m above gauge zero, "distance_m" sensor face to water, "temp" C}
#   bay(t)      -> {"x", "y", "z" uT, "occupied" 0/1}
# and the module function battery(soc, current_ma) -> {"volts"}.
from math import cos, exp, floor, pi, sin

_TZ_S = 25200  # Asia/Bangkok is UTC+7 all year
_DAY = 86400.0
_TWO_PI = 2.0 * pi

# Monthly mean daily max / min air temperature, C, for central Thailand (Thai Meteorological
# Department Bangkok normals, rounded; hot season Mar-May, cool season Dec-Jan).
_TMAX = (32.0, 33.0, 35.0, 36.0, 35.0, 34.0, 33.0, 33.0, 32.0, 32.0, 32.0, 31.0)
_TMIN = (23.0, 24.0, 26.0, 27.0, 26.0, 26.0, 25.0, 25.0, 25.0, 24.0, 23.0, 22.0)
# Chance of a rain event on a given day: south-west monsoon May-Oct, dry Nov-Apr.
_P_RAIN = (0.05, 0.07, 0.12, 0.2, 0.5, 0.55, 0.55, 0.6, 0.7, 0.45, 0.15, 0.05)
# Background PM2.5 by month, ug/m3: dry-season build-up, burning season Jan-Apr, monsoon washout.
_PM_BASE = (35.0, 42.0, 48.0, 40.0, 18.0, 12.0, 10.0, 10.0, 12.0, 18.0, 26.0, 32.0)
# Chance that a 4-day block starts a haze episode (open burning, Jan-Apr, worst Feb-Mar).
_P_HAZE = (0.35, 0.6, 0.7, 0.4, 0, 0, 0, 0, 0, 0, 0, 0)

# -- calendar -----------------------------------------------------------------------------------


def local_day(t):
    return int((t + _TZ_S) // _DAY)


def local_hour(t):
    return ((t + _TZ_S) % _DAY) / 3600.0


def month0(t):
    """Local month 0..11 (civil-from-days, Howard Hinnant's algorithm)."""
    z = local_day(t) + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    return (mp + 2) % 12


def _monthly(table, t):
    # Smoothly between month centres (month length taken as 1/12 year).
    day = local_day(t)
    m = month0(t)
    z = day + 719468
    doe = z - (z // 146097) * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    dom = doy - (153 * mp + 2) // 5  # 0-based day of month
    f = (dom + ((t + _TZ_S) % _DAY) / _DAY) / 30.5 - 0.5
    if f >= 0:
        return table[m] + (table[(m + 1) % 12] - table[m]) * f
    return table[m] + (table[m] - table[(m - 1) % 12]) * f


# -- weather ------------------------------------------------------------------------------------


def _diurnal(h):
    # 0 at the 06:00 minimum, 1 at the 14:30 maximum, half-cosine rise and fall.
    if 6.0 <= h < 14.5:
        return 0.5 - 0.5 * cos(pi * (h - 6.0) / 8.5)
    x = (h - 14.5) % 24.0
    return 0.5 + 0.5 * cos(pi * x / 15.5)


# -- particulate matter -------------------------------------------------------------------------


def _bump(h, centre, width):
    d = (h - centre + 12.0) % 24.0 - 12.0
    return exp(-((d / width) ** 2))


def pm_daily(h):
    """Daily multiplier: rush-hour peaks, the night inversion, the deep afternoon mixed layer."""
    return (
        0.85
        + 0.45 * _bump(h, 8.0, 1.6)
        + 0.55 * _bump(h, 20.0, 2.5)
        + 0.2 * _bump(h, 2.0, 3.0)
        - 0.35 * _bump(h, 15.0, 2.5)
    )


def _atm(cf1):
    # PMS5003: the "atmospheric" channel equals CF=1 at low concentrations and falls to about
    # 2/3 of it at high ones (PurpleAir's documentation of the two Plantower channels).
    if cf1 <= 30.0:
        return cf1
    if cf1 >= 100.0:
        return cf1 * (2.0 / 3.0)
    return cf1 * (1.0 - (cf1 - 30.0) / 210.0)


# -- canal water level --------------------------------------------------------------------------

# Tidal constituents for a tidal canal: M2 12.42 h, S2 12.00 h (spring-neap beat ~14.8 days),
# K1 23.93 h (the Gulf of Thailand has a strong diurnal part).
_M2_S = 12.4206 * 3600.0
_S2_S = 12.0 * 3600.0
_K1_S = 23.9345 * 3600.0


def tide(t):
    return (
        0.22 * cos(_TWO_PI * t / _M2_S)
        + 0.08 * cos(_TWO_PI * t / _S2_S + 1.0)
        + 0.12 * cos(_TWO_PI * t / _K1_S + 2.0)
    )


def _surge(age_s, rise_m, rise_s, recede_s):
    if age_s < 0:
        return 0.0
    if age_s < rise_s:
        x = age_s / rise_s
        return rise_m * x * x * (3.0 - 2.0 * x)
    return rise_m * exp(-(age_s - rise_s) / recede_s)


# -- parking bay (magnetometer under the bay) --------------------------------------------------

_BAY_W = 900.0  # s: occupancy is decided per 15-minute window
# Chance that the bay is taken, by local hour (a school/town car park, busy 08-17).
_P_BAY = (
    0.08,
    0.06,
    0.05,
    0.05,
    0.05,
    0.08,
    0.2,
    0.55,
    0.8,
    0.85,
    0.85,
    0.8,
    0.75,
    0.8,
    0.85,
    0.8,
    0.7,
    0.55,
    0.45,
    0.35,
    0.25,
    0.18,
    0.12,
    0.1,
)
_RAMP_S = 8.0  # a car rolls over the sensor in a few seconds

# -- battery ------------------------------------------------------------------------------------

# Li-ion open-circuit voltage by state of charge (typical 18650 discharge curve at 0.2 C).
_OCV = (
    (0.0, 3.0),
    (0.05, 3.45),
    (0.1, 3.6),
    (0.2, 3.7),
    (0.4, 3.78),
    (0.6, 3.88),
    (0.8, 4.0),
    (0.95, 4.12),
    (1.0, 4.2),
)


def battery(soc, current_ma=0.0):
    if soc <= 0.0:
        v = 3.0
    elif soc >= 1.0:
        v = 4.2
    else:
        v = 4.2
        for i in range(1, len(_OCV)):
            s1, v1 = _OCV[i]
            if soc <= s1:
                s0, v0 = _OCV[i - 1]
                v = v0 + (v1 - v0) * (soc - s0) / (s1 - s0)
                break
    return {"volts": v - 0.00015 * current_ma}  # ~0.15 ohm internal resistance


# -- the model ----------------------------------------------------------------------------------


class Model:
    """One simulated site: every signal of one node, from its seed and scenario settings."""

    def __init__(self, cfg=None):
        cfg = cfg or {}
        self.seed = int(cfg.get("seed", 1)) & 0x7FFFFFFF
        water = cfg.get("water") or {}
        self.sensor_height_m = float(water.get("sensor_height_m", 4.0))  # face above gauge zero
        self.heading_deg = (cfg.get("parking") or {}).get("heading_deg")
        evs = []
        for e in cfg.get("events") or ():
            evs.append((e["type"], float(e["at"]), e))
        self.events = tuple(evs)  # (kind, start_t, params), e.g. ("flash_flood", t0, {...})

    def rand(self, k, salt=0):
        """Uniform [0, 1) from (seed, salt, integer k): a 32-bit integer hash (lowbias32)."""
        x = (int(k) * 0x9E3779B1 + (self.seed + salt * 0x632BE5AB) * 0x85EBCA77) & 0xFFFFFFFF
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        x ^= x >> 16
        return x / 4294967296.0

    def smooth(self, x, salt=0):
        """Value noise in [0, 1): smooth between integer knots of x."""
        i = floor(x)
        f = x - i
        f = f * f * (3.0 - 2.0 * f)
        a = self.rand(i, salt)
        return a + (self.rand(i + 1, salt) - a) * f

    def jitter(self, t, salt, amp):
        """Per-reading noise, +-amp, different every 0.1 s of simulated time."""
        return (self.rand(int(t * 10.0), salt) * 2.0 - 1.0) * amp

    def rain_event(self, day):
        """(start_t, duration_s, mm_per_h) of the rain on local day `day`, or None."""
        t_noon = day * _DAY - _TZ_S + 43200.0
        if self.rand(day, 11) >= _P_RAIN[month0(t_noon)]:
            return None
        start_h = 13.0 + 7.0 * self.rand(day, 12)  # convective showers: afternoon and evening
        dur_s = (0.5 + 2.5 * self.rand(day, 13)) * 3600.0
        r = self.rand(day, 14)
        return (day * _DAY - _TZ_S + start_h * 3600.0, dur_s, 3.0 + 60.0 * r * r)

    def rain(self, t):
        ev = self.rain_event(local_day(t))
        if ev is None or not ev[0] <= t < ev[0] + ev[1]:
            return 0.0
        x = (t - ev[0]) / ev[1]
        return ev[2] * 2.0 * sin(pi * x) ** 2  # peaks mid-shower; mean = mm_per_h

    def _after_rain(self, t, tau_s):
        # exp(-age/tau) of the most recent shower today or yesterday (0 if none): rain cooling,
        # moist air and washout all fade like this.
        d = local_day(t)
        for day in (d, d - 1):
            ev = self.rain_event(day)
            if ev is not None and t >= ev[0]:
                age = t - ev[0] - ev[1]
                return 1.0 if age < 0 else exp(-age / tau_s)
        return 0.0

    def temperature(self, t):
        day = local_day(t)
        spread = 1.5 * (self.smooth(t / _DAY, 1) - 0.5) * 2.0  # warmer and cooler days
        lo = _monthly(_TMIN, t) + spread * 0.6
        hi = _monthly(_TMAX, t) + spread
        cloud = 0.7 if self.rand(day, 2) < 0.25 else 1.0  # overcast days have a smaller range
        temp = lo + (hi - lo) * cloud * _diurnal(local_hour(t))
        return temp - 4.0 * self._after_rain(t, 7200.0)  # a shower cools the air by a few degrees

    def weather(self, t):
        temp = self.temperature(t)
        m = month0(t)
        # Dew point near the night minimum in the wet season, lower in the dry months.
        dry = 1.0 if _P_RAIN[m] >= 0.3 else 2.5
        td = _monthly(_TMIN, t) - dry - 1.5 * self.smooth(t / 43200.0, 3)
        if td > temp:
            td = temp
        # Magnus formula over water (Alduchov & Eskridge 1996 coefficients).
        rh = 100.0 * exp(17.625 * td / (243.04 + td) - 17.625 * temp / (243.04 + temp))
        wet = self._after_rain(t, 10800.0)
        rh = rh + (97.0 - rh) * wet
        rh += self.jitter(t, 4, 0.4)
        rh = 99.5 if rh > 99.5 else 20.0 if rh < 20.0 else rh
        # Station pressure near sea level: seasonal swing plus the semi-diurnal atmospheric tide
        # (maxima near 10:00 and 22:00 local time, ~1.2 hPa in the tropics).
        h = local_hour(t)
        p = 1009.5 + 3.5 * cos(_TWO_PI * (month0(t) + 0.5) / 12.0)
        p += 1.2 * cos(_TWO_PI * (h - 10.0) / 12.0) + 1.5 * (self.smooth(t / 172800.0, 5) - 0.5)
        return {
            "temp": temp + self.jitter(t, 6, 0.05),
            "rh": rh,
            "pressure": p + self.jitter(t, 7, 0.05),
            "rain": self.rain(t),
        }

    def haze(self, t):
        """Extra PM2.5 from a burning-season haze episode, ug/m3 (0 outside one)."""
        block = 4.0 * _DAY
        b = int(t // block)
        extra = 0.0
        for k in (b - 1, b):  # an episode may run on from the previous block
            t0 = k * block + self.rand(k, 21) * _DAY
            if self.rand(k, 20) >= _P_HAZE[month0(t0)]:
                continue
            length = (2.0 + 3.0 * self.rand(k, 22)) * _DAY  # 2-5 days
            x = (t - t0) / length
            if 0.0 <= x < 1.0:
                extra += (70.0 + 130.0 * self.rand(k, 23)) * sin(pi * x) ** 2
        return extra

    def true_pm25(self, t):
        base = _monthly(_PM_BASE, t) * pm_daily(local_hour(t))
        base *= exp(0.5 * (self.smooth(t / 10800.0, 8) - 0.5))  # hours-long swings
        base *= 1.0 - 0.55 * self._after_rain(t, 43200.0)  # rain washes particles out
        return base + self.haze(t) * (0.8 + 0.2 * pm_daily(local_hour(t)))

    def pm(self, t, rh):
        """What a PMS5003 reports, given the relative humidity it samples."""
        true = self.true_pm25(t)
        rh_c = 95.0 if rh > 95.0 else rh
        # Inverse of the US-wide correction (Barkjohn et al. 2021, calibration-reference section 1):
        # PM_ref = 0.524 cf1 - 0.0862 RH + 5.75, so the project's correction recovers the truth.
        cf25 = (true - 5.75 + 0.0862 * rh_c) / 0.524
        floor_v = true * 0.8
        if cf25 < floor_v:
            cf25 = floor_v
        cf25 *= 1.0 + self.jitter(t, 9, 0.06)  # counting noise between frames
        smoke = 1.0 if self.haze(t) > 20.0 else 0.0
        ratio10 = 1.2 + 0.4 * self.smooth(t / 21600.0, 10) * (1.0 - 0.6 * smoke)  # smoke is fine PM
        ratio1 = 0.68 + 0.12 * self.smooth(t / 21600.0, 11)
        cf1 = cf25 * ratio1
        cf10 = cf25 * ratio10
        return {
            "pm1_cf1": cf1,
            "pm25_cf1": cf25,
            "pm10_cf1": cf10,
            "pm1": _atm(cf1),
            "pm25": _atm(cf25),
            "pm10": _atm(cf10),
            "true_pm25": true,
        }

    def level(self, t):
        """Water level, m above the staff-gauge zero."""
        wet = _monthly((0.0, 0.0, 0.0, 0.05, 0.2, 0.35, 0.45, 0.55, 0.7, 0.6, 0.3, 0.1), t)
        lv = 0.9 + wet + tide(t) + 0.05 * (self.smooth(t / _DAY, 30) - 0.5)
        d = local_day(t)
        for day in (d, d - 1, d - 2):
            ev = self.rain_event(day)
            if ev is None or t < ev[0]:
                continue
            depth = ev[2] * ev[1] / 3600.0  # mm of rain
            if ev[2] >= 40.0:
                # A cloudburst: run-off fills the canal within ~30 min (flash flood).
                lv += _surge(t - ev[0], 0.02 * depth if depth < 75 else 1.5, 1800.0, 6.0 * 3600.0)
            else:
                lv += _surge(t - ev[0], 0.008 * depth, 3.0 * 3600.0, 12.0 * 3600.0)
        for kind, at, e in self.events:
            if kind == "flash_flood":
                lv += _surge(
                    t - at,
                    float(e.get("rise_m", 1.5)),
                    float(e.get("rise_s", 1200.0)),
                    float(e.get("recede_s", 6.0 * 3600.0)),
                )
        return lv

    def canal(self, t):
        lv = self.level(t)
        d = self.sensor_height_m - lv + self.jitter(t, 31, 0.004)  # ripples on the surface
        return {"level": lv, "distance_m": 0.02 if d < 0.02 else d, "temp": self.temperature(t)}

    def _taken(self, k):
        t = k * _BAY_W
        p = _P_BAY[int(local_hour(t))]
        if local_day(t) % 7 in (2, 3):  # Saturday, Sunday (1970-01-01 was a Thursday)
            p = p * 0.5 + 0.3
        return self.rand(k, 40) < p

    def _edge(self, k):
        # Arrivals and departures happen at a random moment inside the window, not on the grid.
        return k * _BAY_W + self.rand(k, 41) * 0.6 * _BAY_W

    def occupancy(self, t):
        """(occupied, session window, seconds since the last change)."""
        k = int(t // _BAY_W)
        if t < self._edge(k):
            k -= 1
        occ = self._taken(k)
        start = k
        for _ in range(96):
            if self._taken(start - 1) != occ:
                break
            start -= 1
        return occ, start, t - self._edge(start)

    def earth_field(self):
        # Thailand: total field ~41-43 uT, horizontal ~40 uT, inclination ~15-25 deg (NOAA WMM).
        hd = self.heading_deg if self.heading_deg is not None else 360.0 * self.rand(0, 50)
        a = hd * pi / 180.0
        off = 3.0  # hard-iron offset of the chip and mount, +-3 uT per axis
        return (
            40.0 * cos(a) + off * (2.0 * self.rand(1, 50) - 1.0),
            -40.0 * sin(a) + off * (2.0 * self.rand(2, 50) - 1.0),
            -13.0 + off * (2.0 * self.rand(3, 50) - 1.0),
        )

    def car_vector(self, session):
        # A parked car's steel distorts the field by 25-65 uT (0.25-0.65 G, calibration-reference
        # section 4), mostly vertically over a flush-mounted sensor.
        mag = 25.0 + 40.0 * self.rand(session, 51)
        az = _TWO_PI * self.rand(session, 52)
        tilt = 0.2 + 0.6 * self.rand(session, 53)  # fraction in the horizontal plane
        h = mag * tilt
        down = 1.0 if self.rand(session, 54) < 0.8 else -1.0
        return (h * cos(az), h * sin(az), down * mag * (1.0 - tilt * tilt) ** 0.5)

    def bay(self, t):
        occ, session, age = self.occupancy(t)
        ex, ey, ez = self.earth_field()
        temp = self.temperature(t)
        drift = 0.04 * (temp - 28.0)  # offset tempco, uT/C, plus a slow wander
        wander = 0.8 * (self.smooth(t / (3.0 * _DAY), 55) - 0.5)
        ramp = age / _RAMP_S if age < _RAMP_S else 1.0
        w = ramp if occ else 1.0 - ramp  # a departure ramps the previous car's vector out
        if occ:
            cx, cy, cz = self.car_vector(session)
        else:
            # the car that just left belonged to the session that ended at `session`
            prev = session - 1
            while prev > session - 96 and self._taken(prev - 1):
                prev -= 1
            cx, cy, cz = self.car_vector(prev)
        return {
            "x": ex + drift + wander + w * cx + self.jitter(t, 56, 0.15),
            "y": ey - drift + w * cy + self.jitter(t, 57, 0.15),
            "z": ez + 0.5 * drift + w * cz + self.jitter(t, 58, 0.15),
            "occupied": 1 if occ else 0,
        }
