"""Per-analysis timings at 1.3, 2 and 5 MP, 8- and 16-bit, with the frame's blur and memcpy time.

Each stage is called exactly as :func:`goggleqc.inspect.pipeline.inspect_lens` calls it, on
inputs prepared once from the same frame, so the stage times add up to the end-to-end time.
The lens stage includes building the full-resolution lens and central masks (the later
stages of the pipeline would otherwise pay for that on first use).

``extra_info``: ``median_ms``, ``blur_passes`` (median ÷ one GaussianBlur of the frame) and
``memcpy_passes`` (median ÷ one copy of the frame).
"""

from __future__ import annotations

import pytest

from bench_data import add_passes, size_grid
from goggleqc.inspect.background import relative_image
from goggleqc.inspect.coating import find_coating
from goggleqc.inspect.haze import measure_haze
from goggleqc.inspect.lens import find_lens
from goggleqc.inspect.scratches import find_scratches
from goggleqc.inspect.spots import find_spots
from goggleqc.inspect.transmittance import measure_transmittance
from goggleqc.inspect.verdict import decide
from goggleqc.spec import DEFAULT_SPEC, load_spec

STAGES = ("lens", "haze", "transmittance", "background", "scratches", "spots", "coating", "verdict")
SPEC = load_spec(DEFAULT_SPEC)


def _lens(image, station):
    region = find_lens(image, station, marginal_mm=SPEC.marginal_width_mm, pixel_size_mm=station.pixel_size_mm)
    _ = region.lens, region.central  # the full-resolution masks every later stage uses
    return region


class Prepared:
    """The inputs of every stage for one frame, computed once."""

    def __init__(self, data):
        self.station = station = data.station
        self.image = image = data.frames[0]
        self.ps = station.pixel_size_mm
        self.region = _lens(image, station)
        self.rel = relative_image(image, station, self.region.lens)
        self.measures = {
            "haze_pct": measure_haze(image, station, lens_mask=self.region.lens,
                                     central_mask=self.region.central).haze_pct,
            "transmittance_pct": measure_transmittance(image, station, self.region).transmittance_pct,
            "scratches": [s.__dict__ for s in self.scratches()],
            "spots": [s.__dict__ for s in self.spots()()],
            "coating": [c.__dict__ for c in self.coating()],
        }

    def scratches(self):
        return find_scratches(self.rel, central=self.region.central, pixel_size_mm=self.ps)

    def spots(self):
        exclude = [s.bbox_px for s in find_scratches(self.rel, central=self.region.central, pixel_size_mm=self.ps)]
        return lambda: find_spots(self.rel, central=self.region.central, pixel_size_mm=self.ps, exclude=exclude)

    def coating(self):
        return find_coating(self.station.transmission(self.image), self.region, pixel_size_mm=self.ps)

    def call(self, stage: str):
        image, station, region = self.image, self.station, self.region
        if stage == "lens":
            return lambda: _lens(image, station)
        if stage == "haze":
            return lambda: measure_haze(image, station, lens_mask=region.lens, central_mask=region.central)
        if stage == "transmittance":
            return lambda: measure_transmittance(image, station, region)
        if stage == "background":
            return lambda: relative_image(image, station, region.lens)
        if stage == "verdict":
            return lambda: decide(self.measures, SPEC)
        if stage == "spots":
            return self.spots()
        return getattr(self, stage)


@pytest.fixture(scope="module")
def prepared(frame_sets):
    memo: dict = {}

    def get(name, bits):
        if (name, bits) not in memo:
            memo[name, bits] = Prepared(frame_sets(name, bits))
        return memo[name, bits]

    return get


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("size, bits", size_grid())
def test_stage(benchmark, prepared, references, size, bits, stage):
    p = prepared(size, bits)
    benchmark.group = f"analyses {size} {bits}-bit"
    benchmark.extra_info.update(stage=stage, size=size, bits=bits)
    benchmark(p.call(stage))
    add_passes(benchmark, references(p.image))
