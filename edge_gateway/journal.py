"""Logging for the service: syslog priorities journald understands.

Under systemd the gateway's stderr is a stream to journald, which reads a ``<N>`` prefix on each
line as that line's syslog priority (``SyslogLevelPrefix=``, on by default) and adds its own
timestamp, host and identifier. So when stderr is the journal (``$JOURNAL_STREAM`` names
stderr's device and inode, as systemd sets it), every line is ``<N>logger: message``: then
``journalctl -u cityedge-gateway -p warning`` shows warnings and errors only. Anywhere else
(a terminal, a test's log file) lines keep a timestamp and the level name.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

# RFC 5424 severities for Python's levels.
PRIORITY = {
    logging.CRITICAL: 2,  # crit
    logging.ERROR: 3,  # err
    logging.WARNING: 4,  # warning
    logging.INFO: 6,  # info
    logging.DEBUG: 7,  # debug
}

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def priority(levelno: int) -> int:
    """The syslog priority of a Python log level (a level between two takes the lower one)."""
    for level, prio in sorted(PRIORITY.items(), reverse=True):
        if levelno >= level:
            return prio
    return 7


class JournalFormatter(logging.Formatter):
    """``<N>logger: message``; every line of a multi-line record (a traceback) carries the
    prefix, since journald splits the stream into one entry per line."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def stream_is_journal(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """True when ``stream`` is the journald stream systemd connected (``JOURNAL_STREAM`` =
    ``<device>:<inode>`` of it; a child whose stderr was redirected elsewhere gets False)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(stream.fileno())
        return bool(value) and (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (ValueError, OSError, AttributeError):
        return False


def setup_logging(level: str, stream: TextIO | None = None) -> None:
    """Configure the root logger for the service (unless the embedding program already did)
    and set the gateway's level."""
    root = logging.getLogger()
    if not root.handlers:
        out = sys.stderr if stream is None else stream
        handler = logging.StreamHandler(out)
        handler.setFormatter(
            JournalFormatter() if stream_is_journal(out) else logging.Formatter(PLAIN_FORMAT)
        )
        root.addHandler(handler)
    logging.getLogger("edge_gateway").setLevel(level.upper())
