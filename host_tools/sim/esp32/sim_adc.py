# machine.ADC of the simulated board: it reads the volts the launcher's model puts on the pin
# (battery divider, pressure transducer); nothing wired reads 0 V.
import sim_link as _link


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_9BIT = 9
    WIDTH_10BIT = 10
    WIDTH_11BIT = 11
    WIDTH_12BIT = 12
    # Full-scale input per attenuation (MicroPython ESP32 quick reference: 1.00/1.34/2.00/3.55 V).
    _FULL_UV = (1000000, 1340000, 2000000, 3550000)

    def __init__(self, pin, *, atten=0):
        self.pin = pin if isinstance(pin, int) else pin.id
        if not 32 <= self.pin <= 39 and self.pin not in (0, 2, 4, 12, 13, 14, 15, 25, 26, 27):
            raise ValueError("invalid Pin for ADC")
        self._atten = atten
        self._width = 12

    def atten(self, atten):
        self._atten = atten

    def width(self, bits):
        self._width = bits

    def init(self, *, atten=None):
        if atten is not None:
            self._atten = atten

    def read_uv(self):
        r = _link.call("a %d" % self.pin)
        uv = int(r) if r and r != "-" else 0
        full = ADC._FULL_UV[self._atten]
        return 0 if uv < 0 else full if uv > full else uv

    def read_u16(self):
        return self.read_uv() * 65535 // ADC._FULL_UV[self._atten]

    def read(self):
        return self.read_uv() * ((1 << self._width) - 1) // ADC._FULL_UV[self._atten]
