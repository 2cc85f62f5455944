# The node's wire to the simulated hardware. Sensors, their signals and byte-level fakes run in
# the launcher (host_tools/sim/simnode.py, CPython) so they cost the node's 64 KB heap nothing;
# this module sends one text line per bus transaction over loopback TCP and reads one line back:
#   "ok <payload>" or "err <errno>". The server's address is "hw" in /sim.json.
import socket

_sock = None
_absent = False


def _connect():
    global _sock, _absent
    import json

    try:
        with open("sim.json") as f:
            addr = json.load(f).get("hw")
    except (OSError, ValueError):
        addr = None
    if not addr:
        _absent = True
        print("sim: no simulated hardware in sim.json: buses have nothing attached")
        return
    host, port = addr.rsplit(":", 1)
    s = socket.socket()
    s.connect(socket.getaddrinfo(host, int(port))[0][-1])
    _sock = s


def call(line):
    """Send one request; return the payload string, or None when no hardware is attached.
    An 'err N' answer raises OSError(N), as the bus would on the chip."""
    if _sock is None:
        if _absent:
            return None
        _connect()
        if _sock is None:
            return None
    _sock.write(line + "\n")
    r = _sock.readline()
    if not r:
        raise OSError(5)  # EIO: the simulated hardware went away
    r = r.decode().rstrip("\n")
    if r.startswith("err"):
        raise OSError(int(r[4:]))
    return r[3:]
