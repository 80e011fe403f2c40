"""Haze from the light traps or from the loss of pattern contrast (station-model.md §2–3).

Image formation, after the dark frame, with ``B`` the flat and ``K`` the wide scatter kernel::

    I = g·τ·[(1 − h)·B + h·(B ⊛ K)]

- **Uniform backlight (traps).** Over a trap and its bright surround, where ``τ`` and ``h``
  are constant, this is linear in two known images: ``I = a·B + b·S`` with ``S = B ⊛ K̂``
  (the station's scatter map, a nominal kernel ``K̂``), ``a = g·τ·(1 − h)``, ``b = g·τ·h``.
  The fit gives ``h = b / (a + b)``, free of exposure drift ``g`` and of ``τ``. Haze fills the
  trap (``B ≈ 0`` there, so ``b`` comes from the trap fill) in proportion to the surround
  (``a``): the lens image's trap/surround ratio compared with the flat's.
- **Pattern backlight (contrast).** The lens image's pattern contrast ``I / L(I) − 1`` (``L``:
  a local mean over one period) is projected onto the flat's, ``B / L(B) − 1``. The slope is
  ``q = (1 − h) / ((1 − h) + h·c)``, ``c = S / L(B) ≈ 1``, so contrast falls by about
  ``1 − h``. Dividing by the local mean makes it blind to transmittance changes wider than a
  period; regions whose fit leaves more residual than the camera noise (texture finer than a
  period: mottle, scratches, spots) are not used. A central-zone value (one fit) and a coarse
  map of 8 mm regions are returned; the worst region counts only by its excess over noise.

Both fits use an instrument for the flat (the flat smoothed with a zero centre tap), so the
flat's own noise does not bias them (errors-in-variables), and noise in the lens image only
adds scatter, never bias. The raw estimate keeps a small bias because the true ``K`` is not
``K̂``; the station's haze-plate fit (:class:`goggleqc.calibration.station.HazeFit`) removes it.

For speed the per-station part (sample positions, flat samples and their products) is
computed once and cached on the station; a lens costs a gather (traps) or a 2×2 binning
(pattern) and a few block reductions (≈ 0.1 ms for traps, ≈ 3 ms for a pattern at 5 MP on two cores).

References
----------
ASTM D1003-21, Standard Test Method for Haze and Luminous Transmittance of Transparent
Plastics (haze = diffuse ÷ total transmittance, scatter beyond 2.5°).
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field

import cv2
import numpy as np

from goggleqc.errors import InputError
from goggleqc.inspect.lens import ReducedMask

#: size (mm) of the square regions over which the worst haze is averaged on pattern backlights
HAZE_REGION_MM = 8.0
#: regions are built from blocks of HAZE_REGION_MM / BLOCKS_PER_REGION; windows slide by one block
BLOCKS_PER_REGION = 8
#: trap window radius as a multiple of the trap radius: the trap plus its bright surround
TRAP_WINDOW = 1.8
#: samples across a trap diameter (windows are strided to about this density)
TRAP_SAMPLES_ACROSS = 40
#: a pattern block (1/8 of a region across) whose fit residual exceeds this multiple of the
#: noise expected from the station's noise model for its binned samples (at least the typical
#: block's; the median block without a model) is not used: a block has few samples, so its
#: residual scatters more than a region's
BLOCK_RESIDUAL_LIMIT = 2.0
#: a region counts as worse than the central zone only beyond this many noise σ (the largest
#: of about a hundred overlapping regions' noise reaches 3σ on a uniform lens, and σ is itself
#: estimated from a region's few blocks)
WORST_SIGMAS = 4.5
#: a region found worse is reported this many σ below its own value (the largest of many
#: noisy regions is read high: a mild shrinkage toward the truth)
WORST_SHRINK_SIGMAS = 0.25
#: a region centred in the central zone is read when at least this fraction of it lies in the
#: zone (a corner of the zone still has a region, with the noise its size gives it)
MIN_COVER = 0.2
#: near the lens edge the pattern's local mean is taken over the lens alone, this far (mm)
#: inside the found outline
LENS_EDGE_GUARD_MM = 1.0
#: at most this many samples for the pattern grid (binned 2×2 as often as needed)
PATTERN_MAX_SAMPLES = 200_000


@dataclass(frozen=True)
class HazeMeasurement:
    """Haze of one lens.

    Attributes
    ----------
    haze_pct : float or None
        The worst haze (%) over the traps seen through the lens, or over the 8 mm regions of
        the central zone (pattern); corrected by the haze-plate fit when ``corrected``.
        None when no trap is seen through the lens or no region fits in the central zone.
    raw_pct : float or None
        The same before the haze-plate line (after the plates' response map, which brings
        each region to what the whole field reads).
    method : str
        ``traps`` or ``pattern``.
    regions : list of dict
        Per trap (``trap0`` ...) or per region (``central``: the whole central zone,
        ``worst``: the worst 8 mm region), each with ``region``, ``x_px``, ``y_px``,
        ``haze_pct`` and ``raw_pct``.
    map_pct : (P, Q) float ndarray or None
        Pattern only: haze (%) of the 8 mm region centred on each map cell, NaN where the
        region is not inside the central zone. Cell ``(i, j)`` is centred on pixel
        ``map_origin_px + (j, i) · map_cell_px``.
    corrected : bool
        True when the haze-plate correction was applied.
    central_pct : float or None
        Pattern only: the haze over the whole central zone (one fit).
    map_cell_px, map_origin_px : float, tuple of float
        Geometry of ``map_pct`` (pixels).
    """

    haze_pct: float | None
    raw_pct: float | None
    method: str
    regions: list[dict] = field(default_factory=list)
    map_pct: np.ndarray | None = None
    corrected: bool = False
    central_pct: float | None = None
    map_cell_px: float = 0.0
    map_origin_px: tuple[float, float] = (0.0, 0.0)


# -- masks ----------------------------------------------------------------------------------------

def _take(mask, flat_idx: np.ndarray) -> np.ndarray:
    return mask.take(flat_idx) if isinstance(mask, ReducedMask) else mask.ravel()[flat_idx] >= 0.5


def _strided(mask, step_y: int, step_x: int, rows: int, cols: int) -> np.ndarray:
    """The mask at every ``step``-th pixel, ``rows × cols`` of them, as uint8."""
    if isinstance(mask, ReducedMask):
        return mask.strided(step_y, step_x, rows, cols).astype(np.uint8)
    return (mask[: rows * step_y: step_y, : cols * step_x: step_x] >= 0.5).astype(np.uint8)


# -- the per-station plan ---------------------------------------------------------------------

@dataclass(frozen=True)
class _TrapPlan:
    idx: np.ndarray        # flat pixel indices of all trap windows, trap after trap
    starts: np.ndarray     # start of each trap's samples in idx (for reduceat)
    dark: np.ndarray       # dark at the samples, in units of 1/inv_scale DN
    z: np.ndarray          # instrument B̃ and scatter S at the samples (normalised)
    s: np.ndarray
    gram: tuple            # per-sample Z·X products: B̃B, B̃S, SB, SS
    in_disc: np.ndarray    # sample lies on the trap disc (must be seen through the lens)
    sums: tuple            # per-trap unmasked sums of the four products
    inv_scale: float


@dataclass(frozen=True)
class _PatternPlan:
    levels: int            # the frame is binned 2×2 this many times (factor 2**levels)
    rows: int              # binned, cropped grid size (multiple of `block`)
    cols: int
    block: int             # block side in binned samples
    box: int               # low-pass box (binned samples): about one pattern period
    dark: np.ndarray       # binned dark (DN)
    mb: np.ndarray         # the flat's pattern contrast B / L(B) − 1
    mz: np.ndarray         # the same for the instrument B̃
    b: np.ndarray          # binned flat B, instrument B̃ and scatter S (for the lens edge)
    z: np.ndarray
    s: np.ndarray
    full: tuple            # block means of mz·mb, mb·mb, c·mz·mb (c = S / L(B)), and ones


def _instrument(flat: np.ndarray) -> np.ndarray:
    """``B̃``: the flat smoothed by a small kernel with a zero centre tap.

    Used as the instrument for ``B`` in the fit: it passes the trap edges and the pattern
    (blurred by the camera PSF anyway) but shares no noise with ``B`` at the same pixel, so
    the flat's own noise does not bias the fit (errors-in-variables), however faint the
    pattern.
    """
    k = cv2.getGaussianKernel(5, 1.0)
    kernel = (k @ k.T).astype(np.float32)
    kernel[2, 2] = 0.0
    kernel /= kernel.sum()
    return cv2.filter2D(flat, -1, kernel, borderType=cv2.BORDER_REFLECT)


def _normaliser(station) -> float:
    """1 / (a bright level of the flat): keeps the sums near 1 for float32 accuracy."""
    return 1.0 / max(float(np.percentile(station.flat, 95)), 1e-6)


def _samples(station, inv: float):
    """Normalised flat instrument B̃, flat B and scatter S images (float32, full size)."""
    f = np.float32(inv)
    return _instrument(station.flat) * f, station.flat * f, station.scatter * f


def _trap_plan(station) -> _TrapPlan:
    h, w = station.shape
    inv = _normaliser(station)
    zimg, bimg, simg = _samples(station, inv)
    idx_parts, disc_parts, starts = [], [], []
    n = 0
    for trap in station.traps:
        rw = TRAP_WINDOW * trap.r_px
        step = max(1, int(2 * trap.r_px / TRAP_SAMPLES_ACROSS))
        x0, x1 = max(0, int(np.floor(trap.x_px - rw))), min(w, int(np.ceil(trap.x_px + rw)) + 1)
        y0, y1 = max(0, int(np.floor(trap.y_px - rw))), min(h, int(np.ceil(trap.y_px + rw)) + 1)
        yy, xx = np.mgrid[y0:y1:step, x0:x1:step]
        d = np.hypot(xx - trap.x_px, yy - trap.y_px)
        keep = d <= rw
        idx_parts.append((yy[keep] * w + xx[keep]).astype(np.int64))
        disc_parts.append(d[keep] <= trap.r_px + 1.0)
        starts.append(n)
        n += int(keep.sum())
    idx = np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.int64)
    z, b, s = (x.ravel()[idx] for x in (zimg, bimg, simg))
    gram = (z * b, z * s, s * b, s * s)
    starts_a = np.asarray(starts, np.int64)
    sums = tuple(np.add.reduceat(g.astype(np.float64), starts_a) for g in gram) if len(idx) else ()
    return _TrapPlan(idx=idx, starts=starts_a, dark=(station.dark.ravel()[idx] * inv).astype(np.float32), z=z, s=s,
                     gram=gram, in_disc=np.concatenate(disc_parts) if disc_parts else np.zeros(0, bool),
                     sums=sums, inv_scale=inv)


def _lowpass(x: np.ndarray, box: int) -> np.ndarray:
    """Local mean over about one pattern period: two box filters (a triangle), which null
    the pattern's fundamental in any orientation to well under 1 %. Linear, so it maps
    ``a·B + b·S`` to ``a·L(B) + b·L(S)`` exactly."""
    once = cv2.blur(x, (box, box), borderType=cv2.BORDER_REFLECT)
    return cv2.blur(once, (box, box), borderType=cv2.BORDER_REFLECT)


def _bin(image: np.ndarray, levels: int, rows: int, cols: int) -> np.ndarray:
    """2×2 means, ``levels`` times, cropped to ``rows × cols`` binned samples.

    Binning keeps every photon (unlike striding) and is linear, so the model
    ``I = a·B + b·S`` holds on the binned images exactly; an exact halving with
    ``INTER_AREA`` is a fast SIMD path in OpenCV.
    """
    f = 1 << levels
    x = image[: rows * f, : cols * f]
    for _ in range(levels):
        x = cv2.resize(x, (x.shape[1] // 2, x.shape[0] // 2), interpolation=cv2.INTER_AREA)
    return x


def _pattern_plan(station) -> _PatternPlan:
    h, w = station.shape
    ps = station.pixel_size_mm or 0.05
    period_px = station.pattern.period_px if station.pattern is not None else 4.0 / ps
    levels = 0
    # bin while the frame holds too many samples, keeping ≥ 6 samples per pattern period
    while h * w / 4 ** levels > PATTERN_MAX_SAMPLES and period_px / 2 ** (levels + 1) >= 6:
        levels += 1
    f = 1 << levels
    block = max(1, int(round(HAZE_REGION_MM / BLOCKS_PER_REGION / ps / f)))
    rows, cols = (h // f // block) * block, (w // f // block) * block
    if rows == 0 or cols == 0:
        raise InputError(f"the frame ({w}×{h} px at {ps} mm/px) is smaller than one haze region")
    box = max(3, int(round(period_px / f)))
    b = np.ascontiguousarray(_bin(station.flat, levels, rows, cols))
    s = np.ascontiguousarray(_bin(station.scatter, levels, rows, cols))
    z = _instrument(b)  # on the binned flat, so it shares no noise with a binned sample
    lb = np.maximum(_lowpass(b, box), 1e-6)
    mb, mz, c = b / lb - 1.0, z / lb - 1.0, s / lb
    nb = (cols // block, rows // block)
    full = tuple(cv2.resize(x.astype(np.float32), nb, interpolation=cv2.INTER_AREA).astype(np.float64)
                 for x in (mz * mb, mb * mb, c * mz * mb, np.ones_like(b)))
    # Binning integer frames rounds each 2×2 mean, which adds a small constant (≈ 1/8 DN per
    # level): a constant looks like scattered light, so it joins the dark offset.
    rng = np.random.default_rng(0)
    probe = rng.integers(0, 200, (256, 256)).astype(np.uint8 if station.bits == 8 else np.uint16)
    rounding = float(_bin(probe, levels, 256 >> levels, 256 >> levels).astype(np.float64).mean()
                     - _bin(probe.astype(np.float32), levels, 256 >> levels, 256 >> levels).mean()) if levels else 0.0
    dark = _bin(station.dark, levels, rows, cols) + np.float32(rounding)
    return _PatternPlan(levels=levels, rows=rows, cols=cols, block=block, box=box,
                        dark=np.ascontiguousarray(dark, dtype=np.float32),
                        mb=mb.astype(np.float32), mz=mz.astype(np.float32), full=full,
                        b=b.astype(np.float32), z=z.astype(np.float32), s=s.astype(np.float32))


def _plan(station):
    key = "haze_plan"
    if key not in station.cache:
        station.cache[key] = _trap_plan(station) if station.backlight == "uniform" else _pattern_plan(station)
    return station.cache[key]


# -- the estimator ----------------------------------------------------------------------------

def _solve_pct(szi, ssi, szb, szs, ssb, sss) -> np.ndarray:
    """Solve the instrumental-variable normal equations of ``I = a·B + b·S``.

    ``[ΣB̃B ΣB̃S; ΣSB ΣSS]·[a; b] = [ΣB̃I; ΣSI]``; returns ``100·b/(a+b)``, the raw haze in %.
    """
    det = szb * sss - szs * ssb
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (szi * sss - ssi * szs) / det
        b = (szb * ssi - ssb * szi) / det
        return 100.0 * b / (a + b)


def _trap_haze(image: np.ndarray, station, lens_mask: np.ndarray | None,
               response: np.ndarray | None = None) -> tuple[list[dict], np.ndarray]:
    """Raw haze (%) per light trap: the region dicts of the traps seen through the lens, and
    the raw array over all traps. ``response`` (one value per trap) brings each trap to what
    the whole field reads (the plates' response map)."""
    plan: _TrapPlan = _plan(station)
    if plan.idx.size == 0:
        return [], np.zeros(0)
    v = image.ravel()[plan.idx].astype(np.float32) * np.float32(plan.inv_scale) - plan.dark
    if lens_mask is None:
        sums = plan.sums
        visible = np.ones(len(plan.starts), bool)
    else:
        m = _take(lens_mask, plan.idx)
        visible = np.logical_and.reduceat(m | ~plan.in_disc, plan.starts)
        mf = m.astype(np.float32)
        sums = tuple(np.add.reduceat((g * mf).astype(np.float64), plan.starts) for g in plan.gram)
        v = v * mf
    szi = np.add.reduceat((v * plan.z).astype(np.float64), plan.starts)
    ssi = np.add.reduceat((v * plan.s).astype(np.float64), plan.starts)
    raw = _solve_pct(szi, ssi, *sums)
    if response is not None:
        raw = raw / response
    regions = []
    for i, (trap, ok) in enumerate(zip(station.traps, visible)):
        if ok and np.isfinite(raw[i]):
            regions.append({"region": f"trap{i}", "x_px": round(trap.x_px, 2), "y_px": round(trap.y_px, 2),
                            "raw_pct": float(raw[i])})
    return regions, raw


def _window_sums(blocks: np.ndarray, k: int) -> np.ndarray:
    """Sums of every k×k window of a block array (valid windows only): (P−k+1, Q−k+1)."""
    c = np.zeros((blocks.shape[0] + 1, blocks.shape[1] + 1))
    c[1:, 1:] = blocks.cumsum(0).cumsum(1)
    return c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]


def _contrast_fit(szi, sbi, sii, sdl, szb, sbb, sczb, cnt):
    """Per region: raw haze (%), residual mean square and the haze noise σ (%).

    The lens image's pattern contrast ``mI`` is fitted as ``q·mB`` (instrument ``mZ``):
    ``q = ΣmZ·mI / ΣmZ·mB``. With ``c = S / L(B)`` averaged with the fit's own weights
    ``mZ·mB``, ``q = (1 − h) / ((1 − h) + h·c)``, so ``h = (1 − q) / (1 − q + q·c)``.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        q = szi / szb
        c = sczb / szb
        h = (1.0 - q) / (1.0 - q + q * c)
        msr = (sii - 2 * q * sbi + q * q * sbb) / cnt
        sigma_q = np.sqrt(np.maximum(msr, 0) / sbb)
        # dh/dq = −c / (1 − q + q·c)²
        sigma_h = sigma_q * c / (1.0 - q + q * c) ** 2
        return 100.0 * h, msr, 100.0 * sigma_h


def _block_scatter_sigma(szi: np.ndarray, szb: np.ndarray, sczb: np.ndarray, n: np.ndarray, k: int) -> np.ndarray:
    """Haze noise σ (%) of each k×k-block region from the scatter of its blocks' own fits.

    A region's slope ``q = ΣmZ·mI / ΣmZ·mB`` is the ``szb``-weighted mean of its blocks'
    slopes. Its variance, estimated from how far each block's ``q_b`` lies from it (the
    cluster-robust, "sandwich" variance, blocks as clusters), holds noise that is correlated
    within a block (texture of τ at about a period, such as mottle, that the per-sample
    residual counts as independent) as well as the camera's noise.
    """
    ws = lambda x: _window_sums(x, k)  # noqa: E731
    sb, sc = ws(szb), ws(sczb)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = ws(szi) / sb
        spread = ws(szi * szi) - 2 * q * ws(szi * szb) + q * q * ws(szb * szb)
        var_q = np.maximum(spread, 0) / (sb * sb) * n / np.maximum(n - 1, 1)
        c = sc / sb
        return 100.0 * np.sqrt(var_q) * c / (1.0 - q + q * c) ** 2


def _expected_msr(station, level: np.ndarray, msr: np.ndarray, where: np.ndarray, pixels: int = 1) -> np.ndarray:
    """Fit residual (mean square of the contrast) that noise alone leaves at mean level
    ``level`` (DN) on samples that are each the mean of ``pixels`` camera pixels: from the
    station's noise model (per pixel, so divided by ``pixels``), else the median residual
    over ``where``."""
    noise = station.noise_model
    if noise is not None:
        # the lens frame's relative noise plus the averaged flat's, which the fit also sees
        return (noise[0] * level + noise[1]) / np.maximum(level, 1e-6) ** 2 * (1 + 1 / station.flat_frames) / pixels
    return np.full(msr.shape, float(np.median(msr[where])) if where.any() else np.inf)


def _pattern_haze(image: np.ndarray, station, mask: np.ndarray | None, lens_mask: np.ndarray | None = None):
    """Central-zone haze, the 8 mm region map and its noise, on the pattern sub-grid.

    The pattern contrast of the lens image (``I / L(I) − 1``, ``L`` a one-period local
    mean) is projected onto the flat's. Dividing by the local mean makes the estimate blind
    to transmittance changes wider than a period (coating runs and voids, tint gradients)
    while haze, which adds light in proportion to the surround, still lowers the contrast.
    Regions are centred on blocks mostly inside ``mask`` (the central zone) and read the
    zone's blocks that they cover, leaving out blocks with sub-period texture. With a
    ``lens_mask`` the local means are taken over the lens alone (for the lens image and the
    flat alike), so the flat's contrast and block sums are recomputed per lens (about 2 ms at
    5 MP); the precomputed ones serve a field-filling haze plate.
    """
    plan: _PatternPlan = _plan(station)
    f = 1 << plan.levels
    v = _bin(image, plan.levels, plan.rows, plan.cols).astype(np.float32)
    v -= plan.dark
    nb = (plan.cols // plan.block, plan.rows // plan.block)
    spb = plan.block ** 2  # samples per block: block means × spb = sums

    def blocks(x):
        return cv2.resize(x, nb, interpolation=cv2.INTER_AREA).astype(np.float64)

    def strided(m):  # the mask on the binned grid: a strided look is enough
        return _strided(m, f, f, plan.rows, plan.cols)

    mz, mb, full = plan.mz, plan.mb, plan.full
    li = None
    if lens_mask is not None:
        # Near the lens edge the one-period local mean would reach the goggle frame: there it
        # is the mean over the lens alone, L(x·m) / L(m), for the lens image and the flat
        # alike, so I = a·B + b·S still maps to the same slope (normalised convolution).
        r = max(1, int(round(LENS_EDGE_GUARD_MM / (station.pixel_size_mm or 0.05) / f)))
        m = cv2.erode(strided(lens_mask), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
        m = m.astype(np.float32)
        lm = _lowpass(m, plan.box)
        if float(lm.min()) < 0.999:
            lm = np.maximum(lm, 1e-3)
            li = _lowpass(v * m, plan.box) / lm
            lb = np.maximum(_lowpass(plan.b * m, plan.box) / lm, 1e-6)
            mb, mz, c = plan.b / lb - 1.0, plan.z / lb - 1.0, plan.s / lb
            full = (blocks(mz * mb), blocks(mb * mb), blocks(c * mz * mb), plan.full[3])
    if li is None:
        li = _lowpass(v, plan.box)
    mi = v / np.maximum(li, 1e-3) - 1.0

    lens_stats = (blocks(mi * mz), blocks(mi * mb), blocks(mi * mi), blocks(li))
    allstats = (*lens_stats, *full)

    def wholly(sub):  # the blocks wholly inside a binned mask
        if sub is None:
            return np.ones(nb[::-1], bool)
        return blocks(sub.astype(np.float32)) >= 0.999

    inside = wholly(strided(mask) if mask is not None else None)
    # blocks mostly in the zone: regions read the central zone (station-model §3), and a
    # region's centre is in the zone when its centre block mostly is
    mostly = (blocks(strided(mask).astype(np.float32)) >= 0.5) if mask is not None else inside
    on_lens = mostly
    k = min(BLOCKS_PER_REGION, nb[0], nb[1])
    # A block whose own fit leaves far more residual than noise holds τ texture finer than a
    # period (mottle, a scratch, a spot) that mimics or masks pattern contrast: it is left
    # out. Judged per block, where haze is constant, so a dull spot's gradient across a
    # region is not mistaken for texture, and a scratch costs its blocks, not its regions.
    _, bmsr, _ = _contrast_fit(*allstats)
    expected = _expected_msr(station, allstats[3] / np.maximum(allstats[-1], 1e-9), bmsr, on_lens, pixels=f * f)
    if on_lens.any() and station.noise_model is not None:
        # a fit misses a little more than noise where the camera's noise is small (many
        # binned pixels): the typical block's excess over the noise model is the floor
        with np.errstate(invalid="ignore", divide="ignore"):
            expected = expected * max(1.0, float(np.nanmedian((bmsr / expected)[on_lens])))
    on_lens = on_lens & (bmsr <= BLOCK_RESIDUAL_LIMIT * expected)
    allstats = tuple(x * on_lens for x in allstats)
    # a region is centred in the zone and reads the zone's blocks it covers (at least
    # MIN_COVER of it): a small central zone, such as one eye of a two-lens goggle, still has
    # regions
    win = [_window_sums(x, k) * spb for x in allstats]
    covered = _window_sums(on_lens.astype(np.float64), k)
    c0 = k // 2
    centred = mostly[c0: c0 + covered.shape[0], c0: c0 + covered.shape[1]]
    valid = centred & (covered >= MIN_COVER * k * k)
    hmap, _, sigma = _contrast_fit(*win)
    sigma = np.fmax(sigma, _block_scatter_sigma(allstats[0] * spb, allstats[4] * spb, allstats[6] * spb, covered, k))
    hmap = np.where(valid, hmap, np.nan)
    # the central value: one fit over every block a valid region covers (else every
    # block inside the mask)
    cover = _window_sums(np.pad(valid.astype(np.float64), k - 1), k) > 0
    use = cover if cover.any() else inside
    if not use.any():
        central = np.nan
    else:
        central = float(_contrast_fit(*(x[use].sum() * spb for x in allstats))[0])
    cell_px = plan.block * f
    origin = ((k * cell_px - 1) / 2, (k * cell_px - 1) / 2)
    return central, hmap, sigma, cell_px, origin


def _worst_of_map(hmap: np.ndarray, sigma: np.ndarray, central: float) -> tuple[float, tuple[int, int]] | None:
    """The worst region, discounted for the noise of a maximum over many noisy windows.

    The window whose haze lies most noise σ above ``WORST_SIGMAS``·σ is chosen; it counts
    only if that still exceeds the central-zone value, and is then reported
    ``WORST_SHRINK_SIGMAS``·σ below its own value (never below the central value). A uniform
    lens reads its central value; a dull spot reads its region.
    """
    ok = np.isfinite(hmap)
    if not ok.any():
        return None
    s = np.nan_to_num(sigma, nan=0.0)
    score = np.where(ok, hmap - WORST_SIGMAS * s, -np.inf)
    i, j = np.unravel_index(np.argmax(score), hmap.shape)
    base = central if np.isfinite(central) else -np.inf
    if score[i, j] <= base:
        return base, (int(i), int(j))
    return max(base, float(hmap[i, j] - WORST_SHRINK_SIGMAS * s[i, j])), (int(i), int(j))


def measure_haze(image: np.ndarray, station, *, lens_mask: np.ndarray | None = None,
                 central_mask: np.ndarray | None = None) -> HazeMeasurement:
    """Measure the haze of a lens image on a calibrated station.

    Parameters
    ----------
    image : (M, N) uint8 or uint16 ndarray
        The lens image (luminance), of the station's size and bit depth.
    station : goggleqc.calibration.Station
        With ``traps`` (uniform backlight) or ``pattern`` (pattern backlight).
    lens_mask : (M, N) ndarray or ReducedMask, optional
        Non-zero (≥ 0.5) on the clear lens. Traps count only when their whole disc is seen
        through the lens; trap surrounds use lens pixels only. None: the whole field (plates).
    central_mask : (M, N) ndarray or ReducedMask, optional
        Non-zero on the central zone; pattern regions must lie wholly inside it. Defaults to
        ``lens_mask``, then to the whole field.

    Returns
    -------
    HazeMeasurement
        ``haze_pct`` is the worst trap or 8 mm region (station-model.md §3), corrected by the
        station's haze-plate fit when it has one.
    """
    station.check_image(image)
    fit = station.haze_fit
    fix = fit.apply if fit is not None else (lambda x: x)
    response = fit.response if fit is not None else None
    if station.backlight == "uniform":
        trap_response = response[0] if response is not None and response.shape == (1, len(station.traps)) else None
        regions, _ = _trap_haze(image, station, lens_mask, trap_response)
        for r in regions:
            r["haze_pct"] = float(fix(r["raw_pct"]))
        if not regions:
            return HazeMeasurement(None, None, "traps", [], None, fit is not None)
        worst = max(regions, key=lambda r: r["raw_pct"])
        return HazeMeasurement(worst["haze_pct"], worst["raw_pct"], "traps", regions, None, fit is not None)
    mask = central_mask if central_mask is not None else lens_mask
    central, hmap, sigma, cell_px, origin = _pattern_haze(image, station, mask, lens_mask)
    if response is not None and response.shape == hmap.shape:
        # each region as the whole field reads; the central value is one fit over the valid
        # regions' blocks, so it takes their mean response
        valid = np.isfinite(hmap)
        if valid.any() and np.isfinite(central):
            central = float(central / np.mean(response[valid]))
        hmap, sigma = hmap / response, sigma / response
    if fit is not None and fit.region_sd > 0:
        # what the plates' regions still scatter by is the station's own: a region stands out
        # of the central zone only beyond it as well as beyond its noise
        sigma = np.sqrt(sigma * sigma + np.float32(fit.region_sd) ** 2)
    regions = []
    central_pct = float(fix(central)) if np.isfinite(central) else None
    if central_pct is not None:
        if mask is not None:
            sy, sx = max(1, mask.shape[0] // 64), max(1, mask.shape[1] // 64)
            ys, xs = np.nonzero(_strided(mask, sy, sx, -(-mask.shape[0] // sy), -(-mask.shape[1] // sx)))
            cy = float(ys.mean() * sy) if ys.size else (mask.shape[0] - 1) / 2
            cx = float(xs.mean() * sx) if xs.size else (mask.shape[1] - 1) / 2
        else:
            cy, cx = (image.shape[0] - 1) / 2, (image.shape[1] - 1) / 2
        regions.append({"region": "central", "x_px": round(cx, 1), "y_px": round(cy, 1),
                        "haze_pct": central_pct, "raw_pct": float(central)})
    map_pct = fix(hmap) if fit is not None else hmap
    worst = _worst_of_map(hmap, sigma, central)
    if worst is None:
        # no 8 mm region fits wholly in the central zone (a small lens, a coarse pattern):
        # the central zone's own value is then the worst that can be measured
        raw_c = float(central) if np.isfinite(central) else None
        return HazeMeasurement(central_pct, raw_c, "pattern", regions, map_pct, fit is not None, central_pct,
                               cell_px, origin)
    raw, (i, j) = worst
    regions.append({"region": "worst", "x_px": round(origin[0] + j * cell_px, 1),
                    "y_px": round(origin[1] + i * cell_px, 1), "haze_pct": float(fix(raw)), "raw_pct": raw})
    return HazeMeasurement(float(fix(raw)), raw, "pattern", regions, map_pct, fit is not None, central_pct,
                           cell_px, origin)


def raw_plate_haze_pct(image: np.ndarray, station) -> float:
    """Raw haze (%) of a haze reference plate filling the field: the estimator of
    :func:`measure_haze` over the whole field (the mean over all traps, or the central value
    over every pattern region). Used by the haze-plate fit."""
    return plate_haze_parts(image, station)[0]


def rounding_error(sigma: float) -> float:
    """Largest bias of a mean of rounded values: ``max_x |E[round(x + n)] − x|`` (DN) for
    Gaussian dither ``n`` of ``sigma`` DN. 0.5 with no dither; under 0.01 from σ ≈ 0.45."""
    if not sigma > 0:
        return 0.5
    x = np.linspace(0.0, 1.0, 65)[:, None]
    k = np.arange(-8, 10)[None, :]
    cdf = np.vectorize(lambda v: 0.5 * (1.0 + math.erf(v / math.sqrt(2.0))))
    p = cdf((k + 0.5 - x) / sigma) - cdf((k - 0.5 - x) / sigma)
    return float(np.max(np.abs((p * k).sum(axis=1) - x[:, 0])))


def trap_quantisation(station, temporal_dn: float | None, frames: int = 1) -> dict | None:
    """How far the camera's last bit limits trap haze: a dict with the raw haze (%) one DN of
    light over a trap's disc reads (``step_pct``, the worst trap), the dither that spreads the
    rounding (``dither_dn``: the frame's temporal noise and the dark's fixed pattern over the
    trap windows) and the haze error it allows (``error_pp``: a lens' bias and the plates'
    may fall on opposite sides, so twice the worst bias of one mean); None without
    traps or a noise estimate. ``temporal_dn`` is one frame's noise at the dark level (DN),
    ``frames`` the number of dark frames averaged into ``station.dark``.

    A trap is dark: its fill is a DN or two above the dark offset. With less than about
    0.4 DN of noise there (an 8-bit camera's read noise is a tenth of a DN, and a uniform
    sensor adds no fixed pattern), every frame rounds the fill the same way, so a mean over
    the whole trap is biased by up to half a DN. Haze plates carry their own share of it into
    the calibration's intercept: a clear lens then reads a few tenths of a percent low, a
    slightly hazy one high (the second renderer's 8-bit station: 0 % read −0.26 %). A
    camera mode with more bits, or more gain, is the cure; this says when it is needed.
    """
    if station.backlight != "uniform" or not station.traps or temporal_dn is None:
        return None
    plan: _TrapPlan = _plan(station)
    base = (station.dark + station.flat).astype(np.float32)
    _, r0 = _trap_haze(base, station, None)
    bumped = base.copy()
    h, w = station.shape
    for trap in station.traps:  # one DN more over each disc, in the disc's own box
        x0, x1 = max(0, int(trap.x_px - trap.r_px)), min(w, int(trap.x_px + trap.r_px) + 2)
        y0, y1 = max(0, int(trap.y_px - trap.r_px)), min(h, int(trap.y_px + trap.r_px) + 2)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        bumped[y0:y1, x0:x1] += np.hypot(xx - trap.x_px, yy - trap.y_px) <= trap.r_px
    _, r1 = _trap_haze(bumped, station, None)
    step = float(np.nanmax(np.abs(r1 - r0)))
    dark = station.dark.ravel()[plan.idx].astype(np.float64)
    # the dark mean's spread over the windows: its fixed pattern plus the frames' averaged noise
    fixed = max(float(dark.var()) - temporal_dn ** 2 / max(frames, 1), 0.0)
    dither = float(np.sqrt(temporal_dn ** 2 + fixed))
    # the plates' bias and a lens' may fall on opposite sides: twice the worst single bias
    return {"step_pct": round(step, 4), "dither_dn": round(dither, 3),
            "error_pp": round(2.0 * step * rounding_error(dither), 3)}


def plate_haze_parts(image: np.ndarray, station) -> tuple[float, np.ndarray]:
    """A field-filling plate's raw haze (%) over the whole field, and per haze region: a
    1 × n row over the light traps, or the grid of 8 mm pattern windows (NaN where a region
    could not be read)."""
    station.check_image(image)
    if station.backlight == "uniform":
        regions, raw = _trap_haze(image, station, None)
        if not regions:
            raise InputError("the station has no light traps, so haze cannot be measured")
        return float(np.mean([r["raw_pct"] for r in regions])), np.asarray(raw, np.float64).reshape(1, -1)
    central, hmap, *_ = _pattern_haze(image, station, None)
    return float(central), np.asarray(hmap, np.float64)


#: plates below this raw haze (%) say too little about a region's response to be used for it
RESPONSE_MIN_PCT = 0.9
#: a region's response is kept within these bounds (a wider departure is a misread region)
RESPONSE_RANGE = (0.67, 1.5)


def fit_response(fields: list[float], parts: list[np.ndarray]) -> np.ndarray | None:
    """The plates' response map (:class:`goggleqc.calibration.station.HazeFit`): per region,
    the least-squares slope of its raw haze against the whole field's over the plates of at
    least :data:`RESPONSE_MIN_PCT` (so the hazier plates, read with the least relative noise,
    weigh most). None with fewer than two such plates or maps of different shapes."""
    use = [(f, p) for f, p in zip(fields, parts) if np.isfinite(f) and f >= RESPONSE_MIN_PCT]
    if len(use) < 2 or len({p.shape for _, p in use}) != 1:
        return None
    f = np.array([u[0] for u in use])[:, None, None]
    p = np.stack([u[1] for u in use])
    ok = np.isfinite(p)
    num = np.where(ok, p * f, 0).sum(0)
    den = np.where(ok, f * f, 0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(ok.sum(0) >= 2, num / den, 1.0)
    return np.clip(np.nan_to_num(r, nan=1.0), *RESPONSE_RANGE).astype(np.float32)


def fit_region_sd(fields: list[float], parts: list[np.ndarray], response: np.ndarray | None) -> float:
    """How far the plates' regions, divided by their response, scatter about the whole
    field's reading (raw %, the rms over the plates of at least :data:`RESPONSE_MIN_PCT` and
    every region read): :attr:`goggleqc.calibration.station.HazeFit.region_sd`. 0 without a
    map."""
    if response is None:
        return 0.0
    use = [(f, p) for f, p in zip(fields, parts)
           if np.isfinite(f) and f >= RESPONSE_MIN_PCT and p.shape == response.shape]
    if not use:
        return 0.0
    res = np.concatenate([(p / response - f).ravel() for f, p in use])
    res = res[np.isfinite(res)]
    return float(np.sqrt(np.mean(res ** 2))) if res.size else 0.0


def haze_contrast_index(image: np.ndarray, lens_mask: np.ndarray | None = None) -> float:
    """A relative contrast index for uncalibrated images: NOT a haze percentage.

    The median local rms contrast (band-passed standard deviation ÷ local mean) of the
    backlight seen through the lens, computed on a reduced image. Haze and fog lower it; it
    depends on the backlight and the camera, so only compare it between images of one setup.

    Parameters
    ----------
    image : (M, N) uint8 or uint16 ndarray
    lens_mask : (M, N) ndarray, optional
        Non-zero on the lens; None uses the whole frame.

    Returns
    -------
    float
        In [0, ~1]; 0 for a featureless field.
    """
    if image.ndim != 2 or image.size == 0:
        raise InputError(f"haze_contrast_index needs a 2-D monochrome image, not shape {image.shape}")
    h, w = image.shape
    f = max(1, min(h, w) // 256)
    small = cv2.resize(image.astype(np.float32), (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    mean = cv2.GaussianBlur(small, (0, 0), 6)
    bp = small - mean
    rms = np.sqrt(np.maximum(cv2.GaussianBlur(bp * bp, (0, 0), 6), 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        local = rms / mean
    sel = mean > 0.02 * max(float(mean.max()), 1e-6)
    if lens_mask is not None:
        m = cv2.resize((lens_mask >= 0.5).astype(np.uint8), small.shape[::-1], interpolation=cv2.INTER_NEAREST)
        sel &= cv2.erode(m, np.ones((5, 5), np.uint8)) > 0
    return float(np.median(local[sel])) if sel.any() else 0.0
