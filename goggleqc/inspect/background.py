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
    shot-noise variance), again without the cells the fit flags. A misregistration ``s``
    between flat and lens frame (vibration, the lens' prism) adds ``s·∇B/B`` to first order,
    so ``∇B/B`` are regressors of the fit too. Diffuser dust, traps and pattern edges are in
    ``B`` and never reach ``rel``. The noise of ``rel`` grows as ``1/√B`` in dark cells, and
    at steep edges by what a misregistration leaves there, measured on each frame; the
    ``weight`` whitens both.

Uncalibrated (no station)
    The lens is in focus and the backlight pattern is defocused, so defects are sharp and the
    background is smooth at the scale of a scratch. The background is a robust local
    quadratic fit (a 2-D Savitzky–Golay smoother, 9×9 working px = 18 full-resolution px,
    twice, the second time with outliers replaced): quadratic structure such as the valley of
    a defocused grid line or the saddle of a checker corner passes unchanged, while thin
    lines and small spots do not. A median would flatten those valleys into false lines.
    When the backlight is periodic (a grid, checker or stripe target), the background is
    instead the pattern's own neighbouring cells (:mod:`goggleqc.inspect.lattice`), which
    follows edges a local fit cannot; dark cells are then left out, and so are bright lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import cv2
import numpy as np

from goggleqc.errors import CalibrationError, InputError
from goggleqc.inspect.grid import reduce_image
from goggleqc.inspect.lattice import lattice_background
from goggleqc.inspect.lens import _percentiles, np_median

#: full-resolution pixels per working pixel by default (see :func:`working_scale`)
SCALE = 2
#: the working grid aims at about this size of pixel in the lens plane, mm
WORKING_PIXEL_MM = 0.2


def working_scale(shape: tuple[int, int], pixel_size_mm: float | None = None) -> int:
    """Working-grid reduction: the largest power of two (up to :data:`MAX_WORKING_SCALE`) whose
    working pixel is at most :data:`WORKING_PIXEL_MM` (within 10 %) in the lens plane.

    A scratch is a physical object: what the detectors need is a fixed number of working
    pixels per millimetre, whatever the camera. So the grid follows the pixel size, and at one
    pixel size the cost grows linearly with the frame, up to :data:`MAX_WORKING_SCALE`. Without
    a pixel size (an uncalibrated image), a frame up to 2.5 MP is taken to have the coarse
    pixels of a small sensor (2), one up to 10 MP finer ones (4), and a larger one a phone's
    (8). Powers of two, because OpenCV's 2× area reduction is a fast special case.
    """
    if pixel_size_mm and pixel_size_mm > 0:
        # within 10 %: a calibrated 0.1002 mm/px is still a 0.1 mm/px camera
        ratio = min(WORKING_PIXEL_MM / pixel_size_mm * 1.1, MAX_WORKING_SCALE)
        scale = 1
        while scale * 2 <= ratio:
            scale *= 2
        return scale
    pixels = shape[0] * shape[1]
    return 2 if pixels <= 2.5e6 else 4 if pixels <= 10e6 else 8


#: the coarsest working-grid reduction. Photographs of a lens at 0.012 mm/px (12 MP, second
#: renderer, 26 photographs): reduced 4× (the most until stop 21) a defocused grid's edges read
#: as lines on the 0.05 mm grid (0.17–0.2 false scratches per clean photograph); reduced 16×
#: (0.19 mm) short faint scratches were lost in the JPEG's noise (1 of 3 found); 8× found every
#: scratch and spot with 0–0.1 false scratches, 2× faster than 4×
MAX_WORKING_SCALE = 8


#: calibrated background fit: coarse-grid reduction (working px) and window (coarse cells)
_FIT_REDUCE = 8
_FIT_WINDOW = 5
#: B below this fraction of the lens' typical B is too dark to measure τ through
_MIN_FLAT_FRAC = 0.08
#: the lens mask is eroded by this many working px, so its edge never looks like a line
EDGE_MARGIN_PX = 3
#: uncalibrated, periodic backlight: the lattice's cells are read this far inside the lens
#: (working px), and nothing within _BORDER_PX of the frame's border is judged (the filters'
#: reflected border); nearer the border than a cell, the cells of the inner side serve
_LATTICE_MARGIN = 1
_BORDER_PX = 2
#: ridge of the misregistration coefficients (variance of ∇ log B per working px)
_SHIFT_RIDGE = 1e-3
#: ridge of the haze coefficient b (variance of u)
_HAZE_RIDGE = 1e-3
#: |∇ log B| per working px below which the backlight counts as flat, and above which as steep,
#: when the noise of rel is measured against the backlight's steepness
_FLAT_SLOPE = 0.05
_STEEP_SLOPE = 0.1
#: uncalibrated: the local-quadratic window radius (working px) and the level below which
#: a pixel is not lens
_SG_RADIUS = 3
#: a lattice whose edges are blurred by at least this σ (working px) is smooth over the local
#: fit's window: the local fit stands in where too few of its cells land
SMOOTH_PATTERN_SIGMA = 4.0
#: working px over which the local fit's background blends into the lattice's
FILL_RAMP_PX = 8.0
#: the largest change of the backlight across the local fit's window (as a fraction of its
#: level) that the fit follows without leaving a rim behind
_STEEP_CHANGE = 0.5
_STEEP_MEDIAN_PX = 15
_MIN_LEVEL_FRAC = 0.25
#: uncalibrated, local fit: a pixel darker than this fraction of the ~3 mm median around it is
#: a dark blob's, and the median stands in for the first fit there (:func:`_uncalibrated_bg`)
_DEEP_FRAC = 0.7
#: uncalibrated, periodic backlight: the lattice is read where the frame is above
#: _MIN_LIT_FRAC of its bright level, and defects are sought where the background is above
#: _MIN_LATTICE_LEVEL_FRAC (the local fit's valleys are not a concern there)
_MIN_LIT_FRAC = 0.02
_MIN_LATTICE_LEVEL_FRAC = 0.12


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
    origin : (int, int)
        Working-grid ``(x, y)`` of ``rel[0, 0]``: only the lens' bounding box is kept.
    pattern_normals : tuple of float
        ``local`` model only: directions (radians, mod π) across the edges of the backlight
        pattern, where the local fit leaves its residue as lines.
    edge_normals : tuple of float
        ``flat`` model only: directions (radians, mod π) across the edges of the station's
        backlight pattern (from its flat; none on a plain panel), where a misregistration
        between flat and lens leaves a line of residue that the fit's first order does not take.
    model : str
        How the background was found: ``flat`` (the station's), ``lattice`` (the pattern's
        own repeats, :mod:`goggleqc.inspect.lattice`) or ``local`` (a robust local fit).
    target_blur_px : float
        ``lattice`` only: the Gaussian σ (full-resolution px) of the backlight pattern's edges,
        the target's defocus; 0 when unknown. What is blurred as much lies on the target.
    frame_shape : (int, int)
        ``(rows, columns)`` of the whole working grid, whose border is the picture's edge
        (``rel`` is a crop of it at ``origin``); (0, 0) when unknown.
    local_fill : (m, n) bool ndarray or None
        ``lattice`` only: where the local fit stands in for the lattice (:func:`_local_fill`);
        the frame's noise is read outside it.
    lens : (m, n) bool ndarray or None
        The clear lens on this crop, before the edge margin that ``valid`` keeps from its
        outline; None when no lens mask was given. A line that runs into that margin runs on
        to the outline (:func:`~goggleqc.inspect.scratches._into_lens_edge`).
    margin_source : (t, bg) of (m, n) float32 ndarrays, or None
        ``flat`` only: the flat-corrected transmission and its fitted background over the whole
        crop, margin included, where ``rel`` is 1.0: a line is followed into the margin on
        them.
    """

    rel: np.ndarray
    valid: np.ndarray
    weight: np.ndarray
    scale: int = SCALE
    origin: tuple[int, int] = (0, 0)
    pattern_normals: tuple[float, ...] = ()
    edge_normals: tuple[float, ...] = ()
    model: str = "flat"
    target_blur_px: float = 0.0
    frame_shape: tuple[int, int] = (0, 0)
    local_fill: np.ndarray | None = None
    lens: np.ndarray | None = None
    margin_source: tuple[np.ndarray, np.ndarray] | None = None

    @cached_property
    def _departure(self) -> tuple[np.ndarray, np.ndarray]:
        """The whitened departure ``(1 − rel)·weight`` (0 where not valid), and where its
        noise is read: where the background model is the frame's own (not where the local fit
        stands in for a lattice)."""
        d = (np.float32(1.0) - self.rel) * self.weight
        d[~self.valid] = 0
        base = self.valid if self.local_fill is None else self.valid & ~self.local_fill
        return d, base

    @cached_property
    def whitened(self) -> tuple[np.ndarray, float, np.ndarray]:
        """``(d, σ, local σ)``: the whitened departure, its pixel noise and its local noise
        level; computed once, shared by the scratch and spot detectors."""
        d, base = self._departure
        sigma = noise_sigma(d, base)
        local = local_noise(d, self.valid, sigma)
        if self.model == "lattice":
            # a sharpened picture (an ordinary camera's) carries more pixel-to-pixel noise than
            # the filters, a pixel or two wide, see: judged against the pixel noise, its lines
            # would need a fifth more contrast. The factor is taken when it is below 1 only: above
            # 1 it also reads the pattern's residue (1.0–1.65 on linear frames with the goggle in
            # view), and there the hysteresis and a line's mean along its length already ride
            # above the noise
            local *= np.float32(min(1.0, _colour(self.band_sigma, sigma)))
        return d, sigma, local

    @cached_property
    def local_units(self) -> np.ndarray:
        """The whitened departure in units of its local noise (``d / local σ``): what the
        scratch detector's segment test and its following-on sum along a line."""
        d, _, local = self.whitened
        return d / np.maximum(local, np.float32(1e-6))

    @cached_property
    def band_sigma(self) -> float:
        """The noise of the whitened departure as the filters see it (:func:`band_noise`),
        read where the frame's own background model holds."""
        return band_noise(*self._departure)

    def to_full(self, x: float, y: float) -> tuple[float, float]:
        """Full-resolution pixel coordinates of working-grid point (x, y) of this crop."""
        f = self.scale
        return (x + self.origin[0]) * f + (f - 1) / 2, (y + self.origin[1]) * f + (f - 1) / 2

    def full_slices(self, ys: np.ndarray, xs: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Full-resolution pixel indices (centres of the cells) of working-grid pixels."""
        f = self.scale
        yy = np.clip((ys + self.origin[1]) * f + f // 2, 0, shape[0] - 1)
        xx = np.clip((xs + self.origin[0]) * f + f // 2, 0, shape[1] - 1)
        return yy, xx


def noise_sigma(d: np.ndarray, valid: np.ndarray) -> float:
    """Robust pixel noise of the whitened departure (MAD of a 2-px difference, / √2)."""
    diff = d[:, 2:] - d[:, :-2]
    ok = valid[:, 2:] & valid[:, :-2]
    vals = diff[::2, ::2][ok[::2, ::2]]
    if vals.size < 50:
        return 1.0
    # np.median's middle value(s) and float32 mean of the two, from one in-place partition
    # (np.median copies, checks for NaN and reduces): the same float32 median
    np.abs(vals, out=vals)
    n = vals.size
    k = n // 2
    if n % 2:
        vals.partition(k)
        med = vals[k]
    else:
        vals.partition([k - 1, k])
        med = (vals[k - 1] + vals[k]) / np.float32(2)
    return float(1.4826 * np.float32(med) / np.sqrt(2)) or 1e-6


#: the Gaussian σ (working px) at which :func:`noise_colour` reads the noise, the filters'
#: scale; and the bounds of the factor it returns
_BAND_SIGMA = 1.0
_COLOUR_BOUNDS = (0.5, 2.0)


@lru_cache(maxsize=4)
def _white_band_ratio(s: float) -> float:
    """:func:`noise_sigma` of white noise smoothed by a Gaussian of σ = ``s``, per unit of its
    pixel noise (fixed seed)."""
    d = np.random.default_rng(4321).standard_normal((512, 512)).astype(np.float32)
    ok = np.ones(d.shape, bool)
    return noise_sigma(cv2.GaussianBlur(d, (0, 0), s), ok) / noise_sigma(d, ok)


def band_noise(d: np.ndarray, valid: np.ndarray) -> float:
    """The robust noise of the departure ``d`` smoothed at the filters' scale (a Gaussian of
    :data:`_BAND_SIGMA`): what a filter a pixel or two wide sees of the noise, white or not."""
    inner = cv2.erode(valid.view(np.uint8), np.ones((5, 5), np.uint8)).view(bool)
    return noise_sigma(cv2.GaussianBlur(d, (0, 0), _BAND_SIGMA), inner)


def noise_colour(d: np.ndarray, valid: np.ndarray, sigma: float) -> float:
    """How much more (> 1) or less (< 1) noise the filters see than white noise of pixel σ
    ``sigma`` would give them.

    A machine-vision camera's noise is white (≈ 1). An ordinary camera's is not:
    demosaicing and JPEG take out the finest grain (the pixel-to-pixel noise understates what
    a filter a pixel or two wide sees, 1.2–1.4), sharpening adds it (0.8–0.9). Read as the
    robust noise of the departure smoothed at the filters' scale, divided by what white noise
    gives; defects are too few to move a median. Bounded to 0.5–2.
    """
    return _colour(band_noise(d, valid), sigma)


def _colour(band: float, sigma: float) -> float:
    """:func:`noise_colour` from the band-limited noise ``band`` and the pixel noise ``sigma``."""
    k = band / (max(sigma, 1e-12) * _white_band_ratio(_BAND_SIGMA))
    return float(np.clip(k, *_COLOUR_BOUNDS))


#: window (working px) over which the local noise level is measured
_LOCAL_NOISE_WINDOW = 15


def local_noise(d: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """Local noise σ of ``d``, never below the global ``sigma``.

    Where the background model leaves structure behind (the edges of an uncalibrated
    backlight pattern, a shadowed rim), the residual is larger than the pixel noise; judging
    responses against the local level there keeps that structure from becoming defects. The
    mean absolute value is clipped at 3σ first, so a scratch does not raise its own level.
    """
    a = np.minimum(np.abs(d), np.float32(3 * sigma))
    k = (_LOCAL_NOISE_WINDOW, _LOCAL_NOISE_WINDOW)
    num = cv2.boxFilter(a, -1, k, borderType=cv2.BORDER_REFLECT)
    den = cv2.boxFilter(valid.astype(np.float32), -1, k, borderType=cv2.BORDER_REFLECT)
    mean_abs = num / np.maximum(den, np.float32(1e-3))
    return np.maximum(mean_abs * np.float32(1.2533), np.float32(sigma))  # E|x| = σ·√(2/π)



def reduce_mask(mask: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """A working-grid mask that is True only where the whole cell was True."""
    return reduce_image(mask.view(np.uint8) if mask.dtype == bool else mask, scale) > 0.999


def _enlarge(a: np.ndarray, shape: tuple[int, int], f: int) -> np.ndarray:
    """Linear interpolation of a grid reduced by ``f`` back to ``shape``."""
    h, w = shape
    big = cv2.resize(a, (a.shape[1] * f, a.shape[0] * f), interpolation=cv2.INTER_LINEAR)
    if big.shape != (h, w):
        big = cv2.copyMakeBorder(big, 0, max(0, h - big.shape[0]), 0, max(0, w - big.shape[1]),
                                 cv2.BORDER_REPLICATE)[:h, :w]
    return big


class _StationMaps:
    """Per-station work, done once: working-grid dark, 1/B, u = B_ref/B, B/B_ref, the
    whitening weight and ∇B/B (the regressors of a misregistration)."""

    def __init__(self, station, scale: int):
        if not (np.isfinite(station.flat).all() and np.isfinite(station.dark).all()):
            raise CalibrationError("the station's flat or dark holds NaN or infinite values; recalibrate this station")
        dark = reduce_image(station.dark, scale)
        flat = reduce_image(station.flat, scale)
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
        # A misregistration s between flat and lens frame (vibration, the lens' own prism)
        # is smooth over the lens, and to first order it adds s·∇B/B to T = I/B: a signal
        # the background fit takes out with ∇B/B as regressors (per working px), not noise.
        logb = np.log(np.maximum(flat, 1e-3 * ref))
        self.gx = np.where(usable, cv2.Sobel(logb, cv2.CV_32F, 1, 0, ksize=3) / 8, 0).astype(np.float32)
        self.gy = np.where(usable, cv2.Sobel(logb, cv2.CV_32F, 0, 1, ksize=3) / 8, 0).astype(np.float32)
        # Noise of rel: shot noise grows as 1/√B, so √(B/B_ref) whitens it; what the fit
        # leaves of a misregistration grows with |∇ log B| and is measured per lens
        # (:func:`_misregistration_weight`)
        self.shot = np.sqrt(self.bp).astype(np.float32)
        self.slope2 = (self.gx * self.gx + self.gy * self.gy).astype(np.float32)
        self.usable = usable
        # the backlight pattern's edge directions, where a misregistration leaves its
        # second-order residue as lines (none on a plain panel)
        self.edge_normals = pattern_edge_normals(self.bp, usable)


_maps_cache: dict[tuple[int, int], tuple[object, _StationMaps]] = {}


def station_maps(station, scale: int = SCALE) -> _StationMaps:
    """The station's working-grid maps, computed once per station object and scale."""
    key = (id(station), scale)
    hit = _maps_cache.get(key)
    if hit is not None and hit[0] is station.flat:
        return hit[1]
    maps = _StationMaps(station, scale)
    if len(_maps_cache) > 8:
        _maps_cache.clear()
    _maps_cache[key] = (station.flat, maps)
    return maps


def _erode(mask: np.ndarray, r: int) -> np.ndarray:
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.erode(mask.astype(np.uint8), k) > 0


def _solve_sym3(a, r):
    """Solve ``A·x = r`` per element for a symmetric 3×3 ``A`` given as nested lists of arrays.

    Cramer's rule with the cofactors written out: on the fit's few thousand coarse cells this
    is a handful of array operations, where a batched ``np.linalg.solve`` pays per cell.
    ``A`` must be non-singular (the fit's ridge sees to it).
    """
    (a00, a01, a02), (_, a11, a12), (_, _, a22) = a
    c00 = a11 * a22 - a12 * a12
    c01 = a02 * a12 - a01 * a22
    c02 = a01 * a12 - a02 * a11
    c11 = a00 * a22 - a02 * a02
    c12 = a01 * a02 - a00 * a12
    c22 = a00 * a11 - a01 * a01
    inv_det = 1.0 / (a00 * c00 + a01 * c01 + a02 * c02)
    r0, r1, r2 = r
    return ((c00 * r0 + c01 * r1 + c02 * r2) * inv_det,
            (c01 * r0 + c11 * r1 + c12 * r2) * inv_det,
            (c02 * r0 + c12 * r1 + c22 * r2) * inv_det)


def _fit_background(t: np.ndarray, bp: np.ndarray, u: np.ndarray, m: np.ndarray,
                    gx: np.ndarray, gy: np.ndarray) -> tuple[np.ndarray, ...]:
    """Local weighted least squares ``T ≈ a + b·u + cx·gx + cy·gy`` with weights ``m·B'``, on a
    coarse grid.

    ``u = 1/B'`` carries the haze light that fills dark pattern cells and a trap; ``gx, gy =
    ∇B/B`` a misregistration ``s`` between flat and lens frame, whose first-order residue is
    ``s·∇B/B`` (so ``(cx, cy) ≈ τ·s``). Sums run over coarse cells, then a box window on the
    coarse grid. Cells holding a defect are left out, those far from the fit; a window with
    too few cells left keeps the fit of all its cells. Returns the coarse ``a, b, cx, cy``.
    """
    f = _FIT_REDUCE
    mf = m.astype(np.float32)

    # the products Σw, Σw·r, Σw·r·r', Σw·T, Σw·T·r of the regressors r = (u, gx, gy), with
    # w·u = m, summed over f × f cells. The inputs are padded with zeros to whole cells (no
    # weight there: every product carries m), so that a cell is exactly f px, as _enlarge
    # assumes, and each reduction takes OpenCV's integer-factor area path
    rows, cols = t.shape
    ch, cw = -(-rows // f), -(-cols // f)

    def pad(x):
        return cv2.copyMakeBorder(x, 0, ch * f - rows, 0, cw * f - cols, cv2.BORDER_CONSTANT, value=0)

    t, bp, u, mf, gx, gy = (pad(x) for x in (t, bp, u, mf, gx, gy))
    w = cv2.multiply(bp, mf)
    wgx, wgy, wt = cv2.multiply(w, gx), cv2.multiply(w, gy), cv2.multiply(w, t)
    products = (w, mf, wgx, wgy,
                cv2.multiply(mf, u), cv2.multiply(wgx, gx), cv2.multiply(wgy, gy), cv2.multiply(wgx, gy),
                cv2.multiply(mf, gx), cv2.multiply(mf, gy), wt, cv2.multiply(mf, t),
                cv2.multiply(wt, gx), cv2.multiply(wt, gy))
    cells = [cv2.resize(x, (cw, ch), interpolation=cv2.INTER_AREA) for x in products]
    s_w, s_u, s_gx, s_gy, _, _, _, _, _, _, s_t = cells[:11]
    first = (s_w, s_u, s_gx, s_gy)
    used = s_w > 1e-3

    def box(c, keep):
        return cv2.boxFilter(c * keep, -1, (_FIT_WINDOW, _FIT_WINDOW), normalize=False, borderType=cv2.BORDER_REFLECT)

    def fit(keep):
        sw, swu, swx, swy, swuu, swxx, swyy, swxy, swux, swuy, swt, swtu, swtx, swty = (
            box(c, keep).astype(np.float64) for c in cells)
        swc = np.maximum(sw, 1e-6)
        mu = (swu / swc, swx / swc, swy / swc)
        mu_t = swt / swc
        # the weighted covariance of the regressors (u, gx, gy), with a ridge: on a uniform
        # panel u hardly varies and b is undetermined (b → 0); where the backlight has no
        # edges a shift changes nothing and its coefficients → 0
        ridge = (_HAZE_RIDGE, _SHIFT_RIDGE, _SHIFT_RIDGE)
        second = ((swuu, swux, swuy), (swux, swxx, swxy), (swuy, swxy, swyy))
        cov = [[second[i][j] / swc - mu[i] * mu[j] + (ridge[i] if i == j else 0.0) for j in range(3)]
               for i in range(3)]
        rhs = [s / swc - mu_t * m for s, m in zip((swtu, swtx, swty), mu)]
        coef = _solve_sym3(cov, rhs)
        return (mu_t - sum(c * m for c, m in zip(coef, mu)), *coef), sw

    def outliers(resid):
        good = resid[used]
        if good.size < 4:
            return np.ones_like(s_w)
        mad = np_median(good) * 1.4826 + 1e-4
        return (resid < max(4 * mad, 0.01)).astype(np.float32)

    cell_w = np.maximum(s_w, 1e-6)
    cell_t = s_t / cell_w
    coef_all, sw_all = fit(np.ones_like(s_w))
    # the first cells left out are those far from the fit of all cells, not from the median
    # of their neighbours: a cell at a trap's rim or on a dark pattern cell holds haze light
    # (b·u) its neighbours lack, and leaving those out would lose the haze term there
    coef = coef_all
    for _ in range(2):
        pred = sum(c * s for c, s in zip(coef, first)) / cell_w
        keep = outliers(np.where(used, np.abs(cell_t / np.maximum(pred, 1e-6) - 1), 0))
        coef, sw = fit(keep)
    thin = sw < 0.25 * sw_all
    return tuple(np.where(thin, c_all, c).astype(np.float32) for c, c_all in zip(coef, coef_all))


def _misregistration_weight(t: np.ndarray, bg: np.ndarray, valid: np.ndarray, shot: np.ndarray,
                            slope2: np.ndarray, bp: np.ndarray) -> np.ndarray:
    """The whitening weight of ``rel``: shot noise, plus the residue a misregistration leaves
    where the backlight is steep, as much of it as this lens shows.

    With ``x = (rel − 1)·√B'``, ``var x = σ0² + K²·q`` where ``q = |∇ log B|²·B'``: ``σ0`` is the
    shot noise, ``K`` the part of a misregistration the fit's first-order terms leave. Both are
    read off the frame: ``σ0`` where the backlight is flat (q small), ``K²`` from the excess
    spread where it is steepest. A frame registered with its flat (K = 0) is whitened by
    ``√B'`` alone, so pattern edges keep their sensitivity; a shaken one is damped there.
    """
    shot = np.where(valid, shot, np.float32(0)).astype(np.float32, copy=False)
    # statistics on every other pixel of every other row: tens of thousands are plenty
    v, g2 = valid[::2, ::2], slope2[::2, ::2]
    gv = g2[v]
    if gv.size < 200:
        return shot
    lo, hi = _percentiles(gv, (40, 75))
    flat = v & (g2 <= min(lo, _FLAT_SLOPE ** 2))
    steep = v & (g2 >= max(hi, _STEEP_SLOPE ** 2))
    if np.count_nonzero(flat) < 100 or np.count_nonzero(steep) < 50:
        return shot
    ts, bs, ws = t[::2, ::2], bg[::2, ::2], shot[::2, ::2]

    def spread(mask):
        x = (ts[mask] / np.maximum(bs[mask], 1e-6) - 1) * ws[mask]
        return 1.4826 * np_median(np.abs(x))

    s0, s1 = spread(flat), spread(steep)
    k2 = max(s1 * s1 - s0 * s0, 0.0) / max(np_median((g2 * bp[::2, ::2])[steep]), 1e-9)
    if not s0 > 0 or k2 <= 0:
        return shot
    # var = 1 / max(B', 1e-3) + (K / σ0)²·q, and 1 / √var where valid: in place, in float32
    var = np.maximum(bp, np.float32(1e-3))
    np.divide(np.float32(1.0), var, out=var)
    var += np.float32(k2 / (s0 * s0)) * slope2
    np.sqrt(var, out=var)
    np.divide(np.float32(1.0), var, out=var)
    var[~valid] = 0
    return var


def _check(image: np.ndarray, lens_mask: np.ndarray | None) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 2:
        raise InputError(f"relative_image needs an (M, N) monochrome frame, not shape {getattr(image, 'shape', None)}")
    if image.shape[0] < 32 or image.shape[1] < 32:
        raise InputError(f"the image is {image.shape[1]}×{image.shape[0]} px; at least 32×32 px are needed")
    if lens_mask is not None and lens_mask.shape != image.shape and lens_mask.shape[0] > image.shape[0] // 2:
        raise InputError(f"the lens mask is {lens_mask.shape[1]}×{lens_mask.shape[0]} px but the image is "
                         f"{image.shape[1]}×{image.shape[0]} px")


def relative_image(image: np.ndarray, station=None, lens_mask: np.ndarray | None = None,
                   scale: int | None = None, reduced: np.ndarray | None = None,
                   transmission: np.ndarray | None = None) -> Relative:
    """Relative transmittance of a lens image against its local background, on the working grid.

    Parameters
    ----------
    image : (M, N) uint8 or uint16 ndarray
        The lens frame as read from the camera (luminance).
    station : Station, optional
        The calibrated station. Without it the background is estimated from the image alone.
    lens_mask : (M, N) or (M // scale, N // scale) bool ndarray, optional
        The clear lens, at full resolution or already on the working grid; pixels outside it
        are never valid.
    scale : int, optional
        Working-grid reduction; default :func:`working_scale` of the frame.
    reduced : ndarray, optional
        ``reduce_image(image, scale)`` when the caller already has it.
    transmission : ndarray, optional
        Calibrated only: ``(reduced − maps.dark)·maps.inv`` of :func:`station_maps` on the
        whole working grid, when the caller already has it (the coating detector needs it too).

    Returns
    -------
    Relative
        ``rel``, ``valid`` and ``weight`` on a grid ``scale`` times coarser than the image,
        cropped to the lens.
    """
    _check(image, lens_mask)
    scale = scale or working_scale(image.shape)
    small = reduced if reduced is not None else reduce_image(image, scale)
    if lens_mask is None:
        lens = None
    elif lens_mask.shape == small.shape:
        lens = lens_mask.astype(bool, copy=False)
    else:
        lens = reduce_mask(lens_mask, scale)
    crop = (slice(None), slice(None))
    origin = (0, 0)
    frame_shape = small.shape[:2]
    if lens is not None and lens.any():
        # only the lens' bounding box (with room for the filters) is worth the work
        ys, xs = np.nonzero(lens[::2, ::2])
        pad = 12
        y0, y1 = max(0, 2 * ys.min() - pad), min(lens.shape[0], 2 * ys.max() + pad)
        x0, x1 = max(0, 2 * xs.min() - pad), min(lens.shape[1], 2 * xs.max() + pad)
        crop = (slice(y0, y1), slice(x0, x1))
        origin = (x0, y0)
        small, lens = small[crop], lens[crop]
    target_blur = 0.0
    local_fill = None
    margin_source = None
    edge_normals = ()
    if station is not None:
        maps = station_maps(station, scale)
        # elementwise, so a crop of the caller's whole-grid transmission is the same values
        t = transmission[crop] if transmission is not None else (small - maps.dark[crop]) * maps.inv[crop]
        usable = maps.usable[crop]
        # keep clear of the lens edge (a boundary a pixel off would look like a line), but not
        # of dark pattern cells: their edges are in the flat and divide out
        valid = usable if lens is None else (usable & _erode(lens, EDGE_MARGIN_PX))
        u = maps.u[crop]
        gx, gy = maps.gx[crop], maps.gy[crop]
        a, b, cx, cy = _fit_background(t, maps.bp[crop], u, valid, gx, gy)
        bg = (_enlarge(a, t.shape, _FIT_REDUCE) + _enlarge(b, t.shape, _FIT_REDUCE) * u
              + _enlarge(cx, t.shape, _FIT_REDUCE) * gx + _enlarge(cy, t.shape, _FIT_REDUCE) * gy)
        level = float(np.median(a[a > 0])) if (a > 0).any() else 0.0
        valid &= bg > np.float32(0.05 * level)
        weight = _misregistration_weight(t, bg, valid, maps.shot[crop], maps.slope2[crop], maps.bp[crop])
        num, normals, model = t, (), "flat"
        edge_normals = maps.edge_normals
        margin_source = (t, bg)
    else:
        bg = _uncalibrated_bg(small)
        bright = float(np.percentile(bg, 99))
        if not bright > 0:
            raise InputError("the image is black; check the backlight and the exposure")
        base = bg > np.float32(_MIN_LEVEL_FRAC * bright)
        seen = base if lens is None else (base & lens)
        model = "local"
        # the local fit is biased within its window of the lens edge: keep clear of it
        valid = _erode(seen, EDGE_MARGIN_PX + _SG_RADIUS) & ~_steep(bg)
        lit = small > np.float32(_MIN_LIT_FRAC * bright)
        lit = lit if lens is None else (lit & lens)
        repeats = lattice_background(small, _erode(lit, _LATTICE_MARGIN), picture=(origin, frame_shape))
        if repeats is not None:
            # a periodic backlight: its own neighbouring cells are the background, of its dark
            # cells too (their noise is whitened by √bg below), down to a level where a
            # defect still shows against the camera's noise
            local_bg, local_valid = bg, valid
            bg, ok, lattice = repeats
            seen = lit & (cv2.GaussianBlur(bg, (0, 0), 1.0) > np.float32(_MIN_LATTICE_LEVEL_FRAC * bright))
            border = _BORDER_PX
            inner = np.zeros(seen.shape, bool)
            inner[border:-border, border:-border] = True
            # the cells were read a pixel inside the lit lens already: one more keeps the
            # lens edge's own blur out, and the edge's full margin is not needed
            valid = _erode(seen & ok, 1) & inner
            model = "lattice"
            target_blur = lattice.edge_sigma * scale
            normals = ()
            if lattice.edge_sigma >= SMOOTH_PATTERN_SIGMA:
                bg, valid, local_fill = _local_fill(bg, valid, local_bg, local_valid, seen, lattice.corner, border)
        else:
            # the local fit leaves the pattern's edges as faint lines: lines along them are not
            # scratches. The lattice's own repeats leave no such residue, and a scratch along
            # a stripe target's stripes (or along a spurious direction) stays a scratch.
            normals = pattern_edge_normals(bg, valid)
        weight = np.sqrt(np.clip(bg / np.float32(bright), 0, 1.5)).astype(np.float32)
        if model == "lattice":
            # the corners (three cells) and a bent view's one-sided band leave more residue
            for part in (lattice.corner, lattice.one_sided):
                if part is not None:
                    weight = _residue_weight(small, bg, valid, weight, part)
        num = small
    rel = np.ones(num.shape, np.float32)
    np.divide(num, bg, out=rel, where=valid)
    return Relative(rel=rel, valid=valid, weight=np.ascontiguousarray(weight), scale=scale, origin=origin,
                    pattern_normals=normals, edge_normals=edge_normals, model=model, target_blur_px=target_blur,
                    frame_shape=frame_shape, local_fill=local_fill, lens=lens, margin_source=margin_source)


def _local_fill(bg: np.ndarray, valid: np.ndarray, local_bg: np.ndarray, local_valid: np.ndarray,
                seen: np.ndarray, corner: np.ndarray | None, border: int):
    """A lattice's background with the local fit standing in where too few of its cells land.

    A pattern blurred far beyond the local fit's window (:data:`SMOOTH_PATTERN_SIGMA`) is as
    smooth as uneven light to that fit, so it serves in the lattice's blind band (a period
    along a frame near the picture's edge: a 6.5 mm scratch of 6 % went unjudged there) —
    away from the picture's edge (where the fit is one-sided), from the fit's own edges and
    from the picture's corners (which have their own three cells). The two meet without a
    seam: blended over :data:`FILL_RAMP_PX` into the lattice's part (a step between them read
    as lines along it). Returns ``bg``, ``valid`` and the filled mask (None when nothing is).
    """
    away = np.zeros(seen.shape, bool)
    m = EDGE_MARGIN_PX + _SG_RADIUS + border
    away[m:-m, m:-m] = True
    trusted = _erode(local_valid, _SG_RADIUS) & away
    if corner is not None:
        trusted &= ~cv2.dilate(corner.view(np.uint8), np.ones((2 * m + 1, 2 * m + 1), np.uint8)).view(bool)
    fill = trusted & ~valid & _erode(seen, EDGE_MARGIN_PX + _SG_RADIUS)
    if not fill.any():
        return bg, valid, None
    w = np.clip(cv2.distanceTransform((~fill).view(np.uint8), cv2.DIST_L2, 3) / np.float32(FILL_RAMP_PX), 0, 1)
    return np.where(trusted, w * bg + (1 - w) * local_bg, bg).astype(np.float32), valid | fill, fill


#: Gaussian σ (working px) at which the residue of a part of a lattice's background is compared
CORNER_RESIDUE_SIGMA = 1.5


def _residue_weight(small: np.ndarray, bg: np.ndarray, valid: np.ndarray, weight: np.ndarray,
                    part: np.ndarray) -> np.ndarray:
    """``weight`` lowered over ``part`` of a lattice's background by as much as its residue
    exceeds the rest's.

    In a picture's corners only three neighbouring cells serve the background, and in a bent
    view's one-sided band (near an edge, where the pairs of cells run out) the cells of one
    side alone; both differ from the place steadily (scale, light), so the residue there is
    larger: blobs of a few percent in a corner (a checker's dark cell read as a 1.9 mm spot of
    10 %), faint lines along the edge in the band (a 3.3 mm line of 2.8 % on a bent close-up).
    The residue of both parts is measured on this frame (robust spread of the departure
    smoothed to blob scale), and ``part`` is whitened by its ratio.
    """
    seen = valid & part
    rest = valid & ~part
    if np.count_nonzero(seen) < 50 or np.count_nonzero(rest) < 500:
        return weight
    dep = np.where(valid, (np.float32(1.0) - small / np.maximum(bg, 1e-6)) * weight, 0).astype(np.float32)
    num = cv2.GaussianBlur(dep, (0, 0), CORNER_RESIDUE_SIGMA)
    den = cv2.GaussianBlur(valid.astype(np.float32), (0, 0), CORNER_RESIDUE_SIGMA)
    blob = num / np.maximum(den, 1e-3)

    def spread(mask):
        v = blob[mask]
        return 1.4826 * np_median(np.abs(v - np_median(v)))

    ratio = spread(seen) / max(spread(rest), 1e-9)
    if not ratio > 1.0:
        return weight
    return np.where(part, weight / np.float32(ratio), weight).astype(np.float32)


@lru_cache(maxsize=4)
def _quadratic_smoother(radius: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Separable terms of the 2-D Savitzky–Golay smoother of order 2 on a square window.

    The value a local least-squares fit of ``1, x, y, x², xy, y²`` gives at the window's
    centre is a fixed linear filter ``w(x, y) = α + β(x² + y²)``, which is rank 2: two
    separable passes. Quadratic structure (the valley of a defocused grid line, the saddle of
    a checker corner) passes unchanged; a thin line or a small spot is mostly rejected.
    """
    r = np.arange(-radius, radius + 1, dtype=np.float64)
    x, y = np.meshgrid(r, r)
    a = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], -1).reshape(-1, 6)
    w = np.linalg.pinv(a)[0].reshape(x.shape)
    u, sv, vt = np.linalg.svd(w)
    return tuple((np.float32(u[:, i] * sv[i]).reshape(-1, 1), np.float32(vt[i]).reshape(-1, 1))
                 for i in range(2) if sv[i] > 1e-9 * sv[0])


def _smooth2(image: np.ndarray, radius: int) -> np.ndarray:
    out = None
    for ky, kx in _quadratic_smoother(radius):
        part = cv2.sepFilter2D(image, -1, kx, ky, borderType=cv2.BORDER_REFLECT)
        out = part if out is None else out + part
    return out


#: a second edge direction of a backlight pattern holds at least this share of the first's
#: gradient energy (a grid's or checker's two hold about equal shares)
EDGE_PEAK_SHARE = 0.1


def pattern_edge_normals(bg: np.ndarray, valid: np.ndarray, bins: int = 36, ratio: float = 4.0) -> tuple[float, ...]:
    """Directions across the edges of a backlight pattern, from the background's gradients.

    A grid, checker or stripe target concentrates its edge gradients at one or two
    orientations; a lens on a plain panel spreads them evenly. Returns up to two directions
    (radians, mod π) whose gradient energy stands ``ratio`` times above the median bin and
    holds at least :data:`EDGE_PEAK_SHARE` of the strongest direction's: a stripe target's
    one orientation leaves the other bins near nothing, where any ripple stood 4× their
    median (a second "edge" 21° off the stripes, along which a scratch was no longer joined
    at its kink).
    """
    gx = cv2.Sobel(bg, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(bg, cv2.CV_32F, 0, 1, ksize=3)
    energy = (gx * gx + gy * gy)[valid]
    if energy.size < 100:
        return ()
    angle = np.mod(np.arctan2(gy[valid], gx[valid]), np.pi)
    hist = np.bincount(np.minimum((angle / np.pi * bins).astype(int), bins - 1), weights=energy, minlength=bins)
    hist = (np.roll(hist, 1) + hist + np.roll(hist, -1)) / 3
    floor = float(np.median(hist)) + 1e-12
    peaks = [i for i in range(bins) if hist[i] >= ratio * floor and hist[i] >= hist[i - 1] and hist[i] >= hist[(i + 1) % bins]]
    peaks = sorted(peaks, key=lambda i: -hist[i])[:2]
    peaks = [i for i in peaks if hist[i] >= EDGE_PEAK_SHARE * hist[peaks[0]]]
    # refine each peak to the energy-weighted mean direction near it (doubled angles, since
    # directions are mod π): a bin is 5° wide, a tilted pattern's edges sit anywhere in it
    out = []
    for i in peaks:
        centre = (i + 0.5) * np.pi / bins
        diff = np.abs(np.mod(angle - centre + np.pi / 2, np.pi) - np.pi / 2)
        near = diff < 1.5 * np.pi / bins
        w = energy[near]
        a2 = 2 * angle[near]
        out.append(float(np.mod(np.arctan2((w * np.sin(a2)).sum(), (w * np.cos(a2)).sum()) / 2, np.pi)))
    return tuple(out)


def _log_slope(logb: np.ndarray) -> np.ndarray:
    """|∇ log B| per working pixel (Sobel ÷ 8): the fractional change of B per pixel."""
    gx = cv2.Sobel(logb, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(logb, cv2.CV_32F, 0, 1, ksize=3) / 8
    return cv2.magnitude(gx, gy)


def _median_3mm(image: np.ndarray) -> tuple[np.ndarray, float]:
    """A median over :data:`_STEEP_MEDIAN_PX` working px (~3 mm) on 8-bit levels (OpenCV's
    large-window median is 8-bit only): the median's levels, and the image value of level 250."""
    top = max(float(image.max()), 1e-6)
    levels = np.clip(image * np.float32(250.0 / top), 0, 255).astype(np.uint8)
    return cv2.medianBlur(levels, _STEEP_MEDIAN_PX), top


def _steep(bg: np.ndarray) -> np.ndarray:
    """Where the local fit cannot follow the backlight: it changes by more than
    :data:`_STEEP_CHANGE` across the fit's window (the rim of a light trap, a sharp pattern
    edge), grown by the window. A plain panel's vignetting changes by a few percent there, a
    defocused trap's rim by half its level or more."""
    # a median over ~3 mm first: spots and scratches (which the fit partly follows) are not
    # backlight structure; traps and pattern cells are
    smooth, _ = _median_3mm(bg)
    slope = _log_slope(np.log(np.maximum(smooth.astype(np.float32), np.float32(0.25))))
    steep = (slope * np.float32(2 * _SG_RADIUS + 1) > _STEEP_CHANGE).astype(np.uint8)
    return cv2.dilate(steep, np.ones((2 * _SG_RADIUS + 1,) * 2, np.uint8)).astype(bool)


def _uncalibrated_bg(small: np.ndarray) -> np.ndarray:
    """Robust local-quadratic background of an uncalibrated frame (two passes; the second
    replaces pixels far from the first fit, such as scratches and spots, by the fit)."""
    bg = _smooth2(small, _SG_RADIUS)
    resid = small - bg
    noise = 1.4826 * float(np.median(np.abs(resid[::3, ::3]))) + 1e-6
    # a dark blob as wide as the fit's window (a grain of dust over a millimetre) drags the
    # first fit down with it, and the second keeps it as background: it left a hole in the
    # lit area ringed by "scratches". Against a median over ~3 mm it stands out, and there the
    # median is the first fit
    levels, top = _median_3mm(small)
    med = levels.astype(np.float32) * np.float32(top / 250.0)
    deep = cv2.dilate((small < np.float32(_DEEP_FRAC) * med).view(np.uint8), np.ones((3, 3), np.uint8)).view(bool)
    if deep.any():
        bg = np.where(deep, med, bg)
        resid = small - bg
    cleaned = np.where(np.abs(resid) > 2.5 * noise, bg, small)
    return _smooth2(cleaned, _SG_RADIUS)
