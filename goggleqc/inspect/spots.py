"""Spots: small dark or bright blobs (inclusions, digs, dust on the lens, bubbles).

On the working grid of :mod:`goggleqc.inspect.background`, a centre-surround
(difference-of-Gaussians) response at a few scales is expressed in noise σ; its local maxima
above ``high_sigma`` are spot candidates, each measured in a window sized by the scale that
answered best. Elongated candidates are scratches, not spots.

Size and contrast come from the departure ``1 − rel`` around the blob: the integrated
departure ``I`` (full-resolution px²) and its second moment. A disc of diameter ``D`` has
variance ``D²/16`` per axis; the camera PSF and the 2×2 working grid add about
``OPTICS_VAR_PX2`` plus ``f²/12`` for a working cell of ``f`` px, which is subtracted, so ``D = 4·√(σ² − blur)`` holds down to spots of a
pixel or two. ``contrast = I / (πD²/4)`` is then the mean τ drop over the disc.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from goggleqc.errors import InputError
from goggleqc.inspect.background import SCALE, Relative
from goggleqc.inspect.results import Mark, Spot
from goggleqc.inspect.scratches import BUFFERS, MaxAbs, departure_at, nonzero_yx, valid_box, zero_outside

#: a blob measured at least this fraction of its measuring window across fills the window
TARGET_WINDOW_FILL = 0.7
#: variance (full-resolution px²) the optics add to a point; the working grid adds f²/12
OPTICS_VAR_PX2 = 0.8


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
        departures belong to the coating detector. ``max_diameter_px`` is for the default
        working grid (:data:`~goggleqc.inspect.background.SCALE` px per working px) and
        grows with a coarser one, as the detector's scales do: with a fixed 60 px, a 12 MP
        photograph (working grid of 4) never reported a spot over 0.96 mm.
    min_contrast : float
        Fainter blobs (mean τ drop over the disc) are not spots: a departure of a few percent
        over millimetres is a coating flaw (0.5–5 %, station-model §3), the coating detector's.
    crowd, crowd_factor : int, float
        When more than ``crowd`` candidates pass, only those ``crowd_factor`` times stronger
        than their median are spots: the rest is structure the background model left.
    target_diameter_ratio, target_max_contrast, target_edge_ratio : float
        Without a flat, on a pattern backlight: a blob at least ``target_diameter_ratio``
        times the pattern's edge blur σ across (a point blurred by σ measures 4σ), fainter
        than ``target_max_contrast`` and with an edge at least ``target_edge_ratio`` as blurred
        as the pattern's (:func:`edge_sigma`) is dust on the defocused target, reported as a
        ``target`` mark; the camera focuses on the lens. On simulated close-ups dust on the
        target has edges of 0.77–0.93 of that blur, spots on the lens mostly under 0.5; one
        grain on a target 0.32 mm out of focus kept 16 % of contrast.
    """

    scales: tuple[float, ...] = (0.8, 1.6, 3.2)
    high_sigma: float = 7.0
    bright_factor: float = 1.3
    max_elongation: float = 1.8
    min_diameter_px: float = 1.0
    max_diameter_px: float = 60.0
    min_contrast: float = 0.08
    crowd: int = 25
    crowd_factor: float = 2.5
    target_diameter_ratio: float = 3.5
    target_max_contrast: float = 0.20
    target_edge_ratio: float = 0.6


#: a peak within this many of a stronger peak's scales σ (working px) is the stronger one's blob
TAKEN_SCALES = 1.5

#: Without a flat, a blob whose measuring window reaches past the picture's edge must be this
#: many times as strong: its surround there is the filters' mirrored border, and a blurred
#: grid line running along the edge left a 0.6 mm "spot" of 8.6 % at 1.33× the threshold (a
#: false reject on the second renderer's photographs, seed 5). The true spots of its
#: development photographs (seeds 4, 5, 8, 11: 154) scored 3.9× the threshold or more.
PICTURE_EDGE_FACTOR = 2.0


def _past_picture(y: int, x: int, radius: int, rel: Relative) -> bool:
    """Whether a window of ``radius`` round working pixel (y, x) reaches past the picture
    (``rel.frame_shape``; the grid may be a crop of it at ``rel.origin``)."""
    rows, cols = rel.frame_shape
    if not rows:
        return False
    gy, gx = y + rel.origin[1], x + rel.origin[0]
    return gy - radius < 0 or gx - radius < 0 or gy + radius >= rows or gx + radius >= cols


def _window_radius(s: float) -> int:
    """Radius (working px) of the window a blob that answered best at scale ``s`` is measured in."""
    return max(3, int(np.ceil(3 * s)))


def _dog(d: np.ndarray, s: float) -> np.ndarray:
    return cv2.GaussianBlur(d, (0, 0), s) - cv2.GaussianBlur(d, (0, 0), 2.5 * s)


@lru_cache(maxsize=16)
def _gain(s: float) -> float:
    rng = np.random.default_rng(99)
    d = rng.standard_normal((256, 256)).astype(np.float32)
    r = _dog(d, s)[24:-24, 24:-24]
    return float(r.std())


def _gauss_kernel(s: float) -> np.ndarray:
    """The float32 kernel ``cv2.GaussianBlur(·, (0, 0), s)`` uses on a float image."""
    return cv2.getGaussianKernel(round(s * 8 + 1) | 1, s, cv2.CV_32F).ravel()


@lru_cache(maxsize=8)
def _dog_spectra(shape: tuple[int, int], scales: tuple[float, ...]) -> tuple[np.ndarray, ...]:
    """Multipliers, in OpenCV's packed DFT layout, that apply the centre-minus-surround
    kernels of ``scales`` on a ``shape`` grid (centred on (0, 0) with wrap-around), each
    divided by its white-noise gain and by the inverse transform's 1/N.

    A symmetric kernel's spectrum is real, so the product with an image's spectrum scales
    both halves of each complex entry alike: one elementwise multiply rather than a complex
    one (``mulSpectrums`` of an all-ones spectrum lays the real values out that way).
    """
    out = []
    for s in scales:
        k2 = np.zeros(shape)
        for sign, width in ((1.0, s), (-1.0, 2.5 * s)):
            k = _gauss_kernel(width).astype(np.float64)
            r = len(k) // 2
            ky, kx = np.zeros(shape[0]), np.zeros(shape[1])
            ky[np.arange(-r, r + 1) % shape[0]] = k
            kx[np.arange(-r, r + 1) % shape[1]] = k
            k2 += sign * np.outer(ky, kx)
        spectrum = cv2.dft((k2 / (_gain(s) * k2.size)).astype(np.float32))
        out.append(cv2.mulSpectrums(np.ones_like(spectrum), spectrum, 0))
    return tuple(out)


def _dft_size(n: int) -> int:
    """A fast DFT length ≥ ``n``: a multiple of 16 with no prime factor above 5. OpenCV's
    smallest such length may be odd (405 = 3⁴·5), and transforms of those take up to 20 %
    longer; the coarser lengths also let lenses framed a little differently share spectra."""
    m = -(-n // 16) * 16
    while cv2.getOptimalDFTSize(m) != m:
        m += 16
    return m


def _dogs(d: np.ndarray, scales: tuple[float, ...], box: tuple[int, int, int, int]) -> list[np.ndarray]:
    """``_dog(d, s) / _gain(s)`` over ``d[y0:y1, x0:x1]`` (``box``) for every scale, by one
    forward and one inverse DFT per scale.

    The same kernels and the same mirrored border (``BORDER_REFLECT_101`` of the whole
    ``d``), the box padded by the widest kernel's reach so the DFT's wrap-around touches
    padding only; the result differs from the direct convolutions by float32 rounding only:
    ≲1e-5 of the noise σ, up to 1e-4 beside a very dark defect, against thresholds of 7σ.
    Six direct Gaussian blurs, the widest 65 taps, cost twice as much.
    """
    reach = max(len(_gauss_kernel(2.5 * s)) // 2 for s in scales)
    (hh, ww), (y0, y1, x0, x1) = d.shape, box
    h, w = y1 - y0, x1 - x0
    ph, pw = _dft_size(h + 2 * reach), _dft_size(w + 2 * reach)
    bottom, right = max(0, y1 + reach - hh), max(0, x1 + reach - ww)
    mirrored = cv2.copyMakeBorder(d, reach, bottom, reach, right, cv2.BORDER_REFLECT_101,
                                  dst=BUFFERS.get("spots.mirrored", (hh + reach + bottom, ww + reach + right)))
    padded = cv2.copyMakeBorder(mirrored[y0:y1 + 2 * reach, x0:x1 + 2 * reach], 0, ph - h - 2 * reach, 0, pw - w - 2 * reach,
                                cv2.BORDER_CONSTANT, value=0, dst=BUFFERS.get("spots.padded", (ph, pw)))
    spectrum = cv2.dft(padded, dst=BUFFERS.get("spots.spectrum", (ph, pw)))
    product = BUFFERS.get("spots.product", (ph, pw))
    return [cv2.idft(np.multiply(spectrum, k, out=product), dst=BUFFERS.get(f"spots.dog{i}", (ph, pw)),
                     flags=cv2.DFT_REAL_OUTPUT)[reach:reach + h, reach:reach + w]
            for i, k in enumerate(_dog_spectra((ph, pw), tuple(scales)))]


def blob_response(rel: Relative, scales: tuple[float, ...], low: float
                  ) -> tuple[np.ndarray, np.ndarray, tuple[int, int], float]:
    """Max-over-scales centre-surround response in noise σ (positive = dark) and the index of
    the scale that gave it, over the window of the grid where ``|z|`` may reach ``low``
    (grown by the local-maximum test's one pixel); the window's corner ``(y, x)``; the pixel
    noise σ of the whitened departure.

    Spots are rare: selecting over the scales, dividing by the local noise and masking over
    the whole grid cost more than screening the largest ``|response|`` against ``low`` times
    the local noise and doing the rest where that screen leaves anything.
    """
    d, sigma, local = rel.whitened
    nothing = np.zeros((0, 0), np.float32), np.zeros((0, 0), np.uint8), (0, 0), sigma
    box = valid_box(rel.valid)
    if box is None:
        return nothing
    y0, y1, x0, x1 = box
    dogs = _dogs(d, scales, box)
    shape = (y1 - y0, x1 - x0)
    mag, work = np.abs(dogs[0], out=BUFFERS.get("spots.mag", shape)), BUFFERS.get("spots.work", shape)
    for dog in dogs[1:]:
        np.maximum(mag, np.abs(dog, out=work), out=mag)
    # the screen is lowered by far more than float32 rounding: it keeps every pixel of |z| ≥ low
    screen = cv2.compare(mag, np.multiply(local[y0:y1, x0:x1], np.float32(low * (1 - 1e-5)), out=work), cv2.CMP_GE,
                         dst=BUFFERS.get("spots.screen", shape, np.uint8))
    valid = BUFFERS.get("spots.valid", shape, np.uint8)
    np.copyto(valid.view(bool), rel.valid[y0:y1, x0:x1])
    # 255 & 1: a 0/1 mask, searched as bool
    ys, xs = nonzero_yx(cv2.bitwise_and(screen, valid, dst=screen).view(bool))
    if len(ys) == 0:
        return nothing
    # the window, and its part inside the box (where z may be nonzero) in box coordinates
    h, w = d.shape
    wy0, wy1 = max(0, y0 + int(ys.min()) - 1), min(h, y0 + int(ys.max()) + 2)
    wx0, wx1 = max(0, x0 + int(xs.min()) - 1), min(w, x0 + int(xs.max()) + 2)
    by0, by1, bx0, bx1 = max(wy0, y0) - y0, min(wy1, y1) - y0, max(wx0, x0) - x0, min(wx1, x1) - x0
    inner = (slice(by0, by1), slice(bx0, bx1))
    best = MaxAbs((by1 - by0, bx1 - bx0))
    for i, dog in enumerate(dogs):
        best.update(np.array(dog[inner]) if i == 0 else dog[inner], i)
    # the local noise is common to all scales: it divides the winner only
    np.divide(best.z, local[y0:y1, x0:x1][inner], out=best.z)
    z, index = np.zeros((wy1 - wy0, wx1 - wx0), np.float32), np.zeros((wy1 - wy0, wx1 - wx0), np.uint8)
    at = (slice(by0 + y0 - wy0, by1 + y0 - wy0), slice(bx0 + x0 - wx0, bx1 + x0 - wx0))
    z[at] = zero_outside(best.z, np.ascontiguousarray(valid[inner]))
    index[at] = best.index
    return z, index, (wy0, wx0), sigma


def find_spots(rel: Relative, *, zone_of=None, pixel_size_mm: float | None = None,
               params: SpotParams = SpotParams(), exclude: np.ndarray | None = None) -> list[Spot]:
    """Find spots in a relative transmittance image.

    Parameters
    ----------
    rel : Relative
        From :func:`goggleqc.inspect.background.relative_image`.
    zone_of : callable, optional
        ``zone_of(xy)`` gives the zone from (K, 2) full-resolution pixel coordinates; None
        gives ``unknown``.
    pixel_size_mm : float, optional
        mm per full-resolution pixel.
    params : SpotParams
    exclude : (m, n) bool ndarray, optional
        Working-grid pixels claimed by found scratches: a blob peaking there is a piece of a
        scratch, not a spot.

    Returns
    -------
    list of Spot
        Elongated blobs are left out: they are the scratch detector's.
    """
    if not params.high_sigma > 0:
        raise InputError("SpotParams: high_sigma must be > 0")
    f = rel.scale
    max_diameter = params.max_diameter_px * max(1.0, f / SCALE)
    # candidates of both polarities in one sparse pass; the local-maximum test and everything
    # after it run on them only (raster order kept, so ties sort as over the whole grid)
    low = params.high_sigma * min(1.0, params.bright_factor)
    z, best, (oy, ox), sigma = blob_response(rel, params.scales, low)
    if z.size == 0:
        return []
    h, w = rel.rel.shape
    joined = rel.model == "flat"
    cy_all, cx_all = nonzero_yx(np.abs(z) >= low)  # window coordinates
    out: list[Spot] = []
    # full-resolution centre and radius of each spot kept, of either polarity: a bubble's
    # brighter core lies within its dark rim (found first), and is that bubble, not a second spot
    centres: list[tuple[float, float, float]] = []
    for polarity, sign, k in (("dark", 1.0, 1.0), ("bright", -1.0, params.bright_factor)):
        zc = z[cy_all, cx_all] * np.float32(sign)
        sel = zc >= params.high_sigma * k
        ys, xs, zc = cy_all[sel], cx_all[sel], zc[sel]
        if len(ys) == 0:
            continue
        # a peak is at least its 8 neighbours (the grid's edge left out; the window holds
        # every neighbour of a candidate); the largest neighbour of sign·z is sign times the
        # largest (dark) or smallest (bright) of z
        around = (cv2.dilate if sign > 0 else cv2.erode)(z, _RING3)[ys, xs]
        sel = zc >= around * np.float32(sign)
        zp = zc[sel]
        ys, xs = ys[sel] + oy, xs[sel] + ox  # grid coordinates from here on
        if exclude is not None:
            keep = ~exclude[ys, xs]
            ys, xs, zp = ys[keep], xs[keep], zp[keep]
        if len(ys) > params.crowd:
            # dozens of "spots" are the background's own residue (an uncalibrated pattern's
            # corners): a real spot must stand out of that crowd, not just out of the noise
            strong = zp >= params.crowd_factor * float(np.median(zp))
            ys, xs, zp = ys[strong], xs[strong], zp[strong]
        order = np.argsort(-zp)
        taken: list[tuple[float, float, float]] = []
        for y, x, zpeak in zip(ys[order], xs[order], zp[order]):
            s_best = params.scales[best[y - oy, x - ox]]
            radius = _window_radius(s_best)
            if not joined and zpeak < PICTURE_EDGE_FACTOR * params.high_sigma * k and _past_picture(y, x, radius, rel):
                continue
            # a weaker peak within a stronger one's own blob (not its whole window: a small
            # dig 1 mm beside a 1.1 mm grain of dust lay inside the grain's window) is that blob
            if any((y - ty) ** 2 + (x - tx) ** 2 <= tr ** 2 for ty, tx, tr in taken):
                continue
            taken.append((y, x, max(2.0, TAKEN_SCALES * s_best)))
            ya, yb, xa, xb = max(0, y - radius), min(h, y + radius + 1), max(0, x - radius), min(w, x + radius + 1)
            d_win = (np.float32(1.0) - rel.rel[ya:yb, xa:xb]) * np.float32(sign)
            # without a flat, measured against its own surround, as a photometer's annulus:
            # the median of the window's rim, so an offset the background estimate left nearby
            # (a percent or two) does not spread the blob over the whole window
            if not joined:
                rim = np.ones(d_win.shape, bool)
                rim[1:-1, 1:-1] = False
                rim &= rel.valid[ya:yb, xa:xb]
                if rim.sum() >= 8:
                    d_win = d_win - np.float32(np.median(d_win[rim]))
            noise = np.float32(sigma) / np.maximum(rel.weight[ya:yb, xa:xb], np.float32(0.05))
            # the blob's own pixels: above the noise and above a fraction of its peak, so a
            # halo or the noise around a small spot does not inflate its size
            floor = np.maximum(2 * noise, np.float32(0.1) * float(d_win.max()))
            own = (d_win > floor) & rel.valid[ya:yb, xa:xb]
            # and, on a flat-corrected image, joined to the peak: there what lies apart is
            # white noise, and one noise pixel above the floor at the window's edge weighs
            # (3 px)² in the second moment: it tripled a small bubble's size and diluted its
            # contrast below min_contrast. (Without a flat, the background's residue around a
            # blob is what that dilution keeps from passing as spots; it stays.)
            if joined:
                n_lab, lab = cv2.connectedComponents(own.view(np.uint8), connectivity=8)
                at = lab[y - ya, x - xa]
                if n_lab > 2 and at > 0:
                    own = lab == at
            win = np.where(own, d_win, 0)
            total = float(win.sum())
            if total <= 0:
                continue
            yy, xx = np.arange(ya, yb)[:, None], np.arange(xa, xb)  # broadcast over the window
            cy, cx = float((win * yy).sum() / total), float((win * xx).sum() / total)
            dx, dy = xx - cx, yy - cy
            vxx, vxy, vyy = (float((win * dx ** 2).sum()) / total * f * f, float((win * dx * dy).sum()) / total * f * f,
                             float((win * dy ** 2).sum()) / total * f * f)
            # eigenvalues of the 2×2 covariance in closed form
            half = float(np.hypot((vxx - vyy) / 2, vxy))
            ev = np.array([(vxx + vyy) / 2 - half, (vxx + vyy) / 2 + half])
            ev = np.maximum(ev - OPTICS_VAR_PX2 - f * f / 12.0, 0.0)
            if ev[1] > 4.0 and np.sqrt(ev[1] / max(ev[0], 0.25)) > params.max_elongation:
                continue  # a line: the scratch detector's
            # a spot can darken by at most 100 %, so its integrated departure bounds it below
            integrated = total * f * f
            diameter = float(max(4.0 * np.sqrt(max(ev.mean(), 0.0)), np.sqrt(4 * integrated / np.pi)))
            contrast = min(integrated / (np.pi * diameter ** 2 / 4), 1.0)
            if not params.min_diameter_px <= diameter <= max_diameter or contrast < params.min_contrast:
                continue
            fx, fy = rel.to_full(cx, cy)
            r = diameter / 2
            # a large blob answers at several scales and places (its rim at the small ones):
            # one whose centre falls within a stronger spot already measured is that spot
            if any((fx - sx) ** 2 + (fy - sy) ** 2 < max(r, sr) ** 2 for sx, sy, sr in centres):
                continue
            centres.append((fx, fy, r))
            bbox = [int(np.floor(fx - r)), int(np.floor(fy - r)), int(np.ceil(fx + r)) + 1, int(np.ceil(fy + r)) + 1]
            ring = np.stack([fx + r * np.cos(_RING), fy + r * np.sin(_RING)], 1).round().astype(int)
            zone = zone_of(ring) if zone_of is not None else "unknown"
            out.append(Spot(diameter_px=diameter, contrast=sign * contrast, zone=zone, bbox_px=bbox,
                            diameter_mm=diameter * pixel_size_mm if pixel_size_mm else None,
                            polarity=polarity, score=float(zpeak) / params.high_sigma))
    return out


#: a pixel's 8-neighbourhood, for the local-maximum test
_RING3 = np.ones((3, 3), np.uint8)

#: points on a spot's rim, for its zone: central if any part of it is central
_RING = np.linspace(0, 2 * np.pi, 12, endpoint=False)

#: spots at least this wide (full-resolution px) have rims a line filter answers to
RIM_DIAMETER_PX = 6.0


def spot_mask(spots: list[Spot], shape: tuple[int, int], scale: int, origin: tuple[int, int] = (0, 0),
              grow: float = 1.5) -> np.ndarray:
    """Working-grid mask of the wider found spots (discs ``grow``× their diameter), to keep
    their rims out of the scratch detector."""
    mask = np.zeros(shape, np.uint8)
    for sp in spots:
        if sp.diameter_px < RIM_DIAMETER_PX:
            continue
        cx = (sp.bbox_px[0] + sp.bbox_px[2]) / 2 / scale - origin[0]
        cy = (sp.bbox_px[1] + sp.bbox_px[3]) / 2 / scale - origin[1]
        cv2.circle(mask, (int(round(cx)), int(round(cy))), int(np.ceil(grow * sp.diameter_px / 2 / scale)) + 1, 1, -1)
    return mask.astype(bool)


def separate(rel: Relative, *, zone_of=None, pixel_size_mm=None, scratch_params=None, spot_params=None,
             marks: list | None = None):
    """Scratches and spots of one image, each object found by the detector it belongs to.

    The wider spots are found first and their rims kept from the line filter; then the
    scratches; then spots lying on a scratch, or on a watermark's rim (appended to
    ``marks``), are dropped as pieces of it.

    Returns
    -------
    scratches : list of Scratch
    spots : list of Spot
    """
    from goggleqc.inspect.scratches import MARK_CLAIM, ScratchParams, faint_and_short, find_scratches

    scratch_params = scratch_params or ScratchParams()
    spot_params = spot_params or SpotParams()
    first = find_spots(rel, zone_of=zone_of, pixel_size_mm=pixel_size_mm, params=spot_params)
    claimed = np.zeros(rel.rel.shape, np.uint16)
    n_marks = len(marks) if marks is not None else 0
    found = find_scratches(rel, zone_of=zone_of, pixel_size_mm=pixel_size_mm, params=scratch_params,
                           exclude=spot_mask(first, rel.rel.shape, rel.scale, rel.origin), claimed=claimed,
                           marks=marks)
    # a "line" on the defocused target lying within a spot found first (grown by half) is that
    # spot read by the line filter (a spot narrower than RIM_DIAMETER_PX is not kept from it):
    # the spot is judged on its own below, its edge against the target's blur, not dropped
    # under the mark. A 0.2 mm dig of 57 % in a phone photograph, found as a spot of 0.47 mm
    # and 15 %, went as dust on the target with the 1.9 mm "line" round it.
    freed: set[int] = set()
    if marks is not None:
        left = []
        for m in marks[n_marks:]:
            hosts = [sp for sp in first if m.kind == "target" and _inside(m.bbox_px, _grown(sp.bbox_px, 0.5))]
            freed.update(id(sp) for sp in hosts)
            if not hosts:
                left.append(m)
        marks[n_marks:] = left
    # a "scratch" that fits inside a spot (grown by half) is that spot's rim or the spot itself;
    # a faint one just around a far darker spot is its halo
    scratches = [sc for sc in found if not any(_inside(sc.bbox_px, _grown(sp.bbox_px, 0.5)) or _halo(sc, sp, rel.scale)
                                               for sp in first)]
    # a closed ring (a bubble's dark rim) is a spot: its line runs about π times its width,
    # or, a bubble a few working px across, curls up in a small box; a closed one of a drop's
    # size and fainter than a spot is the rim of a dried drop that no one circle fits (two
    # drops that dried overlapping), a watermark (a curl, open and under 2 mm, is not: a
    # blurred bubble's box reached 1.6 mm)
    rings = [sc for sc in scratches if _is_ring(sc)]
    curls = [sc for sc in scratches if sc not in rings and _is_curl(sc, rel.scale, pixel_size_mm)]
    scratches = [sc for sc in scratches if sc not in rings and sc not in curls]
    # what is left short and faint without a flat is the background's residue (a curled one
    # was a bubble's rim, taken above); it has hidden its side lobes, and a blob on it is
    # still a piece of it
    residue = [sc for sc in scratches if faint_and_short(sc, rel, pixel_size_mm, scratch_params)]
    scratches = [sc for sc in scratches if sc not in residue]
    drops = [sc for sc in rings if _drop_rim(sc, pixel_size_mm, scratch_params, spot_params, rel.scale)]
    first = first + [_ring_spot(sc, pixel_size_mm, rel.scale) for sc in rings + curls if sc not in drops]
    if marks is not None:
        marks.extend(_drop_mark(sc, pixel_size_mm, rel.scale) for sc in drops)
    kept = {i + 1 for i, sc in enumerate(found) if sc in scratches or sc in drops or sc in residue} | {MARK_CLAIM}
    f = rel.scale
    h, w = claimed.shape
    ox, oy = rel.origin

    def claim(sp) -> int:
        # what claimed the spot's centre: a kept line's index + 1, a mark, or 0
        return int(claimed[min(h - 1, max(0, int((sp.bbox_px[1] + sp.bbox_px[3]) / 2 / f) - oy)),
                           min(w - 1, max(0, int((sp.bbox_px[0] + sp.bbox_px[2]) / 2 / f) - ox))])

    spots = [sp for sp in first if (c := claim(sp)) not in kept or (c == MARK_CLAIM and id(sp) in freed)]
    if rel.target_blur_px > 0:
        # a blob is measured within a window of 3 σ of its best scale: one wider than that
        # window (dust on a strongly defocused target in a large photograph) reads as the
        # window's size, so the window's size is all that can be asked of it
        window_px = 2 * _window_radius(max(spot_params.scales)) * rel.scale
        wide = min(spot_params.target_diameter_ratio * rel.target_blur_px, TARGET_WINDOW_FILL * window_px)
        blurred = [sp for sp in spots if sp.diameter_px >= wide
                   and abs(sp.contrast) < spot_params.target_max_contrast
                   and edge_sigma(rel, sp) >= spot_params.target_edge_ratio * rel.target_blur_px]
        if marks is not None:
            marks.extend(Mark(kind="target", diameter_px=sp.diameter_px, contrast=sp.contrast, zone=sp.zone,
                              bbox_px=sp.bbox_px, diameter_mm=sp.diameter_mm, arc_deg=0.0) for sp in blurred)
        spots = [sp for sp in spots if sp not in blurred]
    return scratches, spots


def edge_sigma(rel, spot) -> float:
    """Gaussian σ (full-resolution px) of a blob's edge, from its mean radial profile.

    The departure is read on rings round the blob's centre (working grid, bilinear) and
    averaged over angle; the profile's height over its steepest fall, ÷ √(2π), is the σ of an
    edge blurred by a Gaussian (as :func:`goggleqc.inspect.lattice.edge_blur` reads the
    pattern's). A spot on the lens has the optics' sharp edge; dust on a defocused target is
    as blurred as the target's own edges. 0 when the profile cannot be read.
    """
    f = rel.scale
    ox, oy = rel.origin
    cx = (spot.bbox_px[0] + spot.bbox_px[2]) / 2 / f - ox - 0.5
    cy = (spot.bbox_px[1] + spot.bbox_px[3]) / 2 / f - oy - 0.5
    reach = spot.diameter_px / 2 / f * 1.5 + 3.0
    radii = np.arange(0.0, reach + 0.25, 0.5)
    ang = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    px = (cx + radii[:, None] * np.cos(ang)[None, :]).astype(np.float32)
    py = (cy + radii[:, None] * np.sin(ang)[None, :]).astype(np.float32)
    vals, seen = departure_at(rel, px, py, "dark" if spot.contrast >= 0 else "bright")
    count = seen.sum(axis=1)
    if (count == 0).any():
        return 0.0
    prof = (vals * seen).sum(axis=1) / count
    height = float(prof[:2].max() - prof[-2:].mean())
    slope = float(np.max(-np.diff(prof))) / 0.5
    if not (height > 0 and slope > 0):
        return 0.0
    return height / (np.sqrt(2 * np.pi) * slope) * f


def _grown(bbox, frac: float) -> list[float]:
    x0, y0, x1, y1 = bbox
    dx, dy = (x1 - x0) * frac / 2, (y1 - y0) * frac / 2
    return [x0 - dx, y0 - dy, x1 + dx, y1 + dy]


#: a line at most 1/HALO_RATIO as dark as a spot, lying within HALO_REACH_PX of its disc, is
#: the spot's halo: a 0.22 mm inclusion of 78 % (calibrated, pattern) came with a 3 % "line"
#: 6 px wide and 1 mm long round it, which failed the lens as a scratch and hid the spot
HALO_RATIO = 5.0
HALO_REACH_PX = 6.0


def _halo(sc, sp, scale: int = 1) -> bool:
    """True when line ``sc`` is the faint surround of the far darker spot ``sp``: of its
    polarity within :data:`HALO_REACH_PX` of it, or of the other polarity closed round it
    within that and a working pixel (``scale`` full-resolution px) more.

    The other polarity is an overshoot: a JPEG's ringing or a camera's sharpening draws a
    bright ring round a sharp dark spot (the second renderer's photograph, a 0.27 mm dig of
    51 % in a ring of 2 % brighter, 0.96 mm across, failed a good lens as a spot)."""
    if abs(sp.contrast) < HALO_RATIO * abs(sc.contrast):
        return False
    if np.sign(sp.contrast) == np.sign(sc.contrast):
        return _inside(sc.bbox_px, sp.bbox_px, pad=HALO_REACH_PX)
    return _inside(sc.bbox_px, sp.bbox_px, pad=HALO_REACH_PX + scale) and _inside(sp.bbox_px, sc.bbox_px, pad=0)


def _inside(a, b, pad: float = 2.0) -> bool:
    """True when box ``a`` lies within box ``b`` grown by ``pad`` px."""
    return a[0] >= b[0] - pad and a[1] >= b[1] - pad and a[2] <= b[2] + pad and a[3] <= b[3] + pad


def _is_ring(sc) -> bool:
    """True for a line that closes on itself: about as wide as tall, and running ≥ 2.6× that."""
    w, h = sc.bbox_px[2] - sc.bbox_px[0], sc.bbox_px[3] - sc.bbox_px[1]
    return min(w, h) >= 0.6 * max(w, h) and sc.judged_px >= 2.6 * max(w, h)


#: a line curled up within a box at most this big (mm; without a pixel size, CURL_MAX_PX
#: working px) ...
CURL_MAX_MM = 2.0
CURL_MAX_PX = 10
#: ... running at least this many times the box's longer side (a straight line runs at most
#: √2 times it, along the diagonal of a square box) is a small bubble's rim
CURL_MIN_RATIO = 1.5


def _is_curl(sc, scale: int, pixel_size_mm) -> bool:
    """True for a short line that curls round within a small compact box: the rim of a bubble
    under a millimetre or so, seen on the working grid as an open ring of a few pixels.

    Such a rim runs about π times its diameter but its box is a working pixel or two wider
    than the ring, so it runs only 1.5–2.2 times the box (:func:`_is_ring` asks 2.6): on
    photographs through a lens most of the bubbles missed as spots were reported as
    "scratches" 1.6–1.8 mm long. Arced scratches of both simulators bend through 115° at most;
    a line as long as this in a box this compact has turned through more than 180°."""
    w, h = sc.bbox_px[2] - sc.bbox_px[0], sc.bbox_px[3] - sc.bbox_px[1]
    side = max(w, h)
    small = side * pixel_size_mm <= CURL_MAX_MM if pixel_size_mm else side <= CURL_MAX_PX * scale
    return bool(small and min(w, h) >= 0.6 * side and sc.judged_px >= CURL_MIN_RATIO * side)


def _ring_diameter(sc, scale: int) -> float:
    """A ring's diameter (full-resolution px): the mean side of its box, less the two working
    pixels (``scale`` full-resolution px each) by which a line's box exceeds its centre line
    (on the close-ups' bubbles of 0.4–1.5 mm the mean side read 0.3–0.5 mm large)."""
    side = (sc.bbox_px[2] - sc.bbox_px[0] + sc.bbox_px[3] - sc.bbox_px[1]) / 2
    return float(max(side - 2 * scale, scale))


def _drop_rim(sc, pixel_size_mm, scratch_params, spot_params, scale: int) -> bool:
    """True for a closed ring at least a small drop across (``mark_diameter_mm``, or
    ``mark_min_diameter_px`` without a pixel size) and fainter than a spot
    (``SpotParams.min_contrast``): a bubble's rim takes 15–90 % of the light over a
    millimetre or less, a dried drop's 2–15 % over 1–10 mm."""
    d = _ring_diameter(sc, scale)
    big = (d * pixel_size_mm >= scratch_params.mark_diameter_mm[0] if pixel_size_mm
           else d >= scratch_params.mark_min_diameter_px)
    return bool(big and abs(sc.contrast) < spot_params.min_contrast)


def _drop_mark(sc, pixel_size_mm, scale: int) -> Mark:
    d = _ring_diameter(sc, scale)
    return Mark(kind="watermark", diameter_px=d, contrast=sc.contrast, zone=sc.zone, bbox_px=list(sc.bbox_px),
                diameter_mm=d * pixel_size_mm if pixel_size_mm else None)


def _ring_spot(sc, pixel_size_mm, scale: int) -> Spot:
    d = _ring_diameter(sc, scale)
    return Spot(diameter_px=d, contrast=sc.contrast, zone=sc.zone, bbox_px=list(sc.bbox_px),
                diameter_mm=d * pixel_size_mm if pixel_size_mm else None, kind="ring",
                polarity=sc.polarity, score=sc.score)
