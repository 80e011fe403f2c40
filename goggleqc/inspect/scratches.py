"""Scratches: thin dark (or bright) lines and curves in the relative transmittance image.

The detector works on the working grid of :mod:`goggleqc.inspect.background` (half
resolution, where a thin line keeps its integrated contrast ``c·w`` while the noise halves):

1. ``d = (1 − rel)·weight`` is the whitened departure; its noise ``σ`` is a robust MAD.
2. A Hessian line measure at two scales (three separable Gaussian-derivative filters each,
   OpenCV ``sepFilter2D``): with eigenvalues λ1 ≤ λ2, a dark line (a ridge of ``d``) has
   λ1 ≪ 0 ≈ λ2; ``min(|λ1 + λ2|, λ2 − λ1)`` is ``|λ1| − |λ2|`` for a line and vanishes for a
   round blob, so spots do not become scratches (Lindeberg 1998; Frangi et al. 1998).
   Each scale's response is divided by its own response to white noise of the same ``σ``.
3. A bar test at candidate pixels: the line's centre must be darker than *both* sides at two
   scales across the line. The rim of a large dark spot or coating flaw is darker on one side
   only, so it fails; so does the side lobe a second-derivative filter leaves beside a line.
4. Hysteresis: pixels above ``low_sigma`` grow from seeds above ``high_sigma``; fragments
   whose ends meet along the same direction are linked, so a broken scratch stays one.
5. With a flat, a segment test for hairlines of only 2–3σ per pixel: dark pixels above a
   low threshold are grouped, each elongated group is fitted by a straight segment, and a
   bar filter (centre against both sides) summed along it must reach ``segment_sigma``.
6. Length along the skeleton (8-connected chain length, plus the width the skeleton loses at
   its ends, in full-resolution pixels); contrast from the integrated darkening across the
   line, so a sub-pixel scratch reports the darkening a pixel sees (``c·w``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
import threading
from functools import lru_cache
from statistics import NormalDist

import cv2
import numpy as np
from skimage.morphology import skeletonize

from goggleqc.errors import InputError
from goggleqc.inspect.background import EDGE_MARGIN_PX, WORKING_PIXEL_MM, Relative
from goggleqc.inspect.lens import _percentile, np_median
from goggleqc.inspect.results import Mark, Scratch


@dataclass(frozen=True)
class ScratchParams:
    """Detector settings; thresholds are in noise standard deviations of the line response.

    Attributes
    ----------
    scales : tuple of float
        Hessian scales on the working grid (working px).
    high_sigma, low_sigma : float
        Hysteresis: a scratch needs pixels above ``high_sigma`` and grows through ``low_sigma``.
    bright_factor : float
        Bright lines need ``bright_factor ×`` the thresholds.
    bright : bool
        Look for bright lines at all. After flat correction a scratch is dark wherever the
        backlight is bright enough to measure through, so calibrated inspection turns this off;
        uncalibrated images keep it, since there a scratch over a dark pattern cell shines.
    min_length_px : float
        Shorter objects (full-resolution px) are not scratches.
    min_elongation : float
        Length over width below this is a spot, not a scratch.
    link_gap_px, link_gap_mm : float
        Fragments whose ends are this close (full-resolution px) and aligned are one scratch.
        A broken scratch's gaps are physical (tenths of a millimetre): with a pixel size the
        gap allowed is at least ``link_gap_mm``, so at a fine pixel size (a 12 MP photograph
        at 0.02 mm/px) a broken scratch is not reported as its pieces.
    link_angle_deg : float
        Largest direction difference for linking.
    min_mean_sigma : float
        A scratch's mean response along itself must reach this, so a noise chain hanging on
        one strong pixel is not a scratch.
    min_contrast, min_contrast_uncalibrated : float
        The faintest line reported (its contrast, the darkening a pixel sees), against a
        station's flat and against a background estimated from the image itself. Without a
        flat the background is uncertain by a percent or two (the pattern's cells registered
        to a fraction of a pixel, the light's change between them), so a fainter line is
        not told from the model's own residue.
    band_floor : float
        Without a flat, a line must also reach this many times the noise the filters see
        (:attr:`Relative.band_sigma`, the departure's noise smoothed at a pixel's scale). An
        ordinary camera's noise is coarse grained (demosaicing, JPEG): at the filters' scale
        1.5–2× what white noise of the same pixel σ gives, where the thresholds, in pixel σ,
        let chains of grain through as lines of a few percent (the second renderer's
        photographs at 0.1 mm/px: 2.6–5 % over 1.3–6.7 mm, 7–13× the band noise; its true
        scratches 14× or more). Over :data:`BAND_FLOOR_LENGTH_PX` working px the floor falls
        as the square root of the length (a 14.7 mm hairline read at 2.6 % in a phone
        photograph is 10× its band noise). On a machine-vision camera's frame the band noise
        is 0.22 of the pixel σ, and the floor under ``min_contrast_uncalibrated`` wherever
        that σ is under 0.9 %.
    short_line_mm, min_contrast_short_uncalibrated : float
        Without a flat, a line shorter than ``short_line_mm`` (10 working px without a pixel
        size) must reach ``min_contrast_short_uncalibrated``: the background's residue is
        correlated over a pattern cell or a trap's rim, so along a short line it is not
        averaged down, and a short faint line is that residue far more often than a scratch
        (:func:`faint_and_short`; applied by :func:`~goggleqc.inspect.spots.separate` after
        the rims of bubbles are taken as spots).
    wide_line_mm, wide_line_max_contrast : float
        A line measured at least ``wide_line_mm`` wide and fainter than
        ``wide_line_max_contrast``, lying on a found coating flaw, is that flaw read by the
        line filter (a run's streak, a mottle's ridge, a void's edge: 0.5–5 % over
        millimetres, station-model §3), not a scratch, which is thin (:func:`wide_and_faint`;
        applied by :func:`goggleqc.inspect.pipeline.inspect_lens` once the coating is found;
        only with a pixel size).
    flat_high_factor, flat_mean_factor : float
        ``high_sigma`` and ``min_mean_sigma`` are multiplied by these on a flat-corrected
        (calibrated) image and against a pattern's own repeats (``lattice``). With a flat the
        departure is whitened by the noise measured on the frame itself (shot noise, and what
        a misregistration leaves at the backlight's edges), so σ is the pixel noise
        everywhere and a threshold is a true significance; the lattice's median of registered
        cells leaves little more than noise too. A local fit leaves structure that is not
        noise, and there the thresholds stay.
    flat_segment_factor : float
        ``segment_sigma`` is multiplied by this on a flat-corrected image (the same 5/6 as
        ``flat_high_factor``): there the whitened departure is white noise and a segment's bar
        sum is a true significance. Not for a segment along the backlight pattern's edges
        (:func:`segment_sigma`), nor against a pattern's repeats or a local fit, whose residue
        along a segment is not noise.
    mark_min_arc_deg, mark_diameter_mm, mark_min_diameter_px, mark_max_rms : float
        A dark line lying on a circle (rms distance ≤ ``mark_max_rms`` × radius) of diameter
        within ``mark_diameter_mm`` (≥ ``mark_min_diameter_px`` without a pixel size) and
        covering at least ``mark_min_arc_deg`` of it is the rim of a dried drop, a watermark,
        not a scratch: abrasion draws lines and gentle arcs, it does not curl round a point.
        Smaller closed rings stay bubbles (spots).
    texture_ratio : float
        With a flat: a line no darker than this many times the rms of the τ texture around it
        (beyond the camera's noise) is a ridge of that texture (orange-peel mottle), not a
        scratch; 0 turns the test off.
    segment_low, segment_sigma, segment_min_span_px : float
        A hairline whose pixels answer only 2–3σ each is found as a whole (with a flat, and
        without one: in a compressed photograph's noise a 5 % scratch's pixels fall below the
        per-pixel thresholds too). Dark
        pixels above ``segment_low`` (not already in a line) are grouped, a group is fitted
        by a straight segment at least ``segment_min_span_px`` working px long, and the
        darkening along that segment against both sides of it (a matched bar filter summed
        along its length) must reach ``segment_sigma`` σ; 0 turns the test off.
    trace_sigma : float
        A line is followed on from each end of its pieces, a step of :data:`TRACE_STEP_PX` at
        a time (:func:`_traced`), while the best step's bar sum (the segment test's) reaches
        ``trace_sigma`` σ; 0 turns it off.
    target_width_ratio, target_max_contrast : float
        Without a flat, on a pattern backlight: a line whose mean profile across it is at
        least ``target_width_ratio`` times as blurred (Gaussian σ) as the pattern's edges
        (:attr:`Relative.target_blur_px`) and fainter than ``target_max_contrast`` is dust on
        the defocused target, not on the lens the camera is focused on; it is reported as a
        ``target`` mark, never failing the lens. On simulated close-ups a scratch's profile
        reaches 0.2–0.75 of the edges' σ, dust on the target 0.9–1.7.
    """

    scales: tuple[float, ...] = (1.0, 1.8)
    high_sigma: float = 6.0
    low_sigma: float = 3.2
    bright_factor: float = 1.5
    bright: bool = True
    min_length_px: float = 5.0
    min_elongation: float = 2.5
    link_gap_px: float = 14.0
    link_gap_mm: float = 0.8
    link_angle_deg: float = 25.0
    min_mean_sigma: float = 3.8
    long_px: int = 12
    crowd: int = 30
    crowd_factor: float = 2.5
    pattern_angle_deg: float = 6.0
    min_contrast: float = 0.0
    min_contrast_uncalibrated: float = 0.025
    band_floor: float = 12.0
    short_line_mm: float = 2.0
    min_contrast_short_uncalibrated: float = 0.035
    wide_line_mm: float = 0.6
    wide_line_max_contrast: float = 0.05
    flat_high_factor: float = 5.0 / 6.0
    flat_segment_factor: float = 5.0 / 6.0
    flat_mean_factor: float = 3.5 / 3.8
    mark_min_arc_deg: float = 180.0
    mark_diameter_mm: tuple[float, float] = (1.5, 10.0)
    mark_min_diameter_px: float = 24.0
    mark_max_rms: float = 0.2
    target_width_ratio: float = 0.85
    texture_ratio: float = 3.0
    target_max_contrast: float = 0.20
    segment_low: float = 2.2
    segment_sigma: float = 6.0
    segment_min_span_px: float = 5.0
    trace_sigma: float = 3.0


@lru_cache(maxsize=16)
def _kernels(sigma: float):
    r = int(np.ceil(3 * sigma))
    x = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-x ** 2 / (2 * sigma ** 2))
    g /= g.sum()
    g1 = -x / sigma ** 2 * g
    g2 = (x ** 2 / sigma ** 4 - 1 / sigma ** 2) * g
    g2 -= g2.mean()  # exactly zero response to a constant
    # odd exactly (its sum is then zero): subtracting its float mean left ~1e-18 at the centre,
    # which took OpenCV off its faster path for antisymmetric kernels
    g1 = (g1 - g1[::-1]) / 2
    return [k.astype(np.float32).reshape(-1, 1) for k in (g, g1, g2)]


def _hessian(d: np.ndarray, sigma: float, work: np.ndarray | None = None
             ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Signed line measure (positive: ridge of ``d``, a dark line) and what the normal across
    the line needs: the Hessian's trace ``dxx + dyy``, ``dxx − dyy`` and ``2·dxy``.

    ``work`` (optional, shaped like ``d``) is scratch space: each pass writes into a buffer
    that is no longer needed rather than a new full-grid array.
    """
    g, g1, g2 = _kernels(sigma)
    dxx = cv2.sepFilter2D(d, -1, g2, g, borderType=cv2.BORDER_REFLECT)
    dyy = cv2.sepFilter2D(d, -1, g, g2, borderType=cv2.BORDER_REFLECT)
    dxy2 = cv2.sepFilter2D(d, -1, g1, g1, borderType=cv2.BORDER_REFLECT)
    diff = cv2.subtract(dxx, dyy)
    tr = cv2.add(dxx, dyy, dst=dxx)
    cv2.add(dxy2, dxy2, dst=dxy2)  # 2·dxy, exactly
    resp = cv2.magnitude(diff, dxy2, magnitude=dyy)
    work = np.empty_like(d) if work is None else work
    cv2.min(cv2.absdiff(tr, 0.0, dst=work), resp, dst=resp)
    np.copysign(resp, np.negative(tr, out=work), out=resp)
    return resp, (tr, diff, dxy2)


def _normals(hessian, ys, xs) -> tuple[np.ndarray, np.ndarray]:
    """Unit normal across the line at the given pixels: the eigenvector of the Hessian
    eigenvalue of largest magnitude (``hessian`` as :func:`_hessian` gives it)."""
    tr, diff, dxy2 = (h[ys, xs] for h in hessian)
    ang = 0.5 * np.arctan2(dxy2, diff)  # direction of λ_max
    ang = np.where(tr < 0, ang + np.pi / 2, ang)
    return np.cos(ang), np.sin(ang)


@lru_cache(maxsize=16)
def _noise_gain(sigma: float) -> float:
    """Rms line measure on unit white noise (fixed seed), to express responses in σ units."""
    rng = np.random.default_rng(1234)
    d = rng.standard_normal((256, 256)).astype(np.float32)
    resp, _ = _hessian(d, sigma)
    return float(np.sqrt(np.mean(resp[16:-16, 16:-16] ** 2)))


class MaxAbs:
    """Running selection, over the scales of a filter bank, of the response of largest
    magnitude and the index of the scale that gave it (the first of equals).

    Masked writes go through OpenCV: numpy's boolean-mask assignment branches on every pixel
    and, on a mask as irregular as noise, costs twenty times more.
    """

    def __init__(self, shape: tuple[int, int]):
        self.z: np.ndarray | None = None
        self.index = np.zeros(shape, np.uint8)
        self._abs = None
        self._absn = np.empty(shape, np.float32)
        self._mask = np.empty(shape, np.uint8)

    def update(self, zs: np.ndarray, i: int) -> None:
        """Take ``zs`` (float32, scale ``i``; scales in increasing order) where it is larger in
        magnitude than everything so far. The first ``zs`` becomes :attr:`z` (not copied)."""
        if self.z is None:
            self.z, self._abs = zs, cv2.absdiff(zs, 0.0)
            self.index[:] = i
            return
        cv2.absdiff(zs, 0.0, dst=self._absn)
        better = cv2.compare(self._absn, self._abs, cv2.CMP_GT, dst=self._mask)  # 255 where better
        cv2.copyTo(zs, better, self.z)
        cv2.max(self._abs, self._absn, dst=self._abs)
        # the index only grows: where this scale is better it replaces a smaller one
        cv2.max(self.index, cv2.min(better, i, dst=better), dst=self.index)


@lru_cache(maxsize=16)
def _response_kernels(sigma: float) -> tuple[np.ndarray, ...]:
    """:func:`_kernels` as :func:`_line_parts` applies them: the y kernel of every Hessian
    component divided by the scale's noise gain (so all come out in noise units), and that of
    ``dxy`` doubled (``2·dxy`` is what the normal needs)."""
    g, g1, g2 = _kernels(sigma)
    k = 1.0 / _noise_gain(sigma)
    return g, g2, (g * k).astype(np.float32), (g2 * k).astype(np.float32), g1, (g1 * (2 * k)).astype(np.float32)


class _Buffers(threading.local):
    """Working arrays kept between calls (per thread), each grown as needed.

    A fresh array of a working grid (~0.7 MB) is mapped anew by the allocator and its pages
    faulted in on first touch: measured on a 1.3 MP lens, 1800 page faults cost 4 ms of a
    7 ms line response, more than the filters that wrote them. Buffers kept here are
    already mapped.
    """

    def __init__(self):
        self.store: dict[str, np.ndarray] = {}

    def get(self, key: str, shape: tuple[int, int], dtype=np.float32) -> np.ndarray:
        """A C-contiguous array of ``shape`` and ``dtype`` (contents undefined), the same
        memory as the last one of this ``key`` when that was large enough."""
        dtype = np.dtype(dtype)
        n = shape[0] * shape[1] * dtype.itemsize
        buf = self.store.get(key)
        if buf is None or buf.size < n:
            buf = self.store[key] = np.empty(n, np.uint8)
        return buf[:n].view(dtype).reshape(shape)


#: this thread's working buffers (the scratch and spot detectors' full-grid intermediates)
BUFFERS = _Buffers()


def _line_parts(d: np.ndarray, sigma: float, work: np.ndarray, tag: str
                ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`_hessian` in noise units, unsigned: ``min(|tr|, rad)`` over the white-noise
    gain, and ``(tr, dxx − dyy, 2·dxy)`` likewise scaled (the sign of the line is ``−tr``'s).
    ``work`` (shaped like ``d``) is scratch space; the results live in the buffers ``tag``."""
    g, g2, gk, g2k, g1, g1k = _response_kernels(sigma)
    dxx, dyy, dxy2, diff = (BUFFERS.get(f"{tag}{j}", d.shape) for j in range(4))
    cv2.sepFilter2D(d, -1, g2, gk, dst=dxx, borderType=cv2.BORDER_REFLECT)
    cv2.sepFilter2D(d, -1, g, g2k, dst=dyy, borderType=cv2.BORDER_REFLECT)
    cv2.sepFilter2D(d, -1, g1, g1k, dst=dxy2, borderType=cv2.BORDER_REFLECT)
    cv2.subtract(dxx, dyy, dst=diff)
    tr = cv2.add(dxx, dyy, dst=dxx)
    resp = cv2.magnitude(diff, dxy2, magnitude=dyy)
    cv2.min(np.abs(tr, out=work), resp, dst=resp)
    return resp, (tr, diff, dxy2)


def line_response(rel: Relative, scales: tuple[float, ...] = (1.0, 1.8)):
    """Line response ``z`` in noise σ (positive dark, negative bright) over ``scales``.

    Returns ``z``, a function ``normals(ys, xs) -> (nx, ny)`` giving the unit normal across
    the line at any pixels (from the scale that answered best there), ``ds`` (the lightly
    smoothed whitened departure, for the bar test) and the pixel noise ``σ``. They live in
    this thread's working buffers: valid until the next call in the same thread.
    """
    d, sigma, local = rel.whitened
    z = BUFFERS.get("scratches.z", d.shape)
    z.fill(0)
    box = valid_box(rel.valid)
    # z is kept only where valid: the filters run over the valid pixels' box, grown by the
    # widest kernel's reach so that the box itself sees the image, not a window border
    reach = max(len(_kernels(s)[0]) // 2 for s in scales)
    y0, y1, x0, x1 = box or (0, 0, 0, 0)
    y0, y1, x0, x1 = max(0, y0 - reach), min(d.shape[0], y1 + reach), max(0, x0 - reach), min(d.shape[1], x1 + reach)
    win = (slice(y0, y1), slice(x0, x1))
    hessians, index = [], None
    if box is not None:
        shape = (y1 - y0, x1 - x0)
        work, better = BUFFERS.get("scratches.work", shape), BUFFERS.get("scratches.better", shape, np.uint8)
        index = BUFFERS.get("scratches.index", shape, np.uint8)
        index.fill(0)
        # the largest magnitude over the scales (the first of equals), its scale and the
        # sign of its line (−tr): tr of the first scale takes the winner's where a later
        # scale wins, where the normal never reads the first scale's
        mag = trw = None
        for i, s in enumerate(scales):
            resp, hess = _line_parts(d[win], s, work, f"scratches.h{i}.")
            hessians.append(hess)
            if mag is None:
                mag, trw = resp, hess[0]
                continue
            cv2.compare(resp, mag, cv2.CMP_GT, dst=better)  # 255 where better
            cv2.max(mag, resp, dst=mag)
            cv2.copyTo(hess[0], better, trw)
            cv2.max(index, cv2.min(better, i, dst=better), dst=index)
        # the sign of tr onto the (non-negative) magnitude by its bit: np.copysign, 5× faster
        np.bitwise_or(mag.view(np.int32), np.bitwise_and(trw.view(np.int32), _SIGN_BIT, out=work.view(np.int32)),
                      out=mag.view(np.int32))
        cv2.divide(mag, local[win], dst=mag, scale=-1.0)
        valid = BUFFERS.get("scratches.valid", shape, np.uint8)
        np.copyto(valid.view(bool), rel.valid[win])
        # a masked OpenCV operation leaves dst alone where the mask is 0: zeros first
        work.fill(0)
        z[win] = cv2.bitwise_and(mag, mag, dst=work, mask=valid)

    def normals(ys, xs):
        nx = np.empty(len(ys))
        ny = np.empty(len(ys))
        ys, xs = ys - y0, xs - x0
        b = index[ys, xs]
        for i, hess in enumerate(hessians):
            sel = b == i
            nx[sel], ny[sel] = _normals(hess, ys[sel], xs[sel])
        return nx, ny

    ds = cv2.GaussianBlur(d, (0, 0), 0.7, dst=BUFFERS.get("scratches.ds", d.shape))
    return z, normals, ds, sigma


def _bar_test(ds: np.ndarray, ys: np.ndarray, xs: np.ndarray, nx: np.ndarray, ny: np.ndarray,
              sign: np.ndarray) -> np.ndarray:
    """True where the centre is darker (sign +1) / brighter (−1) than both sides at 2 and 3 px."""
    h, w = ds.shape
    c = ds[ys, xs] * sign
    ok = np.ones(len(ys), bool)
    for k in (2.0, 3.0):
        for s in (1, -1):
            x = np.clip(np.rint(xs + s * k * nx).astype(int), 0, w - 1)
            y = np.clip(np.rint(ys + s * k * ny).astype(int), 0, h - 1)
            ok &= c > ds[y, x] * sign + 0.35 * np.abs(c)
    return ok


def zero_outside(z: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``z`` where ``valid``, 0 elsewhere (a new array; OpenCV's masked copy, for an irregular
    mask such as a pattern's dark cells leave, is ten times numpy's boolean assignment)."""
    return cv2.bitwise_and(z, z, mask=valid.view(np.uint8))


def valid_box(valid: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(y0, y1, x0, x1)``: the bounding box of the valid pixels (None if there are none)."""
    rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    if len(rows) == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def nonzero_yx(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero`` of a 2-D mask (the same order), through the flat index: several times
    faster on a sparse mask. A mask of another type than bool is compared with 0 first:
    numpy's search for nonzero bytes is ten times slower than for True."""
    idx = np.flatnonzero(mask if mask.dtype == bool else mask != 0)
    return idx // mask.shape[1], idx % mask.shape[1]


def _components(ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected component labels (1…n−1) of the pixels (ys, xs), and n, as
    ``cv2.connectedComponents`` numbers them over the whole grid.

    Labelled within the pixels' bounding box, whose corner is put on even coordinates:
    OpenCV's block-based labelling numbers components in the order of the first 2×2 block (of
    the grid's block lattice) each appears in, so an even shift keeps the numbering (checked
    against whole-grid labelling on thousands of random masks, one and two threads).
    """
    y0, x0 = int(ys.min()) & ~1, int(xs.min()) & ~1
    mask = np.zeros((int(ys.max()) + 1 - y0, int(xs.max()) + 1 - x0), np.uint8)
    mask[ys - y0, xs - x0] = 1
    n, labels = cv2.connectedComponents(mask, connectivity=8)
    return labels[ys - y0, xs - x0], n


def _chain_length(skel: np.ndarray) -> float:
    """Length of an 8-connected skeleton: orthogonal links 1, diagonal links √2 (a diagonal
    link only where no orthogonal two-step path joins the same pixels)."""
    s = np.pad(skel, 1)
    c = s[1:-1, 1:-1]
    right = c & s[1:-1, 2:]
    down = c & s[2:, 1:-1]
    dr = c & s[2:, 2:] & ~s[1:-1, 2:] & ~s[2:, 1:-1]
    dl = c & s[2:, :-2] & ~s[1:-1, :-2] & ~s[2:, 1:-1]
    return float(right.sum() + down.sum() + np.sqrt(2) * (dr.sum() + dl.sum()))


@dataclass
class _Piece:
    ys: np.ndarray
    xs: np.ndarray
    zmax: float
    polarity: str
    ends: np.ndarray  # (2, 2) end points (x, y), working px
    dirs: np.ndarray  # (2, 2) outward unit directions at the ends
    #: found by the segment test (:func:`_faint_pieces`): its matched-filter sum and variance
    segment: tuple[float, float] | None = None


def _axis_positions(fx: np.ndarray, fy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points' principal axis (the covariance's larger eigenvector, in closed form for 2×2; the
    y axis for two points or fewer) and each point's position along it from their mean."""
    dx, dy = fx - fx.mean(), fy - fy.mean()
    if len(fx) > 2:
        ang = 0.5 * np.arctan2(2.0 * float(dx @ dy), float(dx @ dx) - float(dy @ dy))
        axis = np.array([np.cos(ang), np.sin(ang)])
    else:
        axis = np.array([0.0, 1.0])
    return axis, dx * axis[0] + dy * axis[1]


def _piece(ys, xs, z, polarity) -> _Piece:
    """A piece of line: its pixels, its ends along its principal axis
    (:func:`_axis_positions`) and the outward directions there."""
    fx, fy = xs.astype(np.float64), ys.astype(np.float64)
    axis, t = _axis_positions(fx, fy)
    i0, i1 = int(np.argmin(t)), int(np.argmax(t))
    return _Piece(ys, xs, float(np.abs(z[ys, xs]).max()), polarity,
                  np.array([[fx[i0], fy[i0]], [fx[i1], fy[i1]]]), np.array([-axis, axis]))


#: where the whitening weight (about √B of the backlight, 1 where it is bright) is below this,
#: the backlight is dim enough to hide a scratch: see :func:`_hidden_length`
DIM_WEIGHT = 0.7


def _hidden_length(rel: Relative, a: np.ndarray, b: np.ndarray) -> float:
    """Length of the segment a→b (working px) that the backlight hides: where nothing can be
    measured, or where it is dim (weight under :data:`DIM_WEIGHT`, under about half its
    brightness).

    A scratch darkens what light it crosses and scatters light into the dark around it, so
    over a dark part of a pattern it fades or turns bright (station-model §2): a dark line's
    pieces end there. Crossing a calibrated stripe target, a 12.4 mm scratch broke at every
    dark stripe, 0.85 mm wide where the stripes are 1.8 mm apart, just past the 0.8 mm link
    gap, and was reported as five of 0.7–3.5 mm (second renderer, 0.05 mm/px: its scratches
    there read 0.4–0.65 of their length). Its dark stripes were valid at weights of 0.5–0.65,
    where it read bright at 2–5σ. With a flat only: without one, the weight follows the
    picture's own brightness, and the residue pieces a lattice or a local fit leaves were
    joined across its dim cells into false lines of 5–19 mm (the second renderer's
    photographs: 0.02–0.04 false scratches per clean photograph, false rejects up to 2 %).
    And only over a gap that crosses no unmeasurable pixel: across a light trap its dim rim
    added to the trap, and an arc was joined to a faint piece of noise 2.4 mm away on the
    trap's far side.
    """
    n = int(np.ceil(np.hypot(*(b - a)))) + 1
    t = np.linspace(0, 1, n)
    x = np.clip(np.rint(a[0] + t * (b[0] - a[0])).astype(int), 0, rel.valid.shape[1] - 1)
    y = np.clip(np.rint(a[1] + t * (b[1] - a[1])).astype(int), 0, rel.valid.shape[0] - 1)
    hidden = ~rel.valid[y, x]
    if rel.model == "flat" and not hidden.any():
        hidden = rel.weight[y, x] < np.float32(DIM_WEIGHT)
    return float(hidden.mean() * np.hypot(*(b - a)))


def _along_pattern(piece: _Piece, normals: tuple[float, ...], tol_deg: float) -> bool:
    """True when a piece runs along a pattern edge: its own normal matches the edge's."""
    if not normals or len(piece.ys) < 3:
        return False
    return _across(piece.dirs[1], normals, tol_deg)


def _across(axis, normals: tuple[float, ...], tol_deg: float) -> bool:
    """True when a line along ``axis`` (x, y) has its normal within ``tol_deg`` of one of
    ``normals`` (radians, mod π): it runs along those edges."""
    normal = np.mod(np.arctan2(axis[1], axis[0]) + np.pi / 2, np.pi)
    tol = np.deg2rad(tol_deg)
    return any(min(abs(normal - n), np.pi - abs(normal - n)) < tol for n in normals)


#: without a flat, a piece lying wholly within this many working px of the picture's edge and
#: running along it (within BORDER_ANGLE_DEG) is not judged: the background there is estimated
#: from one side only, and a pattern line cut by the edge leaves a line of residue along it
BORDER_BAND_PX = 6
BORDER_ANGLE_DEG = 20.0


def _along_frame_border(piece: _Piece, rel) -> bool:
    """True when an uncalibrated piece hugs the picture's edge and runs along it (see
    :data:`BORDER_BAND_PX`). A calibrated image's lens lies inside the frame, and a flat has
    no one-sided estimate there: it is never dropped."""
    rows, cols = rel.frame_shape
    if rel.model == "flat" or not rows or len(piece.ys) < 3:
        return False
    gy = piece.ys + rel.origin[1]
    gx = piece.xs + rel.origin[0]
    ax, ay = abs(piece.dirs[1][0]), abs(piece.dirs[1][1])
    along_rows = ay <= np.sin(np.deg2rad(BORDER_ANGLE_DEG))  # runs along a top or bottom edge
    along_cols = ax <= np.sin(np.deg2rad(BORDER_ANGLE_DEG))
    band = BORDER_BAND_PX
    return bool((along_rows and (gy.max() < band or gy.min() >= rows - band))
                or (along_cols and (gx.max() < band or gx.min() >= cols - band)))


#: a line along a pattern edge darker than this (median departure of its pixels) is no
#: residue of the local fit, whose lines along the edges take a few percent
PATTERN_LINE_MAX_CONTRAST = 0.08


def segment_sigma(rel, axis, params: ScratchParams) -> float:
    """The significance a line of faint segments along ``axis`` (x, y) must reach.

    With a flat, the whitened departure is white noise and ``segment_sigma`` is lowered by
    ``flat_segment_factor``, except along the backlight pattern's edges (``rel.edge_normals``):
    there a misregistration between flat and lens leaves its second-order residue as a line,
    coherent along the edge, which a segment's sum does not average down.
    """
    if rel.model != "flat" or _across(axis, rel.edge_normals, params.pattern_angle_deg):
        return params.segment_sigma
    return params.segment_sigma * params.flat_segment_factor


def _unjudged(piece: _Piece, rel, params: ScratchParams) -> bool:
    """True for a piece the background leaves as residue: along a pattern edge that a local
    fit leaves (and no darker than :data:`PATTERN_LINE_MAX_CONTRAST`: a clear scratch that
    happens to run along the target's edges, 23 % over 8 mm in a second renderer photograph,
    was dropped whole), or along the picture's edge without a flat."""
    if _along_frame_border(piece, rel):
        return True
    if not _along_pattern(piece, rel.pattern_normals, params.pattern_angle_deg):
        return False
    return np_median(np.abs(1.0 - rel.rel[piece.ys, piece.xs])) < PATTERN_LINE_MAX_CONTRAST


#: working px off a piece's line that the next piece's end may lie and still continue it
LINK_LATERAL_PX = 2.5


#: two ends join as a kink whose apex the filters lost when each one's ray, ahead of it, meets
#: the other's within this many working px (the line filters' reach round a sharp corner) ...
KINK_REACH_PX = 4.0
#: ... and the line turns there by at most 120° (the rays' directions at least 60° apart)
KINK_MAX_COS = 0.5


def _link(pieces: list[_Piece], gap: float, angle_deg: float, rel: Relative,
          edge_tol_deg: float | None = None) -> list[list[int]]:
    """Groups of piece indices whose ends meet: close, and aligned with the gap between them,
    or, with a flat, meeting at a kink (:data:`KINK_REACH_PX`) unless one of them runs along the
    backlight pattern's edges (within ``edge_tol_deg`` of ``rel.edge_normals``), where a
    misregistration's residue lines meet at the pattern's corners.

    A gap may be longer by the part of it that the backlight hides (a light trap, a dark
    pattern cell or stripe; :func:`_hidden_length`): a scratch that runs across a trap is one
    scratch. Every pair of ends
    is judged at once (arrays over pieces × pieces); only pairs too far apart for the plain
    gap but aligned have their hidden length measured.
    """
    n = len(pieces)
    if n < 2:
        return [[i] for i in range(n)]
    ends = np.stack([p.ends for p in pieces]).astype(np.float64)  # (n, 2 ends, xy)
    dirs = np.stack([p.dirs for p in pieces]).astype(np.float64)
    pol = np.array([p.polarity for p in pieces])
    pairs = np.triu(pol[:, None] == pol[None, :], 1)
    cos_max = np.cos(np.deg2rad(angle_deg))
    # kinks join only with a flat, and not pieces along the pattern's edges
    kink_ok = (np.array([edge_tol_deg is None or not _along_pattern(p, rel.edge_normals, edge_tol_deg) for p in pieces])
               if rel.model == "flat" else None)
    # every pair of ends at once: axes (a's end, b's end, a, b)
    by_end = ends.transpose(1, 0, 2)  # (end, piece, xy)
    v = by_end[None, :, None, :, :] - by_end[:, None, :, None, :]  # from a's end to b's
    dist = np.hypot(v[..., 0], v[..., 1])
    with np.errstate(invalid="ignore", divide="ignore"):
        u = v / dist[..., None]
    da = dirs.transpose(1, 0, 2)[:, None, :, None, :]  # a's end direction
    db = dirs.transpose(1, 0, 2)[None, :, None, :, :]  # b's
    aligned = ((da * u).sum(-1) >= cos_max) & (-(db * u).sum(-1) >= cos_max)
    # or in line: ahead of each end and within LINK_LATERAL_PX of its direction. Across
    # a short gap the ends' pixel positions, a pixel off the line either way, turn the
    # angle between them by more than angle_deg (a broken scratch at a fine pixel size)
    in_line = (((da * v).sum(-1) > 0) & (np.abs(da[..., 0] * v[..., 1] - da[..., 1] * v[..., 0]) <= LINK_LATERAL_PX)
               & (-(db * v).sum(-1) > 0) & (np.abs(db[..., 0] * v[..., 1] - db[..., 1] * v[..., 0]) <= LINK_LATERAL_PX)
               & (-(da * db).sum(-1) >= cos_max))
    aligned |= in_line
    # or, with a flat, a kink whose apex the filters lost (a sharp corner answers no line
    # filter): each end's ray, ahead of it, meets the other's within KINK_REACH_PX.
    # Without one, the background's residue leaves short pieces enough to be joined so
    # into false lines (second renderer photographs: false rejects up by a photograph
    # on four sets of seven)
    if kink_ok is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            cross = da[..., 0] * db[..., 1] - da[..., 1] * db[..., 0]
            s_a = (v[..., 0] * db[..., 1] - v[..., 1] * db[..., 0]) / cross
            t_b = (v[..., 0] * da[..., 1] - v[..., 1] * da[..., 0]) / cross
        kink = ((np.abs(cross) >= np.sin(np.deg2rad(angle_deg))) & ((da * db).sum(-1) <= KINK_MAX_COS)
                & (s_a >= -0.5) & (s_a <= KINK_REACH_PX) & (t_b >= -0.5) & (t_b <= KINK_REACH_PX))
        aligned |= kink & (dist <= gap) & kink_ok[:, None] & kink_ok[None, :]
    near = pairs & (dist <= 8 * gap) & ((dist < 3.0) | aligned)
    linked = np.zeros((n, n), bool)
    for ea in range(2):
        for eb in range(2):
            ok = near[ea, eb] & ~linked
            allowed = ok & (dist[ea, eb] <= gap)
            for i, j in zip(*np.nonzero(ok & (dist[ea, eb] > gap))):
                allowed[i, j] = dist[ea, eb, i, j] - _hidden_length(rel, ends[i, ea], ends[j, eb]) <= gap
            linked |= allowed
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(linked)):
        parent[find(int(i))] = find(int(j))
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


#: the sign bit of a float32 seen as an int32
_SIGN_BIT = np.int32(np.iinfo(np.int32).min)

#: ``claimed`` value of the working-grid pixels of a watermark's rim
MARK_CLAIM = np.iinfo(np.uint16).max


def find_scratches(rel: Relative, *, zone_of=None, pixel_size_mm: float | None = None,
                   params: ScratchParams = ScratchParams(), exclude: np.ndarray | None = None,
                   claimed: np.ndarray | None = None, marks: list | None = None) -> list[Scratch]:
    """Find scratches in a relative transmittance image.

    Parameters
    ----------
    rel : Relative
        From :func:`goggleqc.inspect.background.relative_image` (working grid).
    zone_of : callable, optional
        ``zone_of(xy)`` gives the zone of an object from its (K, 2) full-resolution pixel
        coordinates (:meth:`goggleqc.inspect.lens.LensRegion.zone_of`); None gives ``unknown``.
    pixel_size_mm : float, optional
        mm per full-resolution pixel; without it the mm fields are None.
    params : ScratchParams
    exclude : (m, n) bool ndarray, optional
        Working-grid pixels that belong to found spots: the rim of a round spot answers a
        line filter, but is not a scratch.
    claimed : (m, n) uint16 ndarray, optional
        Zeros in; out, the working-grid pixels of the reported scratches (grown by 2 px) hold
        the scratch's index + 1, so the spot detector can leave the pieces of a scratch alone;
        those of watermark rims hold :data:`MARK_CLAIM`.
    marks : list, optional
        Watermark rims (:class:`~goggleqc.inspect.results.Mark`) are appended here instead of
        being reported as scratches; without a list they are dropped.

    Returns
    -------
    list of Scratch
        Sizes in full-resolution pixels (and mm); ``bbox_px`` in full-resolution pixels.
    """
    if not params.high_sigma >= params.low_sigma > 0:
        raise InputError("ScratchParams: need high_sigma ≥ low_sigma > 0")
    if rel.model in ("flat", "lattice"):
        params = replace(params, high_sigma=params.high_sigma * params.flat_high_factor,
                         min_mean_sigma=params.min_mean_sigma * params.flat_mean_factor)
    f = rel.scale
    z, normals, ds, _ = line_response(rel, params.scales)
    found: list[Scratch] = []
    pieces: list[_Piece] = []
    polarities = (("dark", 1.0, 1.0), ("bright", -1.0, params.bright_factor))
    used = polarities[: 2 if params.bright else 1]
    # candidates of every polarity in one sparse pass; all that follows runs on them (in
    # raster order, as over the whole grid)
    low_all = params.low_sigma * min(k for *_, k in used)
    faint = params.segment_sigma > 0
    # (and, for the segment test, the fainter dark pixels in the same pass)
    cy_all, cx_all = nonzero_yx(np.abs(z) > (min(low_all, params.segment_low) if faint else low_all))
    if faint:
        z_all = z[cy_all, cx_all]
        dim = z_all > np.float32(params.segment_low)
        faint_yx = cy_all[dim], cx_all[dim]
        strong = np.abs(z_all) > np.float32(low_all)
        cy_all, cx_all = cy_all[strong], cx_all[strong]
    for polarity, sign, k in used:
        zc = z[cy_all, cx_all] * np.float32(sign)
        cand = zc > params.low_sigma * k
        if exclude is not None:
            cand &= ~exclude[cy_all, cx_all]
        ys, xs, zc = cy_all[cand], cx_all[cand], zc[cand]
        if len(ys) == 0:
            continue
        nx, ny = normals(ys, xs)
        keep = _bar_test(ds, ys, xs, nx, ny, np.full(len(ys), sign, np.float32))
        ys, xs, zc = ys[keep], xs[keep], zc[keep]
        if len(ys) == 0:
            continue
        lab, n = _components(ys, xs)
        zmax = np.zeros(n, np.float32)
        np.maximum.at(zmax, lab, zc)
        size = np.bincount(lab, minlength=n)
        # a seed above high_sigma, or a long faint line: noise does not chain that far
        seeded = (zmax >= params.high_sigma * k) | (size >= params.long_px)
        sel = seeded[lab]
        ys, xs, lab = ys[sel], xs[sel], lab[sel]
        order = np.argsort(lab, kind="stable")
        ys, xs, lab = ys[order], xs[order], lab[order]
        splits = np.flatnonzero(np.diff(lab)) + 1
        for gy, gx in zip(np.split(ys, splits), np.split(xs, splits)):
            if len(gy) >= 2:
                piece = _piece(gy, gx, z, polarity)
                if not _unjudged(piece, rel, params):
                    pieces.append(piece)
    if faint:
        pieces += [p for p in _faint_pieces(z, rel, *faint_yx, pieces, exclude, params) if not _unjudged(p, rel, params)]
    if params.trace_sigma > 0 and pieces:
        pieces += [p for p in _traced(pieces, z, rel, params) if not _unjudged(p, rel, params)]
    gap_px = max(params.link_gap_px, params.link_gap_mm / pixel_size_mm) if pixel_size_mm else params.link_gap_px
    groups = _link(pieces, gap_px / f, params.link_angle_deg, rel, params.pattern_angle_deg)
    measured = []
    for group in groups:
        members = [pieces[i] for i in group]
        sc = _measure(members, rel, z, f, zone_of, pixel_size_mm, params)
        if sc is not None:
            measured.append((sc, members))
    if len(measured) > params.crowd:
        # dozens of lines are the background's own residue (an uncalibrated pattern's cell
        # edges): a scratch must stand out of that crowd, not just out of the noise. Counted
        # among lines that pass as scratches, so noise fragments that never would (a coating
        # flaw's texture at a low threshold) do not make a crowd that hides a real scratch.
        strength = [sc.score for sc, _ in measured]
        floor = params.crowd_factor * float(np.median(strength))
        measured = [m for m, st in zip(measured, strength) if st >= floor]
    measured = _cut_rim_tails(measured, rel, z, f, zone_of, pixel_size_mm, params, gap_px / f)
    rims, measured = _watermarks(measured, f, pixel_size_mm, params, rel)
    on_target, measured = _on_target(measured, rel, pixel_size_mm, params)
    for mark, members in rims + on_target:
        if marks is not None:
            marks.append(mark)
        if claimed is not None:
            for p in members:
                claimed[p.ys, p.xs] = MARK_CLAIM
    # a second-derivative filter answers beside a line with the opposite sign: a line of one
    # polarity lying along a stronger one of the other is its side lobe, not a scratch
    for sc, members in measured:
        if any(o.polarity != sc.polarity and o.score > sc.score and _overlap(sc.bbox_px, o.bbox_px) > 0.3
               for o, _ in measured):
            continue
        found.append(sc)
        if claimed is not None:
            for p in members:
                claimed[p.ys, p.xs] = len(found)
    if claimed is not None:
        ys, xs = nonzero_yx(claimed)
        if len(ys):
            # dilated within the claimed pixels' box grown by the 2 px reach: nothing beyond changes
            y0, y1 = max(0, int(ys.min()) - 2), int(ys.max()) + 3
            x0, x1 = max(0, int(xs.min()) - 2), int(xs.max()) + 3
            claimed[y0:y1, x0:x1] = cv2.dilate(claimed[y0:y1, x0:x1], np.ones((5, 5), np.uint8))
    return found


#: lines longer than this (working px) need less than ``band_floor`` times the band noise, as
#: the square root of their length: a chain of the grain's blobs, a few pixels each, averages
#: down along its length like any noise
BAND_FLOOR_LENGTH_PX = 20.0


def band_floor(length_px: float, band_sigma: float, params: ScratchParams) -> float:
    """The contrast a line ``length_px`` working px long must reach against noise the filters
    see as ``band_sigma`` (``params.band_floor``; without a flat)."""
    return params.band_floor * band_sigma * float(np.sqrt(BAND_FLOOR_LENGTH_PX / max(length_px, BAND_FLOOR_LENGTH_PX)))


def faint_and_short(sc: Scratch, rel: Relative, pixel_size_mm: float | None, params: ScratchParams) -> bool:
    """True for a line the background's residue, not a scratch, is a likelier cause of: without
    a flat, shorter than ``params.short_line_mm`` (10 working px without a pixel size) and
    fainter than ``params.min_contrast_short_uncalibrated``. Never with a flat."""
    if rel.model == "flat":
        return False
    short_px = (params.short_line_mm / pixel_size_mm if pixel_size_mm
                else params.short_line_mm / WORKING_PIXEL_MM * rel.scale)
    return sc.judged_px < short_px and abs(sc.contrast) < params.min_contrast_short_uncalibrated


def wide_and_faint(sc: Scratch, pixel_size_mm: float | None, params: ScratchParams) -> bool:
    """True for a line as wide and faint as a coating flaw's departure: at least
    ``params.wide_line_mm`` wide and fainter than ``params.wide_line_max_contrast``. A scratch
    is thin: on every development set no true scratch measured wider than 0.59 mm (0.02–0.3 mm
    drawn, at 0.03–0.1 mm/px, through the usual optics and a JPEG's blur). Soft optics (a PSF
    of 1.5–2 px) widen a scratch past that, so this alone does not make a line a flaw: it must
    also lie on one (:func:`goggleqc.inspect.pipeline.inspect_lens`). Needs the pixel size."""
    if not pixel_size_mm:
        return False
    return sc.width_px * pixel_size_mm >= params.wide_line_mm and abs(sc.contrast) < params.wide_line_max_contrast


#: OpenCV's remap takes maps under 32767 (SHRT_MAX) a side; longer runs of points are folded
#: into rows this long
REMAP_ROW = 4096


def sample_points(values: np.ndarray, valid: np.ndarray, px: np.ndarray, py: np.ndarray,
                  outside: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``values`` at working-grid points ``(px, py)`` (float32 arrays of one shape; bilinear,
    ``outside`` beyond the grid) and whether each point's nearest pixel is ``valid``.

    Any number of points: a map with a side of 32767 or more (OpenCV's limit) is folded into
    rows of :data:`REMAP_ROW` and unfolded after. Without a pixel size a watermark's candidate
    circles ran to 34,000 points in one row, and seven photographs of 200 failed with an
    internal error."""
    if max(px.shape) >= 32767:
        shape = px.shape if px.ndim == 2 else (1, px.size)  # as OpenCV returns a 1-D map's
        n = px.size
        rows = -(-n // REMAP_ROW)
        fold = np.full(rows * REMAP_ROW, -1e6, np.float32)  # the padding lies off the grid
        fx, fy = fold.copy(), fold.copy()
        fx[:n], fy[:n] = px.ravel(), py.ravel()
        vals, seen = sample_points(values, valid, fx.reshape(rows, REMAP_ROW), fy.reshape(rows, REMAP_ROW), outside)
        return vals.ravel()[:n].reshape(shape), seen.ravel()[:n].reshape(shape)
    vals = cv2.remap(values, px, py, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=outside)
    seen = cv2.remap(valid.view(np.uint8), px, py, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=0).astype(bool)
    return vals, seen


def departure_at(rel: Relative, px: np.ndarray, py: np.ndarray, polarity: str) -> tuple[np.ndarray, np.ndarray]:
    """The departure ``1 − rel`` (sign flipped for a bright object) at working-grid points, and
    whether each is valid: read from ``rel`` itself (1 where not valid), so no departure image
    of the whole grid is made for a few points."""
    vals, seen = sample_points(rel.rel, rel.valid, px, py, outside=1.0)
    vals = np.float32(1.0) - vals
    if polarity != "dark":
        vals = -vals
    return vals, seen


#: across-line offsets (working px) of the sides the segment test compares a hairline with
SEGMENT_SIDES = (-3.0, -2.0, 2.0, 3.0)
#: largest rms distance (working px) of a group's pixels from its fitted segment
SEGMENT_MAX_SPREAD = 1.0


#: a faint group too bent for one segment is cut into segments about this long (working px)
SEGMENT_CHUNK_PX = 10.0


def _principal_axes(lab: np.ndarray, n: int, fx: np.ndarray, fy: np.ndarray):
    """Per label of ``n``: pixel count, centre, spread across the principal axis (the 2×2
    covariance's smaller eigenvalue), the axis' direction, each pixel's position along it
    and each label's extent along it."""
    cnt = np.bincount(lab, minlength=n).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = np.bincount(lab, fx, n) / cnt, np.bincount(lab, fy, n) / cnt
        sxx = np.bincount(lab, fx * fx, n) / cnt - mx * mx
        syy = np.bincount(lab, fy * fy, n) / cnt - my * my
        sxy = np.bincount(lab, fx * fy, n) / cnt - mx * my
    half_tr, det = (sxx + syy) / 2, sxx * syy - sxy * sxy
    minor = np.maximum(half_tr - np.sqrt(np.maximum(half_tr * half_tr - det, 0)), 0)
    ang = 0.5 * np.arctan2(2 * sxy, sxx - syy)
    ux, uy = np.cos(ang), np.sin(ang)
    t = (fx - mx[lab]) * ux[lab] + (fy - my[lab]) * uy[lab]
    tmin, tmax = np.full(n, np.inf), np.full(n, -np.inf)
    np.minimum.at(tmin, lab, t)
    np.maximum.at(tmax, lab, t)
    return cnt, mx, my, minor, ux, uy, t, tmin, tmax


#: a faint group merged with clutter (too spread for a segment) yields the straight line it
#: holds: the most pixels within this distance (working px) of one line ...
CLUTTER_LINE_HALF_WIDTH = 1.0
#: ... found over directions this far apart (degrees) ...
CLUTTER_LINE_STEP_DEG = 2.0
#: ... their longest run along it with no gap over this (working px) ...
CLUTTER_LINE_GAP_PX = 3.0
#: ... when that run spans at least this many segment chunks
CLUTTER_LINE_MIN_CHUNKS = 2


def _dominant_line(fx: np.ndarray, fy: np.ndarray) -> np.ndarray | None:
    """(n,) bool: the pixels of a cluttered group that make its longest straight line, or None.

    A hairline of 2–3σ per pixel crossing the residue of a coarse-grained photograph's
    background joins the residue's blobs into one group, too spread for a segment: a 9.6 mm
    scratch of 5.5 % was missed whole (second renderer's photographs at 0.1 mm/px, seed 16).
    A line is what blobs are not: many pixels within a pixel of one straight line, with no
    long gap. Every direction is tried (a Hough transform of the group's pixels); the run is
    then judged by the segment test like any other."""
    theta = np.radians(np.arange(0.0, 180.0, CLUTTER_LINE_STEP_DEG))
    cx, cy = fx.mean(), fy.mean()
    r = np.outer(fx - cx, np.cos(theta)) + np.outer(fy - cy, np.sin(theta))  # (n, angles)
    w = 2 * CLUTTER_LINE_HALF_WIDTH
    lo = np.floor(r.min() / w) - 1
    bins = np.floor(r / w - lo).astype(np.int64)
    n_bins = int(bins.max()) + 2
    # counts in each bin and its upper neighbour (a line straddling two bins), per direction
    width = n_bins + 1
    counts = np.bincount((bins + np.arange(len(theta)) * width).ravel(),
                         minlength=len(theta) * width).reshape(len(theta), width)
    pair = counts[:, :-1] + counts[:, 1:]
    a, b = np.unravel_index(int(np.argmax(pair)), pair.shape)
    centre = float(np.median(r[(bins[:, a] == b) | (bins[:, a] == b + 1), a]))
    near = np.abs(r[:, a] - centre) <= CLUTTER_LINE_HALF_WIDTH
    # refined by the principal axis of the pixels near that line, then taken again
    mx, my = fx[near].mean(), fy[near].mean()
    cov = np.cov(np.stack([fx[near] - mx, fy[near] - my]))
    ux, uy = np.linalg.eigh(cov)[1][:, 1]  # the axis of the larger spread
    near = np.abs((fx - mx) * -uy + (fy - my) * ux) <= CLUTTER_LINE_HALF_WIDTH
    along = (fx - mx) * ux + (fy - my) * uy
    idx = np.flatnonzero(near)
    idx = idx[np.argsort(along[idx])]
    breaks = np.flatnonzero(np.diff(along[idx]) > CLUTTER_LINE_GAP_PX)
    runs = np.split(idx, breaks + 1)
    best = max(runs, key=lambda run: float(np.ptp(along[run])) if len(run) else -1.0)
    if len(best) < 3 or float(np.ptp(along[best])) < CLUTTER_LINE_MIN_CHUNKS * SEGMENT_CHUNK_PX:
        return None
    out = np.zeros(len(fx), bool)
    out[best] = True
    return out


def _faint_pieces(z: np.ndarray, rel: Relative, ys: np.ndarray, xs: np.ndarray, pieces: list[_Piece], exclude,
                  params: ScratchParams) -> list[_Piece]:
    """Hairlines too faint for the per-pixel thresholds, found as whole segments.

    A line of 2–3σ per pixel is far above the noise when summed along its length, but its
    pixels above a low threshold are broken up by the noise. They are grouped (3×3 closing),
    each elongated group is fitted by its principal axis (a smoothly bent group is cut into
    segments of :data:`SEGMENT_CHUNK_PX` first: a faint arced scratch 3.9 mm long of 10 % on a
    noisy photograph was missed whole), and the whitened departure is
    summed along that segment against the mean of both sides at 2 and 3 px (a matched bar
    filter, blind to a smooth gradient or a one-sided edge). The sum over its variance is the
    segment's significance; :func:`_measure` judges a group of such pieces by it. ``ys, xs``:
    the pixels where ``z`` exceeds ``segment_low`` (dark), in raster order.
    """
    keep = np.ones(len(ys), bool) if exclude is None else ~exclude[ys, xs]
    if pieces:  # not within 2 px of a line already found
        py = np.concatenate([p.ys for p in pieces])
        px = np.concatenate([p.xs for p in pieces])
        y0, x0 = max(0, int(py.min()) - 2), max(0, int(px.min()) - 2)
        taken = np.zeros((int(py.max()) + 3 - y0, int(px.max()) + 3 - x0), np.uint8)
        taken[py - y0, px - x0] = 1
        taken = cv2.dilate(taken, np.ones((5, 5), np.uint8))
        ty, tx = ys - y0, xs - x0
        inside = (ty >= 0) & (tx >= 0) & (ty < taken.shape[0]) & (tx < taken.shape[1])
        keep[inside] &= taken[ty[inside], tx[inside]] == 0
    ys, xs = ys[keep], xs[keep]
    if len(ys) < 3:
        return []
    # grouped within their bounding box (grown by the closing's reach)
    y0, x0 = max(0, int(ys.min()) - 1), max(0, int(xs.min()) - 1)
    grown = np.zeros((int(ys.max()) + 2 - y0, int(xs.max()) + 2 - x0), np.uint8)
    grown[ys - y0, xs - x0] = 1
    n, labels = cv2.connectedComponents(cv2.dilate(grown, np.ones((3, 3), np.uint8)), connectivity=8)
    lab = labels[ys - y0, xs - x0]
    fx, fy = xs.astype(np.float64), ys.astype(np.float64)
    cnt, mx, my, minor, ux, uy, t, tmin, tmax = _principal_axes(lab, n, fx, fy)
    # a straight hairline merged with clutter is taken out of it as a group of its own
    cluttered = (np.sqrt(minor) > SEGMENT_MAX_SPREAD) & (tmax - tmin >= CLUTTER_LINE_MIN_CHUNKS * SEGMENT_CHUNK_PX)
    cluttered[0] = False
    if cluttered.any():
        n0 = n
        for g in np.flatnonzero(cluttered):
            on = np.flatnonzero(lab == g)
            line = _dominant_line(fx[on], fy[on])
            if line is not None:
                lab[on[line]] = n
                n += 1
        if n > n0:
            cnt, mx, my, minor, ux, uy, t, tmin, tmax = _principal_axes(lab, n, fx, fy)
    # a curved hairline is too bent for one segment: cut into pieces of SEGMENT_CHUNK_PX along
    # its axis, each its own segment (linked again into one line later)
    bent = (np.sqrt(minor) > SEGMENT_MAX_SPREAD) & (tmax - tmin >= 2 * SEGMENT_CHUNK_PX)
    bent[0] = False
    for g in np.flatnonzero(bent):
        # only a smooth bend (a parabola along the axis within SEGMENT_MAX_SPREAD), not a wiggle
        # of noise
        on = lab == g
        tt = t[on]
        across = (fx[on] - mx[g]) * -uy[g] + (fy[on] - my[g]) * ux[g]
        fit = np.polynomial.polynomial.polyfit(tt, across, 2)
        resid = across - np.polynomial.polynomial.polyval(tt, fit)
        bent[g] = float(np.sqrt(np.mean(resid * resid))) <= SEGMENT_MAX_SPREAD
    if bent.any():
        parts = np.ones(n, np.int64)
        parts[bent] = np.floor((tmax[bent] - tmin[bent]) / SEGMENT_CHUNK_PX).astype(np.int64) + 1
        first_id = np.concatenate([[0], np.cumsum(parts)[:-1]])
        k = np.where(bent[lab], np.floor((t - tmin[lab]) / SEGMENT_CHUNK_PX).astype(np.int64), 0)
        lab = first_id[lab] + k
        n = int(parts.sum())
        cnt, mx, my, minor, ux, uy, t, tmin, tmax = _principal_axes(lab, n, fx, fy)
    order = np.argsort(lab, kind="stable")
    ys_s, xs_s, lab_s = ys[order], xs[order], lab[order]
    span = tmax - tmin
    ok = (cnt >= 3) & (span >= params.segment_min_span_px) & (np.sqrt(minor) <= SEGMENT_MAX_SPREAD)
    ok[0] = False
    sel = np.flatnonzero(ok)
    if len(sel) == 0:
        return []
    # sample every selected segment at 1 px steps along its axis, on the line and its sides
    steps = np.floor(span[sel]).astype(int) + 1
    owner = np.repeat(sel, steps)
    along = tmin[owner] + (np.arange(len(owner)) - np.repeat(np.cumsum(steps) - steps, steps))
    cx, cy = mx[owner] + along * ux[owner], my[owner] + along * uy[owner]
    nx, ny = -uy[owner], ux[owner]
    offsets = (0.0,) + SEGMENT_SIDES
    px = np.stack([cx + o * nx for o in offsets]).astype(np.float32)
    py = np.stack([cy + o * ny for o in offsets]).astype(np.float32)
    vals, seen = sample_points(rel.local_units, rel.valid, px, py)
    seen = seen.all(axis=0)
    bar = (vals[0] - vals[1:].mean(axis=0)) * seen
    # variance of one sample: the centre's unit noise plus the mean of the four sides'
    per = np.bincount(owner, bar, n)[sel]
    var = np.bincount(owner, seen.astype(np.float64), n)[sel] * (1.0 + 1.0 / len(SEGMENT_SIDES))
    score = per / np.sqrt(np.maximum(var, 1.0)) * (var > 0)
    out = []
    starts = np.searchsorted(lab_s, sel)
    stops = np.searchsorted(lab_s, sel, side="right")
    for k, g in enumerate(sel):
        # a segment counts towards a scratch when it holds at least half the significance asked
        # (half the significance asked without a flat's lower threshold: the pieces of a
        # hairline that reaches 5σ in all are found at 3σ each as well, and fainter pieces
        # doubled the groups measured at 5 MP for nothing)
        if not score[k] >= params.segment_sigma / 2:
            continue
        py_, px_ = ys_s[starts[k]:stops[k]], xs_s[starts[k]:stops[k]]
        u = np.array([ux[g], uy[g]])
        ends = np.array([[mx[g], my[g]] + tmin[g] * u, [mx[g], my[g]] + tmax[g] * u])
        out.append(_Piece(py_, px_, float(np.abs(z[py_, px_]).max()), "dark", ends, np.array([-u, u]),
                          segment=(float(per[k]), float(var[k]))))
    return out


#: a line is followed on from its pieces' ends in steps this long (working px) ...
TRACE_STEP_PX = 6
#: ... turning by one of these (degrees) and shifting across by one of these (working px) per
#: step, as best fits ...
TRACE_TURNS_DEG = (-8.0, 0.0, 8.0)
TRACE_SHIFTS_PX = (-1.0, 0.0, 1.0)
#: ... by at most this much in all from the piece's own heading (so not round a watermark's
#: rim), for at most this many steps; pieces shorter than this (working px) have no heading
TRACE_MAX_TURN_DEG = 24.0
TRACE_MAX_STEPS = 60
TRACE_MIN_SPAN_PX = 4.0
#: a trace of fewer steps than this is dropped
TRACE_MIN_STEPS = 2


def _traced(pieces: list[_Piece], z: np.ndarray, rel: Relative, params: ScratchParams) -> list[_Piece]:
    """Pieces that continue found pieces past their ends, where a line runs on too faint for
    the per-pixel thresholds and too broken up by the noise for the segment test's grouping.

    From each end of a piece at least :data:`TRACE_MIN_SPAN_PX` long, a step of
    :data:`TRACE_STEP_PX` is tried in a few headings and sideways shifts; the best one's bar
    sum (the whitened departure on the line against both sides of it, as in
    :func:`_faint_pieces`) must reach ``trace_sigma`` σ, and the step becomes a segment piece.
    Every end of one polarity steps at once (one remap per step). A step stops at what cannot
    be measured, at another piece, past :data:`TRACE_MAX_TURN_DEG` of turning, and (with a
    flat) where it would run along the backlight pattern's edges. A trace of fewer than
    :data:`TRACE_MIN_STEPS` steps is dropped unless it reaches another piece: among the many
    residue pieces of a photograph, single steps of the noise lengthened two faint residue
    lines of about 2 mm past the short-line floor on our simulated phone photographs.

    A 9.5 mm scratch of 5 % across a phone photograph was found as three pieces 0.7–2 mm long
    with 2.9 mm of a 2–3σ line between them, and passed its lens (second renderer, seed 8).
    A step's significance is that of the best of its candidates, so a line of faint segments
    that is followed on reads a little more significant than its sum alone would."""
    unit = rel.local_units
    h, w = unit.shape
    # which piece (index + 1) each pixel is or touches: a step stops on another piece only
    taken = np.zeros((h, w), np.float32)
    for i, p in enumerate(pieces):
        taken[p.ys, p.xs] = i + 1
    taken = cv2.dilate(taken, np.ones((3, 3), np.uint8))
    turns = np.deg2rad(np.array(TRACE_TURNS_DEG))
    shifts = np.array(TRACE_SHIFTS_PX)
    s = np.arange(1, TRACE_STEP_PX + 1, dtype=np.float64)
    offsets = np.array((0.0,) + SEGMENT_SIDES)
    var = TRACE_STEP_PX * (1.0 + 1.0 / len(SEGMENT_SIDES))
    out: list[_Piece] = []
    for polarity, sign in (("dark", 1.0), ("bright", -1.0)):
        heads = [(p.ends[e].astype(np.float64), p.dirs[e].astype(np.float64), i + 1) for i, p in enumerate(pieces)
                 if p.polarity == polarity and _span(p) >= TRACE_MIN_SPAN_PX for e in range(2)]
        if not heads:
            continue
        pos = np.array([hd[0] for hd in heads])
        ang = np.array([np.arctan2(hd[1][1], hd[1][0]) for hd in heads])
        owner = np.array([hd[2] for hd in heads], np.float32)
        head = np.arange(len(heads))  # which head each still-running trace started from
        steps: dict[int, list[_Piece]] = {}
        met: set[int] = set()  # traces that reached another piece
        ang0 = ang.copy()
        for _ in range(TRACE_MAX_STEPS):
            if not len(pos):
                break
            # candidates: (ends, turns, shifts); samples along each, on the line and its sides
            a = ang[:, None, None] + turns[None, :, None]
            ux, uy = np.cos(a), np.sin(a)
            ox = pos[:, 0, None, None] - uy * shifts[None, None, :]
            oy = pos[:, 1, None, None] + ux * shifts[None, None, :]
            cx = ox[..., None] + ux[..., None] * s  # (ends, turns, shifts, steps)
            cy = oy[..., None] + uy[..., None] * s
            px = (cx[None] - uy[None, ..., None] * offsets[:, None, None, None, None]).astype(np.float32)
            py = (cy[None] + ux[None, ..., None] * offsets[:, None, None, None, None]).astype(np.float32)
            shape = px.shape
            vals, seen = sample_points(unit, rel.valid, px.reshape(len(offsets), -1), py.reshape(len(offsets), -1))
            vals, seen = vals.reshape(shape) * np.float32(sign), seen.reshape(shape).all(axis=0)
            bar = vals[0] - vals[1:].mean(axis=0)
            score = np.where(seen.all(-1), bar.sum(-1) / np.sqrt(var), -np.inf).reshape(len(pos), -1)
            best = np.argmax(score, axis=1)
            top = score[np.arange(len(pos)), best]
            ti, si = np.unravel_index(best, (len(turns), len(shifts)))
            k = np.arange(len(pos))
            xs = np.rint(cx[k, ti, si]).astype(int)
            ys = np.rint(cy[k, ti, si]).astype(int)
            inside = ((xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)).all(-1)
            ok = (top >= params.trace_sigma) & inside
            new_ang = ang + turns[ti]
            ok &= np.abs(np.angle(np.exp(1j * (new_ang - ang0)))) <= np.deg2rad(TRACE_MAX_TURN_DEG)
            if rel.model == "flat" and rel.edge_normals:
                # not along the backlight pattern's edges: a misregistration between flat and
                # lens leaves a line of residue there, coherent along the edge, that a step's
                # sum does not average down (see segment_sigma)
                ok &= ~np.array([_across((np.cos(a_), np.sin(a_)), rel.edge_normals, params.pattern_angle_deg)
                                 for a_ in new_ang], bool).reshape(ok.shape)
            for i in np.flatnonzero(ok):
                hit = taken[ys[i], xs[i]]
                if ((hit != 0) & (hit != owner[i])).any():
                    ok[i] = False
                    met.add(int(head[i]))
            for i in np.flatnonzero(ok):
                u = np.array([np.cos(new_ang[i]), np.sin(new_ang[i])])
                line_x, line_y = cx[i, ti[i], si[i]], cy[i, ti[i], si[i]]
                ends = np.array([[line_x[0], line_y[0]], [line_x[-1], line_y[-1]]])
                step = _Piece(ys[i], xs[i], float(np.abs(z[ys[i], xs[i]]).max()), polarity, ends,
                              np.array([-u, u]), segment=(float(top[i]) * np.sqrt(var), var))
                steps.setdefault(int(head[i]), []).append(step)
                taken[ys[i], xs[i]] = owner[i]
            pos = np.stack([cx[k, ti, si, -1], cy[k, ti, si, -1]], 1)[ok]
            ang, ang0, owner, head = new_ang[ok], ang0[ok], owner[ok], head[ok]
        # a single step is what the noise gives somewhere among a photograph's many pieces,
        # unless it reaches another piece
        out += [p for k, run in steps.items() if len(run) >= TRACE_MIN_STEPS or k in met for p in run]
    return out


#: across-line offsets (working px) at which a line's mean profile is read for the target test
PROFILE_REACH = 5
#: the profile's own spread that the working grid adds (a pixel's centre is up to half a pixel
#: off the ridge; px², working grid)
PROFILE_GRID_VAR = 1.0 / 12.0 + 1.0 / 12.0


#: dust on the target is a line when its length reaches this many profile σ; a shorter blob
#: (a spot, which a line filter also answers to) is left to the spot detector
TARGET_MIN_ELONGATION = 3.0


def _profile_sigma(members: list, rel: Relative, polarity: str) -> float:
    """Gaussian σ (working px) of a line's mean profile across itself.

    The departure is read at every pixel of the line, across it (each piece's own normal)
    from −PROFILE_REACH to +PROFILE_REACH, averaged along the line; the baseline (the mean at
    the outer two offsets each side) is taken off, and σ follows from the equivalent width
    (integral ÷ peak = √(2π)·σ) over the middle, less the grid's own spread. A scratch on the
    lens is as sharp as the optics; dust on a defocused target is as blurred as its edges.
    """
    offs = np.arange(-PROFILE_REACH, PROFILE_REACH + 1, dtype=np.float64)
    rows, weights = [], []
    for p in members:
        n = np.array([-p.dirs[1][1], p.dirs[1][0]])
        px = (p.xs[None, :] + offs[:, None] * n[0]).astype(np.float32)
        py = (p.ys[None, :] + offs[:, None] * n[1]).astype(np.float32)
        vals, seen = departure_at(rel, px, py, polarity)
        seen = seen.all(axis=0)
        if seen.any():
            rows.append(vals[:, seen].sum(axis=1))
            weights.append(int(seen.sum()))
    if not rows:
        return 0.0
    prof = np.sum(rows, axis=0) / max(sum(weights), 1)
    base = float(np.mean(np.concatenate([prof[:2], prof[-2:]])))
    mid = prof[2:-2] - base
    peak = float(mid[len(mid) // 2 - 1: len(mid) // 2 + 2].max())
    if not peak > 0:
        return 0.0
    eq = float(np.clip(mid, 0, None).sum()) / peak
    return float(np.sqrt(max(eq * eq / (2 * np.pi) - PROFILE_GRID_VAR, 0.0)))


def _on_target(measured: list, rel: Relative, ps: float | None, params: ScratchParams) -> tuple[list, list]:
    """Split measured lines into dust on the defocused backlight target and the rest.

    The camera focuses on the lens: a scratch is as sharp as the optics, however wide it is
    cut, while dust on the target is blurred as much as the pattern's own edges. A line whose
    mean profile across it is that blurred (Gaussian σ at least ``target_width_ratio`` of the
    edges' σ, :attr:`Relative.target_blur_px`; 0 when unknown) and fainter than
    ``target_max_contrast`` is on the target.
    """
    blur_px = rel.target_blur_px
    if not blur_px > 0:
        return [], measured
    marks, rest = [], []
    for sc, members in measured:
        sigma = _profile_sigma(members, rel, sc.polarity) * rel.scale if abs(sc.contrast) < params.target_max_contrast else 0.0
        if sigma >= params.target_width_ratio * blur_px and sc.judged_px >= TARGET_MIN_ELONGATION * sigma:
            marks.append((Mark(kind="target", diameter_px=sc.length_px, contrast=sc.contrast, zone=sc.zone,
                               bbox_px=sc.bbox_px, diameter_mm=sc.length_px * ps if ps else None, arc_deg=0.0),
                          members))
        else:
            rest.append((sc, members))
    return marks, rest


def _circle(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float, float, float, float]:
    """Least-squares circle through points (Kåsa 1976): centre, radius, rms distance from
    the circle and the arc it covers (degrees, in 10° sectors seen from the centre)."""
    x, y = xs.astype(np.float64), ys.astype(np.float64)
    cx, cy, r = _kasa(x, y)
    rms = _circle_rms(x, y, cx, cy, r)
    sectors = np.floor((np.arctan2(y - cy, x - cx) + np.pi) / (2 * np.pi) * 36).astype(int) % 36
    return float(cx), float(cy), r, rms, 10.0 * np.count_nonzero(np.bincount(sectors, minlength=36))


def _kasa(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Centre and radius of :func:`_circle`'s least-squares circle through float64 points.

    ``x² + y² ≈ a·x + b·y + c`` about the points' mean, where the normal equations split: ``c``
    is the mean of ``u² + v²`` and ``(a, b)`` a 2×2 solve. In closed form: 33 µs a fit against
    42–55 µs for ``np.linalg.lstsq`` here, and no BLAS call (OpenBLAS's worker threads ran
    1.5 M instructions per 1.3 MP benchmark frame under callgrind, on a core the other frame's
    worker needs). The same circle to 4e-8 of its radius (5,000 random arcs and lines); points
    on one straight row or column (no circle through them) go to ``np.linalg.lstsq`` as before.
    """
    mx, my = float(x.mean()), float(y.mean())
    u, v = x - mx, y - my
    w = u * u + v * v
    suu, svv, suv = float(u @ u), float(v @ v), float(u @ v)
    det = suu * svv - suv * suv
    if not det > 1e-12 * suu * svv:
        a = np.stack([x, y, np.ones_like(x)], 1)
        sol = np.linalg.lstsq(a, x * x + y * y, rcond=None)[0]
        cx, cy = float(sol[0] / 2), float(sol[1] / 2)
        return cx, cy, float(np.sqrt(max(sol[2] + cx * cx + cy * cy, 0.0)))
    suw, svw = float(u @ w), float(v @ w)
    hx, hy = (svv * suw - suv * svw) / (2 * det), (suu * svw - suv * suw) / (2 * det)
    return hx + mx, hy + my, float(np.sqrt(max(float(w.mean()) + hx * hx + hy * hy, 0.0)))


def _circle_rms(xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, r: float) -> float:
    """The rms distance of points from the circle of centre ``(cx, cy)`` and radius ``r``."""
    return float(np.sqrt(np.mean((np.hypot(xs - cx, ys - cy) - r) ** 2)))


def _circles_rms(xs: np.ndarray, ys: np.ndarray, cx: np.ndarray, cy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """:func:`_circle_rms` of the same points from many circles at once (1-D ``cx``, ``cy``, ``r``)."""
    d = np.hypot(xs[None, :] - cx[:, None], ys[None, :] - cy[:, None]) - r[:, None]
    return np.sqrt(np.mean(d * d, axis=1))


def _on_circle(xs, ys, f: int, ps: float | None, params: ScratchParams):
    """The circle fit of a line's pixels when they lie on a circle of a watermark's size."""
    if len(xs) < 8:
        return None
    cx, cy, r, rms, arc = _circle(xs, ys)
    d = 2 * r * f
    lo, hi = params.mark_diameter_mm
    sized = lo <= d * ps <= hi if ps else d >= params.mark_min_diameter_px
    return (cx, cy, r, arc) if sized and rms <= params.mark_max_rms * r else None


#: an arc of a watermark's circle seen over less than ``mark_min_arc_deg`` is traced round
#: the rest of its circle when it covers at least this much of it (degrees) ...
MARK_TRACE_MIN_ARC = 60.0
#: ... and is a rim when the circle's unseen part darkens, against both its sides, by at least
#: this fraction of the arc's own contrast ...
MARK_TRACE_FRACTION = 0.1
#: ... at this significance (mean over its standard error), over at least half of it seen
MARK_TRACE_SIGMA = 4.0


#: an arc's circle is traced at its fitted radius and at these fractions off it (the arc held
#: in place)
MARK_TRACE_RADII = (0.0, -0.04, 0.04, -0.08, 0.08)


def _traced_ring(rel, cx: float, cy: float, r: float, xs: np.ndarray, ys: np.ndarray, contrast: float) -> bool:
    """True when the circle through a faint arc darkens all round, at its fitted radius or one
    a few percent off (:func:`_traced_circle`).

    A circle fitted to an arc of 60–140° is placed a few percent off in radius, along the
    arc's bisector: 3 px on a 7 mm rim, while the rim of a dried drop is a pixel or two wide,
    so the trace ran beside it (a watermark's 6 mm arc failed a clean photograph). The circle
    is also traced at radii a few percent either side, its centre moved along the bisector so
    that it still passes through the arc."""
    ang = np.arctan2(float(np.mean(ys - cy)), float(np.mean(xs - cx)))
    ux, uy = np.cos(ang), np.sin(ang)
    mx, my = cx + r * ux, cy + r * uy
    for k in MARK_TRACE_RADII:
        rr = r * (1.0 + k)
        if _traced_circle(rel, mx - rr * ux, my - rr * uy, rr, xs, ys, contrast):
            return True
    return False


def _traced_circle(rel, cx: float, cy: float, r: float, xs: np.ndarray, ys: np.ndarray, contrast: float,
                   fraction: float = MARK_TRACE_FRACTION, sigma: float = MARK_TRACE_SIGMA, even: bool = False) -> bool:
    """True when the circle ``(cx, cy, r)`` (working px) through a faint arc darkens all round.

    A watermark's rim is often seen above the noise along part of its circle only. Abrasion
    does not curl round a point: the rest of a scratch's circle is clear, while a dried drop's
    rim runs on round it, too faint to find pixel by pixel but plain when the departure along
    the whole unseen part (against the circle's two sides, 2.5 px in and out) is read: its
    median must reach ``fraction`` of the arc's contrast and ``sigma`` standard errors.

    ``even``: the darkening must also be spread round the circle, not gathered on one stretch
    of it (a circle that runs along another dark curve for a while): the unseen part is cut
    into arcs of :data:`MARK_EVEN_ARC_PX` and :data:`MARK_EVEN_SHARE` of them must each darken
    by at least :data:`MARK_EVEN_LEVEL` of the median.
    """
    seen = np.unique(np.floor((np.arctan2(ys - cy, xs - cx) + np.pi) / (2 * np.pi) * 36).astype(int) % 36)
    n = max(36, int(2 * np.pi * r))
    a = np.linspace(-np.pi, np.pi, n, endpoint=False)
    sector = np.floor((a + np.pi) / (2 * np.pi) * 36).astype(int) % 36
    near = np.zeros(36, bool)
    for k in seen:  # the arc's own sectors and one beside each
        near[[(k - 1) % 36, k, (k + 1) % 36]] = True
    a = a[~near[sector]]
    if a.size < 12:
        return False
    def read(rad):
        # the departure 1 − rel, bilinear (a rim a pixel wide is read at its height wherever
        # the circle crosses it), sampled only where the circle runs
        v, ok = departure_at(rel, (cx + rad * np.cos(a)).astype(np.float32)[None],
                             (cy + rad * np.sin(a)).astype(np.float32)[None], "dark")
        return v[0], ok[0]

    parts = [read(rad) for rad in (r - 0.5, r, r + 0.5)]
    ring = np.mean([v for v, _ in parts], axis=0)
    inner, ok1 = read(max(r - 2.5, 0.5))
    outer, ok2 = read(r + 2.5)
    ok = parts[0][1] & parts[1][1] & parts[2][1] & ok1 & ok2
    if ok.sum() < max(12, 0.5 * a.size):
        return False
    c = (ring - (inner + outer) / 2)[ok].astype(np.float64)
    # the median and its standard error: a rim darkens all round, while the line's own
    # unfound continuation, where the circle runs tangent to it past its found end, darkens a
    # few points only (a straight 3 mm scratch of 7.6 % read 6.2σ on its circle's rest by
    # the mean, five of 65 points at 3-4 %, the rest at 0.3 %, and was taken for a rim)
    level = np_median(c)
    se = 1.2533 * 1.4826 * np_median(np.abs(c - level)) / np.sqrt(c.size) + 1e-9
    if not (level >= fraction * abs(contrast) and level / se >= sigma):
        return False
    if not even:
        return True
    # the points read, in order round the circle and evenly spaced on it, cut into arcs
    m = c.size
    n_arcs = max(MARK_EVEN_MIN_ARCS, int(m * 2 * np.pi * r / n // MARK_EVEN_ARC_PX))
    which = np.arange(m) * n_arcs // m
    arcs = np.bincount(which, c, n_arcs) / np.bincount(which, None, n_arcs)
    return float(np.mean(arcs >= MARK_EVEN_LEVEL * level)) >= MARK_EVEN_SHARE


#: the evenness of a traced circle's darkening (:func:`_traced_circle`): arcs of this length
#: (working px, at least this many), this share of which darken by this fraction of the median
MARK_EVEN_ARC_PX = 6.0
MARK_EVEN_MIN_ARCS = 4
MARK_EVEN_SHARE = 0.8
MARK_EVEN_LEVEL = 0.5


#: a dark line fainter than this, whose own circle is not a rim (too short to place it, or
#: bent off it by the noise), is tried as a piece of a watermark's rim: circles through its
#: two ends, of every drop's radius and on either side ...
MARK_SHORT_MAX_CONTRAST = 0.15
#: ... radii half a working pixel apart ...
MARK_SHORT_RADIUS_STEP_PX = 0.5
#: ... and one whose unseen part darkens by at least this fraction of the line's contrast, at
#: this significance, makes it a rim (more than MARK_TRACE_SIGMA: dozens of circles are tried;
#: the arc of the second renderer's photograph that this was made for passes at 9σ and at
#: 0.3 of its contrast)
MARK_SHORT_FRACTION = 0.1
MARK_SHORT_SIGMA = 6.0
#: ... traced in full for at most this many circles, those whose coarse reading darkens most
MARK_SHORT_TRACES = 4
#: ... covering at most this much of the circle (degrees) ...
MARK_SHORT_MAX_ARC = 90.0
#: ... each the best of those up to a pixel off in centre and radius (working px)
MARK_SHORT_NUDGE_PX = (-1.0, -0.5, 0.0, 0.5, 1.0)


def _short_arc_rim(rel, xs: np.ndarray, ys: np.ndarray, contrast: float, f: int, ps: float | None,
                   params: ScratchParams):
    """The circle ``(cx, cy, r, arc)`` of a watermark's rim that a short faint line is a piece
    of, or None.

    A dried drop's rim is often seen along a short stretch only, where it crosses a dark
    line of the target or the noise is kindest; under 60° of its circle the line's own
    curvature does not place the circle (a 37° arc of a 7.4 mm rim fitted a 4.3 mm circle),
    and it was reported as a scratch: on the second renderer's photographs (seed 4) two
    false rejects in 113 good lenses were such arcs. Nor does it in a grainy photograph up to
    90°: a 70° arc of a 4.5 mm rim, bent by the JPEG grain, fitted a 3 mm circle (seed 16).
    Every circle of a drop's size through the line's two ends, on either side, covering up to
    :data:`MARK_SHORT_MAX_ARC` of it, that the line lies on (MARK_MEMBER_RMS) is read
    coarsely; the :data:`MARK_SHORT_TRACES` that darken most are each moved up to a pixel
    (:data:`MARK_SHORT_NUDGE_PX`: a rim is a pixel or two wide) and the best placed is traced
    round in full (:func:`_traced_circle`): the rest of the circle must darken, evenly."""
    if len(xs) < 5 or abs(contrast) >= MARK_SHORT_MAX_CONTRAST:
        return None
    fx, fy = xs.astype(np.float64), ys.astype(np.float64)
    mx, my = fx.mean(), fy.mean()
    _, t = _axis_positions(fx, fy)
    length = float(np.ptp(t)) + 1.0
    # the circle runs through both ends (the mean of the pixels in the last working px at
    # each), so a radius fixes its centre on the chord's bisector, on one side or the other
    near0, near1 = t <= t.min() + 1.0, t >= t.max() - 1.0
    e0 = np.array([fx[near0].mean(), fy[near0].mean()])
    e1 = np.array([fx[near1].mean(), fy[near1].mean()])
    half = float(np.hypot(*(e1 - e0))) / 2
    if half < 1.0:
        return None
    mid = (e0 + e1) / 2
    nx, ny = -(e1 - e0)[1] / (2 * half), (e1 - e0)[0] / (2 * half)
    if ps:
        lo, hi = (d / 2 / (ps * f) for d in params.mark_diameter_mm)
    else:
        lo, hi = params.mark_min_diameter_px / 2 / f, 10 * params.mark_min_diameter_px / f
    lo = max(lo, half / np.sin(np.radians(MARK_SHORT_MAX_ARC) / 2))  # under MARK_SHORT_MAX_ARC of its circle
    if lo > hi:
        return None
    # every radius on a step, each on both sides of the chord (interleaved, as the traces'
    # tie-breaking order follows it)
    radii = np.repeat(np.arange(lo, hi + 1e-9, MARK_SHORT_RADIUS_STEP_PX), 2)
    side = np.tile([1.0, -1.0], len(radii) // 2)
    reach = np.sqrt(np.maximum(radii * radii - half * half, 0.0))
    cxs, cys = mid[0] + side * nx * reach, mid[1] + side * ny * reach
    on = _circles_rms(fx, fy, cxs, cys, radii) <= np.maximum(MARK_MEMBER_RMS * radii, 1.0)
    hyps = list(zip(radii[on].tolist(), cxs[on].tolist(), cys[on].tolist()))
    if not hyps:
        return None
    mean, use = _coarse_rings(rel, hyps, mx, my, length)
    order = [i for i in np.argsort(-mean) if use[i] >= 24]
    dr, dx, dy = (np.ravel(g) for g in np.meshgrid(*[np.array(MARK_SHORT_NUDGE_PX)] * 3, indexing="ij"))
    tried = set()
    for i in order[:MARK_SHORT_TRACES]:
        # a rim is a pixel or two wide, and the circles through the line's two ends are
        # placed to a pixel (its ends) and a step of radius: the best of the circles up to a
        # pixel off in centre and radius that the line still lies on is traced
        r0, cx0, cy0 = hyps[i]
        rn, cxn, cyn = r0 + dr, cx0 + dx, cy0 + dy
        ok = _circles_rms(fx, fy, cxn, cyn, rn) <= np.maximum(MARK_MEMBER_RMS * rn, 1.0)
        near = list(zip(rn[ok].tolist(), cxn[ok].tolist(), cyn[ok].tolist()))
        m, _ = _coarse_rings(rel, near, mx, my, length)
        r, cx, cy = near[int(np.argmax(m))]
        if (r, cx, cy) in tried or m.max() < MARK_SHORT_FRACTION * abs(contrast):
            continue
        tried.add((r, cx, cy))
        if _traced_circle(rel, cx, cy, r, xs, ys, contrast, MARK_SHORT_FRACTION, MARK_SHORT_SIGMA, even=True):
            return float(cx), float(cy), float(r), float(np.degrees(2 * np.arcsin(min(half / r, 1.0))))
    return None


def _coarse_rings(rel, hyps: list, mx: float, my: float, length: float) -> tuple[np.ndarray, np.ndarray]:
    """Every circle ``(r, cx, cy)`` of ``hyps`` read at once, coarsely: the mean darkening of
    the ring against 2.5 px either side at 72 points, the line's own stretch (centred on
    ``(mx, my)``, ``length`` long) and 10° beside it left out; and how many points were read."""
    r_, cx_, cy_ = (np.array(v, np.float64)[:, None] for v in zip(*hyps))
    a = np.linspace(-np.pi, np.pi, 72, endpoint=False)[None, :]
    away = np.abs((a - np.arctan2(my - cy_, mx - cx_) + np.pi) % (2 * np.pi) - np.pi) > length / (2 * r_) + np.radians(10)
    reads = []
    for dr in (0.0, -2.5, 2.5):
        rr = np.maximum(r_ + dr, 0.5)
        v, ok = departure_at(rel, (cx_ + rr * np.cos(a)).astype(np.float32).reshape(1, -1),
                             (cy_ + rr * np.sin(a)).astype(np.float32).reshape(1, -1), "dark")
        reads.append((v.reshape(r_.shape[0], -1), ok.reshape(r_.shape[0], -1)))
    use = away & reads[0][1] & reads[1][1] & reads[2][1]
    bar = reads[0][0] - (reads[1][0] + reads[2][0]) / 2
    return (bar * use).sum(1) / np.maximum(use.sum(1), 1), use.sum(1)


#: each of the lines joined into one rim lies on the joint circle: its rms distance from it at
#: most this fraction of the radius (or a working pixel)
MARK_MEMBER_RMS = 0.15


def _off_circle(members: list, fit) -> float:
    """The rms distance (working px) of one line's pixels (``members``, its pieces) from the
    circle ``fit``.

    The joint circle's own rms is loose (0.2·r: a drop's outline is irregular), and a long
    curved scratch joined with a short line beside it fits it that well: the pair covered
    half the circle, and a 12.6 mm scratch of 15 % was taken for a rim. So each line must
    follow the circle on its own (:data:`MARK_MEMBER_RMS`): rims of the simulators' drops do
    within 0.14·r (95 %), scratches caught with them lay 0.2–0.5·r off."""
    xs = np.concatenate([p.xs for p in members]).astype(np.float64)
    ys = np.concatenate([p.ys for p in members]).astype(np.float64)
    return _circle_rms(xs, ys, *fit[:3])


#: a rim is round: its circle fits its pixels at least this many times better (rms) than the
#: best three straight pieces do. Drops' rims of half a circle or more in the second
#: renderer's photographs (seeds 4 and 5, 45 rims): 2.1–9.8; a kinked scratch of 13 %, 7 mm
#: long, whose three legs lay round a light trap (our calibrated set, seed 502): 0.70
MARK_ROUND_RATIO = 1.3


def _polyline_rms(xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, steps: int = 24) -> float:
    """rms distance of points from the best chain of three straight pieces, the points taken in
    order round ``(cx, cy)`` from the widest gap; breakpoints on a grid of ``steps``. Each
    piece is a total-least-squares line, its squared distances summed from prefix sums."""
    ang = np.arctan2(ys - cy, xs - cx)
    order = np.argsort(ang)
    a = ang[order]
    start = int(np.argmax(np.diff(np.concatenate([a, [a[0] + 2 * np.pi]])))) + 1
    order = np.roll(order, -start)
    x, y = xs[order].astype(np.float64), ys[order].astype(np.float64)
    x, y = x - x.mean(), y - y.mean()
    n = len(x)
    cum = [np.concatenate([[0.0], np.cumsum(v)]) for v in (np.ones(n), x, y, x * x, y * y, x * y)]

    def sq(a0, a1):
        """Summed squared distances of points a0:a1 from their own line (arrays of bounds)."""
        m, sx, sy, sxx, syy, sxy = (c[a1] - c[a0] for c in cum)
        m = np.maximum(m, 1.0)
        vxx, vyy, vxy = sxx / m - (sx / m) ** 2, syy / m - (sy / m) ** 2, sxy / m - sx * sy / m ** 2
        lam = (vxx + vyy) / 2 - np.sqrt(((vxx - vyy) / 2) ** 2 + vxy ** 2)
        return m * np.maximum(lam, 0.0)

    cuts = np.unique(np.linspace(2, n - 2, steps).astype(int))
    i, j = np.meshgrid(cuts, cuts, indexing="ij")
    ok = j >= i + 2
    i, j = i[ok], j[ok]
    if len(i) == 0:
        return 0.0
    total = sq(np.zeros_like(i), i) + sq(i, j) + sq(j, np.full_like(j, n))
    return float(np.sqrt(total.min() / n))


def _round(xs: np.ndarray, ys: np.ndarray, fit) -> bool:
    """True when pixels on a circle's arc follow the circle rather than three straight pieces
    (:data:`MARK_ROUND_RATIO`): a drop's rim is round, a kinked scratch round an obstacle is not.
    Judged on arcs of half a circle or more, where three pieces cannot follow a circle closely."""
    cx, cy, r = fit[:3]
    return _polyline_rms(xs, ys, cx, cy) >= MARK_ROUND_RATIO * max(_circle_rms(xs, ys, cx, cy, r), 0.25)


#: a line's pixels that lie within this fraction of the radius (or RIM_TAIL_MIN_PX) of a
#: circle fitted to most of them are its rim ...
RIM_INLIER = 0.15
#: ... and a run of the rest whose far end lies at least this fraction of the radius off the
#: circle (and ≥ RIM_TAIL_MIN_PX working px) is a line of its own that touches the rim
RIM_TAIL_OFF = 0.3
RIM_TAIL_MIN_PX = 2.0
#: A stretch of a rim that darkens at least RIM_STREAK_RATIO times the rim's median, and at
#: least a scratch's RIM_STREAK_MIN_CONTRAST, over RIM_STREAK_MIN_PX working px of arc or
#: more (and RIM_STREAK_MIN_MM), is a scratch lying along the rim. A drop's deposit is
#: uneven (our simulator draws it 1–2.5× from its faintest to its strongest, so at most
#: about 1.5× its median), but a scratch is a line of its own: 2.6 mm of 13.6 % lay within
#: 0.15 of the radius of a 6 mm watermark of 2.7 % and was lost with it (second renderer's
#: photographs at 0.04 mm/px, seed 11).
RIM_STREAK_RATIO = 2.5
RIM_STREAK_MIN_CONTRAST = 0.05
RIM_STREAK_MIN_PX = 8
RIM_STREAK_MIN_MM = 0.5


def _rim_fit(xs: np.ndarray, ys: np.ndarray, f: int, ps: float | None, params: ScratchParams):
    """A circle of a watermark's size fitted to most of a line's pixels, ignoring a part that
    leaves it: ``(fit, inlier mask)`` when the inliers make a rim of ``mark_min_arc_deg`` or
    more, round (:func:`_round`); else None. Trimmed least squares: each fit keeps the pixels
    near the last one."""
    keep = np.ones(len(xs), bool)
    for it in range(4):
        if keep.sum() < 16:
            return None
        cx, cy, r = _kasa(xs[keep], ys[keep])
        res = np.abs(np.hypot(xs - cx, ys - cy) - r)
        new = res <= (_percentile(res, 70) if it == 0 else max(RIM_INLIER * r, RIM_TAIL_MIN_PX))
        if it and np.array_equal(new, keep):
            break
        keep = new
    if keep.sum() < 16:
        return None
    fit = _on_circle(xs[keep], ys[keep], f, ps, params)
    if fit is None or fit[3] < params.mark_min_arc_deg or not _round(xs[keep], ys[keep], fit):
        return None
    return fit, keep


def _rim_streaks(rel: Relative, xs: np.ndarray, ys: np.ndarray, cx: float, cy: float, r: float,
                 ps: float | None, f: int) -> np.ndarray:
    """(n,) bool: the rim pixels ``xs, ys`` (working px, on the circle ``cx, cy, r``) that lie
    in a stretch darker than the rim itself (:data:`RIM_STREAK_RATIO`).

    The rim is read in bins of one working pixel of arc: each bin's darkest departure, then
    the median of three neighbouring bins (a dip of one bin does not break a stretch).
    """
    dep, _ = departure_at(rel, xs.astype(np.float32), ys.astype(np.float32), "dark")
    dep = np.ravel(dep)
    n_bins = max(3, int(np.ceil(2 * np.pi * r)))
    bins = np.minimum(((np.arctan2(ys - cy, xs - cx) + np.pi) * (n_bins / (2 * np.pi))).astype(int), n_bins - 1)
    darkest = np.full(n_bins, -np.inf, np.float32)
    np.maximum.at(darkest, bins, dep)
    seen = np.isfinite(darkest)
    median = np_median(darkest[seen])
    darkest[~seen] = median
    smooth = np.median(np.stack([np.roll(darkest, 1), darkest, np.roll(darkest, -1)]), axis=0)
    strong = smooth >= max(RIM_STREAK_RATIO * median, RIM_STREAK_MIN_CONTRAST)
    if strong.all() or not strong.any():  # a ring all strong has no stretch standing out of it
        return np.zeros(len(xs), bool)
    # runs of strong bins round the circle (start after a weak bin, so none wraps)
    start = int(np.argmin(strong))
    order = np.roll(np.arange(n_bins), -start)
    run_id = np.cumsum(np.r_[True, strong[order][1:] != strong[order][:-1]])
    min_bins = max(RIM_STREAK_MIN_PX, RIM_STREAK_MIN_MM / (ps * f) if ps else 0.0)
    keep = np.zeros(n_bins, bool)
    for k in np.unique(run_id[strong[order]]):
        members = order[run_id == k]
        if len(members) >= min_bins:
            keep[members] = True
    return keep[bins]


def _far_darker(a: float, b: float) -> bool:
    """Whether one of two dark lines' contrasts is a scratch's beside the other's rim
    (:data:`RIM_STREAK_RATIO`, :data:`RIM_STREAK_MIN_CONTRAST`)."""
    lo, hi = sorted((abs(a), abs(b)))
    return hi >= max(RIM_STREAK_RATIO * lo, RIM_STREAK_MIN_CONTRAST)


def _cut_rim_tails(measured: list, rel: Relative, z, f: int, zone_of, ps, params: ScratchParams, gap: float) -> list:
    """Cut a scratch off the rim of a watermark it runs into.

    Where a scratch touches a dried drop's rim, the two are one connected line; read whole it
    fits no circle, or fits one loosely, and was taken for the rim (a closed ring of a drop's
    size, :func:`goggleqc.inspect.spots.separate`): a 4.8 mm scratch of 13 % that ran into a
    watermark was lost with it (second renderer's photographs, seed 8). So a dark line most
    of whose pixels make a round rim of half a circle or more (:func:`_rim_fit`) is split:
    the rim is one line, and each run of the rest that leaves the circle (its far end
    ``RIM_TAIL_OFF`` of the radius off it) is measured as a line of its own (runs linked
    again as scratches are). A run that leaves the circle and comes back to it is a bulge of
    the drop's irregular outline and stays with the rim. So is a stretch of the rim itself
    that is much darker than the rest (:func:`_rim_streaks`): a scratch lying along it. Lines
    with neither are as they were.
    """
    out = []
    for sc, members in measured:
        xs = np.concatenate([p.xs for p in members])
        ys = np.concatenate([p.ys for p in members])
        found = _rim_fit(xs.astype(np.float64), ys.astype(np.float64), f, ps, params) if sc.polarity == "dark" and len(xs) >= 24 else None
        if found is None:
            out.append((sc, members))
            continue
        (cx, cy, r, _), inlier = found
        tol = max(RIM_INLIER * r, RIM_TAIL_MIN_PX)
        streak = np.zeros(len(xs), bool)
        streak[inlier] = _rim_streaks(rel, xs[inlier], ys[inlier], cx, cy, r, ps, f)
        rest = ~inlier
        tails, bulges = [], np.zeros(len(xs), bool)
        for idx, is_streak in ((np.flatnonzero(rest), False), (np.flatnonzero(streak), True)):
            if not len(idx):
                continue
            lab, n = _components(ys[idx], xs[idx])
            for k in range(1, n):
                sel = idx[lab == k]
                piece = _piece(ys[sel], xs[sel], z, sc.polarity) if len(sel) >= 3 else None
                leaves = piece is not None and (np.abs(np.hypot(piece.ends[:, 0] - cx, piece.ends[:, 1] - cy) - r).max()
                                                >= max(RIM_TAIL_OFF * r, tol + RIM_TAIL_MIN_PX))
                if piece is not None and (is_streak or leaves):
                    tails.append(piece)
                elif is_streak:
                    streak[sel] = False  # too small to be a line: it stays with the rim
                else:
                    bulges[sel] = True
        if not tails:
            out.append((sc, members))
            continue
        rim_sel = (inlier & ~streak) | bulges
        rim = _piece(ys[rim_sel], xs[rim_sel], z, sc.polarity)
        for group in [[rim]] + [[tails[i] for i in g] for g in _link(tails, gap, params.link_angle_deg, rel)]:
            part = _measure(group, rel, z, f, zone_of, ps, params)
            if part is not None:
                out.append((part, group))
    return out


def _length_weighted_contrast(lines: list) -> float:
    """The contrast of lines read as one, each weighted by its length."""
    return float(np.average([sc.contrast for sc in lines], weights=[sc.judged_px for sc in lines]))


def _watermarks(measured: list, f: int, ps: float | None, params: ScratchParams, rel=None) -> tuple[list, list]:
    """Split measured lines into watermark rims and scratches (see ScratchParams).

    A rim often breaks into arcs that the end-to-end linking does not join (they turn too
    fast); arcs lying on one circle are one rim, and their arcs add up. A dark arc of at least
    :data:`MARK_TRACE_MIN_ARC` whose circle, traced round, darkens all the way is a rim too
    (:func:`_traced_ring`).
    """
    cand = []
    for k, (sc, members) in enumerate(measured):
        if sc.polarity != "dark":
            continue
        xs = np.concatenate([p.xs for p in members])
        ys = np.concatenate([p.ys for p in members])
        if len(xs) >= 5:
            # a short arc's own circle is poorly placed: judge arcs together below
            cx, cy, r, _, _ = _circle(xs, ys)
            cand.append((k, (cx, cy, r), xs, ys))
    parent = {k: k for k, *_ in cand}

    def find(k):
        while parent[k] != k:
            k = parent[k]
        return k

    for i, (ka, fa, xa, ya) in enumerate(cand):
        for kb, fb, xb, yb in cand[i + 1:]:
            # two arcs lying on one circle of a watermark's size are one rim, unless one is
            # far darker than the other: a scratch lying along the rim (:func:`_rim_streaks`)
            near = (np.hypot(xa.mean() - xb.mean(), ya.mean() - yb.mean()) * f * (ps or 1.0)
                    <= (params.mark_diameter_mm[1] if ps else 20 * params.mark_min_diameter_px))
            if (near and not _far_darker(measured[ka][0].contrast, measured[kb][0].contrast)
                    and _on_circle(np.concatenate([xa, xb]), np.concatenate([ya, yb]), f, ps, params) is not None):
                parent[find(ka)] = find(kb)
    clusters: dict[int, list[int]] = {}
    for k, *_ in cand:
        clusters.setdefault(find(k), []).append(k)
    rims, taken = [], set()

    def rim_fit(ks):
        """The circle of lines ``ks`` when they are a rim, and the lines lying on it; else None.

        A line off the joint circle (:func:`_off_circle`) is not part of the rim: the worst is
        left out and the rest fitted again."""
        ks = list(ks)
        while True:
            members = [p for k in ks for p in measured[k][1]]
            xs = np.concatenate([p.xs for p in members])
            ys = np.concatenate([p.ys for p in members])
            fit = _on_circle(xs, ys, f, ps, params)
            if fit is None:
                return None
            off = [_off_circle(measured[k][1], fit) for k in ks] if len(ks) > 1 else [0.0]
            worst = int(np.argmax(off))
            if off[worst] <= max(MARK_MEMBER_RMS * fit[2], 1.0):
                break
            del ks[worst]
        if fit[3] >= params.mark_min_arc_deg and not _round(xs, ys, fit):
            return None
        if fit[3] < params.mark_min_arc_deg:
            arc_contrast = _length_weighted_contrast([measured[k][0] for k in ks])
            if (rel is None or fit[3] < MARK_TRACE_MIN_ARC
                    or not _traced_ring(rel, fit[0], fit[1], fit[2], xs, ys, arc_contrast)):
                return None
        return fit, members, ks

    # pairwise joins chain: two rims side by side (or a rim and a line beside it) can make one
    # cluster no circle fits; then each of its lines is judged alone, as is each line a
    # cluster's rim left out
    judged = []
    for ks in clusters.values():
        whole = rim_fit(ks)
        alone = [k for k in ks if whole is None or k not in whole[2]] if len(ks) > 1 else []
        judged += ([whole] if whole is not None else []) + [found for k in alone if (found := rim_fit([k])) is not None]
    # a short faint line left over may be a stretch of a rim whose circle it cannot place;
    # not one lying on a rim already found and far darker than it, which is a scratch along
    # that rim cut off it (:func:`_rim_streaks`)
    if rel is not None:
        taken_now = {k for _, _, ks in judged for k in ks}
        found = [(fit, _length_weighted_contrast([measured[k][0] for k in ks])) for fit, _, ks in judged]
        for k, (sc, members) in enumerate(measured):
            if k in taken_now or sc.polarity != "dark":
                continue
            xs = np.concatenate([p.xs for p in members])
            ys = np.concatenate([p.ys for p in members])
            if any(_far_darker(sc.contrast, c) and _circle_rms(xs, ys, *fit[:3]) <= max(MARK_MEMBER_RMS * fit[2], 1.0)
                   for fit, c in found):
                continue
            fit = _short_arc_rim(rel, xs, ys, sc.contrast, f, ps, params)
            if fit is not None:
                judged.append((fit, members, [k]))
    for fit, members, ks in judged:
        lines = [measured[k][0] for k in ks]
        boxes = np.array([sc.bbox_px for sc in lines])
        bbox = [int(boxes[:, 0].min()), int(boxes[:, 1].min()), int(boxes[:, 2].max()), int(boxes[:, 3].max())]
        zones = {sc.zone for sc in lines}
        zone = "central" if "central" in zones else zones.pop()
        d = 2 * fit[2] * f
        contrast = _length_weighted_contrast(lines)
        rims.append((Mark(kind="watermark", diameter_px=d, contrast=contrast, zone=zone, bbox_px=bbox,
                          diameter_mm=d * ps if ps else None, arc_deg=fit[3]), members))
        taken.update(ks)
    return rims, [m for k, m in enumerate(measured) if k not in taken]


#: A line of width w seen through optics of PSF σ and averaged onto a grid of cell f has a
#: profile whose equivalent width (integral ÷ peak, full-resolution px) follows
#: eq² ≈ 2π·(w²/12 + σ² + f²/12) plus a little for the line's phase on the grid. Measured on
#: simulated lines (σ 0.5–1.2 px, f = 2): eq² = 0.56·w² + 5.1 + 4.5·σ². The grid term is
#: taken as 2π·f²/12 and σ as a typical 0.8 px, so a line narrower than the optics reports
#: width 0 and its contrast as the darkening a pixel sees (c·w).
PROFILE_W2_GAIN = 0.56
#: the spread (px²) taken off the profile's equivalent width before the elongation test
ELONGATION_SPREAD_PX2 = 5.0
OPTICS_WIDTH2_PX2 = 1.6 + 4.5 * 0.8 ** 2
#: the grid's part of the spread, per f²: 2π/12 for the cell, and 0.35 for the line's phase
#: on it, which grows with the cell: of the 3.0 px² measured at f = 2, 1.6 stay and 1.4 grow
#: as f². Measured on our simulator at f = 4 (0.05 mm/px): eq² = 22.0, 27.2 and 39.3 px² for
#: lines 2, 4 and 6 px wide, where the constant 3.0 px² of stops before 27 left 9.9 px²:
#: every line read about a pixel too wide and its contrast low (a thin scratch of the
#: second renderer's photographs at 0.04 mm/px at 0.6 of what the camera shows, and dropped
#: as short faint residue). At f = 2 nothing changes.
GRID_WIDTH2_PER_F2 = 0.35 + 2 * np.pi / 12
#: the low threshold reaches past a typical line's end by about this much (working px) at each
#: end: the length every detection decision reads (``Scratch.seen_px``), and the reported one
#: of a line of segments (whose ends are read off their own fit)
END_OVERSHOOT = 0.75
#: along a line the filters' response falls at its end as a Gaussian's integral of about this
#: σ (working px); the low threshold meets it there (:func:`_end_overshoot`)
END_BLUR_PX = 1.0


def _end_overshoot(level_sigma: float, low_sigma: float) -> float:
    """How far (working px) the low threshold reaches past a line's end, for a line whose
    response stands ``level_sigma`` σ along it: the response falls to ``low_sigma`` where a
    Gaussian's integral of σ :data:`END_BLUR_PX` gives their ratio. Past the end when the line
    stands more than twice the threshold (0.55 px at 11σ, 1 px at 20σ), short of it when
    fainter (0.36 px short at 5σ): the constant 0.75 px taken off before cut a faint line's ends
    by a pixel or more (the second renderer's noisy calibrated station, seed 13: scratches
    11–26 % short). Kept within −1 and 2 px."""
    ratio = min(low_sigma / max(level_sigma, 1e-6), 0.995)
    return float(np.clip(-END_BLUR_PX * NormalDist().inv_cdf(ratio), -1.0, 2.0))


#: a line's end this close to the picture's edge (working px), heading for it, runs on to it
EDGE_END_PX = 4.0


def _past_edge(group: list[_Piece], rel) -> tuple[int, float]:
    """A line's ends that run into the picture's edge, and their working px to it: the
    unjudged band there (a photograph's border, where a background is estimated one-sided)
    hides the rest of the line, and such an end is cut, not overshot (its overshoot is given
    back with the distance). A 1.4 mm scratch running into the edge of a photograph measured
    0.7 mm and passed. Only without a flat: a calibrated lens lies within the frame."""
    rows, cols = rel.frame_shape
    if rel.model == "flat" or not rows:
        return 0, 0.0
    def steps(at: float, d: float, size: int) -> float:
        # working px along one axis, at ``d`` per step, to the picture's edge ahead
        return (size - 1 - at) / d if d > 1e-6 else -at / d if d < -1e-6 else np.inf

    ox, oy = rel.origin
    ends, dist = 0, 0.0
    for p in group:
        for (x, y), (dx, dy) in zip(p.ends, p.dirs):
            # from the end to the picture's edge along the line's outward direction
            to_edge = min(steps(x + ox, dx, cols), steps(y + oy, dy, rows))
            if to_edge <= EDGE_END_PX:
                ends, dist = ends + 1, dist + float(to_edge)
    return ends, dist


#: steps (working px) at which a line's outward heading is sampled for the lens' outline
_LENS_EDGE_STEP = 0.5
#: a line's end this close (working px) to the margin kept from the lens' outline, heading
#: into it, was cut by the margin: a chain reaches the last judged pixel
LENS_EDGE_END_PX = 2.0
#: ... and it runs on to the outline when its darkening, read in the margin against its sides
#: along the outline, keeps at least this fraction of its level on its last judged pixels
LENS_EDGE_KEEP = 0.5
#: ... read over this much of the margin (working px) past the last judged pixel: further on
#: the outline's own blur darkens one side of a line that meets it aslant
LENS_EDGE_READ_PX = 1.0
#: the line's level is read on these points back from its end (working px), through the
#: best of these shifts across it
_LENS_EDGE_BACK = np.array([-3.0, -2.0, -1.0, 0.0])
_LENS_EDGE_SHIFTS = np.array([-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5])


def _bar_at(t: np.ndarray, bg: np.ndarray, ok: np.ndarray, cx, cy, nx: float, ny: float):
    """The darkening ``1 − t/bg`` at points ``(cx, cy)`` against the mean of both sides at 2
    and 3 px along ``(nx, ny)``, and whether all five samples lie where ``ok``."""
    shape = np.shape(cx)
    cx, cy = np.ravel(cx), np.ravel(cy)
    offsets = (0.0,) + SEGMENT_SIDES
    px = np.stack([cx + o * nx for o in offsets]).astype(np.float32)
    py = np.stack([cy + o * ny for o in offsets]).astype(np.float32)
    tv, seen = sample_points(t, ok, px, py)
    bv, _ = sample_points(bg, ok, px, py, outside=1.0)
    dep = 1.0 - tv / np.maximum(bv, np.float32(1e-6))
    return (dep[0] - dep[1:].mean(axis=0)).reshape(shape), seen.all(axis=0).reshape(shape)


def _outline_tangent(lens: np.ndarray, x: float, y: float, r: int = 3) -> tuple[float, float] | None:
    """The direction along the lens' outline near working-grid point ``(x, y)``: across the
    mean offset of the pixels off the lens within ``r`` px (None when there are none)."""
    h, w = lens.shape
    xi, yi = int(round(x)), int(round(y))
    y0, y1, x0, x1 = max(0, yi - r), min(h, yi + r + 1), max(0, xi - r), min(w, xi + r + 1)
    if y1 - y0 < 2 * r + 1 or x1 - x0 < 2 * r + 1:
        return None  # at the crop's border: the outline is not seen round the point
    oy, ox = np.nonzero(~lens[y0:y1, x0:x1])
    if not len(ox):
        return None
    nx, ny = float((ox + x0 - xi).mean()), float((oy + y0 - yi).mean())
    norm = np.hypot(nx, ny)
    return (-ny / norm, nx / norm) if norm > 0 else None


def _into_lens_edge(group: list[_Piece], rel) -> tuple[int, float]:
    """A line's ends that run on into the margin kept from the lens' outline, and their working
    px on to that outline. The margin (:data:`~goggleqc.inspect.background.EDGE_MARGIN_PX`,
    where the outline's own blur would read as a line) hides the last half millimetre of a
    scratch that runs to the lens' edge, as the picture's border does in a photograph
    (:func:`_past_edge`): such an end is cut, not overshot. An end counts when, along its
    outward heading, the first pixel left unjudged lies within :data:`LENS_EDGE_END_PX`, the
    outline follows within the margin (a light trap or a dim cell, also unjudged, is not the
    outline), and the line is still there in the margin: its darkening there, read on the
    flat-corrected transmission against its sides along the outline (as near the outline as
    it is, so the outline's blur darkens them alike), keeps :data:`LENS_EDGE_KEEP` of its
    level against its sides on its last judged pixels (a scratch that ends just inside the
    margin is not run on). With a flat only, so never on an end :func:`_past_edge` runs on
    (without one). The second renderer's noisy station (seed 13): scratches running to the
    lens' edge read 0.5–1 mm short."""
    if rel.lens is None or rel.margin_source is None:
        return 0, 0.0
    t_src, bg = rel.margin_source
    h, w = rel.valid.shape
    ok = None
    t = np.arange(1, int((LENS_EDGE_END_PX + EDGE_MARGIN_PX + 2) / _LENS_EDGE_STEP) + 1) * _LENS_EDGE_STEP
    ends, dist = 0, 0.0
    for p in group:
        sign = 1.0 if p.polarity == "dark" else -1.0
        for (x, y), (dx, dy) in zip(p.ends, p.dirs):
            xi = np.rint(x + t * dx).astype(np.int64)
            yi = np.rint(y + t * dy).astype(np.int64)
            inside = (xi >= 0) & (yi >= 0) & (xi < w) & (yi < h)
            xc, yc = np.clip(xi, 0, w - 1), np.clip(yi, 0, h - 1)
            lens = inside & rel.lens[yc, xc]
            valid = inside & rel.valid[yc, xc]
            off = np.flatnonzero(~valid)
            out = np.flatnonzero(~lens)
            if not len(off) or not len(out) or t[off[0]] > LENS_EDGE_END_PX:
                continue
            if not valid[:off[0]].all() or t[out[0]] - t[off[0]] > EDGE_MARGIN_PX + 1.0:
                continue
            if not lens[off[0]:out[0]].all():
                continue
            # the line on its last judged pixels, and on into the margin, read along the
            # heading through the line's centre (an end lies on the piece's axis, which may
            # run a pixel beside a staircase of pixels)
            tangent = _outline_tangent(rel.lens, x + t[out[0]] * dx, y + t[out[0]] * dy)
            if tangent is None:
                continue
            on = t[off[0]:out[0]]
            on = on[on <= t[off[0]] + LENS_EDGE_READ_PX]
            if not len(on):
                continue
            if ok is None:
                ok = rel.lens & (bg > 0)
            shifts = _LENS_EDGE_SHIFTS[:, None]
            along = _LENS_EDGE_BACK[None, :]
            bar, seen = _bar_at(t_src, bg, ok, x + along * dx - shifts * dy, y + along * dy + shifts * dx, -dy, dx)
            ref = np.where(seen.all(axis=1), (bar * sign).mean(axis=1), -np.inf)
            best = int(np.argmax(ref))
            level = float(ref[best])
            shift = _LENS_EDGE_SHIFTS[best]
            cont, seen = _bar_at(t_src, bg, ok, x + on * dx - shift * dy, y + on * dy + shift * dx, *tangent)
            cont = cont[seen] * sign
            if level > 0 and len(cont) and float(cont.mean()) >= LENS_EDGE_KEEP * level:
                ends, dist = ends + 1, dist + float(t[out[0]] - _LENS_EDGE_STEP)
    return ends, dist


def _width_from_profile(eq_width: float, f: int) -> float:
    """A line's width (full-resolution px) from the equivalent width of its working-grid
    profile (integral ÷ peak), removing what the optics and the grid add."""
    spread = OPTICS_WIDTH2_PX2 + GRID_WIDTH2_PER_F2 * f * f
    return float(np.sqrt(max((eq_width ** 2 - spread) / PROFILE_W2_GAIN, 0.0)))


#: the texture around a line is read this far from it (working px) ...
TEXTURE_REACH = 12
#: ... from differences over this lag (working px): wider than a pixel's noise correlation and
#: shorter than the millimetre-scale mean departures of runs and voids, which it ignores
TEXTURE_LAG = 6


def _texture(rel: Relative, ys: np.ndarray, xs: np.ndarray, mask: np.ndarray, corner: tuple[int, int]) -> float:
    """The rms of the τ texture around a line beyond the camera's noise (relative units).

    Robust spread of the whitened departure's differences over :data:`TEXTURE_LAG` across and
    down a window of :data:`TEXTURE_REACH` around the line (its own pixels, grown by two,
    left out), less the noise's share; 0 on a clear lens. Orange-peel mottle is ridges of its
    own texture's amplitude; a scratch stands above it.
    """
    d, sigma, _ = rel.whitened
    h, w = d.shape
    r, lag = TEXTURE_REACH, TEXTURE_LAG
    wy0, wy1 = max(0, int(ys.min()) - r), min(h, int(ys.max()) + r + 1)
    wx0, wx1 = max(0, int(xs.min()) - r), min(w, int(xs.max()) + r + 1)
    if wy1 - wy0 <= lag or wx1 - wx0 <= lag:
        return 0.0
    own = np.zeros((wy1 - wy0, wx1 - wx0), np.uint8)
    own[ys - wy0, xs - wx0] = 1
    keep = rel.valid[wy0:wy1, wx0:wx1] & ~cv2.dilate(own, np.ones((5, 5), np.uint8)).astype(bool)
    win = d[wy0:wy1, wx0:wx1]
    diffs = [(win[:, lag:] - win[:, :-lag])[keep[:, lag:] & keep[:, :-lag]],
             (win[lag:] - win[:-lag])[keep[lag:] & keep[:-lag]]]
    vals = np.concatenate(diffs)
    if vals.size < 50:
        return 0.0
    spread = 1.4826 * np_median(np.abs(vals)) / np.sqrt(2.0)
    excess = np.sqrt(max(spread * spread - float(sigma) ** 2, 0.0))
    weight = np_median(rel.weight[wy0:wy1, wx0:wx1][keep]) if keep.any() else 1.0
    return excess / max(weight, 1e-3)


def _measure(group: list[_Piece], rel: Relative, z, f: int, zone_of, ps, params) -> Scratch | None:
    ys = np.concatenate([p.ys for p in group])
    xs = np.concatenate([p.xs for p in group])
    zmax = max(p.zmax for p in group)
    strong = [p for p in group if p.segment is None]
    if strong:
        zs = np.concatenate([np.abs(z[p.ys, p.xs]) for p in strong])
        if float(np.mean(zs)) < params.min_mean_sigma * (params.bright_factor if group[0].polarity == "bright" else 1.0):
            return None
    else:
        total = sum(p.segment[0] for p in group) / np.sqrt(sum(p.segment[1] for p in group))
        ends = np.concatenate([p.ends for p in group])
        far = np.argmax(((ends[:, None, :] - ends[None, :, :]) ** 2).sum(-1))
        a, b = ends[far // len(ends)], ends[far % len(ends)]
        asked = segment_sigma(rel, b - a, params)
        if total < asked:
            return None
        zmax = params.high_sigma * total / asked
    h, w = rel.rel.shape
    y0, y1, x0, x1 = max(0, ys.min() - 2), min(h, ys.max() + 3), max(0, xs.min() - 2), min(w, xs.max() + 3)
    # a short, two-pixel-wide piece loses most of its ends to thinning: its span along its
    # own axis is then the better length
    chain = sum(max(_chain_length(skeletonize(_sub(p, y0, x0, (y1 - y0, x1 - x0)))), _span(p)) for p in group)
    if len(group) > 1:
        chain += _gaps(group)  # the gaps of a broken scratch belong to its length along the curve
    sign = 1.0 if group[0].polarity == "dark" else -1.0
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    mask[ys - y0, xs - x0] = 1
    near = cv2.dilate(mask, np.ones((3, 3), np.uint8)).astype(bool) & rel.valid[y0:y1, x0:x1]
    dep = np.clip((1.0 - rel.rel[y0:y1, x0:x1]) * sign, 0, None)
    integrated = float(dep[near].sum()) / max(chain, 1.0) * f  # contrast × width, full-res px
    peak = _percentile(dep[mask.astype(bool)], 75) if mask.any() else 0.0
    eq_width = integrated / max(peak, 1e-6)
    width_px = _width_from_profile(eq_width, f)
    # what a pixel sees: the τ drop, diluted by the width when the line is narrower than a pixel
    contrast = min(integrated / max(width_px, 1.0), 1.0)
    # whether it is a line is judged on what is seen (the chain less a constant overshoot, on
    # which the length and elongation floors were set); its length is read with its ends
    # placed by its own strength (:func:`_end_overshoot`). Judged on that length instead,
    # faint fragments and blobs passed as lines: an 8 mm scratch across dim stripes gained a
    # 1.1 mm piece beside it, and a short arc round a faint spot was read as a watermark's rim.
    seen_px = float(max(chain - 2 * END_OVERSHOOT, 1.0) * f)
    # elongation is judged on the profile's width beyond the grid and a sharp optics alone (a
    # lower bound on the line's width), so a short line blurred by soft optics stays a line.
    # On a flat-corrected image it is also judged on the integral's lower 2σ bound: across a
    # faint hairline found along a few working px, the pixel noise of the band summed across
    # it (σ / weight per pixel in rel) is a good part of the integral, and the width it gives
    # would make the piece as wide as it is long. Without a flat σ is not all the residue.
    eq_width_lo = eq_width
    if rel.model == "flat":
        _, sigma, _ = rel.whitened
        noise_rel = np.float32(sigma) / np.maximum(rel.weight[y0:y1, x0:x1][near], np.float32(1e-3))
        integrated_sd = float(np.sqrt(np.sum(noise_rel.astype(np.float64) ** 2))) / max(chain, 1.0) * f
        eq_width_lo = max(integrated - 2.0 * integrated_sd, 0.0) / max(peak, 1e-6)
    core_px = float(np.sqrt(max(eq_width_lo ** 2 - ELONGATION_SPREAD_PX2 - f * f, 0.0)))
    if seen_px < params.min_length_px or seen_px < params.min_elongation * max(core_px, 1.0):
        return None
    if contrast < (params.min_contrast if rel.model == "flat" else
                   max(params.min_contrast_uncalibrated, band_floor(seen_px / f, rel.band_sigma, params))):
        return None
    if rel.model == "flat" and params.texture_ratio > 0 and \
            contrast < params.texture_ratio * _texture(rel, ys, xs, mask, (y0, x0)):
        return None
    # the line's own level, not its mean, which the fall at its ends takes down: on a short
    # line they are a good part of it (1–1.5 mm faint scratches read +8.5 % with the mean)
    overshoot = _end_overshoot(_percentile(zs, 75), params.low_sigma) if strong else END_OVERSHOOT
    length_px = float(max(chain - 2 * overshoot, 1.0) * f)
    ox, oy = rel.origin
    bbox = [int((xs.min() + ox) * f), int((ys.min() + oy) * f), int((xs.max() + 1 + ox) * f), int((ys.max() + 1 + oy) * f)]
    # what is a line is judged on what is seen; its length runs on to the picture's edge
    edge_ends, to_edge = _past_edge(group, rel)
    # ... and on to the lens' outline, past the margin kept from it
    lens_ends, to_lens = _into_lens_edge(group, rel)
    length_px += ((edge_ends + lens_ends) * overshoot + to_edge + to_lens) * f
    seen_px += (edge_ends * END_OVERSHOOT + to_edge) * f
    return Scratch(length_px=length_px, width_px=max(width_px, 0.0), contrast=sign * contrast,
                   zone=_zone(zone_of, rel, ys, xs), bbox_px=bbox,
                   length_mm=length_px * ps if ps else None, width_mm=width_px * ps if ps else None,
                   polarity=group[0].polarity, score=zmax / params.high_sigma, seen_px=seen_px)


def _overlap(a, b) -> float:
    """Intersection over the smaller box of two ``[x0, y0, x1, y1)`` boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / max(smaller, 1)


def _span(p: _Piece) -> float:
    """Extent of a piece along its principal axis (working px, end pixel centre to centre)."""
    axis = p.dirs[1]
    return float((p.ends[1] - p.ends[0]) @ axis)


def _sub(p: _Piece, y0: int, x0: int, shape) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[p.ys - y0, p.xs - x0] = True
    return m


def _gaps(group: list[_Piece]) -> float:
    """Sum of the shortest end-to-end gaps that join the fragments into one chain (a tree)."""
    n = len(group)
    joined = {0}
    total = 0.0
    while len(joined) < n:
        best = None
        for i in joined:
            for j in range(n):
                if j in joined:
                    continue
                d = min(float(np.hypot(*(group[i].ends[a] - group[j].ends[b]))) for a in range(2) for b in range(2))
                if best is None or d < best[0]:
                    best = (d, j)
        total += best[0]
        joined.add(best[1])
    return total


def _zone(zone_of, rel: Relative, ys: np.ndarray, xs: np.ndarray) -> str:
    if zone_of is None:
        return "unknown"
    f = rel.scale
    xy = np.stack([(xs + rel.origin[0]) * f + f // 2, (ys + rel.origin[1]) * f + f // 2], 1)
    return zone_of(xy)
