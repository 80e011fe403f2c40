"""Anti-fog coating defects: runs, voids and mottle (station-model.md §3).

A coating flaw changes the lens transmittance τ by about 0.5–5 % over millimetres: a **run**
is an elongated streak (often vertical), a **void** an uncoated patch, **mottle** an
orange-peel texture. They are far larger than the camera's resolution and far fainter than
scratches and spots, so they are sought on the flat-corrected transmission reduced to about
0.25–0.4 mm per pixel, where the noise has been averaged down:

1. ``r = T / background − 1``, the fractional departure of the transmission from a robust,
   large-scale background (the clear lens's τ is smooth). For a patterned backlight the
   background is the local fit ``a + b·S`` with ``S = (B ⊛ K)/B`` (station-model §2:
   ``T = g·τ·[(1 − h) + h·S]``), so the haze's lifting of dark pattern cells is not taken for
   a flaw.
2. The noise ``σ`` of ``r`` is estimated robustly (MAD) over the lens.
3. Mean departures (runs, voids) are found by hysteresis on ``r`` smoothed at the
   millimetre scale; texture (mottle) by hysteresis on the local variance of ``r`` in excess
   of the noise.
4. Each found object is measured: half-maximum area, signed contrast (positive = darker),
   elongation (run or void), zone, bbox.

Objects smaller than ``min_area_mm2``, thinner than ``min_width_mm`` or stronger than
``max_contrast`` are left to the spot and scratch detectors. Light traps (flat too dark to
divide: transmission 0) and the lens edge are excluded.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from goggleqc.inspect.lens import LensRegion, reduce_image, reduced_station
from goggleqc.inspect.results import CoatingDefect


@dataclass(frozen=True)
class CoatingParams:
    """Sensitivities of the coating-defect detector (fit them from good lenses).

    Attributes
    ----------
    reduced_mm : float
        Largest size of a reduced pixel (power-of-two reduction), mm.
    smooth_mm : float
        Gaussian σ of the matched smoothing of the departure map, mm.
    background_mm : float
        Side of the box over which the lens background is fitted, mm.
    haze_mm : float
        Box over which a patterned backlight's residual haze modulation is fitted, mm.
    texture_mm : float
        Gaussian σ of the local-variance window for mottle, mm.
    edge_margin_mm : float
        Band inside the lens edge (and around light traps) that is not searched, mm.
    k_high, k_low : float
        Hysteresis thresholds in noise σ of the smoothed departure map.
    k_texture_high, k_texture_low : float
        Hysteresis thresholds for the local variance excess, in its own noise σ.
    min_contrast : float
        Smallest fractional τ change reported (an absolute floor under ``k_high``).
    min_mottle_rms : float
        Smallest rms texture reported as mottle.
    min_mottle_area_mm2 : float
        Smallest mottle area: a texture needs several grains.
    max_contrast : float
        Objects with a stronger core are spots, scratches or traps, not coating.
    min_area_mm2 : float
        Smallest half-maximum area reported.
    min_width_mm : float
        Thinner objects (area ÷ length) are scratches.
    run_elongation : float
        Length ÷ width at or above which a mean departure is a ``run``.
    """

    reduced_mm: float = 0.4
    smooth_mm: float = 0.5
    background_mm: float = 16.0
    haze_mm: float = 6.0
    texture_mm: float = 2.0
    edge_margin_mm: float = 1.0
    k_high: float = 6.0
    k_low: float = 3.0
    k_texture_high: float = 6.0
    k_texture_low: float = 3.0
    min_contrast: float = 0.004
    min_mottle_rms: float = 0.008
    min_mottle_area_mm2: float = 6.0
    max_contrast: float = 0.10
    min_area_mm2: float = 2.5
    min_width_mm: float = 0.5
    run_elongation: float = 1.8

    @classmethod
    def from_dict(cls, values: dict) -> "CoatingParams":
        """Parameters from a mapping (e.g. a station's fitted thresholds); unknown keys are ignored."""
        known = {k: float(v) for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def _coating_factor(shape: tuple[int, int], pixel_size_mm: float | None, reduced_mm: float) -> int:
    """Power-of-two reduction giving reduced pixels of at most ``reduced_mm`` (or ≤ 512 px sides)."""
    factor = 1
    if pixel_size_mm:
        while 2 * factor * pixel_size_mm <= reduced_mm:
            factor *= 2
    else:
        while max(shape) / factor > 512:
            factor *= 2
    return factor


def _norm_box(values: np.ndarray, weight: np.ndarray, k: int, den: np.ndarray | None = None) -> np.ndarray:
    """Weighted box mean ``box(v·w) / box(w)`` (normalised convolution), 0 where ``w`` is empty.

    ``den`` is ``box(w)`` when the caller already has it."""
    num = cv2.blur(values * weight, (k, k), borderType=cv2.BORDER_REFLECT)
    if den is None:
        den = cv2.blur(weight, (k, k), borderType=cv2.BORDER_REFLECT)
    return np.where(den > 1e-3, num / np.maximum(den, 1e-6), 0).astype(np.float32)


def _norm_gauss(values: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Weighted Gaussian mean (normalised convolution), 0 where ``w`` is empty."""
    num = cv2.GaussianBlur(values * weight, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    den = cv2.GaussianBlur(weight, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return np.where(den > 1e-2, num / np.maximum(den, 1e-6), 0).astype(np.float32)


def _median(values: np.ndarray) -> float:
    """Median of an evenly spaced subsample of at most ~4k values (speed; ample for a level)."""
    return float(np.median(values[:: max(1, values.size // 4096)]))


def _robust_sigma(values: np.ndarray) -> float:
    """1.4826 × MAD, from an evenly spaced subsample of at most ~4k values (speed)."""
    values = values[:: max(1, values.size // 4096)]
    med = float(np.median(values))
    return max(1.4826 * float(np.median(np.abs(values - med))), 1e-9)


def _hysteresis(response: np.ndarray, high: float, low: float, mask: np.ndarray) -> tuple[int, np.ndarray]:
    """Components of ``response > low`` (within ``mask``) that reach ``response > high``."""
    weak = ((response > low) & mask).astype(np.uint8)
    n, labels = cv2.connectedComponents(weak, connectivity=8)
    if n <= 1:
        return 0, labels
    strong = labels[(response > high) & mask]
    keep = np.zeros(n, bool)
    keep[strong] = True
    keep[0] = False
    lut = np.zeros(n, np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1)
    return int(keep.sum()), lut[labels]


def _shape(ys: np.ndarray, xs: np.ndarray) -> tuple[float, float]:
    """Length and width (px) of a pixel set from its second moments (an equivalent ellipse's
    full axes, ``4·sqrt(λ)``)."""
    if len(xs) < 3:
        return float(len(xs)), 1.0
    cov = np.cov(np.stack([xs, ys]).astype(np.float64))
    lam = np.linalg.eigvalsh(cov + np.eye(2) / 12.0)  # + the variance of one pixel's own area
    return 4.0 * float(np.sqrt(lam[1])), 4.0 * float(np.sqrt(lam[0]))


def find_coating(transmission: np.ndarray, region: LensRegion, *, pixel_size_mm: float | None = None,
                 params: CoatingParams = CoatingParams(), station=None, scale: int = 1) -> list[CoatingDefect]:
    """Find anti-fog coating defects in a flat-corrected lens image.

    Parameters
    ----------
    transmission : (M, N) float32 ndarray
        ``station.transmission(image)``: ``g·τ`` where the backlight is bright, 0 where the
        flat is too dark to divide by (light traps).
    region : LensRegion
        The lens region of this frame.
    pixel_size_mm : float, optional
        Millimetres per pixel; defaults to the region's. Without one, sizes are in pixels
        (``area_mm2`` is None) and the millimetre parameters are read as if 1 px = 0.1 mm.
    params : CoatingParams
    station : Station, optional
        The calibrated station. For a patterned backlight it supplies ``S = (B ⊛ K)/B`` so
        that haze (which lifts dark pattern cells) is not mistaken for a coating flaw, and the
        flat's brightness for per-pixel noise weights. Strongly recommended for patterns.
    scale : int
        ``transmission`` is already reduced by this power of two (block means), which saves
        the work of reducing a full frame twice.

    Returns
    -------
    list of CoatingDefect
        ``kind`` (run, void, mottle), ``area_px`` (full resolution) and ``area_mm2``,
        ``contrast`` (fractional τ change, positive = darker; rms for mottle), ``zone``,
        ``bbox_px`` ``[x0, y0, x1, y1)`` at full resolution, ``score`` (response ÷ threshold).
    """
    ps = pixel_size_mm if pixel_size_mm is not None else region.pixel_size_mm
    ps_eff = ps if ps else 0.1
    shape = tuple(region.shape)
    factor = max(_coating_factor(shape, ps, params.reduced_mm), scale)
    mm_px = ps_eff * factor  # mm per reduced pixel
    t = reduce_image(transmission, factor // scale)
    hs, ws = t.shape

    lens = cv2.resize(region.lens_small.astype(np.uint8), (ws, hs), interpolation=cv2.INTER_NEAREST)
    margin = max(1, int(round(params.edge_margin_mm / mm_px)))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    if station is not None:
        red = reduced_station(station, factor)
        known = red.valid > 0.999
        scatter = red.scatter_ratio / np.maximum(red.valid, 1e-6)
        noise_weight = np.sqrt(np.maximum(red.flat, 1e-6) / max(_median(red.flat[known]), 1e-6)) \
            if known.any() else np.ones_like(t)
        patterned = station.backlight == "pattern"
    else:
        level = _median(t[lens > 0]) if (lens > 0).any() else 0.0
        known = t > 0.5 * level  # blocks reaching into a light trap (transmission 0)
        scatter, noise_weight, patterned = None, np.ones_like(t), False
    search = cv2.erode(lens, disc).view(bool) & cv2.erode(known.astype(np.uint8), disc).view(bool)
    if np.count_nonzero(search) < 50:
        return []
    weight = search.astype(np.float32)

    # 1. departure from a robust large-scale background (two passes, rejecting outliers)
    k_bg = max(3, int(round(params.background_mm / mm_px)) | 1)
    k_haze = max(3, int(round(params.haze_mm / mm_px)) | 1)
    for _ in range(2):
        if patterned:
            model = _pattern_background(t, scatter, weight, k_bg)
        else:
            model = _norm_box(t, weight, k_bg)
        r = np.where(search & (model > 0), t / np.maximum(model, 1e-6) - 1.0, 0.0).astype(np.float32)
        if patterned:
            r = _remove_haze_pattern(r, scatter, weight, k_haze)
        z = r * noise_weight
        sigma = _robust_sigma(z[search])
        weight = (search & (np.abs(z) < 3.0 * sigma)).astype(np.float32)
    # strong objects (spots, scratches, trap rims) are not coating: keep them out of the maps
    strong = cv2.dilate((search & (np.abs(r) > params.max_contrast)).astype(np.uint8), disc).view(bool)
    usable = search & ~strong
    wu = usable.astype(np.float32)

    # 2. mean departure, smoothed at the millimetre scale (matched to mm-sized flaws)
    s_px = max(0.5, params.smooth_mm / mm_px)
    d = _norm_gauss(r * noise_weight, wu, s_px) / np.maximum(_norm_gauss(noise_weight, wu, s_px), 1e-6)
    sigma_d = _robust_sigma(d[usable])
    high = max(params.k_high * sigma_d, params.min_contrast)
    low = max(params.k_low * sigma_d, 0.5 * params.min_contrast)

    # 3. texture: the local median of |z| (noise-weighted, so the noise is stationary). A
    # median over a window is blind to the thin lines and small blobs of scratches and
    # spots, which fill only a small part of it, but not to a texture that fills it all.
    # For Gaussian values, median |z| = 0.6745·rms.
    t_px = max(1.0, params.texture_mm / mm_px)
    k_tex = 2 * int(round(t_px)) + 1
    scale = 255.0 / (params.max_contrast * 2.0)  # uint8 quantisation: 255 ≙ 2 × max_contrast
    q = np.clip(np.abs(z) * scale * usable, 0, 255).astype(np.uint8)
    med = cv2.medianBlur(q, k_tex).astype(np.float32) / (scale * 0.6745)
    texture_sq = med * med - sigma * sigma  # texture variance beyond the noise, in z units
    texture_sq /= np.maximum(_norm_gauss(noise_weight * noise_weight, wu, t_px), 1e-6)  # to r units
    energy = np.where(usable, texture_sq, 0).astype(np.float32)
    sigma_e = _robust_sigma(energy[usable])
    e_high = max(params.k_texture_high * sigma_e, params.min_mottle_rms ** 2)
    e_low = max(params.k_texture_low * sigma_e, 0.5 * params.min_mottle_rms ** 2)

    found: list[CoatingDefect] = []
    area_px_full = factor * factor
    n_m, mottle_labels = _hysteresis(energy, e_high, e_low, usable)
    mottle_mask = np.zeros((hs, ws), bool)
    for i in range(1, n_m + 1):
        comp = mottle_labels == i
        plateau = float(np.percentile(energy[comp], 90))
        core = comp & (energy >= 0.5 * plateau)
        mean_dep = float(np.mean(r[core])) if core.any() else 0.0
        rms = float(np.sqrt(max(plateau, 0.0)))
        # a uniform darkening also raises r²; it is a void or run unless the texture dominates
        if abs(mean_dep) > 0.5 * rms:
            continue
        defect = _measure(core, "mottle", rms, float(np.sqrt(energy[comp].max()) / np.sqrt(e_high)), factor, ps,
                          region, shape, params, area_px_full)
        if defect is not None:
            found.append(defect)
            mottle_mask |= comp

    for sign in (-1.0, 1.0):  # -1: darker (contrast > 0), +1: brighter
        resp = sign * d
        n, labels = _hysteresis(resp, high, low, usable)
        for i in range(1, n + 1):
            comp = labels == i
            if np.count_nonzero(comp & mottle_mask) > 0.5 * np.count_nonzero(comp):
                continue  # the texture's own blobs
            peak = float(resp[comp].max())
            core = comp & (resp >= 0.5 * peak)
            contrast = -sign * abs(float(np.median(r[core])))
            ys, xs = np.nonzero(core)
            length, width = _shape(ys, xs)
            kind = "run" if length >= params.run_elongation * width else "void"
            defect = _measure(core, kind, contrast, peak / high, factor, ps, region, shape, params, area_px_full,
                              width_px=float(np.count_nonzero(core)) / max(length, 1.0))
            if defect is not None:
                found.append(defect)
    return found


def _pattern_background(t: np.ndarray, scatter: np.ndarray, weight: np.ndarray, k: int) -> np.ndarray:
    """Background ``A(x)·(1 + η·S)`` of a patterned backlight's transmission.

    ``T = g·τ·[(1 − h) + h·S]`` (station-model §2), so with ``η = h / (1 − h)`` fitted over
    the whole lens (haze is mostly uniform) the haze's lifting of dark pattern cells (large
    ``S``) is part of the background; ``A = g·τ·(1 − h)`` is then a smooth normalised box
    mean, which stays well conditioned at the lens edge and around large flaws.
    """
    use = weight > 0
    den = cv2.blur(weight, (5, 5), borderType=cv2.BORDER_REFLECT)
    t_hp = t - _norm_box(t, weight, 5, den)
    s_hp = scatter - _norm_box(scatter, weight, 5, den)
    b = float(np.sum(t_hp[use] * s_hp[use])) / max(float(np.sum(s_hp[use] ** 2)), 1e-9)
    a = _median(t[use] - b * scatter[use])
    eta = max(b / a, 0.0) if a > 0 else 0.0  # haze only adds light to the dark cells
    shape = 1.0 + eta * scatter
    return (_norm_box(t / shape, weight, k) * shape).astype(np.float32)


def _remove_haze_pattern(r: np.ndarray, scatter: np.ndarray, weight: np.ndarray, k: int) -> np.ndarray:
    """Remove the part of ``r`` that follows the pattern, ``β·(S − 1)``, fitted over ``k``-boxes.

    Local haze (a dull spot) and the error of the assumed scatter kernel lift dark pattern
    cells more than bright ones; a coating flaw scales both alike, so it is not fitted away.
    """
    support = cv2.blur(weight, (k, k), borderType=cv2.BORDER_REFLECT)
    ms = _norm_box(scatter, weight, k, support)
    mr = _norm_box(r, weight, k, support)
    beta = (_norm_box(r * scatter, weight, k, support) - mr * ms) / np.maximum(
        _norm_box(scatter * scatter, weight, k, support) - ms * ms, 1e-3)
    # a fit over few pixels (at the lens edge, beside a large flaw) is not trusted
    beta *= np.clip(2.0 * support - 0.5, 0.0, 1.0)
    # r ≈ δτ/τ + Δh·(S − 1) to first order (T ∝ τ·[1 + h·(S − 1)]): remove the haze term whole,
    # not just its pattern-correlated part, so that a dull spot leaves no mean departure
    return (r - beta * (scatter - 1.0)).astype(np.float32)


def _measure(core: np.ndarray, kind: str, contrast: float, score: float, factor: int, ps: float | None,
             region: LensRegion, shape: tuple[int, int], params: CoatingParams, area_px_full: int,
             width_px: float | None = None) -> CoatingDefect | None:
    """A CoatingDefect from its half-maximum core on the reduced grid, or None when it is not coating."""
    n = int(np.count_nonzero(core))
    ps_eff = ps if ps else 0.1
    mm_px = ps_eff * factor
    area_mm2_eff = n * mm_px * mm_px
    if area_mm2_eff < (params.min_mottle_area_mm2 if kind == "mottle" else params.min_area_mm2):
        return None
    if kind != "mottle" and abs(contrast) > params.max_contrast:
        return None
    if width_px is not None and width_px * mm_px < params.min_width_mm:
        return None
    ys, xs = np.nonzero(core)
    x0, y0 = int(xs.min()) * factor, int(ys.min()) * factor
    x1, y1 = min(shape[1], (int(xs.max()) + 1) * factor), min(shape[0], (int(ys.max()) + 1) * factor)
    # zone: any pixel of the core, mapped to full-resolution block centres
    pix = np.stack([xs * factor + factor // 2, ys * factor + factor // 2], axis=1)
    area_px = float(n * area_px_full)
    return CoatingDefect(kind=kind, area_px=area_px, contrast=float(contrast), zone=region.zone_of(pix),
                         bbox_px=[x0, y0, x1, y1], area_mm2=area_px * ps * ps if ps else None, score=float(score))
