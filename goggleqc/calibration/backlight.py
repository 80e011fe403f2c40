"""What the flat shows: the backlight kind and its geometry.

- **uniform** panels carry light traps: opaque discs, dark against the bright panel. They are
  found on the flat divided by its own bright envelope (so vignetting does not matter), then
  each centre is the darkness-weighted centroid and each radius comes from the dark area
  (``r = √(Σ darkness / π)``): both are exact for any symmetric blur (defocus, PSF).
- **pattern** panels (checker, grid, stripes) are found from the strongest peak of the
  windowed Fourier spectrum, refined by the phase drift of a complex demodulation across
  the frame (sub-bin accurate), then classified from their harmonics.
"""

from __future__ import annotations

import cv2
import numpy as np

from goggleqc.calibration.station import Pattern, Trap

#: light traps are 4–8 mm across (station-model.md §1); accept 2–16 mm
TRAP_DIAMETER_MM = (2.0, 16.0)
#: a pattern's strongest Fourier peak holds at least this share of the band's power ...
MIN_PEAK_SHARE = 0.15
#: ... and its amplitude is present across the frame (median ÷ mean over blocks)
MIN_COVERAGE = 0.85
#: the longest pattern period searched (mm): slower variation is panel shading
MAX_PERIOD_MM = 12.0


def bright_envelope(flat: np.ndarray, feature_px: float) -> np.ndarray:
    """The backlight without its dark features: a grey closing wider than ``feature_px``.

    Computed on a reduced image (the envelope is smooth), returned at full size.
    """
    h, w = flat.shape
    factor = max(1, int(feature_px // 12))
    small = cv2.resize(flat, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)
    k = int(np.ceil(feature_px / factor * 1.3)) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    closed = cv2.morphologyEx(small, cv2.MORPH_CLOSE, kernel, borderType=cv2.BORDER_REPLICATE)
    closed = cv2.GaussianBlur(closed, (0, 0), max(1.0, k / 4))
    return cv2.resize(closed, (w, h), interpolation=cv2.INTER_LINEAR)


def find_traps(flat: np.ndarray, pixel_size_mm: float) -> tuple[Trap, ...]:
    """Light traps in a dark-subtracted flat, sorted left to right.

    Parameters
    ----------
    flat : (M, N) float ndarray
        The flat minus the dark, DN.
    pixel_size_mm : float
        mm per pixel, to set the trap size range (``TRAP_DIAMETER_MM``).

    Returns
    -------
    tuple of Trap
        Centres and radii in pixels; empty when the panel has no traps.
    """
    d_min, d_max = (d / pixel_size_mm for d in TRAP_DIAMETER_MM)
    env = bright_envelope(flat, d_max)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.where(env > 0, flat / env, 1.0).astype(np.float32)
    binary = (norm < 0.5).astype(np.uint8)
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(binary, connectivity=8)
    h, w = flat.shape
    traps = []
    for i in range(1, n):
        x, y, bw, bh, area = stats[i]
        r_eq = np.sqrt(area / np.pi)
        if not d_min / 2 <= r_eq <= d_max / 2:
            continue
        if x == 0 or y == 0 or x + bw >= w or y + bh >= h:
            continue  # cut by the frame edge: its centre cannot be trusted
        if area < 0.6 * np.pi * (max(bw, bh) / 2) ** 2:
            continue  # not a disc
        cx, cy, r = float(centroids[i][0]), float(centroids[i][1]), float(r_eq)
        for _ in range(4):  # re-centre the measuring window on the refined centre
            rw = r + 6.0  # the trap plus its blurred edge (defocus, PSF): small, to keep dust out
            ro = 1.5 * r + 8.0  # the surround that sets the local bright level
            x0, x1 = max(0, int(cx - ro)), min(w, int(cx + ro) + 2)
            y0, y1 = max(0, int(cy - ro)), min(h, int(cy + ro) + 2)
            yy, xx = np.mgrid[y0:y1, x0:x1]
            d = np.hypot(xx - cx, yy - cy)
            patch = flat[y0:y1, x0:x1]
            ring = patch[(d > rw) & (d <= ro)]
            if ring.size < 8:
                break
            level = float(np.median(ring))
            if level <= 0:
                break
            wgt = np.clip(1.0 - patch / level, 0.0, 1.0) * (d <= rw)
            total = float(wgt.sum())
            if total <= 0:
                break
            cx = float((wgt * xx).sum() / total)
            cy = float((wgt * yy).sum() / total)
            r = float(np.sqrt(total / np.pi))
        traps.append(Trap(round(cx, 3), round(cy, 3), round(r, 3)))
    return tuple(sorted(traps, key=lambda t: (t.x_px, t.y_px)))


# -- pattern ----------------------------------------------------------------------------------

def _normalised(flat: np.ndarray, sigma_px: float) -> np.ndarray:
    mean = cv2.GaussianBlur(flat, (0, 0), sigma_px, borderType=cv2.BORDER_REFLECT)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(mean > 0, flat / mean - 1.0, 0.0)
    return out.astype(np.float32)


def _dft_amplitude(img: np.ndarray, window: np.ndarray, f: np.ndarray) -> float:
    """|Σ w·img·exp(−2πi f·x)| at one frequency ``f`` = (fx, fy) in cycles per pixel."""
    h, w = img.shape
    ex = np.exp(-2j * np.pi * f[0] * np.arange(w))
    ey = np.exp(-2j * np.pi * f[1] * np.arange(h))
    return float(np.abs(ey @ (img * window) @ ex))


def _refine_frequency(img: np.ndarray, f: np.ndarray, block: int) -> np.ndarray:
    """Refine a frequency by the phase drift of ``img·exp(−2πi f·x)`` between blocks."""
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(3):
        z = img * np.exp(-2j * np.pi * (f[0] * xx + f[1] * yy)).astype(np.complex64)
        nby, nbx = h // block, w // block
        zb = z[: nby * block, : nbx * block].reshape(nby, block, nbx, block).sum(axis=(1, 3))
        df = np.zeros(2)
        if nbx > 1:
            df[0] = np.angle((zb[:, 1:] * np.conj(zb[:, :-1])).sum()) / (2 * np.pi * block)
        if nby > 1:
            df[1] = np.angle((zb[1:, :] * np.conj(zb[:-1, :])).sum()) / (2 * np.pi * block)
        f = f + df
        if np.hypot(*df) < 1e-7:
            break
    return f


def _coverage(img: np.ndarray, f: np.ndarray, block: int) -> float:
    """Median ÷ mean of the demodulated amplitude over blocks: ≈ 1 for a pattern filling the
    frame, small for a component confined to a few places (traps, a dust cluster)."""
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    z = img * np.exp(-2j * np.pi * (f[0] * xx + f[1] * yy)).astype(np.complex64)
    nby, nbx = max(1, h // block), max(1, w // block)
    amp = np.abs(z[: nby * block, : nbx * block].reshape(nby, block, nbx, block).sum(axis=(1, 3)))
    return float(np.median(amp) / max(float(amp.mean()), 1e-12))


def find_pattern(flat: np.ndarray, pixel_size_mm: float) -> tuple[Pattern | None, np.ndarray | None, float]:
    """The periodic pattern of a flat: kind, period, angle, and a coarse contrast map.

    Returns
    -------
    pattern : Pattern or None
        None when the flat has no clear periodic structure.
    contrast_map : (P, Q) float32 ndarray or None
        Local pattern contrast (√2 × rms of the band-passed flat ÷ local mean) on cells of
        ``cell_px`` pixels.
    cell_px : float
    """
    h, w = flat.shape
    norm = _normalised(flat, 10.0 / pixel_size_mm)  # pattern periods are a few mm
    n = min(h, w)
    size = cv2.getOptimalDFTSize(n) if cv2.getOptimalDFTSize(n) <= n else n
    y0, x0 = (h - size) // 2, (w - size) // 2
    crop = norm[y0:y0 + size, x0:x0 + size]
    win1 = np.hanning(size).astype(np.float32)
    window = np.outer(win1, win1)
    spec = np.abs(np.fft.rfft2(crop * window))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    fr = np.hypot(fx, fy)
    spec[fr < 3.0 / size] = 0  # the mean and the slow vignetting left after normalising
    spec[fr < pixel_size_mm / MAX_PERIOD_MM] = 0  # slower shading is not a pattern
    iy, ix = np.unravel_index(np.argmax(spec), spec.shape)
    peak = spec[iy, ix]
    power = spec.astype(np.float64) ** 2

    def near(f) -> float:  # power within 2 bins of frequency f (cycles/px) on the half-plane
        fxi, fyi = (f[0], f[1]) if f[0] >= 0 else (-f[0], -f[1])
        cx, cy = int(round(fxi * size)), int(round(fyi * size)) % size
        if cx >= power.shape[1]:
            return 0.0
        rows = [(cy + d) % size for d in range(-2, 3)]
        return float(power[rows, max(0, cx - 2):cx + 3].sum())

    f0 = np.array([fx[0, ix], fy[iy, 0]])
    # a thin-line grid spreads its power over two axes and their harmonics: count the peak,
    # its orthogonal partner and their second harmonics together
    share = near(f0) + near((-f0[1], f0[0])) + near(2 * f0) + near((-2 * f0[1], 2 * f0[0]))
    if peak <= 0 or share < MIN_PEAK_SHARE * power.sum():
        return None, None, 0.0  # no dominant periodic component: traps, dust, shading
    block = int(max(8, min(size // 4, round(4 / np.hypot(*f0)))))
    f1 = _refine_frequency(norm, f0, block)
    # a true period refines within a bin or so of its spectral peak; the phase drift of a
    # component that is not periodic (a trap under strong vignetting) wanders off, once as
    # far as a 21 mm "grid" on a 48 mm frame
    if np.hypot(*(f1 - f0)) > 1.5 / size or not pixel_size_mm / MAX_PERIOD_MM <= np.hypot(*f1) <= 0.5:
        return None, None, 0.0
    if _coverage(norm, f1, block) < MIN_COVERAGE:
        return None, None, 0.0  # the component lives in a few places only: not a backlight pattern
    full_window = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    a1 = _dft_amplitude(norm, full_window, f1)
    # a second, orthogonal fundamental of about the same strength: checker or grid
    rot = np.array([-f1[1], f1[0]])
    a2 = _dft_amplitude(norm, full_window, rot)
    if a2 > 0.3 * a1:
        f2 = _refine_frequency(norm, rot, block)
        a2 = _dft_amplitude(norm, full_window, f2)
        # a grid's line crossings put energy at f1 ± f2 and 2·f1; a checker has none there
        harm = max(_dft_amplitude(norm, full_window, f1 + f2), _dft_amplitude(norm, full_window, f1 - f2),
                   _dft_amplitude(norm, full_window, 2 * f1), _dft_amplitude(norm, full_window, 2 * f2))
        fmag = (np.hypot(*f1) + np.hypot(*f2)) / 2
        ang = np.degrees(np.arctan2(f1[1], f1[0]))
        if harm > 0.02 * max(a1, a2):
            kind, period, angle = "grid", 1.0 / fmag, ang % 90.0
        else:
            # a checker's fundamentals run along its diagonals, at √2 / period
            kind, period, angle = "checker", np.sqrt(2.0) / fmag, (ang - 45.0) % 90.0
    else:
        kind, period, angle = "stripes", 1.0 / np.hypot(*f1), np.degrees(np.arctan2(f1[1], f1[0])) % 180.0
    if angle > 90.0 - 1e-6 and kind != "stripes":
        angle = 0.0
    cmap, cell = contrast_map(flat, period)
    contrast = float(np.median(cmap)) if cmap.size else 0.0
    return Pattern(kind, float(period), float(angle), round(contrast, 4)), cmap, cell


def contrast_map(flat: np.ndarray, period_px: float) -> tuple[np.ndarray, float]:
    """Local pattern contrast on cells of about two periods: √2 × rms(band-passed) ÷ mean.

    For a sine pattern this is its modulation amplitude; haze lowers it by about ``1 − h``.
    """
    h, w = flat.shape
    mean = cv2.GaussianBlur(flat, (0, 0), period_px, borderType=cv2.BORDER_REFLECT)
    fine = cv2.GaussianBlur(flat, (0, 0), max(0.7, period_px / 12), borderType=cv2.BORDER_REFLECT)
    band = fine - mean
    cell = max(2, int(round(2 * period_px)))
    nb = (max(1, w // cell), max(1, h // cell))
    power = cv2.resize(band * band, nb, interpolation=cv2.INTER_AREA)
    level = cv2.resize(mean, nb, interpolation=cv2.INTER_AREA)
    with np.errstate(divide="ignore", invalid="ignore"):
        cmap = np.where(level > 0, np.sqrt(2 * power) / level, 0.0)
    return cmap.astype(np.float32), float(cell)


def classify_backlight(flat: np.ndarray, pixel_size_mm: float):
    """``('uniform', traps, None, None, 0)`` or ``('pattern', (), pattern, contrast_map, cell_px)``."""
    pattern, cmap, cell = find_pattern(flat, pixel_size_mm)
    if pattern is not None and pattern.contrast > 0.02:
        return "pattern", (), pattern, cmap, cell
    return "uniform", find_traps(flat, pixel_size_mm), None, None, 0.0
