"""The aiohttp application behind the gateway's status page and ``cityedge fleet serve``.

Read-only pages and JSON; the only change (maintenance) is a POST that must carry the token
(form field ``token`` or ``Authorization: Bearer …``), compared in constant time. Pages send a
Content-Security-Policy that allows only the server's own script and style."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from edge_gateway.status import devicepage, render
from edge_gateway.status.render import esc, tr

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
STATES = ("online", "late", "offline", "never", "maintenance", "low_battery")


@web.middleware
async def _headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    resp = await handler(request)
    resp.headers["Content-Security-Policy"] = _CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers.setdefault("Cache-Control", "no-store")
    return resp


def _authorized(request: web.Request, token: str, form: Mapping[str, Any] | None) -> bool:
    given = ""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        given = auth[7:].strip()
    elif form is not None:
        given = str(form.get("token", ""))
    return bool(token) and hmac.compare_digest(given.encode(), token.encode())


def _lang(request: web.Request, default: str) -> str:
    lang = request.query.get("lang", default)
    return lang if lang in ("th", "en") else default


def _query(request: web.Request) -> dict[str, str]:
    keep = ("q", "state", "kind", "site", "sort", "desc", "lang")
    return {k: request.query.get(k, "")[:100] for k in keep if request.query.get(k)}


class App:
    """Routes over a *source*: a :class:`~edge_gateway.status.feed.StatusFeed` (one site) or
    a :class:`~edge_gateway.status.fleet.FleetModel` (every site)."""

    def __init__(self, source: Any, lang: str, refresh_s: float = 5.0) -> None:
        self.source = source
        self.lang = lang
        self.refresh_s = refresh_s
        self.fleet = hasattr(source, "sites")

    def build(self) -> web.Application:
        app = web.Application(middlewares=[_headers], client_max_size=16 * 1024)
        r = app.router
        r.add_get("/", self.index)
        r.add_get("/site/{site}", self.site_page)
        r.add_get("/device/{id}", self.device_page)
        r.add_get("/live", self.live)
        r.add_get("/api/summary", self.api_summary)
        r.add_get("/api/sites", self.api_sites)
        r.add_get("/api/devices", self.api_devices)
        r.add_get("/api/devices/{id}", self.api_device)
        r.add_post("/api/devices/{id}/maintenance", self.api_maintenance)
        r.add_post("/device/{id}/maintenance", self.form_maintenance)
        r.add_post("/device/{id}/ack", self.form_ack)
        r.add_post("/api/incidents/{no}/ack", self.api_ack)
        r.add_get("/healthz", self.healthz)
        r.add_get("/static/app.js", self.static_js)
        r.add_get("/static/style.css", self.static_css)
        return app

    # -- data ---------------------------------------------------------------------------------

    def _rows(self, q: Mapping[str, str]) -> list[dict[str, Any]]:
        rows = self.source.rows(time.time())
        rows = render.filter_rows(rows, q)
        return render.sort_rows(rows, q.get("sort", "state"), q.get("desc") == "1")

    def _summary(self, site: str = "") -> dict[str, Any]:
        rows = self.source.rows(time.time())
        if site:
            rows = [r for r in rows if r.get("site_id") == site]
        out: dict[str, Any] = render.counts(rows)
        out["t"] = time.time()
        if not self.fleet:
            out["site_id"] = self.source.config.site_id
        elif site:
            out["site_id"] = site
        return out

    # -- pages --------------------------------------------------------------------------------

    def _html(self, text: str, status: int = 200) -> web.Response:
        return web.Response(text=text, content_type="text/html", charset="utf-8", status=status)

    def _site_body(self, q: dict[str, str], lang: str, site: str) -> dict[str, str]:
        qq = dict(q)
        if site:
            qq["site"] = site
        rows = self._rows(qq)
        all_rows = render.filter_rows(self.source.rows(time.time()), {"site": site})
        base = f"/site/{site}" if self.fleet and site else "/"
        parts = {
            "counts": render.counts_html(render.counts(all_rows), lang, base, q),
            "table": render.table_html(rows, lang, base, q),
        }
        if self.fleet and site:
            gw = self.source.site_health(site)
            parts["gw"] = self._gw_line(gw, lang)
        return parts

    def _gw_line(self, gw: Mapping[str, Any] | None, lang: str) -> str:
        if gw is None:
            return f'<p class="count s-unknown">{tr("gateway", lang)}: {tr("unknown", lang)}</p>'
        state = str(gw.get("state"))
        label = tr("online", lang) if state == "online" else tr("down", lang)
        cls = "online" if state == "online" else "down"
        return (
            f'<p class="gwline s-{cls}" data-gateway-state="{esc(state)}">{tr("gateway", lang)}'
            f" {esc(gw.get('gateway_id'))}: <b>{label}</b> · {esc(render.when(gw.get('rx')))}"
            f"</p>"
        )

    async def index(self, request: web.Request) -> web.Response:
        lang = _lang(request, self.lang)
        if self.fleet:
            return self._html(self._sites_page(lang))
        q = _query(request)
        return self._html(self._site_page(q, lang, ""))

    def _site_page(self, q: dict[str, str], lang: str, site: str) -> str:
        parts = self._site_body(q, lang, site)
        title = f"{tr('title', lang)} · {site or self.source.config.site_id}"
        live = "/live?" + "&".join(
            f"{k}={esc(v)}" for k, v in (q | {"view": "site", "site": site}).items() if v
        )
        head = ""
        if self.fleet:
            head = (
                f'<p><a href="/?lang={lang}">← {tr("sites", lang)}</a></p>'
                f'<div id="gw">{parts.get("gw", "")}</div>'
            )
        body = (
            f'{head}<div id="counts">{parts["counts"]}</div>'
            f'{render.filter_form(q, lang, STATES)}<div id="table">{parts["table"]}</div>'
        )
        return render.page(title, body, lang, live, self.refresh_s)

    def _sites_html(self, lang: str) -> str:
        rows = []
        for s in self.source.sites(time.time()):
            c = s["counts"]
            gw = s.get("gateway") or {}
            state = "online" if gw.get("state") == "online" else "down"
            rows.append(
                f'<tr id="site-{esc(s["site_id"])}"><td><a href="/site/{esc(s["site_id"])}?lang='
                f'{lang}">{esc(s["site_id"])}</a></td><td class="state s-{state}" '
                f'data-state="{state}"><b>{tr(state, lang)}</b><div class="reason">'
                f"{esc(gw.get('gateway_id') or '')} {esc(render.when(gw.get('rx')))}</div></td>"
                + "".join(
                    f"<td>{c[k]}</td>"
                    for k in (
                        "devices",
                        "online",
                        "late",
                        "offline",
                        "never",
                        "unknown",
                        "low_battery",
                    )
                )
                + "</tr>"
            )
        head = "".join(
            f"<th>{tr(k, lang)}</th>"
            for k in (
                "site",
                "gateway",
                "devices",
                "online",
                "late",
                "offline",
                "never",
                "unknown",
                "low_battery",
            )
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"

    def _sites_page(self, lang: str) -> str:
        c = render.counts(self.source.rows(time.time()))
        body = (
            f'<div id="counts">{render.counts_html(c, lang, "/", {})}</div>'
            f'<div id="table">{self._sites_html(lang)}</div>'
        )
        return render.page(
            f"{tr('title', lang)} · {tr('sites', lang)}",
            body,
            lang,
            f"/live?view=sites&lang={lang}",
            self.refresh_s,
        )

    async def site_page(self, request: web.Request) -> web.Response:
        lang = _lang(request, self.lang)
        site = request.match_info["site"]
        if not self.fleet:
            if site != self.source.config.site_id:
                raise web.HTTPNotFound()
            site = ""
        return self._html(self._site_page(_query(request), lang, site))

    async def live(self, request: web.Request) -> web.Response:
        lang = _lang(request, self.lang)
        view = request.query.get("view", "site")
        if view == "sites" and self.fleet:
            c = render.counts(self.source.rows(time.time()))
            parts = {
                "counts": render.counts_html(c, lang, "/", {}),
                "table": self._sites_html(lang),
            }
        elif view == "device":
            dev = self._detail(request.query.get("id", ""), request.query.get("site", ""))
            if dev is None:
                raise web.HTTPNotFound()
            parts = {"facts": devicepage.facts_html(dev, lang)}
        else:
            q = _query(request)
            parts = self._site_body(
                {k: v for k, v in q.items() if k != "site"},
                lang,
                request.query.get("site", "") if self.fleet else "",
            )
        return web.json_response({"updated": render.when(time.time()), "parts": parts})

    def _detail(self, device_id: str, site: str = "") -> dict[str, Any] | None:
        if self.fleet:
            result: dict[str, Any] | None = self.source.detail(device_id, site or None)
            return result
        found: dict[str, Any] | None = self.source.detail(device_id)
        return found

    async def device_page(self, request: web.Request) -> web.Response:
        lang = _lang(request, self.lang)
        device_id = request.match_info["id"]
        site = request.query.get("site", "")
        d = self._detail(device_id, site)
        if d is None:
            return self._html(
                render.page(
                    tr("title", lang), f"<p>{esc(device_id)}: {tr('unknown', lang)}</p>", lang
                ),
                404,
            )
        back = f"/site/{esc(d.get('site_id'))}" if self.fleet else "/"
        events = "".join(
            f"<li>{esc(render.when(e.get('t')))} · {esc(e.get('type'))} · {esc(e.get('text'))}</li>"
            for e in reversed(d.get("events") or [])
        )
        maint = ""
        if hasattr(self.source, "start_maintenance"):
            on = d.get("maintenance") is not None
            maint = (
                f'<form class="maint" method="post" action="/device/{esc(device_id)}'
                f'/maintenance"><input type="hidden" name="action" value='
                f'"{"end" if on else "start"}">'
                + (
                    ""
                    if on
                    else f'<label>{tr("hours", lang)} <input name="hours" '
                    f'value="24" size="4"></label> <label>{tr("why", lang)} '
                    f'<input name="reason" maxlength="200"></label>'
                )
                + f' <label>{tr("token", lang)} <input type="password" name="token" '
                f'autocomplete="off"></label> <button>'
                f"{tr('maint_end' if on else 'maint_start', lang)}</button></form>"
            )
        alerts = devicepage.incidents_html(device_id, d, lang)
        title = f"{tr('device', lang)} {d.get('name') or device_id}"
        q = f"view=device&id={esc(device_id)}&lang={lang}" + (f"&site={esc(site)}" if site else "")
        body = (
            f'<p><a href="{back}?lang={lang}">← {tr("back", lang)}</a></p>'
            f'<div id="facts">{devicepage.facts_html(d, lang)}</div>{alerts}{maint}'
            f"{devicepage.plots_html(self.source, device_id, d, lang)}"
            f"<h3>{tr('events', lang)}</h3><ul>{events or tr('none', lang)}</ul>"
        )
        return self._html(render.page(title, body, lang, f"/live?{q}", self.refresh_s))

    async def _ack(self, number: Any, by: Any) -> tuple[int, str]:
        try:
            no = int(str(number))
        except ValueError:
            return 400, "incident must be a number"
        who = str(by or "").strip()[:100]
        if not who:
            return 400, "say who acknowledges (by)"
        if await asyncio.to_thread(self.source.ack_incident, no, who):
            return 200, ""
        return 404, f"incident {no} is not open here, or was acknowledged already"

    async def form_ack(self, request: web.Request) -> web.Response:
        form = await self._form_post(request, "ack_incident")
        if isinstance(form, web.Response):
            return form
        device_id = request.match_info["id"]
        number = form.get("incident", "")
        if not any(str(i["no"]) == str(number) for i in self.source.incidents(device_id)):
            return self._html(
                render.page("404", f"<p>{esc(number)}: {tr('unknown', self.lang)}</p>", self.lang),
                404,
            )
        status, err = await self._ack(number, form.get("by"))
        if status != 200:
            return self._html(render.page(str(status), f"<p>{esc(err)}</p>", self.lang), status)
        raise web.HTTPSeeOther(f"/device/{device_id}")

    async def api_ack(self, request: web.Request) -> web.Response:
        body = await self._json_post(request, "ack_incident")
        if isinstance(body, web.Response):
            return body
        status, err = await self._ack(request.match_info["no"], body.get("by"))
        if status != 200:
            return web.json_response({"error": err}, status=status)
        return web.json_response({"incident": int(request.match_info["no"]), "acked": True})

    # -- JSON API -----------------------------------------------------------------------------

    async def api_summary(self, request: web.Request) -> web.Response:
        return web.json_response(self._summary(request.query.get("site", "")))

    async def api_sites(self, request: web.Request) -> web.Response:
        if not self.fleet:
            return web.json_response(
                [
                    {
                        "site_id": self.source.config.site_id,
                        "counts": self._summary(),
                        "gateway": self.source.health(),
                    }
                ]
            )
        return web.json_response(self.source.sites(time.time()))

    async def api_devices(self, request: web.Request) -> web.Response:
        q = _query(request)
        state = q.get("state", "")
        if state and state not in (*STATES, "unknown"):
            return web.json_response(
                {"error": f"state must be one of {', '.join((*STATES, 'unknown'))}"}, status=400
            )
        return web.json_response(self._rows(q))

    async def api_device(self, request: web.Request) -> web.Response:
        d = self._detail(request.match_info["id"], request.query.get("site", ""))
        if d is None:
            return web.json_response({"error": "no such device"}, status=404)
        return web.json_response(d)

    async def healthz(self, request: web.Request) -> web.Response:
        h = self.source.health()
        ok = h.get("state") in ("online", "serving")
        return web.json_response(h, status=200 if ok else 503)

    async def _maintain(self, device_id: str, form: Mapping[str, Any]) -> str | None:
        action = str(form.get("action", "start"))
        if action == "end":
            self.source.end_maintenance(device_id)
            return None
        if action != "start":
            return "action must be start or end"
        hours: float | None
        raw = str(form.get("hours", "") or "")
        try:
            hours = float(raw) if raw else None
        except ValueError:
            return "hours must be a number"
        if hours is not None and not 0 < hours <= 24 * 90:
            return "hours must be between 0 and 2160"
        self.source.start_maintenance(device_id, hours, str(form.get("reason", ""))[:200])
        return None

    async def _json_post(self, request: web.Request, needs: str) -> dict[str, Any] | web.Response:
        """A changing API request's JSON object, or the answer refusing it (401 without the
        token, 400 if not a JSON object)."""
        if not hasattr(self.source, needs):
            raise web.HTTPMethodNotAllowed("POST", [])
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not _authorized(request, self.source.token, None):
            return web.json_response({"error": "token required"}, status=401)
        if not isinstance(body, dict):
            return web.json_response({"error": "send a JSON object"}, status=400)
        return body

    async def _form_post(self, request: web.Request, needs: str) -> Any:
        """A changing page form (a MultiDictProxy), or the 401 page without the token."""
        if not hasattr(self.source, needs):
            raise web.HTTPMethodNotAllowed("POST", [])
        form = await request.post()
        if not _authorized(request, self.source.token, form):
            return self._html(
                render.page("401", "<p>token required / ต้องใช้โทเคน</p>", self.lang), 401
            )
        return form

    def _known(self, device_id: str) -> bool:
        return device_id in self.source.devices or self.source.config.device(device_id) is not None

    async def api_maintenance(self, request: web.Request) -> web.Response:
        body = await self._json_post(request, "start_maintenance")
        if isinstance(body, web.Response):
            return body
        device_id = request.match_info["id"]
        if not self._known(device_id):
            return web.json_response({"error": "no such device"}, status=404)
        err = await self._maintain(device_id, body)
        if err:
            return web.json_response({"error": err}, status=400)
        return web.json_response(self._detail(device_id))

    async def form_maintenance(self, request: web.Request) -> web.Response:
        form = await self._form_post(request, "start_maintenance")
        if isinstance(form, web.Response):
            return form
        device_id = request.match_info["id"]
        if not self._known(device_id):
            raise web.HTTPNotFound()
        err = await self._maintain(device_id, form)
        if err:
            return self._html(render.page("400", f"<p>{esc(err)}</p>", self.lang), 400)
        raise web.HTTPSeeOther(f"/device/{device_id}")

    async def static_js(self, request: web.Request) -> web.Response:
        return web.Response(
            text=render.JS,
            content_type="application/javascript",
            headers={"Cache-Control": "max-age=3600"},
        )

    async def static_css(self, request: web.Request) -> web.Response:
        return web.Response(
            text=render.CSS, content_type="text/css", headers={"Cache-Control": "max-age=3600"}
        )


async def start_site(
    source: Any, host: str | None = None, port: int | None = None, lang: str | None = None
) -> tuple[web.AppRunner, int]:
    """Serve ``source`` in the running event loop; returns the runner and the bound port."""
    cfg = getattr(source, "config", None)
    status = getattr(cfg, "status", None)
    host = host if host is not None else status.host if status else "127.0.0.1"
    port = port if port is not None else status.port if status else 0
    lang = lang or (status.lang if status else "th")
    runner = web.AppRunner(App(source, lang).build(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = getattr(site, "_server", None)
    bound = port
    if server is not None and server.sockets:
        bound = int(server.sockets[0].getsockname()[1])
    return runner, bound
