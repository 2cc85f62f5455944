"""CityEdge's reference city-platform side: a PostgreSQL sink that scales out with MQTT shared
subscriptions, the integrators' formats (SenML, FIWARE NGSI-LD, SensorThings) and a read API.

Optional: install with ``pip install 'cityedge[platform]'``. Nothing here is imported by the
gateway or by ``cityedge --help``; the modules that need psycopg, alembic or aiohttp import them
inside the functions that use them.
"""

from __future__ import annotations

SCHEMA = "cityedge"
WRITER_ROLE = "cityedge_writer"
READER_ROLE = "cityedge_reader"
PARTITIONED_TABLES = ("observation", "device_status", "gateway_health", "alert")
# A consumer exits with this when its configuration or the schema is wrong: its supervisor
# stops instead of restarting it (EX_CONFIG of sysexits.h).
EXIT_CONFIG = 78
INSTALL_HINT = "install the platform extra: pip install 'cityedge[platform]'"


class PlatformError(RuntimeError):
    """A platform-side failure a user can act on; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint
