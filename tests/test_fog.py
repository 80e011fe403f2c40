"""The fog test (station-model.md §5, issue 8) against simulator fog sequences with exact truth."""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest

from goggleqc.calibration.station import Pattern, Station, Trap
from goggleqc.errors import InputError
from goggleqc.inspect.fog import FogTest, crossing_time
from goggleqc.synth import SimStation, random_station
from goggleqc.synth.fog import FogRenderer, random_fog_sequence, write_fog_sequence

SIZE = (320, 256)
PS = 0.2


def _sim(seed: int, backlight: str, bits: int = 8, period_mm: float | None = None) -> SimStation:
    params = random_station(np.random.default_rng(seed), width=SIZE[0], height=SIZE[1], pixel_size_mm=PS,
                            backlight=backlight, bits=bits, pattern="checker" if period_mm else None)
    if period_mm:  # void areas need a pattern finer than the voids (the map resolves ~ a period)
        params = replace(params, backlight=replace(params.backlight, period_mm=period_mm,
                                                   defocus_mm=0.15 * period_mm))
    return SimStation(params)


def _station(sim: SimStation) -> Station:
    """A calibration as `goggleqc calibrate` would make it: averaged dark, mean flat − dark."""
    p = sim.params
    flat = cv2.GaussianBlur(sim.radiance, (0, 0), p.camera.psf_sigma_px)
    cx, cy = (p.width - 1) / 2, (p.height - 1) / 2
    bl = p.backlight
    traps = tuple(Trap(cx + t.x_mm / PS, cy + t.y_mm / PS, t.diameter_mm / PS / 2) for t in bl.traps) \
        if bl.kind == "uniform" else ()
    pattern = Pattern(bl.pattern, bl.period_mm / PS, bl.angle_deg % 90) if bl.kind == "pattern" else None
    return Station(dark=sim.dark_map.astype(np.float32), flat=flat.astype(np.float32), bits=p.camera.bits,
                   pixel_size_mm=PS, backlight=bl.kind, traps=traps, pattern=pattern)


def _analyse(renderer: FogRenderer, station: Station | None, frames=None, **kw):
    test = FogTest(station, **kw)
    for t, image in (frames if frames is not None else renderer.frames()):
        test.add(image, t)
    return test.result()


# -- the simulator's truth ----------------------------------------------------------------------
def test_truth_fog_free_time_is_the_requested_one_and_the_curve_falls():
    sim = _sim(1, "pattern")
    spec = random_fog_sequence(np.random.default_rng(2), sim, fps=5, coating="failing", fog_free_s=7.5, n_voids=2)
    r = FogRenderer(sim, spec)
    truth = r.truth()
    assert truth["fog_free_s"] == pytest.approx(7.5, abs=1e-6)
    curve = np.asarray(truth["contrast_truth"])
    assert np.all(np.diff(curve) <= 1e-9) and curve[0] == pytest.approx(1.0)
    assert r.central_ratio(spec.exposure_s + 7.5) == pytest.approx(spec.threshold, abs=1e-6)
    assert all(v["onset_s"] is not None and v["onset_s"] < 2.0 for v in truth["voids"])


def test_good_coating_truth_never_fogs():
    sim = _sim(3, "uniform")
    spec = random_fog_sequence(np.random.default_rng(4), sim, fps=5, coating="good", duration_s=15, n_voids=0)
    truth = FogRenderer(sim, spec).truth()
    assert truth["fog_free_s"] is None
    assert truth["fog_free_at_least_s"] == pytest.approx(truth["times_s"][-1] - spec.exposure_s)
    assert min(truth["contrast_truth"]) > spec.threshold


# -- fog-free time ------------------------------------------------------------------------------
@pytest.mark.parametrize("fog_free_s,backlight,fps,rise_s", [
    (2.0, "pattern", 10, 0.3), (5.0, "uniform", 10, 2.0), (12.0, "pattern", 5, 6.0),
    (30.0, "uniform", 4, 1.0), (60.0, "pattern", 2, 3.0), (45.0, "uniform", 2, 8.0)])
def test_fog_free_time_within_one_frame_interval(fog_free_s, backlight, fps, rise_s):
    seed = int(fog_free_s * 10) + fps
    sim = _sim(seed, backlight)
    spec = random_fog_sequence(np.random.default_rng(seed), sim, fps=fps, coating="failing", fog_free_s=fog_free_s,
                               rise_s=rise_s, n_voids=1)
    r = FogRenderer(sim, spec)
    truth = r.truth()
    res = _analyse(r, _station(sim), start_s=spec.exposure_s)
    assert res.fog_free_s is not None
    assert abs(res.fog_free_s - truth["fog_free_s"]) <= 1 / fps
    assert res.n_verdict == ("pass" if fog_free_s >= 8 else "fail")
    # the measured curve follows the truth curve
    meas = np.array([f.contrast for f in res.frames])
    assert np.max(np.abs(meas - np.asarray(truth["contrast_truth"]))) < 0.05


def test_good_coating_is_at_least_the_sequence_never_a_number():
    sim = _sim(21, "pattern")
    spec = random_fog_sequence(np.random.default_rng(21), sim, fps=5, coating="good", duration_s=14, n_voids=1)
    res = _analyse(FogRenderer(sim, spec), _station(sim), start_s=spec.exposure_s)
    assert res.fog_free_s is None
    last_t = (spec.n_frames - 1) / spec.fps
    assert res.fog_free_at_least_s == pytest.approx(last_t - spec.exposure_s, abs=1e-6)
    assert res.n_verdict == "pass"
    doc = res.to_dict()
    assert doc["fog_free_s"] is None and doc["fog_free_at_least_s"] > 8


@pytest.mark.parametrize("bits", [8, 16])
def test_bit_depth_and_gain_do_not_change_the_fog_free_time(bits):
    sim = _sim(31, "pattern", bits=bits)
    base = random_fog_sequence(np.random.default_rng(31), sim, fps=5, coating="failing", fog_free_s=9.0,
                               rise_s=2.0, n_voids=0)
    station = _station(sim)
    for gain in (0.95, 1.05):
        spec = replace(base, lens=replace(base.lens, gain=gain))
        r = FogRenderer(sim, spec)
        res = _analyse(r, station, start_s=spec.exposure_s)
        assert abs(res.fog_free_s - r.truth()["fog_free_s"]) <= 1 / spec.fps


def test_automatic_exposure_start_from_a_void():
    sim = _sim(41, "pattern", period_mm=2.0)
    spec = random_fog_sequence(np.random.default_rng(41), sim, fps=5, coating="failing", fog_free_s=10, n_voids=2)
    r = FogRenderer(sim, spec)
    res = _analyse(r, _station(sim))
    first_void = min(v.delay_s for v in spec.voids)
    assert res.start_mode == "auto"
    assert spec.exposure_s - 1 / spec.fps <= res.exposure_start_s <= spec.exposure_s + first_void + 2 / spec.fps


# -- voids --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def void_runs():
    runs = []
    for seed in range(8):
        sim = _sim(100 + seed, "pattern", bits=8 if seed % 2 else 16, period_mm=float(1.6 + 0.2 * (seed % 4)))
        spec = random_fog_sequence(np.random.default_rng(200 + seed), sim, fps=5, coating="good", duration_s=8,
                                   n_voids=3, void_area_mm2=(10.0, 60.0))
        r = FogRenderer(sim, spec)
        runs.append((spec, r.truth(), _analyse(r, _station(sim), start_s=spec.exposure_s)))
    return runs


def _match(truth_void, found):
    x0, y0, x1, y1 = truth_void["bbox_px"]
    for v in found:
        a0, b0, a1, b1 = v.bbox_px
        if a0 < x1 and x0 < a1 and b0 < y1 and y0 < b1:
            return v
    return None


def test_voids_recall_area_onset_and_zone(void_runs):
    n_true = n_hit = 0
    area_err, onset_err = [], []
    for spec, truth, res in void_runs:
        for tv in truth["voids"]:
            n_true += 1
            v = _match(tv, res.voids)
            if v is None:
                continue
            n_hit += 1
            area_err.append(abs(v.area_mm2 / tv["area_mm2"] - 1))
            onset_err.append(abs(v.onset_s - tv["onset_s"]) * spec.fps)
            assert v.zone == tv["zone"]
    assert n_true >= 20
    assert n_hit / n_true >= 0.95
    assert max(area_err) <= 0.20
    assert np.median(onset_err) <= 1.0  # onset to a frame interval, typically


def test_no_false_voids(void_runs):
    n_found = sum(len(res.voids) for _, _, res in void_runs)
    n_matched = sum(any(_match(tv, [v]) for tv in truth["voids"]) for _, truth, res in void_runs for v in res.voids)
    assert n_found - n_matched == 0


def test_clear_lens_gives_no_voids_and_no_fog():
    sim = _sim(51, "pattern", period_mm=2.0)
    spec = random_fog_sequence(np.random.default_rng(51), sim, fps=5, coating="good", duration_s=10, n_voids=0)
    spec = replace(spec, good_haze=0.0)
    res = _analyse(FogRenderer(sim, spec), _station(sim), start_s=spec.exposure_s)
    assert res.voids == [] and res.fog_free_s is None
    assert min(f.contrast for f in res.frames) > 0.97


def test_flipped_sequence_gives_the_same_result():
    sim = _sim(61, "pattern", period_mm=2.0)
    spec = random_fog_sequence(np.random.default_rng(61), sim, fps=5, coating="failing", fog_free_s=4.0, n_voids=2)
    r = FogRenderer(sim, spec)
    st = _station(sim)
    flipped = replace(st, dark=st.dark[:, ::-1].copy(), flat=st.flat[:, ::-1].copy(), pattern=None)
    a = _analyse(r, replace(st, pattern=None), start_s=spec.exposure_s)
    b = _analyse(r, flipped, frames=((t, im[:, ::-1].copy()) for t, im in r.frames()), start_s=spec.exposure_s)
    assert b.fog_free_s == pytest.approx(a.fog_free_s, abs=0.5 / spec.fps)
    assert sorted(round(v.area_mm2) for v in a.voids) == pytest.approx(sorted(round(v.area_mm2) for v in b.voids), rel=0.1)


def test_haze_at_traps_rises_with_fog():
    sim = _sim(71, "uniform")
    spec = random_fog_sequence(np.random.default_rng(71), sim, fps=5, coating="failing", fog_free_s=3.0, n_voids=0)
    res = _analyse(FogRenderer(sim, spec), _station(sim), start_s=spec.exposure_s)
    haze = [f.haze_traps_pct for f in res.frames]
    assert all(h is not None for h in haze)
    assert haze[0] < 3.0 and haze[-1] > 20.0


def test_crossing_time_interpolates():
    t = np.arange(6.0)
    assert crossing_time(t, [1, 1, 0.9, 0.7, 0.5, 0.4], 0.8, 0.0) == pytest.approx(2.5)
    assert crossing_time(t, [1, 0.7, 1, 1, 1, 1], 0.8, 0.0) is None  # one noisy frame is no fog


# -- bad input ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def short_run():
    sim = _sim(81, "pattern")
    spec = random_fog_sequence(np.random.default_rng(81), sim, fps=5, coating="failing", fog_free_s=2.0,
                               rise_s=0.3, exposure_s=2.0, duration_s=6.0, n_voids=0)
    r = FogRenderer(sim, spec)
    return sim, spec, list(r.frames())


def test_sequence_shorter_than_clear_reference(short_run):
    sim, spec, frames = short_run
    with pytest.raises(InputError, match="shorter than the clear reference"):
        _analyse(None, _station(sim), frames=frames[:3], start_s=None)
    with pytest.raises(InputError, match="shorter than the clear reference"):
        _analyse(None, _station(sim), frames=frames, start_s=20.0)


def test_no_clear_frames_already_fogged(short_run):
    sim, spec, frames = short_run
    fogged = [(t - 5.0, im) for t, im in frames if t >= 5.0]
    with pytest.raises(InputError, match="no clear frames"):
        _analyse(None, _station(sim), frames=fogged, start_s=None, reference_s=0.4)
    with pytest.raises(InputError, match="clear frame"):
        _analyse(None, _station(sim), frames=frames, start_s=0.0)


def test_frames_of_varying_size(short_run):
    sim, spec, frames = short_run
    bad = frames[:5] + [(frames[5][0], frames[5][1][:-8])]
    with pytest.raises(InputError, match="frames of one size"):
        _analyse(None, None, frames=bad)


def test_cli_video_that_cannot_be_opened(cli, tmp_path):
    video = tmp_path / "broken.avi"
    video.write_bytes(b"this is not a video")
    res = cli("fogtest", video, "--out", tmp_path / "out")
    assert res.exit_code == 2
    assert "not a video OpenCV can read" in res.output


def test_cli_writes_json_plots_and_html(cli, tmp_path):
    sim = _sim(91, "pattern", period_mm=2.0)
    spec = random_fog_sequence(np.random.default_rng(91), sim, fps=5, coating="failing", fog_free_s=5.0,
                               exposure_s=2.0, n_voids=1, duration_s=10.0)
    truth = write_fog_sequence(tmp_path / "fog", sim, spec)
    _station(sim).save(tmp_path / "station")
    for src in (tmp_path / "fog" / "fog.avi", tmp_path / "fog" / "frames"):
        out = tmp_path / f"out_{src.name}"
        res = cli("fogtest", src, "--station", tmp_path / "station", "--start", "2.0", "--out", out)
        assert res.exit_code == 0, res.output
        doc = json.loads((out / "fogtest.json").read_text())
        assert abs(doc["fog_free_s"] - truth["fog_free_s"]) <= 1 / spec.fps
        assert doc["n_verdict"] == "fail"
        assert len(doc["voids"]) == 1 and {"area_mm2", "onset_s", "zone", "bbox_px"} <= set(doc["voids"][0])
        assert len(doc["contrast_curve"]["t_s"]) == spec.n_frames
        for name in ("fogtest_contrast.png", "fogtest_voids.png", "fogtest.html"):
            assert (out / name).stat().st_size > 1000
        assert "fogtest_contrast.png" in (out / "fogtest.html").read_text()
