"""The background of an uncalibrated frame on a periodic backlight, from the pattern's own repeats.

With no flat, the backlight behind a scratch has to be inferred from the image. A grid,
checker or stripe target repeats: the backlight at ``x`` is what is seen one period away,
``x + v`` for a lattice vector ``v``, rescaled by the slow change of illumination between the
two places. A scratch or a spot is not repeated, so the **median over the neighbouring lattice
cells** (±a1, ±a2, ±(a1 + a2), ±(a1 − a2)) is the backlight without it, however sharp or
defocused the pattern's edges are. A line parallel to a lattice vector lands on itself for
two of the eight shifts only, so the median still ignores it.

1. Illumination ``S``: the frame smoothed over a few periods (normalised convolution over
   the lens); ``q = I / S`` keeps the pattern at its own contrast.
2. Lattice: the two shortest strong, non-collinear peaks of the autocorrelation of
   ``q − 1`` (by FFT), refined to sub-pixel by a parabola through each peak's neighbours.
3. Registration (:func:`cell_displacement`): seen through a curved visor or by a camera not
   square to the target, the pattern is bent and periodic only locally, so each
   neighbouring cell is found at ``x + v + δ(x)``; when that moves cells and fits the pattern
   better, the view is bent, the registered cells are used, and in pairs (``±v``); within a
   cell of the frame's border, where the pairs run out, the registered cells of the inner side
   serve alone.
4. Background ``median_v I(x + v + δ) · r_v(x)``, over the cells that land on the lens, with
   ``r_v`` the light's slow change between the place and its cell, a local ratio of sums
   fitted with a slope across its window (:func:`_local_ratio`).

It fails (returns None) when the frame has no clear period: a plain or merely uneven panel,
which the local fit of :mod:`goggleqc.inspect.background` handles.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np

#: a lattice peak must reach this fraction of the zero-lag autocorrelation
MIN_PEAK = 0.35
#: Gaussian σ (working px) by which a pattern is smoothed when its lattice does not stand out
#: of the pixel noise (:func:`find_lattice`)
FAINT_SMOOTH_PX = 1.0
#: shortest period accepted (working px): finer patterns are below a scratch's scale
MIN_PERIOD_PX = 4.0
#: the autocorrelation is taken over at most this square of the lens (working px)
MAX_WINDOW_PX = 256
#: at least this many of the 8 shifted cells (in pairs on either side where enough pairs
#: land) must land on the lens for a background value
MIN_SHIFTS = 4
#: ... or, where fewer land (a picture's corners), at least this many, their plain median
CORNER_SHIFTS = 3
#: in a bent view, the paired cells' median blends into the one-sided band's over this many
#: working px (:func:`lattice_background`)
SEAM_RAMP_PX = 6.0
#: Gauss–Newton steps of the local registration of the two lattice vectors' cells, and of
#: the diagonal cells from the sum of those two
REGISTRATION_ITERATIONS = 6
DIAGONAL_ITERATIONS = 3
#: registration stops when no step moves a cell by more than this (working px)
CONVERGED_PX = 0.05
#: a registration window this much on the lens is whole; nearer an edge, δ is extrapolated
FULL_WINDOW = 0.9
#: registered cells replace the exact shift where the registration moved them by more than
#: this (working px) over a percent of the lens and cut the mean misfit to the pattern below
#: this fraction of the exact shift's
MIN_DISPLACEMENT_PX = 0.25
REGISTRATION_GAIN = 0.95
#: a whole window whose misfit after registration exceeds this many times the frame's median
#: window misfit has stuck short of its cell (a strongly bent view's corner: the cell lies
#: farther than the steps from zero reach) ...
STUCK_MISFIT = 3.0
#: ... and is registered again from the smooth field of the windows that did not stick,
#: keeping the new result only where it cuts the window's misfit below this fraction
RESTART_GAIN = 0.7


@dataclass(frozen=True)
class Lattice:
    """Two lattice vectors (working px, ``(dx, dy)``) and how strongly the pattern repeats."""

    a1: tuple[float, float]
    a2: tuple[float, float]
    strength: float
    #: Gaussian σ (working px) of the pattern's edges: the target's defocus (with the camera's
    #: blur), a lower bound when the blur merges the edges; 0 until measured
    edge_sigma: float = 0.0
    #: where only :data:`CORNER_SHIFTS` cells served (a picture's corners); None if nowhere
    corner: np.ndarray | None = field(default=None, compare=False, repr=False)
    #: a bent view's band where the pairs of cells ran out and one side's cells served alone
    #: (near the picture's edge or the frame's); None if nowhere, or square on
    one_sided: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def periods(self) -> tuple[float, float]:
        """The shorter and the longer lattice vector's length (working px)."""
        a, b = float(np.hypot(*self.a1)), float(np.hypot(*self.a2))
        return min(a, b), max(a, b)

    def shifts(self) -> list[tuple[float, float]]:
        """The eight neighbouring cells' offsets."""
        a1, a2 = np.array(self.a1), np.array(self.a2)
        out = []
        for v in (a1, a2, a1 + a2, a1 - a2):
            out += [tuple(v), tuple(-v)]
        return out


def _illumination(image: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    m = valid.astype(np.float32)
    num = cv2.GaussianBlur(image * m, (0, 0), sigma)
    den = cv2.GaussianBlur(m, (0, 0), sigma)
    return num / np.maximum(den, 1e-3)


#: the pattern is smoothed by this σ (working px) before its edges' slope is read, which the
#: edge blur's estimate then takes off in quadrature: the noise's own slope stays far below an
#: edge's
_EDGE_SMOOTH = 0.7


def edge_blur(q: np.ndarray, valid: np.ndarray) -> float:
    """The Gaussian σ (working px) of the pattern's edges in ``q`` (pattern over illumination).

    A step of height ``A`` blurred by σ has a steepest slope ``A / (√(2π)·σ)``: σ is the
    pattern's range (2nd to 98th percentile) over its steepest slopes (99.5th percentile).
    When the blur is a good part of a period the edges merge into a sine, whose slope gives
    about period / 8: then this is a lower bound. The camera focuses on the lens, not on the
    target, so whatever is blurred this much lies on the target, not on the lens.
    """
    if np.count_nonzero(valid) < 400:
        return 0.0
    sm = cv2.GaussianBlur(np.where(valid, q, 1.0).astype(np.float32), (0, 0), _EDGE_SMOOTH)
    gy, gx = np.gradient(sm)
    inner = cv2.erode(valid.view(np.uint8), np.ones((5, 5), np.uint8)).view(bool)
    if np.count_nonzero(inner) < 400:
        return 0.0
    slope = float(np.percentile(np.hypot(gx, gy)[inner], 99.5))
    lo, hi = np.percentile(q[inner], [2, 98])
    if not slope > 0:
        return 0.0
    sigma = float(hi - lo) / (np.sqrt(2 * np.pi) * slope)
    return float(np.sqrt(max(sigma * sigma - _EDGE_SMOOTH ** 2, 0.0)))


def _refine(r: np.ndarray, y: int, x: int) -> tuple[float, float]:
    """Sub-pixel peak position by a parabola through the peak and its 4-neighbours."""
    h, w = r.shape

    def vertex(a, b, c):
        den = a - 2 * b + c
        return 0.0 if den >= 0 else float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))

    dy = vertex(r[(y - 1) % h, x], r[y, x], r[(y + 1) % h, x])
    dx = vertex(r[y, (x - 1) % w], r[y, x], r[y, (x + 1) % w])
    return x + dx, y + dy


def find_lattice(q: np.ndarray, valid: np.ndarray) -> Lattice | None:
    """The pattern's lattice from the autocorrelation of ``q − 1`` over ``valid``.

    A faint pattern (a target far out of focus, or seen dimly through a hazy lens) can be
    buried in the camera's pixel noise: the noise's variance sits in the zero-lag peak alone,
    so every lattice peak, measured against it, falls under :data:`MIN_PEAK` though the
    pattern repeats plainly. When no lattice stands out, the autocorrelation is taken again of
    ``q`` smoothed by :data:`FAINT_SMOOTH_PX`, which takes the pixel noise out of the zero lag
    and leaves a defocused pattern as it was.

    Parameters
    ----------
    q : (m, n) float32 ndarray
        The frame over its illumination (pattern contrast around 1).
    valid : (m, n) bool ndarray
        Where ``q`` is lens.

    Returns
    -------
    Lattice or None
        None when no period stands out (a plain or uneven backlight).
    """
    if valid.sum() < 400:
        return None
    # a window of the lens is enough to see the period, and keeps the transforms small
    h, w = q.shape
    if max(h, w) > MAX_WINDOW_PX:
        ys, xs = np.nonzero(valid[::4, ::4])
        cy, cx = int(4 * ys.mean()), int(4 * xs.mean())
        y0 = int(np.clip(cy - MAX_WINDOW_PX // 2, 0, max(0, h - MAX_WINDOW_PX)))
        x0 = int(np.clip(cx - MAX_WINDOW_PX // 2, 0, max(0, w - MAX_WINDOW_PX)))
        q, valid = q[y0: y0 + MAX_WINDOW_PX, x0: x0 + MAX_WINDOW_PX], valid[y0: y0 + MAX_WINDOW_PX, x0: x0 + MAX_WINDOW_PX]
        if valid.sum() < 400:
            return None
    x = np.where(valid, q - 1.0, 0.0).astype(np.float32)
    x -= np.where(valid, float(x[valid].mean()), 0.0).astype(np.float32)
    found = _lattice_of(x, valid)
    if found is None:
        smooth = _illumination(x, valid, FAINT_SMOOTH_PX)  # x is 0 off valid: its normalised blur
        found = _lattice_of(np.where(valid, smooth, 0.0).astype(np.float32), valid)
    return found


def _lattice_of(x: np.ndarray, valid: np.ndarray) -> Lattice | None:
    """:func:`find_lattice` on ``x``, the pattern's departure from its mean (0 off ``valid``)."""
    h, w = x.shape
    # zero-padded to twice the size, so lags do not wrap round
    fh, fw = cv2.getOptimalDFTSize(2 * h), cv2.getOptimalDFTSize(2 * w)
    pad = np.zeros((fh, fw), np.float32)
    pad[:h, :w] = x
    f = cv2.dft(pad, flags=cv2.DFT_COMPLEX_OUTPUT)
    power = cv2.mulSpectrums(f, f, 0, conjB=True)
    r = cv2.idft(power, flags=cv2.DFT_SCALE | cv2.DFT_REAL_OUTPUT)
    # normalise by the overlap of the valid mask at each lag (an unbiased estimate)
    m = np.zeros((fh, fw), np.float32)
    m[:h, :w] = valid
    fm = cv2.dft(m, flags=cv2.DFT_COMPLEX_OUTPUT)
    overlap = cv2.idft(cv2.mulSpectrums(fm, fm, 0, conjB=True), flags=cv2.DFT_SCALE | cv2.DFT_REAL_OUTPUT)
    r = r / np.maximum(overlap, 0.25 * float(valid.sum()))
    r0 = float(r[0, 0])
    if not r0 > 0:
        return None
    r = np.fft.fftshift(r / r0)
    cy, cx = fh // 2, fw // 2
    reach = int(min(h, w) // 3)
    win = r[cy - reach: cy + reach + 1, cx - reach: cx + reach + 1]
    peaks = (win == cv2.dilate(win, np.ones((3, 3), np.uint8))) & (win >= MIN_PEAK)
    ys, xs = np.nonzero(peaks)
    dy, dx = ys - reach, xs - reach
    dist = np.hypot(dx, dy)
    keep = dist >= MIN_PERIOD_PX
    if not keep.any():
        return None
    ys, xs, dist = ys[keep], xs[keep], dist[keep]
    # the nearest strong peak first; the second is the nearest not collinear with it
    order = np.lexsort((-win[ys, xs], np.round(dist)))
    first = order[0]
    p1 = np.array(_refine(win, ys[first], xs[first])) - reach
    second = None
    for k in order[1:]:
        v = np.array([xs[k] - reach, ys[k] - reach], float)
        cos = abs(v @ p1) / (np.hypot(*v) * np.hypot(*p1))
        if cos < 0.8:
            second = k
            break
    if second is None:
        return None
    p2 = np.array(_refine(win, ys[second], xs[second])) - reach
    p1, p2 = _farther(win, p1, reach), _farther(win, p2, reach)
    # along a stripe the pattern repeats at any lag: step there by about the other period
    # rather than a few pixels, so a scratch crossing the stripes at a shallow angle moves
    # off itself
    for a, b in ((0, 1), (1, 0)):
        pa, pb = (p1, p2)[a], (p1, p2)[b]
        if np.hypot(*pa) < 0.5 * np.hypot(*pb):
            k = round(np.hypot(*pb) / np.hypot(*pa))
            if a == 0:
                p1 = p1 * k
            else:
                p2 = p2 * k
    strength = float(min(win[ys[first], xs[first]], win[ys[second], xs[second]]))
    return Lattice(tuple(map(float, p1)), tuple(map(float, p2)), strength)


def _farther(win: np.ndarray, p: np.ndarray, reach: int) -> np.ndarray:
    """``p`` re-measured from the farthest multiple ``m·p`` whose peak is still strong: the
    sub-pixel error of a peak's position is divided by ``m``."""
    best = p
    for m in range(2, 6):
        x, y = np.rint(m * p).astype(int) + reach
        if not (1 <= x < win.shape[1] - 1 and 1 <= y < win.shape[0] - 1):
            break
        # the local maximum next to the predicted position
        sub = win[y - 1: y + 2, x - 1: x + 2]
        dy, dx = np.unravel_index(int(np.argmax(sub)), sub.shape)
        y, x = y + dy - 1, x + dx - 1
        if not (1 <= x < win.shape[1] - 1 and 1 <= y < win.shape[0] - 1) or win[y, x] < MIN_PEAK:
            break
        best = (np.array(_refine(win, y, x)) - reach) / m
    return best


def _keys(t: float) -> np.ndarray:
    """Keys' cubic convolution weights (a = −0.5) for taps −1, 0, 1, 2 at fraction ``t``."""
    d = np.abs(np.array([-1.0, 0.0, 1.0, 2.0]) - t)
    return np.where(d <= 1, 1.5 * d ** 3 - 2.5 * d ** 2 + 1, np.where(d < 2, -0.5 * d ** 3 + 2.5 * d ** 2 - 4 * d + 2, 0.0))


def _shifted(image: np.ndarray, v: tuple[float, float], fill: float) -> np.ndarray:
    """``image(x + v)`` by cubic convolution, ``fill`` where it reaches outside the frame.

    Written out with exact weights: OpenCV's warps round a sub-pixel position to 1/32 px,
    which on a sharp pattern leaves about 1 % of residue.
    """
    h, w = image.shape
    ix, iy = int(np.floor(v[0])), int(np.floor(v[1]))
    wx, wy = _keys(v[0] - ix), _keys(v[1] - iy)
    pad = max(abs(ix), abs(iy)) + 3
    big = np.full((h + 2 * pad, w + 2 * pad), fill, np.float32)
    big[pad: pad + h, pad: pad + w] = image
    rows = np.zeros((h + 2 * pad, w), np.float32)
    for k, c in zip(range(-1, 3), wx):
        x0 = pad + ix + k
        rows += np.float32(c) * big[:, x0: x0 + w]
    out = np.zeros((h, w), np.float32)
    for k, c in zip(range(-1, 3), wy):
        y0 = pad + iy + k
        out += np.float32(c) * rows[y0: y0 + h]
    return out


#: a sorting network for 8 values (Batcher's odd-even merge sort, 19 comparators)
_NETWORK8 = ((0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (1, 2), (5, 6), (0, 4), (3, 7),
             (1, 5), (2, 6), (1, 4), (3, 6), (2, 4), (3, 5), (3, 4))


def _median8(values: list[np.ndarray]) -> np.ndarray:
    """Element-wise median of eight arrays (the mean of the 4th and 5th), by a sorting network
    of whole-array min/max: several times faster than ``np.median`` over a stack."""
    v = list(values)
    for i, j in _NETWORK8:
        lo = cv2.min(v[i], v[j])
        v[j] = cv2.max(v[i], v[j])
        v[i] = lo
    return cv2.addWeighted(v[3], 0.5, v[4], 0.5, 0.0)


def _median_seen(values: list[np.ndarray], big: np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise median of eight arrays over their finite values (NaN where a cell did
    not land), and how many landed (uint8). The arrays are padded in place, their NaNs set to
    ``±big`` (as :func:`_median_of_landed` reads them).

    The missing values are padded alternately above and below the range, which leaves the
    middle of the order; where an odd number is missing, one padding order takes the upper of
    the two middle values seen and the other the lower, so the two are averaged. Padded one
    way only, the median of five cells was the mean of the 3rd and 4th: by the cells' spread
    above their median (near a bent picture's edge, where the cells that land all lie
    towards its middle, they differ by several percent, and the background stepped by 5 %
    where the paired cells ran out; a false line of 12 mm along the step)."""
    gone_n = np.zeros(values[0].shape, np.uint8)
    up, down = [], []
    for a in values:
        gone = ~np.isfinite(a)
        gone_n += gone
        pad = np.where(gone_n[gone] % 2 == 1, big, -big)
        b = a.copy()
        a[gone] = pad
        b[gone] = -pad
        up.append(a)
        down.append(b)
    seen = np.uint8(len(values)) - gone_n
    odd = (gone_n % 2 == 1)
    med = _median8(up)
    if odd.any():
        med = np.where(odd, cv2.addWeighted(med, 0.5, _median8(down), 0.5, 0.0), med)
    return med, seen


def _gradient(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Central-difference gradient per pixel (Sobel ÷ 8, smoothed across)."""
    return (cv2.Sobel(a, cv2.CV_32F, 1, 0, ksize=3, scale=0.125),
            cv2.Sobel(a, cv2.CV_32F, 0, 1, ksize=3, scale=0.125))


class _WindowSums:
    """Gaussian-weighted window sums of fields smooth over a period, on a grid reduced to about
    a quarter period per cell (where a wide Gaussian costs little); outside the frame counts
    as nothing (a window cut by the frame's edge sums its inside only)."""

    def __init__(self, shape: tuple[int, int], period: float, sigma: float):
        f = max(1, int(period // 4))
        self.shape = shape
        self.small = (max(1, shape[1] // f), max(1, shape[0] // f))
        self.sigma = max(1.0, sigma / f)

    def reduce(self, a: np.ndarray) -> np.ndarray:
        """``a`` on the reduced grid (area means)."""
        return cv2.resize(a, self.small, interpolation=cv2.INTER_AREA)

    def __call__(self, a: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(self.reduce(a), (0, 0), self.sigma, borderType=cv2.BORDER_CONSTANT)

    def full(self, a: np.ndarray) -> np.ndarray:
        """A reduced-grid field back at full size (linear interpolation)."""
        return cv2.resize(a, (self.shape[1], self.shape[0]), interpolation=cv2.INTER_LINEAR)


#: the value standing for "unknown" in a remap (see :func:`_remapped`): a tap of weight w on it
#: moves the result by w·1e30, far past anything a pattern's values and weights can reach
_UNKNOWN = np.float32(-1e30)
_UNKNOWN_SEEN = np.float32(1e20)


def _remapped(image: np.ndarray, v: tuple[float, float], dx: np.ndarray, dy: np.ndarray, fill: float,
              interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """``image(x + v + δ(x))`` by cubic (or the given) interpolation, ``fill`` outside the frame.

    A NaN ``fill`` (and NaN in ``image``) marks what is unknown: a result is NaN when a tap
    with a weight lies there. OpenCV's border path multiplies the border value by every tap's
    weight, zeros included, so a NaN border value made the first and last 8 columns (and the
    last rows) of a cubic remap NaN wherever their taps lay inside: a band along the picture's
    left and right edges that a bent lattice never judged (scratches there were missed). The
    unknown is carried by a huge finite sentinel instead, which a zero weight cancels exactly.
    """
    h, w = image.shape
    gx = np.arange(w, dtype=np.float32)[None, :] + np.float32(v[0])
    gy = np.arange(h, dtype=np.float32)[:, None] + np.float32(v[1])
    if not np.isnan(fill):
        return cv2.remap(image, gx + dx, gy + dy, interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    src = np.where(np.isnan(image), _UNKNOWN, image).astype(np.float32)
    out = cv2.remap(src, gx + dx, gy + dy, interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=float(_UNKNOWN))
    out[np.abs(out) > _UNKNOWN_SEEN] = np.nan
    return out


def _window_misfit(q: np.ndarray, m: np.ndarray, v: tuple[float, float], sdx: np.ndarray, sdy: np.ndarray,
                   window_sum: _WindowSums) -> np.ndarray:
    """Each registration window's mean absolute misfit of the pattern to its cell at ``v + δ``
    (``δ`` on the reduced grid), over the lens."""
    dx, dy = window_sum.full(sdx), window_sum.full(sdy)
    s = _remapped(q, v, dx, dy, 1.0)
    w = m * _remapped(m, v, dx, dy, 0.0, cv2.INTER_LINEAR)
    return window_sum(w * np.abs(q - s)) / np.maximum(window_sum(w), np.float32(1e-6))


def _restart(q: np.ndarray, m: np.ndarray, v: tuple[float, float], sdx: np.ndarray, sdy: np.ndarray,
             fill: np.ndarray, window_sum: _WindowSums) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """A new start ``(sdx, sdy)`` for the windows whose registration stuck, with every
    window's misfit as registered, or None when none stuck.

    Gauss–Newton steps from zero reach a cell that lies within a fraction of a period; in a
    strongly bent view (a phone tilted to the target, a curved visor: the pattern's scale
    changing by a quarter or more from the frame's centre to its corner) a corner's cell lies
    farther, and its windows stop at a false fit (on a close-up bent by 0.3, a vector's window
    read δ = (1.6, 1.5) px where (5, 3.5) matches, its misfit 15× that at the frame's centre): the
    pattern's edges were left as lines of 10–15 %. A bend is smooth, so the field of the
    windows that did not stick (whole windows within :data:`STUCK_MISFIT` of the median
    misfit), fitted by a cubic, carries it to them; the caller registers them again from
    there. Only whole windows are restarted (one cut by an edge is extrapolated as before),
    and a window whose misfit a stain or a goggle frame's edge raised, not a false fit, keeps
    its first registration: the caller keeps the new one only where it fits clearly better
    (:data:`RESTART_GAIN`).
    """
    whole = fill >= FULL_WINDOW
    if np.count_nonzero(whole) < 30:
        return None
    res = _window_misfit(q, m, v, sdx, sdy, window_sum)
    stuck = whole & (res > np.float32(STUCK_MISFIT * float(np.median(res[whole]))))
    good = whole & ~stuck
    if not stuck.any() or np.count_nonzero(good) < 30:
        return None
    ys, xs = np.nonzero(good)
    step = max(1, len(ys) // _FIT_POINTS)
    ys, xs = ys[::step], xs[::step]
    coef, *_ = np.linalg.lstsq(_cubic_basis(ys, xs, fill.shape),
                               np.stack([sdx[ys, xs], sdy[ys, xs]], -1).astype(np.float64), rcond=None)
    gy, gx = np.mgrid[0:fill.shape[0], 0:fill.shape[1]]
    smooth = (_cubic_basis(gy.ravel(), gx.ravel(), fill.shape) @ coef).astype(np.float32)
    return (np.where(good, sdx, smooth[:, 0].reshape(fill.shape)).astype(np.float32),
            np.where(good, sdy, smooth[:, 1].reshape(fill.shape)).astype(np.float32), res)


def cell_displacement(q: np.ndarray, valid: np.ndarray, v: tuple[float, float], period: float, *,
                      shortest: float | None = None, iterations: int = REGISTRATION_ITERATIONS,
                      start: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Where the neighbouring cell one lattice vector away really lies: ``δ(x)`` such that
    ``q(x + v + δ(x)) ≈ q(x)``.

    A pattern seen through a curved visor, or by a camera not square to it, is periodic only
    locally: its period changes by several percent across the frame, so one lattice vector
    lands a pixel or more off the matching cell at the frame's edge, and the pattern's edges
    would remain as lines. ``δ`` is found by Lucas–Kanade registration (Lucas & Kanade 1981):
    Gauss–Newton steps of the least-squares fit of the shifted pattern to the pattern itself,
    with the sums over a Gaussian window of about two periods. The window is much larger than
    a scratch, whose departures are clipped at a few noise levels first, so a defect does not
    pull the registration; along a stripe (no gradient) a small ridge term keeps ``δ`` at 0.
    Windows that stick at a false fit far from zero (a strongly bent view's corners) are
    registered again from the smooth field of the others (:func:`_restart`).

    Parameters
    ----------
    q : (m, n) float32 ndarray
        The frame over its illumination, 1.0 outside ``valid``.
    valid : (m, n) bool ndarray
        Where ``q`` is lens.
    v : (float, float)
        The lattice vector (working px, ``(dx, dy)``).
    period : float
        The longer lattice period (working px): sets the registration window.
    shortest : float, optional
        The shorter period: ``δ`` is kept within a quarter of it (default ``period``).
    iterations : int
        Gauss–Newton steps.
    start : (dx, dy), optional
        A first guess of ``δ`` (default 0).

    Returns
    -------
    (dx, dy) : (m, n) float32 ndarrays
        The displacement field, smooth at the scale of a few periods.
    """
    # δ is smooth over periods: the window sums are formed on the reduced grid
    window_sum = _WindowSums(q.shape, period, max(3.0, 1.5 * period))
    small = window_sum.small
    full = window_sum.full
    m = valid.astype(np.float32)

    if start is None:
        sdx, sdy = np.zeros(small[::-1], np.float32), np.zeros(small[::-1], np.float32)
    else:
        sdx, sdy = (cv2.resize(a, small, interpolation=cv2.INTER_AREA) for a in start)
    # how much of each window lies on the lens: near its edge (or the frame's) a window sees
    # one side only, and its δ is that of a point inside, so it is extrapolated instead
    fill = window_sum(m) / np.maximum(window_sum(np.ones_like(m)), np.float32(1e-6))
    extrapolated = _Extrapolator(fill)

    def register(sdx: np.ndarray, sdy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = full(sdx), full(sdy)
        for _ in range(iterations):
            s = _remapped(q, v, dx, dy, 1.0)
            w = m * _remapped(m, v, dx, dy, 0.0, cv2.INTER_LINEAR)  # a weight: linear is enough
            gx, gy = _gradient(s)
            e = q - s
            # a defect's departure is a few-percent outlier against the pattern's residue
            inside = (w > 0.99)[::3, ::3]
            lim = np.float32(3.0 * 1.4826 * max(float(np.median(np.abs(e[::3, ::3][inside]))) if inside.any() else 0.0, 1e-3))
            np.clip(e, -lim, lim, out=e)
            wgx, wgy = w * gx, w * gy
            sxx, sxy, syy = window_sum(wgx * gx), window_sum(wgx * gy), window_sum(wgy * gy)
            bx, by = window_sum(wgx * e), window_sum(wgy * e)
            # a ridge only where the pattern is one-dimensional (a stripe says nothing along
            # itself): the smaller eigenvalue is raised to a tenth of the larger, so δ stays put
            # along the stripe while the steps across it stay full Gauss–Newton steps
            half, dev = (sxx + syy) / 2, cv2.magnitude((sxx - syy) / 2, sxy)
            ridge = np.maximum(np.float32(0.1) * (half + dev) - (half - dev), 0) + np.float32(1e-12)
            sxx += ridge
            syy += ridge
            det = sxx * syy - sxy * sxy
            step_x = (syy * bx - sxy * by) / det
            step_y = (sxx * by - sxy * bx) / det
            sdx += step_x
            sdy += step_y
            sdx, sdy = extrapolated(sdx), extrapolated(sdy)
            dx, dy = full(sdx), full(sdy)
            if float(cv2.magnitude(step_x, step_y)[fill >= FULL_WINDOW].max(initial=0.0)) < CONVERGED_PX:
                break
        return sdx, sdy

    sdx, sdy = register(sdx, sdy)
    # the clip below is about the smooth field a window was restarted from (else zero)
    cx = cy = np.zeros_like(sdx)
    restart = _restart(q, m, v, sdx, sdy, fill, window_sum)
    if restart is not None:
        rdx, rdy = register(restart[0].copy(), restart[1].copy())
        better = _window_misfit(q, m, v, rdx, rdy, window_sum) < np.float32(RESTART_GAIN) * restart[2]
        sdx, sdy = np.where(better, rdx, sdx), np.where(better, rdy, sdy)
        cx, cy = np.where(better, restart[0], cx), np.where(better, restart[1], cy)
    dx, dy = full(sdx), full(sdy)
    # never farther than a quarter of the shortest period from where it started: beyond, it is
    # not the same cell
    limit = np.float32(0.25 * (shortest or period))
    if restart is None:
        np.clip(dx, -limit, limit, out=dx)
        np.clip(dy, -limit, limit, out=dy)
        return dx, dy
    cx, cy = full(cx), full(cy)
    return cx + np.clip(dx - cx, -limit, limit), cy + np.clip(dy - cy, -limit, limit)


#: at most about this many of the whole-window points fit the extrapolating polynomial
_FIT_POINTS = 4000


def _cubic_basis(ys: np.ndarray, xs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The ten terms of a cubic in ``(x, y)`` scaled to −1…1 over ``shape``, one row per point."""
    h, w = shape
    x = 2 * xs.astype(np.float64) / max(w - 1, 1) - 1
    y = 2 * ys.astype(np.float64) / max(h - 1, 1) - 1
    return np.stack([np.ones_like(x), x, y, x * x, x * y, y * y, x ** 3, x * x * y, x * y * y, y ** 3], -1)


class _Extrapolator:
    """``field`` where its window was whole (``fill`` ≥ :data:`FULL_WINDOW`), blended towards
    a cubic polynomial fitted there where the window was cut by an edge.

    A view's bend (perspective, a curved visor's refraction) is smooth over the frame, so a
    low-order polynomial carries it to the edges better than a one-sided window does. The fit
    uses a regular sample of the whole-window points (a smooth field needs no more); the
    least-squares solve and the edge points' terms depend on ``fill`` only, so they are
    prepared once and each call is two small products.
    """

    def __init__(self, fill: np.ndarray):
        whole = fill >= FULL_WINDOW
        n_whole = int(np.count_nonzero(whole))
        self.active = 30 <= n_whole < whole.size
        if not self.active:
            return
        ys, xs = np.nonzero(whole)
        step = max(1, n_whole // _FIT_POINTS)
        self.sample = (ys[::step], xs[::step])
        self.solve = np.linalg.pinv(_cubic_basis(*self.sample, fill.shape))
        self.edge = np.nonzero(~whole)
        self.terms = _cubic_basis(*self.edge, fill.shape)
        self.alpha = np.clip((fill[self.edge] - 0.5) / (FULL_WINDOW - 0.5), 0, 1)

    def __call__(self, field: np.ndarray) -> np.ndarray:
        if not self.active:
            return field
        coef = self.solve @ field[self.sample].astype(np.float64)
        out = field.copy()
        out[self.edge] = self.alpha * field[self.edge] + (1 - self.alpha) * (self.terms @ coef)
        return out


def _is_bent(q: np.ndarray, valid: np.ndarray, v: tuple[float, float], field: tuple[np.ndarray, np.ndarray]) -> bool:
    """Whether the view is bent along ``v``: the registration moved the neighbouring cell by
    more than :data:`MIN_DISPLACEMENT_PX` over a percent of the lens, and the moved cell
    matches the pattern better (mean misfit below :data:`REGISTRATION_GAIN` of the exact
    shift's). Near a lens' edge a registration wanders a little on a square-on pattern too,
    without fitting any better."""
    shift = cv2.magnitude(field[0], field[1])[valid]
    if not shift.size or float(np.percentile(shift, 99)) <= MIN_DISPLACEMENT_PX:
        return False
    exact, moved = _shifted(q, v, np.nan), _remapped(q, v, field[0], field[1], np.nan)
    both = valid & np.isfinite(exact) & np.isfinite(moved)
    return bool(both.any()) and (float(np.mean(np.abs(moved - q)[both]))
                                 < REGISTRATION_GAIN * float(np.mean(np.abs(exact - q)[both])))


#: the local linear fit of the light's ratio may move the plain ratio by at most this fraction
MAX_SLOPE_CORRECTION = 0.15


def _local_ratio(image: np.ndarray, shifted: np.ndarray, valid: np.ndarray, period: float) -> np.ndarray:
    """The slow change of illumination between each place and its neighbouring cell: the
    ratio ``image / shifted`` at the place, fitted over a Gaussian window of a period as a
    ratio that changes linearly across it (``Σ image·d^k = Σ (r + g·d)·shifted·d^k`` for
    ``d^k`` in 1, dx, dy: a local linear fit, weighted as ``Σ image / Σ shifted`` is), on the
    places where both are seen. Place and cell are at the same phase of the pattern, so the
    pattern cancels in the ratio; both sums run over the same places.

    A plain ``Σ image / Σ shifted`` over a window cut by the picture's edge is the ratio of a
    place inside it, half a window in: under a light falling off to the corners (the ratio
    itself changes along the picture), that was off by several percent along the edge, where
    the cells that land all lie towards the middle (a photograph's grid of 5.9 mm period
    read 2.5–3 % dark in a band a period wide along its lower edge, and a 10 mm false line
    along that band's inner border). The linear term takes the ratio's own slope out; where
    the window holds too little to fit it, the plain ratio serves."""
    both = valid & np.isfinite(shifted)
    window_sum = _WindowSums(image.shape, period, period)
    i_small = window_sum.reduce(np.where(both, image, 0).astype(np.float32))
    s_small = window_sum.reduce(np.where(both, shifted, 0).astype(np.float32))
    sigma = window_sum.sigma
    radius = int(np.ceil(3 * sigma))
    u = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (u / sigma) ** 2)
    k0, k1, k2 = (g / g.sum()).astype(np.float32), (g * u / g.sum()).astype(np.float32), (g * u * u / g.sum()).astype(np.float32)

    def moment(a, kx, ky):  # Σ w(d)·dx^i·dy^j·a(x + d), with d in reduced cells
        return cv2.sepFilter2D(a, cv2.CV_32F, kx, ky, borderType=cv2.BORDER_CONSTANT).astype(np.float64)

    s0, sx, sy = moment(s_small, k0, k0), moment(s_small, k1, k0), moment(s_small, k0, k1)
    sxx, sxy, syy = moment(s_small, k2, k0), moment(s_small, k1, k1), moment(s_small, k0, k2)
    i0, ix, iy = moment(i_small, k0, k0), moment(i_small, k1, k0), moment(i_small, k0, k1)
    floor = 1e-6 * max(float(s0.max()), 1e-12)
    plain = np.where(s0 > floor, i0 / np.maximum(s0, 1e-12), 1.0)
    # the 3×3 normal equations [[s0 sx sy] [sx sxx sxy] [sy sxy syy]]·(r, gx, gy) = (i0, ix, iy),
    # solved for r alone by Cramer's rule (its minors are shared with the determinant)
    m0 = sxx * syy - sxy * sxy
    m1 = sx * syy - sxy * sy
    m2 = sx * sxy - sxx * sy
    det = s0 * m0 - sx * m1 + sy * m2
    num = i0 * m0 - sx * (ix * syy - sxy * iy) + sy * (ix * sxy - sxx * iy)
    # well posed where the window's spread about the place is a fair part of a whole window's
    # (σ² each way, less what the window's cut leaves): else the plain ratio
    spread = (sxx * s0 - sx * sx) * (syy * s0 - sy * sy)
    ok = (s0 > floor) & (spread > (0.25 * sigma * sigma * s0 * s0) ** 2) & (np.abs(det) > 1e-300)
    fitted = np.where(ok, num / np.where(ok, det, 1.0), plain)
    # a slope corrects the plain ratio by a few percent (4.6 % at most on the photographs seen);
    # where a window nearly degenerate (a thin strip of lens) would move it by more, the plain
    # ratio stands
    ratio = np.where(np.abs(fitted - plain) <= MAX_SLOPE_CORRECTION * np.abs(plain), fitted, plain)
    return window_sum.full(ratio.astype(np.float32))


def lattice_background(image: np.ndarray, valid: np.ndarray,
                       picture: tuple[tuple[int, int], tuple[int, int]] | None = None
                       ) -> tuple[np.ndarray, np.ndarray, Lattice] | None:
    """The backlight behind ``image`` from its neighbouring lattice cells (module docstring).

    Parameters
    ----------
    image : (m, n) float32 ndarray
        The working-grid frame.
    valid : (m, n) bool ndarray
        The lens (where the pattern is seen).
    picture : ((x0, y0), (rows, cols)), optional
        Where ``image`` lies in the whole picture (its origin and the picture's shape). Within
        a period of two of the picture's borders (its corners, where the pattern runs on
        unseen) :data:`CORNER_SHIFTS` cells may serve; without it, nowhere.

    Returns
    -------
    (bg, ok, lattice) or None
        ``bg`` the background (float32), ``ok`` where at least :data:`MIN_SHIFTS` shifted
        cells landed on the lens; None when the frame shows no clear period.
    """
    image = image.astype(np.float32, copy=False)
    coarse = _illumination(image, valid, 8.0)
    q0 = np.where(valid, image / np.maximum(coarse, 1e-6), 1.0).astype(np.float32)
    lattice = find_lattice(q0, valid)
    if lattice is None:
        return None
    shortest, period = lattice.periods
    illum = _illumination(image, valid, max(2.0, period))
    q1 = np.where(valid, image / np.maximum(illum, 1e-6), 1.0).astype(np.float32)
    q = np.where(valid, q1, np.nan).astype(np.float32)
    # the two lattice vectors' cells are registered from scratch, and decide whether the view
    # is bent; square on, the exact shifts serve (no 1/32 px rounding)
    base = [cell_displacement(q1, valid, v, period, shortest=shortest) for v in (lattice.a1, lattice.a2)]
    bent = any(_is_bent(q, valid, v, field) for v, field in zip((lattice.a1, lattice.a2), base))
    if bent:
        # a diagonal cell's displacement starts from the sum of theirs (a smooth bend is
        # locally linear)
        fields = base + [cell_displacement(q1, valid, v, period, shortest=shortest, iterations=DIAGONAL_ITERATIONS,
                                           start=(base[0][0] + sign * base[1][0], base[0][1] + sign * base[1][1]))
                         for v, sign in ((np.add(lattice.a1, lattice.a2), 1),
                                         (np.subtract(lattice.a1, lattice.a2), -1))]
    # In a bent view the cells on one side of a place differ from it steadily (scale, light),
    # which a median of one-sided cells near an edge keeps as a faint line along it: cells are
    # then used in pairs on either side (v and −v), and a pair with a cell off the lens drops
    # out whole. Square on, every cell that lands on the lens counts.
    img = np.where(valid, image, np.nan).astype(np.float32)
    big = np.float32(1e6)
    n = np.zeros(image.shape, np.uint8)
    values, singles = [], []
    # the pixels where three cells may serve (the picture's corners), and whether a cell is
    # missed there because it lies on the goggle's frame or off the lit lens, not past the
    # picture's border (then they may not)
    cy = cx = None
    if picture is not None:
        cy, cx = np.nonzero(valid & _picture_corners(image.shape, *picture, int(np.ceil(period)) + 2))
        blocked = np.zeros(len(cy), bool)
    for k, v in enumerate(lattice.shifts()):
        if bent:
            dx, dy = fields[k // 2]
            if k % 2 == 1:
                # here v = −u for the vector u registered just before; x's match in the cell
                # at −u is p with p + u + δ(p) = x, so to first order p = x − u − δ(x − u):
                # the field read one vector back (a smooth field: linear interpolation), negated
                zero = np.zeros_like(dx)
                dx = -_remapped(dx, v, zero, zero, 0.0, cv2.INTER_LINEAR)
                dy = -_remapped(dy, v, zero, zero, 0.0, cv2.INTER_LINEAR)
            a = _remapped(img, v, dx, dy, np.nan)
        else:
            a = _shifted(img, v, np.nan)
        a *= _local_ratio(image, a, valid, period)
        values.append(a)
        if bent:
            singles.append(a.copy())  # before the pairs pad it in place below
        if cy is not None and len(cy):
            blocked |= ~np.isfinite(a[cy, cx]) & ~_past_picture(valid, *picture, v, cy, cx)
        if bent and k % 2 == 1:
            before = values[-2]
            gone = ~(np.isfinite(a) & np.isfinite(before))
            before[gone], a[gone] = big, -big
            n += np.uint8(2) * (~gone).view(np.uint8)
    if not bent:
        # a median over the cells that landed on the lens
        med, n = _median_seen(values, big)
    else:
        med = _median8(values)
        # within a cell of the frame's border (or of a hole in the lit area) the pairs run out;
        # there the cells that are seen serve one-sided, each registered, as square on
        thin = valid & (n < MIN_SHIFTS)
        if thin.any():
            single_med, seen = _median_seen(singles, big)
            one_sided = thin & (seen >= MIN_SHIFTS)
            if one_sided.any():
                # the one-sided median differs from the pairs' steadily in a bent view: where
                # one took over from the other the background stepped, and the step read as a
                # line along the band (5–8 % on a close-up bent by 0.3). The pairs' side
                # blends into it over SEAM_RAMP_PX, a ramp the line filters do not answer to
                d = cv2.distanceTransform((~one_sided).view(np.uint8), cv2.DIST_L2, 3)
                w = np.clip(np.float32(1.0) - d / np.float32(SEAM_RAMP_PX), 0, 1)
                near = valid & ~thin & (seen >= MIN_SHIFTS) & (w > 0)
                med = np.where(near, w * single_med + (1 - w) * med, med)
            med = np.where(one_sided, single_med, med)
            n = np.where(thin, seen, n)
            lattice = replace(lattice, one_sided=one_sided)
    if cy is not None and len(cy):
        # within a cell of two of the frame's borders (a picture's corner) only three cells
        # land: 1.5 cells square in every corner, 9 % of a photograph, went unjudged. Their
        # median is still robust to a flaw in one of them
        three = ~blocked & (n[cy, cx] >= CORNER_SHIFTS) & (n[cy, cx] < MIN_SHIFTS)
        corner = np.zeros(image.shape, bool)
        corner[cy[three], cx[three]] = True
        if corner.any():
            med[corner] = _median_of_landed(singles if bent else values, corner, big)
            n = np.where(corner, MIN_SHIFTS, n)
            lattice = replace(lattice, corner=corner)
    ok = valid & (n >= MIN_SHIFTS)
    # the edges' blur is read off the background, not the frame: a flaw's own edges are the
    # steepest in a frame whose pattern is faint (a 10 mm scratch of 16 % on a checker out of
    # focus by several px read 0.7 px, and was then taken for dust on the target), and the
    # median of the cells has a fraction of the frame's noise
    lattice = replace(lattice, edge_sigma=edge_blur(np.where(ok, med / np.maximum(illum, 1e-6), 1.0), ok))
    bg = np.where(ok, med, image).astype(np.float32)
    return bg, ok, lattice


def _picture_corners(shape: tuple[int, int], origin: tuple[int, int], frame_shape: tuple[int, int],
                     side: int) -> np.ndarray:
    """Squares of ``side`` in the picture's four corners, on a crop of ``shape`` at ``origin``
    (``(x, y)``) of a picture of ``frame_shape``."""
    ys = np.arange(shape[0]) + origin[1]
    xs = np.arange(shape[1]) + origin[0]
    near_y = (ys < side) | (ys >= frame_shape[0] - side)
    near_x = (xs < side) | (xs >= frame_shape[1] - side)
    return near_y[:, None] & near_x[None, :]


def _past_picture(valid: np.ndarray, origin: tuple[int, int], frame_shape: tuple[int, int],
                  v: tuple[float, float], ys: np.ndarray, xs: np.ndarray, tolerance: float = 2.0) -> np.ndarray:
    """Whether the cell at ``v`` from each pixel ``(ys, xs)`` of a crop (``valid``, at
    ``origin`` of a picture of ``frame_shape``) lies past the picture's border (or within
    ``tolerance`` px of it), with the lens seen where the way to it leaves the picture: a strip
    of goggle frame along the border blocks the view there, and the pattern's cells do not run
    on behind it."""
    h, w = valid.shape
    gy = ys + origin[1] + v[1]
    gx = xs + origin[0] + v[0]
    past = ((gy < tolerance) | (gy > frame_shape[0] - 1 - tolerance)
            | (gx < tolerance) | (gx > frame_shape[1] - 1 - tolerance))
    cy = np.clip(np.clip(np.rint(gy), 0, frame_shape[0] - 1) - origin[1], 0, h - 1).astype(int)
    cx = np.clip(np.clip(np.rint(gx), 0, frame_shape[1] - 1) - origin[0], 0, w - 1).astype(int)
    return past & valid[cy, cx]


def _median_of_landed(values: list[np.ndarray], where: np.ndarray, big: np.float32) -> np.ndarray:
    """The median over the shifted cells that landed on the lens (those not padded to
    ``±big``), at the pixels ``where``."""
    stack = np.stack([a[where] for a in values])
    stack[~(np.abs(stack) < big / 2)] = np.nan
    return np.nanmedian(stack, axis=0).astype(np.float32)
