"""Calibrated inspection on fine, sharp, high-contrast pattern backlights.

On such a target most of the frame lies on a cell edge. The background fit takes out what a
misregistration between flat and lens frame leaves there (``s·∇B/B``, to first order), and
the noise of ``rel`` is measured on the frame, so edges are judged at the noise the frame
really has: neither damped where nothing moved (which once set the noise estimate at half
the noise of the cells, and cell noise chained into faint false scratches) nor trusted
where the backlight did move.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from goggleqc.benchmarking import calibrate_from_sim
from goggleqc.inspect.pipeline import inspect_lens
from goggleqc.spec import load_spec
from goggleqc.synth import Scratch, SimStation, random_lens, random_station
from goggleqc.synth.render import lens_fields

SPEC = load_spec("en166-clear")
PS = 0.08


def _fine_station(seed: int):
    rng = np.random.default_rng(seed)
    params = random_station(rng, width=400, height=320, pixel_size_mm=PS, backlight="pattern", bits=8)
    bl = dataclasses.replace(params.backlight, period_mm=float(rng.uniform(1.5, 3.0)),
                             defocus_mm=float(rng.uniform(0.0, 0.1)), modulation=float(rng.uniform(0.8, 0.95)))
    sim = SimStation(dataclasses.replace(params, backlight=bl))
    return sim, calibrate_from_sim(sim, np.random.default_rng([seed, 7]))


def _lens_image(sim, spec, rng, shift_px: float = 0.0, angle: float = 0.6):
    """A lens frame whose backlight is displaced by ``shift_px`` from where the flat saw it."""
    tau, haze, *_ = lens_fields(sim, spec)
    radiance, scattered = sim.radiance, sim.scattered
    if shift_px:
        m = np.float32([[1, 0, shift_px * np.cos(angle)], [0, 1, shift_px * np.sin(angle)]])
        h, w = sim.shape
        radiance = cv2.warpAffine(radiance, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return sim.expose(tau * (radiance + haze * (scattered - radiance)), rng, spec.gain)


@pytest.fixture(scope="module")
def stations():
    return [_fine_station(seed) for seed in (7000, 7003, 7005, 7007)]


@pytest.mark.parametrize("shift_px", [0.0, 0.3])
def test_no_false_scratches_on_fine_sharp_patterns(stations, shift_px):
    # measured: no false scratch on 24 lenses registered with their flat (9 with the fixed
    # misregistration weight, whose damped edges set the noise estimate at half the cells'
    # noise); with the backlight 0.3 px off, 8 short faint ones on the sharpest grid (9 at
    # stop 25, before and after its 5σ test off the pattern's edges), where a shift's second
    # order stays (231 with the fixed weight; 10 on stop 32's machine, stop 31's code too)
    found = 0
    for k, (sim, station) in enumerate(stations):
        for i in range(6):
            rng = np.random.default_rng([k, i, 11])
            spec = random_lens(rng, sim, defects=0, haze=0.01)
            result = inspect_lens(_lens_image(sim, spec, rng, shift_px), station, SPEC)
            assert result.verdict != "error"
            found += len(result.scratches)
    assert found <= (0 if shift_px == 0 else 10)


def test_scratches_found_across_fine_pattern_edges(stations):
    # measured: 15 of 16 scratches of 2–3 mm at 20 % found (the miss crosses dark stripes
    # of 5 % transmission, where the camera sees little through it); 12 with the fixed
    # misregistration weight
    hits = total = 0
    for k, (sim, station) in enumerate(stations):
        rng = np.random.default_rng([k, 12])
        p = sim.params
        for i in range(4):
            base = random_lens(rng, sim, defects=0, haze=0.01, tau_clear=0.9)
            # the centre of the (left) lens, a little off
            eye = (p.product.half_width_mm + p.product.eye_gap_mm / 2) / PS * (p.product.kind == "two_eye")
            cx = p.width / 2 + eye + float(rng.uniform(-10, 10))
            cy = p.height / 2 + float(rng.uniform(-10, 10))
            a = float(rng.uniform(0, np.pi))
            half = float(rng.uniform(12, 18))
            dx, dy = half * np.cos(a), half * np.sin(a)
            spec = dataclasses.replace(base, pose=dataclasses.replace(base.pose, angle_deg=0.0),
                                       scratches=(Scratch(((cx - dx, cy - dy), (cx + dx, cy + dy)), 1.5, 0.2),))
            result = inspect_lens(_lens_image(sim, spec, rng), station, SPEC)
            box = (cx - abs(dx) - 3, cy - abs(dy) - 3, cx + abs(dx) + 3, cy + abs(dy) + 3)
            total += 1
            hits += any(s.bbox_px[0] < box[2] and s.bbox_px[2] > box[0] and s.bbox_px[1] < box[3] and s.bbox_px[3] > box[1]
                        for s in result.scratches)
    assert hits >= total - 1
