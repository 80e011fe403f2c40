"""``goggleqc bench`` prints rates, latency percentiles and headroom; its exit status says if the target is met.

Small frames and a short timing budget keep this fast; the numbers themselves are benchmarks
(benchmarks/), never asserted here beyond their consistency.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from goggleqc.benchmarking import (calibrate_from_sim, frames_for_station, linear_fit, measure_throughput,
                                   percentiles_ms, sim_station)

SMALL = ("--size", "320x256", "--seconds", "0.6")


def _number(label: str, output: str) -> float:
    m = re.search(re.escape(label) + r"[^\d×]*×?([\d.]+)", output)
    assert m, f"{label!r} not in output:\n{output}"
    return float(m.group(1))


@pytest.mark.parametrize("pool", ["processes", "threads"])
def test_bench_meets_a_low_target_and_prints_everything(cli, pool):
    res = cli("bench", *SMALL, "--fps", "0.5", "--pool", pool)
    assert res.exit_code == 0, res.output
    out = res.output
    for label in ("lenses/s, single-threaded", "lenses/s, all cores", "latency p50 / p95 / p99", "headroom", "machine"):
        assert label in out
    row = re.search(rf"lenses/s, all cores \(\d+ {pool}\)\W*([\d.]+)", out)
    assert row, out
    single = _number("lenses/s, single-threaded", out)
    multi = float(row.group(1))
    assert single > 0.5 and multi > 0.5
    assert "meets 0.5 FPS" in out
    p50, p95, p99 = (float(v) for v in re.search(r"([\d.]+) / ([\d.]+) / ([\d.]+)", out).groups())
    assert 0 < p50 <= p95 <= p99


def test_bench_exits_1_when_the_target_cannot_be_met(cli):
    res = cli("bench", *SMALL, "--fps", "5000")
    assert res.exit_code == 1, res.output
    assert "too slow" in res.output and "below the target 5000 FPS" in res.output


def test_bench_on_a_station_folder(cli, tmp_path):
    sim = sim_station(320, 256, bits=16, backlight="uniform", pixel_size_mm=0.2)
    station = calibrate_from_sim(sim, np.random.default_rng(1))
    station.save(tmp_path / "st")
    res = cli("bench", "--station", tmp_path / "st", "--seconds", "0.6", "--fps", "0.5")
    assert res.exit_code == 0, res.output
    assert "320×256 16-bit" in res.output and "station" in res.output


@pytest.mark.parametrize("args, message", [
    (["--size", "abc"], "not WIDTHxHEIGHT"),
    (["--size", "10x10"], "too small"),
    (["--size", "320x256", "--fps", "0"], "--fps must be above 0"),
    (["--size", "320x256", "--seconds", "0"], "--seconds must be above 0"),
    (["--size", "320x256", "--seconds", "100"], "at most 20"),
    (["--size", "320x256", "--pool", "fibres"], "--pool 'fibres': use threads or processes"),
    (["--size", "320x256", "--workers", "0"], "--workers must be 1 or more"),
    (["--size", "320x256", "--bits", "12"], "--bits 12: use 8 or 16"),
    (["--size", "320x256", "--backlight", "led"], "use uniform or pattern"),
    (["--size", "320x256", "--station", "somewhere"], "not both"),
    (["--station", "/nonexistent/station"], "no such station folder"),
])
def test_bench_bad_arguments(cli, args, message):
    res = cli("bench", *args)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output


def test_frames_through_a_station_follow_its_flat():
    """Frames rendered through a station: dark + τ·B, so bright backlight beside the goggle reads ≈ the flat."""
    sim = sim_station(320, 256, bits=8, pixel_size_mm=0.2)
    station = calibrate_from_sim(sim, np.random.default_rng(2))
    frames = frames_for_station(station, 2)
    assert all(f.shape == station.shape and f.dtype == np.uint8 for f in frames)
    corner = (slice(0, 12), slice(0, 12))  # outside the goggle: τ = 1
    ratio = (frames[0][corner].astype(np.float32) - station.dark[corner]).mean() / station.flat[corner].mean()
    assert 0.9 < ratio < 1.1


def test_timing_helpers():
    rate, lat = measure_throughput(lambda f: sum(range(2000)), [np.zeros(1)], workers=2, seconds=0.05)
    assert rate > 0 and len(lat) >= 4
    p = percentiles_ms(np.arange(1, 101, dtype=float))
    assert p["p50"] == pytest.approx(50.5) and p["p95"] < p["p99"] <= 100
    slope, intercept, r2 = linear_fit([1, 2, 3, 4], [3, 5, 7, 9])
    assert (slope, intercept, r2) == pytest.approx((2.0, 1.0, 1.0))
    _, _, r2_curved = linear_fit([1, 2, 3, 4, 5, 6], [1, 4, 9, 16, 25, 36])
    assert r2_curved < 0.98
