"""The lens region: where the clear lens is, its central zone and marginal band, and the
backlight visible beside the goggle.

The region is found on an image reduced by a power-of-two factor (area averaging), which is
exact for the low-frequency question "where is the lens" and keeps the work to a few
milliseconds at 5 MP. Full-resolution masks are produced on first use (nearest-neighbour
upsampling of the reduced masks), so a caller that only needs zones and contours pays nothing
for them.

Calibrated mode (a :class:`~goggleqc.calibration.station.Station` is given) classifies the
flat-corrected transmission ``(I − dark) / B = g·τ`` (station-model.md §2): ``τ ≈ 0`` on the
opaque frame, lens-like on the lens and ``≈ g ≈ 1`` on the backlight beside the goggle.
Uncalibrated mode works on the raw frame, whose backlight may be a defocused checker or grid
and uneven: a grey-level closing wider than the pattern's dark cells (the period is measured
from the image's spectrum) leaves the frame as the only large dark band, and a threshold
relative to the local bright envelope copes with uneven light. In both modes the lens is the
set of large bright regions that do not touch the image border (they are enclosed by the
frame), with holes (light traps, dust, strong defects) filled. When none does (a goggle
framed tighter than the field, its frame cut by the border), the lens is the bright regions
reaching the border that lie within the convex hull of the frame's pieces.

Zones follow EN 166 §7.1.3 (station-model.md §3): the marginal band is within
``marginal_mm`` of the lens edge and everything else is central; a defect is central if any of
its pixels is.
"""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass, field
from functools import cached_property
from typing import Sequence

import cv2
import numpy as np

from goggleqc.capture.imagefile import to_luminance
from goggleqc.inspect.grid import reduce_image
from goggleqc.errors import InputError

#: the reduced image's longest side is at most this (a power-of-two reduction)
REDUCED_MAX_SIDE_PX = 320
#: a bright region smaller than this fraction of the frame is not a lens
MIN_LENS_AREA_FRAC = 0.02
#: a second lens must be at least this fraction of the largest (two eye lenses are alike)
MIN_LENS_AREA_RATIO = 0.2
#: transmission (τ·g) dividing the opaque frame from the lens, relative to the bright level
FRAME_THRESHOLD_REL = 0.35
#: backlight pixels within this distance of the goggle are not used for drift (PSF, frame edge)
BACKGROUND_MARGIN_MM = 1.5
#: a frame is saturated when at least this fraction of it is at the full-scale value
SATURATED_FRAC = 0.5


# ---------------------------------------------------------------------------------------------
# reduction and per-station reduced maps
# ---------------------------------------------------------------------------------------------
def reduction_factor(shape: tuple[int, int], max_side_px: int = REDUCED_MAX_SIDE_PX) -> int:
    """Power-of-two factor that brings the longest side of ``shape`` to ≤ ``max_side_px``."""
    factor = 1
    while max(shape[:2]) / factor > max_side_px:
        factor *= 2
    return factor


@dataclass(frozen=True, eq=False)
class ReducedStation:
    """A station's calibration maps reduced by ``factor`` (block means).

    ``dark`` and ``flat`` are in DN; ``valid`` is the fraction of each block where the flat is
    bright enough to divide by (``inv_flat > 0``); ``scatter_ratio`` is the block mean of
    ``(B ⊛ K) / B`` over valid pixels (0 elsewhere), with ``K`` approximated by a wide
    Gaussian: the factor by which haze lifts each part of the backlight (station-model §2).
    """

    factor: int
    dark: np.ndarray
    flat: np.ndarray
    valid: np.ndarray
    scatter_ratio: np.ndarray


_REDUCED_CACHE: dict[tuple[int, int], tuple[weakref.ref, ReducedStation]] = {}

#: width of the wide-angle scatter kernel assumed when normalising pattern residuals (mm)
SCATTER_SIGMA_MM = 25.0


def reduced_station(station, factor: int) -> ReducedStation:
    """The station's maps reduced by ``factor``, computed once per station and factor.

    The station is a mutable dataclass (unhashable), so the cache is keyed by identity and
    holds a weak reference that proves the entry still belongs to the same object.
    """
    key = (id(station), factor)
    hit = _REDUCED_CACHE.get(key)
    if hit is not None and hit[0]() is station:
        return hit[1]
    valid_full = (station.inv_flat > 0).astype(np.float32)
    flat = reduce_image(station.flat.astype(np.float32, copy=False), factor)
    valid = reduce_image(valid_full, factor)
    ps = station.pixel_size_mm
    # K is much wider than a trap or pattern period, so a blur at the reduced scale is exact
    # enough; without a pixel scale assume K spans a fifth of the frame
    sigma_px = (SCATTER_SIGMA_MM / ps / factor) if ps else max(flat.shape) / 5
    flat_k = cv2.GaussianBlur(flat, (0, 0), sigma_px, borderType=cv2.BORDER_REFLECT)
    # (B ⊛ K)/B per full-resolution pixel, block-averaged: B ⊛ K is smooth, so it is taken from
    # the reduced flat and upsampled
    flat_k_full = cv2.resize(flat_k, (flat.shape[1] * factor, flat.shape[0] * factor), interpolation=cv2.INTER_LINEAR)
    h, w = flat_k_full.shape
    ratio = flat_k_full * station.inv_flat[:h, :w]
    scatter_ratio = reduce_image(ratio, factor)
    entry = ReducedStation(factor, reduce_image(station.dark.astype(np.float32, copy=False), factor), flat, valid,
                           scatter_ratio)
    _REDUCED_CACHE[key] = (weakref.ref(station, lambda _r, k=key: _REDUCED_CACHE.pop(k, None)), entry)
    return entry


def upsample_mask(mask_small: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour upsampling of a reduced bool mask to ``shape`` (M, N), as bool."""
    m = mask_small.astype(np.uint8, copy=False)
    if factor > 1:
        m = cv2.resize(m, (m.shape[1] * factor, m.shape[0] * factor), interpolation=cv2.INTER_NEAREST)
    dy, dx = shape[0] - m.shape[0], shape[1] - m.shape[1]
    if dy or dx:
        m = cv2.copyMakeBorder(m, 0, dy, 0, dx, cv2.BORDER_REPLICATE)
    return m.view(bool)


class ReducedMask:
    """A full-resolution (M, N) mask read through its reduced copy (one cell per
    ``factor × factor`` pixels), as :class:`LensRegion` keeps them: what
    :func:`upsample_mask` would give, pixel for pixel, without building the full-size array
    (haze only samples its masks)."""

    def __init__(self, small: np.ndarray, factor: int, shape: tuple[int, int]):
        self.small, self.factor, self.shape = small, int(factor), tuple(shape)

    def take(self, flat_idx: np.ndarray) -> np.ndarray:
        ys, xs = np.divmod(flat_idx, self.shape[1])
        return self.grid_at(ys, xs)

    def grid_at(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        h, w = self.small.shape
        return self.small[np.minimum(ys // self.factor, h - 1), np.minimum(xs // self.factor, w - 1)].astype(bool)

    def strided(self, step_y: int, step_x: int, rows: int, cols: int) -> np.ndarray:
        ys = np.arange(rows) * step_y
        xs = np.arange(cols) * step_x
        return self.grid_at(ys[:, None], xs[None, :])


# ---------------------------------------------------------------------------------------------
# the region
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class LensRegion:
    """Where the lens is, and its zones.

    Masks are (M, N) bool at full resolution, built on first access from the reduced masks
    (``*_small``, one pixel per ``factor × factor`` block).

    Attributes
    ----------
    shape : (int, int)
        Full-resolution image shape (M, N).
    factor : int
        Reduction factor of the ``*_small`` masks.
    pixel_size_mm : float or None
        Millimetres per pixel; None when zones cannot be measured.
    marginal_mm : float
        Width of the marginal band (EN 166: 5 mm).
    contours_px : list of (K, 2) int ndarray
        Simplified lens outlines, (x, y) full-resolution pixels, for overlays.
    central_contours_px : list of (K, 2) int ndarray
        Outlines of the central zone.
    calibrated : bool
        True when found from a calibrated station's transmission.
    """

    shape: tuple[int, int]
    factor: int
    lens_small: np.ndarray
    central_small: np.ndarray
    goggle_small: np.ndarray
    background_small: np.ndarray
    pixel_size_mm: float | None
    marginal_mm: float
    contours_px: list = field(default_factory=list)
    central_contours_px: list = field(default_factory=list)
    calibrated: bool = True

    # -- full-resolution masks ----------------------------------------------------------------
    def reduced(self, name: str) -> ReducedMask:
        """The mask ``name`` (``lens``, ``central`` …) read through its reduced copy."""
        return ReducedMask(getattr(self, f"{name}_small"), self.factor, self.shape)

    @cached_property
    def lens(self) -> np.ndarray:
        """(M, N) bool: the clear lens (holes such as light traps included)."""
        return upsample_mask(self.lens_small, self.factor, self.shape)

    @cached_property
    def central(self) -> np.ndarray:
        """(M, N) bool: lens pixels more than ``marginal_mm`` from the lens edge."""
        return upsample_mask(self.central_small, self.factor, self.shape)

    @cached_property
    def marginal(self) -> np.ndarray:
        """(M, N) bool: lens pixels within ``marginal_mm`` of the lens edge."""
        return upsample_mask(self.lens_small & ~self.central_small, self.factor, self.shape)

    @cached_property
    def goggle(self) -> np.ndarray:
        """(M, N) bool: lens plus opaque frame."""
        return upsample_mask(self.goggle_small, self.factor, self.shape)

    @cached_property
    def background(self) -> np.ndarray:
        """(M, N) bool: backlight seen beside the goggle, away from its edge (may be empty)."""
        return upsample_mask(self.background_small, self.factor, self.shape)

    # -- measures -----------------------------------------------------------------------------
    @property
    def zones_known(self) -> bool:
        """True when the central zone could be measured (a pixel scale is known)."""
        return self.pixel_size_mm is not None

    @property
    def lens_area_px(self) -> float:
        """Lens area in full-resolution pixels."""
        return float(np.count_nonzero(self.lens_small)) * self.factor ** 2

    @property
    def lens_area_mm2(self) -> float | None:
        return None if self.pixel_size_mm is None else self.lens_area_px * self.pixel_size_mm ** 2

    def to_small(self, x_px, y_px) -> tuple[np.ndarray, np.ndarray]:
        """Map full-resolution pixel coordinates to (column, row) indices of the reduced masks."""
        hs, ws = self.lens_small.shape
        xs = np.clip(np.asarray(x_px, np.int64) // self.factor, 0, ws - 1)
        ys = np.clip(np.asarray(y_px, np.int64) // self.factor, 0, hs - 1)
        return xs, ys

    def zone_of(self, pixels, origin: tuple[int, int] | None = None) -> str:
        """The zone of an object: ``central`` if any of its pixels is central, else ``marginal``.

        Parameters
        ----------
        pixels : (M, N) bool ndarray, (m, n) bool ndarray with ``origin``, (K, 2) int ndarray, or bbox
            The object's pixels: a full-frame mask, a mask patch whose top-left pixel is
            ``origin = (x0, y0)``, (x, y) pixel coordinates, or a bbox ``[x0, y0, x1, y1)``
            (any pixel of the box counts, which is conservative).

        Returns
        -------
        str
            ``central``, ``marginal``, or ``unknown`` when no pixel scale is known.
        """
        if not self.zones_known:
            return "unknown"
        arr = np.asarray(pixels)
        if arr.dtype == bool:
            ys, xs = np.nonzero(arr)
            if origin is not None:
                xs, ys = xs + origin[0], ys + origin[1]
            elif arr.shape != tuple(self.shape):
                raise ValueError(f"a mask of shape {arr.shape} needs an origin; the frame is {self.shape}")
        elif arr.ndim == 1 and arr.size == 4:
            x0, y0, x1, y1 = (int(v) for v in arr)
            (cx0, cx1), (cy0, cy1) = self.to_small([x0, max(x0, x1 - 1)], [y0, max(y0, y1 - 1)])
            return "central" if self.central_small[cy0:cy1 + 1, cx0:cx1 + 1].any() else "marginal"
        elif arr.ndim == 2 and arr.shape[1] == 2:
            xs, ys = arr[:, 0], arr[:, 1]
        else:
            raise ValueError(f"zone_of takes a bool mask, (K, 2) pixel coordinates or a bbox, not shape {arr.shape}")
        if len(xs) == 0:
            return "marginal"
        cx, cy = self.to_small(xs, ys)
        return "central" if self.central_small[cy, cx].any() else "marginal"


def whole_frame_region(shape: tuple[int, int], marginal_mm: float = 5.0) -> LensRegion:
    """The region of an uncalibrated image in which no goggle frame encloses a lens.

    A close-up photograph taken through a lens shows lens everywhere: the whole frame is
    inspected. With no lens edge in view the marginal band cannot be placed, so zones are
    ``unknown`` and zone-specific limits are reported as unchecked.
    """
    factor = reduction_factor(shape)
    hs, ws = max(1, shape[0] // factor), max(1, shape[1] // factor)
    ones = np.ones((hs, ws), bool)
    h, w = shape[:2]
    outline = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.int32)
    return LensRegion(shape=tuple(shape[:2]), factor=factor, lens_small=ones, central_small=ones.copy(),
                      goggle_small=ones.copy(), background_small=np.zeros_like(ones), pixel_size_mm=None,
                      marginal_mm=marginal_mm, contours_px=[outline], central_contours_px=[], calibrated=False)


#: a dark region reaching in from the image border, in a photograph through a lens, is a piece
#: of the goggle's frame (or the world beside the goggle) when it covers at least this fraction
#: of the frame; a coarse target's dark cells left by the widest closing cover under 2.5 %
FRAME_PIECE_FRAC = 0.03


def through_lens_region(image: np.ndarray, marginal_mm: float = 5.0) -> LensRegion:
    """The region of an uncalibrated photograph through a lens: the whole frame, less any
    goggle frame reaching into view from the image border.

    A photograph taken through a lens often shows a strip of the goggle's frame along a side.
    With no lens enclosed by a frame, that strip would be inspected as lens, and its edge
    read as a long scratch and a row of spots. After the widest grey-level closing the
    uncalibrated finder tries (which fills a target's dark cells), dark regions that reach the
    border and cover at least :data:`FRAME_PIECE_FRAC` of the frame are left out. Zones stay
    ``unknown``: one visible piece of edge does not place the marginal band all round.
    """
    region = whole_frame_region(image.shape, marginal_mm)
    lum = to_luminance(image) if image.ndim == 3 else image
    small = reduce_image(lum, region.factor)
    hs, ws = small.shape
    big = _widest_closing(small)
    dark = (~_closed_bright(small, big, big, float(np.percentile(small, 1)), dark_outside=True)).view(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    x, y, w, h, area = (stats[:, i] for i in range(5))
    piece = (area >= FRAME_PIECE_FRAC * hs * ws) & ((x == 0) | (y == 0) | (x + w >= ws) | (y + h >= hs))
    piece[0] = False
    if not piece.any():
        return region
    frame = _grow_frame(small, piece[labels], big)
    lens = ~frame
    if np.count_nonzero(lens) < 0.3 * lens.size:
        return region  # mostly dark: not a photograph through a lens with a strip of frame
    return dataclasses.replace(region, lens_small=lens, central_small=lens.copy(), goggle_small=np.ones_like(lens),
                               contours_px=_outline_px(_fill_external(lens)[1], region.factor))


#: the goggle frame found by the closing is grown through connected pixels darker than this
#: fraction of the way from the frame's level to the lens' (see :func:`_grow_frame`)
FRAME_GROW_FRAC = 0.15


def _grow_frame(small: np.ndarray, frame: np.ndarray, reach: int) -> np.ndarray:
    """The frame pieces found by the closing, grown through the connected (4-neighbour) pixels
    nearly as dark as the frame itself, within ``reach`` px of the picture's border.

    The closing fills every dark feature narrower than its square (side ``reach``), and it
    must be wider than the target's dark cells: where the frame's strip runs thinner than
    that (a curved strip along the top of the picture) it is filled and read as lens, and its
    edge becomes a row of scratches. Those parts are as dark as the rest of the frame, joined
    to it, and, being thinner than the square and reaching in from the border, within
    ``reach`` of it. A target's dark lines, defocused behind the lens, stay brighter; and
    should a sharp grid's lines be as dark, only their stretch near the border is taken.
    """
    level = float(np.median(small[frame]))
    bright = float(np.percentile(small[~frame], 90))
    dark = (small <= level + FRAME_GROW_FRAC * (bright - level)).view(np.uint8)
    _, labels = cv2.connectedComponents(dark, connectivity=4)
    touched = np.unique(labels[frame & dark.view(bool)])
    touched = touched[touched > 0]
    near = np.zeros(frame.shape, bool)
    near[:reach], near[-reach:], near[:, :reach], near[:, -reach:] = True, True, True, True
    # and within half the square of the frame found: where its edge curves round the lens, the
    # closing filled the dark side of the curve too (a 5 MP photograph at 0.03 mm/px: the
    # lens reached 20 px into a grey frame and its edge read as a scratch of 72 %)
    side = 2 * (reach // 2) + 1
    near |= cv2.dilate(frame.view(np.uint8), np.ones((side, side), np.uint8)).view(bool)
    return frame | (np.isin(labels, touched) & near)


# ---------------------------------------------------------------------------------------------
# finding it
# ---------------------------------------------------------------------------------------------
def _full_scale(image: np.ndarray) -> float:
    """The file's full-scale value: 255 for 8 bit; for 16 bit the smallest ``2^k − 1`` (k ≥ 8)
    at or above the brightest pixel, since 10–14-bit data sit LSB-aligned in 16-bit files."""
    if image.dtype == np.uint8:
        return 255.0
    top = int(image.max()) if image.size else 0
    k = max(8, top.bit_length())
    return float((1 << k) - 1)


def _check_exposure(small_raw: np.ndarray, full_scale: float) -> None:
    """Refuse a saturated frame (most of it at full scale)."""
    if np.count_nonzero(small_raw >= full_scale - 0.5) >= SATURATED_FRAC * small_raw.size:
        raise InputError(f"the frame is saturated: over {SATURATED_FRAC:.0%} of it is at full scale "
                         f"({full_scale:.0f} DN); shorten the exposure or dim the backlight")


def _bright_uncalibrated(small: np.ndarray) -> np.ndarray:
    """Bright (lens or backlight) pixels of a raw reduced frame with no calibration.

    A grey-level closing with a square of side ``k`` fills every dark feature narrower than
    ``k`` (the dark cells of a checker, grid or stripe backlight, dust) and keeps wider ones
    exactly (the frame). The pattern's scale is not known, so closings of growing ``k`` are
    tried: while ``k`` is below the dark-cell size the lens is broken into small pieces,
    between the cell size and the frame width it is one solid region enclosed by the frame,
    and above the frame width it merges with the backlight around the goggle. The ``k``
    giving the largest total of enclosed lens area that the next ``k`` keeps is kept; when
    none is kept (a photograph through a lens, no frame in view) no pixel is lens.
    """
    low = float(np.percentile(small, 1))
    big = _widest_closing(small)
    tried: list[tuple[np.ndarray, int]] = []
    k = 3
    while k <= min(small.shape) // 6:
        bright = _closed_bright(small, k, big, low)
        area = int(_enclosed_areas(bright).sum())
        tried.append((bright, area))
        if area == 0 and any(a for _, a in tried):
            break  # the frame has closed: larger kernels only merge the lens with the backlight
        k = int(round(k * 1.5)) | 1
    # A lens enclosed by a goggle frame stays the same region while the closing grows from the
    # pattern's cells to the frame's width. Through a close-up with no frame in view, cells
    # merged by one closing are enclosed by chance and gone at the next: only an enclosed area
    # that the next closing keeps (within 20 %) is a lens.
    kept = [(bright, area) for (bright, area), (_, after) in zip(tried, tried[1:])
            if area > 0 and 0.8 * area <= after <= 1.25 * area]
    if not kept:
        return np.zeros(small.shape, bool)
    return max(kept, key=lambda t: t[1])[0]


def _widest_closing(small: np.ndarray) -> int:
    """The widest closing the uncalibrated finder tries, a sixth of the frame (odd, ≥ 3)."""
    return max(3, min(small.shape) // 6) | 1


def _closed_bright(small: np.ndarray, k: int, big: int, low: float, dark_outside: bool = False) -> np.ndarray:
    """Bright pixels after a grey-level closing of side ``k``, against the local bright level
    (the closing's dilation and mean over ``big``), so uneven light does not move the
    frame/lens threshold; ``low`` is the frame's dark level.

    With ``dark_outside`` the closing sees the picture continued by ``low`` beyond its border,
    so a dark strip along the border is kept however thin it runs, while a dark feature
    narrower than ``k`` along the border (a target's cell or line cut by it) is still filled.
    """
    square = cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))
    if dark_outside:
        padded = cv2.copyMakeBorder(small, k, k, k, k, cv2.BORDER_CONSTANT, value=float(low))
        closed = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, square)[k:-k, k:-k]
    else:
        closed = cv2.morphologyEx(small, cv2.MORPH_CLOSE, square)
    env = cv2.blur(cv2.dilate(closed, cv2.getStructuringElement(cv2.MORPH_RECT, (big, big))), (big, big))
    return closed > low + FRAME_THRESHOLD_REL * (env - low)


def _enclosed_areas(bright: np.ndarray) -> np.ndarray:
    """Areas (px) of the bright components large enough to be a lens that do not touch the border."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(bright.astype(np.uint8), connectivity=4)
    hs, ws = bright.shape
    x, y, w, h, area = (stats[1:, i] for i in range(5))
    enclosed = (x > 0) & (y > 0) & (x + w < ws) & (y + h < hs) & (area >= MIN_LENS_AREA_FRAC * hs * ws)
    return area[enclosed]


def _bright_calibrated(small_raw: np.ndarray, red: ReducedStation) -> tuple[np.ndarray, np.ndarray]:
    """Bright (lens or backlight) and known (divisible) pixels of the reduced transmission."""
    known = red.valid > 0.5
    tau = (small_raw - red.dark) / np.maximum(red.flat, 1e-6)
    tau[~known] = 0.0
    if not known.any():
        raise InputError("the station's flat is dark everywhere; recalibrate this station")
    level = _known_percentile(tau, known, 99.0)
    if level < 0.1:
        raise InputError(f"the frame is blank: its brightest part transmits {100 * level:.1f} % of the flat; "
                         "is the backlight on and the lens cap off?")
    return tau > FRAME_THRESHOLD_REL * min(level, 1.2), known


def _percentile(values: np.ndarray, q: float, offset: int = 0, total: int | None = None) -> float:
    """``np.percentile(values, q)`` (linear method) of a 1-D float array, from one partition.

    The same order statistics and the same interpolation arithmetic as NumPy, so the same
    value to the last bit, at a third of the cost (no NaN check, no copy of the result).
    ``values`` may be the top of a larger set of ``total`` values of which ``offset`` lie
    below all of them.
    """
    n = values.size if total is None else total
    virtual = (n - 1) * (q / 100.0)
    lo = int(np.floor(virtual))
    hi = min(lo + 1, n - 1)
    k_lo, k_hi = lo - offset, hi - offset
    part = np.partition(values, [k_lo, k_hi]) if k_hi != k_lo else np.partition(values, k_lo)
    a, b = part[k_lo], part[k_hi]
    t = float(virtual - lo)
    d = b - a
    return float(b - d * (1 - t)) if t >= 0.5 else float(a + d * t)


def _percentiles(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """``np.percentile(values, list(qs))`` of a 1-D float array, from one partition.

    Given a list of ``q``, NumPy takes the two order statistics' difference in the values' type
    and interpolates in float64 (one ``q`` alone: all in the values' type, as
    :func:`_percentile` does), so this does too: the same values to the last bit."""
    n = values.size
    virtual = [(n - 1) * (q / 100.0) for q in qs]
    los = [int(np.floor(v)) for v in virtual]
    his = [min(lo + 1, n - 1) for lo in los]
    part = np.partition(values, sorted(set(los + his)))
    out = []
    for v, lo, hi in zip(virtual, los, his):
        a, b = part[lo], part[hi]
        t = float(v - lo)
        d = float(b - a)
        out.append(float(b) - d * (1 - t) if t >= 0.5 else float(a) + d * t)
    return out


def np_median(values: np.ndarray) -> float:
    """``np.median`` of a 1-D array of finite values, from one partition without NumPy's
    overhead (the same middle values and the same mean of the two, so the same result).
    NaN for an empty array."""
    n = values.size
    if n == 0:
        return float("nan")
    k = n // 2
    if n % 2:
        return float(np.partition(values, k)[k])
    part = np.partition(values, [k - 1, k])
    return float((part[k - 1] + part[k]) / 2)


def _known_percentile(values: np.ndarray, known: np.ndarray, q: float) -> float:
    """``np.percentile(values[known], q)`` for a high ``q``, where ``values`` is 0 outside ``known``.

    The order statistics sought lie among the values at or above a bound read from a sparse
    sample; when at most ``lo`` known values fall below it, only those above it are
    partitioned, else all of them (the same value either way, to the last bit).
    """
    n = int(np.count_nonzero(known))
    virtual = (n - 1) * (q / 100.0)
    lo = int(np.floor(virtual))
    step = max(1, int(np.sqrt(values.size / 4096)))
    sample = values[::step, ::step][known[::step, ::step]]
    if sample.size >= 100:
        # four times as far from the top as the sought rank: safely below it, yet only a few
        # per cent of the values remain to partition
        k = int(max(0.0, 1.0 - 4.0 * (1.0 - q / 100.0)) * (sample.size - 1))
        bound = float(np.partition(sample, k)[k])
        if bound > 0:
            top = values[values >= bound]  # unknown values are 0, below the bound
            below = n - top.size
            if below <= lo:
                return _percentile(top, q, offset=below, total=n)
    return _percentile(values[known], q)


#: without a station, a frame whose 1st–99th percentile spread is below this fraction of its
#: bright level shows nothing (a grey card, a backlight off in a lit room). A photograph of a
#: far-defocused, faint target through a lens spans about 0.25.
BLANK_SPREAD = 0.12


def _check_blank_raw(small: np.ndarray, full_scale: float) -> None:
    lo, hi = (float(v) for v in np.percentile(small, (1, 99)))
    if hi < 0.04 * full_scale or hi - lo < BLANK_SPREAD * hi:
        raise InputError(f"the frame is blank: it spans only {lo:.0f}–{hi:.0f} DN of {full_scale:.0f}; "
                         "is the backlight on and the lens cap off?")


def _fill_external(mask: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Fill the holes of every component of ``mask``; return the filled mask and its outlines."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros(mask.shape, np.uint8)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.view(bool), list(contours)


def _outline_px(contours: Sequence[np.ndarray], factor: int) -> list[np.ndarray]:
    """Simplified outlines in full-resolution (x, y) pixel coordinates (reduced pixel centres)."""
    out = []
    for c in contours:
        c = cv2.approxPolyDP(c, 1.0, True).reshape(-1, 2).astype(np.float64)
        out.append(np.round(c * factor + (factor - 1) / 2).astype(np.int32))
    return out


def find_lens(image: np.ndarray, station=None, *, marginal_mm: float = 5.0,
              pixel_size_mm: float | None = None) -> LensRegion:
    """Find the clear lens, its central and marginal zones, the goggle and the backlight beside it.

    Parameters
    ----------
    image : (M, N) uint8 or uint16 ndarray
        The raw frame (dark not subtracted); a (M, N, 3) colour frame is turned into luminance.
    station : Station, optional
        A calibrated station; without one the region is found from the raw frame alone.
    marginal_mm : float
        Width of the marginal band, EN 166 §7.1.3 (station-model.md §3).
    pixel_size_mm : float, optional
        Millimetres per pixel; defaults to the station's. When neither is known the zones
        cannot be measured: the central zone is the whole lens, the marginal band is empty and
        :meth:`LensRegion.zone_of` returns ``unknown``.

    Returns
    -------
    LensRegion

    Raises
    ------
    InputError
        For a blank or saturated frame, a frame that does not match the station, or when no
        lens is found (``no lens found: ...``), e.g. an empty fixture.
    """
    if image.ndim == 3:
        image = to_luminance(image)
    if image.ndim != 2 or image.dtype not in (np.uint8, np.uint16):
        raise InputError(f"a lens image must be an 8- or 16-bit monochrome frame, not {image.dtype} of shape {image.shape}")
    if min(image.shape) < 32:
        raise InputError(f"a {image.shape[1]}×{image.shape[0]} frame is too small to hold a lens")
    if station is not None:
        station.check_image(image)
        if pixel_size_mm is None:
            pixel_size_mm = station.pixel_size_mm
    factor = reduction_factor(image.shape)
    small_raw = reduce_image(image, factor)
    full_scale = _full_scale(image)
    _check_exposure(small_raw, full_scale)
    if station is not None:
        bright, known = _bright_calibrated(small_raw, reduced_station(station, factor))
    else:
        _check_blank_raw(small_raw, full_scale)
        bright, known = _bright_uncalibrated(small_raw), np.ones(small_raw.shape, bool)

    # labels without OpenCV's statistics (which cost three times the labelling): a region
    # touches the border when its label appears there, and only the few enclosed regions
    # need an area
    n, labels = cv2.connectedComponents(bright.view(np.uint8), connectivity=4)
    hs, ws = bright.shape
    touches = np.zeros(n, bool)
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        touches[edge] = True
    touches[0] = True  # label 0 is the dark part
    enclosed = np.flatnonzero(~touches)
    area = _label_areas(labels, n, enclosed)
    candidates = enclosed[area[enclosed] >= MIN_LENS_AREA_FRAC * hs * ws]
    if len(candidates) == 0:
        # a goggle framed tightly (a visor wider than the field): the frame and the image border
        # enclose the lens together
        candidates, area = _cut_by_border(labels, n, bright, known, touches)
        touches[candidates] = False
    if len(candidates) == 0:
        raise InputError("no lens found: no bright region enclosed by a goggle frame; "
                         "is the fixture empty or the goggle out of the field of view?")
    candidates = candidates[area[candidates] >= MIN_LENS_AREA_RATIO * area[candidates].max()]
    is_lens = np.zeros(n, bool)
    is_lens[candidates] = True
    lens_small, contours = _fill_external(_select(labels, is_lens))

    # backlight beside the goggle: bright regions connected to the border
    is_bg = touches.copy()
    is_bg[0] = False
    bg_raw = _select(labels, is_bg) & known
    # one pixel of each lens region (its first in raster order) to flood the goggle from
    flat_labels = labels.ravel()
    seeds = [divmod(int(np.argmax(flat_labels == c)), ws)[::-1] for c in candidates]
    goggle_small, _ = _fill_external(_component_containing(~bg_raw, lens_small, seeds))
    margin_px = int(np.ceil(BACKGROUND_MARGIN_MM / pixel_size_mm / factor)) if pixel_size_mm else 3
    background_small = cv2.erode(bg_raw.astype(np.uint8),
                                 cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin_px + 1,) * 2)).view(bool)

    if pixel_size_mm is not None:
        # the lens' bounding box grown by one pixel has an outside ring wherever it is inside
        # the image, so the distances inside it are those of the whole frame: only that box is
        # transformed. (Where a tightly framed lens reaches the image border, its edge lies
        # beyond it: the border is no edge, and distances run to the frame.)
        bx, by, bw, bh = cv2.boundingRect(lens_small.view(np.uint8))
        box = (slice(max(by - 1, 0), by + bh + 1), slice(max(bx - 1, 0), bx + bw + 1))
        inside = cv2.distanceTransform(lens_small[box].view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        # distance of a reduced pixel centre to the lens edge is (d − ½) reduced pixels; a
        # full-resolution pixel's distance to the nearest outside pixel centre is that + ½ px
        inside_mm = ((inside - 0.5) * factor + 0.5) * pixel_size_mm
        central_small = np.zeros_like(lens_small)
        central_small[box] = lens_small[box] & (inside_mm >= marginal_mm)
        central_contours = _fill_external(central_small)[1]
    else:
        central_small = lens_small.copy()
        central_contours = contours
    return LensRegion(shape=tuple(image.shape), factor=factor, lens_small=lens_small, central_small=central_small,
                      goggle_small=goggle_small, background_small=background_small, pixel_size_mm=pixel_size_mm,
                      marginal_mm=marginal_mm, contours_px=_outline_px(contours, factor),
                      central_contours_px=_outline_px(central_contours, factor), calibrated=station is not None)


#: a bright region reaching the image border is a tightly framed lens when at least this
#: fraction of it lies within the convex hull of the goggle's frame
CUT_LENS_IN_HULL = 0.9
#: dark regions at least this fraction of the frame are pieces of the goggle's frame
CUT_FRAME_PIECE_FRAC = 0.005


def _cut_by_border(labels: np.ndarray, n: int, bright: np.ndarray, known: np.ndarray,
                   touches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lens regions the image border cuts: bright regions reaching the border that lie (by at
    least :data:`CUT_LENS_IN_HULL`) within the convex hull of the goggle's frame; and the label
    areas. The frame is every large dark region (the border may cut it in pieces); the
    backlight beside the goggle lies outside its hull."""
    hs, ws = bright.shape
    area = np.zeros(n, np.int64)
    nd, dark_labels, stats, _ = cv2.connectedComponentsWithStats((~bright & known).view(np.uint8), connectivity=8)
    large = np.flatnonzero(stats[:, cv2.CC_STAT_AREA] >= CUT_FRAME_PIECE_FRAC * hs * ws)
    large = large[large != 0]
    if len(large) == 0 or stats[large, cv2.CC_STAT_AREA].sum() < MIN_LENS_AREA_FRAC * hs * ws:
        return np.zeros(0, np.int64), area
    lut = np.zeros(nd, bool)
    lut[large] = True
    ys, xs = np.nonzero(lut[dark_labels])
    hull = np.zeros((hs, ws), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.column_stack([xs, ys]).astype(np.int32)), 1)
    border = np.flatnonzero(touches)
    border = border[border != 0]
    area = np.bincount(labels.ravel(), minlength=n)
    inside = np.bincount(labels.ravel(), weights=hull.ravel().astype(np.float64), minlength=n)
    keep = (area[border] >= MIN_LENS_AREA_FRAC * hs * ws) & (inside[border] >= CUT_LENS_IN_HULL * area[border])
    return border[keep], area


#: label lookups with at most this many labels selected (or left out) use comparisons
_FEW_LABELS = 8


def _select(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """``lut[labels]`` (bool); by a few comparisons when few labels are selected or left out,
    which is several times faster than a gather over the whole image."""
    chosen = np.flatnonzero(lut)
    if len(chosen) <= _FEW_LABELS:
        out = np.zeros(labels.shape, bool)
        for c in chosen:
            out |= labels == c
        return out
    dropped = np.flatnonzero(~lut)
    if len(dropped) <= _FEW_LABELS:
        out = np.ones(labels.shape, bool)
        for c in dropped:
            out &= labels != c
        return out
    return np.take(lut, labels)


def _label_areas(labels: np.ndarray, n: int, wanted: np.ndarray) -> np.ndarray:
    """Pixel counts of the ``wanted`` labels (0 for the others), counted one by one when they are few."""
    if len(wanted) > _FEW_LABELS:
        return np.bincount(labels.ravel(), minlength=n)
    area = np.zeros(n, np.int64)
    for c in wanted:
        area[c] = np.count_nonzero(labels == c)
    return area


def _component_containing(mask: np.ndarray, seed: np.ndarray, points=None) -> np.ndarray:
    """The connected components (4-connected) of ``mask`` that overlap ``seed``, and ``seed``.

    ``points``: (x, y) pixels of ``seed & mask``, one in each of its 4-connected pieces, when
    the caller knows them; the components are then flood-filled from them instead of
    labelling the whole mask.
    """
    if points is not None:
        fill = mask.astype(np.uint8)
        for px, py in points:
            if fill[py, px] == 1:
                cv2.floodFill(fill, None, (px, py), 2, 0, 0, 4)
        return (fill == 2) | seed
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
    keep = np.zeros(n, bool)
    keep[labels[seed & mask]] = True
    keep[0] = False
    return keep[labels] | seed
