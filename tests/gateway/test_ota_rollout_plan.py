"""Rollout plans and halting (edge_gateway/ota/rollout.py), and `cityedge ota publish/status`
against a gateway config (docs/ota.md)."""

from __future__ import annotations

import pytest

from edge_gateway.ota import rollout as ro


def test_waves_are_cumulative_canary_quarter_all() -> None:
    waves = ro.parse_waves("1,25%,100%")
    assert ro.wave_sizes(waves, 3) == [1, 2, 3]
    assert ro.wave_sizes(waves, 40) == [1, 10, 40]
    assert ro.parse_waves("1,25%") == ["1", "25%", "100%"]
    with pytest.raises(ro.PlanError, match="device count"):
        ro.parse_waves("one")


def test_a_wave_waits_for_healthy_then_a_failed_wave_halts() -> None:
    r = ro.Rollout(7, ["1", "50%", "100%"], 0.2, devices=[f"d{i}" for i in range(4)])
    assert r.current() == ["d0"] and not r.step()
    r.state["d0"] = ro.Device("downloading", 7, 40.0)
    assert not r.step()  # still downloading: the next wave waits
    r.state["d0"] = ro.Device("healthy", 7)
    assert r.step() and r.current() == ["d0", "d1"]
    r.state["d1"] = ro.Device("rolled_back", 7, reason="watchdog reset")
    assert r.step() and r.halted and "1 of 1 failed" in r.halted
    assert r.current() == ["d0", "d1"] and not r.step()  # halted: no further device
    again = ro.Rollout.from_dict(r.as_dict())
    assert again.halted == r.halted and again.state["d1"].reason == "watchdog reset"
