"""Baselines in the same run: scikit-image scratch detection, naive numpy flat correction and haze.

Scratch detection
    goggleqc's :func:`~goggleqc.inspect.scratches.find_scratches` against a scikit-image
    implementation of the same job: ``skimage.filters.sato`` ridge filter (dark ridges, σ =
    1 and 2 working-grid px) on the same relative-transmittance image (the half-resolution
    working grid), whitened by the same noise weight, a threshold in robust noise units,
    ``apply_hysteresis_threshold`` so broken scratches stay one object, and connected
    components of elongated shape. Both run on identical inputs from
    :func:`~goggleqc.inspect.background.relative_image`. Recall (scratches ≥ 1 mm at ≥ 5 %
    contrast, :func:`goggleqc.synth.scoring.evaluate`) and false scratches per defect-free
    lens are measured for both on the same simulated lenses; ``extra_info`` carries them and
    the speed ratio (baseline median ÷ goggleqc median). Two baselines: ``skimage-working-grid``
    gets exactly goggleqc's input (the half-resolution working grid), so it compares the
    filters; ``skimage-full-res`` runs at full resolution (σ doubled, the same physical
    scales) on the same relative image brought to full size, as a scikit-image user would.

Flat correction and trap haze
    A naive numpy version of the per-lens work (float64, masks and thresholds recomputed per
    lens, no per-station precomputation) against the product's, with the ratio.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage.filters import apply_hysteresis_threshold, sato
from skimage.measure import label, regionprops

from bench_data import SIZES, load_or_render, record_stage_calls
from goggleqc.inspect.background import Relative
from goggleqc.inspect.pipeline import inspect_lens
from goggleqc.spec import DEFAULT_SPEC, load_spec
from goggleqc.synth.scoring import evaluate

SPEC = load_spec(DEFAULT_SPEC)

#: lenses of the recall comparison (1.3 MP 8-bit, uniform backlight): with three scratches each, and defect-free
N_SCRATCHED, N_CLEAN = 12, 6
#: the baseline's settings: sato scales (working-grid px, as goggleqc's), hysteresis in
#: robust-noise units, shape filter (full-resolution px)
SATO_SIGMAS_PX = (1.0, 2.0)
SATO_HIGH, SATO_LOW = 8.0, 4.0
#: detector name → ScratchCase method
DETECTORS = {"goggleqc": "ours", "skimage-working-grid": "baseline", "skimage-full-res": "baseline_full"}
MIN_LENGTH_PX, MIN_ELONGATION = 6.0, 3.0


def skimage_scratches(rel, sigmas_px: tuple[float, ...] = SATO_SIGMAS_PX) -> list[dict]:
    """The scikit-image baseline: sato ridge filter, noise-scaled hysteresis, elongated components.

    Parameters
    ----------
    rel : goggleqc.inspect.background.Relative
        The same working-grid relative transmittance (``rel``, ``valid``, noise ``weight``,
        ``scale``) goggleqc's detector gets, or its full-resolution version.
    sigmas_px : tuple of float
        sato scales in pixels of ``rel``.

    Returns
    -------
    list of dict
        ``bbox_px`` ([x0, y0, x1, y1], exclusive ends, full-resolution pixels) and
        ``length_px`` (major axis length, full-resolution pixels): the fields truth matching uses.
    """
    valid = rel.valid
    image = np.where(valid, rel.rel, 1.0).astype(np.float64)
    response = sato(image, sigmas=sigmas_px, black_ridges=True) * rel.weight  # whitened like ours
    inside = response[valid]
    centre = np.median(inside)
    noise = 1.4826 * np.median(np.abs(inside - centre)) + 1e-12
    z = np.where(valid, (response - centre) / noise, 0.0)
    mask = apply_hysteresis_threshold(z, SATO_LOW, SATO_HIGH)
    f = rel.scale
    ox, oy = getattr(rel, "origin", (0, 0))  # the working grid may be a crop around the lens
    found = []
    for reg in regionprops(label(mask)):
        major, minor = reg.axis_major_length * f, reg.axis_minor_length * f
        if major >= MIN_LENGTH_PX and major >= MIN_ELONGATION * max(minor, 1.0):
            r0, c0, r1, c1 = reg.bbox
            found.append({"bbox_px": [(c0 + ox) * f, (r0 + oy) * f, (c1 + ox) * f, (r1 + oy) * f],
                          "length_px": float(major), "contrast": 0.0})
    return found


def full_resolution(rel, transmission: np.ndarray) -> Relative:
    """The same relative image at full resolution, for a baseline that works there.

    The working grid's background ``τ_bg = reduce(T) / rel`` is brought to full size
    (bilinear) and the full-resolution flat-corrected frame ``T`` divided by it, over the same
    crop; ``valid`` and the noise weight are enlarged (nearest) from the working grid.
    """
    f = rel.scale
    ox, oy = getattr(rel, "origin", (0, 0))
    m, n = rel.rel.shape
    crop = transmission[oy * f:(oy + m) * f, ox * f:(ox + n) * f]
    h, w = crop.shape
    small = cv2.resize(crop, (n, m), interpolation=cv2.INTER_AREA)
    with np.errstate(divide="ignore", invalid="ignore"):
        bg = np.where(rel.valid, small / rel.rel, 0.0).astype(np.float32)
    bg_full = cv2.resize(bg, (w, h), interpolation=cv2.INTER_LINEAR)
    valid = cv2.resize(rel.valid.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
    valid &= bg_full > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        full = np.where(valid, crop / bg_full, 1.0).astype(np.float32)
    weight = cv2.resize(rel.weight, (w, h), interpolation=cv2.INTER_NEAREST) / f  # one pixel: f× the noise
    return Relative(rel=full, valid=valid, weight=weight.astype(np.float32), scale=1, origin=(ox * f, oy * f))


class ScratchCase:
    """One lens, with the scratch detection exactly as ``inspect_lens`` runs it (recorded and replayed).

    goggleqc's detection is the pipeline's ``scratches`` call (``find_scratches`` with the
    arguments ``separate`` gives it); its output for recall is the pipeline's reported
    scratches. The baselines get the same working-grid relative image.
    """

    def __init__(self, station, image, truth):
        calls = record_stage_calls(image, station, SPEC)
        self.scratch_call = calls["scratches"]
        self.rel = calls["scratches+spots"].args[0] if "scratches+spots" in calls else self.scratch_call.args[0]
        self.reported = [s.__dict__ for s in inspect_lens(image, station, SPEC).scratches]
        self.rel_full = full_resolution(self.rel, station.transmission(image))
        self.truth = truth

    def ours(self) -> list[dict]:
        return [s.__dict__ for s in self.scratch_call.call()]

    def baseline(self) -> list[dict]:
        return skimage_scratches(self.rel)

    def baseline_full(self) -> list[dict]:
        return skimage_scratches(self.rel_full, sigmas_px=tuple(2 * s for s in SATO_SIGMAS_PX))


@pytest.fixture(scope="module")
def scratch_cases():
    w, h = SIZES["1.3MP"]
    cases = []
    for tag, count, defects in (("scratches3", N_SCRATCHED, 3), ("clean", N_CLEAN, 0)):
        data = load_or_render(w, h, bits=8, count=count, seed=3, defects=defects, kinds=("scratch",), tag=tag)
        cases += [ScratchCase(data.station, f, t) for f, t in zip(data.frames, data.truths)]
    return cases


@pytest.fixture(scope="module")
def scratch_accuracy(scratch_cases):
    """Recall and false alarms of both detectors on the same lenses."""
    out = {}
    for name in DETECTORS:
        found = (lambda c: c.reported) if name == "goggleqc" else (lambda c: getattr(c, DETECTORS[name])())
        pairs = [(c.truth, {"verdict": "pass", "scratches": found(c)}) for c in scratch_cases]
        m = evaluate(pairs, SPEC)
        out[name] = {"recall_scratch_1mm": m["recall_scratch_1mm"], "n_scratch_1mm": m["n_scratch_1mm"],
                     "false_scratches_per_clean_lens": m["false_scratches_per_clean_lens"]}
    return out


_scratch_median: dict = {}


@pytest.mark.parametrize("detector", list(DETECTORS))
def test_scratch_detection_1_3mp(benchmark, scratch_cases, scratch_accuracy, detector):
    case = scratch_cases[0]
    fn = getattr(case, DETECTORS[detector])
    benchmark.group = "scratch detection vs scikit-image, 1.3 MP 8-bit"
    if detector == "goggleqc":
        benchmark(fn)
    else:
        benchmark.pedantic(fn, rounds=3, iterations=1, warmup_rounds=0)
    median = benchmark.stats.stats.median
    _scratch_median[detector] = median
    benchmark.extra_info.update(detector=detector, median_ms=round(median * 1e3, 2), **scratch_accuracy[detector])
    if detector != "goggleqc" and "goggleqc" in _scratch_median:
        ratio = median / _scratch_median["goggleqc"]
        ours, base = scratch_accuracy["goggleqc"], scratch_accuracy[detector]
        benchmark.extra_info.update(
            speed_ratio=round(ratio, 1), target_speed_ratio=50.0,
            recall_goggleqc=ours["recall_scratch_1mm"], recall_skimage=base["recall_scratch_1mm"],
            meets_target=bool(ratio >= 50 and (ours["recall_scratch_1mm"] or 0) >= (base["recall_scratch_1mm"] or 0)))


# -- flat correction ---------------------------------------------------------------------------


def naive_flat_correction(image: np.ndarray, dark: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """``(I − dark) / flat`` the straightforward way: float64, floor and division every lens."""
    floor = np.percentile(flat, 99) * 0.02
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(flat > floor, (image.astype(np.float64) - dark) / flat, 0.0)
    return out


_flat_median: dict = {}


@pytest.mark.parametrize("impl", ["goggleqc", "naive-numpy"])
def test_flat_correction_5mp(benchmark, frame_sets, impl):
    data = frame_sets("5MP", 8)
    st, image = data.station, data.frames[0]
    _ = st.inv_flat  # per-station, computed at calibration load
    fn = (lambda: st.transmission(image)) if impl == "goggleqc" else (lambda: naive_flat_correction(image, st.dark, st.flat))
    benchmark.group = "flat correction vs naive numpy, 5 MP 8-bit"
    benchmark(fn)
    median = benchmark.stats.stats.median
    _flat_median[impl] = median
    benchmark.extra_info.update(impl=impl, median_ms=round(median * 1e3, 2))
    if impl == "naive-numpy" and "goggleqc" in _flat_median:
        same = np.allclose(naive_flat_correction(image, st.dark, st.flat), st.transmission(image), atol=1e-4)
        benchmark.extra_info.update(speed_ratio=round(median / _flat_median["goggleqc"], 1), same_result=bool(same))


# -- trap haze ---------------------------------------------------------------------------------


def _instrument(flat: np.ndarray) -> np.ndarray:
    """The flat smoothed by a 5×5 Gaussian (σ = 1) with a zero centre tap: the fit's instrument."""
    g = np.exp(-0.5 * np.arange(-2, 3) ** 2)
    k = np.outer(g, g)
    k[2, 2] = 0.0
    k /= k.sum()
    pad = np.pad(flat.astype(np.float64), 2, mode="reflect")
    h, w = flat.shape
    return sum(k[i, j] * pad[i:i + h, j:j + w] for i in range(5) for j in range(5))


def naive_trap_haze(image: np.ndarray, station, lens_mask: np.ndarray, instrument: np.ndarray,
                    window: float = 1.8) -> list[float]:
    """Raw trap haze (%) by the same instrumental-variable fit ``I = a·B + b·S``, naively.

    Per lens and per trap: the whole frame in float64, a full-frame distance map and window
    mask, and the 2×2 normal equations ``[ΣB̃B ΣB̃S; ΣSB ΣSS]·[a; b] = [ΣB̃I; ΣSI]`` over the
    window; haze = ``100·b / (a + b)``.
    """
    v = image.astype(np.float64) - station.dark
    b_img = station.flat.astype(np.float64)
    s_img = station.scatter.astype(np.float64)
    h, w = image.shape
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for trap in station.traps:
        d = np.hypot(xx - trap.x_px, yy - trap.y_px)
        win = (d <= window * trap.r_px) & lens_mask
        z, b, s, i = instrument[win], b_img[win], s_img[win], v[win]
        lhs = np.array([[z @ b, z @ s], [s @ b, s @ s]])
        a_, b_ = np.linalg.solve(lhs, np.array([z @ i, s @ i]))
        out.append(100.0 * b_ / (a_ + b_))
    return out


_haze_median: dict = {}


@pytest.mark.parametrize("impl", ["goggleqc", "naive-numpy"])
def test_trap_haze_5mp(benchmark, frame_sets, impl):
    data = frame_sets("5MP", 8)
    st, image = data.station, data.frames[0]
    calls = record_stage_calls(image, st, SPEC)  # also builds the per-station haze plan
    lens = calls["lens"].result.lens
    instrument = _instrument(st.flat)  # per station in both implementations
    if impl == "goggleqc":
        fn = calls["haze"].call
    else:
        fn = lambda: naive_trap_haze(image, st, lens, instrument)  # noqa: E731
    benchmark.group = "trap haze vs naive numpy, 5 MP 8-bit"
    benchmark(fn)
    median = benchmark.stats.stats.median
    _haze_median[impl] = median
    benchmark.extra_info.update(impl=impl, median_ms=round(median * 1e3, 2), traps=len(st.traps))
    if impl == "naive-numpy" and "goggleqc" in _haze_median:
        ours = calls["haze"].call()
        naive = naive_trap_haze(image, st, lens, instrument)
        benchmark.extra_info.update(speed_ratio=round(median / _haze_median["goggleqc"], 1),
                                    raw_haze_pct_goggleqc=round(float(ours.raw_pct), 3),
                                    raw_haze_pct_naive_max=round(float(max(naive)), 3),
                                    truth_haze_pct=round(float(data.truths[0]["haze_pct"]), 3))
