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
3. Background ``S(x) · median_v q(x + v)``, taken over the shifts that land on the lens.

It fails (returns None) when the frame has no clear period: a plain or merely uneven panel,
which the local fit of :mod:`goggleqc.inspect.background` handles.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: a lattice peak must reach this fraction of the zero-lag autocorrelation
MIN_PEAK = 0.35
#: shortest period accepted (working px): finer patterns are below a scratch's scale
MIN_PERIOD_PX = 4.0
#: the autocorrelation is taken over at most this square of the lens (working px)
MAX_WINDOW_PX = 256
#: at least this many of the 8 shifted cells must land on the lens for a background value
MIN_SHIFTS = 4


@dataclass(frozen=True)
class Lattice:
    """Two lattice vectors (working px, ``(dx, dy)``) and how strongly the pattern repeats."""

    a1: tuple[float, float]
    a2: tuple[float, float]
    strength: float

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
        h, w = q.shape
        if valid.sum() < 400:
            return None
    x = np.where(valid, q - 1.0, 0.0).astype(np.float32)
    x -= np.where(valid, float(x[valid].mean()), 0.0).astype(np.float32)
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


def lattice_background(image: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, Lattice] | None:
    """The backlight behind ``image`` from its neighbouring lattice cells (module docstring).

    Parameters
    ----------
    image : (m, n) float32 ndarray
        The working-grid frame.
    valid : (m, n) bool ndarray
        The lens (where the pattern is seen).

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
    period = max(np.hypot(*lattice.a1), np.hypot(*lattice.a2))
    illum = _illumination(image, valid, max(2.0, period))
    q = np.where(valid, image / np.maximum(illum, 1e-6), np.nan).astype(np.float32)
    # a median over the shifts that landed on the lens: the missing ones are padded
    # alternately above and below the range, which leaves the middle of the order in place
    big = np.float32(1e6)
    n = np.zeros(q.shape, np.uint8)
    missing = np.zeros(q.shape, np.uint8)
    values = []
    for v in lattice.shifts():
        a = _shifted(q, v, np.nan)
        gone = ~np.isfinite(a)
        missing += gone
        a[gone] = np.where(missing[gone] % 2 == 1, big, -big)
        n += ~gone
        values.append(a)
    med = _median8(values)
    ok = valid & (n >= MIN_SHIFTS)
    bg = np.where(ok, med * illum, image).astype(np.float32)
    return bg, ok, lattice
