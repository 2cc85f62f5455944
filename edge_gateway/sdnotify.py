"""sd_notify(3) without a dependency: one datagram to ``$NOTIFY_SOCKET`` per message.

With ``Type=notify`` systemd waits for ``READY=1``; with ``WatchdogSec=`` it restarts the
service unless ``WATCHDOG=1`` arrives at least every ``$WATCHDOG_USEC`` microseconds.
"""

from __future__ import annotations

import contextlib
import os
import socket


def notify(message: str) -> bool:
    """Send one notification; False when not started by systemd (no NOTIFY_SOCKET)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    # Non-blocking: this runs on the event loop, and a datagram socket whose reader lags (its
    # queue holds only net.unix.max_dgram_qlen messages, 10 by default) would otherwise block
    # the whole gateway in send(). A notification that cannot be queued is dropped instead —
    # a missed watchdog ping is harmless, a frozen gateway is not.
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(address)
        sock.send(message.encode())
        return True
    return False


def watchdog_interval_s() -> float | None:
    """Half the watchdog period systemd asked for, or None when no watchdog is set."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        period = int(usec) / 1_000_000
    except ValueError:
        return None
    return period / 2 if period > 0 else None
