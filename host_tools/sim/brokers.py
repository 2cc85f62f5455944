"""Start and stop MQTT brokers on loopback: a real Mosquitto, or an embedded amqtt broker.

Used by the demo, the benchmarks and the tests, so all three run the same brokers the same way.
Every Mosquitto config we write sets `max_queued_messages` deliberately: Mosquitto's default of
1000 silently drops QoS 1 messages for a slow subscriber (platform-notes.md).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

MAX_QUEUED_MESSAGES = 1_000_000
# Larger PUBLISHes are refused by the broker itself, before any client holds them in memory. The
# test brokers allow 64 KiB so the gateway's own bound (store.max_payload_bytes, 16 KiB) is
# exercised; a site broker uses the gateway's bound (host_tools.field.broker_auth.site_broker_config).
MESSAGE_SIZE_LIMIT = 65536


class BrokerError(RuntimeError):
    """A broker could not be started; the message says what to do."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


def mosquitto_path() -> str | None:
    """The mosquitto executable, also where Debian puts it outside a user's PATH."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass
class MosquittoBroker:
    """A real Mosquitto on 127.0.0.1. `stop()` and `start()` again keep the same port."""

    name: str = "broker"
    port: int = 0
    password_file: Path | None = None
    acl_file: Path | None = None
    persistence: bool = False
    max_queued_messages: int = MAX_QUEUED_MESSAGES
    message_size_limit: int = MESSAGE_SIZE_LIMIT
    tls_listener: dict[str, str] | None = (
        None  # {"port": "...", "cafile": ..., "certfile": ..., "keyfile": ...}
    )
    workdir: Path | None = None
    extra_config: list[str] = field(default_factory=list)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _own_dir: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.port:
            self.port = free_port()
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"cityedge-{self.name}-"))
            self._own_dir = True
        self.workdir.mkdir(parents=True, exist_ok=True)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "mosquitto.log"

    def config_text(self) -> str:
        assert self.workdir is not None
        lines = [
            f"# CityEdge {self.name} broker (generated)",
            "per_listener_settings false",
            f"max_queued_messages {self.max_queued_messages}",
            "max_queued_bytes 0",
            "max_inflight_messages 100",
            f"message_size_limit {self.message_size_limit}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages true",
            f"listener {self.port} 127.0.0.1",
        ]
        if os.geteuid() == 0 and not any(x.split()[:1] == ["user"] for x in self.extra_config):
            # Started as root, Mosquitto drops to the `mosquitto` user and then cannot write its
            # log or persistence file, or read certificates, in a 0700 temporary directory.
            lines.append("user root")
        if self.password_file is not None:
            lines += ["allow_anonymous false", f"password_file {self.password_file}"]
        else:
            lines.append("allow_anonymous true")
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        if self.tls_listener:
            t = self.tls_listener
            lines += [
                f"listener {t['port']} 127.0.0.1",
                f"cafile {t['cafile']}",
                f"certfile {t['certfile']}",
                f"keyfile {t['keyfile']}",
            ]
            if t.get("require_certificate"):
                lines += ["require_certificate true", "use_identity_as_username false"]
        lines += self.extra_config
        return "\n".join(lines) + "\n"

    def start(self, timeout_s: float = 10.0) -> Self:
        exe = mosquitto_path()
        if exe is None:
            raise BrokerError(
                "Mosquitto is not installed. Install it with 'sudo apt-get install mosquitto' "
                "(the test command does this for you), or run the demo with --embedded-broker."
            )
        if self._proc is not None and self._proc.poll() is None:
            return self
        assert self.workdir is not None
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        self._proc = subprocess.Popen(
            [exe, "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        if not wait_for_port(self.host, self.port, timeout_s):
            err = b""
            if self._proc.poll() is not None and self._proc.stderr is not None:
                err = self._proc.stderr.read()
            self.stop()
            log = (
                self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
            )
            raise BrokerError(
                f"Mosquitto ({self.name}) did not start on port {self.port}: "
                f"{err.decode(errors='replace').strip()} {log.strip()}"
            )
        return self

    def stop(self, kill: bool = False) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def close(self) -> None:
        self.stop()
        if self._own_dir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class EmbeddedBroker:
    """An amqtt broker inside this asyncio program: the demo's fallback where Mosquitto is not
    installed. Anonymous, loopback only, no persistence — for demonstration, not for a site."""

    def __init__(self, name: str = "broker", port: int = 0) -> None:
        self.name = name
        self.port = port or free_port()
        self._broker: object | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> EmbeddedBroker:
        try:
            from amqtt.broker import Broker
        except ModuleNotFoundError as exc:
            raise BrokerError(
                "neither Mosquitto nor the embedded broker (amqtt) is available: "
                "install Mosquitto ('sudo apt-get install mosquitto') or run ./run demo, "
                "which installs amqtt into the project's venv"
            ) from exc
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        broker = Broker(config)
        await broker.start()
        self._broker = broker
        return self

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.shutdown()  # type: ignore[attr-defined]
