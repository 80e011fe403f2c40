"""Invariants of the analyses, uncalibrated recall, and bad input to the pipeline.

Stations here are built straight from the simulator (averaged dark and flats, the true trap
positions), so each test isolates the analyses from calibration.
"""

from __future__ import annotations

import dataclasses
import itertools

import cv2
import numpy as np
import pytest

from goggleqc.calibration.station import Station, Trap
from goggleqc.errors import InputError
from goggleqc.inspect.pipeline import check_exposure, inspect_lens
from goggleqc.spec import load_spec
from goggleqc.synth import Scratch, SimStation, Spot, random_lens, random_station, render_lens
from goggleqc.synth.scenes import centred, target_dust_px
from goggleqc.synth.scoring import evaluate
from goggleqc.synth.station import Camera, StationParams

PS = 0.1
SPEC = load_spec("en166-clear")


def station_pair(seed: int, backlight: str = "uniform", bits: int = 8, size=(480, 384), defocused=False):
    params = random_station(np.random.default_rng(seed), width=size[0], height=size[1], pixel_size_mm=PS,
                            backlight=backlight, bits=bits)
    if defocused:
        bl = params.backlight
        params = dataclasses.replace(params, backlight=dataclasses.replace(bl, defocus_mm=max(bl.defocus_mm, 0.15 * bl.period_mm)))
    return _from_params(params, seed)


def _from_params(params: StationParams, seed: int):
    sim = SimStation(params)
    rng = np.random.default_rng([seed, 9])
    flat = np.mean([sim.flat_frame(rng).astype(np.float32) for _ in range(4)], 0) - sim.dark_map
    c = ((params.width - 1) / 2, (params.height - 1) / 2)
    traps = tuple(Trap(c[0] + t.x_mm / PS, c[1] + t.y_mm / PS, t.diameter_mm / PS / 2) for t in params.backlight.traps)
    station = Station(dark=sim.dark_map.copy(), flat=flat.astype(np.float32), bits=params.camera.bits,
                      pixel_size_mm=PS, backlight=params.backlight.kind, traps=traps)
    return sim, station


def _lens_with(sim, seed):
    """A lens with a clear scratch and a clear spot in the central zone."""
    rng = np.random.default_rng(seed)
    base = random_lens(rng, sim, defects=0, haze=0.01, tau_clear=0.9)
    p = sim.params
    cx, cy = p.width / 2 + (p.product.half_width_mm + p.product.eye_gap_mm / 2) / PS * (p.product.kind == "two_eye"), p.height / 2
    return dataclasses.replace(base, pose=dataclasses.replace(base.pose, angle_deg=0.0),
                               scratches=(Scratch(((cx - 50, cy + 20), (cx - 10, cy + 45)), 1.5, 0.25),),
                               spots=(Spot(cx + 35, cy + 35, 8.0, 0.6),))


def _summary(result):
    return (result.verdict, len(result.scratches), len(result.spots), len(result.coating))


def test_defect_free_lens_gives_nothing():
    sim, station = station_pair(1)
    for i in range(5):
        lens = random_lens(np.random.default_rng(i), sim, defects=0, haze=0.01, tau_clear=0.9)
        image, _ = render_lens(sim, lens, np.random.default_rng(i))
        res = inspect_lens(image, station, SPEC)
        assert (res.scratches, res.spots, res.coating) == ([], [], []) and res.verdict == "pass"


def test_a_2mp_frame_of_coarse_pixels_has_no_line_along_the_lens_rim():
    """1600×1200 at 0.1 mm/px: the lens is found on cells of 8 px and the analyses run on a
    working grid of 2, so the mask's edge may lie 4 px outside the lens and the lens' own
    blurred rim, 3–4 px inside, fell among the valid pixels: about one false scratch per lens
    along the rim (stress sets, seed 91017). The mask now gives up the difference."""
    from goggleqc.benchmarking import calibrate_from_sim
    from goggleqc.inspect.pipeline import lens_edge_slack

    assert (lens_edge_slack(8, 2), lens_edge_slack(2, 2), lens_edge_slack(4, 2), lens_edge_slack(8, 4)) == (1, 0, 0, 0)
    params = random_station(np.random.default_rng([91017, 0]), width=1600, height=1200, pixel_size_mm=0.1,
                            backlight="uniform", seed=91017)
    sim = SimStation(params)
    station = calibrate_from_sim(sim, np.random.default_rng(5))
    found = []
    for i in range(3):
        lens = random_lens(np.random.default_rng([91017, i]), sim, defects=0)
        image, _ = render_lens(sim, lens, np.random.default_rng(i))
        found += inspect_lens(image, station, SPEC).scratches
    assert found == []


@pytest.mark.parametrize("gain", [0.95, 1.05])
def test_gain_change_changes_nothing(gain):
    sim, station = station_pair(2)
    lens = _lens_with(sim, 3)
    ref = inspect_lens(render_lens(sim, lens, np.random.default_rng(4))[0], station, SPEC)
    moved = inspect_lens(render_lens(sim, dataclasses.replace(lens, gain=gain), np.random.default_rng(4))[0], station, SPEC)
    assert _summary(ref) == _summary(moved) == ("fail", 1, 1, 0)
    assert moved.scratches[0].length_mm == pytest.approx(ref.scratches[0].length_mm, rel=0.1)
    assert moved.transmittance_pct == pytest.approx(ref.transmittance_pct, abs=0.5)


def test_left_right_flip_mirrors_the_defects():
    sim, station = station_pair(5)
    lens = _lens_with(sim, 6)
    image, truth = render_lens(sim, lens, np.random.default_rng(7))
    w = image.shape[1]
    flipped = Station(dark=np.ascontiguousarray(station.dark[:, ::-1]), flat=np.ascontiguousarray(station.flat[:, ::-1]),
                      bits=station.bits, pixel_size_mm=PS, backlight=station.backlight,
                      traps=tuple(Trap(w - 1 - t.x_px, t.y_px, t.r_px) for t in station.traps))
    a = inspect_lens(image, station, SPEC)
    b = inspect_lens(np.ascontiguousarray(image[:, ::-1]), flipped, SPEC)
    assert _summary(a) == _summary(b)
    for oa, ob in zip(a.scratches + a.spots, b.scratches + b.spots):
        ax0, ay0, ax1, ay1 = oa.bbox_px
        bx0, by0, bx1, by1 = ob.bbox_px
        assert abs((w - ax1) - bx0) <= 3 and abs((w - ax0) - bx1) <= 3 and abs(ay0 - by0) <= 3


def test_8_and_16_bit_agree():
    params8 = random_station(np.random.default_rng(8), width=480, height=384, pixel_size_mm=PS, backlight="pattern", bits=8)
    cam16 = Camera(**{**params8.camera.__dict__, "bits": 16, "data_bits": 12})
    sim8, st8 = _from_params(params8, 8)
    sim16, st16 = _from_params(dataclasses.replace(params8, camera=cam16), 8)
    lens = _lens_with(sim8, 9)
    a = inspect_lens(render_lens(sim8, lens, np.random.default_rng(10))[0], st8, SPEC)
    b = inspect_lens(render_lens(sim16, lens, np.random.default_rng(10))[0], st16, SPEC)
    assert _summary(a) == _summary(b) == ("fail", 1, 1, 0)
    assert a.scratches[0].length_mm == pytest.approx(b.scratches[0].length_mm, rel=0.1)
    assert a.spots[0].diameter_mm == pytest.approx(b.spots[0].diameter_mm, rel=0.15)
    assert a.haze_pct == pytest.approx(b.haze_pct, abs=0.3)


def _coarse_pattern_stations(count: int):
    """Defocused pattern stations whose period spans at least 3 mm (30 px here)."""
    seed, out = 50, []
    while len(out) < count:
        sim, _ = station_pair(seed, "pattern", defocused=True)
        if sim.params.backlight.period_mm >= 3.0:
            out.append(sim)
        seed += 1
    return out


def test_uncalibrated_scratch_recall_on_a_defocused_pattern():
    """Issue 4: ≥ 90 % for scratches ≥ 1 mm on a pattern backlight, no station at all.

    Uncalibrated, the background is the pattern's own neighbouring cells (a median over the
    lattice the frame's autocorrelation gives). Target 90 %; reached 77 % on these defocused
    patterns of 3 mm and more (66 % with a local quadratic fit, 71 % before the lattice was
    read to a pixel or two of the lens edge), with no false scratch on a defect-free lens. The misses are hairlines of a few percent that run over dark
    pattern cells, where too little light comes through to see them without a flat. The
    issue note reports this as not met. A calibrated station removes any pattern through its
    flat.
    """
    pairs = []
    stations = _coarse_pattern_stations(8)
    for i in range(80):
        sim = stations[i // 10]
        rng = np.random.default_rng([i, 11])
        lens = random_lens(rng, sim, kinds=("scratch", "spot"))
        image, truth = render_lens(sim, lens, rng)
        res = inspect_lens(image, None, SPEC, pixel_size_mm=PS)
        assert res.verdict != "error", res.error
        assert res.haze_pct is None and res.extra["haze_contrast_index"] >= 0
        pairs.append((truth, res.to_dict()))
    m = evaluate(pairs, SPEC)
    assert m["n_scratch_1mm"] >= 25
    assert m["recall_scratch_1mm"] >= 0.75
    assert m["false_scratches_per_clean_lens"] <= 0.05


def test_a_large_spot_in_a_large_photograph_is_a_spot():
    """A 1.3 mm dust particle in a 3 MP photograph at 0.016 mm/px is 80 px across. The
    largest spot was a fixed 60 px, so above 2.5 MP (a working grid of 4) it was never
    reported; the limit now grows with the working grid, as the detector's scales do."""
    from goggleqc.synth.scenes import close_up_station

    sim = SimStation(close_up_station(np.random.default_rng(31), width=2000, height=1500, pixel_size_mm=0.016))
    base = centred(random_lens(np.random.default_rng(32), sim, defects=0, haze=0.01, tau_clear=0.9))
    lens = dataclasses.replace(base, spots=(Spot(1000.0, 750.0, 80.0, 0.5),))
    image, _ = render_lens(sim, lens, np.random.default_rng(33))
    res = inspect_lens(image, None, SPEC)
    near = [sp for sp in res.spots if abs((sp.bbox_px[0] + sp.bbox_px[2]) / 2 - 1000) < 30
            and abs((sp.bbox_px[1] + sp.bbox_px[3]) / 2 - 750) < 30]
    assert len(near) == 1 and 60 < near[0].diameter_px < 100


def test_dust_on_a_strongly_defocused_target_in_a_large_photograph_is_a_mark():
    """0.9 mm of dust on a target 0.37 mm out of focus, photographed at 0.016 mm/px: blurred,
    it is over 100 px across, wider than the window a blob is measured in (80 px at a working
    grid of 4), so it read as 67 px, under the 3.5 blur σ (76 px) asked of target dust, and,
    once large spots were allowed, came back as a 9 % "spot". A blob that fills its window is
    asked no more than the window."""
    from goggleqc.synth.scenes import close_up

    sim, image, _ = close_up(np.random.default_rng(7102), np.random.default_rng([7100, 7, 5]), width=4000, height=3000,
                             pixel_size_mm=0.016)
    (dx, dy), = target_dust_px(sim.params)
    res = inspect_lens(image, None, SPEC)

    def near(obj):
        return abs((obj.bbox_px[0] + obj.bbox_px[2]) / 2 - dx) < 40 and abs((obj.bbox_px[1] + obj.bbox_px[3]) / 2 - dy) < 40

    assert not any(near(sp) for sp in res.spots)
    assert any(near(m) and m.kind == "target" for m in res.marks)


def test_dust_that_nearly_fills_its_window_in_a_phone_photograph_is_a_mark():
    """Dust on a grid 0.38 mm out of focus, in a 12 MP photograph (sRGB, JPEG-like) at
    0.02 mm/px: blurred by 19 px it measured 62–64 px in its 80 px window, a hair under the
    0.8 of the window once asked of target dust, and two 8 % "spots" of 1.3 mm failed a
    defect-free lens. A blob measuring 0.7 of its window now fills it; its blurred edge still
    has to say it is on the target."""
    from goggleqc.inspect.tone import Tone
    from goggleqc.synth.scenes import close_up

    sim, image, truth = close_up(np.random.default_rng(3203), np.random.default_rng([3200, 3, 5]), width=4000,
                                 height=3000, pixel_size_mm=0.02, photo=True)
    assert not truth["spots"] and not truth["scratches"]
    res = inspect_lens(image, None, SPEC, pixel_size_mm=0.02, tone=Tone("srgb"))
    dust = target_dust_px(sim.params)

    def on_dust(obj):
        return any(abs((obj.bbox_px[0] + obj.bbox_px[2]) / 2 - x) < 40 and abs((obj.bbox_px[1] + obj.bbox_px[3]) / 2 - y) < 40
                   for x, y in dust)

    assert not res.spots
    assert sum(on_dust(m) and m.kind == "target" for m in res.marks) >= 2


def test_uncalibrated_sizes_are_in_pixels_without_a_pixel_size():
    sim, _ = station_pair(12, "pattern", defocused=True)
    image, _ = render_lens(sim, _lens_with(sim, 13), np.random.default_rng(14))
    res = inspect_lens(image, None, SPEC)
    assert res.scratches and res.scratches[0].length_mm is None and res.scratches[0].length_px > 30
    assert res.scratches[0].zone == "unknown"
    # the 1 mm limit is judged at 0.1 mm/px (10 px), never left unchecked on a pass
    assert res.verdict == "fail" and "scratch length_mm" not in res.extra.get("unchecked_limits", [])
    assert any(r.code == "scratch" and r.unit == "px" and "--pixel-size" in r.message for r in res.reasons)


# -- bad input: each a clear error verdict, never an exception -----------------------------
def _good_image():
    sim, station = station_pair(20)
    image, _ = render_lens(sim, random_lens(np.random.default_rng(1), sim, defects=0), np.random.default_rng(1))
    return sim, station, image


def test_wrong_size_for_the_station():
    _, station, image = _good_image()
    res = inspect_lens(image[:-10], station, SPEC, name="small.png")
    assert res.verdict == "error"
    assert "small.png is 480×374 but the station was calibrated at 480×384" in res.error


def test_wrong_bit_depth_for_the_station():
    _, station, image = _good_image()
    res = inspect_lens(image.astype(np.uint16) * 16, station, SPEC)
    assert res.verdict == "error" and "16-bit but the station was calibrated with 8-bit" in res.error


@pytest.mark.parametrize("value, message", [(0, "blank"), (255, "saturated")])
def test_blank_or_saturated_frame(value, message):
    _, station, image = _good_image()
    res = inspect_lens(np.full_like(image, value), station, SPEC)
    assert res.verdict == "error" and message in res.error


@pytest.mark.parametrize("level", [0.3, 0.6, 0.9])
def test_ten_bit_data_in_a_16_bit_file_is_not_blank(level):
    """10-bit cameras write 0–1023 in 16-bit files (station-model §1): a frame at 60 % of that
    range is at 1 % of 65535, and was refused as blank until it was judged against its own depth."""
    _, _, image = _good_image()
    ten_bit = np.round(image.astype(np.float64) * (1023 / 255) * level).astype(np.uint16)
    check_exposure(ten_bit)  # no InputError
    res = inspect_lens(ten_bit, None, SPEC)
    assert res.verdict != "error", res.error
    with pytest.raises(InputError, match="blank"):
        check_exposure(np.full_like(ten_bit, 3))


def test_no_lens_in_the_fixture():
    sim, station, _ = _good_image()
    empty = sim.flat_frame(np.random.default_rng(3))
    res = inspect_lens(empty, station, SPEC)
    assert res.verdict == "error" and not res.lens_found
    assert res.error.startswith("no lens found")
    assert res.reasons[0].code == "error"


def test_nan_producing_flat():
    _, station, image = _good_image()
    broken = Station(dark=station.dark, flat=np.where(station.flat > 0, station.flat, np.nan).astype(np.float32),
                     bits=8, pixel_size_mm=PS, backlight="uniform")
    broken.flat[0, 0] = np.nan
    res = inspect_lens(image, broken, SPEC)
    assert res.verdict == "error" and "NaN" in res.error and "recalibrate" in res.error


def test_photograph_through_the_lens_without_a_frame_is_inspected_whole():
    """Uncalibrated close-ups show lens everywhere: no frame, so the whole image is the lens."""
    import cv2

    from goggleqc.synth.render import render_plate

    params = random_station(np.random.default_rng(3), width=640, height=512, pixel_size_mm=PS, backlight="pattern",
                            bits=8)
    bl = params.backlight
    sim = SimStation(dataclasses.replace(params, backlight=dataclasses.replace(bl, defocus_mm=0.2 * bl.period_mm)))
    clean = render_plate(sim, 1.0, np.random.default_rng(1))
    res = inspect_lens(clean, None, SPEC, pixel_size_mm=PS)
    assert res.verdict == "pass" and res.extra["lens_outline"].startswith("whole frame")
    scratched = clean.astype(np.float32)
    mask = np.zeros(clean.shape, np.uint8)
    cv2.line(mask, (200, 150), (330, 260), 1, 2)
    scratched = np.where(mask > 0, scratched * 0.75, scratched).astype(clean.dtype)
    res = inspect_lens(scratched, None, SPEC, pixel_size_mm=PS)
    assert len(res.scratches) == 1 and res.scratches[0].zone == "unknown"
    assert res.scratches[0].length_mm == pytest.approx(np.hypot(130, 110) * PS, rel=0.15)
    assert res.verdict == "fail"  # an unknown zone is held to the central limit


@pytest.mark.parametrize("side", ["left", "right", "top"])
def test_a_photograph_through_the_lens_with_a_strip_of_frame_in_view(side):
    """A photograph through a lens often shows a strip of the goggle's frame along one side.
    Inspected as lens, the strip's edge read as a 10–50 mm scratch and a row of spots on every
    clean close-up tried. The strip is left out; the lens' own defects are still found."""
    from goggleqc.synth.scenes import close_up

    for i in range(3):
        _, image, truth = close_up(np.random.default_rng(5200 + i), np.random.default_rng([5200, i, 5]),
                                   pixel_size_mm=PS, kinds=("spot",))
        h, w = image.shape
        along = np.arange(h if side == "top" else w, dtype=np.float32)
        edge = np.clip((along - 70) / 3.0, 0, 1)  # 7 mm of frame, a 0.3 mm soft edge
        if side == "right":
            edge = edge[::-1]
        gain = (0.03 + 0.97 * edge)[:, None] if side == "top" else (0.03 + 0.97 * edge)[None, :]
        framed = np.rint(image.astype(np.float32) * gain).astype(image.dtype)
        plain, res = inspect_lens(image, None, SPEC, pixel_size_mm=PS), inspect_lens(framed, None, SPEC, pixel_size_mm=PS)
        assert "less the goggle frame" in res.extra["lens_outline"]

        def away(found):  # what lies more than 1 mm clear of the strip
            x0, y0, x1, _ = found.bbox_px
            return {"left": x0, "top": y0, "right": w - x1}[side] > 80

        for kind in ("scratches", "spots"):
            assert all(away(f) for f in getattr(res, kind)), kind
            assert len(getattr(res, kind)) == len([f for f in getattr(plain, kind) if away(f)]), kind


def test_a_strip_of_frame_that_narrows_is_left_out_along_its_whole_length():
    """A goggle frame's strip curving out of view runs thinner at one end than a target cell.
    The closing that finds the frame fills its thin end, which was read as lens: its edge
    became a 2 mm scratch (a false reject on 4 % of the second renderer's photographs). The
    frame is grown through the pixels as dark as itself, so the whole strip is left out."""
    from goggleqc.synth.render import render_lens
    from goggleqc.synth.scenes import close_up_station

    for i in range(3):
        sim = SimStation(close_up_station(np.random.default_rng(5300 + i), pixel_size_mm=PS))
        rng = np.random.default_rng([5300, i, 5])
        image, truth = render_lens(sim, centred(random_lens(rng, sim, defects=0)), rng)
        h, w = image.shape
        depth = np.linspace(70, 12, w, dtype=np.float32)  # 7 mm of frame at the left, 1.2 mm at the right
        rows = np.arange(h, dtype=np.float32)[:, None]
        edge = np.clip((rows - depth[None, :]) / 3.0, 0, 1)
        framed = np.rint(image.astype(np.float32) * (0.03 + 0.97 * edge)).astype(image.dtype)
        res = inspect_lens(framed, None, SPEC, pixel_size_mm=PS)
        assert "less the goggle frame" in res.extra["lens_outline"]
        assert not truth["scratches"] and not truth["spots"]
        assert res.verdict == "pass", [r.message for r in res.reasons]


def test_a_strip_of_frame_thinner_than_a_target_cell_all_along_is_left_out():
    """A strip of goggle frame only a few millimetres deep, all along the picture's edge: the
    closing that finds the frame filled it whole (every dark feature narrower than its square
    is filled), so no frame was found and its edge read as 3–4 mm scratches of 50 % (a false
    reject on the second renderer's photographs). The closing now sees the picture continued
    dark beyond its border: a strip along the border is kept however thin it runs, while a
    target's cell cut by the border is still filled."""
    from goggleqc.synth.render import render_lens
    from goggleqc.synth.scenes import close_up_station

    for i in range(3):
        sim = SimStation(close_up_station(np.random.default_rng(5500 + i), pixel_size_mm=PS))
        rng = np.random.default_rng([5500, i, 5])
        image, truth = render_lens(sim, centred(random_lens(rng, sim, defects=0)), rng)
        h, w = image.shape
        depth = np.linspace(h - 32, h - 14, w, dtype=np.float32)  # 1.4–3.2 mm of frame along the bottom
        rows = np.arange(h, dtype=np.float32)[:, None]
        edge = np.clip((depth[None, :] - rows) / 3.0, 0, 1)
        framed = np.rint(image.astype(np.float32) * (0.03 + 0.97 * edge)).astype(image.dtype)
        res = inspect_lens(framed, None, SPEC, pixel_size_mm=PS)
        assert "less the goggle frame" in res.extra["lens_outline"]
        assert not truth["scratches"] and not truth["spots"]
        assert res.verdict == "pass", [r.message for r in res.reasons]


@pytest.mark.parametrize("corner", ["top-left", "top-right", "bottom-left", "bottom-right"])
def test_a_scratch_in_a_corner_of_a_photograph_on_a_pattern(corner):
    """Without a flat, a periodic backlight's background at a pixel is the median of its
    neighbouring cells; within a period of two of the picture's borders only three of them
    lie in the picture, and the corners went unjudged: 1.5 cells square in each, about 9 % of
    a photograph (a 2.3 mm scratch of 14 % missed, second renderer). Three cells now serve
    there, their residue measured against the rest's; a clean picture stays clean."""
    import cv2

    from goggleqc.synth.render import render_lens
    from goggleqc.synth.scenes import close_up_station

    found = 0
    for i in range(3):
        sim = SimStation(close_up_station(np.random.default_rng(5600 + i), pixel_size_mm=PS))
        rng = np.random.default_rng([5600, i, 5])
        image, _ = render_lens(sim, centred(random_lens(rng, sim, defects=0)), rng)
        h, w = image.shape
        assert inspect_lens(image, None, SPEC, pixel_size_mm=PS).verdict == "pass"
        x0, y0 = (14 if "left" in corner else w - 40), (16 if "top" in corner else h - 24)
        mask = np.zeros(image.shape, np.uint8)
        cv2.line(mask, (x0, y0), (x0 + 24, y0 + 6), 1, 2)  # 2.5 mm of 25 %
        res = inspect_lens(np.where(mask > 0, image * 0.75, image).astype(image.dtype), None, SPEC,
                           pixel_size_mm=PS)
        found += any(s.length_mm >= 1.5 and abs(s.bbox_px[0] - x0) < 10 for s in res.scratches)
    assert found == 3


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_scratch_by_the_side_of_a_bent_photograph_is_found(side):
    """In a bent view every neighbouring cell is remapped, and OpenCV's cubic remap left the
    first and last 8 columns of each unknown (a NaN border value times zero weights): a band
    along the picture's left and right edges was never judged (scratches of 5–19 % missed on
    the second renderer's photographs). It is judged now, its one-sided cells' residue
    measured against the rest's as the corners' is; a clean bent picture stays clean."""
    import cv2

    from goggleqc.inspect.background import relative_image
    from goggleqc.synth.render import render_lens
    from goggleqc.synth.scenes import close_up_station

    found = 0
    for i in range(3):
        sim = SimStation(close_up_station(np.random.default_rng(5650 + i), pixel_size_mm=PS, warp=0.15))
        rng = np.random.default_rng([5650, i, 5])
        image, _ = render_lens(sim, centred(random_lens(rng, sim, defects=0)), rng)
        h, w = image.shape
        assert inspect_lens(image, None, SPEC, pixel_size_mm=PS).verdict == "pass"
        assert relative_image(image).model == "lattice"
        x0, y0 = (5 if side == "left" else w - 6), h // 2 - 12
        mask = np.zeros(image.shape, np.uint8)
        cv2.line(mask, (x0, y0), (x0 + (10 if side == "left" else -10), y0 + 24), 1, 2)  # 2.6 mm of 25 %
        res = inspect_lens(np.where(mask > 0, image * 0.75, image).astype(image.dtype), None, SPEC,
                           pixel_size_mm=PS)
        found += any(s.length_mm >= 1.5 and abs(s.bbox_px[1] - y0) < 8 for s in res.scratches)
    assert found == 3


def test_a_scratch_running_into_the_picture_edge_is_measured_to_it():
    """The band along a photograph's edge is not judged (the background there is one-sided),
    so a scratch running into the edge lost its last pixels there, and its end, cut rather than
    overshot, lost the overshoot taken off a line's ends too: a 1.4 mm scratch measured 0.7 mm
    and passed (second renderer). An end near the edge and heading for it now runs on to it."""
    import cv2

    from goggleqc.synth.render import render_lens
    from goggleqc.synth.scenes import close_up_station

    ratios = []
    for i in range(3):
        sim = SimStation(close_up_station(np.random.default_rng(5700 + i), pixel_size_mm=PS))
        rng = np.random.default_rng([5700, i, 5])
        image, _ = render_lens(sim, centred(random_lens(rng, sim, defects=0)), rng)
        h, w = image.shape
        mask = np.zeros(image.shape, np.uint8)
        cv2.line(mask, (w - 20, 250), (w - 1, 254), 1, 2)  # 1.9 mm of 25 % into the right edge
        res = inspect_lens(np.where(mask > 0, image * 0.75, image).astype(image.dtype), None, SPEC,
                           pixel_size_mm=PS)
        near = [s for s in res.scratches if s.bbox_px[2] >= w - 12]
        assert len(near) == 1
        ratios.append(near[0].length_mm / (np.hypot(19, 4) * PS))
    assert 0.75 <= float(np.median(ratios)) <= 1.25


def _scratch_at_the_lens_edge(seed: int, backlight: str, beyond_px: float):
    """Measured length ÷ length on the clear lens of a 25 % scratch from 4.5 mm inside the lens'
    right edge to ``beyond_px`` past it (negative: ending short of it)."""
    from goggleqc.synth.render import render_masks

    sim, station = station_pair(seed, backlight)
    base = centred(random_lens(np.random.default_rng([seed, 1]), sim, defects=0, haze=0.01, tau_clear=0.9))
    masks = render_masks(sim.params, base.pose)
    y = int(masks.lens.shape[0] / 2 + 25)
    edge = int(np.flatnonzero(masks.lens[y] > 0.5)[-1])
    a = np.array([edge - 45.0, y - 12.0])
    b = np.array([edge + beyond_px, y - 12.0 + 12.0 * (45 + beyond_px) / 45])
    pts = a + np.linspace(0, 1, 2000)[:, None] * (b - a)
    on_lens = float(np.hypot(*(b - a))) * float(np.mean(masks.inside_mm[np.rint(pts[:, 1]).astype(int),
                                                                         np.rint(pts[:, 0]).astype(int)] > 0))
    lens = dataclasses.replace(base, scratches=(Scratch((tuple(a), tuple(b)), 1.5, 0.25),))
    image, _ = render_lens(sim, lens, np.random.default_rng([seed, 2]))
    near = [s for s in inspect_lens(image, station, SPEC).scratches if s.bbox_px[2] >= edge - 25]
    assert len(near) == 1
    return near[0].length_px / on_lens


@pytest.mark.parametrize("backlight", ["uniform", "pattern"])
def test_a_scratch_running_off_the_lens_is_measured_to_its_edge(backlight):
    """The margin kept from the lens' outline (where the outline's blur would read as a line)
    hid the last half millimetre of a scratch running off the lens: 4.7 mm read 3.7–4.1 mm
    (0.78–0.88), and on the second renderer's noisy station such scratches made the median
    length error 14 %. A line still there in the margin now runs on to the outline; one that
    ends just short of the outline, inside the margin, does not."""
    off = [_scratch_at_the_lens_edge(seed, backlight, 15.0) for seed in (41, 42, 43, 44)]
    assert 0.92 <= float(np.median(off)) <= 1.1
    short = [_scratch_at_the_lens_edge(seed, backlight, -6.0) for seed in (41, 42, 43, 44)]
    assert max(short) <= 1.1


def test_a_line_hugging_the_picture_edge_is_not_judged_but_a_scratch_crossing_it_is():
    """Without a flat, the background along the picture's edge is estimated from one side only,
    and a pattern line cut by the edge leaves a line of residue along it (false rejects on
    3 % of the second renderer's photographs). A line lying within
    :data:`~goggleqc.inspect.scratches.BORDER_BAND_PX` working px of the edge and running along
    it is not judged; a scratch that crosses the edge, or runs along it further in, is."""
    import cv2

    from goggleqc.inspect.scratches import BORDER_BAND_PX
    from goggleqc.synth.render import render_lens
    from goggleqc.synth.scenes import close_up_station

    sim = SimStation(close_up_station(np.random.default_rng(5400), pixel_size_mm=PS))
    rng = np.random.default_rng([5400, 5])
    image, _ = render_lens(sim, centred(random_lens(rng, sim, defects=0)), rng)
    h, w = image.shape
    rows = np.arange(h, dtype=np.float32)[:, None]
    edge_line = 1.0 - 0.25 * np.exp(-0.5 * ((rows - 3.0) / 1.5) ** 2)  # a dark line 3 px from the top edge
    lined = np.rint(image * edge_line).astype(image.dtype)
    assert inspect_lens(lined, None, SPEC, pixel_size_mm=PS).scratches == []

    def scratched(base, p0, p1):
        mask = np.zeros(image.shape, np.uint8)
        cv2.line(mask, p0, p1, 1, 2)
        return np.where(mask > 0, base * 0.75, base).astype(image.dtype)

    band = BORDER_BAND_PX * 2  # full-resolution px (working scale 2 at this size)
    across = inspect_lens(scratched(image, (300, 0), (330, 120)), None, SPEC, pixel_size_mm=PS).scratches
    along = inspect_lens(scratched(lined, (200, band + 20), (400, band + 20)), None, SPEC, pixel_size_mm=PS).scratches
    assert len(across) == 1 and across[0].length_mm == pytest.approx(np.hypot(30, 120) * PS, rel=0.15)
    assert len(along) == 1 and along[0].length_mm == pytest.approx(200 * PS, rel=0.15)


def test_uncalibrated_close_ups_of_a_lens_on_a_pattern():
    """Simulated photographs taken through a lens that fills the frame, on defocused patterns.

    The uncalibrated case real photographs look like. Issue 4 asks 90 % recall for scratches of
    1 mm or more; reached ~78 % (59 % with a local quadratic background), with no false
    scratch and ~0.07 false spot per defect-free lens, and no false reject.
    """
    from goggleqc.synth.scenes import close_up

    pairs = []
    for i in range(60):
        _, image, truth = close_up(np.random.default_rng(200 + i // 6), np.random.default_rng([i, 5]), pixel_size_mm=PS)
        res = inspect_lens(image, None, SPEC, pixel_size_mm=PS)
        assert res.verdict != "error", res.error
        pairs.append((truth, res.to_dict()))
    m = evaluate(pairs, SPEC)
    assert m["n_scratch_1mm"] >= 25
    assert m["recall_scratch_1mm"] >= 0.74
    assert m["false_scratches_per_clean_lens"] <= 0.05
    assert m["false_spots_per_clean_lens"] <= 0.15
    assert m["false_reject_rate"] <= 0.05


@pytest.mark.parametrize("width_px, contrast", [(0.5, 0.3), (3.0, 0.3), (3.0, 0.1)])
def test_scratch_width_and_contrast_mean_what_the_model_says(width_px, contrast):
    """A line wider than the optics reports its width and its τ drop; a hairline narrower
    than a pixel reports the darkening a pixel sees, c·w (station-model §3)."""
    sim, station = station_pair(31)
    base = random_lens(np.random.default_rng(32), sim, defects=0, haze=0.01, tau_clear=0.9)
    base = centred(base)
    p = sim.params
    cx = p.width / 2 + (p.product.half_width_mm + p.product.eye_gap_mm / 2) / PS * (p.product.kind == "two_eye")
    cy = p.height / 2 + 60
    lens = dataclasses.replace(base, scratches=(Scratch(((cx - 40, cy - 12), (cx + 40, cy + 12)), width_px, contrast),))
    image, truth = render_lens(sim, lens, np.random.default_rng(33))
    res = inspect_lens(image, station, SPEC)
    assert len(res.scratches) == 1
    sc, t = res.scratches[0], truth["scratches"][0]
    assert sc.contrast == pytest.approx(t["contrast"], rel=0.35)
    if width_px >= 2:
        assert sc.width_px == pytest.approx(width_px, rel=0.4)
    else:  # below the optics' resolution a width is only bounded (the PSF is 0.5–1.2 px)
        assert sc.width_px < 2.0


@pytest.mark.parametrize("width_px, contrast", [(1.0, 0.3), (4.0, 0.1)])
def test_scratch_width_and_contrast_on_a_coarse_working_grid(monkeypatch, width_px, contrast):
    """At 0.05 mm/px the working grid's cell is 4 px, and the line's phase on it widens its
    profile with the cell (scratches.GRID_WIDTH2_PER_F2). Taken as a constant, as measured at
    f = 2, every line read about a pixel too wide and its contrast low (the second renderer's
    photographs at 0.04 mm/px: short faint scratches dropped as residue, 5.8 % false
    accepts). A line of 1 px is below what the grid resolves: only its darkening is bounded."""
    from goggleqc.benchmarking import calibrate_from_sim
    from goggleqc.inspect import scratches as scratches_module
    from goggleqc.inspect.background import working_scale

    ps = 0.05
    params = random_station(np.random.default_rng(31), width=1600, height=1280, pixel_size_mm=ps,
                            backlight="uniform", bits=8)
    sim = SimStation(params)
    station = calibrate_from_sim(sim, np.random.default_rng(7))
    assert working_scale(station.shape, ps) == 4
    base = centred(random_lens(np.random.default_rng(32), sim, defects=0, haze=0.01, tau_clear=0.9))
    p = sim.params
    cx = p.width / 2 + (p.product.half_width_mm + p.product.eye_gap_mm / 2) / ps * (p.product.kind == "two_eye")
    cy = p.height / 2 + 120
    lens = dataclasses.replace(base, scratches=(Scratch(((cx - 80, cy - 24), (cx + 80, cy + 24)), width_px, contrast),))
    image, truth = render_lens(sim, lens, np.random.default_rng(33))

    def measured():
        res = inspect_lens(image, station, SPEC)
        assert len(res.scratches) == 1, res.scratches
        return res.scratches[0]

    sc, t = measured(), truth["scratches"][0]
    if width_px >= 2:
        assert sc.contrast == pytest.approx(t["contrast"], rel=0.2)
        assert sc.width_px == pytest.approx(width_px, rel=0.25)
    else:
        assert 0.3 * t["contrast"] < sc.contrast < 1.5 * t["contrast"] and sc.width_px < 3.5
    # the constant of stops before 27 read every line too wide and too faint
    monkeypatch.setattr(scratches_module, "OPTICS_WIDTH2_PX2", 3.0 + 4.5 * 0.8 ** 2)
    monkeypatch.setattr(scratches_module, "GRID_WIDTH2_PER_F2", 2 * np.pi / 12)
    old = measured()
    assert old.width_px > sc.width_px + 0.5 and abs(old.contrast) < 0.9 * abs(sc.contrast), (old, sc)


def test_uncalibrated_on_a_panel_with_light_traps_gives_no_false_scratches():
    """Without a flat, a light trap's rim is a sharp circular edge the local fit cannot follow;
    its residue used to read as four arcs per trap (5 false scratches per lens). Where the
    backlight changes by more than half across the fit's window nothing is judged now, while a
    scratch on the open lens is still found. (Dust on the diffuser is another matter: without a
    flat nothing tells it from dust on the lens, so finds on it are not counted here.)"""
    false = 0
    for i in range(12):
        params = random_station(np.random.default_rng(600 + i // 2), width=640, height=512, pixel_size_mm=PS,
                                backlight="uniform", bits=8)
        sim = SimStation(params)
        lens = random_lens(np.random.default_rng([i, 5]), sim, defects=0)
        image, _ = render_lens(sim, lens, np.random.default_rng([i, 6]))
        dust = target_dust_px(params)
        for sc in inspect_lens(image, None, SPEC, pixel_size_mm=PS).scratches:
            x0, y0, x1, y1 = sc.bbox_px
            false += not any(x0 - 4 <= x <= x1 + 4 and y0 - 4 <= y <= y1 + 4 for x, y in dust)
    assert false == 0
    sim, _ = station_pair(12)
    image, _ = render_lens(sim, _lens_with(sim, 13), np.random.default_rng(14))
    res = inspect_lens(image, None, SPEC, pixel_size_mm=PS)
    assert max(sc.length_mm for sc in res.scratches) > 4  # the 4.8 mm scratch, whole


def test_short_faint_hairlines_are_lines_not_blobs():
    """A hairline of about 1 mm, narrower than a pixel and of 10–15 % τ drop, is found along
    only part of its length at a few σ; across such a line the band's own noise is a good part
    of its integrated darkening, so its width is judged on the integral's lower 2σ bound, and
    the piece is not taken for a blob (and dropped) for a width the noise gave it."""
    hits = n = spurious = 0
    for seed, (length_mm, width_px, contrast) in itertools.product(range(2), [(1.2, 0.5, 0.10), (1.0, 0.4, 0.15)]):
        sim, station = station_pair(40 + seed)
        p = sim.params
        cx = p.width / 2 + (p.product.half_width_mm + p.product.eye_gap_mm / 2) / PS * (p.product.kind == "two_eye")
        cy = p.height / 2
        base = random_lens(np.random.default_rng(seed), sim, defects=0, haze=0.01, tau_clear=0.9)
        base = centred(base)
        for j in range(10):
            rng = np.random.default_rng([seed, j])
            half = length_mm / PS / 2 * np.array([np.cos(a := rng.uniform(0, np.pi)), np.sin(a)])
            x, y = cx + rng.uniform(-40, 40), cy + rng.uniform(-30, 30)
            lens = dataclasses.replace(base, scratches=(Scratch(((x - half[0], y - half[1]), (x + half[0], y + half[1])),
                                                                width_px, contrast),))
            image, truth = render_lens(sim, lens, rng)
            found = inspect_lens(image, station, SPEC).scratches
            tb = truth["scratches"][0]["bbox_px"]
            on = [s for s in found if s.bbox_px[0] <= tb[2] + 3 and tb[0] <= s.bbox_px[2] + 3
                  and s.bbox_px[1] <= tb[3] + 3 and tb[1] <= s.bbox_px[3] + 3]
            hits += bool(on)
            spurious += len(found) - len(on)
            n += 1
    assert hits >= 9, f"{hits} of {n} faint short hairlines found"  # 5 of 40 judged on the width's value
    assert spurious == 0


FAINT_CONTRAST = (0.025, 0.05)


def _faint_hairline_lenses(sim, seed: int, count: int):
    """Lenses each with one long faint hairline: 3–8 mm, 0.6–1 px wide, darkening a pixel by
    1.5–5 % (about 2σ per working pixel on this camera), straight."""
    from goggleqc.synth.render import render_masks
    from goggleqc.synth.scenes import random_scratch

    out = []
    for i in range(count):
        rng = np.random.default_rng([seed, 31, i])
        base = random_lens(rng, sim, defects=0, haze=0.01, tau_clear=0.9)
        made = random_scratch(rng, render_masks(sim.params, base.pose), PS, length_mm=float(rng.uniform(3, 8)),
                              contrast=float(rng.uniform(*FAINT_CONTRAST)), width_mm=float(rng.uniform(0.6, 1.0)) * PS,
                              shape="straight")
        if made is not None:
            out.append(render_lens(sim, dataclasses.replace(base, scratches=(made,)), rng, limits=SPEC))
    return out


@pytest.mark.parametrize("backlight", ["uniform", "pattern"])
def test_faint_hairlines_are_found_as_whole_segments(backlight):
    """A hairline of 2–3σ per pixel is found by summing it along its length (the segment
    test); per-pixel thresholds alone miss more of them, and clean lenses stay clean."""
    from goggleqc.inspect.pipeline import Detectors
    from goggleqc.inspect.scratches import ScratchParams
    from goggleqc.synth.scoring import match_objects

    sim, station = station_pair(4242, backlight)
    lenses = _faint_hairline_lenses(sim, 4242, 16)
    off = Detectors(scratches=ScratchParams(segment_sigma=0.0))
    found = {"on": 0, "off": 0}
    extra = 0
    for image, truth in lenses:
        for key, det in (("on", None), ("off", off)):
            res = inspect_lens(image, station, SPEC, detectors=det).to_dict()
            matched = match_objects(truth["scratches"], res["scratches"])
            found[key] += bool(matched)
            if key == "on":
                extra += len(res["scratches"]) - len(matched)
    assert len(lenses) >= 14
    # measured: uniform 15 of 16 with the segment test, 12 without; pattern 15 and 7
    assert found["on"] >= found["off"] + 3
    assert found["on"] >= 0.8 * len(lenses)
    assert extra <= 2
    rng = np.random.default_rng([4242, 5])
    for _ in range(12):
        image, _ = render_lens(sim, random_lens(rng, sim, defects=0, haze=0.01), rng, limits=SPEC)
        assert inspect_lens(image, station, SPEC).scratches == []


def test_a_long_faint_scratch_in_a_noisy_photograph_is_found_as_a_whole_segment():
    """Without a flat too: a heavily compressed photograph's noise breaks a 5 % scratch's
    pixels up below the per-pixel thresholds, though a person sees the 6 mm line at once.
    Summed along its length by the segment test it stands out (on the second renderer's
    photographs scratch recall 94.4 → 98.6 %), and clean photographs stay clean."""
    import cv2

    from goggleqc.inspect.pipeline import Detectors
    from goggleqc.inspect.scratches import ScratchParams
    from goggleqc.synth.scenes import close_up_station

    off = Detectors(scratches=ScratchParams(segment_sigma=0.0))
    found = {"on": 0, "off": 0}
    for i in range(8):
        sim = SimStation(close_up_station(np.random.default_rng(5500 + i), pixel_size_mm=PS))
        rng = np.random.default_rng([5500, i, 5])
        image, _ = render_lens(sim, centred(random_lens(rng, sim, defects=0)), rng)
        noisy = image.astype(np.float32) * (1 + rng.normal(0, 0.03, image.shape).astype(np.float32))
        a = rng.uniform(0, np.pi)
        mask = np.zeros(image.shape, np.uint8)
        cv2.line(mask, (int(320 - 30 * np.cos(a)), int(256 - 30 * np.sin(a))),
                 (int(320 + 30 * np.cos(a)), int(256 + 30 * np.sin(a))), 1, 2)
        scratched = np.clip(np.where(mask > 0, noisy * 0.95, noisy), 0, 255).astype(np.uint8)
        clean = np.clip(noisy, 0, 255).astype(np.uint8)
        for key, det in (("on", None), ("off", off)):
            res = inspect_lens(scratched, None, SPEC, pixel_size_mm=PS, detectors=det)
            found[key] += any(abs(sc.length_mm - 6.0) < 1.5 for sc in res.scratches)
        assert inspect_lens(clean, None, SPEC, pixel_size_mm=PS).scratches == []
    # measured: 8 of 8 with the segment test, 3 without
    assert found["on"] >= 7 and found["off"] <= 5


def _line_with_a_faint_tail(seed: int, tail: float, n: int = 160, angle_deg: float = 30.0, **model):
    """A working grid (scale 2, no flat unless ``model`` says) in noise of 1.5 % with a line at
    ``angle_deg``: 10 working px of 9 % (6σ per pixel, found by the per-pixel thresholds), then
    ``tail`` deep for 50 more."""
    from goggleqc.inspect.background import Relative

    yy, xx = np.mgrid[:n, :n].astype(np.float32)
    ux, uy = np.cos(np.deg2rad(angle_deg)), np.sin(np.deg2rad(angle_deg))
    along = (xx - 40) * ux + (yy - 40) * uy
    across = -(xx - 40) * uy + (yy - 40) * ux
    depth = np.where((along >= 0) & (along < 10), 0.09, np.where((along >= 10) & (along < 60), tail, 0.0))
    rel = 1.0 - depth * np.exp(-0.5 * (across / 0.7) ** 2) + np.random.default_rng(seed).normal(0, 0.015, (n, n))
    return Relative(rel=rel.astype(np.float32), valid=np.ones((n, n), bool), weight=np.ones((n, n), np.float32),
                    scale=2, **({"model": "local"} | model))


def test_a_line_is_followed_on_from_its_end_into_a_fainter_stretch():
    """A scratch found only where it is strong is followed on, step by step, while each step's
    bar sum stands out of the noise (a 9.5 mm scratch of 5 % across a phone photograph was found
    as three short pieces and passed its lens; second renderer, seed 8). The segment test is
    off here to see the following alone; a line with no tail does not grow."""
    from goggleqc.inspect.scratches import ScratchParams, find_scratches

    on = ScratchParams(bright=False, segment_sigma=0.0)
    off = dataclasses.replace(on, trace_sigma=0.0)

    def longest(rel, params):
        return max([sc.length_px for sc in find_scratches(rel, pixel_size_mm=0.1, params=params)] or [0.0])

    whole = {"on": 0, "off": 0}
    grown = 0
    for seed in range(12):
        rel = _line_with_a_faint_tail(seed, 0.035)  # 2.3σ per pixel
        with_steps, without = longest(rel, on), longest(rel, off)
        assert with_steps >= without
        grown += with_steps >= without + 20  # two steps or more (full-resolution px)
        whole["on"] += with_steps >= 0.8 * 120
        whole["off"] += without >= 0.8 * 120
        alone = _line_with_a_faint_tail(seed, 0.0)
        # the 10 px line: 20 full-res px. A 6σ line's ends are read by its strength, which
        # takes off none of the 1.5 working px the constant did: 20.3–28.2 on these seeds
        assert longest(alone, on) == longest(alone, off) <= 29
    # measured: 5 of 12 grown by following, 3 found at 80 % of their length or more (none without)
    assert grown >= 4 and whole["on"] >= 2 and whole["off"] == 0, (grown, whole)


def test_a_line_is_not_followed_along_a_calibrated_pattern_s_edges():
    """With a flat, a step along the backlight pattern's edges is not taken: a misregistration
    leaves a line of residue there that a step's sum does not average down (as the segment
    test asks its full significance there)."""
    from goggleqc.inspect.scratches import ScratchParams, find_scratches

    params = ScratchParams(bright=False, segment_sigma=0.0)

    def longest(edge_normals):
        rel = _line_with_a_faint_tail(seed, 0.035, angle_deg=0.0, model="flat", edge_normals=edge_normals)
        return max([sc.length_px for sc in find_scratches(rel, pixel_size_mm=0.1, params=params)] or [0.0])

    whole = {"across": 0, "along": 0}
    for seed in range(8):
        across, along = longest((0.0,)), longest((np.pi / 2,))  # edges upright / level with the line
        assert along <= across
        whole["across"] += across >= 0.8 * 120
        whole["along"] += along >= 0.8 * 120
    # measured: 6 of 8 at 80 % of the line or more when the edges cross it, 1 along them (found
    # whole by the per-pixel thresholds, not followed)
    assert whole["across"] >= whole["along"] + 3 and whole["along"] <= 1, whole


def _faint_arc(contrast: float, seed: int, radius: float = 20.0, arc_deg: float = 120.0):
    """A working grid (scale 2, no flat) with an arc of a scratch ``contrast`` deep, ``radius``
    working px, in noise of 1.5 %: 2σ per pixel, the arc bent through ``arc_deg``."""
    from goggleqc.inspect.background import Relative

    n = 160
    yy, xx = np.mgrid[:n, :n].astype(np.float32)
    dist = np.hypot(xx - n / 2, yy - n / 2)
    ang = np.degrees(np.arctan2(yy - n / 2, xx - n / 2))
    arc = np.exp(-0.5 * ((dist - radius) / 0.7) ** 2) * (np.abs(ang) < arc_deg / 2)
    rel = 1.0 - contrast * arc + np.random.default_rng(seed).normal(0, 0.015, (n, n))
    return Relative(rel=rel.astype(np.float32), valid=np.ones((n, n), bool), weight=np.ones((n, n), np.float32),
                    scale=2, model="local")


def test_a_faint_arced_scratch_is_found_in_segments(monkeypatch):
    """A faint scratch bent too much for one straight segment: the segment test cuts its
    smoothly bent group of faint pixels into segments of about 10 working px, each summed on
    its own, and links them again (a second renderer's photograph: an arc 3.9 mm long of
    10 % on a noisy near-white frame was missed whole). Noise alone stays clean."""
    from goggleqc.inspect import scratches as scratches_module
    from goggleqc.inspect.scratches import ScratchParams, find_scratches

    params = ScratchParams(bright=False)
    true_px = 2 * 20.0 * np.deg2rad(120.0)  # full-resolution px

    def whole(seed):
        found = find_scratches(_faint_arc(0.03, seed), pixel_size_mm=0.1, params=params)
        return any(sc.length_px >= 0.6 * true_px for sc in found)

    found = sum(whole(seed) for seed in range(10))
    monkeypatch.setattr(scratches_module, "SEGMENT_CHUNK_PX", 1e9)  # one segment per group, as before
    before = sum(whole(seed) for seed in range(10))
    # measured: 5 of 10 found whole (at least 60 % of their length), 1 before
    assert found >= 4 and found >= before + 3, (found, before)
    monkeypatch.undo()
    assert all(find_scratches(_faint_arc(0.0, 100 + seed), pixel_size_mm=0.1, params=params) == []
               for seed in range(10))


def _fine_close_up(seed: int = 41):
    """A defect-free photograph through a lens at 0.02 mm/px (1000×800), and its station."""
    from goggleqc.synth.scenes import close_up_station

    sim = SimStation(close_up_station(np.random.default_rng(seed), width=1000, height=800, pixel_size_mm=0.02))
    return sim, centred(random_lens(np.random.default_rng(seed + 1), sim, defects=0, haze=0.01, tau_clear=0.9))


@pytest.mark.parametrize("gap_px", [20.0, 30.0])
def test_a_broken_scratch_at_a_fine_pixel_size_is_one_scratch(gap_px):
    """A broken scratch's gaps are physical: 0.6 mm between dashes is 30 px at 0.02 mm/px,
    beyond the 14 px a gap was allowed, so a 6 mm broken scratch came out as its pieces; with
    a pixel size the gap allowed is now at least 0.8 mm. Across a shorter gap (0.4 mm, three
    working px once blurred) the pieces' end pixels, each a pixel off the line, turned the
    angle between them past 25°; an end ahead of the other and within 2.5 working px of its
    line now continues it."""
    sim, base = _fine_close_up()
    # five whole dashes of 1 mm: a last dash cut to 0.4 mm is 2.5 px of the 0.16 mm working grid
    end = 350.0 + 4 * (50.0 + gap_px) + 50.0
    scratch = Scratch(((350.0, 400.0), (end, 400.0)), 3.0, 0.3, "broken", (50.0, gap_px))
    image, truth = render_lens(sim, dataclasses.replace(base, scratches=(scratch,)), np.random.default_rng(43))
    res = inspect_lens(image, None, SPEC, pixel_size_mm=0.02)
    assert len(res.scratches) == 1
    assert res.scratches[0].length_mm == pytest.approx(truth["scratches"][0]["length_mm"], rel=0.15)


def test_a_bubble_is_one_spot_not_its_rim_and_its_core():
    """A bubble is a dark rim round a brighter core. The core, found as a bright blob within the
    dark one, was reported as a second spot (and a 0.5 mm one can fail a lens on its own)."""
    sim, base = _fine_close_up()
    image, _ = render_lens(sim, dataclasses.replace(base, spots=(Spot(500.0, 400.0, 30.0, 0.45, "bubble"),)),
                           np.random.default_rng(44))
    res = inspect_lens(image, None, SPEC, pixel_size_mm=0.02)
    assert len(res.spots) == 1 and res.spots[0].polarity == "dark"
    assert res.spots[0].diameter_mm == pytest.approx(0.6, rel=0.3)


@pytest.mark.parametrize("depth, judged", [(0.02, False), (0.30, True)])
def test_a_clear_scratch_along_the_targets_edges_is_still_a_scratch(depth, judged):
    """Without a flat, on a pattern the local fit leaves faint lines along the target's edges,
    so lines along them are not judged; a clear scratch that happens to run the same way (23 %
    over 8 mm in a second renderer photograph) was dropped with them. Only the faint ones
    (under :data:`~goggleqc.inspect.scratches.PATTERN_LINE_MAX_CONTRAST`) are residue."""
    from goggleqc.inspect.background import Relative
    from goggleqc.inspect.scratches import ScratchParams, find_scratches

    n = 160
    rel = 1.0 + np.random.default_rng(4).normal(0, 0.004, (n, n))
    rel[30:130, 79:81] -= depth  # a vertical line, along edges whose normal is horizontal
    rel = Relative(rel=rel.astype(np.float32), valid=np.ones((n, n), bool), weight=np.ones((n, n), np.float32),
                   scale=2, model="local", pattern_normals=(0.0,), frame_shape=(n, n))
    found = find_scratches(rel, pixel_size_mm=0.06, params=ScratchParams(bright=False))
    assert len(found) == (1 if judged else 0), found


@pytest.mark.parametrize("length_wpx, model, reported", [
    (8, "local", False), (8, "lattice", False), (8, "flat", True), (14, "local", True), (14, "lattice", True)])
def test_a_short_faint_line_without_a_flat_is_residue(length_wpx, model, reported):
    """Without a flat, a line shorter than 2 mm and fainter than 3.5 % is the background's
    residue far more often than a scratch (second renderer photographs: 9 of 19 unmatched
    lines of 1 mm or more, and no scratch of 5 % or more, measured under 3.5 %), so it is not
    reported; a longer one of the same contrast is, and with a flat the short one is too.
    Here a line 2 working px wide and 2.5 % deep measures 3.2 %: 1.5 mm long (8 working px)
    against 2.7 mm (14)."""
    from goggleqc.inspect.background import Relative
    from goggleqc.inspect.scratches import ScratchParams
    from goggleqc.inspect.spots import separate

    n = 120
    rel = 1.0 + np.random.default_rng(4).normal(0, 0.003, (n, n))
    y0 = n // 2 - length_wpx // 2
    rel[y0:y0 + length_wpx, 59:61] -= 0.025
    rel = Relative(rel=rel.astype(np.float32), valid=np.ones((n, n), bool), weight=np.ones((n, n), np.float32),
                   scale=2, model=model, frame_shape=(n, n))
    scratches, spots = separate(rel, pixel_size_mm=0.1, scratch_params=ScratchParams(bright=False))
    assert len(scratches) == (1 if reported else 0), scratches
    assert spots == []
    if reported:
        assert 0.025 < scratches[0].contrast < 0.035


def test_with_a_flat_a_faint_hairline_off_the_pattern_edges_is_judged_by_its_true_significance():
    """With a flat the whitened departure is white noise, so the segment test's sum along a
    hairline is a true significance, and it asks 5σ (``flat_segment_factor``, the 5/6 that the
    per-pixel threshold takes with a flat) instead of 6σ. A hairline 4 mm long of 2σ per pixel
    is found in most frames (14 of 20 measured, 5 of 20 at 6σ); white noise alone gives no line
    in 40 frames. Along the backlight pattern's edges (``edge_normals``) a misregistration
    leaves a coherent line of residue, and 6σ stays: the same hairline is found as often as
    with the factor off."""
    from goggleqc.inspect.background import Relative
    from goggleqc.inspect.scratches import ScratchParams, find_scratches

    def frame(depth, seed, n=120, edge_normals=()):
        rel = 1.0 + np.random.default_rng(seed).normal(0, 0.01, (n, n))
        rel[n // 2 - 10:n // 2 + 10, 60] -= depth  # 20 working px: 4 mm at 0.1 mm/px, along y
        return Relative(rel=rel.astype(np.float32), valid=np.ones((n, n), bool), weight=np.ones((n, n), np.float32),
                        scale=2, model="flat", frame_shape=(n, n), edge_normals=edge_normals)

    params = ScratchParams(bright=False)
    off = dataclasses.replace(params, flat_segment_factor=1.0)

    def count(p, **kw):
        return sum(bool(find_scratches(frame(0.02, s, **kw), pixel_size_mm=0.1, params=p)) for s in range(20))

    found, before = count(params), count(off)
    assert found >= 12 and found >= before + 6, (found, before)
    # edges across x (vertical ones, as the hairline) keep 6σ (and no following along them):
    # there the factor changes nothing; edges at 45° do not matter
    assert count(params, edge_normals=(0.0,)) == count(off, edge_normals=(0.0,)) <= before
    assert count(params, edge_normals=(np.pi / 4,)) == found
    assert sum(len(find_scratches(frame(0.0, 100 + s), pixel_size_mm=0.1, params=params)) for s in range(40)) == 0


def test_the_working_grid_follows_the_pixel_size_to_a_phone_photograph():
    """About 0.1–0.2 mm per working pixel whatever the camera: the station model's cameras
    (0.03–0.10 mm/px) as before, and a phone's 12–24 MP photograph of a lens (0.008–0.012
    mm/px) reduced 8×, not 4× (on a 0.05 mm grid a defocused grid's edges read as lines)."""
    from goggleqc.inspect.background import working_scale

    assert [working_scale((2048, 2448), ps) for ps in (0.1, 0.06, 0.049, 0.03)] == [2, 2, 4, 4]
    assert working_scale((3000, 4000), 0.012) == 8 and working_scale((4500, 6000), 0.008) == 8
    assert working_scale((3000, 4000), 0.02) == 8
    # no pixel size: the frame's size is all there is to go by
    assert [working_scale(s) for s in ((512, 640), (2048, 2448), (3000, 4000))] == [2, 4, 8]


def _blurred_grid_photo(seed: int, scratch: bool, h: int = 512, w: int = 640):
    """A photograph through a lens on a grid blurred far past its lines (period 92 px, edges
    σ 16 px), light falling off to the corners, a strip of goggle frame along the top, and
    (``scratch``) a 6 mm scratch of 6 % within a period of the frame and the picture's left
    edge."""
    import cv2

    rng = np.random.default_rng(seed)
    # the target continues past the picture: blurred with a margin of 4 σ, then cut (blurred
    # within the picture alone, its border reflected the grid, which then departed from its
    # neighbouring cells along the picture's side edges by up to 17 %)
    pad = 64
    yy, xx = np.mgrid[-pad:h + pad, -pad:w + pad].astype(np.float32)
    ang = np.deg2rad(rng.uniform(-5, 5))
    u, v = xx * np.cos(ang) + yy * np.sin(ang), -xx * np.sin(ang) + yy * np.cos(ang)
    grid = ((np.mod(u, 92.0) < 18.4) | (np.mod(v, 92.0) < 18.4)).astype(np.float32)
    blurred = cv2.GaussianBlur(grid, (0, 0), 16.0)[pad:-pad, pad:-pad]
    yy, xx = yy[pad:-pad, pad:-pad], xx[pad:-pad, pad:-pad]
    light = (0.85 - 0.5 * blurred) * (1 - 0.15 * ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (w * w / 4))
    tau = np.ones((h, w), np.float32)
    tau[: 40 + int(rng.integers(0, 10))] = 0.02
    if scratch:
        line = np.zeros((h, w), np.uint8)
        x0 = int(rng.integers(40, 80))
        cv2.line(line, (x0, 70), (x0 + 20, 170), 1, 2)
        tau = np.where(line > 0, tau * 0.94, tau)
    return np.clip(light * tau * 220 + rng.normal(0, 1.5, (h, w)), 0, 255).astype(np.uint8)


def test_a_scratch_where_too_few_of_a_blurred_grids_cells_land(monkeypatch):
    """The lattice's background at a pixel is the median of at least four of its eight
    neighbouring cells; within a period of a strip of frame near the picture's edge fewer land,
    and that band (5.5 mm on a coarse grid) went unjudged: a second renderer's 6.5 mm scratch of
    6 % was missed there. Where the grid is blurred far past the local fit's window (edges σ ≥ 4
    working px), the local fit now stands in, blended into the lattice's part without a seam,
    away from the picture's edge, the fit's own edges and the picture's corners."""
    from goggleqc.inspect import background as background_module

    def counts():
        hits = sum(any(s.length_mm > 4 and s.bbox_px[0] < 130 and s.bbox_px[1] < 200
                       for s in inspect_lens(_blurred_grid_photo(k, True), None, SPEC, pixel_size_mm=0.06).scratches)
                   for k in range(6))
        false = sum(len(inspect_lens(_blurred_grid_photo(k, False), None, SPEC, pixel_size_mm=0.06).scratches)
                    for k in range(6))
        return hits, false

    hits, false = counts()
    monkeypatch.setattr(background_module, "SMOOTH_PATTERN_SIGMA", np.inf)  # as before: the band unjudged
    hits_before, false_before = counts()
    # measured: 6 of 6 found (none before), and no false line either way
    assert hits >= 5 and hits_before <= 2, (hits, hits_before)
    assert false <= false_before


def _stripes_rel(seed: int = 1, n: int = 200, period: float = 9.0, angle_deg: float = 30.0):
    """A calibrated working grid (scale 4, 0.05 mm/px) behind which dark stripes, half of a
    period of 9 px (1.8 mm), leave the whitening weight at 0.5; a scratch 80 px long crosses
    them at ``angle_deg``: 6 % darker where the backlight is bright, 1 % brighter where it is
    dim (it scatters light into the dark), the noise twice as strong there."""
    from goggleqc.inspect.background import Relative

    yy, xx = np.mgrid[:n, :n].astype(np.float32)
    dim = (xx % period) / period > 0.5
    weight = np.where(dim, 0.5, 1.0).astype(np.float32)
    a = np.deg2rad(angle_deg)
    across = np.abs((xx - 100) * np.sin(a) - (yy - 100) * np.cos(a))
    along = (xx - 100) * np.cos(a) + (yy - 100) * np.sin(a)
    line = np.exp(-0.5 * (across / 0.8) ** 2) * (np.abs(along) <= 40)
    rel = 1.0 - np.where(dim, -0.01, 0.06) * line + np.random.default_rng(seed).normal(0, 0.006, (n, n)) / weight
    return Relative(rel=rel.astype(np.float32), valid=np.ones((n, n), bool), weight=weight, scale=4, model="flat")


def test_a_scratch_across_dim_stripes_of_a_calibrated_target_is_one_scratch(monkeypatch):
    """Over a dark stripe a scratch fades or turns bright, so a dark line's pieces end at each
    one. The stripes' gaps, 0.85 mm where the stripes are 1.8 mm apart, were just past the
    0.8 mm link gap, and a 12.4 mm scratch was reported as five of 0.7–3.5 mm (second renderer,
    calibrated stripes at 0.05 mm/px). With a flat, a gap's dim part (weight under 0.7) is
    hidden as an unmeasurable one is, and the pieces are one scratch."""
    import goggleqc.inspect.scratches as scratches_module
    from goggleqc.inspect.scratches import ScratchParams, find_scratches

    found = find_scratches(_stripes_rel(), pixel_size_mm=0.05, params=ScratchParams(bright=False))
    assert len(found) == 1 and found[0].length_mm >= 10.0, found
    monkeypatch.setattr(scratches_module, "DIM_WEIGHT", 0.0)
    pieces = find_scratches(_stripes_rel(), pixel_size_mm=0.05, params=ScratchParams(bright=False))
    assert len(pieces) >= 5 and max(p.length_mm for p in pieces) < 2.0, pieces


def _grainy_rel(seed: int, line: float = 0.0, grain_px: float = 1.5):
    """A lattice-model working grid (scale 2, 0.1 mm/px) of noise 7 % per pixel smoothed over
    ``grain_px`` (0: white noise of 0.5 %), and when ``line`` a straight line of that depth,
    30 px long."""
    from goggleqc.inspect.background import Relative

    n = 160
    yy, xx = np.mgrid[:n, :n].astype(np.float32)
    noise = np.random.default_rng(seed).normal(0, 0.07, (n, n)).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), grain_px) if grain_px else noise * np.float32(0.07)
    across = np.abs((yy - 80) - 0.3 * (xx - 80)) / np.hypot(1, 0.3)
    drawn = line * np.exp(-0.5 * (across / 0.7) ** 2) * (np.abs(xx - 80) < 15)
    return Relative(rel=(1.0 - drawn + noise).astype(np.float32), valid=np.ones((n, n), bool),
                    weight=np.ones((n, n), np.float32), scale=2, model="lattice")


def test_chains_of_coarse_grain_are_not_lines_without_a_flat():
    """An ordinary camera's noise is coarse grained: at the filters' scale it is 1.5–2× what
    white noise of the same pixel σ gives, and the thresholds, in pixel σ, let chains of grain
    through as faint lines (the second renderer's photographs at 0.1 mm/px: 2.6–5 % over
    1.3–6.7 mm, two false rejects in 72 good photographs). A line must reach 12× the noise
    the filters see (less over 20 working px, as the square root of its length): in grain of 0.8 % per pixel over 1.5 px no line is found where 19 were
    over ten draws, and a scratch of 8 % is found in every draw. In white noise the floor
    of 0.5 % per pixel lies below the fixed 2.5 %."""
    from goggleqc.inspect.scratches import ScratchParams, find_scratches

    def found(params, line=0.0):
        return [len(find_scratches(_grainy_rel(seed, line), pixel_size_mm=0.1, params=params)) for seed in range(10)]

    assert sum(found(ScratchParams(band_floor=0.0))) >= 10
    assert sum(found(ScratchParams())) == 0
    assert found(ScratchParams(), line=0.08) == [1] * 10
    white = _grainy_rel(0, grain_px=0.0)
    _, sigma, _ = white.whitened
    assert ScratchParams().band_floor * white.band_sigma < 0.6 * ScratchParams().min_contrast_uncalibrated
    assert 0.18 < white.band_sigma / sigma < 0.27


def _hairline_in_clutter_rel(seed: int, line: float):
    """A lattice-model working grid (scale 2, 0.1 mm/px): a background residue of round blobs
    of up to ±4 %, 4 px across, every 8 px, pixel noise of 1.5 %, and when ``line`` a straight
    hairline of that depth, 40 working px (8 mm) long."""
    from goggleqc.inspect.background import Relative

    n = 120
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n].astype(np.float32)
    blobs = np.zeros((n, n), np.float32)
    for cy in range(4, n, 8):
        for cx in range(4, n, 8):
            depth = rng.uniform(-0.04, 0.04)
            dx, dy = xx - cx - rng.uniform(-2, 2), yy - cy - rng.uniform(-2, 2)
            blobs += depth * np.exp(-0.5 * (dx * dx + dy * dy) / 1.6 ** 2)
    noise = rng.normal(0, 0.015, (n, n)).astype(np.float32)
    across = np.abs((yy - 60) - 0.9 * (xx - 60)) / np.hypot(1, 0.9)
    drawn = line * np.exp(-0.5 * (across / 0.6) ** 2) * (np.abs(xx - 60) < 20)
    return Relative(rel=(1.0 - drawn + blobs + noise).astype(np.float32), valid=np.ones((n, n), bool),
                    weight=np.ones((n, n), np.float32), scale=2, model="lattice")


def test_a_hairline_through_clutter_is_taken_out_of_it(monkeypatch):
    """A hairline of 2–3σ per pixel crossing a coarse residue joins the residue's blobs into
    one faint group, too spread for the segment test: a 9.6 mm scratch of 5.5 % was missed
    whole (the second renderer's photographs at 0.1 mm/px, seed 16). The densest straight run
    of such a group (a Hough transform of its pixels) is tried as a segment of its own: over
    twelve draws an 8 mm hairline of 4 % is found over 6 mm long in 10 (6 without), and the
    clutter alone gives no line."""
    from goggleqc.inspect import scratches as scratches_module
    from goggleqc.inspect.scratches import ScratchParams, _dominant_line, find_scratches

    def long_found(line):
        return sum(any(sc.length_mm > 6 for sc in find_scratches(_hairline_in_clutter_rel(seed, line), pixel_size_mm=0.1,
                                                                 params=ScratchParams(bright=False)))
                   for seed in range(12))

    assert long_found(0.04) >= 9
    assert all(find_scratches(_hairline_in_clutter_rel(seed, 0.0), pixel_size_mm=0.1,
                              params=ScratchParams(bright=False)) == [] for seed in range(12))
    monkeypatch.setattr(scratches_module, "CLUTTER_LINE_MIN_CHUNKS", 999)
    assert long_found(0.04) <= 7
    monkeypatch.undo()
    # the extraction itself: a line's pixels among blobs are found; blobs alone give none
    rng = np.random.default_rng(1)
    t = np.arange(40.0)
    line_x, line_y = 10 + t * 0.8, 20 + t * 0.6
    blob_x, blob_y = rng.uniform(0, 45, 120), rng.uniform(10, 50, 120)
    fx, fy = np.round(np.r_[line_x, blob_x]), np.round(np.r_[line_y, blob_y])
    got = _dominant_line(fx, fy)
    assert got is not None and got[:40].mean() >= 0.75 and got[40:].mean() < 0.1
    assert _dominant_line(np.round(blob_x), np.round(blob_y)) is None


def test_a_watermark_s_candidate_circles_past_opencv_s_remap_limit_are_read():
    """Without a pixel size a short arc's candidate circles span radii of 6–120 working px:
    their 72 points each ran past the 32767 a side OpenCV's remap takes, and seven of 200
    photographs (second renderer seed 5, no --pixel-size) ended in an internal error. The
    points are now folded into rows; what is read does not depend on how many are read at once."""
    from goggleqc.inspect.background import Relative
    from goggleqc.inspect.scratches import _coarse_rings, sample_points

    n = 160
    yy, xx = np.mgrid[:n, :n].astype(np.float32)
    rng = np.random.default_rng(4)
    ring = np.abs(np.hypot(xx - 80, yy - 80) - 40) < 1.0
    rel = Relative(rel=(1 - 0.05 * ring + 0.005 * rng.standard_normal((n, n))).astype(np.float32),
                   valid=np.ones((n, n), bool), weight=np.ones((n, n), np.float32), model="lattice")
    hyps = [(r, 80.0 + dx, 80.0) for r in np.arange(6.0, 120.0, 0.25) for dx in (0.0, 0.5)]
    assert len(hyps) * 72 >= 32767
    mean, use = _coarse_rings(rel, hyps, 120.0, 80.0, 6.0)
    part, part_use = _coarse_rings(rel, hyps[:100], 120.0, 80.0, 6.0)
    assert np.allclose(mean[:100], part) and (use[:100] == part_use).all()
    best = hyps[int(np.argmax(mean))]
    assert best[0] == pytest.approx(40.0, abs=0.5)
    px = rng.uniform(-5, n + 5, (1, 40000)).astype(np.float32)
    py = rng.uniform(-5, n + 5, (1, 40000)).astype(np.float32)
    vals, seen = sample_points(rel.rel, rel.valid, px, py, 1.0)
    few, few_seen = sample_points(rel.rel, rel.valid, px[:, :1000], py[:, :1000], 1.0)
    assert vals.shape == (1, 40000) and np.array_equal(vals[:, :1000], few) and np.array_equal(seen[:, :1000], few_seen)


def test_a_circle_through_a_scratch_that_darkens_on_a_few_points_only_is_no_watermark_s_rim():
    """A short stretch of a longer straight scratch lies on circles of a watermark's size too.
    Traced round, such a circle can run tangent to the scratch's unfound continuation for a few
    points past the stretch's ends: read by the mean, those few points (at the scratch's
    contrast) made the rest of the circle "darken" at 6σ, and a 3 mm scratch of 7.6 % was
    taken for a rim (second renderer seed 16 at 0.1 mm/px: three of four false accepts; there
    five of 65 points read 3–4 %, the rest 0.3 %). The rest of a rim darkens all round, so its
    median is read: a circle dark along 50° of it only is no rim, a faint rim all round still is
    (here without the evenness test, as an arc of 60° or more is traced)."""
    from goggleqc.inspect.background import Relative
    from goggleqc.inspect.scratches import _traced_circle

    n, cx, cy, r = 160, 80.0, 80.0, 17.0
    yy, xx = np.mgrid[:n, :n].astype(np.float32)
    angle = np.degrees(np.arctan2(yy - cy, xx - cx)) % 360
    on_ring = np.abs(np.hypot(xx - cx, yy - cy) - r) < 0.75
    found = on_ring & (np.abs(angle - 180) <= 10)  # the stretch found, 20° of the circle
    found_ys, found_xs = np.nonzero(found)
    dash = on_ring & (angle > 202) & (angle < 252)  # the continuation, read by the ring only
    traced = {"dash": 0, "rim": 0}
    for seed in range(10):
        noise = 0.004 * np.random.default_rng(seed).standard_normal((n, n))
        rel = Relative(rel=(1 - 0.04 * found - 0.06 * dash + noise).astype(np.float32), valid=np.ones((n, n), bool),
                       weight=np.ones((n, n), np.float32), model="lattice")
        traced["dash"] += _traced_circle(rel, cx, cy, r, found_xs, found_ys, 0.04)
        rel = Relative(rel=(1 - 0.02 * on_ring - 0.02 * found + noise).astype(np.float32), valid=np.ones((n, n), bool),
                       weight=np.ones((n, n), np.float32), model="lattice")
        traced["rim"] += _traced_circle(rel, cx, cy, r, found_xs, found_ys, 0.04)
    assert traced == {"dash": 0, "rim": 10}


def _kinked_line(seed: int, turn_deg: float, n: int = 120, apex_gap: float = 2.5, **model):
    """Two legs of 14 working px meeting at (60, 60) with a turn of ``turn_deg``, 9 % deep in
    noise of 1.5 %, the last ``apex_gap`` px of each leg before the apex left out: a sharp corner
    answers no line filter, so the filters lose it."""
    from goggleqc.inspect.background import Relative

    yy, xx = np.mgrid[:n, :n].astype(np.float32)
    depth = np.zeros((n, n), np.float32)
    for heading in (180.0 + turn_deg / 2, -turn_deg / 2 + 0.0):
        ux, uy = np.cos(np.deg2rad(heading)), np.sin(np.deg2rad(heading))
        along = (xx - 60) * ux + (yy - 60) * uy  # from the apex outwards
        across = -(xx - 60) * uy + (yy - 60) * ux
        leg = (along >= apex_gap) & (along <= 14.0)
        depth = np.maximum(depth, np.where(leg, 0.09 * np.exp(-0.5 * (across / 0.7) ** 2), 0.0))
    rel = 1.0 - depth + np.random.default_rng(seed).normal(0, 0.015, (n, n))
    return Relative(rel=rel.astype(np.float32), valid=np.ones((n, n), bool), weight=np.ones((n, n), np.float32),
                    scale=2, **({"model": "flat"} | model))


def test_with_a_flat_a_kinked_scratch_whose_apex_is_lost_is_one_scratch(monkeypatch):
    """A kinked scratch (station-model §3) turns sharply, and a sharp corner answers no line
    filter: its legs were found as two scratches, each under the limit perhaps, and its length
    split (second renderer calibrated seed 1, grid lens 66: 13.9 mm found as 5.2 and 8.0 mm).
    With a flat, two ends whose rays meet within KINK_REACH_PX ahead of both, turning by up to
    120°, are one line; not without a flat, where the background's residue leaves short pieces
    enough to be joined so into false lines."""
    import goggleqc.inspect.scratches as S
    from goggleqc.inspect.scratches import ScratchParams, find_scratches

    params = ScratchParams(bright=False)
    one = {}
    for name, model, reach in (("flat", "flat", S.KINK_REACH_PX), ("flat, rule off", "flat", -1.0), ("no flat", "local", S.KINK_REACH_PX)):
        monkeypatch.setattr(S, "KINK_REACH_PX", reach)
        one[name] = 0
        for seed in range(8):
            for turn in (60.0, 90.0):
                found = find_scratches(_kinked_line(seed, turn, model=model), pixel_size_mm=0.1, params=params)
                one[name] += len(found) == 1 and found[0].length_px >= 0.8 * 2 * 2 * 14
    # measured: 13 of 16 with a flat, none with the rule off or without a flat
    assert one["flat"] >= 12 and one["flat, rule off"] == 0 and one["no flat"] == 0, one


@pytest.mark.parametrize("backlight", ["uniform", "pattern"])
def test_a_faint_scratch_is_measured_to_its_ends(backlight):
    """The low threshold reaches past a line's end by an amount that depends on how strongly
    the line answers: a faint line's response falls below it before the end, a strong one's
    after. A constant allowance cut faint scratches short (second renderer calibrated seed 13,
    a noisy camera: median length error 11–26 %). Here six 4 mm scratches of 8 % and 0.1 mm at
    six angles on a calibrated station: measured with the constant allowance their median
    length error was −6.1 % (uniform) and −16.7 % (pattern); read from their strength, +1.0 %
    and −2.7 %."""
    sim, station = station_pair(3, backlight)
    p = sim.params
    cx = p.width / 2 + (p.product.half_width_mm + p.product.eye_gap_mm / 2) / PS * (p.product.kind == "two_eye")
    cy = p.height / 2 + (55 if backlight == "uniform" else 0)  # clear of the light trap
    length = 40.0
    errors = []
    for i in range(6):
        base = random_lens(np.random.default_rng(i), sim, defects=0, haze=0.01, tau_clear=0.9)
        a = np.deg2rad(20 + 25 * i)
        dx, dy = np.cos(a) * length / 2, np.sin(a) * length / 2
        lens = dataclasses.replace(base, scratches=(Scratch(((cx - dx, cy - dy), (cx + dx, cy + dy)), 1.0, 0.08),))
        image, _ = render_lens(sim, lens, np.random.default_rng(i))
        found = inspect_lens(image, station, SPEC).scratches
        errors.append(max(s.length_px for s in found) / length - 1 if found else -1.0)
    assert abs(np.median(errors)) <= 0.05, errors


def test_where_a_line_s_ends_are_placed_changes_no_detection(monkeypatch):
    """A line's reported length places its ends by its strength (:func:`_end_overshoot`);
    every decision (is it a line, a ring, a curl, residue, dust on the target) reads the length
    seen, on which the floors were set. Placing the ends anywhere from 1.5 working px inside
    the seen chain to 2 px past it moves lengths only, never what is found: on the second
    renderer's photographs, deciding on the placed length turned dust on the target into a
    2.3 mm scratch, and a faint fragment beside a scratch into a scratch of its own."""
    import goggleqc.inspect.scratches as S
    from goggleqc.inspect.tone import parse_tone
    from goggleqc.synth.scenes import close_up

    frames = []
    for i in range(6):
        _, image, _ = close_up(np.random.default_rng(7300 + i), np.random.default_rng([7300, i, 5]), pixel_size_mm=PS,
                               photo=i % 2 == 1)
        frames.append((image, None, {"pixel_size_mm": PS, "tone": parse_tone("srgb" if i % 2 else "linear")}))
    sim, station = station_pair(5, "pattern")
    for i in range(4):
        lens = random_lens(np.random.default_rng(i), sim, defects=4, kinds=("scratch", "spot"))
        frames.append((render_lens(sim, lens, np.random.default_rng(i))[0], station, {}))

    def found(blur_px):
        monkeypatch.setattr(S, "END_BLUR_PX", blur_px)
        out, lengths = [], []
        for image, st, kw in frames:
            r = inspect_lens(image, st, SPEC, **kw)
            out.append(([s.bbox_px for s in r.scratches], [s.bbox_px for s in r.spots], [m.bbox_px for m in r.marks]))
            lengths += [s.length_px for s in r.scratches]
        return out, lengths

    (at_1, len_1), (at_0, len_0), (at_3, len_3) = found(1.0), found(0.0), found(3.0)
    assert at_1 == at_0 == at_3
    assert len_1 != len_0 and len_1 != len_3  # the ends did move
