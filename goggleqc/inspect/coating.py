"""Anti-fog coating defects: runs, voids and mottle (station-model.md §3).

A coating flaw changes the lens transmittance τ by about 0.5–5 % over millimetres: a **run**
is an elongated streak (often vertical), a **void** an uncoated patch, **mottle** an
orange-peel texture. They are far larger than the camera's resolution and far fainter than
scratches and spots, so they are sought on the flat-corrected transmission reduced to about
0.25–0.4 mm per pixel, where the noise has been averaged down:

1. ``r = T / background − 1``, the fractional departure of the transmission from a robust,
   large-scale background (the clear lens's τ is smooth). For a patterned backlight the
   background is ``A·[1 + h(x)·(S − 1)]`` with ``S = (B ⊛ K)/B`` (station-model §2:
   ``T = g·τ·[(1 − h) + h·S]``) and the haze ``h(x)`` fitted locally, so the haze's lifting
   of dark pattern cells, a dull spot's included, is not taken for a flaw.
2. The noise ``σ`` of ``r`` is estimated robustly (MAD) over the lens.
3. Mean departures (runs, voids) are found by hysteresis on ``r`` smoothed at the
   millimetre scale; texture (mottle) by hysteresis on the local variance of ``r`` in excess
   of the noise.
4. Each found object is measured: half-maximum area, signed contrast (positive = darker),
   elongation (run or void), zone, bbox.

Objects smaller than ``min_area_mm2``, thinner than ``min_width_mm`` or stronger than
``max_contrast`` are left to the spot and scratch detectors. Light traps (flat too dark to
divide: transmission 0) and the lens edge are excluded; with a flat on a plain panel, so is a
trap's edge, where the flat is below 0.9 of its surround (:func:`_trap_edges`).

Without a station (:func:`uncalibrated`) the image itself stands in for the transmission, on a
plain panel only: the panel's own unevenness (0.5–3 % over centimetres) is what a void looks
like without a flat, so the background is fitted over 4 mm, not 16, and a flaw must stand 8 σ
of what that leaves, not 6, and change τ by 1 %. Large, faint voids and mottle are then out of
reach; runs and small voids with clear edges are found.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import cv2
import numpy as np

from goggleqc.inspect.lens import LensRegion, reduce_image, reduced_station
from goggleqc.inspect.lens import np_median as _np_median
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
        Box over which a patterned backlight's local haze ``h(x)`` is fitted, mm.
    texture_mm : float
        Gaussian σ of the local-variance window for mottle, mm.
    edge_margin_mm : float
        Band inside the lens edge (and, without a flat, around light traps) that is not
        searched, mm.
    trap_margin_mm : float
        With a flat: band around light traps, past their edge (:func:`_trap_edges`), that
        is not searched, mm.
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
    trap_margin_mm: float = 0.0
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


#: Background box (mm) and threshold (σ) of the coating search on an uncalibrated plain panel
UNCALIBRATED_BACKGROUND_MM = 4.0
UNCALIBRATED_K_HIGH = 8.0
#: Smallest τ change reported without a flat: what a panel's unevenness leaves over 4 mm
#: reaches 0.5–0.7 % (it was reported as a faint run on every lens of a 1.3 MP station)
UNCALIBRATED_MIN_CONTRAST = 0.01


def uncalibrated(params: CoatingParams) -> CoatingParams:
    """The parameters for an image with no flat: a background fitted over at most
    :data:`UNCALIBRATED_BACKGROUND_MM`, which follows a panel's own unevenness, and a
    threshold of at least :data:`UNCALIBRATED_K_HIGH` σ of what it leaves and of
    :data:`UNCALIBRATED_MIN_CONTRAST`."""
    return replace(params, background_mm=min(params.background_mm, UNCALIBRATED_BACKGROUND_MM),
                   k_high=max(params.k_high, UNCALIBRATED_K_HIGH),
                   min_contrast=max(params.min_contrast, UNCALIBRATED_MIN_CONTRAST))


def _bg_box_px(params: CoatingParams, mm_px: float) -> int:
    """Side (reduced px, odd, ≥ 3) of the background box."""
    return max(3, int(round(params.background_mm / mm_px)) | 1)


def _dark_edge_blur(t: np.ndarray, known: np.ndarray, lens: np.ndarray, reach: int, tol: float) -> int:
    """Reduced px from the dark parts of an uncalibrated image (light traps, the frame) over
    which it still brightens by more than ``tol``: the blur of their edges.

    Without a flat nothing divides that blur out, and a band of it left in the search read as
    a coating flaw round every trap: a 64 mm² "void" round a light trap of a clean lens
    inspected without a station or pixel size (the 1 mm margin, read at an assumed 0.1 mm/px,
    was 0.5 mm of a 0.06 mm/px camera's image). Measured from the image: the median of the lens
    pixels at each distance ``k`` from the dark parts, against that of those just past
    ``reach``; the blur is the largest ``k`` still darker by more than ``tol`` (0 when the far
    band holds too few pixels to judge).
    """
    inside = known & lens
    dist = cv2.distanceTransform(known.view(np.uint8), cv2.DIST_L2, 3)
    far = inside & (dist > reach) & (dist <= reach + 3)
    if np.count_nonzero(far) < 50:
        return 0
    ref = _median(t[far])
    ring = np.minimum(np.ceil(dist), reach + 1).astype(np.int32)
    for k in range(reach, 0, -1):
        sel = inside & (ring == k)
        if np.count_nonzero(sel) >= 20 and _median(t[sel]) < (1.0 - tol) * ref:
            return k
    return 0


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


def _norm_box(values: np.ndarray, weight: np.ndarray, k: int, den: np.ndarray | None = None,
              border: int = cv2.BORDER_REFLECT) -> np.ndarray:
    """Weighted box mean ``box(v·w) / box(w)`` (normalised convolution), 0 where ``w`` is empty.

    ``den`` is ``box(w)`` (or a :class:`_Den` of it) when the caller already has it;
    ``border`` is OpenCV's border mode."""
    num = cv2.blur(values * weight, (k, k), borderType=border)
    if den is None:
        den = cv2.blur(weight, (k, k), borderType=border)
    return _ratio(num, den, 1e-3)


class _Den:
    """The denominator of normalised convolutions that share it: floored for the division,
    and where it is not empty (``> floor``); computed once for all of them."""

    __slots__ = ("full", "safe")

    def __init__(self, den: np.ndarray, floor: float):
        self.safe = cv2.max(den, 1e-6)  # np.maximum's result, twice as fast
        self.full = den > floor


def _ratio(num: np.ndarray, den, floor: float) -> np.ndarray:
    """``num / den`` where ``den > floor``, else 0, in ``num``'s (float32) array.
    ``den`` is an array or a :class:`_Den` made with the same ``floor``."""
    if not isinstance(den, _Den):
        den = _Den(den, floor)
    np.divide(num, den.safe, out=num)
    num *= den.full  # in place: a multiply, several times cheaper than np.where
    return num


def _norm_gauss(values: np.ndarray, weight: np.ndarray, sigma: float, den: np.ndarray | None = None,
                border: int = cv2.BORDER_REFLECT) -> np.ndarray:
    """Weighted Gaussian mean (normalised convolution), 0 where ``w`` is empty.

    ``den`` is the Gaussian blur of ``w`` (or a :class:`_Den` of it) when the caller already
    has it; ``border`` is OpenCV's border mode."""
    num = cv2.GaussianBlur(values * weight, (0, 0), sigma, borderType=border)
    if den is None:
        den = cv2.GaussianBlur(weight, (0, 0), sigma, borderType=border)
    return _ratio(num, den, 1e-2)


def _gauss_radius(sigma: float) -> int:
    """Half-width (px) of OpenCV's float Gaussian kernel for ``sigma`` (``ksize = 8σ + 1``)."""
    return (int(round(sigma * 8 + 1)) | 1) // 2 + 1


@lru_cache(maxsize=8)
def _checker_u8(shape: tuple[int, int]) -> np.ndarray:
    """0 and 255 in a checkerboard (shared, read-only)."""
    row = np.arange(shape[1]) & 1
    out = np.empty(shape, np.uint8)
    out[0::2] = row * 255
    out[1::2] = (1 - row) * 255
    out.flags.writeable = False
    return out


def _median_blur_u8(q: np.ndarray, k: int, max_levels: int = 32, where: np.ndarray | None = None) -> np.ndarray:
    """``cv2.medianBlur(q, k)`` of a uint8 image whose values are mostly small, by counting.

    The median of a window is at least ``v`` exactly when at least ``(k² + 1)/2`` of its
    values are, so the median is the number of levels ``v ≥ 1`` at which a box count of
    ``q ≥ v`` reaches that majority. Only pixels that reached ``v − 1`` can reach ``v``, so
    each level works on the bounding box of the last level's hits; the departure maps are
    noise-like, with medians of a few levels, and this is several times faster than
    OpenCV's histogram median for large windows. After ``max_levels`` levels the remaining
    box is finished by ``cv2.medianBlur`` itself. Same replicated border, same result; with
    ``where``, only there (elsewhere the count stops, a lower bound).
    """
    need = (k * k + 1) // 2
    depth = -1 if k * k <= 255 else cv2.CV_16U  # counts up to k²
    h, w = q.shape
    rad = k // 2
    out = np.zeros(q.shape, np.uint8)
    y0, y1, x0, x1 = 0, h, 0, w  # the pixels still rising
    for v in range(1, 256):
        sy, sx = max(0, y0 - rad), max(0, x0 - rad)
        sub = q[sy:min(h, y1 + rad), sx:min(w, x1 + rad)]
        if v > max_levels:
            out[y0:y1, x0:x1] = cv2.medianBlur(sub, k)[y0 - sy:y1 - sy, x0 - sx:x1 - sx]
            break
        _, ge = cv2.threshold(sub, v - 1, 1, cv2.THRESH_BINARY)  # 1 where q ≥ v
        count = cv2.boxFilter(ge, depth, (k, k), normalize=False, borderType=cv2.BORDER_REPLICATE)
        hit = count[y0 - sy:y1 - sy, x0 - sx:x1 - sx] >= need
        if where is not None:
            hit &= where[y0:y1, x0:x1]
        bx, by, bw, bh = cv2.boundingRect(hit.view(np.uint8))
        if bw == 0:
            break
        out[y0:y1, x0:x1] += hit
        y0, y1, x0, x1 = y0 + by, y0 + by + bh, x0 + bx, x0 + bx + bw
    return out


def _median(values: np.ndarray) -> float:
    """Median of an evenly spaced subsample of at most ~4k values (speed; ample for a level)."""
    return _np_median(values[:: max(1, values.size // 4096)])


def _subsample(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``values[mask]`` thinned to every ``(count // 4096)``-th value, as ``_median`` and
    ``_robust_sigma`` would take it, without gathering all of ``values[mask]`` first."""
    idx = np.flatnonzero(mask)
    return values.ravel()[idx[:: max(1, idx.size // 4096)]]


def _robust_sigma(values: np.ndarray) -> float:
    """1.4826 × MAD, from an evenly spaced subsample of at most ~4k values (speed)."""
    values = values[:: max(1, values.size // 4096)]
    med = _np_median(values)
    return max(1.4826 * _np_median(np.abs(values - med)), 1e-9)


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
                 params: CoatingParams = CoatingParams(), station=None, scale: int = 1,
                 whole_frame: bool = False) -> list[CoatingDefect]:
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
    whole_frame : bool
        Uncalibrated only: the image is a photograph through the lens with no lens edge in
        view (:func:`~goggleqc.inspect.lens.through_lens_region`); its light's fall-off is
        divided out by a smooth surface first.

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
    sub = factor // scale
    hs, ws = transmission.shape[0] // sub, transmission.shape[1] // sub

    lens = cv2.resize(region.lens_small.view(np.uint8), (ws, hs), interpolation=cv2.INTER_NEAREST)
    margin = max(1, int(round(params.edge_margin_mm / mm_px)))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    if station is not None:
        trap_margin = max(0, int(round(params.trap_margin_mm / mm_px)))
        maps = _station_maps(station, factor, trap_margin)
        scatter, noise_weight, known_inner = maps.scatter, maps.noise_weight, maps.known_inner
        patterned = station.backlight == "pattern"
        t = None  # reduced below, only where it is searched
    else:
        t = reduce_image(transmission, sub)
        level = _median(t[lens > 0]) if (lens > 0).any() else 0.0
        known = t > 0.5 * level  # blocks reaching into a light trap (transmission 0)
        # no flat divides out the blur of a trap's or the frame's edge: keep clear of as much
        # of it as the image shows
        blur = _dark_edge_blur(t, known, lens > 0, max(margin, _bg_box_px(params, mm_px) // 2),
                               0.5 * params.min_contrast)
        if blur > margin:
            margin = blur
            disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
        known_inner = cv2.erode(known.view(np.uint8), disc).view(bool)
        scatter, noise_weight, patterned = None, np.ones_like(t), False
    inner_lens = cv2.erode(lens, disc).view(bool)
    search = inner_lens & known_inner
    if np.count_nonzero(search) < 50:
        return []

    # Only the searched part of the frame matters: every filter below is either weighted by
    # (a subset of) ``search``, so that it sees zeros outside it, or only read inside it.
    # When the widest filter's reach around ``search`` stays inside the frame, the frame's
    # own border never enters, and a crop just around ``search`` with a zero (constant)
    # border gives the values inside ``search`` of the whole frame; the median, whose
    # border is replicated, gets zeros from a margin of half its window. Otherwise the crop
    # keeps the reach, and the frame's reflected border where the crop meets it.
    k_bg = _bg_box_px(params, mm_px)
    k_haze = max(3, int(round(params.haze_mm / mm_px)) | 1)
    s_px = max(0.5, params.smooth_mm / mm_px)
    t_px = max(1.0, params.texture_mm / mm_px)
    k_tex = 2 * int(round(t_px)) + 1
    reach = max(k_bg // 2, k_haze // 2, k_tex // 2, _gauss_radius(s_px), _gauss_radius(t_px), margin) + 1
    bx, by, bw, bh = cv2.boundingRect(search.view(np.uint8))
    if by >= reach and bx >= reach and by + bh + reach <= hs and bx + bw + reach <= ws:
        pad, border = k_tex // 2 + 1, cv2.BORDER_CONSTANT
    else:
        pad, border = reach, cv2.BORDER_REFLECT
    oy, ox = max(0, by - pad), max(0, bx - pad)
    crop = (slice(oy, min(hs, by + bh + pad)), slice(ox, min(ws, bx + bw + pad)))
    if t is None:  # block means of a crop on the block grid are those blocks of the whole
        (y0, y1), (x0, x1) = (crop[0].start, crop[0].stop), (crop[1].start, crop[1].stop)
        t = reduce_image(transmission[y0 * sub:y1 * sub, x0 * sub:x1 * sub], sub)
    else:
        t = t[crop]
    search = search[crop]
    # within the lens but not searched: light traps and their margin, where the backlight is
    # dark and a coating flaw cannot show
    hidden = inner_lens[crop] & ~search
    if station is None and whole_frame:
        # a photograph through the lens, no flat: the light's own fall-off (vignetting) is in
        # t, and a box mean of a curved profile, one-sided where the search ends, left a ring
        # along the picture's edge that read as a void; a smooth surface over the picture takes
        # it out first. Not with a lens edge and traps in view: fitted over the pieces they
        # leave, the surface is no fair model (false coating on a framed plain panel 0.02 → 2.1
        # per clean lens)
        t = t / _smooth_surface(t, search)
    if patterned:
        scatter, scatter_sq, scatter_m1 = maps.scatter[crop], maps.scatter_sq[crop], maps.scatter_m1[crop]
    noise_weight = noise_weight[crop]
    nw_sq = maps.noise_weight_sq[crop] if station is not None else noise_weight
    weight = search.astype(np.float32)

    # 1. departure from a robust large-scale background (two passes, rejecting outliers)
    for _ in range(2):
        if patterned:
            model = _pattern_background(t, scatter, weight, k_bg, k_haze, scatter_sq, scatter_m1, border)
        else:
            model = _norm_box(t, weight, k_bg, border=border)
        r = t / cv2.max(model, 1e-6)
        r -= np.float32(1.0)
        r *= search & (model > 0)
        z = r * noise_weight
        sigma = _robust_sigma(_subsample(z, search))
        weight = (search & (np.abs(z) < 3.0 * sigma)).astype(np.float32)
    # strong objects (spots, scratches, trap rims) are not coating: keep them out of the maps
    strong = cv2.dilate((search & (np.abs(r) > params.max_contrast)).view(np.uint8), disc).view(bool)
    usable = search & ~strong
    wu = usable.astype(np.float32)

    # 2. mean departure, smoothed at the millimetre scale (matched to mm-sized flaws)
    den = _Den(cv2.GaussianBlur(wu, (0, 0), s_px, borderType=border), 1e-2)
    d = _norm_gauss(r * noise_weight, wu, s_px, den, border)
    d /= cv2.max(_norm_gauss(noise_weight, wu, s_px, den, border), 1e-6)
    sigma_d = _capped_by_local(d, usable, wu, _robust_sigma(_subsample(d, usable)), s_px, border)
    high = max(params.k_high * sigma_d, params.min_contrast)
    low = max(params.k_low * sigma_d, 0.5 * params.min_contrast)

    # 3. texture: the local median of |z| (noise-weighted, so the noise is stationary). A
    # median over a window is blind to the thin lines and small blobs of scratches and
    # spots, which fill only a small part of it, but not to a texture that fills it all.
    # For Gaussian values, median |z| = 0.6745·rms.
    quant = 255.0 / (params.max_contrast * 2.0)  # uint8 quantisation: 255 ≙ 2 × max_contrast
    q = np.clip(np.abs(z) * quant * usable, 0, 255).astype(np.uint8)
    # over a light trap and its margin the window's median counted zeros, and a texture
    # beside a trap read faint (a 52 mm² mottle, a third of it over a trap, measured 3 mm²):
    # there the pixels take 0 and 255 in a checkerboard instead, as many below every value as
    # above it, so the median is that of the pixels seen. Not at the lens edge, where the
    # background's residue would then count whole (false coating without a flat 0.02 → 0.5
    # per clean lens)
    if hidden.any():
        np.copyto(q, _checker_u8(q.shape), where=hidden)
    med = _median_blur_u8(q, k_tex, where=usable).astype(np.float32) / (quant * 0.6745)
    texture_sq = med * med - sigma * sigma  # texture variance beyond the noise, in z units
    texture_sq /= cv2.max(_norm_gauss(nw_sq, wu, t_px, border=border), 1e-6)  # to r units
    energy = texture_sq
    energy *= usable
    sigma_e = _robust_sigma(_subsample(energy, usable))
    e_high = max(params.k_texture_high * sigma_e, params.min_mottle_rms ** 2)
    e_low = max(params.k_texture_low * sigma_e, 0.5 * params.min_mottle_rms ** 2)

    found: list[CoatingDefect] = []
    # without a flat the background at the picture's edge is fitted from one side: what lies
    # mostly within the background box's reach of it is not judged
    edge_band = None
    if station is None:
        reach_px = k_bg // 2
        yy = np.arange(oy, oy + t.shape[0])[:, None]
        xx = np.arange(ox, ox + t.shape[1])[None, :]
        edge_band = np.minimum(np.minimum(yy, hs - 1 - yy), np.minimum(xx, ws - 1 - xx)) < reach_px

    def one_sided(comp) -> bool:
        return edge_band is not None and np.count_nonzero(comp & edge_band) >= EDGE_BAND_FRACTION * np.count_nonzero(comp)

    area_px_full = factor * factor
    origin = (ox, oy)
    n_m, mottle_labels = _hysteresis(energy, e_high, e_low, usable)
    mottle_mask = np.zeros(usable.shape, bool)
    for i in range(1, n_m + 1):
        comp = mottle_labels == i
        if one_sided(comp):
            continue
        plateau = float(np.percentile(energy[comp], 90))
        core = comp & (energy >= 0.5 * plateau)
        mean_dep = float(np.mean(r[core])) if core.any() else 0.0
        rms = float(np.sqrt(max(plateau, 0.0)))
        # A uniform darkening also raises r²: it is a void or run when its mean carries the
        # energy and nearly all of it departs one way. A texture's mean over a few dozen
        # grains can reach half its rms by chance, but then only about two thirds of it lies
        # on the mean's side.
        if abs(mean_dep) > 0.5 * rms and _one_sided(r[core], mean_dep) >= UNIFORM_SIDE_FRACTION:
            continue
        # a texture's extent is where it shows (the hysteresis region), not where it is near
        # its strongest: orange peel's amplitude wanders over the patch, and a 36 mm² mottle
        # measured 8.5 mm² at half its plateau (second renderer)
        score = float(np.sqrt(energy[comp].max()) / np.sqrt(e_high))
        # with a flat, a texture reaching a light trap is judged large enough on what the trap
        # hides as well (:func:`_measure`): a 44 mm² mottle centred on a trap showed 4.3 mm² of
        # texture round it, under the mottle floor, and its lens passed (second renderer)
        extent = _with_hidden(comp, hidden)
        defect = _measure(comp, "mottle", rms, score, factor, ps, region, shape, params, area_px_full,
                          origin=origin, extent=extent, judge_extent=station is not None)
        if defect is not None:
            found.append(defect)
            mottle_mask |= comp

    for sign in (-1.0, 1.0):  # -1: darker (contrast > 0), +1: brighter
        resp = sign * d
        n, labels = _hysteresis(resp, high, low, usable)
        beside_traps = []  # flaws reaching a trap: (core, contrast, score), joined across it below
        # (a core, at half its peak, ends short of the unsearched margin: within a millimetre)
        reach_hidden = max(1, int(round(1.0 / mm_px)))
        for i in range(1, n + 1):
            comp = labels == i
            if np.count_nonzero(comp & mottle_mask) > 0.5 * np.count_nonzero(comp) or one_sided(comp):
                continue  # the texture's own blobs, or a one-sided fit's residue
            peak = float(resp[comp].max())
            core = comp & (resp >= 0.5 * peak)
            contrast = -sign * abs(float(np.median(r[core])))
            if _reaches(core, hidden, reach_hidden):
                beside_traps.append((core, contrast, peak / high))
                continue
            ys, xs = np.nonzero(core)
            length, width = _shape(ys, xs)
            kind = "run" if length >= params.run_elongation * width else "void"
            defect = _measure(core, kind, contrast, peak / high, factor, ps, region, shape, params, area_px_full,
                              width_px=float(len(ys)) / max(length, 1.0), origin=origin)
            if defect is not None:
                found.append(defect)
        for core, contrast, score in _joined_across(beside_traps, hidden):
            extent = _with_hidden(core, hidden)
            # its shape with what a trap hides: a void half over a trap is seen as a crescent
            length, width = _shape(*np.nonzero(core if extent is None else extent))
            kind = "run" if length >= params.run_elongation * width else "void"
            defect = _measure(core, kind, contrast, score, factor, ps, region, shape, params, area_px_full,
                              width_px=float(np.count_nonzero(core)) / max(length, 1.0), origin=origin,
                              extent=extent)
            if defect is not None:
                found.append(defect)
    return found


#: without a flat, a coating object with at least this fraction of its pixels within the
#: background box's half-width of the picture's edge is not judged
EDGE_BAND_FRACTION = 0.5

#: degree of the smooth surface divided out of an uncalibrated image before the coating search
SURFACE_DEGREE = 4


#: the smoothed departure's noise is read over the whole lens (a robust spread), but at most
#: this many times its typical spread within windows of a few smoothing lengths
#: (:func:`_capped_by_local`). Clean lenses read 1.1–1.4 times (the windows' values are
#: correlated); flaws filling a good part of a small lens lifted the whole-lens spread to 4.5
#: times (second renderer, seed 13: a 52 mm² void of 2.5 % and two runs of 2–3 % in a two-eye
#: goggle, thresholds at 3.9 %, none found, the lens passed)
LOCAL_NOISE_CAP = 2.0


def _capped_by_local(d: np.ndarray, usable: np.ndarray, wu: np.ndarray, sigma: float, s_px: float,
                     border: int) -> float:
    """``sigma`` (the whole lens' robust spread of the smoothed departure ``d``), at most
    :data:`LOCAL_NOISE_CAP` times the median standard deviation of ``d`` within windows of
    about six smoothing lengths wholly on the usable lens. A flaw of millimetres is smooth
    within such a window, so it lifts only the windows across its border, while over the
    lens it is part of the spread."""
    k = 2 * int(round(3 * s_px)) + 1
    n = cv2.boxFilter(wu, -1, (k, k), normalize=False, borderType=border)
    full = usable & (n >= 0.9 * k * k)
    if np.count_nonzero(full) < 50:
        return sigma
    m1 = cv2.boxFilter(d * wu, -1, (k, k), normalize=False, borderType=border)
    m2 = cv2.boxFilter(d * d * wu, -1, (k, k), normalize=False, borderType=border)
    var = (m2 - m1 * m1 / np.maximum(n, 1)) / np.maximum(n - 1, 1)
    local = float(np.sqrt(max(float(np.median(var[full])), 0.0)))
    return min(sigma, LOCAL_NOISE_CAP * local) if local > 0 else sigma


def _smooth_surface(t: np.ndarray, where: np.ndarray) -> np.ndarray:
    """A 2-D polynomial of :data:`SURFACE_DEGREE` fitted to ``t`` over ``where`` (twice, the
    second time without the points beyond 3σ of the first fit, so a flaw does not pull it),
    evaluated everywhere: the light's fall-off over the lens, smooth over centimetres. Ones
    when too few points."""
    h, w = t.shape
    ys, xs = np.nonzero(where)
    if len(ys) < 50:
        return np.ones_like(t)
    step = max(1, len(ys) // 4000)
    ys, xs = ys[::step], xs[::step]
    u = lambda v, n: (v - (n - 1) / 2) / max((n - 1) / 2, 1)  # noqa: E731  (coordinates in [-1, 1])
    powers = [(i, j) for i in range(SURFACE_DEGREE + 1) for j in range(SURFACE_DEGREE + 1 - i)]

    def design(yv, xv):
        return np.stack([xv ** i * yv ** j for i, j in powers], -1)

    a = design(u(ys.astype(np.float64), h), u(xs.astype(np.float64), w))
    v = t[ys, xs].astype(np.float64)
    coef, *_ = np.linalg.lstsq(a, v, rcond=None)
    resid = v - a @ coef
    keep = np.abs(resid) < 3 * (1.4826 * float(np.median(np.abs(resid))) + 1e-9)
    coef, *_ = np.linalg.lstsq(a[keep], v[keep], rcond=None)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    surface = design(u(yy, h), u(xx, w)) @ coef
    level = float(np.median(v))
    return np.maximum(surface, 0.05 * level).astype(np.float32) / np.float32(level if level > 0 else 1.0)


#: a departure with at least this fraction of its pixels on its mean's side is uniform (a run
#: or void), not texture
UNIFORM_SIDE_FRACTION = 0.8


def _one_sided(values: np.ndarray, mean: float) -> float:
    """Fraction of ``values`` on the same side of 0 as ``mean``."""
    return float(np.mean(values * np.sign(mean) > 0)) if values.size else 0.0


@dataclass(frozen=True, eq=False)
class _CoatingMaps:
    """A station's per-factor maps for the coating detector (computed once, kept in ``station.cache``)."""

    known_inner: np.ndarray  # blocks fully lit, eroded by the edge margin
    scatter: np.ndarray  # S = (B ⊛ K)/B per valid block
    scatter_sq: np.ndarray
    scatter_m1: np.ndarray  # S − 1
    noise_weight: np.ndarray  # √(B / median B): whitens the shot noise of r
    noise_weight_sq: np.ndarray


def _station_maps(station, factor: int, margin: int) -> _CoatingMaps:
    """The station's coating maps on the grid reduced by ``factor``, cached in ``station.cache``."""
    key = ("coating_maps", factor, margin)
    cache = getattr(station, "cache", None)
    if cache is not None and key in cache:
        return cache[key]
    red = reduced_station(station, factor)
    known = red.valid > 0.999
    lit = (known & ~_trap_edges(station, factor)) if station.backlight != "pattern" else known
    scatter = red.scatter_ratio / np.maximum(red.valid, 1e-6)
    noise_weight = np.sqrt(np.maximum(red.flat, 1e-6) / max(_median(red.flat[known]), 1e-6)) \
        if known.any() else np.ones_like(red.flat)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    maps = _CoatingMaps(known_inner=cv2.erode(lit.view(np.uint8), disc).view(bool), scatter=scatter,
                        scatter_sq=scatter * scatter, scatter_m1=(scatter - 1.0).astype(np.float32),
                        noise_weight=noise_weight, noise_weight_sq=noise_weight * noise_weight)
    for a in maps.__dict__.values():
        a.flags.writeable = False
    if cache is not None:
        cache[key] = maps
    return maps


#: with a plain panel, a flat below this fraction of its surround's brightest is a light
#: trap's edge, where the haze light model is too uncertain to read a coating flaw
TRAP_EDGE_LEVEL = 0.9
#: the surround (radius, mm) whose brightest pixel gives the level at a trap's edge
TRAP_EDGE_SURROUND_MM = 1.5


def _trap_edges(station, factor: int) -> np.ndarray:
    """Blocks (of ``factor`` px, on the grid of :func:`reduced_station`) more than half of whose pixels lie on a
    light trap's edge or in the trap: where the flat is below :data:`TRAP_EDGE_LEVEL` of the
    brightest within :data:`TRAP_EDGE_SURROUND_MM` (a square; the flat through a 3 × 3 median
    first, so that one hot pixel does not raise its surround). More than half, not any: a
    block is dropped when most of what it averages is edge, and a flaw beside a soft trap
    keeps its blocks that are mostly lit (a mottle half over a trap measured 53.9 mm² for
    63.4 when one pixel sufficed, 58.4 now).

    There the frame's haze light ``h·(B ⊛ K)`` is a large part of what is seen (where the
    flat is at half its level, as much again as at full), and ``K`` is known only nominally;
    a misregistration's residue grows with the flat's slope too. A lens of 5 % haze left
    rings of 1–3 % round the traps where a fixed margin let the search reach into a soft
    trap edge. Past this edge the model's share is small."""
    flat = cv2.medianBlur(station.flat.astype(np.float32, copy=False), 3)
    ps = station.pixel_size_mm or 0.1
    # the surround's brightest on a grid 4× coarser (its block means), which is as good a
    # level and a sixteenth of the work
    coarse = reduce_image(flat, 4)
    r = max(1, int(round(TRAP_EDGE_SURROUND_MM / ps / 4)))
    level = cv2.dilate(coarse, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * r + 1, 2 * r + 1)))
    level = cv2.resize(level, (level.shape[1] * 4, level.shape[0] * 4), interpolation=cv2.INTER_NEAREST)
    level = cv2.copyMakeBorder(level, 0, flat.shape[0] - level.shape[0], 0, flat.shape[1] - level.shape[1],
                               cv2.BORDER_REPLICATE)
    dim = (flat < np.float32(TRAP_EDGE_LEVEL) * level).astype(np.float32)
    return reduce_image(dim, factor) > 0.5


def _global_haze(t: np.ndarray, scatter: np.ndarray, weight: np.ndarray, border: int = cv2.BORDER_REFLECT) -> float:
    """The lens's haze ``h`` from the whole lens: the slope of ``t`` on ``S`` after a 5-pixel
    high-pass (which leaves out τ's slow changes), over the level ``g·τ``.

    ``T = g·τ·(1 − h)·(1 + η·S)`` with ``η = h / (1 − h)``, so ``h = η / (1 + η)``.
    """
    use = np.flatnonzero(weight > 0)  # gathered by index: the same values in the same order
    den = _Den(cv2.blur(weight, (5, 5), borderType=border), 1e-3)
    t_hp = t - _norm_box(t, weight, 5, den, border)
    s_hp = scatter - _norm_box(scatter, weight, 5, den, border)
    s_use = s_hp.ravel()[use]
    b = float(np.sum(t_hp.ravel()[use] * s_use)) / max(float(np.sum(s_use ** 2)), 1e-9)
    sub = use[:: max(1, use.size // 4096)]  # what _median would keep of them
    a = _median(t.ravel()[sub] - b * scatter.ravel()[sub])
    eta = max(b / a, 0.0) if a > 0 else 0.0  # haze only adds light to the dark cells
    return eta / (1.0 + eta)


#: prior variance of ``S`` over a haze box (ridge term): where the pattern barely varies
#: within a box, its local haze falls back to the lens's
_SCATTER_VAR_PRIOR = 1e-3


def _pattern_background(t: np.ndarray, scatter: np.ndarray, weight: np.ndarray, k_bg: int, k_haze: int,
                        scatter_sq: np.ndarray, scatter_m1: np.ndarray,
                        border: int = cv2.BORDER_REFLECT) -> np.ndarray:
    """Background ``A(x)·[1 + h(x)·(S − 1)]`` of a patterned backlight's transmission.

    ``T = g·τ·[(1 − h) + h·S] = g·τ·[1 + h·(S − 1)]`` (station-model §2). The haze ``h(x)``
    may vary over the lens (a dull spot) and is fitted locally, over ``k_haze`` boxes, as the
    slope over the intercept of the straight line ``t = a + b·(S − 1)``: a coating flaw
    scales ``a`` and ``b`` alike (it changes τ, not h), so it barely moves ``h``, while a dull
    spot's extra haze lifts the dark cells (large ``S``) and dims the bright ones. The slope
    is shrunk towards the lens's haze where ``S`` barely varies within a box (ridge prior
    ``_SCATTER_VAR_PRIOR``) or the box holds few usable pixels (lens edge, a large flaw).
    ``A = g·τ`` is then the normalised ``k_bg`` box mean of ``t / [1 + h·(S − 1)]``.

    The fit is exact for any locally straight relation of ``t`` and ``S``, so the error of the
    assumed scatter kernel ``K`` (which makes the true ``S`` a local linear function of the
    assumed one) is fitted as haze too. Fitting only the lens-wide haze, and removing a local
    haze term from the departure afterwards, left a dull spot as a mean departure of ±1–2 %
    over the lens (the box background had already absorbed it with the wrong haze), which
    hid coating flaws of a few percent.
    """
    h_lens = _global_haze(t, scatter, weight, border)
    support = cv2.blur(weight, (k_haze, k_haze), borderType=border)
    den = _Den(support, 1e-3)
    ms = _norm_box(scatter, weight, k_haze, den, border)
    mt = _norm_box(t, weight, k_haze, den, border)
    slope = _norm_box(t * scatter, weight, k_haze, den, border)
    slope -= mt * ms
    var = _norm_box(scatter_sq, weight, k_haze, den, border)
    var -= ms * ms
    var = cv2.max(var, 0.0)
    slope /= cv2.max(var, 1e-9)
    ms -= np.float32(1.0)
    ms *= slope
    mt -= ms  # the intercept at S = 1: g·τ
    h = slope
    h /= cv2.max(mt, 1e-6)
    # ridge regression towards the lens's haze: the slope's precision grows with the box's
    # usable pixels times the variance of S over them, the prior's is fixed
    info = support * var
    trust = info / (info + np.float32(_SCATTER_VAR_PRIOR))
    h -= np.float32(h_lens)
    h *= trust
    h += np.float32(h_lens)
    shape = h
    shape *= scatter_m1
    shape += np.float32(1.0)
    shape = cv2.max(shape, 0.05)
    model = _norm_box(t / shape, weight, k_bg, border=border)
    model *= shape
    return model


#: two flaws beside one trap are one when the hull of both, less the trap and themselves,
#: is at most this fraction of their area
JOIN_GAP_FRACTION = 0.3


def _joined_across(pieces: list, hidden: np.ndarray) -> list:
    """Flaws ``(core, contrast, score)`` reaching a light trap, those on either side of it
    that are one flaw joined: the hull of both lies on them or on what the trap hides (within
    :data:`JOIN_GAP_FRACTION` of their area). A run passing behind a trap was reported as a
    19 mm² run above it and a 14 mm² void below (one 56 mm² run, the bundled samples)."""
    pieces = list(pieces)
    joined = True
    while joined and len(pieces) > 1:
        joined = False
        for a in range(len(pieces)):
            for b in range(a + 1, len(pieces)):
                (ca, ka, sa), (cb, kb, sb) = pieces[a], pieces[b]
                both = ca | cb
                ys, xs = np.nonzero(both)
                hull = _hull(ys, xs, both.shape)
                gap = np.count_nonzero(hull & ~hidden & ~both)
                if gap <= JOIN_GAP_FRACTION * len(ys) and (hull & hidden).any():
                    na, nb = np.count_nonzero(ca), np.count_nonzero(cb)
                    pieces[a] = (both, (ka * na + kb * nb) / (na + nb), max(sa, sb))
                    del pieces[b]
                    joined = True
                    break
            if joined:
                break
    return pieces


def _hull(ys: np.ndarray, xs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The filled convex hull of pixels ``(ys, xs)`` as a bool mask of ``shape``."""
    hull = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.stack([xs, ys], 1).astype(np.int32)), 1)
    return hull.view(bool)


def _reaches(core: np.ndarray, hidden: np.ndarray, reach: int) -> bool:
    """True when ``core`` comes within ``reach`` px of ``hidden``."""
    ys, xs = np.nonzero(core)
    if len(ys) == 0:
        return False
    h, w = core.shape
    y0, y1 = max(0, int(ys.min()) - reach), min(h, int(ys.max()) + reach + 1)
    x0, x1 = max(0, int(xs.min()) - reach), min(w, int(xs.max()) + reach + 1)
    near = cv2.dilate(core[y0:y1, x0:x1].view(np.uint8), np.ones((2 * reach + 1, 2 * reach + 1), np.uint8))
    return bool((near.view(bool) & hidden[y0:y1, x0:x1]).any())


def _with_hidden(core: np.ndarray, hidden: np.ndarray) -> np.ndarray | None:
    """``core`` with the part of its convex hull that lies where nothing can be seen
    (``hidden``: a light trap and its margin), or None when it reaches no such part.

    A coating flaw does not stop at a light trap: the trap only hides it. A void half over a
    trap was measured by its lit half, 20 mm² read 13.7 and, its central part being the hidden
    one, in the marginal band (second renderer). Its hull over the trap is the least the flaw
    covers there."""
    if not _reaches(core, hidden, 1):
        return None
    # within the core's box: its hull cannot leave it
    ys, xs = np.nonzero(core)
    y0, x0 = int(ys.min()), int(xs.min())
    box_hidden = hidden[y0:int(ys.max()) + 1, x0:int(xs.max()) + 1]
    added = _hull(ys - y0, xs - x0, box_hidden.shape) & box_hidden
    if not added.any():
        return None
    out = core.copy()
    out[y0:y0 + added.shape[0], x0:x0 + added.shape[1]] |= added
    return out


def _measure(core: np.ndarray, kind: str, contrast: float, score: float, factor: int, ps: float | None,
             region: LensRegion, shape: tuple[int, int], params: CoatingParams, area_px_full: int,
             width_px: float | None = None, origin: tuple[int, int] = (0, 0),
             extent: np.ndarray | None = None, judge_extent: bool = False) -> CoatingDefect | None:
    """A CoatingDefect from its half-maximum core on the reduced grid, or None when it is not coating.

    ``origin``: reduced-grid ``(x, y)`` of ``core[0, 0]`` (the detector works on a crop).
    ``extent``: the core with its part hidden by a light trap (:func:`_with_hidden`); what is
    seen decides whether it is a flaw, the extent gives its area, box and zone. With
    ``judge_extent`` (a mottle, with a flat) the extent must reach the mottle floor and what is
    seen only the floor of any flaw (``min_area_mm2``): a texture round a trap shows as a ring,
    and the windowed median that finds it reads only the part of the ring where most of the
    window is texture."""
    n = int(np.count_nonzero(core))
    ps_eff = ps if ps else 0.1
    mm_px = ps_eff * factor
    area_mm2_eff = n * mm_px * mm_px
    floor = params.min_mottle_area_mm2 if kind == "mottle" else params.min_area_mm2
    if judge_extent and extent is not None:
        if area_mm2_eff < params.min_area_mm2 or np.count_nonzero(extent) * mm_px * mm_px < floor:
            return None
    elif area_mm2_eff < floor:
        return None
    if kind != "mottle" and abs(contrast) > params.max_contrast:
        return None
    if width_px is not None and width_px * mm_px < params.min_width_mm:
        return None
    if extent is not None:
        core, n = extent, int(np.count_nonzero(extent))
    ys, xs = np.nonzero(core)
    xs, ys = xs + origin[0], ys + origin[1]
    x0, y0 = int(xs.min()) * factor, int(ys.min()) * factor
    x1, y1 = min(shape[1], (int(xs.max()) + 1) * factor), min(shape[0], (int(ys.max()) + 1) * factor)
    # zone: any pixel of the core, mapped to full-resolution block centres
    pix = np.stack([xs * factor + factor // 2, ys * factor + factor // 2], axis=1)
    area_px = float(n * area_px_full)
    return CoatingDefect(kind=kind, area_px=area_px, contrast=float(contrast), zone=region.zone_of(pix),
                         bbox_px=[x0, y0, x1, y1], area_mm2=area_px * ps * ps if ps else None, score=float(score))
