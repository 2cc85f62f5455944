"""One metrics table (edge_gateway/metrics.py) drives stats(), /metrics and the health message;
the exposition passes `promtool check metrics`; the trouble counters survive a restart; the
shipped alert rules and Grafana dashboard are valid and use only metrics the gateway exports."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from edge_gateway import contract, metrics, prometheus
from edge_gateway.app import Gateway
from edge_gateway.config import GatewayConfig
from edge_gateway.ingest import REASON_CODES
from edge_gateway.store import DROP_REASONS, read_stats
from host_tools.sim.brokers import MosquittoBroker
from tests.gateway.helpers import gateway_config, run_async, wait_ready
from tests.support.tools import REPO

MONITORING = REPO / "edge_gateway" / "monitoring"
RULES = MONITORING / "cityedge-gateway.rules.yml"
DASHBOARD = MONITORING / "cityedge-gateway.dashboard.json"
UNITS = ("_seconds", "_bytes", "_total", "_info")


def promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool not installed (Debian: prometheus)")
    return exe


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_the_table_drives_stats_metrics_and_health(tmp_path: Path) -> None:
    gw = Gateway(
        GatewayConfig.from_dict(
            {"gateway_id": "gw-test-01", "site_id": "site-01", "data_dir": str(tmp_path)}
        )
    )
    stats = gw.stats()
    text = prometheus.render(stats)
    names = {n.split("{")[0] for n in samples(text)}
    health = json.loads(gw.health("online"))
    contract.validate("gateway_health", health)
    for m in metrics.METRICS:
        assert m.key in stats, m.key
        assert metrics.PREFIX + m.name in names, m.name
        if m.health:
            assert m.key in health, m.key
        # the conventions: counters end in _total, a unit comes last, no NaN
        assert (m.kind == "counter") == m.name.endswith("_total"), m.name
        assert not re.search(r"_(seconds|bytes)_(?!total$)", m.name), m.name
    assert "NaN" not in text and stats["oldest_age_s"] is None
    assert samples(text)["cityedge_gateway_queue_oldest_age_seconds"] == 0
    # every known reason exists from the start, at 0: increase() sees the first event
    values = samples(text)
    for reason in DROP_REASONS:
        assert values[f'cityedge_gateway_dropped_total{{reason="{reason}"}}'] == 0
    for reason in (*REASON_CODES, "processing"):
        assert values[f'cityedge_gateway_dead_letters_total{{reason="{reason}"}}'] == 0
    assert stats["dropped"] == dict.fromkeys(DROP_REASONS, 0) and stats["dropped_total"] == 0
    for key in (
        "store_errors",
        "processing_errors",
        "upstream_sessions_lost",
        "calibration_errors",
    ):
        assert values[f"cityedge_gateway_{key}_total"] == 0 and health[key] == 0
    build = [n for n in values if n.startswith("cityedge_build_info{")]
    assert len(build) == 1 and 'version="' in build[0] and values[build[0]] == 1
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_open_fds",
        "process_max_fds",
    ):
        assert values[name] > 0, name


def test_exposition_passes_promtool_check_metrics(tmp_path: Path) -> None:
    exe = promtool()
    stats = metrics.collect(
        {"dead_letter_schema": 2, "store_errors": 1},
        {"dropped_max_bytes": 3, "readings_stored": 10},
        {"queue_depth": 4, "oldest_age_s": 12.5, "upstream_connected": True},
    )
    text = prometheus.render(stats)
    out = subprocess.run(
        [exe, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr
    values = samples(text)
    assert values['cityedge_gateway_dead_letters_total{reason="schema"}'] == 2
    assert values["cityedge_gateway_store_errors_total"] == 1
    assert values["cityedge_gateway_queue_oldest_age_seconds"] == 12.5


def _metrics_only(local: MosquittoBroker, tmp_path: Path) -> GatewayConfig:
    """A gateway on the site broker with its metrics endpoint, without forwarding."""
    cfg = gateway_config(
        local, local, tmp_path, upstream={"enabled": False}, metrics={"enabled": True, "port": 0}
    )
    return GatewayConfig.from_dict(cfg)


@pytest.mark.broker
@run_async
async def test_trouble_counters_are_kept_in_the_store_across_a_restart(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path
) -> None:
    local = broker_factory("local")
    config = _metrics_only(local, tmp_path)

    async def scrape(gw: Gateway) -> dict[str, float]:
        url = f"http://127.0.0.1:{gw.metrics_port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
        return samples(body.decode())

    gw = Gateway(config)
    task = asyncio.create_task(gw.run())
    try:
        await wait_ready(gw, upstream=False)
        async with aiomqtt.Client(local.host, local.port, identifier="bad-node") as client:
            for _ in range(3):
                await client.publish(
                    contract.node_topic("ce-00000000dead", "reading"), b"{oops", qos=1
                )
        async with asyncio.timeout(10):
            while gw.stats()["dead_letters"] < 3:
                await asyncio.sleep(0.05)
        gw.counters["store_errors"] += 2  # as the committer counts a failed group commit
        gw.counters["upstream_sessions_lost"] += 1
        before = await scrape(gw)
        assert before['cityedge_gateway_dead_letters_total{reason="not_json"}'] == 3
    finally:
        gw.request_stop()
        await task
    stored = read_stats(config.store_path)["counters"]  # what `cityedge gateway stats` shows
    assert stored["dead_letter_not_json"] == 3 and stored["store_errors"] == 2
    assert stored["upstream_sessions_lost"] == 1

    gw = Gateway(config)
    task = asyncio.create_task(gw.run())
    try:
        await wait_ready(gw, upstream=False)
        after = await scrape(gw)
        s = gw.stats()
        health = json.loads(gw.health("online"))
    finally:
        gw.request_stop()
        await task
    assert after['cityedge_gateway_dead_letters_total{reason="not_json"}'] == 3
    assert after["cityedge_gateway_store_errors_total"] == 2
    assert after["cityedge_gateway_upstream_sessions_lost_total"] == 1
    assert s["dead_letters"] == 3 and health["store_errors"] == 2
    assert health["upstream_sessions_lost"] == 1 and health["dead_letters"] == 3


def test_alert_rules_pass_promtool(tmp_path: Path) -> None:
    exe = promtool()
    out = subprocess.run(
        [exe, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 8 rules found" in out.stdout
    _only_exported_metrics(RULES.read_text())


def _exported_names() -> set[str]:
    text = prometheus.render(metrics.collect({}, {}, {}))
    return {n.split("{")[0] for n in samples(text)}


def _only_exported_metrics(text: str) -> None:
    used = set(re.findall(r"\b((?:cityedge|process)_[a-z_]+)", text))
    unknown = used - _exported_names()
    assert not unknown, f"not exported by the gateway: {sorted(unknown)}"


def test_grafana_dashboard_is_valid(tmp_path: Path) -> None:
    exe = promtool()
    dash: dict[str, Any] = json.loads(DASHBOARD.read_text())
    for key in ("uid", "title", "schemaVersion", "panels", "templating", "time"):
        assert key in dash, key
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "instance"} <= variables
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    exprs = []
    for p in dash["panels"]:
        assert p["type"] in ("timeseries", "stat", "table", "gauge"), p["type"]
        assert p["title"] and p["datasource"]["uid"] == "${datasource}"
        grid = p["gridPos"]
        assert (
            all(isinstance(grid[k], int) for k in ("h", "w", "x", "y"))
            and grid["x"] + grid["w"] <= 24
        )
        refs = [t["refId"] for t in p["targets"]]
        assert p["targets"] and len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            for var in re.findall(r"\$(\w+)", t["expr"]):
                assert var in variables or var == "__rate_interval", var
            exprs.append(t["expr"])
    _only_exported_metrics("\n".join(exprs))
    # Every expression is valid PromQL: promtool parses them as recording rules, with
    # Grafana's variables replaced by what they expand to.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {
                        "record": f"dashboard:panel_{i}",
                        "expr": e.replace("$__rate_interval", "5m").replace("$instance", ".*"),
                    }
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-exprs.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    out = subprocess.run(
        [exe, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_docs_list_every_metric() -> None:
    doc = (REPO / "docs" / "gateway.md").read_text()
    assert metrics.docs_table() in doc, (
        "docs/gateway.md's metrics table is not the one METRICS makes: paste "
        "edge_gateway.metrics.docs_table() over it"
    )


def _counters() -> list[tuple[metrics.Metric, str]]:
    """Every counter of the table with the name it is counted under (one per reason)."""
    out = []
    for m in metrics.METRICS:
        if m.source != "given":
            names = [m.counter_prefix + r for r in m.reasons] if m.reasons else [m.key]
            out += [(m, name) for name in names]
    return out


@pytest.mark.broker
@run_async
async def test_every_counter_reaches_stats_metrics_and_health_and_trouble_survives_restarts(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path
) -> None:
    local = broker_factory("local")
    config = _metrics_only(local, tmp_path)
    counters = _counters()
    want = {name: 10 + i for i, (_m, name) in enumerate(counters)}
    kept = {name for m, name in counters if m.source in ("store", "saved")}
    assert {m.key for m in metrics.METRICS if m.source in ("store", "saved")} >= set(
        metrics.TROUBLE
    ), "a counter of trouble that is not kept in the store"

    def check(stats: dict[str, Any], scraped: dict[str, float], health: dict[str, Any]) -> None:
        for m, name in counters:
            value = want[name] if m.source != "process" or not restarted else 0
            got = stats[m.key][name.removeprefix(m.counter_prefix)] if m.reasons else stats[m.key]
            assert got == value, (name, got, value)
            label = f'{{reason="{name.removeprefix(m.counter_prefix)}"}}' if m.reasons else ""
            assert scraped[metrics.PREFIX + m.name + label] == value, name
            if m.health and not m.reasons:
                assert health[m.key] == value, name
            elif m.health:
                assert health[m.key][name.removeprefix(m.counter_prefix)] == value, name

    async def run(first: bool) -> None:
        gw = Gateway(config)
        task = asyncio.create_task(gw.run())
        try:
            await wait_ready(gw, upstream=False)
            store = gw.store
            assert store is not None
            if first:
                for m, name in counters:
                    if m.source == "store":
                        await store.call(store.add_counters, {name: want[name]})
                    else:
                        gw.counters[name] += want[name]
            url = f"http://127.0.0.1:{gw.metrics_port}/metrics"
            body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
            check(gw.stats(), samples(body.decode()), json.loads(gw.health("online")))
        finally:
            gw.request_stop()
            await task

    restarted = False
    await run(first=True)
    stored = read_stats(config.store_path)["counters"]  # what `cityedge gateway stats` shows
    assert {name: stored.get(name) for name in kept} == {name: want[name] for name in kept}
    restarted = True
    await run(first=False)
