"""The hot path's shortcuts give NumPy's answers: order statistics to the last bit, circle fits
to far below a pixel, many circles at once as one at a time."""

from __future__ import annotations

import numpy as np
import pytest

from goggleqc.inspect.lens import _percentile, _percentiles, np_median
from goggleqc.inspect.scratches import _circle_rms, _circles_rms, _kasa


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_order_statistics_are_numpy_s_to_the_last_bit(dtype):
    rng = np.random.default_rng(7)
    for n in (1, 2, 3, 4, 5, 17, 100, 101, 4096, 80_001):
        values = (rng.standard_normal(n) * rng.uniform(0.01, 100)).astype(dtype)
        values[rng.random(n) < 0.1] = values[0]  # ties
        assert np_median(values.copy()) == float(np.median(values))
        for q in (0, 10, 40, 50, 70, 75, 90, 99, 100):
            assert _percentile(values.copy(), q) == float(np.percentile(values, q)), (n, q)
        assert _percentiles(values.copy(), (40, 75)) == [float(v) for v in np.percentile(values, [40, 75])]


def _lstsq_circle(x, y):
    a = np.stack([x, y, np.ones_like(x)], 1)
    sol = np.linalg.lstsq(a, x * x + y * y, rcond=None)[0]
    cx, cy = sol[0] / 2, sol[1] / 2
    return np.array([cx, cy, np.sqrt(max(sol[2] + cx * cx + cy * cy, 0.0))])


def test_the_closed_form_circle_is_the_least_squares_one():
    rng = np.random.default_rng(11)
    for _ in range(500):
        n = int(rng.integers(5, 300))
        r = rng.uniform(3, 300)
        t0 = rng.uniform(0, 2 * np.pi)
        t = np.linspace(t0, t0 + rng.uniform(0.1, 2 * np.pi), n)
        # pixel positions of an arc, or of a straight line a pixel off its row here and there
        x = np.round(300 + r * np.cos(t) + rng.normal(0, 0.5, n))
        y = np.round(250 + r * np.sin(t) + rng.normal(0, 0.5, n))
        if rng.random() < 0.3:
            x = np.round(np.linspace(100, 100 + rng.uniform(3, 300), n))
            y = np.round(200 + rng.uniform(-2, 2) * x + rng.normal(0, 0.4, n))
        want = _lstsq_circle(x, y)
        got = np.array(_kasa(x, y))
        assert np.all(np.abs(got - want) <= 1e-6 * max(want[2], 1.0)), (want, got)


def test_points_on_one_row_or_column_still_get_lstsq_s_answer():
    x = np.arange(10.0, 40.0)
    row = np.full_like(x, 120.0)
    for xs, ys in ((x, row), (row, x)):
        got = np.array(_kasa(xs, ys))
        assert np.all(np.isfinite(got))
        assert np.allclose(got, _lstsq_circle(xs, ys), rtol=0, atol=1e-9)


def test_many_circles_at_once_are_each_circle_alone():
    rng = np.random.default_rng(3)
    xs, ys = rng.uniform(0, 50, 40), rng.uniform(0, 50, 40)
    cx, cy, r = rng.uniform(0, 50, 25), rng.uniform(0, 50, 25), rng.uniform(1, 40, 25)
    many = _circles_rms(xs, ys, cx, cy, r)
    one = np.array([_circle_rms(xs, ys, a, b, c) for a, b, c in zip(cx, cy, r)])
    assert np.allclose(many, one, rtol=1e-12, atol=0)
