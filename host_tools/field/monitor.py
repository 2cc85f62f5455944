"""Follow a node's serial log: what the firmware prints, line by line, until Ctrl-C."""

from __future__ import annotations

import time
from collections.abc import Callable

import serial

from host_tools.field.ports import check_port, translate_open_error


def follow(
    port: str,
    on_text: Callable[[str], None],
    *,
    baud: int = 115200,
    interrupt: bool = False,
    duration_s: float | None = None,
    reset: bool = False,
) -> None:
    """Read `port` and hand decoded text to `on_text` until Ctrl-C (or `duration_s`).

    `interrupt` sends Ctrl-C first, stopping a blocking main.py so the REPL answers again.
    `reset` pulses EN through RTS (boards with the usual auto-reset circuit) to watch a boot.
    """
    check_port(port)
    try:
        ser = serial.Serial(port, baud, timeout=0.2, exclusive=True)
    except (serial.SerialException, OSError) as exc:
        raise translate_open_error(port, exc) from exc
    try:
        if reset:
            try:
                ser.dtr = False
                ser.rts = True  # EN low
                time.sleep(0.1)
                ser.rts = False
            except OSError:
                pass  # no modem lines (a pty, some native-USB boards): press EN instead
        if interrupt:
            ser.write(b"\r\x03\x03")
        deadline = None if duration_s is None else time.monotonic() + duration_s
        pending = b""
        while deadline is None or time.monotonic() < deadline:
            chunk = ser.read(4096)
            if not chunk:
                continue
            pending += chunk
            text, _, pending = (
                pending.rpartition(b"\n") if b"\n" in pending else (b"", b"", pending)
            )
            if text:
                on_text(text.decode("utf-8", "replace").replace("\r", "") + "\n")
        if pending:
            on_text(pending.decode("utf-8", "replace").replace("\r", ""))
    finally:
        ser.close()
