"""Known-answer physics checks and invariants of the simulator (goggleqc.synth)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from goggleqc.synth import LensSpec, Pose, Scratch, SimStation, random_lens, random_station, render_lens
from goggleqc.synth.render import render_plate
from goggleqc.synth.station import Camera, StationParams


def _station(backlight="uniform", bits=8, seed=5, size=(480, 384), ps=0.15, **kw) -> SimStation:
    rng = np.random.default_rng(seed)
    params = random_station(rng, width=size[0], height=size[1], pixel_size_mm=ps, backlight=backlight, bits=bits, **kw)
    return SimStation(params)


@pytest.mark.parametrize("haze", [0.01, 0.03, 0.08])
def test_trap_fill_recovers_haze(haze):
    """§2: haze fills a trap with light in proportion to the bright surround."""
    st = _station("uniform", seed=11)
    rng = np.random.default_rng(0)
    image = render_plate(st, haze * 100, rng).astype(np.float32) - st.dark_map
    flat = st.flat_frame(rng).astype(np.float32) - st.dark_map
    p = st.params
    estimates = []
    for trap in p.backlight.traps:
        cx = trap.x_mm / p.pixel_size_mm + (p.width - 1) / 2
        cy = trap.y_mm / p.pixel_size_mm + (p.height - 1) / 2
        r = trap.diameter_mm / p.pixel_size_mm / 2
        yy, xx = np.ogrid[: p.height, : p.width]
        d = np.hypot(xx - cx, yy - cy)
        core, ring = d < 0.5 * r, (d > 1.3 * r) & (d < 1.8 * r)
        ratio_lens = image[core].mean() / image[ring].mean()
        ratio_flat = flat[core].mean() / flat[ring].mean()
        estimates.append((ratio_lens - ratio_flat) / (1 - ratio_flat))
    # "a few percent of its value", plus the shot noise of a ~400 px trap core
    assert np.median(estimates) == pytest.approx(haze, rel=0.08, abs=0.001)


@pytest.mark.parametrize("haze", [0.02, 0.06, 0.10])
def test_pattern_contrast_drops_by_one_minus_haze(haze):
    st = _station("pattern", seed=12, pattern="checker")
    rng = np.random.default_rng(1)
    plate = render_plate(st, haze * 100, rng, tau=1.0).astype(np.float32) - st.dark_map
    flat = st.radiance  # noise-free flat, blurred like the camera
    flat = cv2.GaussianBlur(flat, (0, 0), st.params.camera.psf_sigma_px)
    k = int(3 * st.params.backlight.period_mm / st.params.pixel_size_mm) | 1
    hp_l = plate - cv2.blur(plate, (k, k))
    hp_f = flat - cv2.blur(flat, (k, k))
    sl = slice(k, -k)
    slope = (hp_l[sl, sl] * hp_f[sl, sl]).sum() / (hp_f[sl, sl] ** 2).sum()
    assert slope == pytest.approx(1 - haze, abs=0.01)


def test_noise_variance_follows_shot_noise():
    st = _station("uniform", seed=13, bits=16)
    rng = np.random.default_rng(2)
    a = st.flat_frame(rng).astype(np.float64)
    b = st.flat_frame(rng).astype(np.float64)
    signal = (a + b) / 2 - st.dark_map
    var = (a - b) ** 2 / 2
    cam = st.params.camera
    bins = np.quantile(signal, np.linspace(0.05, 0.95, 8))
    means, variances = [], []
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (signal >= lo) & (signal < hi)
        means.append(signal[sel].mean())
        variances.append(var[sel].mean())
    slope, intercept = np.polyfit(means, variances, 1)
    assert slope == pytest.approx(1 / cam.gain_e_per_dn, rel=0.1)


def test_straight_scratch_length_matches_endpoints():
    st = _station("uniform", seed=14)
    p = st.params
    cx, cy = p.width / 2, p.height / 2 + 40
    pts = ((cx - 30.0, cy - 10.0), (cx + 50.0, cy + 20.0))
    lens = LensSpec(scratches=(Scratch(pts, 1.5, 0.2),))
    _, truth = render_lens(st, lens, np.random.default_rng(0))
    (sc,) = truth["scratches"]
    expected_px = np.hypot(80, 30)
    assert sc["length_px"] == pytest.approx(expected_px, rel=1e-9)
    assert sc["length_mm"] == pytest.approx(expected_px * p.pixel_size_mm, rel=1e-9)
    x0, y0, x1, y1 = sc["bbox_px"]
    assert x0 <= cx - 30 and x1 >= cx + 50 and y0 <= cy - 10 and y1 >= cy + 20


def test_scratch_darkens_by_its_contrast():
    st = _station("uniform", seed=15)
    p = st.params
    y = p.height / 2 + 60
    lens = LensSpec(scratches=(Scratch(((100.0, y), (300.0, y)), 6.0, 0.3),), haze=0.0)
    from goggleqc.synth.render import lens_fields
    tau, *_ = lens_fields(st, lens)
    inside = tau[int(y), 150:250]
    outside = tau[int(y) + 20, 150:250]
    assert np.median(inside / outside) == pytest.approx(0.7, abs=0.01)


def test_same_seed_gives_identical_files(tmp_path):
    from goggleqc.synth.sampleset import SampleSetOptions, write_sample_set

    opts = SampleSetOptions(count=2, seed=7, width=256, height=200, pixel_size_mm=0.3)
    write_sample_set(tmp_path / "a", opts)
    write_sample_set(tmp_path / "b", opts)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) > 10
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_8_and_16_bit_renderings_agree_after_scaling():
    base = random_station(np.random.default_rng(3), width=320, height=256, pixel_size_mm=0.2, backlight="pattern", bits=8)
    cam16 = Camera(**{**base.camera.__dict__, "bits": 16, "data_bits": 12})
    st8 = SimStation(base)
    st16 = SimStation(StationParams(**{**base.__dict__, "camera": cam16}))
    lens = random_lens(np.random.default_rng(4), st8, defects=3)
    im8, t8 = render_lens(st8, lens, np.random.default_rng(5))
    im16, t16 = render_lens(st16, lens, np.random.default_rng(5))
    assert im8.dtype == np.uint8 and im16.dtype == np.uint16 and im16.max() <= 4095
    a = im8.astype(np.float32) / 255
    b = im16.astype(np.float32) / 4095
    assert np.median(np.abs(a - b)) < 0.01
    assert json.dumps(t8["scratches"]) == json.dumps(t16["scratches"])


def test_colour_output_has_the_rendered_luminance():
    base = random_station(np.random.default_rng(3), width=200, height=160, pixel_size_mm=0.3, bits=8, colour=True)
    st = SimStation(base)
    lens = random_lens(np.random.default_rng(4), st, defects=0)
    image, _ = render_lens(st, lens, np.random.default_rng(5))
    assert image.shape == (160, 200, 3)
    mono = SimStation(StationParams(**{**base.__dict__, "camera": Camera(**{**base.camera.__dict__, "colour": False})}))
    ref, _ = render_lens(mono, lens, np.random.default_rng(5))
    luma = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    assert np.median(np.abs(luma - ref)) <= 2


def test_defect_truth_is_inside_the_lens_with_zones():
    st = _station("uniform", seed=16)
    kinds = set()
    for i in range(6):
        lens = random_lens(np.random.default_rng(i), st, defects=4)
        _, truth = render_lens(st, lens, np.random.default_rng(i))
        for key in ("scratches", "spots", "coating"):
            for rec in truth[key]:
                assert rec["zone"] in ("central", "marginal")
                x0, y0, x1, y1 = rec["bbox_px"]
                assert 0 <= x0 < x1 <= st.params.width and 0 <= y0 < y1 <= st.params.height
                kinds.add(key)
    assert kinds == {"scratches", "spots", "coating"}


def test_pose_jitter_moves_the_lens():
    st = _station("uniform", seed=17)
    from goggleqc.synth.lens import render_masks
    a = render_masks(st.params, Pose(0, 0, 0)).lens
    b = render_masks(st.params, Pose(2.0, 0, 0)).lens
    cx_a = (a * np.arange(a.shape[1])).sum() / a.sum()
    cx_b = (b * np.arange(b.shape[1])).sum() / b.sum()
    assert cx_b - cx_a == pytest.approx(2.0 / st.params.pixel_size_mm, abs=0.5)


def test_a_bent_target_changes_its_scale_across_the_frame_by_about_warp():
    """``Backlight.warp``: a photograph through a curved visor, or by a camera not square to
    the target, sees the pattern's scale change from the centre to the corners; 0 leaves the
    target exactly periodic (and every earlier rendering unchanged)."""
    from goggleqc.synth.station import _warped

    x = np.linspace(-32.0, 32.0, 641, dtype=np.float32)[None, :]
    y = np.linspace(-25.6, 25.6, 513, dtype=np.float32)[:, None]
    wx, wy = _warped(x, y, 0.1, 20.0, float(np.hypot(32.0, 25.6)))
    scale = np.hypot(np.gradient(wx, axis=1), np.gradient(wy, axis=1)) / np.gradient(x, axis=1)
    centre = scale[256, 320]
    corners = np.array([scale[0, 0], scale[0, -1], scale[-1, 0], scale[-1, -1]]) / centre
    assert centre == pytest.approx(1.0, abs=0.01)
    assert 0.05 <= np.abs(corners - 1).max() <= 0.2
    # opt-in: drawing a station draws nothing more for it, so earlier seeds give earlier stations
    a = random_station(np.random.default_rng(4), width=160, height=128, pixel_size_mm=0.1, backlight="pattern")
    b = random_station(np.random.default_rng(4), width=160, height=128, pixel_size_mm=0.1, backlight="pattern", warp=0.1)
    assert a.backlight.warp == 0.0 and b.backlight.warp == 0.1
    assert a.to_dict() == {**b.to_dict(), "backlight": {**b.to_dict()["backlight"], "warp": 0.0}}


def test_a_defocused_target_continues_past_the_frame_border_instead_of_mirroring():
    """A camera sees a crop of a continuous target: the defocus blur near the frame's border
    must not mirror the pattern there (which bends the last cells into a false line along
    the border). A frame shifted by one period shows the same pattern at its border."""
    import dataclasses

    from goggleqc.synth.station import SimStation

    params = random_station(np.random.default_rng(11), width=200, height=160, pixel_size_mm=0.1, backlight="pattern")
    bl = dataclasses.replace(params.backlight, pattern="stripes", angle_deg=0.0, period_mm=2.0, defocus_mm=0.6,
                             vignetting=0.0, nonuniformity=0.0, dust=())
    wide = SimStation(dataclasses.replace(params, backlight=bl)).radiance
    # stripes along y: every row is the same profile; a period is 20 px, so columns 0–19 and
    # 20–39 hold the same cells, border or not
    row = wide[80]
    assert np.abs(row[:20] - row[20:40]).max() <= 1e-3 * row.max()
    assert np.abs(row[-20:] - row[-40:-20]).max() <= 1e-3 * row.max()
