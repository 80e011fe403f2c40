"""Anti-fog coating defects (goggleqc.inspect.coating) against the simulator's truth."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from goggleqc.calibration.station import Station
from simsets import sim_and_station as sim_station
from goggleqc.inspect.coating import CoatingParams, find_coating
from goggleqc.inspect.lens import find_lens
from goggleqc.synth import random_lens, render_lens
from goggleqc.synth.lens import DullSpot, render_masks
from goggleqc.synth.scenes import random_coating


def detect(image, station):
    region = find_lens(image, station)
    return find_coating(station.transmission(image), region, station=station)


def overlaps(a, b) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


@pytest.mark.parametrize("backlight", ["uniform", "pattern"])
def test_recall_false_alarms_and_area(backlight):
    """≥ 90 % recall for ≥ 4 mm² and ≥ 1.5 % contrast; ≤ 0.05 false defects per clean lens."""
    hits = eligible = false = clean = 0
    area_ratio = []
    for seed in range(10):
        sim, station = sim_station(seed, backlight)
        for j in range(6):
            rng = np.random.default_rng([seed, j, 3])
            spec = random_lens(rng, sim, defects=0 if j < 3 else 1, kinds=("coating",))
            image, truth = render_lens(sim, spec, rng)
            found = detect(image, station)
            matched = set()
            for t in truth["coating"]:
                ok = [k for k, f in enumerate(found) if overlaps(f.bbox_px, t["bbox_px"])]
                matched.update(ok)
                if t["area_mm2"] >= 4.0 and abs(t["contrast"]) >= 0.015:
                    eligible += 1
                    if ok:
                        hits += 1
                        if t["kind"] != "mottle":  # mottle's area is where the texture shows
                            best = max((found[k] for k in ok), key=lambda f: f.area_mm2)
                            area_ratio.append(best.area_mm2 / t["area_mm2"])
                            assert best.zone == t["zone"] or best.zone == "central"
                            assert np.sign(best.contrast) == np.sign(t["contrast"])
            if not truth["coating"]:
                clean += 1
                false += len(found)
            else:
                assert len(found) - len(matched) <= 1
    assert eligible >= 15 and hits / eligible >= 0.90
    assert clean >= 30 and false / clean <= 0.05
    assert abs(float(np.median(area_ratio)) - 1.0) <= 0.3


def _lens_with(sim, seed, **coating):
    rng = np.random.default_rng(seed)
    spec = random_lens(rng, sim, defects=0)
    masks = render_masks(sim.params, spec.pose)
    defect = random_coating(rng, masks, sim.params.pixel_size_mm, **coating)
    return dataclasses.replace(spec, coating=(defect,))


@pytest.mark.parametrize("kind", ["run", "void", "mottle"])
def test_each_kind_is_found_and_measured(kind):
    sim, station = sim_station(2, "uniform")
    area = {"run": 20.0, "void": 20.0, "mottle": 120.0}[kind]  # a 20 mm² run is ≥ 2.2× longer than wide
    spec = _lens_with(sim, 4, kind=kind, area_mm2=area, contrast=0.03)
    image, truth = render_lens(sim, spec, np.random.default_rng(0))
    found = [f for f in detect(image, station) if overlaps(f.bbox_px, truth["coating"][0]["bbox_px"])]
    assert found
    best = max(found, key=lambda f: f.area_mm2)
    if kind != "mottle":
        assert best.kind == kind
        assert best.area_mm2 == pytest.approx(area, rel=0.3)
        assert best.contrast == pytest.approx(0.03, abs=0.01)
        assert best.area_px == pytest.approx(best.area_mm2 / 0.2 ** 2)
    assert best.score >= 1.0


def test_gain_change_changes_nothing():
    sim, station = sim_station(5, "pattern")
    spec = _lens_with(sim, 8, kind="void", area_mm2=10.0, contrast=0.025)
    results = []
    for gain in (0.95, 1.05):
        image, _ = render_lens(sim, dataclasses.replace(spec, gain=gain), np.random.default_rng(1))
        results.append(detect(image, station))
    assert len(results[0]) == len(results[1]) == 1
    a, b = results[0][0], results[1][0]
    assert a.kind == b.kind and a.zone == b.zone
    assert a.area_mm2 == pytest.approx(b.area_mm2, rel=0.15)
    assert a.contrast == pytest.approx(b.contrast, abs=0.003)


def test_flip_mirrors_defects():
    sim, station = sim_station(6, "uniform")
    spec = _lens_with(sim, 3, kind="run", area_mm2=10.0, contrast=0.03)
    image, _ = render_lens(sim, spec, np.random.default_rng(2))
    flipped = Station(dark=station.dark[:, ::-1].copy(), flat=station.flat[:, ::-1].copy(), bits=8, pixel_size_mm=0.2,
                      backlight="uniform")
    a = detect(image, station)
    b = detect(np.ascontiguousarray(image[:, ::-1]), flipped)
    assert len(a) == len(b) == 1
    w = image.shape[1]
    x0, y0, x1, y1 = a[0].bbox_px
    mirrored = [w - x1, y0, w - x0, y1]
    assert np.abs(np.subtract(mirrored, b[0].bbox_px)).max() <= 2
    assert a[0].area_mm2 == pytest.approx(b[0].area_mm2, rel=0.1)


def test_8_and_16_bit_agree():
    found = []
    for bits in (8, 16):
        sim, station = sim_station(7, "pattern", bits=bits)
        spec = _lens_with(sim, 5, kind="void", area_mm2=15.0, contrast=0.02)
        image, _ = render_lens(sim, spec, np.random.default_rng(3))
        found.append(detect(image, station))
    assert len(found[0]) == len(found[1]) == 1
    assert found[0][0].area_mm2 == pytest.approx(found[1][0].area_mm2, rel=0.2)


def test_without_station_or_pixel_size():
    """Uniform backlight, no station: traps (transmission 0) still give nothing; sizes in px."""
    sim, station = sim_station(1, "uniform")
    spec = _lens_with(sim, 2, kind="void", area_mm2=15.0, contrast=0.03)
    image, truth = render_lens(sim, spec, np.random.default_rng(4))
    region = find_lens(image, station)
    region = dataclasses.replace(region, pixel_size_mm=None)
    found = find_coating(station.transmission(image), region)
    assert len(found) == 1
    assert found[0].area_mm2 is None and found[0].zone == "unknown"
    assert found[0].area_px == pytest.approx(truth["coating"][0]["area_px"], rel=0.3)


def test_params_from_dict():
    p = CoatingParams.from_dict({"k_high": 7, "unknown": 1})
    assert p.k_high == 7.0 and p.k_low == CoatingParams().k_low


def test_dull_spot_beside_a_flaw_on_a_pattern():
    """A dull spot (local haze) on a pattern backlight lifts the dark cells and dims the bright
    ones (station-model §2: T = g·τ·[1 + h·(S − 1)]); the background follows the local haze,
    so a faint void beside it is still found, and the dull spot alone is not taken for coating."""
    hits = trials = false = 0
    for seed in range(6):
        sim, station = sim_station(seed, "pattern")
        spec = _lens_with(sim, [seed, 11], kind="void", area_mm2=12.0, contrast=0.02)
        cx, cy = np.mean(np.asarray(spec.coating[0].outline_px), axis=0)
        ps = sim.params.pixel_size_mm
        away = np.array([cx, cy]) - np.array(sim.shape[::-1]) / 2  # the dull spot towards the lens centre
        away = away / max(np.hypot(*away), 1e-6) * 9.0 / ps
        dull = DullSpot(x_px=float(cx - away[0]), y_px=float(cy - away[1]), diameter_px=14.0 / ps, haze=0.07)
        image, truth = render_lens(sim, dataclasses.replace(spec, dull_spots=(dull,)), np.random.default_rng(seed))
        found = detect(image, station)
        trials += 1
        hits += any(overlaps(f.bbox_px, truth["coating"][0]["bbox_px"]) for f in found)
        only_dull = dataclasses.replace(spec, coating=(), dull_spots=(dull,))
        image, _ = render_lens(sim, only_dull, np.random.default_rng(seed))
        false += len(detect(image, station))
    assert hits == trials
    assert false == 0


def test_mottle_texture_is_not_reported_as_scratches(monkeypatch):
    """Orange-peel mottle's ridges answer the line filter: on development sets most scratch
    reports that matched no true scratch lay on a mottle (57 of 65 on pattern backlights),
    ridges no darker than the texture. With a flat, a line no darker than 3× the rms of the
    τ texture around it (beyond the camera's noise) is that texture (ScratchParams.
    texture_ratio), and so is a line inside a found mottle no darker than 3× its contrast
    (pipeline.MOTTLE_TEXTURE_RATIO). On the cached test sets the two remove most such
    reports and lose no true scratch."""
    from dataclasses import replace

    from goggleqc.capture.imagefile import read_image
    from goggleqc.inspect import pipeline
    from goggleqc.inspect.scratches import ScratchParams
    from goggleqc.spec import load_spec
    from goggleqc.synth.scoring import match_objects
    from simsets import sample_set, truth_records

    def overlaps_mottle(found, truth):
        return any(overlaps(found["bbox_px"], c["bbox_px"]) for c in truth["coating"] if c["kind"] == "mottle")

    def counts(detectors):
        on_mottle = matched = 0
        for folder in (sample_set(150, 101, "uniform"), sample_set(150, 202, "pattern")):
            station, spec = Station.load(folder / "station"), load_spec(folder / "spec.toml")
            for truth in truth_records(folder):
                if not truth["coating"]:
                    continue
                image = read_image(folder / "lenses" / truth["image"])
                res = pipeline.inspect_lens(image, station, spec, detectors=detectors).to_dict()
                hit = {j for _, j in match_objects(truth["scratches"], res["scratches"])}
                matched += len(hit)
                on_mottle += sum(j not in hit and overlaps_mottle(sc, truth) for j, sc in enumerate(res["scratches"]))
        return on_mottle, matched

    with_rules = counts(pipeline.Detectors())
    monkeypatch.setattr(pipeline, "MOTTLE_TEXTURE_RATIO", 0.0)
    without = counts(replace(pipeline.Detectors(), scratches=replace(ScratchParams(), texture_ratio=0.0)))
    print(dict(with_rules=with_rules, without=without))
    assert with_rules[1] == without[1]
    assert with_rules[0] <= 0.4 * without[0]


def test_a_run_read_as_a_line_is_the_run_and_a_scratch_in_a_halo_stays_a_scratch():
    """A run (a streak millimetres wide) can answer the line filter along its length: the
    line lies within the run's box and is about as faint, so it is the run (stress sets, 2 MP
    at 0.1 mm/px: a 15 mm² run became a 16 mm "scratch" and the run was dropped as its halo).
    A true scratch, whose faint halo the coating detector may read as a run around it, stands
    well above it; a scratch that runs past the run is no part of it."""
    from goggleqc.inspect.pipeline import _run_itself
    from goggleqc.inspect.results import CoatingDefect, Scratch

    run = CoatingDefect(kind="run", area_px=2200.0, contrast=0.04, zone="central", bbox_px=[660, 564, 708, 708])
    along = Scratch(length_px=164.0, width_px=8.5, contrast=0.035, zone="central", bbox_px=[660, 560, 704, 714])
    halo = CoatingDefect(kind="run", area_px=3000.0, contrast=0.029, zone="central", bbox_px=[1124, 660, 1140, 872])
    thin = Scratch(length_px=209.0, width_px=3.8, contrast=0.077, zone="central", bbox_px=[1128, 660, 1134, 874])
    past = Scratch(length_px=400.0, width_px=2.0, contrast=0.04, zone="central", bbox_px=[600, 300, 700, 900])
    mottle = dataclasses.replace(run, kind="mottle")
    assert _run_itself(along, [run])
    assert not _run_itself(thin, [halo])
    assert not _run_itself(past, [run])
    assert not _run_itself(along, [mottle])  # mottle has its own rule


def test_a_wide_faint_line_on_a_coating_flaw_is_the_flaw():
    """A scratch is thin: no true scratch on the development sets measured wider than 0.59 mm,
    while 11 of the 13 lines measured 0.6–0.9 mm wide lay on a run, a mottle or a void (a
    25 mm² run read as a 15.7 mm "scratch" of 3.4 %, 0.9 mm wide, and the mottle the coating
    detector had found there was dropped as the line's halo). Such a line, fainter than 5 %
    and lying mostly on a found flaw or along its edge (its box grown by 1 mm), is the flaw. Soft optics widen a true scratch past
    0.6 mm, so a wide line elsewhere stays a scratch, as does a thin or a darker one on a flaw,
    and any line without a pixel size (no width in mm)."""
    from goggleqc.inspect.pipeline import _flaw_itself
    from goggleqc.inspect.results import CoatingDefect, Scratch
    from goggleqc.inspect.scratches import ScratchParams

    params, ps = ScratchParams(), 0.1
    mottle = CoatingDefect(kind="mottle", area_px=3550.0, contrast=0.014, zone="central", bbox_px=[184, 80, 242, 194])
    line = Scratch(length_px=157.3, width_px=9.0, contrast=0.034, zone="central", bbox_px=[190, 62, 236, 208])
    assert _flaw_itself(line, [mottle], ps, params)
    assert not _flaw_itself(line, [], ps, params)
    assert not _flaw_itself(line, [mottle], None, params)
    assert not _flaw_itself(dataclasses.replace(line, width_px=4.0), [mottle], ps, params)  # 0.4 mm: thin
    assert not _flaw_itself(dataclasses.replace(line, contrast=0.08), [mottle], ps, params)  # darker than a flaw
    elsewhere = dataclasses.replace(line, bbox_px=[300, 62, 346, 208])
    assert not _flaw_itself(elsewhere, [mottle], ps, params)
    # along the flaw's edge, just past its found box (a mottle's found edge 1.2 mm short of its own)
    edge = dataclasses.replace(line, bbox_px=[238, 110, 246, 138])
    assert _flaw_itself(edge, [mottle], ps, params)


def test_uncalibrated_coating_on_a_plain_panel():
    """Without a station the product still seeks coating defects (station-model §3), on a
    plain panel: the image stands in for the transmission, with a 4 mm background that follows
    the panel's own unevenness and a floor of 1 % (:func:`goggleqc.inspect.coating.uncalibrated`).
    Measured on these sets (640×512 at 0.08 mm/px, mixed lenses and defect-free ones): recall
    for ≥ 4 mm² and ≥ 1.5 % of 69 % (92 % at 1224×1024, where the noise averages down further);
    no false coating defect on a defect-free lens. Before, no coating was sought at all."""
    from goggleqc.spec import load_spec
    from goggleqc.synth.scoring import evaluate
    from simsets import inspect_set, sample_set

    metrics = {}
    for name, kw in (("mixed", dict(count=150, seed=5004)), ("clean", dict(count=60, seed=5005, defects=0))):
        folder = sample_set(backlight="uniform", size=(640, 512), pixel_size_mm=0.08, **kw)
        spec = load_spec(folder / "spec.toml")
        metrics[name] = evaluate(inspect_set(folder, None, spec, pixel_size_mm=0.08), spec)
    assert metrics["mixed"]["n_coating"] >= 25
    assert metrics["mixed"]["recall_coating"] >= 0.6
    assert metrics["clean"]["false_coating_per_clean_lens"] <= 0.05


@pytest.mark.parametrize("backlight", ["uniform", "pattern"])
def test_a_mottle_whose_texture_wanders_is_measured_whole(backlight):
    """Orange peel's amplitude wanders over its patch. Measured where its texture energy is
    near its strongest, a 36 mm² mottle of 1.5–3.5 % was found as 8.5 mm² in the marginal band
    and passed (second renderer). Its extent is where the texture shows: here a 55 mm² patch
    of 0.8 mm grains, 3.5 % on one half and 1.5 % on the other, on a coarse 0.2 mm/px station
    (6 mm² or a "void" when measured at half its plateau; the faint half's edges stay unseen)."""
    sim, station = sim_station(2, backlight)
    spec = _lens_with(sim, 4, kind="run", area_mm2=20.0, contrast=0.0)
    image, _ = render_lens(sim, dataclasses.replace(spec, coating=()), np.random.default_rng(0))
    region = find_lens(image, station)
    ps, (h, w) = station.pixel_size_mm, image.shape
    cy, cx = h // 2, w // 2
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    inside = ((xx - cx) / (5 / ps)) ** 2 + ((yy - cy) / (3.5 / ps)) ** 2 < 1
    rng = np.random.default_rng(7)
    grains = cv2.resize(rng.normal(size=(int(h * ps / 0.8), int(w * ps / 0.8))).astype(np.float32), (w, h),
                        interpolation=cv2.INTER_CUBIC)
    amplitude = np.where(xx < cx, 0.035, 0.015)
    t = station.transmission(image) * (1 + np.where(inside, amplitude * grains, 0))
    found = find_coating(t, region, station=station)
    assert [f.kind for f in found] == ["mottle"], found
    assert found[0].area_mm2 >= 15.0, found


@pytest.mark.parametrize("fall_off", [0.3, 0.6])
def test_a_vignetted_photograph_through_the_lens_has_no_ring_of_coating(fall_off):
    """A photograph through a lens of a plain panel, no flat: the light falls off towards the
    corners. The 4 mm box background, one-sided where the search ends, left a ring along the
    picture's edge that read as a 60–110 mm² void and failed a clean photograph (second
    renderer: 1 in 200 at 640×512, 1 in 12 at 12 MP). The fall-off is now divided out by a
    smooth surface first, and what lies along the picture's edge within the box's reach is not
    judged; a 4.8 mm void of 4 % in the middle is still found, where it is."""
    from goggleqc.inspect.pipeline import inspect_lens

    h, w = 512, 640
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    r2 = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
    light = 200 * (1 - fall_off * r2) ** 2
    void = np.hypot(xx - 300, yy - 260) < 40  # 4.8 mm across at 0.06 mm/px
    for flawed in (False, True):
        image = light * np.where(void & flawed, 0.96, 1.0)
        image = np.clip(image + np.random.default_rng(1).normal(0, 1.5, image.shape), 0, 255).astype(np.uint8)
        res = inspect_lens(image, None, None, pixel_size_mm=0.06)
        assert res.extra["lens_outline"].startswith("whole frame")
        if not flawed:
            assert res.coating == [] and res.verdict == "pass", res.coating
        else:
            assert len(res.coating) == 1, res.coating
            x0, y0, x1, y1 = res.coating[0].bbox_px
            assert x0 <= 300 <= x1 and y0 <= 260 <= y1
            assert res.coating[0].area_mm2 == pytest.approx(np.pi * 2.4 ** 2, rel=0.4)


def test_a_void_half_over_a_light_trap_is_measured_with_its_hidden_half():
    """A trap hides what lies over it, not where a flaw ends: a void half over a trap was
    measured by its lit half alone (a 20 mm² void read 13.7 mm², and in the marginal band, on
    the second renderer). The part of the flaw's hull that the trap (and its margin) hides
    is counted in its area, box and zone; what is seen still decides whether it is a flaw."""
    from goggleqc.synth.lens import CoatingDefect

    sim, station = sim_and_station_uniform()
    trap = station.traps[0]
    ps = station.pixel_size_mm
    radius = 3.0 / ps  # a 28 mm² void, its centre on the trap's rim
    cx, cy = trap.x_px + trap.r_px, trap.y_px
    outline = tuple((cx + radius * np.cos(a), cy + radius * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 48, endpoint=False))
    spec = dataclasses.replace(random_lens(np.random.default_rng(7), sim, defects=0),
                               coating=(CoatingDefect(kind="void", outline_px=outline, contrast=0.03),))
    image, truth = render_lens(sim, spec, np.random.default_rng(0))
    found = [f for f in detect(image, station) if overlaps(f.bbox_px, truth["coating"][0]["bbox_px"])]
    assert len(found) == 1
    area = np.pi * (3.0 ** 2)
    # the trap (3.4 mm in radius) and its 1 mm margin hide 56 % of the disc; seen alone it
    # measured 12.3 mm² and, a crescent, a "run". Its hull over the trap gives part back
    assert found[0].kind == "void"
    assert found[0].area_mm2 >= 0.5 * area


def sim_and_station_uniform():
    sim, station = sim_station(2, "uniform")
    assert station.traps
    return sim, station


@pytest.mark.parametrize("offset", [-0.2, 0.0, 0.2])
def test_a_mottle_beside_a_light_trap_is_measured_whole(offset):
    """The texture's window median counted the trap's pixels as zeros, so orange peel beside a
    trap read faint and its extent shrank: a 52 mm² mottle a third over a trap measured 3 mm²
    and passed (second renderer); here a 64 mm² one, its edge 0.9 mm either side of the
    trap's rim, read 39–54 mm². Over the trap the median now sees as many values above as
    below, and the mottle's hull over the trap counts."""
    from goggleqc.synth.lens import CoatingDefect

    sim, station = sim_and_station_uniform()
    trap = station.traps[0]
    radius = 4.5 / station.pixel_size_mm
    cx, cy = trap.x_px + trap.r_px + offset * radius, trap.y_px
    outline = tuple((cx + radius * np.cos(a), cy + radius * np.sin(a))
                    for a in np.linspace(0, 2 * np.pi, 48, endpoint=False))
    spec = dataclasses.replace(random_lens(np.random.default_rng(12), sim, defects=0),
                               coating=(CoatingDefect(kind="mottle", outline_px=outline, contrast=0.025, seed=2),))
    image, truth = render_lens(sim, spec, np.random.default_rng(2))
    found = [f for f in detect(image, station) if overlaps(f.bbox_px, truth["coating"][0]["bbox_px"])]
    assert [f.kind for f in found] == ["mottle"]
    assert found[0].area_mm2 == pytest.approx(np.pi * 4.5 ** 2, rel=0.15)


def test_a_run_passing_behind_a_light_trap_is_one_run():
    """A vertical run crossing a trap is seen above and below it. It was reported as two
    flaws, a run and a "void" (19 and 14 mm² for one 56 mm² run in the bundled samples); the
    pieces whose joint hull lies on them or on the trap are now one, measured with its hidden
    part."""
    from goggleqc.synth.lens import CoatingDefect

    sim, station = sim_and_station_uniform()
    trap = station.traps[0]
    ps = station.pixel_size_mm
    half_w, half_h = 1.2 / ps, 9.0 / ps  # 2.4 × 18 mm, the trap 6.7 mm across in its middle
    cx, cy = trap.x_px, trap.y_px
    outline = ((cx - half_w, cy - half_h), (cx + half_w, cy - half_h), (cx + half_w, cy + half_h),
               (cx - half_w, cy + half_h))
    spec = dataclasses.replace(random_lens(np.random.default_rng(9), sim, defects=0),
                               coating=(CoatingDefect(kind="run", outline_px=outline, contrast=0.03),))
    image, truth = render_lens(sim, spec, np.random.default_rng(4))
    found = [f for f in detect(image, station) if overlaps(f.bbox_px, truth["coating"][0]["bbox_px"])]
    assert [f.kind for f in found] == ["run"]
    assert found[0].area_mm2 == pytest.approx(2.4 * 18.0, rel=0.3)


def test_a_hazy_lens_leaves_no_ring_round_a_light_trap(monkeypatch):
    """Where the flat falls into a trap, the haze light ``h·(B ⊛ K)`` is a large part of what
    is seen and ``K`` is only known nominally: a lens of 5 % haze leaves a ring of 1–3 % round
    each trap there. The blocks where the flat is below 0.9 of its surround are not searched,
    and no margin is needed past them. Without that rule, a margin of one block past the
    blocks the trap darkens lets the search reach the trap's soft edge, and the rings are
    read as voids."""
    import goggleqc.inspect.coating as coating

    def false_finds(params):
        n = 0
        for seed in range(4):
            sim, station = sim_station(seed, "uniform")
            for j in range(3):
                rng = np.random.default_rng([seed, j, 5])
                spec = dataclasses.replace(random_lens(rng, sim, defects=0), haze=0.05)
                image, _ = render_lens(sim, spec, rng)
                n += len(find_coating(station.transmission(image), find_lens(image, station), station=station,
                                      params=params))
        return n

    assert false_finds(CoatingParams()) == 0
    monkeypatch.setattr(coating, "TRAP_EDGE_LEVEL", 0.0)
    assert false_finds(CoatingParams(trap_margin_mm=0.4)) >= 6


@pytest.mark.parametrize("seed", [2, 3])
def test_a_void_round_a_sharp_light_trap_is_found(seed):
    """A void centred on a trap shows only as a ring past the trap's edge, 0.8 mm wide here.
    A trap in focus has a sharp edge, and a fixed 1 mm margin round the blocks it darkens
    (0.96 mm at 0.08 mm/px) left the ring almost wholly unsearched: the lens passed (second
    renderer: a 24 mm² void, half over a trap). The search now comes up to where the flat
    reaches 0.9 of its surround, and the void's hull over the trap counts in its area."""
    from goggleqc.benchmarking import calibrate_from_sim
    from goggleqc.synth import SimStation, random_station
    from goggleqc.synth.lens import CoatingDefect

    params = random_station(np.random.default_rng(seed), width=480, height=384, pixel_size_mm=0.08,
                            backlight="uniform")
    params = dataclasses.replace(params, backlight=dataclasses.replace(params.backlight, defocus_mm=0.0))
    sim = SimStation(params)
    station = calibrate_from_sim(sim, np.random.default_rng([seed, 7]))
    trap = station.traps[0]
    radius = trap.r_px + 0.8 / station.pixel_size_mm
    outline = tuple((trap.x_px + radius * np.cos(a), trap.y_px + radius * np.sin(a))
                    for a in np.linspace(0, 2 * np.pi, 48, endpoint=False))
    spec = dataclasses.replace(random_lens(np.random.default_rng(3), sim, defects=0),
                               coating=(CoatingDefect(kind="void", outline_px=outline, contrast=0.03),))
    image, truth = render_lens(sim, spec, np.random.default_rng(5))
    found = [f for f in detect(image, station) if overlaps(f.bbox_px, truth["coating"][0]["bbox_px"])]
    assert [f.kind for f in found] == ["void"]
    assert found[0].area_mm2 == pytest.approx(truth["coating"][0]["area_mm2"], rel=0.15)


def test_no_coating_flaw_round_a_light_trap_without_a_station(monkeypatch):
    """Without a flat nothing divides out the blur of a light trap's edge. With no pixel size
    either, the 1 mm margin kept round the dark parts is read at an assumed 0.1 mm/px: half a
    millimetre of the bundled samples' 0.06 mm/px camera, inside the trap's blur. A band of it
    was left in the search and a clean sample lens failed on a 64 mm² "void" round a trap. The
    blur is now measured from the image (:func:`goggleqc.inspect.coating._dark_edge_blur`)."""
    import json
    from pathlib import Path

    import goggleqc.inspect.coating as coating_module
    from goggleqc.capture.imagefile import read_image
    from goggleqc.inspect.pipeline import inspect_lens
    from goggleqc.spec import load_spec

    samples = Path(__file__).resolve().parent.parent / "samples"
    clean = [t["image"] for t in map(json.loads, (samples / "truth.jsonl").read_text().splitlines())
             if t["verdict"] == "pass"]
    assert len(clean) >= 3
    spec = load_spec("en166-clear")

    def coating_found():
        return {name: inspect_lens(read_image(samples / "lenses" / name), None, spec).coating for name in clean}

    assert not any(coating_found().values())
    # margins as before: the sample with a trap at the light's slope fails
    monkeypatch.setattr(coating_module, "_dark_edge_blur", lambda *args: 0)
    assert any(coating_found().values())


def test_many_flaws_filling_a_good_part_of_the_lens_do_not_hide_one_another():
    """The smoothed departure's noise was read as its robust spread over the whole lens; flaws
    filling a good part of it made that spread theirs, and the thresholds rose above them (the
    second renderer's seed 13: a 52 mm² void and two runs of 2–3 % in a two-eye goggle, read
    against thresholds of 3.9 %; the lens passed). The spread is now capped at twice its
    typical spread within windows of a few smoothing lengths, which a flaw of millimetres,
    smooth within a window, does not lift. Five or six flaws of 40–50 mm² at 2–3 % per lens."""
    from goggleqc.synth.lens import render_masks

    hits = total = false = 0
    for seed in range(10):
        sim, station = sim_station(seed % 4, "uniform")
        rng = np.random.default_rng(seed)
        spec = random_lens(rng, sim, defects=0)
        masks = render_masks(sim.params, spec.pose)
        flaws = (("void", 50.0, 0.025), ("run", 40.0, -0.03), ("void", 50.0, -0.02), ("run", 40.0, 0.025),
                 ("void", 50.0, 0.02), ("run", 40.0, -0.025))
        defects = [random_coating(rng, masks, sim.params.pixel_size_mm, kind=k, area_mm2=a, contrast=c) for k, a, c in flaws]
        spec = dataclasses.replace(spec, coating=tuple(d for d in defects if d is not None))
        image, truth = render_lens(sim, spec, np.random.default_rng(seed))
        found = detect(image, station)
        hits += sum(any(overlaps(f.bbox_px, t["bbox_px"]) for f in found) for t in truth["coating"])
        total += len(truth["coating"])
        false += sum(not any(overlaps(f.bbox_px, t["bbox_px"]) for t in truth["coating"]) for f in found)
    assert total >= 50
    assert hits / total >= 0.8  # 0.76 with the whole lens' spread
    assert false <= 1


def test_a_mottle_centred_on_a_light_trap_is_judged_with_what_the_trap_hides():
    """A mottle centred on a light trap shows as a ring of texture round the trap's margin,
    and the texture's windowed median reads only the part of the ring where most of the
    window is texture: a 44 mm² mottle (two thirds backlit) showed 4.3 mm² of texture, under
    the 6 mm² mottle floor, and its lens passed (second renderer, calibrated seed 13). With a
    flat a texture reaching a trap must now show the floor of any flaw (2.5 mm²) and reach the
    mottle floor with the part of its hull the trap hides. Here discs of 0.8 mm grains of rms
    1.5–2 % round a 3.4 mm trap: found before in 5 of 8."""
    sim, station = sim_and_station_uniform()
    trap, ps = station.traps[0], station.pixel_size_mm
    spec = _lens_with(sim, 4, kind="run", area_mm2=20.0, contrast=0.0)
    image, _ = render_lens(sim, dataclasses.replace(spec, coating=()), np.random.default_rng(0))
    region = find_lens(image, station)
    h, w = image.shape
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    found = 0
    for radius_mm, amplitude in ((5.2, 0.02), (5.6, 0.015)):
        inside = np.hypot(xx - trap.x_px, yy - trap.y_px) < radius_mm / ps
        for seed in range(4):
            grains = cv2.resize(np.random.default_rng(seed).normal(size=(int(h * ps / 0.8), int(w * ps / 0.8)))
                                .astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
            t = station.transmission(image) * (1 + np.where(inside, amplitude * grains, 0))
            found += any(f.kind == "mottle" for f in find_coating(t, region, station=station))
    assert found == 8, found
