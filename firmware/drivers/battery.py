# Battery voltage through an ADC and a resistor divider (ratio from the board file).
# The driver takes a configured ADC object (read_uv(), as the ESP32 port provides).
V_EMPTY = 3.0  # single Li-ion cell: typical discharge cut-off
V_FULL = 4.2  # single Li-ion cell: charge termination voltage

REASONS = ("absent", "over", "bus")

# Declaration (docs/drivers.md "Declaration"), read on CPython by boards/drivers.py (`ast`):
# BOARD "names Class bus temp argument..." (names /-separated; bus uart, i2c or -; temp: temp
# = it gives the temperature, read first, temp_c = read(temp_c) is compensated with it, or
# -; each argument key:code[:default][:keyword]) and VALUES, the values a read returns.
# MicroPython compiles `if False:` to nothing: no heap (the node is at its 64 KB limit; one
# 34-character string here breaks its simulated day). tests/firmware/test_driver_parity.py
# checks the node's bring-up (node/board.py), the board schema, the kinds and the fakes
# against it.
if False:
    BOARD = "battery Battery - - adc_pin:A divider:f:2"
    VALUES = (("volts", "V"), ("percent", "%"))


def percent(volts, v_empty=V_EMPTY, v_full=V_FULL):
    """Pure: state of charge in % by a LINEAR approximation between v_empty and v_full.
    A real Li-ion curve is flat around 3.6-3.9 V, so mid-range figures are rough; treat the
    voltage as the measurement and the percentage as a hint."""
    p = (volts - v_empty) * 100.0 / (v_full - v_empty)
    if p < 0.0:
        return 0.0
    if p > 100.0:
        return 100.0
    return p


class Battery:
    """read() -> (volts, percent) or None; averages `samples` ADC reads.
    divider = V_battery / V_pin. Below absent_v (no battery, broken wire) or above over_v
    (wrong divider) the reading is counted in self.errors, not returned."""

    def __init__(
        self, adc, divider=2.0, samples=8, absent_v=2.5, over_v=4.5, v_empty=V_EMPTY, v_full=V_FULL
    ):
        self.adc = adc
        self.divider = divider
        self.samples = samples
        self.absent_v = absent_v
        self.over_v = over_v
        self.v_empty = v_empty
        self.v_full = v_full
        self.errors = {}
        for r in REASONS:
            self.errors[r] = 0
        self.last_error = None

    def _count(self, reason):
        self.errors[reason] += 1
        self.last_error = reason

    def read_volts(self):
        total = 0
        for _ in range(self.samples):
            total += self.adc.read_uv()
        return total / self.samples * 1e-6 * self.divider

    def read(self):
        try:
            v = self.read_volts()
        except OSError:
            return self._count("bus")
        if v < self.absent_v:
            return self._count("absent")
        if v > self.over_v:
            return self._count("over")
        self.last_error = None
        return v, percent(v, self.v_empty, self.v_full)
