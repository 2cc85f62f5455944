# Trigger/echo ultrasonic ranging (JSN-SR04T mode 1, HC-SR04, MaxBotix HRXL): the echo pulse
# lasts the round trip; d = c * t / 2 with c = 331.3 + 0.606 * T m/s (calibration-reference
# section 3). Apart from drivers/ultrasonic.py (the UART sensors), and not importing it: each
# module's names are interned for good when it loads, so a UART node does not pay for these
# and a pulse node not for the UART's (docs/firmware.md "Heap"). The limit checks and the
# speed of sound are therefore the same as there (tests/firmware/test_drivers_ranging.py).
try:
    from micropython import const
except ImportError:

    def const(x):
        return x


_TRIG_US = const(20)  # JSN-SR04T wants a >10 us trigger; 20 us also suits its v3 board
_BLIND_M = const(0.25)  # JSN-SR04T blind zone ~20-25 cm (calibration-reference section 3)
_MAX_M = const(4.5)  # JSN-SR04T range ~4.5-6 m (calibration-reference section 3)
_C_REF = const(343.42)  # c at 20 C from the formula below; used when no temperature is given
_HRXL_US_PER_M = const(1000.0)  # MaxBotix HRXL-MaxSonar pulse width: 1 us per mm, compensated


REASONS = ("timeout", "blind", "range", "too_few", "bus")

# Declaration (docs/drivers.md "Declaration"), read on CPython by boards/drivers.py (`ast`):
# BOARD "names Class bus temp argument..." (names /-separated; bus uart, i2c or -; temp: temp
# = it gives the temperature, read first, temp_c = read(temp_c) is compensated with it, or
# -; each argument key:code[:default][:keyword]) and VALUES, the values a read returns.
# MicroPython compiles `if False:` to nothing: no heap (the node is at its 64 KB limit; one
# 34-character string here breaks its simulated day). tests/firmware/test_driver_parity.py
# checks the node's bring-up (node/board.py), the board schema, the kinds and the fakes
# against it.
if False:
    BOARD = (
        "hc-sr04/jsn-sr04t-pulse UltrasonicPulse - temp_c trigger_pin:O echo_pin:N :T :S pings:i:5"
        " blind_m:f:0.25 max_m:f:4.5 compensated:b:0:compensates"
    )
    VALUES = (("distance", "m"),)


def speed_of_sound(temp_c):
    # c = 331.3 + 0.606 * T m/s (calibration-reference section 3).
    return 331.3 + 0.606 * temp_c


def echo_to_m(echo_us, temp_c):
    # d = c * t_echo / 2 (calibration-reference section 3).
    c = _C_REF if temp_c is None else speed_of_sound(temp_c)
    return c * echo_us * 0.5e-6


def median(values, n):
    """Median of values[0:n]; sorts that slice in place (insertion sort: no allocation)."""
    for i in range(1, n):
        v = values[i]
        j = i - 1
        while j >= 0 and values[j] > v:
            values[j + 1] = values[j]
            j -= 1
        values[j + 1] = v
    h = n >> 1
    if n & 1:
        return values[h]
    return (values[h - 1] + values[h]) / 2


class UltrasonicPulse:
    """Trigger/echo ranging. pulse_us(pin, level, timeout_us) is machine.time_pulse_us on a
    board (negative on timeout); sleep_us is time.sleep_us. read(temp_c) -> metres (median of
    `pings` echoes) or None. compensates=True is for sensors whose pulse width is already
    temperature-compensated distance (MaxBotix HRXL: us_per_m=1000): temp_c is then ignored,
    so the reading is never compensated twice."""

    def __init__(
        self,
        trigger,
        echo,
        pulse_us,
        sleep_us,
        pings=5,
        min_m=_BLIND_M,
        max_m=_MAX_M,
        timeout_us=30000,
        gap_us=60000,
        compensates=False,
        us_per_m=_HRXL_US_PER_M,
    ):
        if pings < 1 or not pings & 1:
            raise ValueError("pings must be odd")
        self.trigger = trigger
        self.echo = echo
        self._pulse = pulse_us
        self._sleep_us = sleep_us
        self.pings = pings
        self.timeout_us = timeout_us
        self.gap_us = gap_us  # >= 60 ms between pings so old echoes die out (HC-SR04 sheet)
        self.compensates = compensates
        self.us_per_m = us_per_m
        self._echo = [0] * pings
        self.min_m = min_m
        self.max_m = max_m
        self.errors = {}
        for r in REASONS:
            self.errors[r] = 0
        self.last_error = None
        trigger.value(0)

    def _count(self, reason):
        self.errors[reason] += 1
        self.last_error = reason

    def _check(self, d):
        # Returns d, or None after counting why the reading was rejected.
        if d < self.min_m:
            return self._count("blind")
        if d > self.max_m:
            return self._count("range")
        return d

    def ping_us(self):
        """One trigger pulse and the echo width in us (negative on timeout)."""
        t = self.trigger
        t.value(0)
        self._sleep_us(2)
        t.value(1)
        self._sleep_us(_TRIG_US)
        t.value(0)
        return self._pulse(self.echo, 1, self.timeout_us)

    def distance_m(self, echo_us, temp_c):
        if self.compensates:
            return echo_us / self.us_per_m
        return echo_to_m(echo_us, temp_c)

    def read(self, temp_c=None):
        n = 0
        for i in range(self.pings):
            if i:
                self._sleep_us(self.gap_us)
            try:
                e = self.ping_us()
            except OSError:
                self._count("bus")
                continue
            if e <= 0:
                self._count("timeout")
                continue
            d = self._check(self.distance_m(e, temp_c))
            if d is not None:
                self._echo[n] = e
                n += 1
        if n <= self.pings >> 1:
            # Fewer than a majority of good pings: no reading rather than a guess.
            return self._count("too_few")
        self.last_error = None
        return self.distance_m(median(self._echo, n), temp_c)
