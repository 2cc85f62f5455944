"""`cityedge node flash` against a fake ESP32 ROM bootloader on a pty: real esptool, real bytes."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from esptool.bin_image import ESP32FirmwareImage, ImageSegment

from host_tools.field import flashing
from host_tools.field.errors import ChecksumError, ImageError, NoSerialDataError, WrongChipError
from host_tools.sim.fake_rom import CHIP_DETECT_MAGIC_REG, FakeEsp32, FakeRom

MAC = "246f28a1b2c3"
PTY = {"before": "no-reset", "after": "no-reset"}  # a pty has no DTR/RTS lines to reset with


@pytest.fixture
def rom() -> Iterator[FakeRom]:
    with FakeRom(FakeEsp32(mac=bytes.fromhex(MAC))) as r:
        yield r


def make_image(tmp_path: Path, size: int = 200_000, sidecar: bool = True, chip_id: int = 0) -> Path:
    """A valid ESP32 app image (esptool's own writer) with compressible code-like bytes."""
    img = ESP32FirmwareImage()
    img.entrypoint = 0x40080000
    seg = ImageSegment(0x3FFB0000, b"".join(i.to_bytes(4, "little") * 3 for i in range(size // 12)))
    seg.name = ".dram0.data"
    img.segments = [seg]
    image = tmp_path / "ESP32_GENERIC-v1.29.0.bin"
    img.save(str(image))
    body = bytearray(image.read_bytes())
    body[12:14] = chip_id.to_bytes(2, "little")  # esptool always writes its own chip's id
    image.write_bytes(body)
    if sidecar:
        (tmp_path / (image.name + ".sha256")).write_text(
            f"{hashlib.sha256(body).hexdigest()}  {image.name}\n"
        )
    return image


def test_flash_writes_verified_image_and_erases(tmp_path: Path, rom: FakeRom) -> None:
    image = make_image(tmp_path)
    rom.chip.flash[0x300000:0x300004] = b"old!"
    seen: list[tuple[int, int]] = []
    result = flashing.flash_image(
        rom.device, image, erase=True, progress=lambda c, t: seen.append((c, t)), **PTY
    )
    data = image.read_bytes()
    assert rom.chip.flash[0x1000 : 0x1000 + len(data)] == data
    assert rom.chip.flash[0x300000:0x300004] == b"\xff" * 4  # erased
    assert rom.chip.erased_all == 1
    assert result.chip.mac == MAC and result.chip.chip == "ESP32"
    assert result.chip.device_id == "ce-" + MAC
    assert result.address == 0x1000 and result.sha256 == hashlib.sha256(data).hexdigest()
    assert seen and seen[-1][0] == seen[-1][1]  # progress reached 100 %


def test_flash_that_reads_back_wrong_is_reported(tmp_path: Path, rom: FakeRom) -> None:
    rom.chip.bad_cell = 0x1000 + 5000
    with pytest.raises(ChecksumError, match="does not read back") as exc:
        flashing.flash_image(rom.device, make_image(tmp_path), **PTY)
    assert "--erase" in exc.value.hint


def test_probe_reads_chip_and_mac(rom: FakeRom) -> None:
    info = flashing.probe(rom.device, **PTY)
    assert (info.chip, info.mac) == ("ESP32", MAC)


def test_bad_checksum_never_touches_the_board(tmp_path: Path, rom: FakeRom) -> None:
    image = make_image(tmp_path)
    with pytest.raises(ChecksumError):
        flashing.flash_image(rom.device, image, sha256="0" * 64, **PTY)
    image.write_bytes(image.read_bytes() + b"x")  # damaged after download: sidecar disagrees
    with pytest.raises(ChecksumError):
        flashing.flash_image(rom.device, image, **PTY)
    assert rom.chip.writes == []


def test_image_for_another_chip_is_refused(tmp_path: Path, rom: FakeRom) -> None:
    image = make_image(tmp_path, chip_id=9)  # an ESP32-S3 image (IMAGE_CHIP_ID 9)
    with pytest.raises(WrongChipError, match="not built for this ESP32") as exc:
        flashing.flash_image(rom.device, image, **PTY)
    assert "ESP32_GENERIC" in exc.value.hint  # which image to download instead
    assert rom.chip.writes == []


def test_image_problems_say_what_is_wrong(tmp_path: Path, rom: FakeRom) -> None:
    with pytest.raises(ImageError, match="does not exist") as missing:
        flashing.flash_image(rom.device, tmp_path / "missing.bin", **PTY)
    assert "micropython.org" in missing.value.hint and ".sha256" in missing.value.hint
    bad = tmp_path / "firmware.uf2"
    bad.write_bytes(b"UF2\n" + b"\0" * 100)
    with pytest.raises(ImageError, match="not an ESP32 firmware image") as exc:
        flashing.flash_image(
            rom.device, bad, sha256=hashlib.sha256(bad.read_bytes()).hexdigest(), **PTY
        )
    assert ".bin" in exc.value.hint
    with pytest.raises(ChecksumError, match="no checksum"):
        flashing.flash_image(rom.device, make_image(tmp_path, sidecar=False), **PTY)
    assert rom.chip.writes == []


def test_silent_board_explains_boot_button(tmp_path: Path, rom: FakeRom) -> None:
    rom.chip.responding = False
    t0 = time.monotonic()
    with pytest.raises(NoSerialDataError) as exc:
        flashing.flash_image(rom.device, make_image(tmp_path), attempts=1, **PTY)
    assert "BOOT" in exc.value.hint and "charge-only" in exc.value.hint
    assert time.monotonic() - t0 < 30


def test_wrong_chip_is_refused(tmp_path: Path, rom: FakeRom) -> None:
    rom.chip.regs[CHIP_DETECT_MAGIC_REG] = 0x000007C6  # ESP32-S2's magic value (esptool targets)
    with pytest.raises(WrongChipError, match="has an ESP32-S2, but the image is for ESP32") as exc:
        flashing.flash_image(rom.device, make_image(tmp_path), chip="esp32", **PTY)
    assert "--chip" in exc.value.hint
    assert rom.chip.writes == []
