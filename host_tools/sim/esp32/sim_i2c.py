# machine.I2C / SoftI2C of the simulated board: transactions go to the fake devices on that
# bus (sim_link); an absent address raises OSError(19) (ENODEV) as on an ESP32.
from binascii import hexlify, unhexlify

import sim_link as _link


def _pin_id(p):
    return -1 if p is None else p if isinstance(p, int) else p.id


class I2C:
    def __init__(self, id=0, *, scl=None, sda=None, freq=400000, timeout=50000):
        self.id = id
        self.scl = _pin_id(scl)
        self.sda = _pin_id(sda)
        self.freq = freq
        r = _link.call("I %d %d %d" % (id, self.scl, self.sda))
        self._h = r if r and r != "-" else None

    def init(self, *, scl=None, sda=None, freq=None, timeout=None):
        if freq is not None:
            self.freq = freq

    def deinit(self):
        pass

    def _call(self, addr, op):
        if self._h is None:
            raise OSError(19)
        return _link.call("i %s %d %s" % (self._h, addr, op))

    def scan(self):
        if self._h is None:
            return []
        r = _link.call("i %s -1 s" % self._h)
        return [int(a) for a in r.split(",")] if r else []

    def writeto(self, addr, buf, stop=True):
        self._call(addr, "w " + hexlify(buf).decode())
        return len(buf)

    def writevto(self, addr, vector, stop=True):
        data = b"".join(bytes(b) for b in vector)
        self._call(addr, "w " + hexlify(data).decode())
        return len(data)

    def readfrom(self, addr, nbytes, stop=True):
        return unhexlify(self._call(addr, "r %d" % nbytes))

    def readfrom_into(self, addr, buf, stop=True):
        data = self.readfrom(addr, len(buf))
        buf[: len(data)] = data

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        reg = memaddr.to_bytes(addrsize // 8, "big")
        self._call(addr, "w " + hexlify(reg + bytes(buf)).decode())

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        reg = memaddr.to_bytes(addrsize // 8, "big")
        return unhexlify(self._call(addr, "m %s %d" % (hexlify(reg).decode(), nbytes)))

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        data = self.readfrom_mem(addr, memaddr, len(buf), addrsize=addrsize)
        buf[: len(data)] = data

    def __repr__(self):
        return "I2C(%d, scl=%d, sda=%d, freq=%d)" % (self.id, self.scl, self.sda, self.freq)


class SoftI2C(I2C):
    def __init__(self, scl, sda, *, freq=400000, timeout=50000):
        super().__init__(-1, scl=scl, sda=sda, freq=freq, timeout=timeout)
