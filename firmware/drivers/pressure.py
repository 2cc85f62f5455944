# Ratiometric pressure transducer (0.5-4.5 V for 0..P_max on a 5 V supply, the common
# industrial/"water pressure sensor" output) read through an ADC behind a resistor divider.
# The driver takes a configured ADC object (read_uv(), as the ESP32 port provides).
V_LOW_FRAC = 0.1  # 0.5 V of 5 V at zero pressure
V_SPAN_FRAC = 0.8  # 4.0 V of 5 V across the span
G = 9.80665  # standard gravity, m/s2 (calibration-reference section 3)
RHO_WATER = 997.0  # kg/m3 at 25 C (calibration-reference section 3)

REASONS = ("open", "over", "bus")

# Declaration (docs/drivers.md "Declaration"), read on CPython by boards/drivers.py (`ast`):
# BOARD "names Class bus temp argument..." (names /-separated; bus uart, i2c or -; temp: temp
# = it gives the temperature, read first, temp_c = read(temp_c) is compensated with it, or
# -; each argument key:code[:default][:keyword]) and VALUES, the values a read returns.
# MicroPython compiles `if False:` to nothing: no heap (the node is at its 64 KB limit; one
# 34-character string here breaks its simulated day). tests/firmware/test_driver_parity.py
# checks the node's bring-up (node/board.py), the board schema, the kinds and the fakes
# against it.
if False:
    BOARD = "pressure PressureTransducer - - adc_pin:A p_max_kpa:f:100 divider:f:1 mount_m:-f"
    VALUES = (("pressure", "kPa"),)


def volts_to_kpa(v_out, v_supply, p_max_kpa, p_min_kpa=0.0):
    """Pure: ratiometric output volts -> kPa; v_out = v_supply * (0.1 + 0.8 * P / span)."""
    frac = (v_out / v_supply - V_LOW_FRAC) / V_SPAN_FRAC
    return p_min_kpa + frac * (p_max_kpa - p_min_kpa)


def head_m(p_abs_kpa, p_baro_kpa, rho=RHO_WATER):
    # h = (P_abs - P_baro) / (rho g) with station pressure (calibration-reference section 3).
    return (p_abs_kpa - p_baro_kpa) * 1000.0 / (rho * G)


class PressureTransducer:
    """read() -> kPa (averaged over `samples` ADC reads) or None. divider = V_sensor/V_pin.
    Outputs far outside 0.5-4.5 V mean a broken wire ("open": below fault_low_v) or a shorted
    or over-range sensor ("over": above fault_high_v); they are counted, never returned."""

    def __init__(
        self,
        adc,
        p_max_kpa,
        divider=1.0,
        v_supply=5.0,
        p_min_kpa=0.0,
        samples=4,
        fault_low_v=0.3,
        fault_high_v=4.7,
    ):
        self.adc = adc
        self.p_max_kpa = p_max_kpa
        self.p_min_kpa = p_min_kpa
        self.divider = divider
        self.v_supply = v_supply
        self.samples = samples
        self.fault_low_v = fault_low_v
        self.fault_high_v = fault_high_v
        self.volts = 0.0  # sensor-side volts of the last read, for diagnostics
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
        self.volts = v
        if v < self.fault_low_v:
            return self._count("open")
        if v > self.fault_high_v:
            return self._count("over")
        self.last_error = None
        return volts_to_kpa(v, self.v_supply, self.p_max_kpa, self.p_min_kpa)
