"""Lens region and zones (goggleqc.inspect.lens) against the simulator's exact lens masks."""

from __future__ import annotations

import numpy as np
import pytest

from goggleqc.calibration.station import Station
from simsets import sim_and_station as sim_station
from goggleqc.errors import InputError
from goggleqc.inspect.lens import find_lens
from goggleqc.synth import random_lens, render_lens
from goggleqc.synth.lens import render_masks


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def lens_and_truth(sim, seed):
    rng = np.random.default_rng([seed, 1])
    spec = random_lens(rng, sim)
    image, truth = render_lens(sim, spec, rng)
    masks = render_masks(sim.params, spec.pose)
    return image, masks.lens > 0.5, (masks.lens > 0.5) & (masks.inside_mm >= 5.0)


@pytest.mark.parametrize("backlight", ["uniform", "pattern"])
def test_region_matches_truth_calibrated_and_uncalibrated(backlight):
    kinds = set()
    for seed in range(8):
        sim, station = sim_station(seed, backlight)
        kinds.add(sim.params.product.kind)
        image, lens, central = lens_and_truth(sim, seed)
        region = find_lens(image, station)
        assert iou(region.lens, lens) >= 0.97
        assert iou(region.central, central) >= 0.95
        assert len(region.contours_px) == (2 if sim.params.product.kind == "two_eye" else 1)
        assert region.background.any() and not (region.background & region.goggle).any()
        assert (region.goggle | ~region.lens).all()  # the lens is part of the goggle
        raw = find_lens(image)
        assert iou(raw.lens, lens) >= 0.95
    assert kinds == {"visor", "two_eye"}


@pytest.mark.parametrize("backlight", ["uniform", "pattern"])
def test_a_goggle_framed_tighter_than_the_field(backlight):
    """A visor taller than the field: the image border cuts the frame in pieces and the lens
    reaches the border. The frame's pieces and the border enclose the lens together; the
    backlight beside the goggle stays background (it was "no lens found")."""
    import dataclasses

    from goggleqc.benchmarking import calibrate_from_sim
    from goggleqc.synth import SimStation, random_station

    for seed in range(3):
        params = random_station(np.random.default_rng([seed, 40]), width=320, height=256, pixel_size_mm=0.2,
                                backlight=backlight)
        product = dataclasses.replace(params.product, kind="visor", eye_gap_mm=0.0,
                                      half_height_mm=0.52 * params.height * params.pixel_size_mm)
        sim = SimStation(dataclasses.replace(params, product=product))
        station = calibrate_from_sim(sim, np.random.default_rng([seed, 41]))
        image, lens, _ = lens_and_truth(sim, seed)
        assert lens[0].any() or lens[-1].any()  # the lens does reach the border
        region = find_lens(image, station)
        assert iou(region.lens, lens) >= 0.95
        assert region.background.any() and not (region.background & region.lens).any()


def test_background_transmission_is_the_exposure_gain():
    sim, station = sim_station(3, "uniform")
    rng = np.random.default_rng(0)
    spec = random_lens(rng, sim, defects=0)
    image, _ = render_lens(sim, spec, rng)
    region = find_lens(image, station)
    g = float(np.median(station.transmission(image)[region.background]))
    assert g == pytest.approx(spec.gain, abs=0.01)


def test_zones():
    sim, station = sim_station(5, "uniform")
    image, lens, central = lens_and_truth(sim, 5)
    region = find_lens(image, station)
    ys, xs = np.nonzero(central)
    mid = np.array([[int(np.median(xs)), int(np.median(ys))]])
    assert region.zone_of(mid) == "central"
    edge = region.lens & ~region.central
    ey, ex = np.nonzero(edge)
    assert region.zone_of(np.array([[ex[0], ey[0]]])) == "marginal"
    assert region.zone_of(edge) == "marginal"
    assert region.zone_of([int(mid[0, 0]) - 2, int(mid[0, 1]) - 2, int(mid[0, 0]) + 2, int(mid[0, 1]) + 2]) == "central"
    # the marginal band is ~5 mm wide: its area is close to the truth's
    truth_band = (lens & ~central).sum()
    assert abs(int(edge.sum()) - int(truth_band)) <= 0.08 * truth_band


def test_without_pixel_size_zones_are_unknown():
    sim, _ = sim_station(2, "pattern")
    image, lens, _ = lens_and_truth(sim, 2)
    region = find_lens(image)
    assert region.pixel_size_mm is None
    assert (region.central == region.lens).all() and not region.marginal.any()
    assert region.zone_of(region.lens) == "unknown"
    with_scale = find_lens(image, pixel_size_mm=0.2)
    assert with_scale.marginal.any()


def test_flip_mirrors_region():
    sim, station = sim_station(4, "pattern")
    image, _, _ = lens_and_truth(sim, 4)
    flipped = Station(dark=station.dark[:, ::-1].copy(), flat=station.flat[:, ::-1].copy(), bits=8, pixel_size_mm=0.2,
                      backlight="pattern")
    a = find_lens(image, station)
    b = find_lens(np.ascontiguousarray(image[:, ::-1]), flipped)
    assert iou(a.lens[:, ::-1], b.lens) >= 0.99
    assert iou(a.central[:, ::-1], b.central) >= 0.98


def test_8_and_16_bit_agree():
    masks = []
    for bits in (8, 16):
        sim, station = sim_station(6, "uniform", bits=bits)
        image, lens, _ = lens_and_truth(sim, 6)
        assert image.dtype == (np.uint8 if bits == 8 else np.uint16)
        masks.append(find_lens(image, station).lens)
        masks.append(find_lens(image).lens)
    assert iou(masks[0], masks[2]) >= 0.98 and iou(masks[1], masks[3]) >= 0.98


def test_gain_change_keeps_region():
    sim, station = sim_station(7, "pattern")
    rng = np.random.default_rng(3)
    spec = random_lens(rng, sim, defects=0)
    out = []
    for gain in (0.95, 1.05):
        image, _ = render_lens(sim, spec.__class__(**{**spec.__dict__, "gain": gain}), np.random.default_rng(1))
        out.append(find_lens(image, station))
    assert iou(out[0].lens, out[1].lens) >= 0.99 and iou(out[0].central, out[1].central) >= 0.99


def test_bad_inputs():
    sim, station = sim_station(1, "uniform")
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="no lens found"):
        find_lens(sim.flat_frame(rng), station)  # an empty fixture
    with pytest.raises(InputError, match="no lens found"):
        find_lens(sim.flat_frame(rng))
    with pytest.raises(InputError, match="blank"):
        find_lens(sim.dark_frame(rng), station)
    with pytest.raises(InputError, match="blank"):
        find_lens(sim.dark_frame(rng))
    with pytest.raises(InputError, match="saturated"):
        find_lens(np.full((256, 320), 255, np.uint8), station)
    with pytest.raises(InputError, match="320×256"):
        find_lens(np.zeros((200, 300), np.uint8), station)
    with pytest.raises(InputError, match="16-bit"):
        find_lens(sim.flat_frame(rng).astype(np.uint16), station)
    with pytest.raises(InputError, match="monochrome"):
        find_lens(np.zeros((256, 320), np.float32))


def test_a_close_up_of_a_coarse_grid_has_no_frame_to_find():
    """A photograph through a lens filling the frame, on a coarse defocused grid: one small
    closing joins a few cells into a region that touches no border, which is not a lens
    enclosed by a goggle frame (the next closing scatters it). It was taken for one on four of
    thirty such targets, and the scratches outside it went unseen; now the whole frame is
    inspected."""
    from goggleqc.synth.scenes import close_up_station
    from goggleqc.synth.station import SimStation

    for seed in (5003, 5010):  # grids of 5.6 and 4.0 mm
        sim = SimStation(close_up_station(np.random.default_rng(seed), pixel_size_mm=0.1))
        image, _ = render_lens(sim, random_lens(np.random.default_rng(1), sim, defects=0), np.random.default_rng(2))
        with pytest.raises(InputError, match="no lens found"):
            find_lens(image, pixel_size_mm=0.1)


def test_a_frame_whose_edge_curves_round_the_lens_is_grown_to_its_edge_far_from_the_border():
    """The closing that finds a goggle frame in a photograph through the lens also fills the
    dark side of the frame's edge where it curves round the lens: a 5 MP photograph's lens
    reached 20 px into a grey frame, 50 cells from the picture's border, and that edge read as
    a scratch of 72 %. The frame found is grown through pixels as dark as itself within half
    the closing's square of it, not only near the picture's border."""
    from goggleqc.inspect.lens import _grow_frame

    h, w, reach = 200, 240, 12
    yy, xx = np.mgrid[:h, :w]
    small = np.full((h, w), 200.0, np.float32)
    true_frame = np.hypot(xx - 40, yy - 100) > 150  # the right part, its edge curving round the lens
    small[true_frame] = 28.0
    # what the closing left of it: the frame less a band of 4 px along its edge, 40–60 px
    # from the picture's right border
    found = true_frame & (np.hypot(xx - 40, yy - 100) > 154)
    grown = _grow_frame(small, found, reach)
    far = xx < w - reach  # beyond the border's reach
    assert np.array_equal(grown[far], true_frame[far])
