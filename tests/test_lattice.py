"""The uncalibrated background from a periodic backlight's own repeats (goggleqc.inspect.lattice)."""

from __future__ import annotations

import numpy as np
import pytest

from goggleqc.inspect.lattice import find_lattice, lattice_background


def _grid(shape=(200, 240), period=17.0, angle_deg=20.0, seed=0, noise=0.005, bend=0.0):
    """A smooth (defocused) grid under uneven light: a product of two raised cosines.

    ``bend`` bends the pattern (a camera not square to the target, the refraction of a curved
    visor): a tilt and a radial term, so that the period changes by about ``2·bend`` from one
    side of the frame to the other."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    if bend:
        xc, yc = xx / shape[1] - 0.5, yy / shape[0] - 0.5
        s = 1.0 + bend * xc + bend * (xc ** 2 + yc ** 2)
        xx, yy = (xx - shape[1] / 2) * s, (yy - shape[0] / 2) * s
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


def _inner(ok, border=20):
    inner = ok.copy()
    inner[:border], inner[-border:], inner[:, :border], inner[:, -border:] = False, False, False, False
    return inner


@pytest.mark.parametrize("angle_deg", [0.0, 20.0])
def test_a_bent_pattern_is_followed_cell_by_cell(angle_deg):
    """Seen through a curved visor or by a tilted camera, the period changes across the frame
    (here by about 12 %): one lattice vector then lands a pixel or more off the matching cell at the
    edges, and the pattern's edges would be left as lines (99th percentile of the residue
    ~10 % with the global lattice alone). Each neighbouring cell is registered locally: ~2 %,
    while a scratch across the frame keeps its full contrast."""
    clean = _grid(shape=(240, 320), period=17.0, angle_deg=angle_deg, noise=0.0, bend=0.06)
    image = clean.copy()
    image[120, 40:280] *= 0.85  # a 15 % scratch across the frame
    bg, ok, _ = lattice_background(image, np.ones(image.shape, bool))
    rel = image / bg
    away = _inner(ok)
    away[114:127] = False
    assert np.percentile(np.abs(rel[away] - 1), 99) < 0.03
    line = _inner(ok)[120] & (np.arange(image.shape[1]) > 60) & (np.arange(image.shape[1]) < 260)
    assert np.median(rel[120][line]) == pytest.approx(0.85, abs=0.015)


def test_a_strongly_bent_pattern_is_registered_into_its_corners(monkeypatch):
    """Bent so that the period changes by about half across the frame (a phone tilted to the
    target, a strongly curved visor), a corner's neighbouring cell lies farther than the
    registration's steps from zero reach: its windows stop at a false fit and the pattern's
    edges are left as lines (99th percentile of the residue 9 %, up to 60 %). Registered
    again from the smooth field of the windows that did fit, the residue is that of a mild
    bend."""
    from goggleqc.inspect import lattice

    image = _grid(shape=(240, 320), period=17.0, angle_deg=20.0, noise=0.0, bend=0.25)
    valid = np.ones(image.shape, bool)
    bg, ok, _ = lattice_background(image, valid)
    residue = np.abs(image / bg - 1)[_inner(ok)]
    assert np.percentile(residue, 99) < 0.04 and residue.max() < 0.15
    monkeypatch.setattr(lattice, "STUCK_MISFIT", np.inf)  # never registered again
    bg, ok, _ = lattice_background(image, valid)
    assert np.percentile(np.abs(image / bg - 1)[_inner(ok)], 99) > 0.06


def test_a_remap_with_unknown_outside_keeps_what_lies_inside():
    """A cell shifted by a registered field is unknown (NaN) only where a tap of the cubic
    interpolation that carries weight lies outside the frame or on an unknown pixel. OpenCV
    multiplies a NaN border value by zero weights too, which left the first and last 8 columns
    of every bent cell unknown: a band along the picture's left and right edges unjudged."""
    import cv2

    from goggleqc.inspect.lattice import _remapped

    rng = np.random.default_rng(1)
    image = rng.random((60, 80)).astype(np.float32)
    image[30, 40] = np.nan
    zero = np.zeros(image.shape, np.float32)
    out = _remapped(image, (-0.94, 0.3), zero, zero, np.nan)
    # columns whose four taps (x − 2 … x + 1 after the shift) lie inside are known on row 10
    assert np.isfinite(out[10, 2:79]).all() and not np.isfinite(out[10, :1]).any()
    # the unknown pixel spoils exactly the outputs whose taps reach it
    assert not np.isfinite(out[30, 40]) and np.isfinite(out[30, 2:38]).all()
    gx = np.arange(80, dtype=np.float32)[None, :] - np.float32(0.94)
    gy = np.arange(60, dtype=np.float32)[:, None] + np.float32(0.3)
    finite = cv2.remap(np.nan_to_num(image), gx + zero, gy + zero, cv2.INTER_CUBIC,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    known = np.isfinite(out)
    assert np.array_equal(out[known], finite[known])


def test_a_bent_pattern_is_judged_up_to_the_picture_s_side_edges():
    """In a bent view every neighbouring cell is remapped: the background must reach within
    a few pixels of the picture's left and right edges, not stop 8 columns short of them."""
    image = _grid(shape=(240, 320), period=17.0, angle_deg=0.0, noise=0.0, bend=0.06)
    bg, ok, _ = lattice_background(image, np.ones(image.shape, bool))
    rows = slice(40, 200)
    assert ok[rows, 3].all() and ok[rows, -4].all()
    rel = image[rows, :8] / bg[rows, :8]
    assert np.percentile(np.abs(rel - 1), 99) < 0.04


def test_a_square_on_pattern_keeps_the_exact_shifts(monkeypatch):
    """Registration replaces a shift only where it fits clearly better: on a pattern square
    to the camera the background is the exact-shift median, unchanged."""
    from goggleqc.inspect import lattice

    image = _grid(period=17.0, angle_deg=20.0)
    valid = np.ones(image.shape, bool)
    bg, ok, _ = lattice_background(image, valid)
    monkeypatch.setattr(lattice, "MIN_DISPLACEMENT_PX", np.inf)  # never registered
    exact, ok_exact, _ = lattice_background(image, valid)
    assert np.array_equal(ok, ok_exact) and np.array_equal(bg, exact)


def test_uncalibrated_close_ups_through_a_bent_view():
    """Photographs through a curved visor, or by a camera not square to the target, see the
    pattern bent: its period changes by ~10 % across the frame (``warp`` 0.1). With one
    lattice vector for the whole frame, the misregistered cells left the pattern's edges as
    lines: 7.4 false scratches per defect-free lens here (5.3 and 66 % false rejects on a
    development set). Registered cell by cell, with cells taken in pairs on either side,
    there are none here (0.11 and 12 % on the development set), at 80 % recall.
    """
    from goggleqc.inspect.pipeline import inspect_lens
    from goggleqc.spec import load_spec
    from goggleqc.synth.scenes import close_up, target_dust_px
    from goggleqc.synth.scoring import evaluate

    spec, ps = load_spec("en166-clear"), 0.1
    pairs = []
    for i in range(48):
        sim, image, truth = close_up(np.random.default_rng(700 + i // 6), np.random.default_rng([i, 15]),
                                     pixel_size_mm=ps, warp=0.1)
        res = inspect_lens(image, None, spec, pixel_size_mm=ps)
        assert res.verdict != "error", res.error
        found = res.to_dict()
        # dust on the target: without a flat, no single image tells it from dust on the lens
        dust = target_dust_px(sim.params)
        found["scratches"] = [sc for sc in found["scratches"] if not any(
            sc["bbox_px"][0] - 4 <= x <= sc["bbox_px"][2] + 4 and sc["bbox_px"][1] - 4 <= y <= sc["bbox_px"][3] + 4
            for x, y in dust)]
        pairs.append((truth, found))
    m = evaluate(pairs, spec)
    print({k: m[k] for k in ("recall_scratch_1mm", "n_scratch_1mm", "false_scratches_per_clean_lens",
                             "false_spots_per_clean_lens", "false_reject_rate", "defect_free_lenses")})
    assert m["n_scratch_1mm"] >= 20
    assert m["false_scratches_per_clean_lens"] <= 0.1
    assert m["recall_scratch_1mm"] >= 0.7


def test_close_ups_through_a_strongly_bent_view(monkeypatch):
    """Close-ups bent by 0.3 (the pattern's scale changing by about 30 % from the frame's
    centre to its corners): where a corner's registration stuck, the pattern's edges read as
    lines of 5–15 % there (2.1 false scratches per defect-free lens on these 36 lenses, 93 %
    false rejects). Registered again from the smooth field of the windows that fitted, and
    with no step where the one-sided band along the picture's edges takes over from the
    pairs, a quarter of them remain, at the same recall (measured: 0.58 and 53 %; 0.75 and
    60 % with the step)."""
    from goggleqc.inspect import lattice
    from goggleqc.inspect.pipeline import inspect_lens
    from goggleqc.spec import load_spec
    from goggleqc.synth.scenes import close_up, target_dust_px
    from goggleqc.synth.scoring import evaluate

    spec, ps = load_spec("en166-clear"), 0.1
    renders = []
    for i in range(36):
        sim, image, truth = close_up(np.random.default_rng(800 + i // 6), np.random.default_rng([i, 16]),
                                     pixel_size_mm=ps, warp=0.3)
        renders.append((target_dust_px(sim.params), image, truth))

    def metrics():
        pairs = []
        for dust, image, truth in renders:
            found = inspect_lens(image, None, spec, pixel_size_mm=ps).to_dict()
            found["scratches"] = [sc for sc in found["scratches"] if not any(
                sc["bbox_px"][0] - 4 <= x <= sc["bbox_px"][2] + 4 and sc["bbox_px"][1] - 4 <= y <= sc["bbox_px"][3] + 4
                for x, y in dust)]
            pairs.append((truth, found))
        return evaluate(pairs, spec)

    now = metrics()
    monkeypatch.setattr(lattice, "SEAM_RAMP_PX", 1e-6)
    stepped = metrics()
    monkeypatch.setattr(lattice, "STUCK_MISFIT", np.inf)
    before = metrics()
    print({k: (now[k], stepped[k], before[k]) for k in ("recall_scratch_1mm", "false_scratches_per_clean_lens",
                                                        "false_reject_rate")})
    assert now["defect_free_lenses"] >= 10
    assert now["false_scratches_per_clean_lens"] < stepped["false_scratches_per_clean_lens"]
    assert stepped["false_scratches_per_clean_lens"] <= 0.5 * before["false_scratches_per_clean_lens"]
    assert now["recall_scratch_1mm"] >= before["recall_scratch_1mm"]


@pytest.mark.parametrize("sigma", [1.5, 2.5, 4.0])
def test_edge_blur_reads_the_defocus_of_a_target_s_edges(sigma):
    """A checker's edges blurred by a Gaussian σ: the estimate is σ while the edges stay
    apart (here ≥ 6σ; within 15 %), under uneven light and camera noise."""
    import cv2

    from goggleqc.inspect.lattice import edge_blur

    yy, xx = np.mgrid[:240, :320].astype(np.float64)
    period = 48.0
    checker = ((np.floor(xx / (period / 2)) + np.floor(yy / (period / 2))) % 2).astype(np.float32)
    target = cv2.GaussianBlur(0.3 + 0.7 * checker, (0, 0), sigma)
    light = 1.0 + 0.3 * xx / 320 - 0.2 * yy / 240
    rng = np.random.default_rng(3)
    image = (200 * target * light * (1 + 0.005 * rng.standard_normal(target.shape))).astype(np.float32)
    valid = np.ones(image.shape, bool)
    illum = cv2.GaussianBlur(image, (0, 0), period)
    assert edge_blur(image / illum, valid) == pytest.approx(sigma, rel=0.15)


def test_a_faint_pattern_buried_in_pixel_noise_still_gives_its_lattice():
    """A target far out of focus leaves a pattern of under a percent under a camera's noise of
    twice that: measured against the noise's zero-lag spike its lattice peaks fell under
    MIN_PEAK (13 of 103 checker photographs of the second renderer's seed 5 fell back on the
    local fit). Smoothed by a pixel the pattern stands out again; plain noise still gives none."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:200, :240].astype(np.float64)
    a = np.deg2rad(20.0)
    u, v = (xx * np.cos(a) + yy * np.sin(a)) / 17.0, (-xx * np.sin(a) + yy * np.cos(a)) / 17.0
    faint = 1.0 + 0.006 * np.cos(2 * np.pi * u) + 0.006 * np.cos(2 * np.pi * v)  # 0.6 % rms
    image = (200 * faint * (1 + 0.012 * rng.standard_normal(faint.shape))).astype(np.float32)
    valid = np.ones(image.shape, bool)
    q = image / image.mean()
    assert (q - q.mean()).std() > 1.5 * faint.std()  # the noise outweighs the pattern
    lat = find_lattice(q, valid)
    assert lat is not None
    assert sorted([np.hypot(*lat.a1), np.hypot(*lat.a2)]) == pytest.approx([17.0, 17.0], abs=0.5)
    noise = (200 * (1 + 0.012 * rng.standard_normal(faint.shape))).astype(np.float32)
    assert find_lattice(noise / noise.mean(), valid) is None


def test_the_edge_blur_is_read_off_the_pattern_not_off_a_flaw_s_edges():
    """On a faint, defocused checker a long dark scratch's edges are the steepest in the frame:
    read off the frame, the pattern's blur came out near a pixel (a 10 mm scratch of 16 % on the
    second renderer's seed 11 photo 134 was then as blurred as the target, and taken for dust on
    it). Read off the background (the cells' median) it is the target's."""
    import cv2

    from goggleqc.inspect.lattice import edge_blur

    sigma, period = 4.0, 40.0
    yy, xx = np.mgrid[:240, :320].astype(np.float64)
    checker = ((np.floor(xx / (period / 2)) + np.floor(yy / (period / 2))) % 2).astype(np.float32)
    target = cv2.GaussianBlur(0.85 + 0.15 * checker, (0, 0), sigma)
    rng = np.random.default_rng(11)
    image = (200 * target * (1 + 0.004 * rng.standard_normal(target.shape))).astype(np.float32)
    cv2.line(image, (40, 150), (290, 95), 0.0, 1)
    image = np.where(image == 0, 200 * target * 0.8, image).astype(np.float32)
    image = cv2.GaussianBlur(image, (0, 0), 0.6)  # the camera's optics, focused on the lens
    valid = np.ones(image.shape, bool)
    illum = cv2.GaussianBlur(image, (0, 0), period)
    assert edge_blur(image / illum, valid) < 0.6 * sigma  # the scratch's edges decide
    _, _, lat = lattice_background(image, valid)
    assert lat.edge_sigma == pytest.approx(np.hypot(sigma, 0.6), rel=0.2)


def test_dust_on_the_defocused_target_is_a_target_mark_not_a_scratch():
    """The camera focuses on the lens, so dust on the target is as blurred as the pattern's
    edges. Without a flat such dust read as faint, wide lines or blobs (unmatched finds on the
    target's dust); a line whose mean profile across it is that blurred, or a blob as wide as
    a blurred point, is now a ``target`` mark, never failing. True scratches and spots are
    not taken for it. Measured: 17 marks on the dust, no dust read as a scratch (13 and 3 when
    the line test used the measured width instead of the profile)."""
    from goggleqc.inspect.pipeline import inspect_lens
    from goggleqc.spec import load_spec
    from goggleqc.synth.scenes import close_up, target_dust_px
    from goggleqc.synth.scoring import match_objects

    spec, ps = load_spec("en166-clear"), 0.1
    near = lambda b, pts: any(b[0] - 4 <= x <= b[2] + 4 and b[1] - 4 <= y <= b[3] + 4 for x, y in pts)  # noqa: E731
    dust_lines = marks_on_dust = marks_elsewhere = true_lost = 0
    for i in range(36):
        sim, image, truth = close_up(np.random.default_rng(4500 + i // 6), np.random.default_rng([i, 44]),
                                     pixel_size_mm=ps)
        res = inspect_lens(image, None, spec, pixel_size_mm=ps).to_dict()
        dust = target_dust_px(sim.params)
        matched = {j for _, j in match_objects(truth["scratches"], res["scratches"])}
        dust_lines += sum(near(sc["bbox_px"], dust) for j, sc in enumerate(res["scratches"]) if j not in matched)
        targets = [m for m in res["marks"] if m["kind"] == "target"]
        marks_on_dust += sum(near(m["bbox_px"], dust) for m in targets)
        marks_elsewhere += sum(not near(m["bbox_px"], dust) for m in targets)
        lines = [{"bbox_px": m["bbox_px"]} for m in targets]
        true_lost += len(match_objects([t for t in truth["scratches"] if t["contrast"] >= 0.05], lines))
        true_lost += len(match_objects([t for t in truth["spots"] if t["contrast"] >= 0.3], lines))
    print(dict(dust_lines=dust_lines, marks_on_dust=marks_on_dust, marks_elsewhere=marks_elsewhere, true_lost=true_lost))
    assert marks_on_dust >= 12
    assert dust_lines <= 1
    assert marks_elsewhere <= 2
    assert true_lost == 0


def test_a_blurred_blob_on_the_target_is_a_target_mark_not_a_spot():
    """Dust on a defocused checker (σ 2.5 px here) reads as a faint blob about 1 mm across:
    a point blurred by σ measures 4σ, so a blob that wide and fainter than 20 %, with an edge
    as blurred as the pattern's, is on the target. Before, this defect-free lens failed on two
    such 'spots' of 1 mm."""
    from goggleqc.inspect.pipeline import inspect_lens
    from goggleqc.spec import load_spec
    from goggleqc.synth.scenes import close_up

    ps = 0.1
    _, image, truth = close_up(np.random.default_rng(4000 + 27 // 6), np.random.default_rng([4000, 27, 5]),
                               pixel_size_mm=ps)
    assert not truth["spots"] and not truth["scratches"]
    res = inspect_lens(image, None, load_spec("en166-clear"), pixel_size_mm=ps).to_dict()
    assert res["verdict"] == "pass" and not res["spots"]
    assert sum(m["kind"] == "target" for m in res["marks"]) >= 2


def test_dust_on_the_target_of_16_percent_is_a_target_mark():
    """A grain of dust on a grid 0.32 mm out of focus, seen through a bent lens, keeps 16 % of
    contrast: over the 10 % that target dust was once allowed, so this defect-free lens
    failed on a 1.4 mm "spot". Its edge is as blurred as the target's, which is what tells
    dust on the target from a spot on the lens; the contrast cap is now 20 %."""
    from goggleqc.inspect.pipeline import inspect_lens
    from goggleqc.spec import load_spec
    from goggleqc.synth.scenes import close_up, target_dust_px

    ps = 0.1
    sim, image, truth = close_up(np.random.default_rng(5000 + 89 // 6), np.random.default_rng([5000, 89, 5]),
                                 pixel_size_mm=ps, warp=0.15)
    assert not truth["spots"] and not truth["scratches"]
    res = inspect_lens(image, None, load_spec("en166-clear"), pixel_size_mm=ps).to_dict()
    dust_x, dust_y = target_dust_px(sim.params)[0]
    on_dust = [m for m in res["marks"] if m["kind"] == "target"
               and m["bbox_px"][0] - 4 <= dust_x <= m["bbox_px"][2] + 4 and m["bbox_px"][1] - 4 <= dust_y <= m["bbox_px"][3] + 4]
    assert res["verdict"] == "pass" and not res["spots"]
    assert len(on_dust) == 1 and 0.1 < on_dust[0]["contrast"] < 0.2


@pytest.mark.parametrize("bend", [0.0, 0.06])
def test_the_light_s_fall_off_leaves_no_step_along_the_picture_s_edges(bend):
    """Second renderer's photographs: under a light falling off to the corners, the ratio of
    light between a place and its neighbouring cell was read as ``Σ image / Σ cell`` over a
    window of a period, which the picture's edge cuts: the ratio of a place half a window
    inside. Along the edges, where the cells that land all lie towards the middle, the
    background read 2.5–3 % bright in a band a period wide, and the step at its inner border
    was a 10–12 mm false line. The ratio is now fitted as changing linearly across the window.

    A grid of 40 px under light falling to 0.5 in the corners: the background's mean error in
    the period along each edge was 1.4–2.7 % (and 0.5 % inside); it is now under 0.5 %."""
    shape, period = (256, 320), 40.0
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    xc, yc = xx / shape[1] - 0.5, yy / shape[0] - 0.5
    if bend:
        s = 1.0 + bend * xc + bend * (xc ** 2 + yc ** 2)
        xx, yy = (xx - shape[1] / 2) * s, (yy - shape[0] / 2) * s
    pattern = (0.6 + 0.4 * np.cos(2 * np.pi * xx / period)) * (0.6 + 0.4 * np.cos(2 * np.pi * yy / period))
    light = 1.0 - 0.25 * ((2 * xc) ** 2 + (2 * yc) ** 2)
    noise = 1 + 0.003 * np.random.default_rng(0).standard_normal(shape)
    image = (200 * pattern * light * noise).astype(np.float32)
    bg, ok, _ = lattice_background(image, np.ones(shape, bool))
    rel = image / bg
    p = int(period)
    bands = {"bottom": (slice(-p, None), slice(p, -p)), "top": (slice(0, p), slice(p, -p)),
             "left": (slice(p, -p), slice(0, p)), "right": (slice(p, -p), slice(-p, None)),
             "inside": (slice(p, -p), slice(p, -p))}
    for name, band in bands.items():
        assert ok[band].mean() > 0.9, name
        assert abs(float(np.mean(rel[band][ok[band]])) - 1) < 0.005, name
