"""Write a MicroPython firmware image to an ESP32 with esptool's Python API.

The image is a local file (no downloads): its SHA-256 is checked against `--sha256` or the
`.sha256` file beside it before the board is touched, and esptool verifies the flash with MD5
after writing. esptool's log goes through a per-thread sink, so several boards can be flashed
in parallel, each with its own progress bar.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import serial
from esptool import cmds
from esptool.loader import ESPLoader
from esptool.logger import TemplateLogger, log
from esptool.util import FatalError

from host_tools.field.errors import (
    ChecksumError,
    FieldError,
    ImageError,
    NoSerialDataError,
    WrongChipError,
)
from host_tools.field.ports import check_port, translate_open_error

Progress = Callable[[int, int], None]

# Where MicroPython's combined image goes (micropython.org download pages, "esptool.py
# write_flash"): 0x1000 on the original ESP32, 0x0 on ESP32-S3/C3.
IMAGE_ADDRESS = {"esp32": 0x1000, "esp32s3": 0x0, "esp32c3": 0x0, "esp32s2": 0x1000}
ESP_IMAGE_MAGIC = 0xE9  # first byte of an ESP-IDF bootloader/app image header
_SHA_RE = re.compile(r"\b([0-9a-fA-F]{64})\b")


@dataclass(frozen=True)
class ChipInfo:
    chip: str  # e.g. "ESP32"
    description: str  # e.g. "ESP32-D0WD-V3 (revision v3.1)"
    mac: str  # 12 hex digits

    @property
    def device_id(self) -> str:
        return "ce-" + self.mac


@dataclass(frozen=True)
class FlashResult:
    port: str
    chip: ChipInfo
    image: Path
    sha256: str
    address: int
    erased: bool
    size: int


# --- esptool output, routed per thread ---------------------------------------------------


class _ThreadSink(TemplateLogger):  # type: ignore[misc]
    """esptool's logger is process-wide; this sends each thread's output to its own sink."""

    local = threading.local()

    def _emit(self, text: str) -> None:
        sink: Callable[[str], None] | None = getattr(self.local, "lines", None)
        if sink is not None:
            sink(text)

    def print(self, *args: Any, **kwargs: Any) -> None:
        self._emit(" ".join(str(a) for a in args))

    def note(self, message: str) -> None:
        self._emit(f"note: {message}")

    def warning(self, message: str) -> None:
        self._emit(f"warning: {message}")

    def error(self, message: str) -> None:
        self._emit(f"error: {message}")

    def stage(self, finish: bool = False) -> None:
        return None

    def progress_bar(
        self,
        cur_iter: int,
        total_iters: int,
        prefix: str = "",
        suffix: str = "",
        bar_length: int = 30,
    ) -> None:
        cb: Progress | None = getattr(self.local, "progress", None)
        if cb is not None:
            cb(cur_iter, total_iters)

    def set_verbosity(self, verbosity: str) -> None:
        return None


_SINK = _ThreadSink()
_installed = threading.Lock()
_is_installed = False


def _install_sink() -> None:
    global _is_installed
    with _installed:
        if not _is_installed:
            log.set_logger(_SINK)
            _is_installed = True


# --- the image -----------------------------------------------------------------------------


def expected_sha256(image: Path, given: str | None) -> str:
    if given:
        if not _SHA_RE.fullmatch(given.strip()):
            raise ChecksumError(f"--sha256 {given!r} is not 64 hex digits")
        return given.strip().lower()
    sidecar = image.with_name(image.name + ".sha256")
    if not sidecar.is_file():
        raise ChecksumError(
            f"no checksum for {image.name}: neither --sha256 nor {sidecar.name} was given",
            hint=(
                f"Copy the SHA-256 from the download page into {sidecar.name} next to the image "
                "(or pass --sha256 HEX)."
            ),
        )
    m = _SHA_RE.search(sidecar.read_text(errors="replace"))
    if m is None:
        raise ChecksumError(f"{sidecar} holds no SHA-256 (64 hex digits)")
    return m.group(1).lower()


def check_image(image: Path, sha256: str | None = None) -> tuple[bytes, str]:
    """The image's bytes and verified SHA-256, or an error that says what is wrong."""
    if not image.is_file():
        raise ImageError(f"firmware image {image} does not exist")
    data = image.read_bytes()
    if not data:
        raise ImageError(f"firmware image {image} is empty")
    if data[0] != ESP_IMAGE_MAGIC:
        raise ImageError(
            f"{image} is not an ESP32 firmware image (first byte {data[0]:#04x}, "
            f"expected {ESP_IMAGE_MAGIC:#04x})",
            hint="Use the .bin file of the MicroPython release for your board, not a .uf2/.zip/.elf.",
        )
    want = expected_sha256(image, sha256)
    got = hashlib.sha256(data).hexdigest()
    if got != want:
        raise ChecksumError(f"{image.name} has SHA-256 {got}, expected {want}")
    return data, got


# --- talking to the ROM ------------------------------------------------------------------


def _translate(port: str, exc: BaseException) -> FieldError:
    text = str(exc)
    if isinstance(exc, serial.SerialException | OSError) and not isinstance(exc, FatalError):
        return translate_open_error(port, exc)  # type: ignore[return-value]
    if "Could not open" in text:  # esptool's FatalError around pyserial's: busy, permission
        return translate_open_error(port, exc)  # type: ignore[return-value]
    if "No serial data received" in text or "Failed to connect" in text or "Invalid head" in text:
        return NoSerialDataError(
            f"{port}: the board did not answer esptool ({text.splitlines()[0]})"
        )
    if "does not contain an" in text or "is not an" in text:
        return WrongChipError(
            f"{port}: the image is not built for this {text.split(' an ')[-1].split(' image')[0]} "
            f"({text.split('. Use --force')[0]})",
            hint="Download the MicroPython image for this chip (ESP32_GENERIC for an ESP32 "
            "DevKitC, ESP32_GENERIC_S3 for an ESP32-S3).",
        )
    if "MD5" in text:
        return ChecksumError(
            f"{port}: the flash does not read back what was written ({text})",
            hint="Try again with --erase and a lower --baud (115200), and a shorter USB cable.",
        )
    return FieldError(f"{port}: esptool: {text}", hint="Run with -v to see esptool's log.")


def connect(
    port: str, *, before: str = "default-reset", baud: int = 115200, attempts: int = 3
) -> ESPLoader:
    """Reset the board into its ROM bootloader and identify the chip."""
    _install_sink()
    check_port(port)
    try:
        return cmds.detect_chip(port, baud=baud, connect_mode=before, connect_attempts=attempts)
    except (FatalError, serial.SerialException, OSError) as exc:
        raise _translate(port, exc) from exc


def chip_info(esp: ESPLoader) -> ChipInfo:
    mac = esp.read_mac()
    if mac is None:
        raise FieldError("the chip reported no MAC address")
    return ChipInfo(
        chip=esp.CHIP_NAME, description=esp.get_chip_description(), mac=bytes(mac).hex()
    )


def probe(
    port: str, *, before: str = "default-reset", after: str = "hard-reset", attempts: int = 3
) -> ChipInfo:
    """Chip and MAC of the board on `port`; `after="hard-reset"` lets it run again."""
    esp = connect(port, before=before, attempts=attempts)
    try:
        info = chip_info(esp)
    except FatalError as exc:
        esp._port.close()
        raise _translate(port, exc) from exc
    _release(esp, after)
    return info


def _release(esp: ESPLoader, after: str) -> None:
    try:
        cmds.reset_chip(esp, after)
    except (FatalError, OSError, serial.SerialException):
        pass  # the image is written and verified; a failed reset only means: press EN
    finally:
        esp._port.close()


def flash_image(
    port: str,
    image: Path,
    *,
    sha256: str | None = None,
    chip: str = "esp32",
    erase: bool = False,
    address: int | None = None,
    before: str = "default-reset",
    after: str = "hard-reset",
    baud: int = 460800,
    attempts: int = 3,
    progress: Progress | None = None,
    lines: Callable[[str], None] | None = None,
) -> FlashResult:
    """Check the image, then erase (if asked), write and verify it. Raises FieldError."""
    data, digest = check_image(image, sha256)
    _SINK.local.progress, _SINK.local.lines = progress, lines
    try:
        esp = connect(port, before=before, attempts=attempts)
        try:
            want = chip.replace("-", "").lower()
            got = esp.CHIP_NAME.replace("-", "").lower()
            if got != want:
                raise WrongChipError(
                    f"{port} has an {esp.CHIP_NAME}, but the image is for {chip.upper()}"
                )
            # Extended image header: chip id at byte 12 (ESP-IDF esp_image_header_t.chip_id)
            image_chip = int.from_bytes(data[12:14], "little")
            if image_chip != esp.IMAGE_CHIP_ID:
                raise WrongChipError(
                    f"{image.name} is not built for this {esp.CHIP_NAME} "
                    f"(image chip id {image_chip}, board {esp.IMAGE_CHIP_ID})",
                    hint="Download the MicroPython image for this chip (ESP32_GENERIC for an "
                    "ESP32 DevKitC, ESP32_GENERIC_S3 for an ESP32-S3).",
                )
            info = chip_info(esp)
            esp = cmds.run_stub(esp)
            if baud != esp._port.baudrate:
                try:
                    esp.change_baud(baud)
                except (FatalError, OSError, serial.SerialException):
                    pass  # stay at the connect speed: slower, still correct
            cmds.attach_flash(esp)
            if erase:
                cmds.erase_flash(esp)
            addr = IMAGE_ADDRESS.get(want, 0x1000) if address is None else address
            # write_flash checks esptool's MD5 of the written region against the image
            cmds.write_flash(esp, [(addr, data)])
        except FatalError as exc:
            esp._port.close()
            raise _translate(port, exc) from exc
        except BaseException:
            esp._port.close()
            raise
        _release(esp, after)
        return FlashResult(port, info, image, digest, addr, erase, len(data))
    finally:
        _SINK.local.progress = _SINK.local.lines = None
