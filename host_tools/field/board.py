"""A MicroPython board on a serial port, driven over the raw REPL with mpremote's transport.

Used by deploy, provision and verify alike, so they all open ports, enter the raw REPL and
report failures the same way. Works unchanged on a real ESP32 and on the pty-backed virtual
board.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Self

import mpremote.transport_serial as mpremote_serial
import serial
from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

from host_tools.field.errors import BoardCommandError, RawReplError
from host_tools.field.ports import check_port, translate_open_error

log = logging.getLogger(__name__)

# mpremote's SerialTransport prints the raw bytes of a failed raw-REPL attempt (b'node: …') to
# stdout before raising. Board retries and reports failures itself, so those bytes go to the
# debug log instead of the technician's terminal (its module-level name 'print' shadows the
# built-in for that module only).
setattr(  # noqa: B010 -- a module attribute mypy does not know
    mpremote_serial, "print", lambda *a, **_k: log.debug("mpremote: %s", " ".join(map(str, a)))
)

# Runs on the board: sha256 of each listed file, None when missing. One round trip for all.
_HASH_CODE = """
import hashlib, binascii, json
def _h(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    h = hashlib.sha256()
    b = bytearray(512)
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(b if n == 512 else b[:n])
    f.close()
    return binascii.hexlify(h.digest()).decode()
print(json.dumps({p: _h(p) for p in %r}))
"""

_INFO_CODE = """
import sys, json, binascii, machine
try:
    _u = binascii.hexlify(machine.unique_id()).decode()
except Exception:
    _u = ''
print(json.dumps({'mpy': sys.implementation._mpy, 'version': list(sys.implementation.version[:3]),
 'machine': getattr(sys.implementation, '_machine', sys.platform), 'platform': sys.platform,
 'unique_id': _u}))
"""


@dataclass(frozen=True)
class BoardInfo:
    mpy_version: int  # .mpy format major version, e.g. 6
    mpy_sub_version: int  # e.g. 3 for "mpy v6.3"
    micropython_version: str  # e.g. "1.29.0"
    machine: str
    platform: str
    unique_id: str  # hex; on an ESP32 the base MAC from eFuse

    @property
    def mpy(self) -> str:
        return f"{self.mpy_version}.{self.mpy_sub_version}"


def parse_info(data: dict[str, Any]) -> BoardInfo:
    mpy = int(data["mpy"])
    # sys.implementation._mpy = version | sub_version << 8 | arch << 10 (MicroPython docs)
    return BoardInfo(
        mpy_version=mpy & 0xFF,
        mpy_sub_version=(mpy >> 8) & 3,
        micropython_version=".".join(str(p) for p in data["version"]),
        machine=str(data["machine"]),
        platform=str(data["platform"]),
        unique_id=str(data["unique_id"]),
    )


def _open_failure(port: str) -> BaseException | None:
    """mpremote reports only "failed to access": open the port once more to learn why."""
    try:
        serial.Serial(port, exclusive=True).close()
    except (serial.SerialException, OSError) as exc:
        return exc
    return None


_ATTEMPT_S = 2.0  # one try at the raw REPL; Board retries until its timeout_s


class Board:
    """An open raw-REPL session. Use as a context manager.

    Entering the raw REPL stops `main.py` (Ctrl-C, then a soft reset in raw mode, which runs
    no `main.py`). On closing, the board is handed back the way it runs in the field: out of
    the raw REPL (Ctrl-B, mpremote's `exit_raw_repl`) and soft-reset from the friendly REPL
    (Ctrl-D), after which MicroPython runs `boot.py` and `main.py` (it runs `main.py` after a
    soft reset only in friendly-REPL mode), so a technician who unplugs the laptop leaves a
    running node. `run_main=False` leaves it at the friendly REPL instead.
    """

    def __init__(
        self,
        port: str,
        baud: int = 115200,
        soft_reset: bool = True,
        timeout_s: float = 15.0,
        *,
        run_main: bool = True,
    ) -> None:
        self.port = port
        self.run_main = run_main
        self.restarted = False  # set by close(): the board printed its soft reboot
        check_port(port)
        try:
            # A read timeout: on a pty mpremote reads without polling first (its QEMU path),
            # and without one a silent board would block those reads for ever.
            self._t = SerialTransport(port, baudrate=baud, timeout=0.5)
        except (TransportError, serial.SerialException, OSError) as exc:
            raise translate_open_error(port, _open_failure(port) or exc) from exc
        # Several short attempts rather than one long one: a board that is asleep (battery
        # boards deep-sleep between samples), rebooting or busy in a C call misses one Ctrl-C,
        # and answers a later one. A board already in the raw REPL answers a repeated Ctrl-A.
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                self._t.enter_raw_repl(
                    soft_reset=soft_reset, timeout_overall=min(_ATTEMPT_S, max(left, 0.1))
                )
                break
            except TransportError as exc:
                if deadline - time.monotonic() > 0:
                    log.debug("%s: no raw REPL yet (%s), trying again", port, exc)
                    continue
                self._t.close()
                raise RawReplError(
                    f"the board on {port} did not enter the raw REPL ({exc})"
                ) from exc
            except (serial.SerialException, OSError) as exc:
                self._t.close()
                raise RawReplError(
                    f"the board on {port} did not enter the raw REPL ({exc})"
                ) from exc

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._t.exit_raw_repl()  # Ctrl-B: the friendly REPL
            if self.run_main:
                self.restarted = self._soft_reset_to_main()
        except (TransportError, serial.SerialException, OSError):
            pass
        try:
            self._t.close()
        except (serial.SerialException, OSError):
            pass

    def _soft_reset_to_main(self, timeout_s: float = 5.0) -> bool:
        """Ctrl-D at the friendly REPL's prompt: a soft reset that runs boot.py and main.py."""
        self._t.read_until(1, b">>> ", timeout=1.0, timeout_overall=timeout_s)
        self._t.serial.write(b"\x04")
        got = self._t.read_until(1, b"soft reboot\r\n", timeout=2.0, timeout_overall=timeout_s)
        if not got.endswith(b"soft reboot\r\n"):
            log.warning("%s: no soft reboot seen; press EN/RST to start the firmware", self.port)
            return False
        return True

    def exec(
        self, code: str, timeout_s: float = 10.0, on_output: Callable[[bytes], None] | None = None
    ) -> str:
        """Run `code` on the board; its printed output. A traceback becomes BoardCommandError."""
        try:
            out, err = self._t.exec_raw(code, timeout=timeout_s, data_consumer=on_output)
        except TransportError as exc:
            raise RawReplError(f"the board on {self.port} stopped answering ({exc})") from exc
        except (serial.SerialException, OSError) as exc:
            raise RawReplError(f"lost the board on {self.port}: {exc}") from exc
        if err:
            text = err.decode("utf-8", "replace").strip()
            raise BoardCommandError(f"the board on {self.port} reported: {text.splitlines()[-1]}")
        return bytes(out).decode("utf-8", "replace")

    def exec_json(self, code: str, timeout_s: float = 10.0) -> Any:
        out = self.exec(code, timeout_s).strip().splitlines()
        if not out:
            raise BoardCommandError(f"the board on {self.port} printed nothing")
        try:
            return json.loads(out[-1])
        except ValueError as exc:
            raise BoardCommandError(f"the board on {self.port} printed {out[-1]!r}") from exc

    def info(self) -> BoardInfo:
        return parse_info(self.exec_json(_INFO_CODE))

    def mac(self) -> str:
        """The base MAC (12 hex digits), from machine.unique_id() which on an ESP32 is the
        factory MAC in eFuse (MicroPython esp32 port, machine_unique_id)."""
        uid = self.info().unique_id.lower()
        if len(uid) != 12:
            raise BoardCommandError(
                f"the board on {self.port} gave a {len(uid) // 2}-byte unique id ({uid!r}), "
                "not a 6-byte MAC: is this an ESP32?"
            )
        return uid

    def file_hashes(self, paths: Iterable[str]) -> dict[str, str | None]:
        got = self.exec_json(_HASH_CODE % (list(paths),), timeout_s=30)
        return {str(k): v for k, v in got.items()}

    def makedirs(self, dirs: Iterable[str]) -> None:
        code = "import os\nfor d in %r:\n try:\n  os.mkdir(d)\n except OSError:\n  pass\n"
        self.exec(code % (sorted(set(dirs)),))

    def write_file(self, path: str, data: bytes) -> None:
        try:
            self._t.fs_writefile(path, data, chunk_size=512)
        except TransportExecError as exc:
            raise BoardCommandError(f"cannot write {path} on {self.port}: {exc}") from exc
        except (TransportError, OSError, serial.SerialException) as exc:
            raise BoardCommandError(f"cannot write {path} on {self.port}: {exc}") from exc

    def write_file_atomic(self, path: str, data: bytes) -> None:
        """Write a temporary file, check its hash, then `os.rename` it over `path`.

        littlefs (the ESP32 default) renames over an existing file in one step; a power cut
        leaves the old file or the new one.
        """
        import hashlib

        tmp = path + ".tmp"
        self.write_file(tmp, data)
        got = self.file_hashes([tmp])[tmp]
        if got != hashlib.sha256(data).hexdigest():
            self.exec(f"import os\ntry:\n os.remove({tmp!r})\nexcept OSError:\n pass\n")
            raise BoardCommandError(f"{tmp} on {self.port} does not read back what was written")
        # FAT (older images) refuses to rename over an existing file: remove it first there.
        try:
            self.exec(
                f"import os\ntry:\n os.rename({tmp!r}, {path!r})\nexcept OSError:\n"
                f" os.remove({path!r})\n os.rename({tmp!r}, {path!r})\n"
            )
        except BoardCommandError:
            self.remove(tmp)  # leave no stray temporary file behind
            raise

    def remove(self, path: str) -> None:
        self.exec(f"import os\ntry:\n os.remove({path!r})\nexcept OSError:\n pass\n")

    def read_file(self, path: str) -> bytes | None:
        try:
            return bytes(self._t.fs_readfile(path, chunk_size=512))
        except OSError:
            return None
        except TransportError as exc:
            raise BoardCommandError(f"cannot read {path} on {self.port}: {exc}") from exc
