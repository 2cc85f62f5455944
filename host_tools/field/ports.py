"""Find the USB serial ports an ESP32 board may be on, and explain why one cannot be opened."""

from __future__ import annotations

import errno
import grp
import os
from dataclasses import dataclass
from pathlib import Path

from serial.tools import list_ports

from host_tools.field.errors import PortBusyError, PortNotFoundError, PortPermissionError

# USB-to-UART bridges used on ESP32 boards, and Espressif's own native USB (VID 0x303a).
USB_BRIDGES: dict[tuple[int, int | None], str] = {
    (0x10C4, 0xEA60): "Silicon Labs CP210x",
    (0x1A86, 0x7523): "WCH CH340",
    (0x1A86, 0x55D4): "WCH CH9102",
    (0x0403, 0x6001): "FTDI FT232R",
    (0x0403, 0x6015): "FTDI FT231X",
    (0x303A, None): "Espressif native USB",
}


@dataclass(frozen=True)
class SerialPort:
    device: str
    vid: int | None
    pid: int | None
    bridge: str | None
    serial_number: str | None
    description: str

    @property
    def usb_id(self) -> str:
        if self.vid is None or self.pid is None:
            return "-"
        return f"{self.vid:04x}:{self.pid:04x}"


def bridge_name(vid: int | None, pid: int | None) -> str | None:
    if vid is None:
        return None
    return USB_BRIDGES.get((vid, pid)) or USB_BRIDGES.get((vid, None))


def list_serial_ports(include_all: bool = False) -> list[SerialPort]:
    """Serial ports with a known ESP32 USB bridge (all USB serial ports with `include_all`)."""
    found = []
    for p in list_ports.comports():
        name = bridge_name(p.vid, p.pid)
        if name is None and not (include_all and p.vid is not None):
            continue
        found.append(SerialPort(p.device, p.vid, p.pid, name, p.serial_number, p.description or ""))
    return sorted(found, key=lambda s: s.device)


def holders(device: str) -> list[tuple[int, str]]:
    """(pid, command name) of the processes that have `device` open, found through /proc."""
    try:
        target = os.path.realpath(device)
    except OSError:
        return []
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        pid = int(proc.name)
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    comm = (proc / "comm").read_text().strip()
                    found.append((pid, comm))
                    break
            except OSError:
                continue
    return found


def busy_error(device: str) -> PortBusyError:
    who = holders(device)
    if who:
        names = ", ".join(f"{comm} (pid {pid})" for pid, comm in who)
        return PortBusyError(
            f"{device} is in use by {names}",
            hint=f"Close {who[0][1]} (or run 'kill {who[0][0]}') and try again.",
        )
    return PortBusyError(f"{device} is in use by another program")


def dialout_hint(device: str) -> str:
    group = "dialout"
    try:
        group = grp.getgrgid(os.stat(device).st_gid).gr_name
    except (OSError, KeyError):
        pass
    return (
        f"Add yourself to the {group} group: 'sudo usermod -aG {group} $USER', then log out "
        "and log in again (or reboot)."
    )


def check_port(device: str) -> None:
    """Raise the error that explains why `device` cannot be used, if it cannot."""
    if not device:
        raise PortNotFoundError("no serial port given and none found")
    if not os.path.exists(device):
        known = ", ".join(p.device for p in list_serial_ports()) or "none"
        raise PortNotFoundError(f"serial port {device} does not exist (boards found: {known})")
    if not os.access(device, os.R_OK | os.W_OK):
        raise PortPermissionError(f"permission denied opening {device}", hint=dialout_hint(device))


def translate_open_error(device: str, exc: BaseException) -> Exception:
    """Map a pyserial/OS error from opening `device` onto a FieldError with a hint."""
    text = str(exc)
    err = getattr(exc, "errno", None)
    if err in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        return PortPermissionError(f"permission denied opening {device}", hint=dialout_hint(device))
    if err == errno.ENOENT or "No such file" in text:
        return PortNotFoundError(f"serial port {device} does not exist")
    if err == errno.EBUSY or "exclusively lock" in text or "busy" in text.lower():
        return busy_error(device)
    return PortNotFoundError(f"cannot open {device}: {text}")


def auto_port() -> str:
    """The single ESP32 port plugged in; an error naming the choices otherwise."""
    ports = list_serial_ports()
    if not ports:
        raise PortNotFoundError("no ESP32 board found on any USB serial port")
    if len(ports) > 1:
        names = ", ".join(p.device for p in ports)
        raise PortNotFoundError(
            f"several boards are plugged in ({names})",
            hint="Say which one with --port, or use several --port values to work on all.",
        )
    return ports[0].device
