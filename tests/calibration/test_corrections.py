"""PM corrections, generic models and water conversions: properties and rejections."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from calibration import models, pm, water
from calibration.errors import CalibrationError, InputError

RH = st.floats(0.0, 100.0)


@pytest.mark.parametrize("joint", [30.0, 50.0, 210.0, 260.0])
@given(rh=RH)
def test_fire_smoke_continuous_at_joints(joint: float, rh: float) -> None:
    below = pm.fire_smoke_2021(math.nextafter(joint, 0.0), rh)
    at = pm.fire_smoke_2021(joint, rh)
    assert at == pytest.approx(below, abs=1e-9)
    # And a 1e-6 step never jumps more than the local slope allows.
    assert abs(pm.fire_smoke_2021(joint + 1e-6, rh) - at) < 1e-5


@given(x=st.floats(0.0, 1000.0), rh=RH)
def test_fire_smoke_monotonic_in_concentration(x: float, rh: float) -> None:
    assert pm.fire_smoke_2021(x + 0.5, rh) >= pm.fire_smoke_2021(x, rh)


def test_fire_smoke_segments_match_their_published_lines() -> None:
    rh = 40.0
    assert pm.fire_smoke_2021(20.0, rh) == pytest.approx(0.524 * 20 - 0.0862 * rh + 5.75)
    assert pm.fire_smoke_2021(150.0, rh) == pytest.approx(0.786 * 150 - 0.0862 * rh + 5.75)
    assert pm.fire_smoke_2021(300.0, rh) == pytest.approx(2.966 + 0.69 * 300 + 8.84e-4 * 300**2)


def test_negative_results_floored_and_bad_inputs_rejected() -> None:
    assert pm.us_wide_2021(0.0, 100.0) == 0.0
    for args in ((-1.0, 50.0), (math.nan, 50.0), (10.0, 100.1), (10.0, math.nan), (10.0, -1.0)):
        with pytest.raises(InputError):
            pm.us_wide_2021(*args)
        with pytest.raises(InputError):
            pm.fire_smoke_2021(*args)


@given(rh=st.floats(95.0, 100.0))
def test_kohler_rh_clamped(rh: float) -> None:
    assert pm.kohler_factor(rh, 0.3) == pm.kohler_factor(95.0, 0.3)
    assert math.isfinite(pm.kohler_correct(50.0, rh, 0.3))


@given(rh=st.floats(0.0, 94.0), kappa=st.floats(0.01, 0.6))
def test_kohler_factor_grows_with_rh(rh: float, kappa: float) -> None:
    assert 1.0 <= pm.kohler_factor(rh, kappa) <= pm.kohler_factor(rh + 1.0, kappa)


def test_kohler_dry_air_is_identity() -> None:
    assert pm.kohler_factor(0.0, 0.4) == 1.0
    with pytest.raises(InputError):
        pm.kohler_factor(101.0, 0.4)


def test_polynomial_and_piecewise() -> None:
    assert models.polynomial(2.0, [1.0, 2.0, 3.0]) == 1 + 4 + 12
    pts = [(0.0, 1.0), (10.0, 11.0), (20.0, 15.0)]
    assert models.piecewise_linear(15.0, pts) == pytest.approx(13.0)
    assert models.piecewise_linear(-10.0, pts) == pytest.approx(-9.0)  # extends first segment
    assert models.piecewise_linear(30.0, pts) == pytest.approx(19.0)  # extends last segment
    with pytest.raises(CalibrationError, match="increasing"):
        models.piecewise_linear(1.0, [(0.0, 0.0), (0.0, 1.0)])
    with pytest.raises(CalibrationError):
        models.polynomial(1.0, [])


@given(
    xs=st.lists(st.floats(0.0, 100.0), min_size=2, max_size=6, unique=True).map(sorted),
    x=st.floats(0.0, 100.0),
)
def test_piecewise_continuous_and_hits_points(xs: list[float], x: float) -> None:
    pts = [(a, 2.0 * a + 1.0) for a in xs]
    assume(all(b - a > 1e-6 for a, b in itertools.pairwise(xs)))
    for a, b in pts:
        assert models.piecewise_linear(a, pts) == pytest.approx(b)
    # Points on one line: interpolation reproduces the line everywhere.
    assert models.piecewise_linear(x, pts) == pytest.approx(2.0 * x + 1.0, abs=1e-6)


@given(
    slope=st.floats(0.2, 3.0),
    intercept=st.floats(-20.0, 20.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_least_squares_recovers_known_line(slope: float, intercept: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    xs = rng.uniform(0.0, 200.0, 200)
    ys = slope * xs + intercept + rng.normal(0.0, 0.5, xs.size)
    s, i = models.least_squares_line(list(xs), list(ys))
    assert s == pytest.approx(slope, abs=0.02)
    assert i == pytest.approx(intercept, abs=0.5)


def test_water_rejects_nonsense() -> None:
    with pytest.raises(InputError):
        water.echo_distance_m(-1.0, 25.0)
    with pytest.raises(InputError):
        water.stage_level_m(2.0, math.nan)
    with pytest.raises(InputError):
        water.speed_of_sound_ms(200.0)
    assert water.hydrostatic_depth_m(100.0, 100.5) < 0.0  # above water: reported, not hidden
    # Warmer air carries sound faster: the same echo means a longer distance.
    assert water.echo_distance_m(5000.0, 35.0) > water.echo_distance_m(5000.0, 15.0)
    assert water.water_density_kgm3(25.0) == pytest.approx(997.05, abs=0.01)
