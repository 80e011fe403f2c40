"""Random stations and lenses spanning everything the station model allows.

Every draw comes from a numpy Generator, so a seed gives the same station and lenses.
Ranges follow station-model.md: pixel sizes 0.03–0.10 mm, traps 4–8 mm, haze 0–10 %,
τ 0.85–0.93 for clear lenses (some tinted or failing), scratch contrast 3–40 %, coating
contrast 0.5–5 %, exposure drift of a few percent. Watermarks and stains (nuisances, not
defects) are opt-in: ``random_lens(..., nuisances=mean_count)``. Pattern targets are defocused by up to
0.2 period (Gaussian σ), which keeps at least ~45 % of the fundamental's contrast: a station
would not choose a target whose pattern it can barely see.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from goggleqc.synth.lens import CoatingDefect, DullSpot, LensSpec, Pose, Scratch, Spot, Stain, Watermark, render_masks
from goggleqc.synth.station import Backlight, Camera, Dust, Product, SimStation, StationParams, Trap, random_photo

DEFECT_KINDS = ("scratch", "spot", "coating", "dull")
NUISANCE_KINDS = ("watermark", "stain")


def _loguniform(rng, lo, hi):
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def random_station(rng: np.random.Generator, *, width: int = 1280, height: int = 1024,
                   pixel_size_mm: float | None = None, backlight: str | None = None,
                   bits: int | None = None, colour: bool = False, pattern: str | None = None,
                   seed: int = 0, marginal_mm: float = 5.0, warp: float = 0.0) -> StationParams:
    """A random but plausible station; arguments pin what the caller wants fixed.

    ``warp`` (default 0, drawing nothing from ``rng``) bends a pattern target as a photograph
    through a curved lens sees it (:class:`~goggleqc.synth.station.Backlight`)."""
    ps = pixel_size_mm if pixel_size_mm is not None else float(rng.uniform(0.03, 0.10))
    bits = bits if bits is not None else int(rng.choice([8, 16]))
    data_bits = 8 if bits == 8 else int(rng.choice([10, 12, 14, 16]))
    camera = Camera(bits=bits, data_bits=data_bits, full_well_e=float(rng.uniform(6000, 20000)),
                    read_noise_e=float(rng.uniform(3, 12)), dark_level_frac=float(rng.uniform(0.01, 0.05)),
                    dsnu_frac=float(rng.uniform(0.0005, 0.003)), psf_sigma_px=float(rng.uniform(0.5, 1.2)),
                    colour=colour, white_balance=tuple(float(v) for v in rng.uniform(0.85, 1.15, 3)))
    fov_w, fov_h = width * ps, height * ps
    kind = str(rng.choice(["visor", "two_eye"]))
    frame = float(rng.uniform(2.5, 6.0))
    exponent = float(rng.uniform(2.2, 4.0))
    b = float(rng.uniform(0.30, 0.36)) * fov_h
    if kind == "visor":
        a = float(rng.uniform(0.36, 0.41)) * fov_w
        gap = 0.0
        nose_w = float(rng.uniform(0.15, 0.25)) * 2 * a
    else:
        gap = float(rng.uniform(0.04, 0.08)) * fov_w
        a = (float(rng.uniform(0.38, 0.41)) * fov_w - gap / 2) / 2
        nose_w = gap + float(rng.uniform(0.2, 0.4)) * a
    product = Product(kind=kind, half_width_mm=a, half_height_mm=b, exponent=exponent, eye_gap_mm=gap,
                      nose_width_mm=nose_w, nose_height_mm=float(rng.uniform(0.3, 0.45)) * b, frame_mm=frame,
                      tau_frame=float(rng.uniform(0.0, 0.03)))
    kind_bl = backlight or str(rng.choice(["uniform", "pattern"]))
    traps: tuple[Trap, ...] = ()
    if kind_bl == "uniform":
        room = max(2.0, 1.6 * (b - marginal_mm))  # traps must be seen through the central zone
        d = float(np.clip(rng.uniform(4.0, 8.0), 2.0, room))
        if kind == "visor":
            xs = [0.0, -0.5 * a, 0.5 * a][: int(rng.integers(1, 4))]
            if len(xs) > 1:
                d = min(d, 0.5 * a / 1.3)  # traps apart (a small field once drew 7 mm traps 7 mm apart)
        else:
            xs = [-(a + gap / 2), a + gap / 2]
        traps = tuple(Trap(x, float(rng.uniform(-0.15, 0.05)) * b, d) for x in xs)
    n_dust = int(rng.integers(0, 7))
    dust = tuple(Dust(float(rng.uniform(-0.45, 0.45) * fov_w), float(rng.uniform(-0.45, 0.45) * fov_h),
                      _loguniform(rng, 0.1, 1.0), float(rng.uniform(0.1, 0.5))) for _ in range(n_dust))
    period = max(float(rng.uniform(1.5, 6.0)), 10 * ps)
    bl = Backlight(kind=kind_bl, level_frac=float(rng.uniform(0.6, 0.85)), vignetting=float(rng.uniform(0.05, 0.3)),
                   nonuniformity=float(rng.uniform(0.005, 0.03)), traps=traps,
                   pattern=pattern or str(rng.choice(["checker", "grid", "stripes"], p=[0.45, 0.45, 0.1])),
                   period_mm=period, angle_deg=float(rng.uniform(0, 90)), modulation=float(rng.uniform(0.4, 0.95)),
                   line_frac=float(rng.uniform(0.15, 0.4)),
                   defocus_mm=float(rng.uniform(0.05, 0.3)) if kind_bl == "uniform" else float(rng.uniform(0.0, 0.2)) * period,
                   dust=dust, scatter_sigma_mm=float(rng.uniform(12, 40)),
                   scatter_shape=str(rng.choice(["gaussian", "mixture", "exponential"])), warp=warp)
    return StationParams(width=width, height=height, pixel_size_mm=ps, camera=camera, backlight=bl,
                         product=product, seed=seed)



def close_up_station(rng: np.random.Generator, *, width: int = 640, height: int = 512, pixel_size_mm: float = 0.1,
                     bits: int = 8, warp: float = 0.0, photo: bool = False) -> StationParams:
    """A photograph through a lens filling the frame, on a pattern target: the uncalibrated case
    real photographs are. The visor is larger than the field of view (no goggle frame in
    view), and the target behind it is at least 0.15 period out of focus, since the camera
    focuses on the lens. ``warp`` bends the target (:class:`~goggleqc.synth.station.Backlight`).
    ``photo`` makes the camera an ordinary one (:func:`~goggleqc.synth.station.random_photo`:
    colour or not, a tone curve, sharpening, JPEG), 8-bit."""
    params = random_station(rng, width=width, height=height, pixel_size_mm=pixel_size_mm, backlight="pattern",
                            bits=8 if photo else bits, warp=warp)
    if photo:
        params = dataclasses.replace(params, camera=dataclasses.replace(
            params.camera, colour=bool(rng.random() < 0.7), photo=random_photo(rng)))
    bl = params.backlight
    product = Product(kind="visor", half_width_mm=round(0.75 * width * pixel_size_mm, 6),
                      half_height_mm=round(0.75 * height * pixel_size_mm, 6), exponent=6.0, nose_width_mm=1.0,
                      nose_height_mm=0.5, frame_mm=2.0)
    return dataclasses.replace(params, product=product, backlight=dataclasses.replace(
        bl, defocus_mm=max(bl.defocus_mm, 0.15 * bl.period_mm)))

def _inside(masks, points, margin_px=1.0) -> bool:
    """True when every point lies inside the lens, at least ``margin_px`` from its edge."""
    h, w = masks.lens.shape
    xs = np.round(points[:, 0]).astype(int)
    ys = np.round(points[:, 1]).astype(int)
    if xs.min() < 0 or ys.min() < 0 or xs.max() >= w or ys.max() >= h:
        return False
    return bool((masks.inside_mm[ys, xs] > margin_px * 0.0 + 0.5).all())


def _place(rng, masks, make, tries: int = 60):
    """Draw a centre inside the lens and build an object there until it fits inside."""
    ys, xs = np.nonzero(masks.inside_mm > 1.0)
    for _ in range(tries):
        i = int(rng.integers(len(xs)))
        obj, pts = make(float(xs[i]), float(ys[i]))
        if _inside(masks, pts):
            return obj
    return None


def random_scratch(rng, masks, ps: float, *, length_mm=None, contrast=None, width_mm=None, shape=None):
    """A scratch 0.3–25 mm long and 0.02–0.3 mm wide (hairline to gouge), drawn in mm so that
    one scratch is the same object at every pixel size; dashes of a broken scratch are
    0.3–1.5 mm with gaps of 0.1–0.5 mm."""
    length_px = (length_mm if length_mm is not None else _loguniform(rng, 0.3, 25.0)) / ps
    width = (width_mm if width_mm is not None else _loguniform(rng, 0.02, 0.3)) / ps
    c = contrast if contrast is not None else float(rng.uniform(0.03, 0.40))
    shape = shape or str(rng.choice(["straight", "arc", "kinked", "broken"], p=[0.4, 0.25, 0.2, 0.15]))
    theta = float(rng.uniform(0, np.pi))

    def make(cx, cy):
        if shape == "arc":
            span = float(rng.uniform(0.3, 2.0))
            radius = length_px / span
            t = np.linspace(-span / 2, span / 2, max(8, int(length_px / 2)))
            pts = np.stack([radius * np.sin(t), radius * (1 - np.cos(t))], 1)
        elif shape == "kinked":
            n = int(rng.integers(2, 4))
            seg = rng.dirichlet(np.ones(n)) * length_px
            ang = np.cumsum(np.concatenate([[0], rng.choice([-1, 1], n - 1) * rng.uniform(np.deg2rad(20), np.deg2rad(70), n - 1)]))
            steps = np.stack([seg * np.cos(ang), seg * np.sin(ang)], 1)
            pts = np.concatenate([[[0, 0]], np.cumsum(steps, 0)])
            pts = pts - pts.mean(0)
        else:
            pts = np.array([[-length_px / 2, 0.0], [length_px / 2, 0.0]])
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        pts = pts @ rot.T + [cx, cy]
        dash = None
        if shape == "broken":
            dash = (float(rng.uniform(0.3, 1.5)) / ps, float(rng.uniform(0.1, 0.5)) / ps)
        return Scratch(tuple(map(tuple, pts.round(3))), width, c, shape, dash, float(rng.uniform(0.1, 0.5))), pts

    return _place(rng, masks, make)


def random_spot(rng, masks, ps: float, *, diameter_mm=None, contrast=None, kind=None):
    kind = kind or str(rng.choice(["inclusion", "dig", "dust", "bubble"]))
    d_px = max(1.2, (diameter_mm if diameter_mm is not None else _loguniform(rng, 0.08, 1.5)) / ps)
    lo, hi = {"inclusion": (0.3, 0.9), "dust": (0.15, 0.6), "dig": (0.2, 0.6), "bubble": (0.15, 0.5)}[kind]
    c = contrast if contrast is not None else float(rng.uniform(lo, hi))

    def make(cx, cy):
        ring = np.array([[cx + d_px / 2 * np.cos(t), cy + d_px / 2 * np.sin(t)] for t in np.linspace(0, 6.28, 8)])
        return Spot(cx, cy, d_px, c, kind), ring

    return _place(rng, masks, make)


def random_coating(rng, masks, ps: float, *, kind=None, area_mm2=None, contrast=None):
    kind = kind or str(rng.choice(["run", "void", "mottle"]))
    sign = 1.0 if rng.uniform() < 0.75 else -1.0
    c = contrast if contrast is not None else float(rng.uniform(0.005, 0.05))
    c = sign * abs(c) if contrast is None else c
    edge_px = float(rng.uniform(0.15, 0.4)) / ps
    t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    if kind == "run":
        width = float(rng.uniform(0.8, 3.0))
        length = float(area_mm2 / width) if area_mm2 else float(rng.uniform(4.0, 25.0))
        ang = np.deg2rad(90 + rng.uniform(-15, 15))
        # a stadium: rectangle with semicircular ends, long axis along ang
        half = max(length - width, 0.0) / 2
        local = np.stack([np.where(np.cos(t) >= 0, half, -half) + width / 2 * np.cos(t), width / 2 * np.sin(t)], 1)
    elif kind == "void":
        area = area_mm2 if area_mm2 else _loguniform(rng, 3.0, 60.0)
        harm = sum(rng.uniform(-0.12, 0.12) * np.cos(k * t + rng.uniform(0, 6.28)) for k in (2, 3, 5))
        r = np.sqrt(area / np.pi) * (1 + harm)
        local = np.stack([r * np.cos(t), r * np.sin(t)], 1)
        ang = float(rng.uniform(0, np.pi))
    elif kind == "mottle":
        area = area_mm2 if area_mm2 else _loguniform(rng, 30.0, 400.0)
        ratio = float(rng.uniform(0.6, 1.0))
        ra = np.sqrt(area / np.pi / ratio)
        local = np.stack([ra * np.cos(t), ra * ratio * np.sin(t)], 1)
        ang = float(rng.uniform(0, np.pi))
        c = abs(c) if contrast is None else c
    else:
        raise ValueError(f"unknown coating defect kind {kind!r}")
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    local_px = local @ rot.T / ps
    grain = float(rng.uniform(0.3, 1.2)) / ps
    seed = int(rng.integers(2 ** 31))

    def make(cx, cy):
        pts = local_px + [cx, cy]
        return CoatingDefect(kind, tuple(map(tuple, pts.round(3))), c, edge_px, grain, seed), pts

    return _place(rng, masks, make)


def random_dull_spot(rng, masks, ps: float):
    d = float(rng.uniform(5, 20)) / ps

    def make(cx, cy):
        return DullSpot(cx, cy, d, float(rng.uniform(0.02, 0.08))), np.array([[cx, cy]])

    return _place(rng, masks, make)


def _blob(rng, t: np.ndarray, harmonics: tuple[int, ...], amp: float) -> np.ndarray:
    """A unit circle's radius bent by random harmonics of relative amplitude up to ``amp``."""
    return 1 + sum(rng.uniform(-amp, amp) * np.cos(k * t + rng.uniform(0, 2 * np.pi)) for k in harmonics)


def random_watermark(rng, masks, ps: float, *, diameter_mm=None, rim_contrast=None, partial=None,
                     centre_px=None):
    """A dried water drop 1–8 mm across: a slightly irregular ring of deposit 0.05–0.4 mm wide
    that lowers τ by 2–15 % (with a little haze) round a faintly darker, faintly hazy inside;
    a quarter of them only a partial ring. ``centre_px`` pins the centre (else drawn inside
    the lens); None when it does not fit inside the lens."""
    d_mm = diameter_mm if diameter_mm is not None else _loguniform(rng, 1.0, 8.0)
    r_px = d_mm / 2 / ps
    t = np.linspace(0, 2 * np.pi, max(48, int(2 * np.pi * r_px / 2)), endpoint=False)
    rad = r_px * _blob(rng, t, (2, 3, 4, 6), 0.05)
    local = np.stack([rad * np.cos(t), rad * np.sin(t)], 1)
    c = rim_contrast if rim_contrast is not None else float(rng.uniform(0.02, 0.15))
    rim_px = float(rng.uniform(0.05, 0.4)) / ps
    haze = float(rng.uniform(0.1, 0.3)) * c  # the crust scatters part of what it takes out
    inner_c, inner_h = float(rng.uniform(0.0, 0.02)), float(rng.uniform(0.0, 0.01))
    is_partial = (rng.uniform() < 0.25) if partial is None else partial
    start = float(rng.uniform(0, 1))
    span = (start, start + float(rng.uniform(0.35, 0.85))) if is_partial else (0.0, 1.0)
    variation, seed = float(rng.uniform(0.0, 0.6)), int(rng.integers(2 ** 31))

    def make(cx, cy):
        pts = local + [cx, cy]
        return Watermark(tuple(map(tuple, pts.round(3))), rim_px, c, haze, inner_c, inner_h, span, variation, seed), pts

    if centre_px is not None:
        obj, pts = make(*centre_px)
        return obj if _inside(masks, pts) else None
    return _place(rng, masks, make)


def random_stain(rng, masks, ps: float, *, kind=None, size_mm=None, contrast=None, haze=None):
    """A smear, fingerprint or residue: an irregular soft-edged patch 3–20 mm across that
    lowers τ by 0.5–4 % and adds 0.5–5 % haze; fingerprints carry faint ridges of 0.4–0.5 mm
    period where the pixel resolves them."""
    kind = kind or str(rng.choice(["smear", "fingerprint", "residue"], p=[0.4, 0.3, 0.3]))
    if kind == "smear":
        length, ratio = size_mm or _loguniform(rng, 5.0, 20.0), float(rng.uniform(0.3, 0.7))
    elif kind == "fingerprint":
        length, ratio = size_mm or float(rng.uniform(10.0, 18.0)), float(rng.uniform(0.65, 0.8))
    elif kind == "residue":
        length, ratio = size_mm or _loguniform(rng, 3.0, 15.0), float(rng.uniform(0.7, 1.0))
    else:
        raise ValueError(f"unknown stain kind {kind!r}")
    t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    bend = _blob(rng, t, (2, 3, 5, 7), 0.08)
    local = np.stack([length / 2 * bend * np.cos(t), length / 2 * ratio * bend * np.sin(t)], 1)
    ang = float(rng.uniform(0, np.pi))
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    local_px = local @ rot.T / ps
    c = contrast if contrast is not None else float(rng.uniform(0.005, 0.04))
    h = haze if haze is not None else float(rng.uniform(0.005, 0.05))
    edge_px = float(rng.uniform(0.08, 0.2)) * length * ratio / ps
    period_px, ridge_c = 0.0, 0.0
    if kind == "fingerprint":
        period_px, ridge_c = float(rng.uniform(0.4, 0.5)) / ps, float(rng.uniform(0.1, 0.4)) * c
        if period_px < 3.0:  # unresolved ridges average out into the patch
            period_px, ridge_c = 0.0, 0.0
    seed = int(rng.integers(2 ** 31))

    def make(cx, cy):
        pts = local_px + [cx, cy]
        return Stain(kind, tuple(map(tuple, pts.round(3))), c, h, edge_px, period_px, ridge_c, seed), pts

    return _place(rng, masks, make)


def random_nuisances(rng, masks, ps: float, count: int, kinds: tuple[str, ...] = NUISANCE_KINDS) -> tuple:
    """``count`` marks of the given ``kinds``; three in ten watermarks come as a cluster of
    two to four overlapping drops. Marks that do not fit inside the lens are dropped."""
    out = []
    for _ in range(count):
        kind = str(rng.choice(list(kinds)))
        if kind == "stain":
            item = random_stain(rng, masks, ps)
            out += [item] if item is not None else []
            continue
        if kind != "watermark":
            raise ValueError(f"unknown nuisance kind {kind!r}")
        first = random_watermark(rng, masks, ps)
        if first is None:
            continue
        out.append(first)
        if rng.uniform() < 0.3:
            pts = np.asarray(first.outline_px)
            centre, r_px = pts.mean(0), float(np.hypot(*(pts - pts.mean(0)).T).mean())
            for _ in range(int(rng.integers(1, 4))):
                d_mm = _loguniform(rng, 1.0, 8.0)
                gap = float(rng.uniform(0.4, 0.9)) * (r_px + d_mm / 2 / ps)
                a = float(rng.uniform(0, 2 * np.pi))
                item = random_watermark(rng, masks, ps, diameter_mm=d_mm,
                                        centre_px=(centre[0] + gap * np.cos(a), centre[1] + gap * np.sin(a)))
                out += [item] if item is not None else []
    return tuple(out)


def centred(lens: LensSpec) -> LensSpec:
    """The same lens with no pose offset: centred and square to the camera, as a close-up
    through a lens that fills the frame (:func:`close_up_station`) has it."""
    return dataclasses.replace(lens, pose=dataclasses.replace(lens.pose, dx_mm=0, dy_mm=0, angle_deg=0))


def close_up(station_rng: np.random.Generator, lens_rng: np.random.Generator, *, pixel_size_mm: float = 0.1,
             warp: float = 0.0, kinds: tuple[str, ...] = ("scratch", "spot"),
             photo: bool = False, width: int = 640, height: int = 512) -> tuple[SimStation, np.ndarray, dict]:
    """A photograph through a random lens filling the frame (:func:`close_up_station`, the lens
    :func:`centred`): the simulated station, the image and its truth record."""
    from goggleqc.synth.render import render_lens

    sim = SimStation(close_up_station(station_rng, width=width, height=height, pixel_size_mm=pixel_size_mm,
                                      warp=warp, photo=photo))
    lens = centred(random_lens(lens_rng, sim, kinds=kinds))
    image, truth = render_lens(sim, lens, lens_rng)
    return sim, image, truth


def target_dust_px(params: StationParams) -> list[tuple[float, float]]:
    """Image positions (full-resolution px) of the dust on the backlight target."""
    ps = params.pixel_size_mm
    return [((params.width - 1) / 2 + d.x_mm / ps, (params.height - 1) / 2 + d.y_mm / ps) for d in params.backlight.dust]


def random_lens(rng: np.random.Generator, station: SimStation, *, defects: int | None = None,
                kinds: tuple[str, ...] = DEFECT_KINDS, haze: float | None = None,
                tau_clear: float | None = None, nuisances: float = 0.0,
                nuisance_kinds: tuple[str, ...] = NUISANCE_KINDS) -> LensSpec:
    """A random lens: pose jitter, τ, haze, exposure drift and ``defects`` random defects.

    With ``defects=None``, about a third of the lenses are defect-free and the rest carry one
    to three defects of the given ``kinds``. ``nuisances`` is the mean number (Poisson) of
    watermarks and stains of ``nuisance_kinds``; they are drawn after everything else, so the
    default of 0 draws exactly the lenses earlier versions drew.
    """
    p = station.params
    pose = Pose(float(rng.uniform(-2, 2)), float(rng.uniform(-2, 2)), float(rng.uniform(-2, 2)))
    masks = render_masks(p, pose)
    if tau_clear is None:
        tau_clear = float(rng.uniform(0.84, 0.93)) if rng.uniform() < 0.9 else float(rng.uniform(0.65, 0.80))
    if haze is None:
        haze = float(rng.uniform(0.002, 0.025)) if rng.uniform() < 0.85 else float(rng.uniform(0.025, 0.10))
    n = defects if defects is not None else (0 if rng.uniform() < 0.35 else int(rng.integers(1, 4)))
    groups = {"scratch": [], "spot": [], "coating": [], "dull": []}
    makers = {"scratch": random_scratch, "spot": random_spot, "coating": random_coating, "dull": random_dull_spot}
    for _ in range(n):
        kind = str(rng.choice(list(kinds)))
        obj = makers[kind](rng, masks, p.pixel_size_mm)
        if obj is not None:
            groups[kind].append(obj)
    gain = float(rng.uniform(0.97, 1.03))
    marks = random_nuisances(rng, masks, p.pixel_size_mm, int(rng.poisson(nuisances)), nuisance_kinds) \
        if nuisances > 0 else ()
    return LensSpec(pose=pose, tau_clear=tau_clear, haze=haze, gain=gain,
                    dull_spots=tuple(groups["dull"]), scratches=tuple(groups["scratch"]),
                    spots=tuple(groups["spot"]), coating=tuple(groups["coating"]), nuisances=marks)
