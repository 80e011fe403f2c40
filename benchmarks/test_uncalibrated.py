"""Uncalibrated photographs: ``inspect_lens`` with no station on a 5 MP close-up through a
lens filling the frame, on a defocused pattern seen square on and bent (``warp`` 0.1, the
pattern's scale changing by about 10 % across the frame, as through a curved visor).

The background there is the pattern's own neighbouring cells (``goggleqc.inspect.lattice``);
in a bent view each cell is registered locally, which the square-on frame, in the same run,
does not need. ``extra_info``: lenses/s, the median in Gaussian-blur passes over the frame,
``bent_over_square_on`` (the cost of the registration) and the scratches found on these
defect-free frames (0 expected).
"""

from __future__ import annotations

import numpy as np
import pytest

from bench_data import add_passes
from goggleqc.inspect.pipeline import inspect_lens
from goggleqc.spec import DEFAULT_SPEC, load_spec
from goggleqc.synth.render import render_plate
from goggleqc.synth.scenes import close_up_station
from goggleqc.synth.station import SimStation

SPEC = load_spec(DEFAULT_SPEC)
PIXEL_MM = 0.04
_medians: dict = {}


def _close_up(warp: float) -> np.ndarray:
    """A defect-free 5 MP close-up (rendered, not cached: about a second)."""
    sim = SimStation(close_up_station(np.random.default_rng(77), width=2448, height=2048, pixel_size_mm=PIXEL_MM,
                                      warp=warp))
    return render_plate(sim, 1.0, np.random.default_rng(1))


@pytest.fixture(scope="module")
def close_ups():
    return {warp: _close_up(warp) for warp in (0.0, 0.1)}


@pytest.mark.parametrize("warp", [0.0, 0.1], ids=["square-on", "bent"])
def test_uncalibrated_close_up(benchmark, close_ups, references, warp):
    frame = close_ups[warp]
    found = []

    def one():
        found.append(len(inspect_lens(frame, None, SPEC, pixel_size_mm=PIXEL_MM).scratches))

    benchmark.group = "uncalibrated 5 MP close-up"
    benchmark.pedantic(one, rounds=7, warmup_rounds=1)
    add_passes(benchmark, references(frame))
    median = benchmark.stats.stats.median
    _medians[warp] = median
    benchmark.extra_info.update(warp=warp, lenses_per_s=round(1 / median, 1), false_scratches=max(found))
    if warp and 0.0 in _medians:
        benchmark.extra_info["bent_over_square_on"] = round(median / _medians[0.0], 2)
