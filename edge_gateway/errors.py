"""The gateway's own errors: what a technician can act on, with a hint and an exit code.

The gateway imports nothing of host_tools: `cityedge`'s entry point (host_tools/cli.py) and the
service's (`python -m edge_gateway`, edge_gateway/__main__.py) both turn these into a message and
an exit code with `calibration.errors.user_error`, which reads `hint` and `exit_code`.
"""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_CONFIG = 2  # a config file cannot be used; the systemd unit's RestartPreventExitStatus


class GatewayError(Exception):
    """An error a technician can act on; `hint` says what to do."""

    def __init__(self, message: str, hint: str | None = None, exit_code: int = EXIT_FAILED):
        super().__init__(message)
        self.hint = hint
        self.exit_code = exit_code
