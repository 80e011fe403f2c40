"""Spots: small dark or bright blobs (inclusions, digs, dust on the lens, bubbles).

On the working grid of :mod:`goggleqc.inspect.background`, a centre-surround
(difference-of-Gaussians) response at a few scales is expressed in noise σ; its local maxima
above ``high_sigma`` are spot candidates, each measured in a window sized by the scale that
answered best. Elongated candidates are scratches, not spots.

Size and contrast come from the departure ``1 − rel`` around the blob: the integrated
departure ``I`` (full-resolution px²) and its second moment. A disc of diameter ``D`` has
variance ``D²/16`` per axis; the camera PSF and the 2×2 working grid add about
``BLUR_VAR_PX2``, which is subtracted, so ``D = 4·√(σ² − blur)`` holds down to spots of a
pixel or two. ``contrast = I / (πD²/4)`` is then the mean τ drop over the disc.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from goggleqc.errors import InputError
from goggleqc.inspect.background import Relative
from goggleqc.inspect.results import Spot
from goggleqc.inspect.scratches import noise_sigma

#: variance (full-resolution px²) the optics and the 2×2 working grid add to a point
BLUR_VAR_PX2 = 1.1


@dataclass(frozen=True)
class SpotParams:
    """Detector settings; thresholds in noise σ of the centre-surround response.

    Attributes
    ----------
    scales : tuple of float
        Centre Gaussian σ on the working grid; the surround is 2.5× wider.
    high_sigma : float
        A spot's centre-surround peak must reach this.
    bright_factor : float
        Bright blobs need ``bright_factor ×`` the thresholds.
    max_elongation : float
        Blobs longer than this over their width are left to the scratch detector.
    min_diameter_px, max_diameter_px : float
        Blobs outside this diameter range (full-resolution px) are not spots; wider, fainter
        departures belong to the coating detector.
    min_contrast : float
        Fainter blobs (mean τ drop over the disc) are not spots.
    """

    scales: tuple[float, ...] = (0.8, 1.6, 3.2)
    high_sigma: float = 7.0
    bright_factor: float = 1.3
    max_elongation: float = 1.8
    min_diameter_px: float = 1.0
    max_diameter_px: float = 60.0
    min_contrast: float = 0.03


def _dog(d: np.ndarray, s: float) -> np.ndarray:
    return cv2.GaussianBlur(d, (0, 0), s) - cv2.GaussianBlur(d, (0, 0), 2.5 * s)


@lru_cache(maxsize=16)
def _gain(s: float) -> float:
    rng = np.random.default_rng(99)
    d = rng.standard_normal((256, 256)).astype(np.float32)
    r = _dog(d, s)[24:-24, 24:-24]
    return float(r.std())


def blob_response(rel: Relative, scales: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, float]:
    """Max-over-scales centre-surround response in noise σ (positive = dark), the index of
    the scale that gave it, and the pixel noise σ of the whitened departure."""
    d = (np.float32(1.0) - rel.rel) * rel.weight
    d[~rel.valid] = 0
    sigma = noise_sigma(d, rel.valid)
    z = best = None
    for i, s in enumerate(scales):
        zs = _dog(d, s) / np.float32(sigma * _gain(s))
        if z is None:
            z, best = zs, np.zeros(zs.shape, np.uint8)
        else:
            better = np.abs(zs) > np.abs(z)
            z = np.where(better, zs, z)
            best[better] = i
    z[~rel.valid] = 0
    return z, best, sigma


def find_spots(rel: Relative, *, central: np.ndarray | None = None, pixel_size_mm: float | None = None,
               params: SpotParams = SpotParams()) -> list[Spot]:
    """Find spots in a relative transmittance image.

    Parameters
    ----------
    rel : Relative
        From :func:`goggleqc.inspect.background.relative_image`.
    central : (M, N) bool ndarray, optional
        The central zone at full resolution; None gives zone ``unknown``.
    pixel_size_mm : float, optional
        mm per full-resolution pixel.
    params : SpotParams

    Returns
    -------
    list of Spot
        Elongated blobs are left out: they are the scratch detector's.
    """
    if not params.high_sigma > 0:
        raise InputError("SpotParams: high_sigma must be > 0")
    f = rel.scale
    z, best, sigma = blob_response(rel, params.scales)
    dep = np.float32(1.0) - rel.rel
    noise = np.float32(sigma) / np.maximum(rel.weight, np.float32(0.05))
    h, w = z.shape
    out: list[Spot] = []
    for polarity, sign, k in (("dark", 1.0, 1.0), ("bright", -1.0, params.bright_factor)):
        zp = z * np.float32(sign)
        peaks = (zp >= params.high_sigma * k) & (zp >= cv2.dilate(zp, np.ones((3, 3), np.uint8)))
        ys, xs = np.nonzero(peaks)
        order = np.argsort(-zp[ys, xs])
        taken: list[tuple[float, float, float]] = []
        for y, x in zip(ys[order], xs[order]):
            radius = max(3, int(np.ceil(3 * params.scales[best[y, x]])))
            if any((y - ty) ** 2 + (x - tx) ** 2 <= tr ** 2 for ty, tx, tr in taken):
                continue
            taken.append((y, x, radius))
            ya, yb, xa, xb = max(0, y - radius), min(h, y + radius + 1), max(0, x - radius), min(w, x + radius + 1)
            d_win = dep[ya:yb, xa:xb] * np.float32(sign)
            win = np.where((d_win > 2 * noise[ya:yb, xa:xb]) & rel.valid[ya:yb, xa:xb], d_win, 0)
            total = float(win.sum())
            if total <= 0:
                continue
            yy, xx = np.mgrid[ya:yb, xa:xb]
            cy, cx = float((win * yy).sum() / total), float((win * xx).sum() / total)
            cov = np.array([[(win * (xx - cx) ** 2).sum(), (win * (xx - cx) * (yy - cy)).sum()],
                            [(win * (xx - cx) * (yy - cy)).sum(), (win * (yy - cy) ** 2).sum()]]) / total
            ev = np.linalg.eigvalsh(cov * f * f)
            ev = np.maximum(ev - BLUR_VAR_PX2, 0.0)
            if ev[1] > 4.0 and np.sqrt(ev[1] / max(ev[0], 0.25)) > params.max_elongation:
                continue  # a line: the scratch detector's
            diameter = float(4.0 * np.sqrt(max(ev.mean(), 0.0625)))
            contrast = min(total * f * f / (np.pi * diameter ** 2 / 4), 1.0)
            if not params.min_diameter_px <= diameter <= params.max_diameter_px or contrast < params.min_contrast:
                continue
            fx, fy = cx * f + (f - 1) / 2, cy * f + (f - 1) / 2  # working-grid centre → full-res px
            r = diameter / 2
            bbox = [int(np.floor(fx - r)), int(np.floor(fy - r)), int(np.ceil(fx + r)) + 1, int(np.ceil(fy + r)) + 1]
            zone = "unknown"
            if central is not None:
                cy0, cx0 = max(0, bbox[1]), max(0, bbox[0])
                zone = "central" if central[cy0:bbox[3], cx0:bbox[2]].any() else "marginal"
            out.append(Spot(diameter_px=diameter, contrast=sign * contrast, zone=zone, bbox_px=bbox,
                            diameter_mm=diameter * pixel_size_mm if pixel_size_mm else None,
                            polarity=polarity, score=float(zp[y, x]) / params.high_sigma))
    return out


def spot_mask(spots: list[Spot], shape: tuple[int, int], scale: int, grow: float = 1.5) -> np.ndarray:
    """Working-grid mask of found spots (discs ``grow``× their diameter), to keep their rims
    out of the scratch detector."""
    mask = np.zeros(shape, np.uint8)
    for sp in spots:
        cx = (sp.bbox_px[0] + sp.bbox_px[2]) / 2 / scale
        cy = (sp.bbox_px[1] + sp.bbox_px[3]) / 2 / scale
        cv2.circle(mask, (int(round(cx)), int(round(cy))), int(np.ceil(grow * sp.diameter_px / 2 / scale)) + 1, 1, -1)
    return mask.astype(bool)
