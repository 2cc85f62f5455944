"""The read API on the sink's database (aiohttp), for integrators and dashboards.

Run it with a reader login (``cityedge platform api --db postgresql://reader@…``); it only
SELECTs. Routes (docs/integrators.md has curl examples):

- ``/api/v1/latest`` and ``/api/v1/devices/{id}/latest``: the newest reading per device, as the
  contract's observation or (``?format=senml|ngsi-ld|sensorthings``) in a standard encoding;
- ``/api/v1/devices/{id}/series``: one quantity over time with the water data-exchange
  standard's parameters ``interval``, ``latest``, ``startDatetime``, ``endDatetime``;
- ``/air4thai/stations``: the city's air nodes in the shape of the PCD's Air4Thai JSON, with the
  Thai AQI of the 24-hour mean PM2.5;
- ``/water/StationInfo`` and ``/water/WaterLevel``: water-level stations and series in the
  shape of the national water data-exchange standard's read API;
- ``/sta/v1.1/Things``, ``…/Things('{id}')/Datastreams``, ``…/Datastreams('{id}')/Observations``:
  OGC SensorThings-shaped reads.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from city_platform import INSTALL_HINT, PlatformError, formats

if TYPE_CHECKING:
    import psycopg
    from aiohttp import web

BANGKOK = ZoneInfo("Asia/Bangkok")
INTERVALS = {"raw": None, "15m": "15 minutes", "1h": "1 hour", "1d": "1 day"}
INTERVAL_ALIASES = {"hourly": "1h", "daily": "1d", "15min": "15m"}
MAX_ROWS = 10_000
_STA_ID = re.compile(r"^\('([^']+)'\)$")


class BadRequest(ValueError):
    """A query parameter the API cannot use; the message says what it accepts."""


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _time_param(query: Any, name: str) -> datetime | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        # An unencoded "+07:00" in a query string arrives as " 07:00".
        when = datetime.fromisoformat(text.replace(" ", "+"))
    except ValueError:
        raise BadRequest(
            f"{name}={text!r} is not ISO 8601 (e.g. 2026-11-22T10:00:00+07:00)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=BANGKOK)


def _series_params(query: Any) -> tuple[str, bool, datetime | None, datetime | None]:
    interval = INTERVAL_ALIASES.get(query.get("interval", "raw"), query.get("interval", "raw"))
    if interval not in INTERVALS:
        raise BadRequest(f"interval must be one of {', '.join(INTERVALS)}")
    latest_text = query.get("latest", "false").lower()
    if latest_text not in ("true", "false"):
        raise BadRequest("latest must be true or false")
    latest = latest_text == "true"
    start, end = _time_param(query, "startDatetime"), _time_param(query, "endDatetime")
    if not latest and (start is None or end is None):
        raise BadRequest("give startDatetime and endDatetime, or latest=true")
    if start and end and end < start:
        raise BadRequest("endDatetime is before startDatetime")
    return interval, latest, start, end


class Pool:
    """A few async connections, handed out one request at a time."""

    def __init__(self, url: str, size: int = 4) -> None:
        self.url = url
        self.size = size
        self._free: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()

    async def open(self) -> None:
        import psycopg

        for _ in range(self.size):
            try:
                conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            except psycopg.OperationalError as exc:
                raise PlatformError(
                    f"cannot connect to PostgreSQL: {str(exc).strip()}",
                    "check --db and that PostgreSQL is running",
                ) from exc
            await self._free.put(conn)

    async def close(self) -> None:
        while not self._free.empty():
            await (await self._free.get()).close()

    @asynccontextmanager
    async def conn(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        c = await self._free.get()
        try:
            if c.closed:
                import psycopg

                c = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
            yield c
        finally:
            await self._free.put(c)

    async def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        async with self.conn() as c:
            cur = await c.execute(sql, params)
            return list(await cur.fetchall())


# --- latest and series ------------------------------------------------------------------------


def _encode(obs: dict[str, Any], fmt: str) -> Any:
    if fmt == "senml":
        return formats.senml_pack(obs)
    if fmt == "ngsi-ld":
        return formats.ngsi_ld_entity(obs)
    if fmt == "sensorthings":
        return formats.sensorthings_observations(obs)
    if fmt == "cityedge":
        return obs
    raise BadRequest("format must be cityedge, senml, ngsi-ld or sensorthings")


async def latest(pool: Pool, query: Any) -> Any:
    where, params = [], []
    for key, column in (("kind", "kind"), ("site", "site_id")):
        if key in query:
            where.append(f"{column} = %s")
            params.append(query[key])
    sql = "SELECT observation FROM cityedge.device_latest"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = await pool.rows(sql + " ORDER BY device_id", tuple(params))
    fmt = query.get("format", "cityedge")
    return {"devices": [_encode(r[0], fmt) for r in rows]}


async def device_latest(pool: Pool, device_id: str, query: Any) -> Any:
    rows = await pool.rows(
        "SELECT observation FROM cityedge.device_latest WHERE device_id = %s", (device_id,)
    )
    if not rows:
        return None
    return _encode(rows[0][0], query.get("format", "cityedge"))


async def series(pool: Pool, device_id: str, quantity: str, query: Any) -> dict[str, Any]:
    """One calibrated quantity of one device: raw readings, or means per interval (readings
    whose QC flag is FAIL or MISSING left out of means)."""
    interval, want_latest, start, end = _series_params(query)
    value = "(calibrated->%s->>'v')::float8"
    if want_latest:
        rows = await pool.rows(
            f"""SELECT t, {value}, calibrated->%s->>'calibration_id', (quality->>%s)::int,
                  calibrated->%s->>'u', boot, seq
                FROM cityedge.observation WHERE device_id = %s AND calibrated ? %s
                ORDER BY t DESC LIMIT 1""",
            (quantity, quantity, quantity, quantity, device_id, quantity),
        )
        data = [_raw_point(r) for r in rows]
    elif INTERVALS[interval] is None:
        rows = await pool.rows(
            f"""SELECT t, {value}, calibrated->%s->>'calibration_id', (quality->>%s)::int,
                  calibrated->%s->>'u', boot, seq
                FROM cityedge.observation
                WHERE device_id = %s AND calibrated ? %s AND t >= %s AND t <= %s
                ORDER BY t LIMIT {MAX_ROWS}""",
            (quantity, quantity, quantity, quantity, device_id, quantity, start, end),
        )
        data = [_raw_point(r) for r in rows]
    else:
        rows = await pool.rows(
            f"""SELECT date_bin(%s::interval, t, '2000-01-01T00:00:00Z'::timestamptz) AS b,
                  avg({value}), count(*), min(calibrated->%s->>'u')
                FROM cityedge.observation
                WHERE device_id = %s AND calibrated ? %s AND t >= %s AND t <= %s
                  AND coalesce((quality->>%s)::int, 2) NOT IN (4, 9)
                GROUP BY b ORDER BY b LIMIT {MAX_ROWS}""",
            (INTERVALS[interval], quantity, quantity, device_id, quantity, start, end, quantity),
        )
        data = [
            {
                "datetime": _iso(r[0]),
                "value": None if r[1] is None else round(r[1], 4),
                "count": r[2],
                "unit": r[3],
            }
            for r in rows
        ]
    return {
        "device_id": device_id,
        "quantity": quantity,
        "interval": interval,
        "latest": want_latest,
        "data": data,
    }


def _raw_point(r: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "datetime": _iso(r[0]),
        "value": r[1],
        "calibration_id": r[2],
        "qc": r[3],
        "unit": r[4],
        "boot": r[5],
        "seq": r[6],
    }


# --- Air4Thai-shaped stations ----------------------------------------------------------------


async def air4thai_stations(pool: Pool) -> dict[str, Any]:
    """Every air node as an Air4Thai station: ``AQILast.PM25.{value, aqi, color_id}`` from the
    24-hour mean of calibrated PM2.5 (readings flagged FAIL/MISSING left out) ending at the
    node's newest reading; values as strings, as Air4Thai gives them."""
    from calibration.aqi import thai_aqi_detail

    rows = await pool.rows(
        """SELECT d.device_id, d.site_id, d.t, d.observation->'location',
             (SELECT avg((o.calibrated->'pm25'->>'v')::float8) FROM cityedge.observation o
               WHERE o.device_id = d.device_id AND o.t > d.t - interval '24 hours'
                 AND o.t <= d.t AND o.calibrated->'pm25'->>'v' IS NOT NULL
                 AND coalesce((o.quality->>'pm25')::int, 2) NOT IN (4, 9)),
             (SELECT count(*) FROM cityedge.observation o
               WHERE o.device_id = d.device_id AND o.t > d.t - interval '24 hours'
                 AND o.t <= d.t)
           FROM cityedge.device_latest d WHERE d.kind = 'air' ORDER BY d.device_id"""
    )
    stations = []
    for device_id, site_id, t, loc, mean, count in rows:
        local = t.astimezone(BANGKOK)
        pm25: dict[str, str] = {"value": "-", "aqi": "-1", "color_id": "0"}
        if mean is not None:
            result = thai_aqi_detail("pm25", float(mean))
            pm25 = {
                "value": f"{result.concentration:.1f}",
                "aqi": str(result.aqi),
                "color_id": str(result.band.level),
            }
        name = (loc or {}).get("name", device_id)
        stations.append(
            {
                "stationID": device_id,
                "nameTH": name,
                "nameEN": name,
                "areaTH": site_id,
                "areaEN": site_id,
                "stationType": "CityEdge",
                "lat": str((loc or {}).get("lat", "")),
                "long": str((loc or {}).get("lon", "")),
                "AQILast": {
                    "date": local.strftime("%Y-%m-%d"),
                    "time": local.strftime("%H:%M"),
                    "PM25": pm25,
                    "AQI": {"aqi": pm25["aqi"], "color_id": pm25["color_id"], "param": "PM25"},
                },
                "readings_24h": count,
            }
        )
    return {"stations": stations}


# --- water data-exchange shaped reads --------------------------------------------------------


async def water_stations(pool: Pool) -> dict[str, Any]:
    rows = await pool.rows(
        """SELECT device_id, site_id, observation->'location',
             observation->'calibrated'->'level'->>'datum',
             observation->'derived'->'level_state'
           FROM cityedge.device_latest WHERE kind = 'water' ORDER BY device_id"""
    )
    data = []
    for device_id, site_id, loc, datum, state in rows:
        loc, state = loc or {}, state or {}
        data.append(
            {
                "station_id": device_id,
                "station_name": loc.get("name", device_id),
                "site_id": site_id,
                "lat": loc.get("lat"),
                "long": loc.get("lon"),
                "datum": datum or "staff gauge zero",
                "warning_level": state.get("warning_m"),
                "critical_level": state.get("critical_m"),
            }
        )
    return {"result": "OK", "data": data}


async def water_level(pool: Pool, query: Any) -> dict[str, Any]:
    station = query.get("station_id")
    if not station:
        raise BadRequest("give station_id (see /water/StationInfo)")
    s = await series(pool, station, "level", query)
    data = [
        {
            "station_id": station,
            "datetime": p["datetime"],
            "water_level": p["value"],
            "unit": p.get("unit") or "m",
            **(
                {"qc": p["qc"], "calibration_id": p["calibration_id"]}
                if "qc" in p
                else {"count": p["count"]}
            ),
        }
        for p in s["data"]
    ]
    return {"result": "OK", "interval": s["interval"], "latest": s["latest"], "data": data}


# --- SensorThings-shaped reads ---------------------------------------------------------------


async def sta_things(pool: Pool) -> dict[str, Any]:
    rows = await pool.rows(
        "SELECT device_id, site_id, kind, observation->'location' FROM cityedge.device_latest "
        "ORDER BY device_id"
    )
    return {
        "value": [
            {
                "@iot.id": d,
                "name": d,
                "description": f"CityEdge {k} node at {s}",
                "properties": {"site_id": s, "kind": k},
                "Locations": [
                    {
                        "encodingType": "application/geo+json",
                        "location": {
                            "type": "Point",
                            "coordinates": [(loc or {}).get("lon"), (loc or {}).get("lat")],
                        },
                    }
                ],
            }
            for d, s, k, loc in rows
        ]
    }


async def sta_datastreams(pool: Pool, device_id: str) -> dict[str, Any] | None:
    rows = await pool.rows(
        "SELECT observation FROM cityedge.device_latest WHERE device_id = %s", (device_id,)
    )
    if not rows:
        return None
    obs = rows[0][0]
    out = []
    for q, c in obs.get("calibrated", {}).items():
        out.append(
            {
                "@iot.id": formats.datastream_id(device_id, q),
                "name": f"{q} calibrated",
                "unitOfMeasurement": {"name": c["u"], "symbol": c["u"]},
            }
        )
    for ch, r in obs.get("raw", {}).items():
        out.append(
            {
                "@iot.id": formats.datastream_id(device_id, f"raw:{ch}"),
                "name": f"{ch} raw",
                "unitOfMeasurement": {"name": r["u"], "symbol": r["u"]},
            }
        )
    return {"value": out}


async def sta_observations(pool: Pool, datastream: str, query: Any) -> dict[str, Any]:
    device_id, _, name = datastream.partition(":")
    if not name:
        raise BadRequest("a Datastream id is DEVICE:QUANTITY or DEVICE:raw:CHANNEL")
    try:
        top = min(int(query.get("$top", "100")), MAX_ROWS)
    except ValueError:
        raise BadRequest("$top must be a whole number") from None
    rows = await pool.rows(
        """SELECT device_id, boot, seq, kind, site_id, extract(epoch FROM t)::float8,
             received_time, raw, calibrated, quality, quality_tests
           FROM cityedge.observation WHERE device_id = %s ORDER BY t DESC LIMIT %s""",
        (device_id, top),
    )
    out = []
    for r in rows:
        obs = {
            "device_id": r[0],
            "boot": r[1],
            "seq": r[2],
            "kind": r[3],
            "site_id": r[4],
            "t": r[5],
            "received_time": _iso(r[6]),
            "raw": r[7],
            "calibrated": r[8],
            "quality": r[9],
            "quality_tests": r[10],
        }
        out += [
            o
            for o in formats.sensorthings_observations(obs)
            if o["Datastream"]["@iot.id"] == datastream
        ]
    return {"value": out}


# --- the web application ---------------------------------------------------------------------


def make_app(db_url: str) -> web.Application:
    try:
        from aiohttp import web
    except ModuleNotFoundError:
        raise PlatformError("aiohttp is not installed", INSTALL_HINT) from None

    pool = Pool(db_url)
    routes = web.RouteTableDef()
    _api_routes(routes, pool)
    _compat_routes(routes, pool)
    app = web.Application()
    app.add_routes(routes)

    async def on_startup(_app: web.Application) -> None:
        await pool.open()

    async def on_cleanup(_app: web.Application) -> None:
        await pool.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def _handler(
    fn: Callable[[web.Request], Awaitable[Any]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """JSON out; bad requests 400, bad formats 422, nothing found 404."""
    from aiohttp import web

    async def run(request: web.Request) -> web.Response:
        try:
            body = await fn(request)
        except BadRequest as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except formats.FormatError as exc:
            return web.json_response({"error": str(exc)}, status=422)
        if body is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response(body, dumps=lambda x: json.dumps(x, ensure_ascii=False))

    return run


def _api_routes(routes: web.RouteTableDef, pool: Pool) -> None:
    """CityEdge's own JSON API."""
    handler = _handler

    @routes.get("/api/v1/latest")
    @handler
    async def _latest(request: web.Request) -> Any:
        return await latest(pool, request.query)

    @routes.get("/api/v1/devices/{device_id}/latest")
    @handler
    async def _device_latest(request: web.Request) -> Any:
        return await device_latest(pool, request.match_info["device_id"], request.query)

    @routes.get("/api/v1/devices/{device_id}/series")
    @handler
    async def _series(request: web.Request) -> Any:
        quantity = request.query.get("quantity")
        if not quantity:
            raise BadRequest("give quantity (pm25, pm10, temp, rh, level, occupied)")
        return await series(pool, request.match_info["device_id"], quantity, request.query)


def _compat_routes(routes: web.RouteTableDef, pool: Pool) -> None:
    """The Air4Thai-, Thaiwater- and SensorThings-shaped read APIs."""
    handler = _handler

    @routes.get("/air4thai/stations")
    @handler
    async def _air4thai(request: web.Request) -> Any:
        return await air4thai_stations(pool)

    @routes.get("/water/StationInfo")
    @handler
    async def _stations(request: web.Request) -> Any:
        return await water_stations(pool)

    @routes.get("/water/WaterLevel")
    @handler
    async def _water_level(request: web.Request) -> Any:
        return await water_level(pool, request.query)

    @routes.get("/sta/v1.1/Things")
    @handler
    async def _things(request: web.Request) -> Any:
        return await sta_things(pool)

    @routes.get(r"/sta/v1.1/Things{key:\(.*\)}/Datastreams")
    @handler
    async def _datastreams(request: web.Request) -> Any:
        m = _STA_ID.match(request.match_info["key"])
        if not m:
            raise BadRequest("use Things('DEVICE_ID')/Datastreams")
        return await sta_datastreams(pool, m.group(1))

    @routes.get(r"/sta/v1.1/Datastreams{key:\(.*\)}/Observations")
    @handler
    async def _observations(request: web.Request) -> Any:
        m = _STA_ID.match(request.match_info["key"])
        if not m:
            raise BadRequest("use Datastreams('DEVICE:QUANTITY')/Observations")
        return await sta_observations(pool, m.group(1), request.query)


def serve(db_url: str, host: str = "127.0.0.1", port: int = 8090) -> int:
    from aiohttp import web

    web.run_app(make_app(db_url), host=host, port=port, print=None)
    return 0


__all__ = ["make_app", "serve"]
