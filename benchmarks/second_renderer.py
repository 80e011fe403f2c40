"""A second, independent renderer of station-model.md, and a report of goggleqc on its lenses.

goggleqc is judged on lenses from a renderer it never sees. Its own simulator
(``goggleqc/synth``) and its detectors grew up together, so a quirk of one can hide in the
other. This renderer is written from station-model.md alone and imports nothing from
``goggleqc.synth``; where the model leaves a choice open it deliberately chooses otherwise:

- optics ``p``: a defocus disc convolved with a small Gaussian (not a Gaussian alone);
- wide scatter ``K``: a mixture of Gaussians of 6 and 20 mm;
- lens: one visor (a superellipse) or two eye lenses in one frame;
- scratches: polylines and arcs with a flat-bottomed cross-section, drawn at 3× supersampling,
  which take light out of the direct beam and scatter half of it locally (so they brighten
  where the backlight is dark, as §3 says);
- spots: dark discs (inclusions, digs, dust) and bubbles (a dark rim round a bright core);
- coating: runs (vertical streaks), voids (uncoated patches, either sign) and mottle
  (band-limited texture), 1.5–5 % in τ;
- calibration: a pixel size given (no chessboard) and haze plates rendered with the same ``K``.

The truth is written in goggleqc's result schema so ``goggleqc.synth.scoring`` scores it.
``contrast`` of a scratch or spot is its peak change of τ; ``image_contrast`` is what the
camera shows (the drop of the noise-free image at the defect, after the optics, against the
local mean light over half a pattern period), which the scorer's visibility floors use:
station-model §3 defines a scratch by how much it darkens *the image*.

Run it (renders, calibrates and inspects through the CLI, then scores):

    python benchmarks/second_renderer.py --out /tmp/r2 --count 120 --size 640x512 \
        --pixel-size 0.08 --seed 1
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SUPER = 3  # supersampling of the transmittance map


@dataclass
class Station2:
    """One station of the second renderer: its camera, optics and backlight."""

    width: int
    height: int
    ps: float  # mm per px
    backlight: str  # uniform | checker | grid | stripes
    bits: int
    level: float  # flat level, fraction of full scale
    offset: float  # dark offset, fraction of full scale
    full_well: float
    read_e: float
    psf_disc_px: float
    psf_sigma_px: float
    vignette: float
    traps: list  # (x_mm, y_mm, d_mm)
    period_mm: float
    pattern_blur: float  # Gaussian σ of the target's defocus, fraction of the period
    dark_cell: float  # dark cell level, fraction of bright
    seed: int
    product: str = "visor"  # the goggle this station is built for: visor | two_eye

    @property
    def full(self) -> float:
        return 255.0 if self.bits == 8 else float(2 ** self.bits - 1)


def make_station(width: int, height: int, ps: float, backlight: str, rng: np.random.Generator) -> Station2:
    fw, fh = width * ps, height * ps
    product = "visor" if rng.random() < 0.5 else "two_eye"
    traps = []
    if backlight == "uniform":
        # the traps are seen through the central zone (station-model §1): across a visor, or
        # one behind each eye of a two-eye goggle
        n = int(rng.integers(1, 4)) if product == "visor" else 2
        xs = (np.linspace(-0.18, 0.18, n) * fw if n > 1 else [0.0]) if product == "visor" else [-0.19 * fw, 0.19 * fw]
        for x in xs:
            traps.append((float(x + rng.uniform(-1, 1)), float(rng.uniform(-0.05, 0.05) * fh), float(rng.uniform(4, 7))))
    bits = int(rng.choice([8, 8, 12]))
    return Station2(width=width, height=height, ps=ps, backlight=backlight, bits=bits,
                    level=float(rng.uniform(0.6, 0.85)), offset=float(rng.uniform(0.01, 0.05)),
                    full_well=float(rng.uniform(8000, 25000)), read_e=float(rng.uniform(3, 10)),
                    psf_disc_px=float(rng.uniform(0.5, 1.5)), psf_sigma_px=float(rng.uniform(0.3, 0.8)),
                    vignette=float(rng.uniform(0.1, 0.3)), traps=traps,
                    period_mm=float(rng.uniform(1.5, 4.0)), pattern_blur=float(rng.uniform(0.1, 0.3)),
                    dark_cell=float(rng.uniform(0.05, 0.3)), seed=int(rng.integers(1 << 30)), product=product)


def _mm_grid(st: Station2, sup: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in mm (origin at the frame centre), ``sup`` samples per px."""
    x = (np.arange(st.width * sup) + 0.5) / sup * st.ps - st.width * st.ps / 2
    y = (np.arange(st.height * sup) + 0.5) / sup * st.ps - st.height * st.ps / 2
    return np.meshgrid(x.astype(np.float32), y.astype(np.float32))


def _psf(img: np.ndarray, st: Station2) -> np.ndarray:
    r = st.psf_disc_px
    k = int(math.ceil(r)) * 2 + 1
    yy, xx = np.mgrid[:k, :k] - k // 2
    # a pillbox with anti-aliased rim
    disc = np.clip(r + 0.5 - np.hypot(xx, yy), 0, 1).astype(np.float32)
    disc /= disc.sum()
    out = cv2.filter2D(img, -1, disc, borderType=cv2.BORDER_REFLECT)
    return cv2.GaussianBlur(out, (0, 0), st.psf_sigma_px, borderType=cv2.BORDER_REFLECT)


def _scatter(img: np.ndarray, st: Station2) -> np.ndarray:
    """``img ⊛ K``: K is 0.6·G(6 mm) + 0.4·G(20 mm), computed on a reduced grid."""
    f = 4
    small = cv2.resize(img, (img.shape[1] // f, img.shape[0] // f), interpolation=cv2.INTER_AREA)
    a = cv2.GaussianBlur(small, (0, 0), 6 / (st.ps * f), borderType=cv2.BORDER_REFLECT)
    b = cv2.GaussianBlur(small, (0, 0), 20 / (st.ps * f), borderType=cv2.BORDER_REFLECT)
    return cv2.resize(0.6 * a + 0.4 * b, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)


def backlight_radiance(st: Station2) -> np.ndarray:
    """The backlight's radiance ``B`` before the optics (fraction of full scale)."""
    x, y = _mm_grid(st)
    rng = np.random.default_rng(st.seed)
    fw, fh = st.width * st.ps, st.height * st.ps
    r2 = (x / (fw / 2)) ** 2 + (y / (fh / 2)) ** 2
    b = st.level * (1 - st.vignette * r2 / 2)
    # panel non-uniformity: smooth noise of 1–2 %
    low = rng.normal(size=(8, 10)).astype(np.float32)
    low = cv2.resize(low, (st.width, st.height), interpolation=cv2.INTER_CUBIC)
    b = b * (1 + 0.015 * low / max(low.std(), 1e-6))
    if st.backlight == "uniform":
        for tx, ty, d in st.traps:
            b = b * np.clip((np.hypot(x - tx, y - ty) - d / 2) / st.ps + 0.5, 0, 1)
    else:
        p = st.period_mm
        u, v = (x / p) % 1.0, (y / p) % 1.0
        if st.backlight == "checker":
            bright = ((u < 0.5) ^ (v < 0.5)).astype(np.float32)
        elif st.backlight == "grid":
            bright = ((u > 0.15) & (v > 0.15)).astype(np.float32)
        else:  # stripes
            bright = (u < 0.5).astype(np.float32)
        sig = st.pattern_blur * p / st.ps
        bright = cv2.GaussianBlur(bright, (0, 0), sig, borderType=cv2.BORDER_REFLECT)
        b = b * (st.dark_cell + (1 - st.dark_cell) * bright)
    # dust on the diffuser: a few small soft dark specks (in the flat as in every frame)
    for _ in range(int(rng.integers(3, 9))):
        cx, cy = rng.uniform(0, st.width), rng.uniform(0, st.height)
        rad = rng.uniform(1.0, 3.0)
        yy, xx = np.ogrid[:st.height, :st.width]
        b = b * (1 - rng.uniform(0.05, 0.2) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * rad * rad)))
    return b.astype(np.float32)


def expose(st: Station2, signal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Signal (fraction of full scale, after the dark offset) → a raw frame with noise."""
    e = np.clip(signal, 0, None) * st.full_well
    e = e + rng.normal(size=e.shape).astype(np.float32) * np.sqrt(e + st.read_e ** 2)
    raw = (st.offset + e / st.full_well) * st.full
    raw = np.clip(np.round(raw), 0, st.full)
    return raw.astype(np.uint8 if st.bits == 8 else np.uint16)


# -- lenses ----------------------------------------------------------------------------------


def _superellipse(x, y, cx, cy, a, b, n, angle):
    """Inside the superellipse |u|^n + |v|^n < 1. The powers are taken only near its edge:
    outside the box max(|u|, |v|) < 1 a point is out, inside the square of half-side
    2^(-1/n) it is in (a margin of 1 % keeps rounding out of it)."""
    c, s = math.cos(angle), math.sin(angle)
    u = np.abs(((x - cx) * c + (y - cy) * s) / a)
    v = np.abs((-(x - cx) * s + (y - cy) * c) / b)
    inside = np.maximum(u, v) < 1
    sure = 0.99 * 2 ** (-1 / n)
    edge = inside & ((u > sure) | (v > sure))
    inside[edge] = u[edge] ** n + v[edge] ** n < 1
    return inside


def lens_geometry(st: Station2, rng: np.random.Generator, sup: int = 1):
    """(lens mask, goggle mask) at ``sup``× resolution: the clear lens and lens+frame."""
    x, y = _mm_grid(st, sup)
    fw, fh = st.width * st.ps, st.height * st.ps
    dx, dy = rng.uniform(-2, 2, 2)
    ang = math.radians(rng.uniform(-2, 2))
    frame_mm = rng.uniform(4, 7)
    if st.product == "visor":  # one visor
        a, b, n = 0.36 * fw, 0.31 * fh, rng.uniform(2.5, 4)
        lens = _superellipse(x, y, dx, dy, a, b, n, ang)
        goggle = _superellipse(x, y, dx, dy, a + frame_mm, b + frame_mm, n, ang)
    else:  # two eye lenses in one frame, a bridge between
        a, b, n = 0.17 * fw, 0.27 * fh, rng.uniform(2.2, 3)
        gap = rng.uniform(0.02, 0.05) * fw
        lens = np.zeros(x.shape, bool)
        for side in (-1, 1):
            cx = dx + side * (a + gap / 2) * math.cos(ang)
            cy = dy + side * (a + gap / 2) * math.sin(ang)
            lens |= _superellipse(x, y, cx, cy, a, b, n, ang)
        goggle = _superellipse(x, y, dx, dy, 2 * a + gap / 2 + frame_mm, b + frame_mm, 3.0, ang)
    return lens, goggle


def _dist_mm(lens: np.ndarray, ps_sub: float) -> np.ndarray:
    return cv2.distanceTransform(lens.astype(np.uint8), cv2.DIST_L2, 5) * ps_sub


def _polyline(rng, start, length, kind):
    ang = rng.uniform(0, math.pi)
    if kind == "straight":
        pts = [start, start + length * np.array([math.cos(ang), math.sin(ang)])]
    elif kind == "kinked":
        k = rng.uniform(0.3, 0.7)
        turn = rng.uniform(0.3, 0.9) * rng.choice([-1, 1])
        p1 = start + k * length * np.array([math.cos(ang), math.sin(ang)])
        p2 = p1 + (1 - k) * length * np.array([math.cos(ang + turn), math.sin(ang + turn)])
        pts = [start, p1, p2]
    else:  # arc
        radius = length / rng.uniform(0.4, 1.5)
        sweep = length / radius
        t = np.linspace(0, sweep, 24)
        centre = start - radius * np.array([math.cos(ang), math.sin(ang)])
        pts = [centre + radius * np.array([math.cos(ang + a), math.sin(ang + a)]) for a in t]
    return np.array(pts, np.float64)


def _length_inside(pts: np.ndarray, lens_s: np.ndarray, st: Station2, sup: int) -> float:
    """Length (mm) of a polyline's part that lies on the clear lens (a scratch may run on under
    the goggle's frame, where nobody sees it)."""
    total, inside = 0.0, 0.0
    for p0, p1 in zip(pts[:-1], pts[1:]):
        ln = float(np.hypot(*(p1 - p0)))
        n = max(2, int(ln / 0.02))
        t = (np.arange(n) + 0.5) / n
        xs = p0[0] + t * (p1[0] - p0[0])
        ys = p0[1] + t * (p1[1] - p0[1])
        j = ((xs + st.width * st.ps / 2) / st.ps * sup).astype(int)
        i = ((ys + st.height * st.ps / 2) / st.ps * sup).astype(int)
        ok = (i >= 0) & (j >= 0) & (i < lens_s.shape[0]) & (j < lens_s.shape[1])
        on = np.zeros(n, bool)
        on[ok] = lens_s[i[ok], j[ok]]
        total += ln
        inside += ln * float(on.mean())
    return inside


def _seg_dist(x, y, pts):
    d = np.full(x.shape, np.inf, np.float32)
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        vx, vy = x1 - x0, y1 - y0
        t = np.clip(((x - x0) * vx + (y - y0) * vy) / max(vx * vx + vy * vy, 1e-12), 0, 1)
        d = np.minimum(d, np.hypot(x - x0 - t * vx, y - y0 - t * vy))
    return d


def _window(st: Station2, sup: int, x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice]:
    """The supersampled pixels within an mm box: each defect is drawn in its own window."""
    ps_s, fw, fh = st.ps / sup, st.width * st.ps / 2, st.height * st.ps / 2
    j0, j1 = int((x0 + fw) / ps_s) - 2, int((x1 + fw) / ps_s) + 3
    i0, i1 = int((y0 + fh) / ps_s) - 2, int((y1 + fh) / ps_s) + 3
    h, w = st.height * sup, st.width * sup
    return (slice(max(i0, 0), max(min(i1, h), 0)), slice(max(j0, 0), max(min(j1, w), 0)))


def _footprint(win: tuple[slice, slice], foot: np.ndarray, sup: int):
    """A defect's supersampled pixels ``(ys, xs)`` on the whole grid and its camera-pixel bbox,
    or None when ``foot`` (over ``win``) is empty."""
    ys, xs = np.nonzero(foot)
    if not len(xs):
        return None
    ys, xs = ys + win[0].start, xs + win[1].start
    return ys, xs, [int(xs.min() // sup), int(ys.min() // sup), int(xs.max() // sup) + 1, int(ys.max() // sup) + 1]


def _draw_scratch(t_map, scatter_s, lens_s, x, y, pts, w, c, tau, st: Station2, sup: int):
    """Draw a flat-bottomed scratch of width ``w`` (mm) and τ loss ``c`` along ``pts`` on the
    lens; half the light it takes is scattered locally. Returns its window and coverage, or
    None when none of it lies on the lens."""
    win = _window(st, sup, *(pts.min(0) - w), *(pts.max(0) + w))
    cover = np.clip((w / 2 - _seg_dist(x[win], y[win], pts)) / (st.ps / sup) + 0.5, 0, 1) * lens_s[win]
    if not cover.size or cover.max() <= 0:
        return None
    t_map[win] *= 1 - c * cover
    scatter_s[win] += 0.5 * c * cover * tau
    return win, cover


def _visible_drop(image: np.ndarray, ref: np.ndarray, period_mm: float, ps: float) -> np.ndarray:
    """What the camera shows of a defect: the relative drop of the noise-free image against
    the same image without it, on pixels at least half as bright as the brightest within a
    pattern period (in a dark cell a tiny light makes any change look large); 0 elsewhere."""
    k = max(3, int(round(period_mm / ps)) | 1)
    bright = ref >= 0.5 * cv2.dilate(ref, np.ones((k, k), np.uint8))
    return np.where(bright, 1 - image / np.maximum(ref, 1e-6), 0).astype(np.float32)


def render_lens(st: Station2, b_radiance: np.ndarray, rng: np.random.Generator, *, n_defects: int,
                haze: float | None = None, tau: float | None = None, clean_only: bool = False):
    """One lens: (raw frame, truth record in goggleqc's result schema)."""
    sup = SUPER
    ps_s = st.ps / sup
    lens_s, goggle_s = lens_geometry(st, rng, sup)
    tau_clear = float(rng.uniform(0.85, 0.93)) if tau is None else tau
    if haze is None:  # most lenses clear, some hazy past the usual 3 % limit
        haze = float(rng.uniform(0.0, 0.025) if rng.random() < 0.7 else rng.uniform(0.0, 0.08))
    h = haze
    g = float(rng.uniform(0.96, 1.04))
    x, y = _mm_grid(st, sup)
    t_map = np.where(goggle_s, 0.015, 1.0).astype(np.float32)
    t_map[lens_s] = tau_clear
    t_clean = cv2.resize(t_map, (st.width, st.height), interpolation=cv2.INTER_AREA)  # before the defects
    scatter_s = np.zeros_like(t_map)  # local scatter of scratches: fraction of local light
    depth = _dist_mm(lens_s, ps_s)  # mm inside the lens edge
    marginal = 5.0
    truth = {"scratches": [], "spots": [], "coating": []}
    feet = []  # (truth object, its camera pixels as flat indices)

    def place(margin_mm):
        ys, xs = np.nonzero(depth[::sup, ::sup] > margin_mm)
        i = rng.integers(len(xs))
        return np.array([x[ys[i] * sup, xs[i] * sup], y[ys[i] * sup, xs[i] * sup]], np.float64)

    def record(key, win, foot, extra):
        found = _footprint(win, foot, sup)
        if found is None:
            return None
        ys, xs, bbox = found
        cdepth = float(depth[ys, xs].max()) - marginal
        obj = {"zone": "central" if cdepth > 0 else "marginal", "central_depth_mm": cdepth, "bbox_px": bbox, **extra}
        truth[key].append(obj)
        feet.append((obj, np.unique(ys // sup * st.width + xs // sup)))
        return obj

    kinds = ["scratch", "scratch", "spot", "coating"]
    for _ in range(0 if clean_only else n_defects):
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind == "scratch":
            length = float(np.exp(rng.uniform(math.log(0.6), math.log(15))))
            w = float(np.exp(rng.uniform(math.log(0.05), math.log(0.3))))
            c = float(rng.uniform(0.08, 0.4))
            shape = str(rng.choice(["straight", "kinked", "arc"]))
            pts = _polyline(rng, place(1.5), length, shape)
            drawn = _draw_scratch(t_map, scatter_s, lens_s, x, y, pts, w, c, tau_clear, st, sup)
            if drawn is None:
                continue
            win, cover = drawn
            true_len = _length_inside(pts, lens_s, st, sup)
            record("scratches", win, cover > 0.2, {"length_mm": true_len, "length_px": true_len / st.ps,
                                                    "width_mm": w, "contrast": c, "shape": shape})
        elif kind == "spot":
            dia = float(np.exp(rng.uniform(math.log(0.2), math.log(1.5))))
            c = float(rng.uniform(0.35, 0.9))
            centre = place(1.0)
            win = _window(st, sup, *(centre - dia), *(centre + dia))
            r = np.hypot(x[win] - centre[0], y[win] - centre[1])
            cover = np.clip((dia / 2 - r) / ps_s + 0.5, 0, 1)
            if rng.random() < 0.25:  # bubble: a dark rim round a bright core
                rim = np.clip(1 - np.abs(r - 0.4 * dia) / (0.12 * dia), 0, 1)
                t_map[win] *= 1 - c * np.maximum(rim, 0.3 * cover) + 0.1 * c * (r < 0.25 * dia)
                sub = "bubble"
            else:
                t_map[win] *= 1 - c * cover
                sub = str(rng.choice(["inclusion", "dig", "dust"]))
            record("spots", win, cover > 0.2, {"diameter_mm": dia, "contrast": c, "kind": sub})
        else:
            c = float(rng.uniform(0.015, 0.05)) * rng.choice([-1, 1])
            sub = str(rng.choice(["run", "void", "mottle"]))
            centre = place(3.0)
            win = _window(st, sup, *(centre - 10), *(centre + 10))
            dx, dy = x[win] - centre[0], y[win] - centre[1]
            if sub == "run":
                wid, ln = rng.uniform(1.0, 3.0), rng.uniform(6, 18)
                prof = np.exp(-0.5 * (dx / (wid / 2.355)) ** 2) * np.clip(1 - np.abs(dy) / (ln / 2), 0, 1) ** 0.3
                area = wid * ln
                c = -abs(c)
            elif sub == "void":
                ax, ay = rng.uniform(1.5, 4.5, 2)
                rr = np.sqrt((dx / ax) ** 2 + (dy / ay) ** 2)
                prof = np.clip((1 - rr) / 0.2 + 0.5, 0, 1)
                area = math.pi * ax * ay
            else:
                ax, ay = rng.uniform(2.5, 5, 2)
                rr = np.sqrt((dx / ax) ** 2 + (dy / ay) ** 2)
                env = np.clip((1 - rr) / 0.2 + 0.5, 0, 1)
                # band-limited texture: noise of ~0.8 mm cells, smoothly enlarged
                tex = rng.normal(size=(max(4, int(2 * ay / 0.8)), max(4, int(2 * ax / 0.8)))).astype(np.float32)
                ys, xs = np.nonzero(env > 0)
                if not len(xs):
                    continue
                y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
                full_tex = np.zeros_like(dx)
                full_tex[y0:y1, x0:x1] = cv2.resize(tex, (int(x1 - x0), int(y1 - y0)), interpolation=cv2.INTER_CUBIC)
                prof = env * np.clip(full_tex, -2, 2) / 1.5
                area = math.pi * ax * ay
            prof = np.where(lens_s[win], prof, 0)
            t_map[win] *= 1 + c * prof
            record("coating", win, np.abs(prof) > 0.3, {"kind": sub, "area_mm2": float(area), "contrast": float(c)})

    # to the camera grid: transmittance and the scratches' scattered fraction
    t = cv2.resize(t_map, (st.width, st.height), interpolation=cv2.INTER_AREA)
    sc = cv2.resize(scatter_s, (st.width, st.height), interpolation=cv2.INTER_AREA)
    lens = cv2.resize(lens_s.astype(np.float32), (st.width, st.height), interpolation=cv2.INTER_AREA) > 0.5
    h_map = np.where(lens, h, 0).astype(np.float32)
    b_p = b_radiance  # radiance; the optics act on the image
    b_k = _scatter(b_radiance, st)
    b_local = cv2.GaussianBlur(b_radiance, (0, 0), 0.5 / st.ps)
    clean_light = t * ((1 - h_map) * b_p + h_map * b_k)
    light = clean_light + sc * b_local
    image = _psf(g * light, st)
    # what the camera shows of each scratch and spot: the drop of the noise-free image
    ref = _psf(g * t_clean * ((1 - h_map) * b_p + h_map * b_k), st)
    drop = _visible_drop(image, ref, st.period_mm if st.backlight != "uniform" else 1.0, st.ps).ravel()
    for obj, idx in feet:
        if "diameter_mm" in obj or "length_mm" in obj:  # a coating flaw is scored on its τ change
            obj["image_contrast"] = float(drop[idx].max()) if len(idx) else 0.0
        # over a light trap there is nothing to see a defect against: the fraction of it backlit
        lit = b_radiance.ravel()[idx] > 0.3 * st.level
        obj["backlit"] = float(lit.mean()) if st.backlight == "uniform" else 1.0
    raw = expose(st, image, rng)
    central = lens & (cv2.resize(depth, (st.width, st.height), interpolation=cv2.INTER_AREA) > marginal)
    rec = {"haze_pct": 100 * h, "transmittance_pct": 100 * tau_clear, **truth,
           "truth": {"gain": g, "central_px": int(central.sum())}}
    return raw, rec


# -- photographs (uncalibrated) -------------------------------------------------------------


def _srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, 1)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def render_photo(width: int, height: int, ps: float, rng: np.random.Generator, *, n_defects: int):
    """A photograph through a lens against a defocused backlit grid, as a quality engineer
    takes one with an ordinary camera (issue 4's uncalibrated mode): no dark, no flat, no
    station. The target is a grid or checker seen slightly in perspective and bent by the
    lens' curvature, out of focus (the camera focuses on the lens); the light falls off to
    the corners; dust on the target is blurred with it; on the lens are scratches, spots,
    and nuisances a wipe removes (stains, watermarks). sRGB colour JPEG, 8-bit.

    Returns (BGR uint8 JPEG bytes decoded, truth record)."""
    sup = 2
    st = Station2(width=width, height=height, ps=ps, backlight="photo", bits=8, level=0.8, offset=0.0,
                  full_well=float(rng.uniform(3000, 15000)), read_e=float(rng.uniform(2, 8)),
                  psf_disc_px=float(rng.uniform(0.3, 1.0)), psf_sigma_px=float(rng.uniform(0.4, 0.8)),
                  vignette=float(rng.uniform(0.2, 0.5)), traps=[], period_mm=float(rng.uniform(2.0, 6.0)),
                  pattern_blur=float(rng.uniform(0.12, 0.35)), dark_cell=float(rng.uniform(0.05, 0.4)),
                  seed=int(rng.integers(1 << 30)))
    fw, fh = width * ps, height * ps
    # the target continues past the frame: drawn with a margin the defocus blur needs
    pad = int(math.ceil(4 * st.pattern_blur * st.period_mm / ps)) + 2

    def mm_axis(n: int, size_mm: float, offset: float) -> np.ndarray:
        return ((np.arange(-pad, n + pad) + offset) * ps - size_mm / 2).astype(np.float32)

    x, y = np.meshgrid(mm_axis(width, fw, 0.5), mm_axis(height, fh, 0.5))
    # the target, seen through a curved lens (barrel) and slightly in perspective
    # barrel or pincushion up to 8 % at the corners (the camera's lens and the visor's bend);
    # the target up to about 8° off square at 100 mm
    k = rng.uniform(-0.04, 0.04)
    tilt = rng.uniform(-0.0015, 0.0015, 2)
    rho2 = (x / (fw / 2)) ** 2 + (y / (fh / 2)) ** 2
    ang = rng.uniform(-0.2, 0.2)
    p = st.period_mm
    ph = rng.uniform(0, 1, 2)
    checker = rng.random() < 0.5
    line = 0.0 if checker else rng.uniform(0.1, 0.25)
    kind = "checker" if checker else "grid"

    def target(xs, ys):
        r2 = (xs / (fw / 2)) ** 2 + (ys / (fh / 2)) ** 2
        den = 1 + tilt[0] * xs + tilt[1] * ys
        u, v = xs * (1 + k * r2) / den, ys * (1 + k * r2) / den
        u, v = u * math.cos(ang) + v * math.sin(ang), -u * math.sin(ang) + v * math.cos(ang)
        fu, fv = (u / p + ph[0]) % 1.0, (v / p + ph[1]) % 1.0
        if checker:
            return ((fu < 0.5) ^ (fv < 0.5)).astype(np.float32)
        return ((fu > line) & (fv > line)).astype(np.float32)

    # the target is continuous: each pixel averages it over 4×4 points (sampled once at its
    # centre, a line's width jumped by a whole pixel with its phase, and the defocused grid
    # varied from cell to cell by a quarter of its contrast)
    subs = (np.arange(4) + 0.5) / 4
    bright = np.zeros(x.shape, np.float32)
    for oy in subs:
        ys = mm_axis(height, fh, oy)[:, None]
        for ox in subs:
            bright += target(mm_axis(width, fw, ox)[None, :], ys)
    bright /= len(subs) ** 2
    # dust on the target: small dark grains, blurred with it
    grains = []
    sig_px = st.pattern_blur * p / ps
    for _ in range(int(rng.integers(0, 4))):
        cx, cy = rng.uniform(pad, width + pad), rng.uniform(pad, height + pad)
        rad = rng.uniform(1, 3)
        yy, xx = np.ogrid[:bright.shape[0], :bright.shape[1]]
        bright *= 1 - rng.uniform(0.3, 0.8) * (((xx - cx) ** 2 + (yy - cy) ** 2) < rad ** 2)
        reach = rad + 2 * sig_px
        grains.append([int(cx - pad - reach), int(cy - pad - reach), int(cx - pad + reach) + 1, int(cy - pad + reach) + 1])
    bright = cv2.GaussianBlur(bright, (0, 0), sig_px)[pad:-pad, pad:-pad]
    x, y, rho2 = x[pad:-pad, pad:-pad], y[pad:-pad, pad:-pad], rho2[pad:-pad, pad:-pad]
    light = (st.dark_cell + (1 - st.dark_cell) * bright)
    gx, gy = rng.uniform(-0.2, 0.2, 2)
    light *= (1 - st.vignette * rho2 / 2) * (1 + gx * x / fw + gy * y / fh)
    b = light.astype(np.float32) / float(np.percentile(light, 99))

    # the lens fills the frame; sometimes the goggle frame reaches in from a border
    lens_s = np.ones((height * sup, width * sup), bool)
    xs_, ys_ = _mm_grid(st, sup)
    if rng.random() < 0.5:
        side = int(rng.integers(4))
        reach = rng.uniform(0.05, 0.2)
        edge = [xs_ / fw + 0.5, 0.5 - xs_ / fw, ys_ / fh + 0.5, 0.5 - ys_ / fh][side]
        curve = 0.05 * np.sin([ys_, ys_, xs_, xs_][side] / rng.uniform(8, 20))
        lens_s = edge > reach + curve
    depth = _dist_mm(np.pad(lens_s, 1, constant_values=False), ps / sup)[1:-1, 1:-1]
    tau = float(rng.uniform(0.85, 0.93))
    t_map = np.where(lens_s, tau, 0.02).astype(np.float32)
    scatter_s = np.zeros_like(t_map)
    # dust on the target is not on the lens: a nuisance for scoring, as a watermark is
    truth = {"scratches": [], "spots": [], "coating": [], "nuisances": [{"kind": "target dust", "bbox_px": g}
                                                                          for g in grains]}
    ps_s = ps / sup

    def place(margin):
        yy_, xx_ = np.nonzero(depth[::sup * 4, ::sup * 4] > margin)
        i = rng.integers(len(xx_))
        return np.array([xs_[yy_[i] * sup * 4, xx_[i] * sup * 4], ys_[yy_[i] * sup * 4, xx_[i] * sup * 4]])

    def record(key, win, foot, extra):
        found = _footprint(win, foot, sup)
        if found is not None:
            truth[key].append({"zone": "central", "central_depth_mm": 99.0, "bbox_px": found[2], **extra})

    for _ in range(n_defects):
        what = str(rng.choice(["scratch", "scratch", "spot", "stain", "watermark"]))
        if what == "scratch":
            length = float(np.exp(rng.uniform(math.log(1.0), math.log(15))))
            w = float(np.exp(rng.uniform(math.log(0.04), math.log(0.25))))
            c = float(rng.uniform(0.1, 0.5))
            pts = _polyline(rng, place(1.0), length, str(rng.choice(["straight", "kinked", "arc"])))
            drawn = _draw_scratch(t_map, scatter_s, lens_s, xs_, ys_, pts, w, c, tau, st, sup)
            if drawn is None:
                continue
            win, cover = drawn
            ln = _length_inside(pts, lens_s, st, sup)
            record("scratches", win, cover > 0.2, {"length_mm": ln, "length_px": ln / ps, "width_mm": w, "contrast": c})
        elif what == "spot":
            dia = float(np.exp(rng.uniform(math.log(0.25), math.log(1.5))))
            c = float(rng.uniform(0.4, 0.9))
            centre = place(1.0)
            win = _window(st, sup, *(centre - dia), *(centre + dia))
            r = np.hypot(xs_[win] - centre[0], ys_[win] - centre[1])
            cover = np.clip((dia / 2 - r) / ps_s + 0.5, 0, 1) * lens_s[win]
            t_map[win] *= 1 - c * cover
            record("spots", win, cover > 0.2, {"diameter_mm": dia, "contrast": c})
        else:  # nuisances: a stain (a faint blotch) or a watermark (a dried drop's thin ring)
            dia = float(rng.uniform(2.0, 8.0))
            centre = place(dia / 2)
            win = _window(st, sup, *(centre - dia), *(centre + dia))
            r = np.hypot(xs_[win] - centre[0], ys_[win] - centre[1])
            if what == "stain":
                prof = np.exp(-0.5 * (r / (dia / 4)) ** 2)
                c = float(rng.uniform(0.01, 0.03))
            else:
                prof = np.exp(-0.5 * ((r - dia / 2) / float(rng.uniform(0.05, 0.15))) ** 2)
                c = float(rng.uniform(0.02, 0.06))
            t_map[win] *= 1 - c * prof * lens_s[win]
            found = _footprint(win, prof > 0.3, sup)
            if found is not None:
                truth["nuisances"].append({"kind": what, "bbox_px": found[2]})
    t = cv2.resize(t_map, (width, height), interpolation=cv2.INTER_AREA)
    sc = cv2.resize(scatter_s, (width, height), interpolation=cv2.INTER_AREA)
    b_local = cv2.GaussianBlur(b, (0, 0), 0.5 / ps)
    exposure = float(rng.uniform(0.6, 0.95))
    image = _psf(exposure * (t * b + sc * b_local), st)
    t_clean = cv2.resize(np.where(lens_s, tau, 0.02).astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    ref = _psf(exposure * t_clean * b, st)
    drop = _visible_drop(image, ref, p, ps)
    for key in ("scratches", "spots"):
        for obj in truth[key]:
            x0, y0, x1, y1 = obj["bbox_px"]
            obj["image_contrast"] = float(drop[y0:y1, x0:x1].max())
    # the camera: shot and read noise, a white balance, sRGB, JPEG
    e = np.clip(image, 0, None) * st.full_well
    e = e + rng.normal(size=e.shape).astype(np.float32) * np.sqrt(e + st.read_e ** 2)
    lin = np.clip(e / st.full_well, 0, 1)
    wb = rng.uniform(0.85, 1.1, 3).astype(np.float32)
    rgb = np.stack([_srgb(np.clip(lin * g, 0, 1)) for g in wb], -1)
    bgr = np.round(rgb[..., ::-1] * 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(82, 96))])
    rec = {"haze_pct": None, "transmittance_pct": None, **truth, "truth": {"target": kind, "period_mm": p}}
    return buf.tobytes(), rec


def render_photos(out: Path, *, width: int, height: int, ps: float, count: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    (out / "lenses").mkdir(parents=True, exist_ok=True)
    truths = []
    for i in range(count):
        data, rec = render_photo(width, height, ps, rng, n_defects=int(rng.choice([0, 0, 1, 1, 2, 3])))
        name = f"photo_{i:04d}.jpg"
        (out / "lenses" / name).write_bytes(data)
        truths.append({"image": name, **rec})
    (out / "truth.jsonl").write_text("".join(json.dumps(t) + "\n" for t in truths))
    return out


def run_uncalibrated(out: Path, ps: float | None, spec: str) -> Path:
    res = out / "results"
    shutil.rmtree(res, ignore_errors=True)
    cmd = [sys.executable, "-m", "goggleqc", "inspect", str(out / "lenses"), "--spec", spec, "--out", str(res),
           "--overlays", "fail"]
    if ps:
        cmd += ["--pixel-size", str(ps)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode not in (0, 1, 3):
        raise SystemExit(f"goggleqc inspect failed:\n{done.stderr}")
    return res / "results.jsonl"


# -- the run ---------------------------------------------------------------------------------


def _write(path: Path, img: np.ndarray) -> None:
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")


def render_set(out: Path, *, width: int, height: int, ps: float, backlight: str, count: int, seed: int) -> Path:
    """Calibration frames, haze plates and ``count`` lenses with truth, in ``out``."""
    rng = np.random.default_rng(seed)
    st = make_station(width, height, ps, backlight, rng)
    cal, lenses = out / "calibration", out / "lenses"
    cal.mkdir(parents=True, exist_ok=True)
    lenses.mkdir(parents=True, exist_ok=True)
    b = backlight_radiance(st)
    for i in range(4):
        _write(cal / f"dark_{i}.png", expose(st, np.zeros_like(b), rng))
        _write(cal / f"flat_{i}.png", expose(st, _psf(b, st), rng))
    b_k = _scatter(b, st)
    for pct in (0.5, 1, 2, 4, 8):  # reference plates fill the field: τ 0.9, haze everywhere
        h = pct / 100
        _write(cal / f"haze_{pct:g}.png", expose(st, _psf(0.9 * ((1 - h) * b + h * b_k), st), rng))
    truths = []
    for i in range(count):
        n = int(rng.choice([0, 0, 0, 1, 1, 2, 3]))
        raw, rec = render_lens(st, b, rng, n_defects=n)
        name = f"lens_{i:04d}.png"
        _write(lenses / name, raw)
        truths.append({"image": name, **rec})
    (out / "truth.jsonl").write_text("".join(json.dumps(t) + "\n" for t in truths))
    (out / "station2.json").write_text(json.dumps(st.__dict__, indent=1))
    return out


def run_goggleqc(out: Path, ps: float, spec: str) -> Path:
    cal = out / "calibration"
    cmd = [sys.executable, "-m", "goggleqc", "calibrate", "--dark", str(cal / "dark_*.png"),
           "--flat", str(cal / "flat_*.png"), "--pixel-size", str(ps), "--out", str(out / "station"), "--force"]
    for pct in (0.5, 1, 2, 4, 8):
        cmd += ["--haze-standard", f"{cal / f'haze_{pct:g}.png'}={pct}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"goggleqc calibrate failed:\n{done.stderr}")
    res = out / "results"
    shutil.rmtree(res, ignore_errors=True)  # a fresh run each time: goggleqc refuses to mix runs
    done = subprocess.run([sys.executable, "-m", "goggleqc", "inspect", str(out / "lenses"), "--station", str(out / "station"),
                    "--spec", spec, "--out", str(res), "--overlays", "fail"], capture_output=True, text=True)
    if done.returncode not in (0, 1, 3):
        raise SystemExit(f"goggleqc inspect failed:\n{done.stderr}")
    return res / "results.jsonl"


def score(out: Path, results: Path, spec_name: str) -> dict:
    from goggleqc.spec import load_spec
    from goggleqc.synth.scoring import evaluate

    truths = {t["image"]: t for t in map(json.loads, (out / "truth.jsonl").read_text().splitlines())}
    found = {Path(r["image"]).name: r for r in map(json.loads, results.read_text().splitlines())}
    pairs = []
    for name, t in truths.items():
        t = dict(t)
        # the scorer's floors read `contrast`: give it what the camera shows
        for key in ("scratches", "spots", "coating"):
            t[key] = [{**o, "contrast": o["image_contrast"] if key != "coating" else o["contrast"]} for o in t[key]]
        pairs.append((t, found.get(name, {"verdict": "error"})))
    return evaluate(pairs, load_spec(spec_name))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--count", type=int, default=120)
    ap.add_argument("--size", default="640x512")
    ap.add_argument("--pixel-size", type=float, default=0.08)
    ap.add_argument("--backlight", nargs="+", default=["uniform", "checker", "grid", "stripes"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--spec", default="en166-clear")
    ap.add_argument("--photos", action="store_true",
                    help="photographs through the lens against a defocused grid, inspected uncalibrated")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    rows = []
    if args.photos:
        folder = args.out / "photos"
        if not (folder / "truth.jsonl").exists():
            render_photos(folder, width=w, height=h, ps=args.pixel_size, count=args.count, seed=args.seed)
        rows.append(("photos", score(folder, run_uncalibrated(folder, args.pixel_size, args.spec), args.spec)))
    for k, bl in enumerate([] if args.photos else args.backlight):
        folder = args.out / bl
        if not (folder / "truth.jsonl").exists():
            render_set(folder, width=w, height=h, ps=args.pixel_size, backlight=bl, count=args.count,
                       seed=args.seed * 100 + k)
        res = run_goggleqc(folder, args.pixel_size, args.spec)
        rows.append((bl, score(folder, res, args.spec)))
    keys = ["haze_mae_pp", "transmittance_mae_pp", "recall_scratch_1mm", "n_scratch_1mm", "recall_spot", "n_spot",
            "recall_coating", "n_coating", "false_scratches_per_clean_lens", "false_spots_per_clean_lens",
            "false_coating_per_clean_lens", "false_accept_rate", "false_reject_rate", "n_clearly_bad",
            "n_clearly_good", "errors"]
    print("| backlight | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for bl, m in rows:
        cells = [f"{m[k]:.3g}" if isinstance(m.get(k), float) else str(m.get(k)) for k in keys]
        print(f"| {bl} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
