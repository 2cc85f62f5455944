"""The dispatcher is SIGKILLed with notifications pending (one of them accepted by LINE but not
yet answered): after the restart each is delivered exactly once — no duplicate at fake LINE."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edge_gateway.notify.dispatcher import Dispatcher
from tests.notify.conftest import settings_of, water_alert
from tests.support.fake_services import FakeLine

REPO = Path(__file__).resolve().parents[2]


def _start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "cityedge"),
            "alerts",
            "deliver",
            "--config",
            str(config),
        ],
        cwd=REPO,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _wait(pred: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_sigkill_with_pending_notifications_delivers_each_exactly_once(
    alerts_config: Any, line: FakeLine, tmp_path: Path
) -> None:
    config = alerts_config(routes='[[routes]]\nchannels = ["line"]\n')
    recorder = Dispatcher(settings_of(config))
    t0 = time.time()
    n = 9
    for i in range(n):
        recorder.record([water_alert(f"ce-0000000001{i:02d}", "water_critical", "raised", t0, 2.0)])
    recorder.close()
    # LINE accepts each push at once but answers only after 0.5 s: the kill, as soon as the
    # test sees a push accepted, lands in that window.
    line.delay_s = 0.5
    log = tmp_path / "dispatcher.log"
    kills = 0
    for target in (2, 5):
        proc = _start(config, log)
        _wait(lambda target=target: len(line.delivered) >= target)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
    proc = _start(config, log)
    try:
        check = Dispatcher(settings_of(config))
        _wait(lambda: check.outbox.pending()[0] == 0, 60)
        check.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    keys = [m["retry_key"] for m in line.delivered]
    assert len(keys) == n and len(set(keys)) == n, line.delivered
    devices = sorted(
        m["text"].split("(bkk-canal-01)")[0].rsplit(" ", 2)[-2] for m in line.delivered
    )
    assert len(set(devices)) == n
    # The rows in flight at the kills were sent again with their retry key and refused (409).
    assert line.conflicts >= 1, log.read_text()
    assert kills == 2
