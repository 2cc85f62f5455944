# Flash outbox: a fixed-size ring of fixed-size slots holding readings until the gateway takes
# custody of them.
#
# File data/outbox.bin = `cap` slots of _SLOT bytes. A slot is a 16-byte header
#   magic u8 | flags u8 | len u16 | boot u32 | seq u32 | crc32 u32   (little endian)
# then `len` payload bytes; crc32 covers header bytes 2..11 and the payload, so a torn write
# (power cut in the middle of a slot) is detected and the slot skipped.
# Records are written in (boot, seq) order around the ring, so the ring itself is the journal:
# on open, the slot with the highest key is the head, and every valid record after the custody
# watermark (the last key the gateway confirmed) is still pending. The watermark, the drop count
# and the capacity live in data/outbox.json, written (temp + rename) at most every persist_ms:
# a stale watermark after a power cut only makes the node resend readings the gateway already
# holds, which it de-duplicates on (device_id, boot, seq). Slot writes are batched: add() stages
# records in RAM, flush() writes the staged batch with one seek/write per slot and one sync.
import json
import os
import struct
import sys
from binascii import crc32

from micropython import const

_SLOT = const(512)
_HDR = const(16)
_MAGIC = const(0xCE)
_MAX_PAYLOAD = const(496)  # _SLOT - _HDR


def _size(payload):
    if isinstance(payload, list):
        n = 0
        for p in payload:
            n += len(p)
        return n
    return len(payload)


class Outbox:
    def __init__(
        self, directory="data", cap=512, persist_ms=60000, ticks_ms=None, ticks_diff=None, hint=None
    ):
        self.path = directory + "/outbox.bin"
        self.meta_path = directory + "/outbox.json"
        self.persist_ms = persist_ms
        self._ticks_ms = ticks_ms
        self._ticks_diff = ticks_diff
        self.buf = bytearray(_SLOT)  # the record handed to the publisher (next_unsent)
        self._mv = memoryview(self.buf)
        self._hb = bytearray(_HDR)  # headers written/checked while that record is in flight
        self._staged = []
        self.cap = cap
        self.head = 0  # slot written next
        self.tail = 0  # oldest pending slot
        self.depth = 0  # pending records (tail .. head)
        self.sent = 0  # pending records from tail already published since the last rewind()
        self.dropped = 0  # pending records overwritten because the ring was full
        self.corrupt = 0  # slots skipped because length/CRC did not check
        self.wm_boot = -1  # custody watermark: last (boot, seq) the gateway confirmed
        self.wm_seq = -1
        self.last_boot = -1  # highest key on flash (so a lost state file cannot reuse a boot)
        self._dirty = False
        self._persisted_ms = None
        self._want_cap = None
        from node import ringscan  # start-up only: unloaded right after

        ringscan.load_meta(self)
        try:
            self._f = open(self.path, "r+b")
        except OSError:
            self._f = open(self.path, "w+b")
        if hint is not None and hint[0] == self.cap:
            # Deep-sleep wake: pointers kept in RTC memory, no need to scan the ring.
            (
                _,
                self.head,
                self.tail,
                self.depth,
                self.last_boot,
                self.wm_boot,
                self.wm_seq,
                self.dropped,
                self.corrupt,
            ) = hint
        else:
            ringscan.recover(self)
        del ringscan
        sys.modules.pop("node.ringscan", None)
        try:
            import node

            del node.ringscan
        except (ImportError, AttributeError):
            pass

    def hint(self):
        """Pointers to keep in RTC memory across deep sleep (see __init__ hint)."""
        return [
            self.cap,
            self.head,
            self.tail,
            self.depth,
            self.last_boot,
            self.wm_boot,
            self.wm_seq,
            self.dropped,
            self.corrupt,
        ]

    # --- persistence of the small state ---

    def persist(self):
        text = json.dumps(
            {
                "cap": self.cap,
                "boot": self.wm_boot,
                "seq": self.wm_seq,
                "dropped": self.dropped,
                "corrupt": self.corrupt,
            }
        )
        tmp = self.meta_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        try:
            os.rename(tmp, self.meta_path)
        except OSError:
            os.remove(self.meta_path)
            os.rename(tmp, self.meta_path)
        self._dirty = False
        if self._ticks_ms is not None:
            self._persisted_ms = self._ticks_ms()

    def maybe_persist(self):
        """Write the watermark if it changed and persist_ms passed since the last write."""
        if not self._dirty:
            return False
        if (
            self._persisted_ms is not None
            and self._ticks_ms is not None
            and self._ticks_diff(self._ticks_ms(), self._persisted_ms) < self.persist_ms
        ):
            return False
        self.persist()
        return True

    # --- slots ---

    def _read_slot(self, i):
        """Read slot i into buf. Returns (boot, seq, length) or None if it does not check."""
        f = self._f
        f.seek(i * _SLOT)
        n = f.readinto(self._mv[:_HDR])
        if n != _HDR:
            return None
        magic, _, ln, boot, seq, crc = struct.unpack_from("<BBHIII", self.buf, 0)
        if magic != _MAGIC or ln > _MAX_PAYLOAD:
            return None
        if ln and f.readinto(self._mv[_HDR : _HDR + ln]) != ln:
            return None
        c = crc32(self._mv[2:12])
        if crc32(self._mv[_HDR : _HDR + ln], c) != crc:
            return None
        return boot, seq, ln

    # --- producer side ---

    def add(self, boot, seq, payload):
        """Stage one record of at most _MAX_PAYLOAD bytes for the next flush. payload: bytes,
        an ASCII-only str (written as is: its length is its byte count), or a list of such
        pieces, written one after the other (no large string to allocate)."""
        if _size(payload) > _MAX_PAYLOAD:
            raise ValueError("record too long for an outbox slot")
        if len(self._staged) >= 8:
            # Flash writes keep failing: do not let RAM fill up; drop and count the oldest.
            self._staged.pop(0)
            self.dropped += 1
        self._staged.append((boot, seq, payload))

    @property
    def staged(self):
        return len(self._staged)

    def flush(self):
        f = self._f
        hb = self._hb
        n = 0
        st = self._staged
        while st:
            boot, seq, payload = st[0]
            if self.depth == self.cap:
                # Full: the oldest pending reading is overwritten, and counted.
                self.tail = (self.tail + 1) % self.cap
                self.depth -= 1
                if self.sent:
                    self.sent -= 1
                self.dropped += 1
                self._dirty = True
            parts = payload if isinstance(payload, list) else (payload,)
            struct.pack_into("<BBHIII", hb, 0, _MAGIC, 0, _size(payload), boot, seq, 0)
            c = crc32(memoryview(hb)[2:12])
            for p in parts:
                c = crc32(p, c)
            struct.pack_into("<I", hb, 12, c)
            f.seek(self.head * _SLOT)
            f.write(hb)
            for p in parts:
                f.write(p)
            self.head = (self.head + 1) % self.cap
            self.depth += 1
            st.pop(0)
            n += 1
        f.flush()
        try:
            os.sync()
        except (AttributeError, OSError):
            pass
        return n

    # --- consumer side ---

    def next_unsent(self, n):
        """The next pending record not yet sent, if fewer than `n` are in flight:
        (boot, seq, memoryview payload) valid until the next outbox call, or None."""
        while self.sent < self.depth and self.sent < n:
            i = (self.tail + self.sent) % self.cap
            r = self._read_slot(i)
            if r is not None:
                return r[0], r[1], self._mv[_HDR : _HDR + r[2]]
            # A slot that does not check (torn write, flash fault) can never be delivered.
            self.corrupt += 1
            self._dirty = True
            if self.sent == 0:
                self._pop()
            else:
                self.sent += 1
        return None

    def mark_sent(self, k):
        """The record (boot, seq) k that next_unsent() returned is published: count it, unless
        the queue moved while it was on its way (custody released it from the tail, or a
        reconnect rewound): counting it then would skip the record now at that place, and
        the receiver would get the rest out of order."""
        if self.sent < self.depth and self._key((self.tail + self.sent) % self.cap) == k:
            self.sent += 1

    def rewind(self):
        """Resend everything not yet in the gateway's custody (after reconnect/timeout)."""
        self.sent = 0

    def _pop(self):
        self.tail = (self.tail + 1) % self.cap
        self.depth -= 1
        if self.sent:
            self.sent -= 1

    def _key(self, i):
        """(boot, seq) from slot i's header (into _hb, not buf), or None if it is not a slot."""
        f = self._f
        f.seek(i * _SLOT)
        if f.readinto(self._hb) != _HDR:
            return None
        magic, _, ln, boot, seq, _ = struct.unpack_from("<BBHIII", self._hb, 0)
        if magic != _MAGIC or ln > _MAX_PAYLOAD:
            return None
        return boot, seq

    def custody(self, boot, a, z):
        """The gateway holds (boot, a..z) durably: release those records from the tail.
        Returns how many were released. Reads headers only: the record in buf may be in flight."""
        n = 0
        while self.depth:
            k = self._key(self.tail)
            if k is None:
                self._pop()  # not a record (torn): it can never be confirmed
                self._dirty = True
                continue
            if k[0] != boot or not a <= k[1] <= z:
                break
            self.wm_boot, self.wm_seq = k
            self._pop()
            n += 1
        if n:
            self._dirty = True
        return n

    def close(self):
        self.flush()
        if self._dirty:
            self.persist()
        self._f.close()
