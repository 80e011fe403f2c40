"""The uncalibrated background from a periodic backlight's own repeats (goggleqc.inspect.lattice)."""

from __future__ import annotations

import numpy as np
import pytest

from goggleqc.inspect.lattice import find_lattice, lattice_background


def _grid(shape=(200, 240), period=17.0, angle_deg=20.0, seed=0, noise=0.005):
    """A smooth (defocused) grid under uneven light: a product of two raised cosines."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    a = np.deg2rad(angle_deg)
    u = (xx * np.cos(a) + yy * np.sin(a)) / period
    v = (-xx * np.sin(a) + yy * np.cos(a)) / period
    pattern = (0.6 + 0.4 * np.cos(2 * np.pi * u)) * (0.6 + 0.4 * np.cos(2 * np.pi * v))
    light = 1.0 + 0.3 * (xx / shape[1]) - 0.2 * (yy / shape[0])
    rng = np.random.default_rng(seed)
    return (200 * pattern * light * (1 + noise * rng.standard_normal(shape))).astype(np.float32)


def test_finds_the_grid_period_and_angle():
    image = _grid(period=17.0, angle_deg=20.0)
    valid = np.ones(image.shape, bool)
    lat = find_lattice(image / image.mean(), valid)
    assert lat is not None and lat.strength > 0.5
    lengths = sorted([np.hypot(*lat.a1), np.hypot(*lat.a2)])
    assert lengths == pytest.approx([17.0, 17.0], abs=0.3)
    angles = sorted(np.rad2deg(np.arctan2(v[1], v[0])) % 90 for v in (lat.a1, lat.a2))
    assert angles[0] == pytest.approx(20.0, abs=1.5) or angles[1] == pytest.approx(20.0, abs=1.5)


def test_a_plain_uneven_panel_has_no_lattice():
    yy, xx = np.mgrid[:200, :240].astype(np.float32)
    image = (150 + 0.2 * xx - 0.1 * yy + np.random.default_rng(1).normal(0, 1, (200, 240))).astype(np.float32)
    assert lattice_background(image, np.ones(image.shape, bool)) is None


def test_the_background_follows_the_pattern_but_not_a_line_across_it():
    clean = _grid(period=17.0, angle_deg=20.0, noise=0.0)
    image = clean.copy()
    image[100, 30:210] *= 0.8  # a one-pixel scratch, 20 % dark, across many cells
    valid = np.ones(image.shape, bool)
    bg, ok, _ = lattice_background(image, valid)
    inner = ok.copy()
    inner[:20], inner[-20:], inner[:, :20], inner[:, -20:] = False, False, False, False
    rel = image / bg
    # away from the scratch the background is the pattern itself
    away = inner.copy()
    away[95:106] = False
    assert np.abs(rel[away] - 1).max() < 0.01
    # on the scratch the full darkening shows
    line = inner[100] & (np.arange(image.shape[1]) > 40) & (np.arange(image.shape[1]) < 200)
    assert np.median(rel[100][line]) == pytest.approx(0.8, abs=0.01)


def test_a_line_along_a_lattice_vector_is_still_seen():
    """Two of the eight shifted cells land on a line parallel to a lattice vector; the median
    of eight ignores them."""
    clean = _grid(period=17.0, angle_deg=0.0, noise=0.0)
    image = clean.copy()
    image[100, 20:220] *= 0.8
    bg, ok, _ = lattice_background(image, np.ones(image.shape, bool))
    assert np.median((image / bg)[100, 40:200]) == pytest.approx(0.8, abs=0.01)
