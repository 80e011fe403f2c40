"""Scaling: ``inspect_lens`` time against megapixels, 1–12 MP, with a linear fit and R².

Every size has the same pixel scale (0.05 mm/px) and a station drawn from the same random
seed, 5:4 frames, 8-bit, uniform backlight: the field of view and the goggle grow with the
frame, so the analyses work at the same resolution over more area and their time should grow
linearly. (At a fixed field of view the pipeline picks its working resolution in mm,
``background.working_scale``, so time grows less than linearly; that is by design and no test
of linearity.) Should sizes of one run ever land on different working grids, the fit is
repeated over the sizes sharing the largest frame's grid. The lenses are
defect-free so the random scene does not differ from size to size; per-object costs are in
``test_analyses.py``. Each size is its own benchmark; the last one fits
``ms = slope·MP + intercept`` and reports R² (target ≥ 0.98), and also fits a quadratic,
reporting how much of the 12 MP time its MP² term explains — a super-linear term is a bug to
fix.

The fit is made on a second timing, interleaved: the last benchmark times every size in
turn, frame by frame, for :data:`INTERLEAVED_ROUNDS` rounds, and fits the medians. On this
shared machine the speed drifts by a third within minutes, and sizes timed one after another
each catch a different part of that drift (the consecutive fit read R² 0.94–1.00 at stop 26
and 27 on unchanged code); interleaved, the drift falls on every size alike. The fit of the
consecutive medians is reported beside it (``fit_consecutive_r2``).
"""

from __future__ import annotations

import importlib
import itertools
import time

import numpy as np
import pytest

from bench_data import load_or_render
from goggleqc.benchmarking import linear_fit
from goggleqc.inspect.pipeline import inspect_lens
from goggleqc.spec import DEFAULT_SPEC, load_spec

SPEC = load_spec(DEFAULT_SPEC)
MEGAPIXELS = (1, 2, 3, 5, 8, 12)
PIXEL_SIZE_MM = 0.05
#: rounds of the interleaved timing (each times every size once)
INTERLEAVED_ROUNDS = 15


def frame_size(mp: float) -> tuple[int, int]:
    """A 5:4 frame of about ``mp`` megapixels, sides rounded to multiples of 16 px."""
    w = int(round(np.sqrt(mp * 1e6 * 5 / 4) / 16)) * 16
    h = int(round(w * 4 / 5 / 16)) * 16
    return w, h


_median_ms: dict = {}
_stages: dict = {}
_scale: dict = {}
_sets: dict = {}


def _interleaved_medians(rounds: int) -> dict[float, float]:
    """Median ms of ``inspect_lens`` per size (MP), every size timed once per round, in turn."""
    times: dict[float, list[float]] = {v: [] for v in _sets}
    for r in range(rounds):
        for v, (frames, station) in _sets.items():
            t0 = time.perf_counter()
            inspect_lens(frames[r % len(frames)], station, SPEC)
            times[v].append((time.perf_counter() - t0) * 1e3)
    return {v: float(np.median(t)) for v, t in times.items()}


@pytest.mark.parametrize("mp", MEGAPIXELS)
def test_scaling(benchmark, mp):
    w, h = frame_size(mp)
    data = load_or_render(w, h, bits=8, count=3, defects=0, pixel_size_mm=PIXEL_SIZE_MM, tag="scaling-0.05mm")
    frames, station = data.frames, data.station
    turn = itertools.cycle(range(len(frames)))
    results = []
    for f in frames:
        inspect_lens(f, station, SPEC)  # warm-up: per-station plans
    benchmark.group = "scaling, inspect_lens vs megapixels (8-bit)"
    benchmark.pedantic(lambda: results.append(inspect_lens(frames[next(turn)], station, SPEC)),
                       rounds=11, iterations=1)
    median_ms = benchmark.stats.stats.median * 1e3
    true_mp = w * h / 1e6
    _median_ms[true_mp] = median_ms
    _sets[true_mp] = (frames, station)
    stages = {k: float(np.median([r.timing_ms.get(k, 0.0) for r in results])) for k in results[0].timing_ms}
    _stages[true_mp] = stages
    scale_fn = getattr(importlib.import_module("goggleqc.inspect.background"), "working_scale", None)
    _scale[true_mp] = scale_fn((h, w), station.pixel_size_mm) if scale_fn else None
    benchmark.extra_info.update(width=w, height=h, megapixels=round(true_mp, 3), median_ms=round(median_ms, 2),
                                ms_per_mp=round(median_ms / true_mp, 2),
                                **{f"stage_{k}_ms": round(v, 2) for k, v in stages.items()})
    if mp == MEGAPIXELS[-1] and len(_median_ms) >= 3:
        x = np.array(sorted(_median_ms))
        _, _, r2_consecutive = linear_fit(x, [_median_ms[v] for v in x])
        interleaved = _interleaved_medians(INTERLEAVED_ROUNDS)
        y = np.array([interleaved[v] for v in x])
        slope, intercept, r2 = linear_fit(x, y)
        benchmark.extra_info.update(fit_consecutive_r2=round(r2_consecutive, 4),
                                    interleaved_ms={f"{v:.1f}MP": round(interleaved[v], 1) for v in x})
        c2, c1, c0 = np.polyfit(x, y, 2)
        benchmark.extra_info.update(fit_slope_ms_per_mp=round(slope, 3), fit_intercept_ms=round(intercept, 2),
                                    fit_r2=round(r2, 4), target_r2=0.98, meets_target=bool(r2 >= 0.98),
                                    quadratic_ms_per_mp2=round(float(c2), 4),
                                    quadratic_share_at_max=round(float(c2 * x[-1] ** 2 / y[-1]), 3),
                                    working_scales={f"{v:.1f}MP": _scale[v] for v in x})
        # the pipeline steps its working grid with frame size (background.working_scale): a step
        # is a design choice, a curve within one step would be a super-linear bug
        same = [v for v in x if _scale[v] == _scale[x[-1]]]
        if len(same) >= 3 and len(same) < len(x):
            s_same, i_same, r2_same = linear_fit(same, [interleaved[v] for v in same])
            benchmark.extra_info.update(fit_same_scale_mp=[round(v, 1) for v in same],
                                        fit_same_scale_ms_per_mp=round(s_same, 3),
                                        fit_same_scale_intercept_ms=round(i_same, 2),
                                        fit_same_scale_r2=round(r2_same, 4))
        # per-stage slopes: which stage, if any, grows faster than the pixel count
        for k in _stages[x[-1]]:
            ys = [_stages[v].get(k, 0.0) for v in x]
            s_k, _, r2_k = linear_fit(x, ys)
            benchmark.extra_info[f"stage_{k}_ms_per_mp"] = round(s_k, 3)
            benchmark.extra_info[f"stage_{k}_r2"] = round(r2_k, 3)
