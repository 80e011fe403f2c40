"""Watermarks and stains: nuisances the simulator renders but that are not product defects.

Real photographs of goggle lenses carry dried water drops ("coffee rings" of deposit) and
smears or fingerprints. These tests check how they are rendered, and what the detectors make
of them: the finds on them are false alarms, measured here at today's level (not the target,
which is none) so that a change that makes them worse is seen.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from goggleqc.benchmarking import calibrate_from_sim
from goggleqc.inspect.pipeline import inspect_lens
from goggleqc.spec import load_spec
from goggleqc.synth import SimStation, Stain, Watermark, random_lens, random_station, render_lens
from goggleqc.synth.lens import render_masks
from goggleqc.synth.render import lens_fields
from goggleqc.synth.scenes import random_nuisances
from goggleqc.synth.scoring import evaluate, match_objects, on_nuisance
from goggleqc.synth.scenes import centred, close_up_station

PS = 0.1
SIZE = (480, 384)
SPEC = load_spec("en166-clear")


def _sim(seed: int, backlight: str = "uniform") -> SimStation:
    return SimStation(random_station(np.random.default_rng(seed), width=SIZE[0], height=SIZE[1], pixel_size_mm=PS,
                                     backlight=backlight, bits=8))


def _plain_lens(sim: SimStation):
    lens = random_lens(np.random.default_rng(1), sim, defects=0, haze=0.01, tau_clear=0.9)
    return centred(lens)


def _deepest(sim, lens) -> tuple[float, float]:
    """The point of the lens farthest from its edge (a two-eye goggle has no lens at the centre)."""
    inside = render_masks(sim.params, lens.pose).inside_mm
    y, x = np.unravel_index(int(np.argmax(inside)), inside.shape)
    return float(x), float(y)


def _ring(cx, cy, r_px, n=96):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return tuple((cx + r_px * np.cos(a), cy + r_px * np.sin(a)) for a in t)


def _loss(sim, lens, item):
    """1 − τ ratio of a lens with ``item`` to the same lens without it; and the haze it adds."""
    tau0, haze0, *_ = lens_fields(sim, lens)
    tau1, haze1, *_ = lens_fields(sim, dataclasses.replace(lens, nuisances=(item,)))
    return 1 - tau1 / np.maximum(tau0, 1e-6), haze1 - haze0


# -- rendering -------------------------------------------------------------------------------
def test_watermark_rim_darkens_by_its_contrast():
    sim = _sim(3)
    lens = _plain_lens(sim)
    cx, cy = _deepest(sim, lens)
    wm = Watermark(_ring(cx, cy, 30.0), rim_px=3.0, rim_contrast=0.08, rim_haze=0.02,
                   interior_contrast=0.01, interior_haze=0.004)
    loss, haze = _loss(sim, lens, wm)
    yy, xx = np.mgrid[:SIZE[1], :SIZE[0]]
    r = np.hypot(xx - cx, yy - cy)
    assert (render_masks(sim.params, lens.pose).inside_mm[r < 35] > 1).all()  # the drop lies on the lens
    # on the rim's core the outline's edge runs: the rim's loss with half the interior's
    rim_core = np.abs(r - 30) < 0.6
    inner = r < 25
    assert np.median(loss[rim_core]) == pytest.approx(1 - (1 - 0.08) * (1 - 0.01 * 0.5), abs=0.003)
    assert loss[rim_core].min() > 0.079 and loss.max() < 0.0895
    assert np.median(loss[inner]) == pytest.approx(0.01, abs=1e-4)
    assert np.median(haze[rim_core]) == pytest.approx(0.02 + 0.002, abs=0.001)
    assert np.abs(loss[r > 33]).max() < 1e-6 and np.abs(haze[r > 33]).max() < 1e-6


def test_rendered_image_shows_the_rim():
    """In the image itself (noise, PSF and all) the rim of a 10 % ring is a few percent darker."""
    sim = _sim(3)
    lens = _plain_lens(sim)
    cx, cy = _deepest(sim, lens)
    wm = Watermark(_ring(cx, cy, 30.0), rim_px=3.0, rim_contrast=0.10)
    plain, _ = render_lens(sim, lens, np.random.default_rng(2))
    marked, truth = render_lens(sim, dataclasses.replace(lens, nuisances=(wm,)), np.random.default_rng(2))
    yy, xx = np.mgrid[:SIZE[1], :SIZE[0]]
    signal0 = plain.astype(np.float32) - sim.dark_map
    signal1 = marked.astype(np.float32) - sim.dark_map
    lit = signal0 > 0.5 * np.median(signal0[signal0 > np.percentile(signal0, 50)])  # not over a trap
    rim = (np.abs(np.hypot(xx - cx, yy - cy) - 30) < 0.6) & lit
    ratio = np.median(signal1[rim] / signal0[rim])
    assert 0.88 < ratio < 0.96  # 10 % in τ, softened by the camera's PSF (σ 0.5–1.2 px) on a 3 px rim
    assert truth["nuisances"][0]["kind"] == "watermark" and not truth["nuisances"][0]["partial"]


def test_partial_ring_covers_its_span():
    sim = _sim(3)
    lens = _plain_lens(sim)
    cx, cy = _deepest(sim, lens)
    wm = Watermark(_ring(cx, cy, 30.0), rim_px=2.0, rim_contrast=0.1, rim_span=(0.1, 0.6))
    loss, _ = _loss(sim, lens, wm)
    yy, xx = np.mgrid[:SIZE[1], :SIZE[0]]
    on_ring = np.abs(np.hypot(xx - cx, yy - cy) - 30) < 0.5
    angle = np.mod(np.arctan2(yy - cy, xx - cx), 2 * np.pi)[on_ring] / (2 * np.pi)
    dark = loss[on_ring] > 0.05
    assert dark.mean() == pytest.approx(0.5, abs=0.06)
    assert angle[dark].min() > 0.08 and angle[dark].max() < 0.62


def test_truth_bbox_covers_each_mark():
    sim = _sim(4, "pattern")
    base = random_lens(np.random.default_rng(5), sim, defects=0)
    masks = render_masks(sim.params, base.pose)
    marks = random_nuisances(np.random.default_rng(6), masks, PS, 12)
    assert {type(m) for m in marks} == {Watermark, Stain}
    for m in marks:
        loss, _ = _loss(sim, base, m)
        _, _, _, found, _, _ = lens_fields(sim, dataclasses.replace(base, nuisances=(m,)))
        x0, y0, x1, y1 = found["nuisances"][0]["bbox_px"]
        inside = np.zeros(loss.shape, bool)
        inside[y0:y1, x0:x1] = True
        if isinstance(m, Watermark):
            marked = loss > 0.1 * m.rim_contrast  # the rim, and the inside where it is darker
        else:
            marked = loss > 0.5 * m.contrast  # a soft-edged stain: its bulk lies within its outline
        assert marked.any() and inside[marked].all(), m


def test_nuisances_are_deterministic_and_opt_in():
    sim = _sim(6, "pattern")
    # the default draws exactly what it drew before nuisances existed: same lens, same rng state
    a, b = np.random.default_rng([7, 1]), np.random.default_rng([7, 1])
    assert random_lens(a, sim) == random_lens(b, sim, nuisances=0.0)
    assert a.integers(1 << 30) == b.integers(1 << 30)
    # nuisances come last: the lens under them is the one drawn without them
    c = np.random.default_rng([7, 1])
    with_marks = random_lens(c, sim, nuisances=4.0)
    assert dataclasses.replace(with_marks, nuisances=()) == random_lens(np.random.default_rng([7, 1]), sim)
    again = random_lens(np.random.default_rng([7, 1]), sim, nuisances=4.0)
    assert again == with_marks and with_marks.nuisances
    img1, t1 = render_lens(sim, with_marks, np.random.default_rng(3))
    img2, t2 = render_lens(sim, again, np.random.default_rng(3))
    assert img1.tobytes() == img2.tobytes() and t1 == t2


def test_truth_keeps_nuisances_apart_from_defects():
    sim = _sim(6, "pattern")
    lens = random_lens(np.random.default_rng([8, 1]), sim, defects=0, nuisances=5.0)
    _, truth = render_lens(sim, lens, np.random.default_rng(3), limits=SPEC)
    assert len(truth["nuisances"]) == len(lens.nuisances) > 0
    assert not truth["scratches"] and not truth["spots"] and not truth["coating"]
    assert {n["kind"] for n in truth["nuisances"]} <= {"watermark", "smear", "fingerprint", "residue"}
    assert truth["truth"]["haze_pct_without_nuisances"] <= truth["haze_pct"] + 1e-9
    _, plain = render_lens(sim, dataclasses.replace(lens, nuisances=()), np.random.default_rng(3), limits=SPEC)
    assert "nuisances" not in plain and "haze_pct_without_nuisances" not in plain["truth"]
    # scoring: a lens with only nuisances is defect-free; finds on a nuisance are counted apart
    fake = {**plain, "scratches": [{**truth["nuisances"][0], "length_px": 10.0}], "spots": [], "coating": []}
    m = evaluate([(truth, fake)], SPEC)
    assert m["defect_free_lenses"] == 1 and m["false_scratches_per_clean_lens"] == 1
    assert m["false_scratches_on_nuisances"] == 1 and m["nuisance_lenses"] == 1
    assert "false_scratches_on_nuisances" not in evaluate([(plain, fake)], SPEC)
    assert on_nuisance(fake["scratches"][0], truth["nuisances"]) == 0


# -- what the detectors make of them -----------------------------------------------------------
def _calibrated(backlight: str, count: int):
    out = []
    for s in range(count):
        sim = _sim(300 + s + 10 * (backlight == "pattern"), backlight)
        out.append((sim, calibrate_from_sim(sim, np.random.default_rng([s, 7]))))
    return out


def _close_ups(count: int):
    """Uncalibrated photographs through a lens filling the frame, on defocused patterns."""
    out = []
    for s in range(count):
        out.append((SimStation(close_up_station(np.random.default_rng(200 + s), pixel_size_mm=PS)), None))
    return out


def _paired(stations, n: int, defects: int, mean_marks: float, close_up: bool = False):
    """(truth, result) pairs for ``n`` lenses rendered twice: without and with nuisances
    (the same lens and noise), and how many unmatched finds of each list lie on a nuisance."""
    plain, marked = [], []
    for i in range(n):
        sim, station = stations[i % len(stations)]
        rng = np.random.default_rng([i, 5])
        lens = random_lens(rng, sim, defects=defects, kinds=("scratch",))
        if close_up:
            lens = centred(lens)
        mrng = np.random.default_rng([i, 77])
        marks = random_nuisances(mrng, render_masks(sim.params, lens.pose), PS, max(1, int(mrng.poisson(mean_marks))))
        for out, spec in ((plain, lens), (marked, dataclasses.replace(lens, nuisances=marks))):
            image, truth = render_lens(sim, spec, np.random.default_rng([i, 6]), limits=SPEC)
            res = inspect_lens(image, station, SPEC, **({} if station else {"pixel_size_mm": PS}))
            assert res.verdict != "error", res.error
            out.append((truth, res.to_dict()))
    return plain, marked


def _false_per_lens(pairs, key):
    return sum(len(r[key]) - len(match_objects(t.get(key, []), r[key])) for t, r in pairs) / len(pairs)


def test_false_alarms_on_watermarks_and_stains_calibrated():
    """Defect-free lenses with about three watermarks or stains each, calibrated station.

    Target: no finds at all (nuisances are not defects). A drop's rim that closes into most of
    a circle is reported as a watermark (``marks``), not a scratch. Measured (30 lenses, half
    uniform and half pattern): ~1.1 false scratches per lens added by the marks (it was 1.5–2
    before watermarks were recognised), nearly all short arcs of rims broken by the pattern or
    drops under 1.5 mm; ~0.03 spots; ~1.2 coating defects (stains reported as voids or runs: a
    stain's τ loss of 0.5–4 % over millimetres is what a coating void is, and on a uniform
    panel its haze cannot tell them apart). Without the nuisances the same lenses give ~0.2
    false scratches (one pattern station) and nothing else. The ceilings below, on what the
    nuisances add, are today's level with a margin, to catch a change that makes it worse.
    """
    stations = _calibrated("uniform", 3) + _calibrated("pattern", 3)
    plain, marked = _paired(stations, 30, defects=0, mean_marks=3.0)
    rates = {k: _false_per_lens(marked, k) for k in ("scratches", "spots", "coating")}
    base = {k: _false_per_lens(plain, k) for k in ("scratches", "spots", "coating")}
    print("false finds per lens with nuisances", rates, "without", base)
    extra = {k: rates[k] - base[k] for k in rates}
    assert extra["scratches"] <= 1.6 and extra["spots"] <= 0.3 and extra["coating"] <= 1.7
    m = evaluate(marked, SPEC)
    on_marks = sum(m[f"false_{k}_on_nuisances"] for k in ("scratches", "spots", "coating"))
    assert on_marks >= 0.8 * sum(extra.values()) * len(marked)  # what they add is found on them
    # the haze they add is real haze of the lens as presented, and is measured as such
    errs = [abs(r["haze_pct"] - t["haze_pct"]) for t, r in marked if t["haze_pct"] <= 10]
    assert np.median(errs) < 0.5


def test_scratch_recall_survives_nuisances():
    """Lenses with two scratches each, rendered without and with ~4 watermarks or stains.

    Measured (24 lenses per case, scratch widths drawn in mm): recall of scratches ≥ 1 mm
    0.91 → 0.82 calibrated on patterns, where three hairlines of 0.1–0.16 mm (0.6–0.8 px) and
    6–13 % contrast lie under a residue, smear or fingerprint whose added haze and texture hide
    them; 0.83 → 0.86 on uncalibrated close-ups.
    """
    for stations, close_up in ((_calibrated("pattern", 3), False), (_close_ups(3), True)):
        plain, marked = _paired(stations, 24, defects=2, mean_marks=4.0, close_up=close_up)
        m0, m1 = evaluate(plain, SPEC), evaluate(marked, SPEC)
        print("recall ≥ 1 mm without / with nuisances", m0["recall_scratch_1mm"], m1["recall_scratch_1mm"],
              "n", m0["n_scratch_1mm"])
        assert m0["n_scratch_1mm"] >= 20
        assert m1["recall_scratch_1mm"] >= m0["recall_scratch_1mm"] - 0.1


# -- watermarks are reported as marks, not scratches ----------------------------------------------
def _clear_of_traps(sim, lens, r_px: float) -> tuple[float, float]:
    """The deepest point of the lens whose disc of radius ``r_px`` (plus 1 mm) misses every trap."""
    p = sim.params
    inside = render_masks(p, lens.pose).inside_mm.copy()
    yy, xx = np.mgrid[:p.height, :p.width]
    for t in p.backlight.traps:
        tx, ty = t.x_mm / PS + (p.width - 1) / 2, t.y_mm / PS + (p.height - 1) / 2
        inside[np.hypot(xx - tx, yy - ty) < t.diameter_mm / PS / 2 + r_px + 1 / PS] = 0
    y, x = np.unravel_index(int(np.argmax(inside)), inside.shape)
    assert inside[y, x] * 1.0 > r_px * PS + 1  # the drop fits on the lens
    return float(x), float(y)


@pytest.mark.parametrize("span", [(0.0, 1.0), (0.1, 0.7)])
def test_a_watermark_is_a_mark_and_does_not_fail_the_lens(span):
    """A dried drop's rim (4 mm across, whole or 60 % of a ring) is reported under ``marks``
    (kind ``watermark``, its diameter measured) and neither scratches nor fails the lens."""
    sim = _sim(3)
    station = calibrate_from_sim(sim, np.random.default_rng(7))
    lens = _plain_lens(sim)
    cx, cy = _clear_of_traps(sim, lens, 20.0)
    wm = Watermark(_ring(cx, cy, 20.0), rim_px=2.0, rim_contrast=0.10, rim_span=span)
    image, truth = render_lens(sim, dataclasses.replace(lens, nuisances=(wm,)), np.random.default_rng(2), limits=SPEC)
    res = inspect_lens(image, station, SPEC)
    assert res.scratches == [] and res.spots == []
    assert [m.kind for m in res.marks] == ["watermark"]
    assert res.marks[0].diameter_mm == pytest.approx(4.0, rel=0.15)
    assert res.marks[0].arc_deg >= 0.9 * 360 * (span[1] - span[0])
    assert res.verdict == "pass", res.reasons
    assert res.to_dict()["marks"][0]["kind"] == "watermark"


@pytest.mark.parametrize("diameter_px, contrast, is_mark", [(95.0, 0.041, True), (20.0, 0.30, False), (95.0, 0.30, False)])
def test_a_closed_ring_of_a_drops_size_fainter_than_a_spot_is_a_watermark(monkeypatch, diameter_px, contrast, is_mark):
    """Two drops that dried overlapping leave a closed outline that no one circle fits; as a
    closed line it was taken for a bubble's rim: a 5.7 mm "spot" of 4 % that failed a clean
    photograph of the second renderer (95 px at 0.06 mm/px, its line 257 px long). A closed
    ring at least a small drop across (1.5 mm) and fainter than a spot (8 %) is now a
    watermark; a bubble's rim (about a millimetre, 15–90 %) and a dark ring stay spots. The
    rule is tested on the line the scratch detector hands over, as that photograph's was."""
    import goggleqc.inspect.scratches as scratches_module
    from goggleqc.inspect.background import Relative
    from goggleqc.inspect.results import Scratch
    from goggleqc.inspect.spots import separate

    ring = Scratch(length_px=2.7 * diameter_px, width_px=5.0, contrast=contrast, zone="unknown",
                   bbox_px=[100, 100, 100 + int(diameter_px), 100 + int(diameter_px)], polarity="dark", score=3.0)
    monkeypatch.setattr(scratches_module, "find_scratches", lambda *a, **k: [ring])
    n = 200
    rel = Relative(rel=np.ones((n, n), np.float32), valid=np.ones((n, n), bool), weight=np.ones((n, n), np.float32),
                   scale=2, model="lattice")
    marks: list = []
    scratches, spots = separate(rel, pixel_size_mm=0.06, marks=marks)
    assert scratches == []
    if is_mark:
        assert spots == [] and [m.kind for m in marks] == ["watermark"]
        assert marks[0].diameter_mm == pytest.approx((diameter_px - 2 * 2) * 0.06)  # the box less two working px
    else:
        assert [s.kind for s in spots] == ["ring"] and marks == []


def test_an_arc_scratch_stays_a_scratch():
    """An arc scratch bending through 100° (of a 6 mm circle) is abrasion, not a drop's rim."""
    from goggleqc.synth.lens import Scratch as TrueScratch

    sim = _sim(3)
    station = calibrate_from_sim(sim, np.random.default_rng(7))
    lens = _plain_lens(sim)
    cx, cy = _deepest(sim, lens)
    t = np.linspace(-np.deg2rad(50), np.deg2rad(50), 24)
    arc = tuple((cx + 30 * np.sin(a), cy - 30 * np.cos(a) + 15) for a in t)
    image, truth = render_lens(sim, dataclasses.replace(lens, scratches=(TrueScratch(arc, 1.5, 0.2, "arc"),)),
                               np.random.default_rng(2), limits=SPEC)
    res = inspect_lens(image, station, SPEC)
    assert len(res.scratches) == 1 and res.marks == []
    assert res.verdict == "fail"


def _faint_ring_rel(arc_deg: float, rest_contrast: float, seed: int = 3):
    """A working grid (scale 2, 0.06 mm/px) with a thin circle of 4.8 mm: ``arc_deg`` of it at
    8 % (found pixel by pixel) and the rest at ``rest_contrast`` (under the 2.5 % a line needs
    without a flat)."""
    from goggleqc.inspect.background import Relative

    n, f, r = 200, 2, 20.0
    yy, xx = np.mgrid[:n, :n].astype(np.float32)
    cx = cy = n / 2
    dist = np.hypot(xx - cx, yy - cy)
    ang = (np.degrees(np.arctan2(yy - cy, xx - cx)) + 360) % 360
    rim = np.exp(-0.5 * ((dist - r) / 1.0) ** 2)
    contrast = np.where(ang < arc_deg, 0.08, rest_contrast)
    rng = np.random.default_rng(seed)
    rel = 1.0 - contrast * rim + rng.normal(0, 0.006, (n, n))
    return Relative(rel=rel.astype(np.float32), valid=np.ones((n, n), bool), weight=np.ones((n, n), np.float32),
                    scale=f, model="lattice")


@pytest.mark.parametrize("rest, is_mark", [(0.012, True), (0.0, False)])
def test_an_arc_whose_circle_darkens_all_round_is_a_watermark(rest, is_mark):
    """A dried drop's rim is often found along part of its circle only (a second renderer's
    photographs: 16 "scratches" in 200 were such arcs). Traced round its circle, a rim darkens
    all the way; abrasion does not curl round a point, and a scratch's circle is clear."""
    from goggleqc.inspect.scratches import ScratchParams, find_scratches

    rel = _faint_ring_rel(120.0, rest)
    marks: list = []
    found = find_scratches(rel, pixel_size_mm=0.06, params=ScratchParams(bright=False), marks=marks)
    if is_mark:
        assert [m.kind for m in marks] == ["watermark"] and not found, (marks, found)
    else:
        assert not marks and len(found) == 1, (marks, found)


def test_a_rim_arc_whose_circle_is_fitted_a_little_off_is_still_traced_round():
    """A circle fitted to a 110° arc of a 7 mm rim is placed a few percent off in radius, and
    a dried drop's rim is a pixel or two wide, so the trace round the rest of the circle ran
    beside the rim, and the arc (6 mm of 4 %) failed a clean photograph as a scratch. The
    circle is now also traced a few percent either side, the arc held in place. An arc whose
    circle is clear (a curved scratch) is still no rim."""
    from goggleqc.inspect.background import Relative
    from goggleqc.inspect.scratches import _traced_ring

    h = w = 120
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy, r = 60.0, 60.0, 30.0
    dist = np.hypot(xx - cx, yy - cy)
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 0.004, (h, w)).astype(np.float32)
    ring = (1 - 0.04 * np.exp(-0.5 * ((dist - r) / 0.7) ** 2) + noise).astype(np.float32)
    arc_only = np.where((np.abs(np.arctan2(yy - cy, xx - cx)) < np.deg2rad(55)) & (np.abs(dist - r) < 3),
                        ring, 1 + noise).astype(np.float32)
    valid = np.ones((h, w), bool)
    a = np.deg2rad(np.linspace(-55, 55, 40))
    xs, ys = (cx + r * np.cos(a)).round().astype(int), (cy + r * np.sin(a)).round().astype(int)
    # the fit 6 % short in radius, its centre moved along the bisector: the arc is kept
    r_fit = 0.94 * r
    fit_cx = cx + (r - r_fit)
    for image, is_rim in ((ring, True), (arc_only, False)):
        rel = Relative(rel=image, valid=valid, weight=np.ones((h, w), np.float32), scale=2, origin=(0, 0))
        assert _traced_ring(rel, fit_cx, cy, r_fit, xs, ys, 0.04) is is_rim


def _lines_rel(ring_gaps_deg: tuple[float, ...] | None, arc_deg: float, line_at: tuple[float, float], seed: int = 3):
    """A working grid (scale 2, 0.06 mm/px) with a dark circle of radius 25–30 px, 8–10 %:
    either a rim broken at ``ring_gaps_deg`` (gaps of 24°) or an arc scratch of ``arc_deg``;
    and a short straight line of the same depth, 16 px long, tangential at (radius, angle)
    ``line_at`` from the circle's centre."""
    from goggleqc.inspect.background import Relative

    n = 200
    yy, xx = np.mgrid[:n, :n].astype(np.float32)
    c = n / 2
    dist = np.hypot(xx - c, yy - c)
    ang = (np.degrees(np.arctan2(yy - c, xx - c)) + 360) % 360
    if ring_gaps_deg is not None:
        gap = np.zeros_like(dist, bool)
        for g in ring_gaps_deg:
            gap |= np.abs((ang - g + 180) % 360 - 180) < 12
        curve, depth = np.exp(-0.5 * ((dist - 25) / 0.8) ** 2) * ~gap, 0.08
    else:
        curve = np.exp(-0.5 * ((dist - 30) / 0.8) ** 2) * (np.abs((ang + 180) % 360 - 180) < arc_deg / 2)
        depth = 0.1
    r, a = line_at[0], np.deg2rad(line_at[1])
    px, py = c + r * np.cos(a), c + r * np.sin(a)
    along = (xx - px) * -np.sin(a) + (yy - py) * np.cos(a)
    across = (xx - px) * np.cos(a) + (yy - py) * np.sin(a)
    line = np.exp(-0.5 * (across / 0.8) ** 2) * (np.abs(along) < 8)
    rel = 1.0 - depth * np.maximum(curve, line) + np.random.default_rng(seed).normal(0, 0.006, (n, n))
    return Relative(rel=rel.astype(np.float32), valid=np.ones((n, n), bool), weight=np.ones((n, n), np.float32),
                    scale=2, model="lattice")


def test_a_line_off_a_rims_circle_is_not_part_of_the_rim(monkeypatch):
    """Lines on one circle of a drop's size are one rim, the circle's rms allowed up to 0.2 of
    its radius (a drop's outline is irregular). An arc scratch (100° of a 3.6 mm circle) and
    a short line near its centre fit such a circle, covering 190° of it: the pair was taken
    for a rim and both scratches dropped (a second renderer's photograph: a 12.6 mm scratch
    of 15 %). Now each line must follow the joint circle on its own (within 0.15 of the
    radius), and one that does not is left out of the rim: both stay scratches. A rim broken
    in three arcs keeps its rim, and a line beside it is reported."""
    from goggleqc.inspect import scratches as scratches_module
    from goggleqc.inspect.scratches import ScratchParams, find_scratches

    params = ScratchParams(bright=False)

    def run(rel):
        marks: list = []
        found = find_scratches(rel, pixel_size_mm=0.06, params=params, marks=marks)
        return [m.kind for m in marks], found

    arc_and_line = _lines_rel(None, 100.0, (5.0, 90.0))
    marks, found = run(arc_and_line)
    assert marks == [] and len(found) == 2 and max(sc.length_px for sc in found) > 100, (marks, found)
    ring_and_line = _lines_rel((60.0, 180.0, 300.0), 0.0, (12.0, 45.0))
    marks, found = run(ring_and_line)
    assert marks == ["watermark"] and len(found) == 1 and 20 < found[0].length_px < 45, (marks, found)
    # the pair is not round either (three straight pieces fit it as well as the circle): that
    # test alone keeps both scratches too
    monkeypatch.setattr(scratches_module, "MARK_MEMBER_RMS", 99.0)
    marks, found = run(arc_and_line)
    assert marks == [] and len(found) == 2
    # without either test, the arc and the line were one "rim", and the line was in the ring's
    monkeypatch.setattr(scratches_module, "MARK_ROUND_RATIO", 0.0)
    assert run(arc_and_line) == (["watermark"], [])
    assert run(ring_and_line) == (["watermark"], [])


def _rim_with_tail_rel(bump: float, tail: bool, seed: int = 3):
    """A working grid (scale 2) with a drop's closed rim (radius 30 px, 6 %, its outline
    pushed out by ``bump`` px over ±20° at 200°) and, when ``tail``, a scratch of 12 % that
    leaves the rim at 30° and runs 36 px outward, bending a little (a second renderer's
    photograph, seed 8: a 4.8 mm scratch that ran into a watermark)."""
    from goggleqc.inspect.background import Relative

    n, c = 200, 100.0
    yy, xx = np.mgrid[:n, :n].astype(np.float32)
    ang = np.arctan2(yy - c, xx - c)
    wrapped = (ang - np.deg2rad(200) + np.pi) % (2 * np.pi) - np.pi
    radius = 30 + bump * np.exp(-0.5 * (wrapped / np.deg2rad(10)) ** 2)
    rim = np.exp(-0.5 * ((np.hypot(xx - c, yy - c) - radius) / 0.8) ** 2)
    line = np.zeros_like(rim)
    if tail:
        t = np.linspace(0, 1, 400)
        a = np.deg2rad(30) + 0.4 * t ** 2  # bends by 23° over its length
        r = 30 + 36 * t
        px, py = c + r * np.cos(a), c + r * np.sin(a)
        for x, y in zip(px, py):
            line = np.maximum(line, np.exp(-0.5 * ((xx - x) ** 2 + (yy - y) ** 2) / 0.8 ** 2))
    rel = 1.0 - np.maximum(0.06 * rim, 0.12 * line) + np.random.default_rng(seed).normal(0, 0.006, (n, n))
    return Relative(rel=rel.astype(np.float32), valid=np.ones((n, n), bool), weight=np.ones((n, n), np.float32),
                    scale=2, model="lattice")


@pytest.mark.parametrize("bump", [0.0, 8.0])
def test_a_scratch_that_runs_into_a_watermark_is_cut_off_its_rim(monkeypatch, bump):
    """A scratch that touches a dried drop's rim is one connected line with it. Read whole, a
    closed ring of a drop's size with a tail, it was taken for a watermark and the scratch was
    lost (a 4.8 mm scratch of 13 %, a false accept). Now most of the line fits the rim's
    circle, and the run that leaves it is measured as a scratch of its own; the rim stays a
    watermark. A bulge of the drop's outline leaves the circle and comes back: no scratch."""
    import goggleqc.inspect.scratches as scratches_module
    from goggleqc.inspect.spots import separate

    def run(rel):
        marks: list = []
        scratches, spots = separate(rel, pixel_size_mm=0.06, marks=marks)
        return scratches, spots, [m.kind for m in marks]

    scratches, spots, marks = run(_rim_with_tail_rel(bump, tail=True))
    assert marks == ["watermark"] and spots == [], (marks, spots)
    assert len(scratches) == 1, scratches
    # drawn 36 working px (4.3 mm) from the rim; the pixels within 0.15 of the radius of it
    # stay with the rim
    assert 3.2 <= scratches[0].length_mm <= 4.6, scratches[0]
    assert abs(scratches[0].contrast) > 0.08
    # a rim alone, with or without a bulge, is a watermark and nothing else
    assert run(_rim_with_tail_rel(bump, tail=False)) == ([], [], ["watermark"])
    # read whole, the rim and its scratch were one watermark
    monkeypatch.setattr(scratches_module, "RIM_TAIL_OFF", 99.0)
    scratches, spots, marks = run(_rim_with_tail_rel(bump, tail=True))
    assert scratches == [] and marks == ["watermark"]


def _rim_with_streak_rel(streak: float, uneven: float = 0.0, seed: int = 4):
    """A working grid (scale 2) with a drop's closed rim (radius 30 px) of 3 %, its deposit
    ``uneven`` (its strength 1 − uneven·wave round the circle, the simulator's model), and a
    straight scratch of ``streak`` contrast tangent to it at 60°, 24 px long: every pixel of
    it within 0.15 of the radius of the circle (second renderer's photographs at 0.04 mm/px,
    seed 11: 2.6 mm of 13.6 % along a 6 mm watermark of 2.7 %)."""
    from goggleqc.inspect.background import Relative

    n, c = 200, 100.0
    yy, xx = np.mgrid[:n, :n].astype(np.float32)
    ang = np.arctan2(yy - c, xx - c)
    wave = 0.5 + 0.5 * np.cos(2 * ang + 1.0)
    rim = (1 - uneven * wave) * np.exp(-0.5 * ((np.hypot(xx - c, yy - c) - 30) / 0.8) ** 2)
    a = np.deg2rad(60)
    px, py = c + 30 * np.cos(a), c + 30 * np.sin(a)
    tx, ty = -np.sin(a), np.cos(a)
    t = np.clip((xx - px) * tx + (yy - py) * ty, -12, 12)
    line = np.exp(-0.5 * ((xx - px - t * tx) ** 2 + (yy - py - t * ty) ** 2) / 0.8 ** 2)
    rel = 1.0 - np.maximum(0.03 * rim, streak * line) + np.random.default_rng(seed).normal(0, 0.004, (n, n))
    return Relative(rel=rel.astype(np.float32), valid=np.ones((n, n), bool), weight=np.ones((n, n), np.float32),
                    scale=2, model="lattice")


def test_a_scratch_lying_along_a_watermarks_rim_is_cut_off_it(monkeypatch):
    """A scratch that lies along a dried drop's rim, within 0.15 of its radius, fits the rim's
    circle: read as one line with the rim it was lost with it (2.6 mm of 13.6 %, a clear
    scratch). A drop's deposit is uneven, but not four times darker over a stretch: a run of
    the rim 2.5 times its median and 5 % or more is a scratch. An uneven rim, 1–2.5× from its
    faintest to its strongest stretch, stays a watermark and nothing else."""
    import goggleqc.inspect.scratches as scratches_module
    from goggleqc.inspect.spots import separate

    def run(rel):
        marks: list = []
        scratches, spots = separate(rel, pixel_size_mm=0.06, marks=marks)
        return scratches, spots, [m.kind for m in marks]

    scratches, spots, marks = run(_rim_with_streak_rel(0.12))
    assert marks == ["watermark"] and spots == [], (marks, spots)
    assert len(scratches) == 1, scratches
    # drawn 24 working px (2.9 mm)
    assert 2.0 <= scratches[0].length_mm <= 3.4, scratches[0]
    assert abs(scratches[0].contrast) > 0.06
    for uneven in (0.0, 0.6):
        assert run(_rim_with_streak_rel(0.0, uneven)) == ([], [], ["watermark"]), uneven
    # read whole, the rim and its scratch were one watermark
    monkeypatch.setattr(scratches_module, "RIM_STREAK_RATIO", 99.0)
    scratches, spots, marks = run(_rim_with_streak_rel(0.12))
    assert scratches == [] and marks == ["watermark"]


def _short_arc_rel(ring_depth: float, seed: int = 5):
    """A working grid (scale 2) with a drop's rim of radius 30 px seen over 36° at 5 % and,
    round the rest of its circle, ``ring_depth``; noise 0.6 %. The rest of the rim is too faint
    per pixel to be found as a line."""
    from goggleqc.inspect.background import Relative

    n, c = 200, 100.0
    yy, xx = np.mgrid[:n, :n].astype(np.float32)
    ang = np.degrees(np.arctan2(yy - c, xx - c))
    ring = np.exp(-0.5 * ((np.hypot(xx - c, yy - c) - 30) / 0.8) ** 2)
    depth = np.where(np.abs(ang - 40) < 18, 0.05, ring_depth)
    rel = 1.0 - depth * ring + np.random.default_rng(seed).normal(0, 0.006, (n, n))
    return Relative(rel=rel.astype(np.float32), valid=np.ones((n, n), bool), weight=np.ones((n, n), np.float32),
                    scale=2, model="lattice")


def test_a_short_stretch_of_a_rim_is_traced_round_its_circle(monkeypatch):
    """A watermark seen over 36° of its circle only: its curvature does not place the circle
    (under 60°), and it was reported as a scratch, 2.5 mm of 3.4 % on a clean photograph of
    the second renderer (a false reject). Circles of a drop's size tangent to it are traced
    round: where the rest of the rim darkens (here 0.9 %, 1.5σ per pixel), it is a watermark.
    With nothing round it, the same line stays a scratch."""
    from goggleqc.inspect import scratches as scratches_module
    from goggleqc.inspect.scratches import ScratchParams, find_scratches

    def run(rel):
        marks: list = []
        found = find_scratches(rel, pixel_size_mm=0.06, params=ScratchParams(bright=False), marks=marks)
        return [m.kind for m in marks], found

    marks, found = run(_short_arc_rel(0.009))
    assert marks == ["watermark"] and found == [], (marks, found)
    marks, found = run(_short_arc_rel(0.0))
    assert marks == [] and len(found) == 1 and found[0].length_mm > 1.5, (marks, found)
    monkeypatch.setattr(scratches_module, "MARK_SHORT_SIGMA", 99.0)
    marks, found = run(_short_arc_rel(0.009))
    assert marks == [] and len(found) == 1, (marks, found)


def _rim_in_grainy_noise_rel(rest: float, seed: int):
    """A working grid (scale 2) with a drop's rim of radius 10.5 px (4.2 mm at 0.1 mm/px) seen
    over 70° at 5 % and, round the rest of its circle, ``rest``; noise of 5 % per pixel
    smoothed over 1.5 px, as a compressed photograph's noise is grainy."""
    import cv2
    from goggleqc.inspect.background import Relative

    n, c = 80, 40.0
    yy, xx = np.mgrid[:n, :n].astype(np.float32)
    ang = np.degrees(np.arctan2(yy - c, xx - c))
    ring = np.exp(-0.5 * ((np.hypot(xx - c, yy - c) - 10.5) / 0.7) ** 2)
    depth = np.where(np.abs((ang + 135 + 180) % 360 - 180) < 35, 0.05, rest)
    noise = cv2.GaussianBlur(np.random.default_rng(seed).normal(0, 0.05, (n, n)).astype(np.float32), (0, 0), 1.5)
    return Relative(rel=(1.0 - depth * ring + noise).astype(np.float32), valid=np.ones((n, n), bool),
                    weight=np.ones((n, n), np.float32), scale=2, model="lattice")


def test_a_rim_seen_over_a_fifth_of_its_circle_in_grainy_noise_is_traced_round(monkeypatch):
    """A dried drop's rim seen over 60–90° in a grainy photograph: its own curvature, bent by the
    grain, placed its circle 3 px off (a 4.3 mm rim fitted as 3 mm), and the circles through its
    ends were sought only where it would cover under 60° of them, 1.5 px of radius apart: it
    was reported as a scratch (the second renderer's photographs at 0.1 mm/px, seed 16: two
    false rejects in 72 good lenses). Now circles covering up to 90°, half a pixel of radius
    apart, each moved up to a pixel, are tried: over twenty noise draws most such rims are
    watermarks; with the old search a quarter were. The same arc with nothing round it is
    taken a little more often (6 draws of 20 against 4): the darkening traced round must be
    spread over at least 80 % of the circle's unseen arcs, each half the mean or more."""
    from goggleqc.inspect import scratches as scratches_module
    from goggleqc.inspect.scratches import ScratchParams, find_scratches

    def watermarks(rest):
        taken = 0
        for seed in range(20):
            marks: list = []
            # the floor in the grain's noise (tested in test_detectors) is left out: in grain this
            # coarse it would drop the arc as a line before its rim is sought
            find_scratches(_rim_in_grainy_noise_rel(rest, seed), pixel_size_mm=0.1,
                           params=ScratchParams(bright=False, band_floor=0.0), marks=marks)
            taken += bool(marks)
        return taken

    assert watermarks(0.015) >= 15  # 18 of 20
    assert watermarks(0.0) <= 7  # 6 of 20 (4 with the old search, by the arc's own circle)
    monkeypatch.setattr(scratches_module, "MARK_SHORT_MAX_ARC", 60.0)
    monkeypatch.setattr(scratches_module, "MARK_SHORT_RADIUS_STEP_PX", 1.5)
    monkeypatch.setattr(scratches_module, "MARK_SHORT_NUDGE_PX", (0.0,))
    assert watermarks(0.015) <= 8  # 5 of 20
    monkeypatch.undo()
    # a circle through the arc's ends that runs along another dark curve for a stretch is not
    # a rim: the darkening must be spread round it
    monkeypatch.setattr(scratches_module, "MARK_EVEN_SHARE", 0.0)
    assert watermarks(0.0) >= 7


@pytest.mark.parametrize("model", ["flat", "lattice"])
def test_a_kinked_scratch_round_a_light_trap_is_a_scratch_not_a_rim(monkeypatch, model):
    """A drop's rim is round; a kinked scratch is three straight legs. One of 13 % and 7 mm
    whose legs lay round a light trap fitted a circle of a drop's size over 180° (rms 0.07 of
    its radius, within the 0.2 a drop's irregular outline is allowed) and was reported as a
    watermark, the lens passing the scratch limit (our calibrated set, seed 502). Now over
    half a circle or more the circle must fit at least 1.3 times better than the best three
    straight pieces (0.70 there; 2.1–9.8 for the second renderer's rims): the kinked line is a
    scratch, and a whole ring drawn the same way stays a watermark."""
    from goggleqc.inspect import scratches as scratches_module
    from goggleqc.inspect.background import Relative
    from goggleqc.inspect.scratches import ScratchParams, find_scratches

    n = 120
    yy, xx = np.mgrid[:n, :n].astype(np.float32)

    def segment_dist(p, q):
        (px, py), (qx, qy) = p, q
        dx, dy = qx - px, qy - py
        t = np.clip(((xx - px) * dx + (yy - py) * dy) / (dx * dx + dy * dy), 0, 1)
        return np.hypot(xx - px - t * dx, yy - py - t * dy)

    def rel_of(dist, depth=0.1):
        rel = 1.0 - depth * np.exp(-0.5 * (dist / 0.7) ** 2) + np.random.default_rng(8).normal(0, 0.006, (n, n))
        return Relative(rel=rel.astype(np.float32), valid=np.ones((n, n), bool), weight=np.ones((n, n), np.float32),
                        scale=2, model=model, frame_shape=(n, n))

    # the seed 502 scratch's legs on the working grid (full-resolution points ÷ 2, moved)
    pts = [(95.7, 34.5), (84.1, 37.2), (79.8, 45.2), (86.3, 59.0)]
    kinked = rel_of(np.minimum.reduce([segment_dist(a, b) for a, b in zip(pts, pts[1:])]))
    ring = rel_of(np.abs(np.hypot(xx - 60, yy - 60) - 12.0))
    params = ScratchParams(bright=False)

    def run(rel):
        marks: list = []
        found = find_scratches(rel, pixel_size_mm=0.1, params=params, marks=marks)
        return [m.kind for m in marks], found

    marks, found = run(kinked)
    assert marks == [] and len(found) == 1 and found[0].length_mm > 5.5, (marks, found)
    assert run(ring)[0] == ["watermark"]
    monkeypatch.setattr(scratches_module, "MARK_ROUND_RATIO", 0.0)  # as before: taken for a rim
    assert run(kinked)[0] == ["watermark"]


def test_a_small_spot_read_as_a_line_on_the_target_stays_a_spot():
    """A spot narrower than the rims the line filter is kept from is also read by it, as a
    short curled "line". In a phone photograph (development close-up, seed 3800, lens 101) a
    0.2 mm dig of 57 % was found as a spot of 0.47 mm and 15 %, while the line round it, as
    blurred as the defocused target's edges, was taken for dust on the target and claimed
    the spot with it: the dig went unreported. The spot is now judged on its own (its width
    and edge against the target's blur), and the line's mark is dropped."""
    from goggleqc.inspect.tone import parse_tone
    from goggleqc.synth.scenes import close_up

    sim, image, truth = close_up(np.random.default_rng(3800 + 101 // 6), np.random.default_rng([3800, 101, 5]),
                                 pixel_size_mm=0.1, warp=0.0, photo=True)
    (dig,) = [s for s in truth["spots"] if s.get("kind") == "dig"]
    res = inspect_lens(image, None, SPEC, pixel_size_mm=0.1, tone=parse_tone("srgb")).to_dict()
    assert match_objects([dig], res["spots"]), res["spots"]
    x0, y0, x1, y1 = dig["bbox_px"]
    assert not [m for m in res["marks"] if m["bbox_px"][0] <= x1 and m["bbox_px"][2] >= x0
                and m["bbox_px"][1] <= y1 and m["bbox_px"][3] >= y0]
