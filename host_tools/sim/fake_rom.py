"""A fake ESP32 ROM serial bootloader (and flasher stub) on a pseudo-terminal.

The real esptool library talks real bytes to it: SLIP framing, SYNC, READ_REG (chip magic
value, eFuse MAC words, SPI flash registers), WRITE_REG, SPI_ATTACH, SPI_SET_PARAMS,
MEM_BEGIN/DATA/END (the stub upload, answered with "OHAI"), FLASH_BEGIN/DATA/END with the
data checksum, the stub's compressed FLASH_DEFL_*, SPI_FLASH_MD5 and ERASE_FLASH/REGION.
It keeps only what `cityedge node flash` and `list --probe` use. Protocol reference: esptool
docs "Serial Protocol" (command opcodes, status bytes, checksum seed 0xEF).

Open `device` with esptool using `connect_mode="no-reset"`: a pty has no DTR/RTS lines.
"""

from __future__ import annotations

import hashlib
import os
import select
import struct
import threading
import tty
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Self

# Opcodes (esptool loader.ESP_CMDS).
FLASH_BEGIN, FLASH_DATA, FLASH_END = 0x02, 0x03, 0x04
MEM_BEGIN, MEM_END, MEM_DATA = 0x05, 0x06, 0x07
SYNC, WRITE_REG, READ_REG = 0x08, 0x09, 0x0A
SPI_SET_PARAMS, SPI_ATTACH, CHANGE_BAUDRATE = 0x0B, 0x0D, 0x0F
FLASH_DEFL_BEGIN, FLASH_DEFL_DATA, FLASH_DEFL_END = 0x10, 0x11, 0x12
SPI_FLASH_MD5, ERASE_FLASH, ERASE_REGION = 0x13, 0xD0, 0xD1

# ROM error codes (esptool docs, "Serial Protocol", status bytes).
ERR_INVALID_MSG, ERR_FAILED, ERR_BAD_CRC, ERR_BAD_DATA = 0x05, 0x06, 0x07, 0x0B

# ESP32 (esptool targets/esp32.py)
CHIP_DETECT_MAGIC_REG = 0x40001000
ESP32_MAGIC = 0x00F01D83
ESP32S3_MAGIC = 0x9  # ESP32-S3 reports its id through GET_SECURITY_INFO instead
EFUSE_RD_REG_BASE = 0x3FF5A000
SPI_REG_BASE = 0x3FF42000
SPI_CMD_REG = SPI_REG_BASE + 0x00
SPI_USR_BIT = 1 << 18  # SPI_CMD_REG "user command" start bit, cleared by hardware when done
SPI_USR2_REG = SPI_REG_BASE + 0x24
SPI_W0_REG = SPI_REG_BASE + 0x80
FLASH_ID_WINBOND_4MB = 0x1640EF  # JEDEC RDID bytes EF 40 16, read little-endian from W0
SFDP_SIGNATURE = 0x50444653  # "SFDP"


def slip_encode(packet: bytes) -> bytes:
    return b"\xc0" + packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"


class SlipDecoder:
    def __init__(self) -> None:
        self._buf = bytearray()
        self._in_frame = False

    def feed(self, data: bytes) -> list[bytes]:
        frames = []
        for b in data:
            if b == 0xC0:
                if self._in_frame and self._buf:
                    frames.append(
                        bytes(self._buf).replace(b"\xdb\xdc", b"\xc0").replace(b"\xdb\xdd", b"\xdb")
                    )
                    self._buf.clear()
                    self._in_frame = True
                else:
                    self._in_frame = True
                    self._buf.clear()
            elif self._in_frame:
                self._buf.append(b)
        return frames


def efuse_words_for_mac(mac: bytes) -> tuple[int, int]:
    """eFuse BLK0 words 1 and 2 holding `mac` as esptool's ESP32ROM.read_mac() reads them:
    pack(">II", word2, word1)[2:8] is the MAC; the top 2 bytes of word2 hold its CRC."""
    crc = 0
    packed = bytes([0, crc]) + mac
    word2, word1 = struct.unpack(">II", packed)
    return word1, word2


@dataclass
class FakeEsp32:
    """The chip's state: flash contents, registers, and which loader is answering."""

    mac: bytes
    flash_size: int = 4 * 1024 * 1024
    flash: bytearray = field(init=False)
    stub: bool = False
    regs: dict[int, int] = field(default_factory=dict)
    responding: bool = True  # False: like a board that is not in download mode
    writes: list[tuple[int, int]] = field(default_factory=list)  # (offset, size) per FLASH_*_BEGIN
    erased_all: int = 0
    bad_cell: int | None = None  # a flash address that reads back with bit 0 flipped (worn cell)
    _w_offset: int = 0
    _w_block: int = 0
    _w_seq: int = 0
    _inflate: zlib._Decompress | None = None
    _inflate_pos: int = 0
    _pending_stub: bool = False

    def __post_init__(self) -> None:
        self.flash = bytearray(b"\xff" * self.flash_size)
        w1, w2 = efuse_words_for_mac(self.mac)
        self.regs[EFUSE_RD_REG_BASE + 4] = w1
        self.regs[EFUSE_RD_REG_BASE + 8] = w2
        self.regs[CHIP_DETECT_MAGIC_REG] = ESP32_MAGIC

    # --- one request → (value, data, ok, error) ------------------------------------------

    def handle(self, op: int, data: bytes, chk: int) -> tuple[int, bytes, int]:
        """Returns (value, response data, error code or 0)."""
        h = self._HANDLERS.get(op)
        if h is None or (op in (ERASE_FLASH, ERASE_REGION) and not self.stub):
            return 0, b"", ERR_INVALID_MSG
        try:
            return h(self, data, chk)
        except (struct.error, ValueError, zlib.error):
            return 0, b"", ERR_BAD_DATA

    def _sync(self, data: bytes, chk: int) -> tuple[int, bytes, int]:
        if data != b"\x07\x07\x12\x20" + 32 * b"\x55":
            return 0, b"", ERR_INVALID_MSG
        return (0 if self.stub else 0x20120707), b"", 0

    def _read_reg(self, data: bytes, chk: int) -> tuple[int, bytes, int]:
        (addr,) = struct.unpack("<I", data[:4])
        return self.regs.get(addr, 0), b"", 0

    def _write_reg(self, data: bytes, chk: int) -> tuple[int, bytes, int]:
        for i in range(0, len(data), 16):
            addr, value, mask, _delay = struct.unpack("<IIII", data[i : i + 16])
            old = self.regs.get(addr, 0)
            self.regs[addr] = (old & ~mask) | (value & mask)
            if addr == SPI_CMD_REG and value & SPI_USR_BIT:
                self._run_spi_command()
        return 0, b"", 0

    def _run_spi_command(self) -> None:
        # The flash command byte is the low byte of SPI_USR2 (command value field).
        command = self.regs.get(SPI_USR2_REG, 0) & 0xFF
        result = {0x9F: FLASH_ID_WINBOND_4MB, 0x5A: SFDP_SIGNATURE}.get(command, 0)
        self.regs[SPI_W0_REG] = result
        self.regs[SPI_CMD_REG] = 0  # command finished

    def _ok(self, data: bytes, chk: int) -> tuple[int, bytes, int]:
        return 0, b"", 0

    def _set_params(self, data: bytes, chk: int) -> tuple[int, bytes, int]:
        _fl_id, total, _block, _sector, _page, _mask = struct.unpack("<IIIIII", data[:24])
        if total > len(self.flash):
            return 0, b"", ERR_FAILED
        return 0, b"", 0

    def _mem_end(self, data: bytes, chk: int) -> tuple[int, bytes, int]:
        execute, entry = struct.unpack("<II", data[:8])
        self._pending_stub = execute == 0 and entry != 0
        return 0, b"", 0

    def _flash_begin(self, data: bytes, chk: int) -> tuple[int, bytes, int]:
        erase_size, _blocks, block, offset = struct.unpack("<IIII", data[:16])
        if offset + erase_size > len(self.flash):
            return 0, b"", ERR_FAILED
        self.flash[offset : offset + erase_size] = b"\xff" * erase_size
        self._w_offset, self._w_block, self._w_seq = offset, block, 0
        self.writes.append((offset, erase_size))
        return 0, b"", 0

    def _check_block(self, data: bytes, chk: int) -> tuple[bytes, int]:
        size, seq, _, _ = struct.unpack("<IIII", data[:16])
        payload = data[16 : 16 + size]
        if len(payload) != size or seq != self._w_seq:
            return b"", ERR_BAD_DATA
        checksum = 0xEF  # esptool ESPLoader.checksum: seed 0xEF, XOR of every byte
        for b in payload:
            checksum ^= b
        if checksum != chk:
            return b"", ERR_BAD_CRC
        self._w_seq += 1
        return payload, 0

    def _flash_data(self, data: bytes, chk: int) -> tuple[int, bytes, int]:
        payload, err = self._check_block(data, chk)
        if err:
            return 0, b"", err
        pos = self._w_offset + (self._w_seq - 1) * self._w_block
        self.flash[pos : pos + len(payload)] = payload
        return 0, b"", 0

    def _defl_begin(self, data: bytes, chk: int) -> tuple[int, bytes, int]:
        size, _blocks, block, offset = struct.unpack("<IIII", data[:16])
        if offset + size > len(self.flash):
            return 0, b"", ERR_FAILED
        self.flash[offset : offset + size] = b"\xff" * size
        self._w_offset, self._w_block, self._w_seq = offset, block, 0
        self._inflate, self._inflate_pos = zlib.decompressobj(), offset
        self.writes.append((offset, size))
        return 0, b"", 0

    def _defl_data(self, data: bytes, chk: int) -> tuple[int, bytes, int]:
        payload, err = self._check_block(data, chk)
        if err or self._inflate is None:
            return 0, b"", err or ERR_FAILED
        out = self._inflate.decompress(payload)
        self.flash[self._inflate_pos : self._inflate_pos + len(out)] = out
        self._inflate_pos += len(out)
        return 0, b"", 0

    def _md5(self, data: bytes, chk: int) -> tuple[int, bytes, int]:
        addr, size, _, _ = struct.unpack("<IIII", data[:16])
        region = bytearray(self.flash[addr : addr + size])
        if self.bad_cell is not None and addr <= self.bad_cell < addr + size:
            region[self.bad_cell - addr] ^= 1
        digest = hashlib.md5(region).digest()
        return 0, (digest if self.stub else digest.hex().encode()), 0

    def _erase_flash(self, data: bytes, chk: int) -> tuple[int, bytes, int]:
        self.flash[:] = b"\xff" * len(self.flash)
        self.erased_all += 1
        return 0, b"", 0

    def _erase_region(self, data: bytes, chk: int) -> tuple[int, bytes, int]:
        offset, size = struct.unpack("<II", data[:8])
        self.flash[offset : offset + size] = b"\xff" * size
        return 0, b"", 0

    _HANDLERS: ClassVar[dict[int, Callable[[FakeEsp32, bytes, int], tuple[int, bytes, int]]]] = {
        SYNC: _sync,
        READ_REG: _read_reg,
        WRITE_REG: _write_reg,
        SPI_ATTACH: _ok,
        SPI_SET_PARAMS: _set_params,
        CHANGE_BAUDRATE: _ok,
        MEM_BEGIN: _ok,
        MEM_DATA: _ok,
        MEM_END: _mem_end,
        FLASH_BEGIN: _flash_begin,
        FLASH_DATA: _flash_data,
        FLASH_END: _ok,
        FLASH_DEFL_BEGIN: _defl_begin,
        FLASH_DEFL_DATA: _defl_data,
        FLASH_DEFL_END: _ok,
        SPI_FLASH_MD5: _md5,
        ERASE_FLASH: _erase_flash,
        ERASE_REGION: _erase_region,
    }


class FakeRom:
    """Serve a FakeEsp32 on a pseudo-terminal; `device` is the path to give esptool."""

    def __init__(self, chip: FakeEsp32) -> None:
        self.chip = chip
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.device = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, name=f"fake-rom {self.device}", daemon=True
        )

    def start(self) -> Self:
        self._thread.start()
        return self

    def close(self) -> None:
        if self._master < 0:
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        # Closing twice must not close descriptors the process has reused since.
        fds, self._master, self._slave = (self._master, self._slave), -1, -1
        for fd in fds:
            os.close(fd)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, op: int, value: int, data: bytes, error: int) -> None:
        # ROM status is 4 bytes (status, error, 2 reserved); the stub sends 2 (esptool
        # check_command: "ROM bootloaders ... return another 2 bytes").
        status = bytes([1 if error else 0, error]) + (b"" if self.chip.stub else b"\x00\x00")
        body = data + status
        os.write(self._master, slip_encode(struct.pack("<BBHI", 1, op, len(body), value) + body))

    def _serve(self) -> None:
        decoder = SlipDecoder()
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(self._master, 65536)
            except OSError:
                return
            for frame in decoder.feed(chunk):
                if not self.chip.responding or len(frame) < 8 or frame[0] != 0:
                    continue
                _, op, size, chk = struct.unpack("<BBHI", frame[:8])
                value, data, error = self.chip.handle(op, frame[8 : 8 + size], chk)
                repeats = 8 if op == SYNC and not error else 1  # the ROM answers SYNC 8 times
                for _ in range(repeats):
                    self._send(op, value, data, error)
                if op == MEM_END and self.chip._pending_stub:
                    self.chip._pending_stub = False
                    self.chip.stub = True
                    os.write(self._master, slip_encode(b"OHAI"))
