"""The relative transmittance image the scratch and spot detectors work on.

``rel = τ / τ_background`` on a working grid of half the frame's resolution: about 1.0 on
clear lens, below 1 where a defect absorbs, above 1 where it scatters light into a dark part
of the backlight.

Why half resolution: a line narrower than two pixels keeps its integrated contrast ``c·w``
under 2×2 area averaging while the pixel noise halves, so thin scratches are *easier* to see
there, and every later pass costs a quarter. Sizes are measured back in full-resolution pixels.

Calibrated (a :class:`~goggleqc.calibration.station.Station`)
    ``T = (I − dark) / B`` (station-model.md §2). For a lens whose τ and h are smooth,
    ``T ≈ τ(1 − h) + τh·(B⊛K)/B``, and ``B⊛K`` is smooth because the scatter kernel is much
    wider than a trap or a pattern cell. So locally ``T ≈ a + b·u`` with ``u = B_ref/B`` known
    from the flat: ``b·u`` is the haze light that fills dark pattern cells. ``a`` and ``b`` are
    fitted by local weighted least squares on a coarse grid (weights ∝ B, the inverse
    shot-noise variance), twice, the second time without the cells the first fit flags.
    Diffuser dust, traps and pattern edges are in ``B`` and never reach ``rel``.
    The noise of ``rel`` grows as ``1/√B`` in dark cells; ``weight = √(B/B_ref)`` whitens it.

Uncalibrated (no station)
    The lens is in focus and the backlight pattern is defocused, so defects are sharp and the
    background is smooth at the scale of a scratch. The background is a 7×7 median on the
    working grid (14 full-resolution px), which removes lines up to ~6 px wide and keeps the
    edges of a defocused grid or checker (a median preserves monotone ramps), then a
    light Gaussian to keep it smooth.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from goggleqc.errors import CalibrationError, InputError

#: full-resolution pixels per working pixel
SCALE = 2
#: calibrated background fit: coarse-grid reduction (working px) and window (coarse cells)
_FIT_REDUCE = 8
_FIT_WINDOW = 5
#: B below this fraction of the lens' typical B is too dark to measure τ through
_MIN_FLAT_FRAC = 0.08
#: the lens mask is eroded by this many working px, so its edge never looks like a line
_EDGE_MARGIN = 3
#: uncalibrated: the median footprint (working px) and the level below which it is not lens
_MEDIAN_K = 7
_MIN_LEVEL_FRAC = 0.12


@dataclass(frozen=True)
class Relative:
    """Relative transmittance on the working grid.

    Attributes
    ----------
    rel : (m, n) float32 ndarray
        ``τ / τ_background``; 1.0 wherever ``valid`` is False.
    valid : (m, n) bool ndarray
        Where ``rel`` is meaningful (lens, bright enough backlight, away from edges).
    weight : (m, n) float32 ndarray
        Noise whitening factor: ``(rel − 1)·weight`` has the same noise everywhere.
    scale : int
        Full-resolution pixels per working pixel.
    """

    rel: np.ndarray
    valid: np.ndarray
    weight: np.ndarray
    scale: int = SCALE


def reduce_image(image: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """Area-average a frame (or mask as float) onto the working grid, as float32."""
    h, w = image.shape[:2]
    src = image if image.dtype == np.float32 else image.astype(np.float32)
    return cv2.resize(src, (w // scale, h // scale), interpolation=cv2.INTER_AREA)


def reduce_mask(mask: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """A working-grid mask that is True only where the whole cell was True."""
    return reduce_image(mask.astype(np.uint8), scale) > 0.999


def _enlarge(a: np.ndarray, shape: tuple[int, int], f: int) -> np.ndarray:
    """Linear interpolation of a grid reduced by ``f`` back to ``shape``."""
    h, w = shape
    big = cv2.resize(a, (a.shape[1] * f, a.shape[0] * f), interpolation=cv2.INTER_LINEAR)
    if big.shape != (h, w):
        big = cv2.copyMakeBorder(big, 0, max(0, h - big.shape[0]), 0, max(0, w - big.shape[1]),
                                 cv2.BORDER_REPLICATE)[:h, :w]
    return big


class _StationMaps:
    """Per-station work, done once: working-grid dark, 1/B, u = B_ref/B, B/B_ref, √(B/B_ref)."""

    def __init__(self, station):
        dark = reduce_image(station.dark)
        flat = reduce_image(station.flat)
        lit = flat > 0
        ref = float(np.percentile(flat[lit], 75)) if lit.any() else 0.0
        if not ref > 0 or not np.isfinite(ref):
            raise CalibrationError("the station's flat is dark or not finite; recalibrate with the backlight on")
        bp = flat / np.float32(ref)
        usable = bp > _MIN_FLAT_FRAC
        self.dark = dark
        self.inv = np.where(usable, 1.0 / np.maximum(flat, 1e-6), 0).astype(np.float32)
        self.bp = np.where(usable, bp, 0).astype(np.float32)
        self.u = np.where(usable, 1.0 / np.maximum(bp, 1e-6), 0).astype(np.float32)
        self.weight = np.sqrt(np.minimum(self.bp, 1.5)).astype(np.float32)
        self.usable = usable


_maps_cache: dict[int, tuple[object, _StationMaps]] = {}


def station_maps(station) -> _StationMaps:
    """The station's working-grid maps, computed once per station object."""
    hit = _maps_cache.get(id(station))
    if hit is not None and hit[0] is station.flat:
        return hit[1]
    maps = _StationMaps(station)
    if len(_maps_cache) > 8:
        _maps_cache.clear()
    _maps_cache[id(station)] = (station.flat, maps)
    return maps


def _erode(mask: np.ndarray, r: int) -> np.ndarray:
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.erode(mask.astype(np.uint8), k) > 0


def _fit_background(t: np.ndarray, bp: np.ndarray, u: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local weighted least squares ``T ≈ a + b·u`` with weights ``m·B'``, on a coarse grid.

    With ``w = m·B'`` and ``u = 1/B'``: Σw = Σm·B', Σw·u = Σm, Σw·u² = Σm·u, Σw·T = Σm·B'·T,
    Σw·T·u = Σm·T. Sums run over coarse cells, then a box window on the coarse grid. Cells
    holding a defect are left out: first those far from the median of their neighbours, then
    those far from the fit; a window with too few cells left keeps the fit of all its cells.
    """
    f = _FIT_REDUCE
    mf = m.astype(np.float32)
    tm = t * mf

    def red(x):
        return cv2.resize(x, (max(1, x.shape[1] // f), max(1, x.shape[0] // f)), interpolation=cv2.INTER_AREA)

    cells = (red(bp * mf), red(mf), red(u * mf), red(tm * bp), red(tm))
    s_w0, s_wu0 = cells[0], cells[1]
    used = s_w0 > 1e-3

    def fit(keep):
        sw, swu, swuu, swt, swtu = (cv2.boxFilter(c * keep, -1, (_FIT_WINDOW, _FIT_WINDOW), normalize=False,
                                                  borderType=cv2.BORDER_REFLECT) for c in cells)
        swc = np.maximum(sw, 1e-6)
        mu_u = swu / swc
        var_u = swuu / swc - mu_u ** 2
        cov = swtu / swc - (swt / swc) * mu_u
        # ridge term: on a uniform panel u hardly varies and b is undetermined, so b → 0
        b = cov / (np.maximum(var_u, 0) + np.float32(0.02))
        return swt / swc - b * mu_u, b, sw

    def outliers(resid):
        good = resid[used]
        if good.size < 4:
            return np.ones_like(s_w0)
        mad = float(np.median(good)) * 1.4826 + 1e-4
        return (resid < max(4 * mad, 0.01)).astype(np.float32)

    cell_w = np.maximum(s_w0, 1e-6)
    cell_t = cells[3] / cell_w
    ref = cv2.medianBlur(cell_t.astype(np.float32), 5) if min(cell_t.shape) >= 5 else cell_t
    keep = outliers(np.where(used, np.abs(cell_t / np.maximum(ref, 1e-6) - 1), 0))
    a_all, b_all, sw_all = fit(np.ones_like(s_w0))
    for _ in range(2):
        a, b, sw = fit(keep)
        pred = (a * s_w0 + b * s_wu0) / cell_w
        keep = outliers(np.where(used, np.abs(cell_t / np.maximum(pred, 1e-6) - 1), 0))
    thin = sw < 0.25 * sw_all
    a = np.where(thin, a_all, a)
    b = np.where(thin, b_all, b)
    return a.astype(np.float32), b.astype(np.float32)


def _check(image: np.ndarray, lens_mask: np.ndarray | None) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 2:
        raise InputError(f"relative_image needs an (M, N) monochrome frame, not shape {getattr(image, 'shape', None)}")
    if image.shape[0] < 32 or image.shape[1] < 32:
        raise InputError(f"the image is {image.shape[1]}×{image.shape[0]} px; at least 32×32 px are needed")
    if lens_mask is not None and lens_mask.shape != image.shape:
        raise InputError(f"the lens mask is {lens_mask.shape[1]}×{lens_mask.shape[0]} px but the image is "
                         f"{image.shape[1]}×{image.shape[0]} px")


def relative_image(image: np.ndarray, station=None, lens_mask: np.ndarray | None = None) -> Relative:
    """Relative transmittance of a lens image against its local background, on the working grid.

    Parameters
    ----------
    image : (M, N) uint8 or uint16 ndarray
        The lens frame as read from the camera (luminance).
    station : Station, optional
        The calibrated station. Without it the background is estimated from the image alone.
    lens_mask : (M, N) bool ndarray, optional
        The clear lens; pixels outside it are never valid.

    Returns
    -------
    Relative
        ``rel``, ``valid`` and ``weight`` on a grid ``SCALE`` times coarser than the image.
    """
    _check(image, lens_mask)
    small = reduce_image(image)
    lens = reduce_mask(lens_mask) if lens_mask is not None else None
    if station is not None:
        maps = station_maps(station)
        t = (small - maps.dark) * maps.inv
        valid = maps.usable if lens is None else (maps.usable & lens)
        valid = _erode(valid, _EDGE_MARGIN)
        a, b = _fit_background(t, maps.bp, maps.u, valid)
        bg = _enlarge(a, t.shape, _FIT_REDUCE) + _enlarge(b, t.shape, _FIT_REDUCE) * maps.u
        level = float(np.median(a[a > 0])) if (a > 0).any() else 0.0
        valid &= bg > np.float32(0.05 * level)
        weight = maps.weight
        num = t
    else:
        bg = _median_bg(small)
        bright = float(np.percentile(bg, 99))
        if not bright > 0:
            raise InputError("the image is black; check the backlight and the exposure")
        base = bg > np.float32(_MIN_LEVEL_FRAC * bright)
        valid = _erode(base if lens is None else (base & lens), _EDGE_MARGIN)
        weight = np.sqrt(np.clip(bg / np.float32(bright), 0, 1.5)).astype(np.float32)
        num = small
    rel = np.ones(num.shape, np.float32)
    np.divide(num, bg, out=rel, where=valid)
    return Relative(rel=rel, valid=valid, weight=weight)


def _median_bg(small: np.ndarray) -> np.ndarray:
    """Median background of an uncalibrated frame (medianBlur needs 8-bit for k > 5)."""
    top = float(small.max()) or 1.0
    q = np.clip(small * np.float32(255.0 / top), 0, 255).astype(np.uint8)
    med = cv2.medianBlur(q, _MEDIAN_K).astype(np.float32) * np.float32(top / 255.0)
    # the 8-bit median is quantised; add back the sub-code mean of the local residual
    resid = cv2.blur(small - med, (_MEDIAN_K, _MEDIAN_K))
    return cv2.GaussianBlur(med + resid, (0, 0), 0.8)
