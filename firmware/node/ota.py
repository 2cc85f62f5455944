# Over-the-air install into the inactive slot (docs/ota.md). Not resident: imported for an
# update, then dropped. Works in small pieces so it fits the 64 KB heap: the manifest is
# streamed to flash and read back a line at a time, each file is fetched in chunks and hashed
# as it is written, and nothing the size of a file or of the manifest is ever held in RAM.
#
# `src` is where the bundle comes from: any object with async read(name, offset, n) -> bytes
# (at most n; b"" at the end; node/otaget.py pulls them over MQTT), name being "manifest.txt",
# "manifest.sig" or a file's path.
# Each step can be cut by a power loss; the next install() of the same bundle resumes.
import hashlib
import json
import os
import sys

from micropython import const

import otaslot
from node import otasig

_KEYS = const("ota/keys.txt")
_MAN_TMP = const("ota/man.tmp")
_CHUNK = const(256)
_MAX_MANIFEST = const(16384)
_MAX_HEADER = const(600)
_MARGIN = const(16384)  # free flash left for the filesystem's own metadata and the outbox
_PATH_OK = const(b"abcdefghijklmnopqrstuvwxyz0123456789_-./")


class Refused(Exception):
    pass


def _hexdigest(h):
    return "".join("%02x" % b for b in h.digest())


def _ensure_dir(path):
    try:
        os.mkdir(path)
    except OSError:
        pass


def _rmtree(path):
    try:
        entries = list(os.ilistdir(path))
    except OSError:
        return
    for e in entries:
        p = path + "/" + e[0]
        if e[1] == 0x4000:
            _rmtree(p)
        else:
            os.remove(p)
    os.rmdir(path)


def _line(f):
    line = f.readline()
    if len(line) > _MAX_HEADER:
        raise Refused("manifest line too long")
    return line


async def _fetch(src, name, dst, limit):
    """Copy `name` from src to the file `dst` (truncated first) in chunks; returns its
    SHA-256 object and the first line (the header) of what was copied."""
    h = hashlib.sha256()
    first = b""
    n = 0
    with open(dst, "wb") as f:
        while True:
            chunk = await src.read(name, n, _CHUNK)
            if not chunk:
                break
            n += len(chunk)
            if n > limit:
                raise Refused("%s longer than %d bytes" % (name, limit))
            if len(first) < _MAX_HEADER and b"\n" not in first:
                first += chunk[:_MAX_HEADER]
            h.update(chunk)
            f.write(chunk)
    return h, first.split(b"\n", 1)[0]


def _key(kid):
    """The trusted public modulus with id `kid` (None if unknown or revoked)."""
    try:
        f = open(_KEYS)
    except OSError:
        raise Refused("no trusted keys on this node (%s)" % _KEYS)
    with f:
        head = json.loads(_line(f))
        if kid in head.get("revoked", ()):
            return None
        while True:
            line = f.readline()
            if not line:
                return None
            if line.startswith(kid + " "):
                return int(line[len(kid) + 1 :].strip(), 16)


def _signed(kid, sig, digest):
    n = _key(kid) if isinstance(kid, str) and kid else None
    if n is None:
        raise Refused("signed by an unknown or revoked key %r" % kid)
    if not otasig.verify(n, sig, digest):
        raise Refused("bad signature (key %s)" % kid)


async def _read_all(src, name, limit):
    out = b""
    while True:
        chunk = await src.read(name, len(out), _CHUNK)
        if not chunk:
            return out
        out += chunk
        if len(out) > limit:
            raise Refused("%s longer than %d bytes" % (name, limit))


async def update_keys(src):
    """Install a signed key list ("keys.txt" + "keys.sig" from src): its seq must be higher,
    its signer a key trusted now and kept by the new list."""
    sig = await _read_all(src, "keys.sig", 1024)
    h, first = await _fetch(src, "keys.txt", "ota/keys.tmp", 8192)
    head = json.loads(first)
    with open(_KEYS) as f:
        cur = json.loads(_line(f))
    if head.get("seq", 0) <= cur.get("seq", 0):
        raise Refused("key list seq %s is not above %s" % (head.get("seq"), cur.get("seq")))
    kid = head.get("key")
    if kid in head.get("revoked", ()):
        raise Refused("key list signed by a key it revokes")
    _signed(kid, sig, h.digest())
    keep = False
    with open("ota/keys.tmp") as f:
        _line(f)
        for line in f:
            keep = keep or line.startswith(kid + " ")
    if not keep:
        raise Refused("key list signed by a key it does not keep")
    os.rename("ota/keys.tmp", _KEYS)
    return head["seq"]


def _abi():
    m = sys.implementation._mpy
    return "%d.%d" % (m & 0xFF, (m >> 8) & 3)


def check(head, st, board, kind):
    """Every refusal that needs no file: version, ABI, MicroPython, board, kind."""
    ver = head.get("version")
    if not isinstance(ver, int):
        raise Refused("manifest has no version")
    if ver == st.get("ver", 0) or (ver < st.get("ver", 0) and not head.get("downgrade")):
        raise Refused("version %d is not newer than the installed %d" % (ver, st.get("ver", 0)))
    if ver in st.get("bad", ()):
        raise Refused("version %d was rolled back on this node" % ver)
    if head.get("abi") != _abi():
        raise Refused("mpy ABI %s, this MicroPython loads %s" % (head.get("abi"), _abi()))
    try:
        need = tuple(int(x) for x in head.get("min_mp", "0").split("."))
    except ValueError:
        raise Refused("bad min_mp %r" % head.get("min_mp"))
    if tuple(sys.implementation.version[:3]) < need:
        raise Refused("needs MicroPython %s" % head.get("min_mp"))
    if board not in head.get("boards", ()):
        raise Refused("not for board %r" % board)
    if kind not in head.get("kinds", ()):
        raise Refused("not for kind %r" % kind)


def _free():
    s = os.statvfs(".")
    return s[0] * s[4]


def _entry(line):
    parts = line.strip().split(" ", 2)
    if len(parts) != 3 or len(parts[1]) != 64:
        raise Refused("bad manifest line")
    path = parts[2]
    for c in path.encode():
        if c not in _PATH_OK:
            raise Refused("bad path %r" % path)
    if path.startswith("/") or ".." in path or path.startswith("ota/"):
        raise Refused("bad path %r" % path)
    return int(parts[0]), parts[1], path


def _same(a, b):
    try:
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while True:
                x, y = fa.read(_CHUNK), fb.read(_CHUNK)
                if x != y:
                    return False
                if not x:
                    return True
    except OSError:
        return False


async def _file(src, slot, size, digest, path):
    dst = "ota/%s/%s" % (slot, path)
    try:
        os.stat(dst)
        return 0  # done by an earlier attempt (renamed only once its hash matched)
    except OSError:
        pass
    d = "ota/" + slot
    for part in path.split("/")[:-1]:
        d += "/" + part
        _ensure_dir(d)
    part = dst + ".part"
    h = hashlib.sha256()
    n = 0
    try:
        with open(part, "rb") as f:  # resume: hash what an earlier attempt wrote
            while True:
                b = f.read(_CHUNK)
                if not b:
                    break
                h.update(b)
                n += len(b)
    except OSError:
        pass
    if n > size:
        os.remove(part)
        raise Refused("%s: partial file longer than its manifest entry" % path)
    with open(part, "ab") as f:
        while n < size:
            chunk = await src.read(path, n, min(_CHUNK, size - n))
            if not chunk:
                break
            h.update(chunk)
            f.write(chunk)
            f.flush()
            n += len(chunk)
        if n == size and await src.read(path, n, 1):
            n += 1
    if n != size or _hexdigest(h) != digest:
        os.remove(part)
        raise Refused(
            "%s: %s"
            % (
                path,
                "size %d, manifest says %d" % (n, size)
                if n != size
                else "SHA-256 does not match the manifest",
            )
        )
    os.rename(part, dst)
    return size


async def install(src, board, kind):
    """Check, fetch and switch to the bundle `src` offers. Returns its version; raises Refused
    with the reason (the active slot is untouched), or OSError when flash fails."""
    try:
        return await _install(src, board, kind)
    except OSError as e:
        if e.errno == 28:  # ENOSPC: what is written so far is resumed or cleared next time
            raise Refused("flash full while installing (needs free space for the bundle)")
        raise


async def _install(src, board, kind):
    _ensure_dir("ota")
    st = otaslot.load()
    if st.get("probation"):
        raise Refused("version %d is still on probation" % st["ver"])
    sig = await _read_all(src, "manifest.sig", 1024)
    h, first = await _fetch(src, "manifest.txt", _MAN_TMP, _MAX_MANIFEST)
    try:
        head = json.loads(first)
    except ValueError:
        raise Refused("manifest header is not JSON")
    _signed(head.get("key"), sig, h.digest())  # before anything else is fetched
    check(head, st, board, kind)
    slot = "b" if st.get("slot") == "a" else "a"
    man = "ota/%s/manifest.txt" % slot
    if not _same(man, _MAN_TMP):  # else: resume the install an earlier attempt began
        try:
            os.remove(man)  # first: a half-cleaned slot is never taken for a resumable one
        except OSError:
            pass
        _rmtree("ota/" + slot)
        need = head.get("total", 0) + _MARGIN
        if _free() < need:
            raise Refused("needs %d bytes of flash, %d free" % (need, _free()))
        _ensure_dir("ota/" + slot)
        os.rename(_MAN_TMP, man)
    count = total = 0
    with open(man) as f:
        _line(f)
        while True:
            line = f.readline()
            if not line:
                break
            size, digest, path = _entry(line)
            await _file(src, slot, size, digest, path)
            count += 1
            total += size
    if count != head.get("files") or total != head.get("total"):
        raise Refused(
            "manifest lists %d files, %d bytes; header says %s, %s"
            % (count, total, head.get("files"), head.get("total"))
        )
    otaslot.save(
        {
            "slot": slot,
            "ver": head["version"],
            "prev": st.get("slot", ""),
            "pver": st.get("ver", 0),
            "probation": True,
            "boots": 0,
            "bad": st.get("bad", []),
            "last": {"state": "installed", "ver": head["version"]},
        }
    )
    return head["version"]


def healthy():
    """The running slot sampled, connected and got a custody ack: end its probation."""
    from node.otaok import healthy

    return healthy()
