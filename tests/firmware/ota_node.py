# MicroPython side of tests/firmware/test_ota.py: a node's flash as a littlefs image (the ESP32
# default filesystem) on a block device backed by a host file, and the OTA code run on it.
#
#   micropython -X heapsize=64k ota_node.py IMAGE CUT OP [ARG] [OP [ARG]] ...
#
# IMAGE is a littlefs image file, or dir:PATH for a simulated node's flash directory.
#
# CUT > 0: power cut at the CUT-th block write or erase: the process is killed (SIGKILL)
# before that write reaches the image, as power loss would. Prints one JSON line per OP and a
# last line {"writes": n}. OPs: mkfs BLOCKS, factory KEYS_FILE (probe.py at version 0 and the
# node's first key list), install BUNDLE_DIR, keys DIR, boot, healthy, fill BYTES, peak.
import asyncio
import gc
import json
import os
import sys

import vfs

_BS = 4096


class Flash:
    def __init__(self, path, cut):
        self.f = open(path, "r+b")
        self.f.seek(0, 2)
        self.blocks = self.f.tell() // _BS
        self.cut = cut
        self.writes = 0
        self.ff = b"\xff" * 256

    def _count(self):
        self.writes += 1
        if self.cut and self.writes >= self.cut:
            os.system("kill -9 $PPID")  # the shell's parent is this process: power off
            while True:
                pass

    def readblocks(self, block, buf, off=0):
        self.f.seek(block * _BS + off)
        self.f.readinto(buf)

    def writeblocks(self, block, buf, off=0):
        self._count()
        self.f.seek(block * _BS + off)
        self.f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return _BS
        if op == 6:
            self._count()
            self.f.seek(arg * _BS)
            for _ in range(_BS // 256):
                self.f.write(self.ff)
            return 0
        return 0


class Dir:
    """A bundle directory on the host as the node's source (the gateway, later over MQTT)."""

    def __init__(self, root, peak=None):
        self.root = root
        self.peak = peak

    async def read(self, name, off, n):
        if self.peak is not None:
            gc.collect()
            self.peak[0] = min(self.peak[0], gc.mem_free())
        sub = name if name.startswith(("manifest.", "keys.")) else "files/" + name
        try:
            with open(self.root + "/" + sub, "rb") as f:
                f.seek(off)
                return f.read(n)
        except OSError:
            return b""


def _intact(st):
    """Every file of the active slot matches its manifest line."""
    import hashlib

    slot = st.get("slot")
    if not slot:
        return True
    with open("ota/%s/manifest.txt" % slot) as man:
        man.readline()
        for line in man:
            size, digest, path = line.strip().split(" ", 2)
            h = hashlib.sha256()
            n = 0
            with open("ota/%s/%s" % (slot, path), "rb") as f:
                while True:
                    b = f.read(256)
                    if not b:
                        break
                    h.update(b)
                    n += len(b)
            if n != int(size) or "".join("%02x" % x for x in h.digest()) != digest:
                return False
    return True


def _open(image, cut, ops):
    """Mount the image (formatting it first for mkfs) at /flash and go there, or go to the
    simulated node's flash directory; returns the block device (None for a directory) and the
    OPs left."""
    if image.startswith("dir:"):  # a simulated node's flash directory (host_tools/sim/simnode.py)
        os.chdir(image[4:])
        return None, ops
    if ops[0] == "mkfs":
        with open(image, "wb") as f:
            for _ in range(int(ops[1]) * _BS // 256):
                f.write(b"\xff" * 256)
        ops = ops[2:]
        dev = Flash(image, cut)
        vfs.VfsLfs2.mkfs(dev)
    else:
        dev = Flash(image, cut)
    vfs.mount(vfs.VfsLfs2(dev), "/flash")
    os.chdir("/flash")
    sys.path.append("/flash")  # the factory install at the flash root, as '' on an ESP32
    return dev, ops


def _ota_op(op, arg, peak, out):
    """install BUNDLE_DIR or keys DIR, what the OTA code says in ``out``."""
    from node import ota

    try:
        if op == "install":
            out["ver"] = asyncio.run(ota.install(Dir(arg, peak), "sim", "air"))
        else:
            out["seq"] = asyncio.run(ota.update_keys(Dir(arg)))
    except ota.Refused as e:
        out["refused"] = str(e)
    except OSError as e:
        out["oserror"] = str(e)


def _slot_op(op, out):
    """boot (and import the probe it runs), or verify the slot the next boot runs."""
    import otaslot

    if op == "boot":
        st = otaslot.boot()
        import probe

        out.update(state=st, probe=probe.V, intact=_intact(st))
    else:  # the slot the next boot runs, checked without booting it
        st = otaslot.load()
        with open(("ota/%s/probe.py" % st["slot"]) if st.get("slot") else "probe.py") as f:
            out.update(ver=st["ver"], intact=_intact(st), probe_text=f.read())


def _op(op, arg, peak, out):
    """Run one OP; returns how many arguments it took."""
    if op == "factory":
        with open("probe.py", "w") as f:
            f.write("V = 0\n")
        os.mkdir("ota")
        with open(arg) as src, open("ota/keys.txt", "w") as dst:
            dst.write(src.read())
        return 1
    if op in ("install", "keys"):
        _ota_op(op, arg, peak, out)
        return 1
    if op in ("boot", "verify"):
        _slot_op(op, out)
    elif op == "healthy":
        from node import ota

        out["state"] = ota.healthy()
    elif op == "fill":
        with open("filler.bin", "wb") as f:
            left = int(arg)
            while left > 0:
                f.write(bytes(min(1024, left)))
                left -= 1024
        s = os.statvfs(".")
        out["free"] = s[0] * s[4]
        return 1
    elif op == "peak":
        out["heap"] = gc.mem_free() + gc.mem_alloc()
        out["min_free"] = peak[0]
    return 0


def main():
    image, cut = sys.argv[1], int(sys.argv[2])
    dev, ops = _open(image, cut, sys.argv[3:])
    peak = [gc.mem_free()]
    i = 0
    while i < len(ops):
        op = ops[i]
        arg = ops[i + 1] if i + 1 < len(ops) else None
        out = {"op": op}
        i += _op(op, arg, peak, out)
        print(json.dumps(out))
        i += 1
    print(json.dumps({"writes": dev.writes if dev else 0}))


main()
