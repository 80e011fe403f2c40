"""The fog test (station-model.md §5): anti-fog performance and coating voids from a sequence.

A lens is filmed against a trap or pattern backlight while it is held over warm water (EN 168).
Fog is scatter: it adds haze, so the backlight's structure (pattern cells, trap edges) loses
contrast by ``(1 − h_fog)`` and, with back-scatter, τ drops a little (station-model.md §2).

Measurement, per frame, on an image reduced by block averaging:

1. ``bp``: the backlight structure, a high-pass of the dark-subtracted frame taken *inside the
   lens only* (normalised convolution), so the lens edge and the smooth veil of scattered light
   ``h·(B ⊛ K)`` do not count as structure.
2. The clear template ``bp0`` is the mean ``bp`` of the clear reference frames. The regular
   transmittance relative to clear is the least-squares amplitude of ``bp`` on ``bp0``
   (a matched filter, unbiased by noise since frames' noise is independent):
   ``a = Σ w·bp·bp0 / Σ w·bp0²``, divided by the exposure drift ``g`` measured on the
   backlight beside the goggle. Over the central zone this gives the contrast curve; with a
   small Gaussian ``w`` it gives a local map.
3. Haze at the traps: trap fill relative to the surround, as in station-model.md §2:
   ``h ≈ (r − r_flat) / (1 − r_flat)``, ``r`` = trap core / ring.

The fog-free time is the first sustained crossing of the contrast curve below ``threshold``
(80 % of clear), linearly interpolated between frames, counted from the exposure start.
Voids are the regions fogged (local contrast below ``threshold`` of the lens-wide level)
while the lens as a whole was still clear.

Where the backlight has no structure (a uniform panel away from its traps) fog is invisible
(station-model.md §2), so the local map and the void search only cover pixels where the clear
template rises well above the noise; on trap backlights that is the traps' surroundings.

The automatic exposure start is the first sustained contrast drop in any coarse cell. It can
only see an exposure that fogs something right away (a void, an uncoated edge or reference
patch); a coating that holds until it fails everywhere at once gives no earlier sign, so then
pass the start explicitly.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from goggleqc.errors import InputError

#: EN 168 §16: an "N" (anti-fog) lens stays fog-free for at least this long (s)
N_MIN_FOG_FREE_S = 8.0
#: high-pass scale separating backlight structure from the smooth scattered veil (mm)
HIGHPASS_SIGMA_MM = 3.0
#: local-map smoothing (mm): resolves a 10 mm² void (3.6 mm across)
LOCAL_SIGMA_MM = 0.5
#: a local ratio is used only where its noise (rms) is below this
LOCAL_MAX_NOISE = 0.04
#: a void's mean contrast drop must exceed this many noise standard deviations
VOID_MIN_Z = 8.0
#: coarse cells for the automatic exposure start (mm)
CELL_MM = 6.0
#: local ratios are stored as uint8, ratio × this (so 1.0 → 200, resolution 0.005)
_Q = 200.0


@dataclass(frozen=True)
class FogFrame:
    """One frame's measurements.

    ``contrast`` is the central-zone regular-transmittance ratio to clear (1 = clear);
    ``gain`` the exposure drift relative to the clear reference; ``haze_traps_pct`` the worst
    trap's haze in % (None without traps); ``fogged_frac`` the fraction of the measurable lens
    whose local contrast is below the threshold.
    """

    t_s: float
    contrast: float
    gain: float
    fogged_frac: float
    haze_traps_pct: float | None = None


@dataclass(frozen=True)
class FogVoidResult:
    """A region that fogged while the rest of the lens stayed clear.

    ``onset_s`` is seconds from the exposure start until the region's contrast fell below the
    threshold; ``contrast`` its contrast ratio when the rest was still clear; ``bbox_px`` full
    resolution ``[x0, y0, x1, y1]`` with exclusive ends.
    """

    area_px: float
    area_mm2: float | None
    onset_s: float | None
    zone: str
    bbox_px: list[int]
    contrast: float


@dataclass(frozen=True)
class FogTestResult:
    """The fog test's outcome (the fields of ``fogtest.json``).

    ``fog_free_s`` is None when the lens never fogged in the sequence; then
    ``fog_free_at_least_s`` is how long it was watched after the exposure start. ``n_verdict``
    is ``pass`` (fog-free ≥ 8 s, EN 168 §16), ``fail``, or ``inconclusive`` when the lens never
    fogged but was watched for less than 8 s.
    """

    fog_free_s: float | None
    fog_free_at_least_s: float | None
    n_verdict: str
    threshold: float
    exposure_start_s: float
    start_mode: str
    clear_frames: int
    clear_contrast_vs_flat: float | None
    frames: list[FogFrame]
    voids: list[FogVoidResult]
    pixel_size_mm: float | None
    reduction: int
    messages: list[str] = field(default_factory=list)
    #: (m, n) float32 reduced clear frame, for the void map picture
    clear_small: np.ndarray | None = field(default=None, repr=False, compare=False)
    #: (m, n) int32 reduced label image of the voids (0 = none, i + 1 = voids[i])
    void_labels: np.ndarray | None = field(default=None, repr=False, compare=False)
    #: (m, n) bool reduced lens mask and pixels where fog is measurable
    lens_small: np.ndarray | None = field(default=None, repr=False, compare=False)
    measurable_small: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        skip = {"clear_small", "void_labels", "lens_small", "measurable_small"}
        out = {k: v for k, v in asdict(self).items() if k not in skip}
        return out


# ---------------------------------------------------------------------------------------------
# pure building blocks
# ---------------------------------------------------------------------------------------------
def fog_reduction_factor(shape: tuple[int, int], pixel_size_mm: float | None = None,
                         period_px: float | None = None) -> int:
    """Integer block size for the fog analysis: ~256 px on the short side, reduced pixels no
    coarser than 0.4 mm (voids of 10 mm² stay resolved) and ≥ 4 per pattern period."""
    factor = max(1, min(shape[:2]) // 256)
    if pixel_size_mm:
        factor = min(factor, max(1, int(0.4 / pixel_size_mm)))
    if period_px:
        factor = min(factor, max(1, int(period_px / 4)))
    return factor


def reduce_frame(image: np.ndarray, factor: int, dark_small: np.ndarray | None = None) -> np.ndarray:
    """Block-mean of a frame, dark subtracted, float32.

    Parameters
    ----------
    image : (M, N) uint8 or uint16 ndarray
    factor : int
    dark_small : (M // factor, N // factor) float32 ndarray, optional

    Returns
    -------
    (M // factor, N // factor) float32 ndarray, DN above dark.
    """
    h, w = image.shape[:2]
    hs, ws = h // factor, w // factor
    src = image[: hs * factor, : ws * factor].astype(np.float32)
    small = src if factor == 1 else cv2.resize(src, (ws, hs), interpolation=cv2.INTER_AREA)
    if dark_small is not None:
        small -= dark_small
    return small


def masked_highpass(small: np.ndarray, mask: np.ndarray, sigma_px: float, norm: np.ndarray | None = None) -> np.ndarray:
    """``(I − G_σ(I·M) / G_σ(M)) · M``: structure finer than ``σ`` inside ``mask`` only.

    Normalised convolution keeps the bright backlight outside and the dark frame from leaking
    into the lens' local mean, so the lens edge is no structure.
    """
    m = mask.astype(np.float32)
    if norm is None:
        norm = cv2.GaussianBlur(m, (0, 0), sigma_px)
    low = cv2.GaussianBlur(small * m, (0, 0), sigma_px) / np.maximum(norm, 1e-6)
    return (small - low) * m


def crossing_time(times_s: np.ndarray, values: np.ndarray, level: float, start_s: float,
                  sustain: int = 2) -> float | None:
    """First time after ``start_s`` at which ``values`` fall below ``level`` and stay below for
    ``sustain`` frames (or to the end), linearly interpolated between the frames around it."""
    t = np.asarray(times_s, np.float64)
    v = np.asarray(values, np.float64)
    below = (v < level) & (t >= start_s)
    idx = np.flatnonzero(below)
    for k in idx:
        run = below[k:k + sustain]
        if run.all():
            if k == 0 or t[k - 1] < start_s and v[k - 1] < level:
                return float(max(t[k], start_s))
            v0, v1 = v[k - 1], v[k]
            frac = (v0 - level) / (v0 - v1) if v0 != v1 else 1.0
            return float(max(start_s, t[k - 1] + np.clip(frac, 0, 1) * (t[k] - t[k - 1])))
    return None


def find_exposure_start(times_s: np.ndarray, cell_ratios: np.ndarray, n_reference: int,
                        sustain: int = 3) -> float | None:
    """The first sustained contrast drop in any coarse cell.

    Parameters
    ----------
    times_s : (T,) ndarray
    cell_ratios : (T, C) ndarray
        Contrast ratio to clear per frame and cell (NaN where a cell has no structure).
    n_reference : int
        Frames at the start known to be clear; they set each cell's noise.
    sustain : int
        Frames the drop must last.

    Returns
    -------
    float or None
        The time of the last frame before the drop began (the exposure happened between it
        and the next frame), or None when nothing dropped.
    """
    ref = cell_ratios[:n_reference]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # cells without structure are all-NaN
        sigma = np.nanstd(ref, axis=0) if n_reference >= 2 else np.full(cell_ratios.shape[1], 0.01)
    sigma = np.where(np.isfinite(sigma), np.maximum(sigma, 0.005), np.inf)
    deep = cell_ratios < 1 - np.maximum(0.05, 5 * sigma)  # a real drop, not noise
    shallow = cell_ratios < 1 - 2 * sigma                  # where it began
    T = len(times_s)
    best = None
    for c in np.flatnonzero(deep[n_reference:].any(axis=0)):
        d = deep[:, c]
        for k in np.flatnonzero(d[n_reference:]) + n_reference:
            if d[k:k + sustain].all() or k + sustain > T and d[k:].all():
                j = k
                while j > n_reference and shallow[j - 1, c]:
                    j -= 1
                best = j if best is None else min(best, j)
                break
    if best is None:
        return None
    return float(times_s[best - 1]) if best >= 1 else float(times_s[0])


def trap_haze_pct(small: np.ndarray, cores: list[np.ndarray], rings: list[np.ndarray],
                  flat_ratios: np.ndarray) -> float | None:
    """Worst trap haze (%) from trap fill, ``(r − r_flat)/(1 − r_flat)``, r = core/ring mean."""
    if not cores:
        return None
    r = np.array([small[c].mean() / max(small[g].mean(), 1e-6) for c, g in zip(cores, rings)])
    return float(np.max((r - flat_ratios) / (1 - flat_ratios)) * 100)


# ---------------------------------------------------------------------------------------------
# the streaming analysis
# ---------------------------------------------------------------------------------------------
class FogTest:
    """Streaming fog-test analysis: feed frames with :meth:`add`, then call :meth:`result`.

    Only reduced frames are kept: the clear-reference frames until the reference is complete,
    then one uint8 local-contrast map per frame.

    Parameters
    ----------
    station : Station, optional
        Calibration (dark, flat, pixel size, traps). Without it the dark level is taken as 0,
        sizes are reported in pixels and the clear frames cannot be checked against the flat.
    threshold : float
        Fog is "contrast below ``threshold`` of clear" (EN 168 practice: 0.8).
    start_s : float, optional
        Exposure start (s, in the frames' time base). None finds it automatically.
    reference_s : float
        In automatic mode, the first ``reference_s`` seconds (at least 3 frames) are the clear
        reference the contrast is measured against.
    marginal_mm : float
        Width of the marginal band (EN 166 §7.1.3).
    pixel_size_mm : float, optional
        Overrides the station's pixel size.
    min_void_mm2 : float
        Smallest void reported (in mm², or ``min_void_mm2 / 0.01`` px without a pixel size).
    """

    def __init__(self, station=None, *, threshold: float = 0.8, start_s: float | None = None,
                 reference_s: float = 1.0, marginal_mm: float = 5.0, pixel_size_mm: float | None = None,
                 min_void_mm2: float = 2.0):
        if not 0 < threshold < 1:
            raise InputError(f"--threshold {threshold} must lie between 0 and 1 (0.8 = 80 % of clear)")
        if start_s is not None and start_s < 0:
            raise InputError(f"--start {start_s} s is negative; give the exposure start in seconds or auto")
        self.station = station
        self.threshold = float(threshold)
        self.start_s = start_s
        self.reference_s = float(reference_s)
        self.marginal_mm = marginal_mm
        self.ps = pixel_size_mm if pixel_size_mm is not None else getattr(station, "pixel_size_mm", None)
        self.min_void_mm2 = min_void_mm2
        self._shape: tuple[int, int] | None = None
        self._dtype = None
        self._first_raw: list[np.ndarray] = []  # a few raw frames to find the lens in
        self._buffer: list[tuple[float, np.ndarray]] = []
        self._ready = False
        self.times: list[float] = []
        self.frames: list[FogFrame] = []
        self.maps: list[np.ndarray] = []
        self.cells: list[np.ndarray] = []
        self.lens_level: list[float] = []

    # -- input ----------------------------------------------------------------------------
    def add(self, image: np.ndarray, t_s: float) -> None:
        """Add one frame (raw, as the camera delivered it) taken at ``t_s`` seconds."""
        if image.ndim == 3:
            from goggleqc.capture.imagefile import to_luminance

            image = to_luminance(image)
        n = len(self.times) + len(self._buffer) if not self._ready else len(self.times)
        if self._shape is None:
            if image.dtype not in (np.uint8, np.uint16):
                raise InputError(f"frame 0 has {image.dtype} pixels; the fog test needs 8- or 16-bit frames")
            if self.station is not None:
                self.station.check_image(image, "frame 0")
            self._shape, self._dtype = image.shape[:2], image.dtype
            self._setup_reduction()
        elif image.shape[:2] != self._shape:
            raise InputError(f"frame {n} is {image.shape[1]}×{image.shape[0]} but the first frame was "
                             f"{self._shape[1]}×{self._shape[0]}; a fog test needs frames of one size")
        elif image.dtype != self._dtype:
            raise InputError(f"frame {n} is {image.dtype} but the first frame was {self._dtype}; "
                             "a fog test needs frames of one bit depth")
        last = self.times[-1] if self._ready and self.times else (self._buffer[-1][0] if self._buffer else None)
        if last is not None and t_s <= last:
            raise InputError(f"frame {n} has time {t_s:.3f} s, not after the previous frame's {last:.3f} s; "
                             "timestamps must increase")
        small = reduce_frame(image, self.factor, self.dark_small)
        if self._ready:
            self._measure(t_s, small)
            return
        self._buffer.append((float(t_s), small))
        if len(self._first_raw) < 1:
            self._first_raw.append(image.copy())
        if self._reference_complete(t_s):
            self._build_reference()

    def _setup_reduction(self) -> None:
        st = self.station
        period = st.pattern.period_px if st is not None and getattr(st, "pattern", None) is not None else None
        self.factor = fog_reduction_factor(self._shape, self.ps, period)
        self.ps_small = self.ps * self.factor if self.ps else None
        self.dark_small = reduce_frame(st.dark, self.factor) if st is not None else None
        self.flat_small = reduce_frame(st.flat, self.factor) if st is not None else None
        if st is not None:
            self.dark_small = self.dark_small.astype(np.float32)

    def _reference_complete(self, t_s: float) -> bool:
        t0 = self._buffer[0][0]
        if self.start_s is not None:
            return t_s >= self.start_s
        return len(self._buffer) > 3 and t_s - t0 >= self.reference_s

    # -- the clear reference --------------------------------------------------------------
    def _mm_to_px(self, mm: float, fallback_frac: float) -> float:
        if self.ps_small:
            return mm / self.ps_small
        return fallback_frac * min(self._buffer[0][1].shape)

    def _build_reference(self) -> None:
        """Template, masks and noise from the frames before the exposure (or the first seconds)."""
        from goggleqc.inspect.lens import find_lens

        if self.start_s is not None:
            ref = [s for t, s in self._buffer if t < self.start_s]
        else:
            ref = [s for t, s in self._buffer[:-1]]
        if len(ref) < 2:
            raise InputError(f"only {len(ref)} clear frame(s) before the exposure start; the clear reference needs "
                             "at least 2 frames of the lens before it meets the warm water")
        self.n_reference = len(ref)
        clear = np.mean(ref, axis=0).astype(np.float32)
        self.clear_small = clear
        region = find_lens(self._first_raw[0], self.station, marginal_mm=self.marginal_mm, pixel_size_mm=self.ps)
        f = self.factor
        hs, ws = clear.shape

        def shrink(mask_full: np.ndarray, level: float) -> np.ndarray:
            m = mask_full[: hs * f, : ws * f].astype(np.float32)
            if f > 1:
                m = cv2.resize(m, (ws, hs), interpolation=cv2.INTER_AREA)
            return m >= level

        lens = shrink(region.lens, 0.999)
        # one reduced pixel off the edge: mixed lens/frame pixels carry no pattern signal
        lens = cv2.erode(lens.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        if not lens.any():
            raise InputError("no lens found in the clear frames; check that the goggle is in the field of view")
        self.lens = lens
        self.central = shrink(region.central, 0.5) & lens
        if not self.central.any():
            self.central = lens
        self.zones_known = region.zones_known
        self.region = region
        bg = shrink(region.background, 0.999)
        self.background = bg if bg.sum() >= 50 else None

        self.hp_sigma = self._mm_to_px(HIGHPASS_SIGMA_MM, 0.03)
        lm = lens.astype(np.float32)
        self.hp_norm = cv2.GaussianBlur(lm, (0, 0), self.hp_sigma)
        bps = [masked_highpass(s, lens, self.hp_sigma, self.hp_norm) for s in ref]
        bp0 = np.mean(bps, axis=0).astype(np.float32)
        var = (np.var(bps, axis=0, ddof=1) if len(bps) >= 2 else np.zeros_like(bp0)).astype(np.float32)
        # noise of the template itself biases bp0² up by var/N: remove it
        self.bp0 = bp0
        # local regression of bp on bp0 with its own offset (a local covariance): the smooth
        # veil of light a fogged patch scatters is an offset there, not structure
        period = getattr(getattr(self.station, "pattern", None), "period_px", None)
        s = max(1.0, self._mm_to_px(LOCAL_SIGMA_MM, 0.006), (period / self.factor / 3) if period else 0.0)
        self.loc_sigma = s
        self.g_bp0 = cv2.GaussianBlur(bp0, (0, 0), s)
        e0 = cv2.GaussianBlur(bp0 * bp0 - var / len(bps), (0, 0), s) - self.g_bp0 ** 2
        # variance of a = Σ w·n·(bp0 − m) / Σ w·(bp0 − m)² for normalised Gaussian weights w (σ = s)
        num_var = cv2.GaussianBlur(var * (bp0 - self.g_bp0) ** 2, (0, 0), s / np.sqrt(2)) / (4 * np.pi * s * s)
        with np.errstate(divide="ignore", invalid="ignore"):
            noise = np.sqrt(num_var) / e0
        self.local_e0 = np.where(e0 > 0, e0, np.inf).astype(np.float32)
        self.local_noise = np.where(e0 > 0, noise, np.inf).astype(np.float32)
        self.measurable = lens & (e0 > 0) & (noise < LOCAL_MAX_NOISE)
        cw = self.central & self.measurable
        if cw.sum() < 20:
            cw = self.central
        self.central_w = cw
        self.central_e0 = float((bp0[cw] ** 2 - var[cw] / len(bps)).sum())
        if not self.central_e0 > 0:
            raise InputError("the clear frames show no backlight structure through the lens; the fog test needs "
                             "a pattern or light-trap backlight (station-model.md §2)")
        # coarse cells: per-cell sums by area-averaging products onto a grid
        cell_px = max(2, int(round(self._mm_to_px(CELL_MM, 0.05))))
        self.cell_shape = (max(1, ws // cell_px), max(1, hs // cell_px))
        e_cells = cv2.resize(bp0 * bp0 * self.measurable, self.cell_shape, interpolation=cv2.INTER_AREA)
        m_cells = cv2.resize(self.measurable.astype(np.float32), self.cell_shape, interpolation=cv2.INTER_AREA)
        self.cell_e0 = np.where(m_cells > 0.25, e_cells, np.nan).astype(np.float32)
        self.bg_clear = float(clear[self.background].sum()) if self.background is not None else None
        self.lens_clear = float(clear[lens].sum())
        self._trap_setup(clear)
        self.clear_vs_flat = self._clear_vs_flat(clear)
        self._ready = True
        buffered, self._buffer = self._buffer, []
        for t, sm in buffered:
            self._measure(t, sm)

    def _trap_setup(self, clear: np.ndarray) -> None:
        self.trap_cores, self.trap_rings, ratios = [], [], []
        st = self.station
        if st is None or not getattr(st, "traps", ()):
            self.trap_flat = np.zeros(0)
            return
        hs, ws = clear.shape
        yy, xx = np.mgrid[:hs, :ws]
        for tr in st.traps:
            cx, cy, r = (tr.x_px + 0.5) / self.factor - 0.5, (tr.y_px + 0.5) / self.factor - 0.5, tr.r_px / self.factor
            d = np.hypot(xx - cx, yy - cy)
            core, ring = d < 0.5 * r, (d > 1.3 * r) & (d < 1.8 * r)
            if core.sum() < 3 or not self.lens[ring | core].all():
                continue  # a trap not seen through the lens
            self.trap_cores.append(core)
            self.trap_rings.append(ring)
            ratios.append(self.flat_small[core].mean() / max(self.flat_small[ring].mean(), 1e-6))
        self.trap_flat = np.asarray(ratios)

    def _clear_vs_flat(self, clear: np.ndarray) -> float | None:
        """Contrast of the clear reference relative to the bare backlight (≈ 1 − haze).

        Local structure over local mean, so the lens' τ cancels; a lens already fogged in its
        "clear" frames shows far less than the flat.
        """
        if self.flat_small is None:
            return None
        cw = self.central_w
        lens = self.lens
        lo_c = cv2.GaussianBlur(clear * lens, (0, 0), self.hp_sigma) / np.maximum(self.hp_norm, 1e-6)
        lo_f = cv2.GaussianBlur(self.flat_small * lens, (0, 0), self.hp_sigma) / np.maximum(self.hp_norm, 1e-6)
        bf = masked_highpass(self.flat_small, lens, self.hp_sigma, self.hp_norm)
        mc = self.bp0[cw] / np.maximum(lo_c[cw], 1e-6)
        mf = bf[cw] / np.maximum(lo_f[cw], 1e-6)
        den = float((mf * mf).sum())
        return float((mc * mf).sum() / den) if den > 0 else None

    # -- per frame ------------------------------------------------------------------------
    def _measure(self, t_s: float, small: np.ndarray) -> None:
        if self.background is not None:
            g = float(small[self.background].sum()) / self.bg_clear
        else:  # no backlight beside the goggle: the lens' mean level (then τ loss counts as drift)
            g = float(small[self.lens].sum()) / self.lens_clear
        g = g if g > 1e-6 else 1e-6
        bp = masked_highpass(small, self.lens, self.hp_sigma, self.hp_norm)
        prod = bp * self.bp0
        contrast = float(prod[self.central_w].sum()) / self.central_e0 / g
        cov = cv2.GaussianBlur(prod, (0, 0), self.loc_sigma) - cv2.GaussianBlur(bp, (0, 0), self.loc_sigma) * self.g_bp0
        local = cov / self.local_e0 / g
        q = np.clip(local * _Q, 0, 255)
        q[~self.measurable] = 0
        self.maps.append(q.astype(np.uint8))
        cells = cv2.resize(prod * self.measurable, self.cell_shape, interpolation=cv2.INTER_AREA) / self.cell_e0 / g
        self.cells.append(cells.ravel().astype(np.float32))
        vals = local[self.measurable]
        fogged = float(np.mean(vals < self.threshold)) if vals.size else 0.0
        self.lens_level.append(float(np.median(vals)) if vals.size else contrast)
        haze = trap_haze_pct(small, self.trap_cores, self.trap_rings, self.trap_flat)
        if haze is not None and self.station is not None and getattr(self.station, "haze_fit", None) is not None:
            haze = self.station.haze_fit.apply(haze)
        self.times.append(float(t_s))
        self.frames.append(FogFrame(t_s=float(t_s), contrast=contrast, gain=g, fogged_frac=fogged,
                                    haze_traps_pct=haze))

    # -- the outcome ----------------------------------------------------------------------
    def result(self) -> FogTestResult:
        """Fog-free time, N verdict and voids from everything added so far."""
        if not self._ready:
            n = len(self._buffer)
            span = self._buffer[-1][0] - self._buffer[0][0] if n else 0.0
            if self.start_s is not None:
                need = f"the frames before the exposure start at {self.start_s:g} s"
            else:
                need = f"the first {self.reference_s:g} s (and at least 4 frames)"
            raise InputError(f"the sequence ({n} frames, {span:.2f} s) is shorter than the clear reference, which "
                             f"needs {need} plus frames after it; record a longer sequence")
        times = np.asarray(self.times)
        contrast = np.asarray([f.contrast for f in self.frames])
        messages: list[str] = []
        if self.clear_vs_flat is not None and self.clear_vs_flat < self.threshold:
            raise InputError(f"no clear frames: the first frames show only {self.clear_vs_flat:.0%} of the bare "
                             f"backlight's contrast (below the {self.threshold:.0%} threshold), so the lens was "
                             "already fogged; start recording before the lens meets the warm water")
        fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 1.0
        sustain = max(2, int(round(0.3 * fps)))
        if self.start_s is not None:
            start, mode = float(self.start_s), "given"
        else:
            cells = np.stack(self.cells)
            found = find_exposure_start(times, cells, self.n_reference, sustain=max(3, sustain))
            if found is None:
                start, mode = float(times[self.n_reference]), "auto: no drop seen"
                messages.append("no contrast drop anywhere: the exposure start could not be seen; the fog-free time "
                                "counts from the end of the clear reference (pass --start to set it)")
            else:
                start, mode = found, "auto"
        if times[-1] <= start:
            raise InputError(f"the sequence ends at {times[-1]:.2f} s, at or before the exposure start "
                             f"({start:.2f} s); record the lens over the warm water")
        t_fog = crossing_time(times, contrast, self.threshold, start, sustain)
        if t_fog is None:
            fog_free, at_least = None, float(times[-1] - start)
            verdict = "pass" if at_least >= N_MIN_FOG_FREE_S else "inconclusive"
            if verdict == "inconclusive":
                messages.append(f"never fogged, but watched only {at_least:.1f} s after exposure, less than the "
                                f"{N_MIN_FOG_FREE_S:g} s the N mark needs")
        else:
            fog_free, at_least = float(t_fog - start), None
            verdict = "pass" if fog_free >= N_MIN_FOG_FREE_S else "fail"
        voids, labels = self._voids(times, start)
        n_clear = int(np.sum(times < start))
        return FogTestResult(fog_free_s=fog_free, fog_free_at_least_s=at_least, n_verdict=verdict,
                             threshold=self.threshold, exposure_start_s=start, start_mode=mode,
                             clear_frames=n_clear, clear_contrast_vs_flat=self.clear_vs_flat,
                             frames=list(self.frames), voids=voids, pixel_size_mm=self.ps, reduction=self.factor,
                             messages=messages, clear_small=self.clear_small, void_labels=labels,
                             lens_small=self.lens, measurable_small=self.measurable)

    def _voids(self, times: np.ndarray, start: float) -> tuple[list[FogVoidResult], np.ndarray]:
        """Regions fogged while the lens as a whole was still clear."""
        thr = self.threshold
        level = np.asarray(self.lens_level)
        after = np.flatnonzero(times >= start)
        labels_out = np.zeros(self.lens.shape, np.int32)
        if len(after) == 0:
            return [], labels_out
        # the last frame before the lens as a whole lost more than half the allowed drop
        clear_enough = level >= 1 - (1 - thr) / 2
        k_end = after[-1]
        bad = after[~clear_enough[after]]
        if len(bad):
            k_end = bad[0] - 1
        if k_end < after[0]:
            return [], labels_out
        window = range(max(after[0], k_end - 4), k_end + 1)
        snap = np.median(np.stack([self.maps[k] for k in window]), axis=0).astype(np.float32) / _Q
        rest = float(np.median(level[list(window)]))
        mask = self.measurable & (snap < thr * rest)
        mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
        n, lab, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        f = self.factor
        px_area = float(f * f)
        min_px = (self.min_void_mm2 / self.ps ** 2) if self.ps else self.min_void_mm2 / 0.01
        stack_idx = np.arange(len(self.maps))
        out: list[FogVoidResult] = []
        grow = max(2, int(np.ceil(2 * self.loc_sigma)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
        for i in range(1, n):
            comp = lab == i
            deep = comp & (snap <= np.percentile(snap[comp], 50))
            core_level = float(np.median(snap[deep]))
            # half-level area: unbiased for a blurred edge, unlike the threshold contour
            half = (rest + core_level) / 2
            near = cv2.dilate(comp.astype(np.uint8), kernel).astype(bool)
            region = near & self.measurable & (snap < half)
            if not region.any():
                continue
            area_px = float(region.sum()) * px_area
            if area_px < min_px:
                continue
            # significance: the mean drop against the local-ratio noise averaged over the region
            n_eff = max(1.0, region.sum() / (4 * np.pi * self.loc_sigma ** 2))
            z = (rest - float(snap[region].mean())) / (float(np.mean(self.local_noise[region])) / np.sqrt(n_eff))
            if z < VOID_MIN_Z:
                continue
            ys, xs = np.nonzero(region)
            bbox = [int(xs.min() * f), int(ys.min() * f), int((xs.max() + 1) * f), int((ys.max() + 1) * f)]
            core = region & (snap < (half + core_level) / 2)
            if not core.any():
                core = region
            curve = np.array([self.maps[k][core].mean() for k in stack_idx], np.float64) / _Q
            onset_t = crossing_time(times, curve, thr, start, 2)
            if onset_t is None or onset_t > times[k_end]:
                continue  # not fogged before the rest of the lens: noise or the general fog
            zone = "unknown"
            if self.zones_known:
                zone = "central" if (region & self.central).any() else "marginal"
            labels_out[region & (labels_out == 0)] = len(out) + 1
            out.append(FogVoidResult(area_px=area_px, area_mm2=area_px * self.ps ** 2 if self.ps else None,
                                     onset_s=None if onset_t is None else float(onset_t - start), zone=zone,
                                     bbox_px=bbox, contrast=float(core_level / max(rest, 1e-6))))
        return out, labels_out
