"""Render a lens through a simulated station, with its truth record.

Image formation follows station-model.md §2 exactly:

    I = dark + g · [ τ · ((1 − h)·L + h·(L ⊛ K)) ] ⊛ p + noise

where the flat is ``dark + L ⊛ p``. The truth record uses the product's result schema
(:mod:`goggleqc.inspect.results`) plus a ``truth`` block of truth-only fields.
"""

from __future__ import annotations

from dataclasses import asdict, replace

import cv2
import numpy as np

from goggleqc.inspect import results as R
from goggleqc.inspect.verdict import decide
from goggleqc.spec import Spec
from goggleqc.synth.geometry import clip_bbox, patch_coverage, polygon_area, polyline_length
from goggleqc.synth.lens import (CoatingDefect, DullSpot, LensMasks, LensSpec, Scratch, Spot, Stain, Watermark,
                                render_masks)
from goggleqc.synth.station import SimStation

#: region size (mm) over which the truth's worst haze is averaged on pattern backlights:
#: regions centred in the central zone, averaged over the lens they cover (at least half)
HAZE_REGION_MM = 8.0


def _dense(points: np.ndarray, step: float = 0.5) -> np.ndarray:
    """Resample a polyline at ≤ ``step`` px spacing (keeps every vertex)."""
    out = [points[:1]]
    for a, b in zip(points[:-1], points[1:]):
        n = max(1, int(np.ceil(np.hypot(*(b - a)) / step)))
        t = np.arange(1, n + 1)[:, None] / n
        out.append(a + t * (b - a))
    return np.concatenate(out)


def _dashes(dense: np.ndarray, on: float, off: float) -> list[np.ndarray]:
    """Split a densely sampled polyline into dashes of ``on`` px separated by ``off`` px."""
    s = np.concatenate([[0], np.cumsum(np.hypot(*np.diff(dense, axis=0).T))])
    keep = np.mod(s, on + off) < on
    pieces, start = [], None
    for i, k in enumerate(keep):
        if k and start is None:
            start = i
        if (not k or i == len(keep) - 1) and start is not None:
            end = i if k else i - 1
            if end > start:
                pieces.append(dense[start:end + 1])
            start = None
    return pieces


def _apply(target: np.ndarray, bbox, patch: np.ndarray, op: str) -> None:
    x0, y0, x1, y1 = bbox
    if op == "mul":
        target[y0:y1, x0:x1] *= patch
    else:
        target[y0:y1, x0:x1] += patch


def _backlit(masks: LensMasks, bbox, cover: np.ndarray) -> float:
    """Fraction of a defect's footprint seen against bright backlight (not over a trap)."""
    if masks.lit is None:
        return 1.0
    x0, y0, x1, y1 = bbox
    region = masks.lit[y0:y1, x0:x1][cover > 0.05]
    return float(region.mean()) if region.size else 1.0


def _zone(inside_mm: np.ndarray, bbox, cover: np.ndarray, marginal_mm: float) -> str:
    return "central" if _central_depth(inside_mm, bbox, cover, marginal_mm) >= 0 else "marginal"


def _central_depth(inside_mm: np.ndarray, bbox, cover: np.ndarray, marginal_mm: float) -> float:
    """How far (mm) the defect reaches into the central zone; negative: how far it stays out."""
    x0, y0, x1, y1 = bbox
    region = inside_mm[y0:y1, x0:x1][cover > 0.05]
    return float(region.max()) - marginal_mm if region.size else -marginal_mm


def _scratch(sc: Scratch, tau, haze, masks: LensMasks, ps: float, marginal: float):
    pts = np.asarray(sc.points_px, np.float64)
    pad = sc.width_px / 2 + 3
    bbox = clip_bbox((np.floor(pts[:, 0].min() - pad), np.floor(pts[:, 1].min() - pad),
                      np.ceil(pts[:, 0].max() + pad) + 1, np.ceil(pts[:, 1].max() + pad) + 1), tau.shape)
    dense = _dense(pts)
    pieces = _dashes(dense, *sc.dash_px) if sc.dash_px else [dense]
    thick_ss = max(1, int(round(sc.width_px * 4)))

    def draw(canvas, fx):
        for piece in pieces:
            cv2.polylines(canvas, [fx(piece).reshape(-1, 1, 2)], False, 255, thick_ss, cv2.LINE_8, 4)

    cover = patch_coverage(bbox, draw)
    cover *= min(1.0, sc.width_px * 4 / thick_ss)  # sub-pixel widths: thinner than one canvas pixel
    _apply(tau, bbox, 1 - sc.contrast * cover, "mul")
    _apply(haze, bbox, sc.scatter * sc.contrast * cover, "add")
    length_px = polyline_length(pts)
    half = sc.width_px / 2
    tb = [int(np.floor(pts[:, 0].min() - half)), int(np.floor(pts[:, 1].min() - half)),
          int(np.ceil(pts[:, 0].max() + half)) + 1, int(np.ceil(pts[:, 1].max() + half)) + 1]
    # A pixel sees a sub-pixel scratch diluted by its width: the image darkens by c·w, not c.
    return R.Scratch(length_px=length_px, width_px=sc.width_px, contrast=sc.contrast * min(1.0, sc.width_px),
                     zone=_zone(masks.inside_mm, bbox, cover, marginal), bbox_px=tb,
                     length_mm=length_px * ps, width_mm=sc.width_px * ps), \
        {"shape": sc.shape, "points_px": pts.round(2).tolist(), "broken": sc.dash_px is not None,
         "material_contrast": sc.contrast, "backlit": _backlit(masks, bbox, cover),
         "central_depth_mm": _central_depth(masks.inside_mm, bbox, cover, marginal)}


def _spot(sp: Spot, tau, haze, masks: LensMasks, ps: float, marginal: float):
    r = sp.diameter_px / 2
    pad = r + 3
    bbox = clip_bbox((np.floor(sp.x_px - pad), np.floor(sp.y_px - pad),
                      np.ceil(sp.x_px + pad) + 1, np.ceil(sp.y_px + pad) + 1), tau.shape)

    def disc(radius):
        def draw(canvas, fx):
            centre = fx(np.array([[sp.x_px, sp.y_px]]))[0]
            cv2.circle(canvas, tuple(int(v) for v in centre), int(round(radius * 4 * 16)), 255, -1, cv2.LINE_8, 4)
        return patch_coverage(bbox, draw)

    outer = disc(r)
    if sp.kind == "dust":
        outer = cv2.GaussianBlur(outer, (0, 0), max(0.3, 0.15 * sp.diameter_px))
        factor = 1 - sp.contrast * outer
    elif sp.kind == "bubble":
        inner = disc(0.6 * r)
        factor = 1 - sp.contrast * (outer - inner) + 0.3 * sp.contrast * inner
    else:  # inclusion, dig
        factor = 1 - sp.contrast * outer
    _apply(tau, bbox, factor, "mul")
    if sp.kind in ("dig", "bubble"):
        _apply(haze, bbox, 0.3 * sp.contrast * outer, "add")
    tb = [int(np.floor(sp.x_px - r)), int(np.floor(sp.y_px - r)), int(np.ceil(sp.x_px + r)) + 1, int(np.ceil(sp.y_px + r)) + 1]
    return R.Spot(diameter_px=sp.diameter_px, contrast=sp.contrast, zone=_zone(masks.inside_mm, bbox, outer, marginal),
                  bbox_px=tb, diameter_mm=sp.diameter_px * ps, kind=sp.kind), {"backlit": _backlit(masks, bbox, outer),
                                                        "central_depth_mm": _central_depth(masks.inside_mm, bbox, outer, marginal)}


def _coating(cd: CoatingDefect, tau, haze, masks: LensMasks, ps: float, marginal: float):
    poly = np.asarray(cd.outline_px, np.float64)
    pad = 3 * cd.edge_px + 3
    bbox = clip_bbox((np.floor(poly[:, 0].min() - pad), np.floor(poly[:, 1].min() - pad),
                      np.ceil(poly[:, 0].max() + pad) + 1, np.ceil(poly[:, 1].max() + pad) + 1), tau.shape)

    def draw(canvas, fx):
        cv2.fillPoly(canvas, [fx(poly).reshape(-1, 1, 2)], 255, cv2.LINE_8, 4)

    cover = patch_coverage(bbox, draw)
    profile = cv2.GaussianBlur(cover, (0, 0), cd.edge_px) if cd.edge_px > 0 else cover
    if cd.kind == "mottle":
        rng = np.random.default_rng(cd.seed)
        tex = cv2.GaussianBlur(rng.standard_normal(profile.shape).astype(np.float32), (0, 0), cd.grain_px)
        tex /= max(float(tex[cover > 0.5].std()) if (cover > 0.5).any() else float(tex.std()), 1e-6)
        factor = 1 - cd.contrast * tex * profile
    else:
        factor = 1 - cd.contrast * profile
    _apply(tau, bbox, factor, "mul")
    area_px = polygon_area(poly)
    tb = [int(np.floor(poly[:, 0].min())), int(np.floor(poly[:, 1].min())),
          int(np.ceil(poly[:, 0].max())) + 1, int(np.ceil(poly[:, 1].max())) + 1]
    return R.CoatingDefect(kind=cd.kind, area_px=area_px, contrast=cd.contrast,
                           zone=_zone(masks.inside_mm, bbox, cover, marginal), bbox_px=tb,
                           area_mm2=area_px * ps * ps), {"backlit": _backlit(masks, bbox, cover),
                                                         "central_depth_mm": _central_depth(masks.inside_mm, bbox, cover, marginal)}


def _outline_bbox(poly: np.ndarray, pad: float, shape, grow: float = 0.0) -> tuple[tuple[int, int, int, int], list[int]]:
    """Drawing bbox (padded by ``pad`` px, clipped) and truth bbox (the outline's extent
    grown by ``grow`` px)."""
    bbox = clip_bbox((np.floor(poly[:, 0].min() - pad), np.floor(poly[:, 1].min() - pad),
                      np.ceil(poly[:, 0].max() + pad) + 1, np.ceil(poly[:, 1].max() + pad) + 1), shape)
    tb = [int(np.floor(poly[:, 0].min() - grow)), int(np.floor(poly[:, 1].min() - grow)),
          int(np.ceil(poly[:, 0].max() + grow)) + 1, int(np.ceil(poly[:, 1].max() + grow)) + 1]
    return bbox, tb


def _rim_piece(poly: np.ndarray, span: tuple[float, float]) -> tuple[np.ndarray, bool]:
    """The part of a closed outline from fraction ``span[0]`` to ``span[1]`` of its length,
    densely sampled, and whether it is the whole closed ring."""
    start, end = span
    dense = _dense(np.concatenate([poly, poly[:1]]))
    if end - start >= 1.0:
        return dense, True
    s = np.concatenate([[0], np.cumsum(np.hypot(*np.diff(dense, axis=0).T))])
    u = s / s[-1]
    k = int(np.searchsorted(u, start % 1.0))
    rolled = np.concatenate([dense[k:-1], dense[:k + 1]])  # dense[-1] repeats dense[0]
    s = np.concatenate([[0], np.cumsum(np.hypot(*np.diff(rolled, axis=0).T))])
    return rolled[s <= (end - start) * s[-1]], False


def _watermark(wm: Watermark, tau, haze, masks: LensMasks, ps: float, marginal: float) -> dict:
    poly = np.asarray(wm.outline_px, np.float64)
    bbox, tb = _outline_bbox(poly, wm.rim_px / 2 + 3, tau.shape, grow=wm.rim_px / 2)
    rim, closed = _rim_piece(poly, wm.rim_span)
    thick_ss = max(1, int(round(wm.rim_px * 4)))

    def draw_rim(canvas, fx):
        cv2.polylines(canvas, [fx(rim).reshape(-1, 1, 2)], closed, 255, thick_ss, cv2.LINE_8, 4)

    def draw_inside(canvas, fx):
        cv2.fillPoly(canvas, [fx(poly).reshape(-1, 1, 2)], 255, cv2.LINE_8, 4)

    rim_cover = patch_coverage(bbox, draw_rim) * min(1.0, wm.rim_px * 4 / thick_ss)
    inside = patch_coverage(bbox, draw_inside)
    if wm.rim_variation > 0:
        # an uneven deposit: the rim's strength wanders smoothly with the angle round the drop
        rng = np.random.default_rng(wm.seed)
        centre = poly.mean(0)
        x0, y0, x1, y1 = bbox
        yy, xx = np.mgrid[y0:y1, x0:x1]
        theta = np.arctan2(yy - centre[1], xx - centre[0])
        wave = sum(rng.uniform(0.3, 1.0) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (1, 2, 3, 5))
        wave = (wave - wave.min()) / max(float(np.ptp(wave)), 1e-6)
        rim_cover = rim_cover * (1 - wm.rim_variation * wave).astype(np.float32)
    _apply(tau, bbox, (1 - wm.rim_contrast * rim_cover) * (1 - wm.interior_contrast * inside), "mul")
    _apply(haze, bbox, wm.rim_haze * rim_cover + wm.interior_haze * inside, "add")
    area_px = polygon_area(poly)
    cover = np.maximum(rim_cover, inside)
    d_px = 2 * np.sqrt(area_px / np.pi)
    return {"kind": "watermark", "x_px": round(float(poly[:, 0].mean()), 2), "y_px": round(float(poly[:, 1].mean()), 2),
            "diameter_px": float(d_px), "diameter_mm": float(d_px * ps), "rim_width_mm": wm.rim_px * ps,
            "rim_contrast": wm.rim_contrast, "rim_haze": wm.rim_haze, "interior_contrast": wm.interior_contrast,
            "interior_haze": wm.interior_haze, "partial": not closed, "bbox_px": tb,
            "zone": _zone(masks.inside_mm, bbox, cover, marginal)}


def _stain(st: Stain, tau, haze, masks: LensMasks, ps: float, marginal: float) -> dict:
    poly = np.asarray(st.outline_px, np.float64)
    # the truth bbox reaches one edge σ past the outline, where the soft edge has faded to ~1/6
    bbox, tb = _outline_bbox(poly, 3 * st.edge_px + 3, tau.shape, grow=st.edge_px)

    def draw(canvas, fx):
        cv2.fillPoly(canvas, [fx(poly).reshape(-1, 1, 2)], 255, cv2.LINE_8, 4)

    cover = patch_coverage(bbox, draw)
    profile = cv2.GaussianBlur(cover, (0, 0), st.edge_px) if st.edge_px > 0 else cover
    rng = np.random.default_rng(st.seed)
    size_px = float(np.sqrt(max(polygon_area(poly), 1.0)))
    # a residue is never even: ±30 % strength over a few blotches across the stain
    uneven = cv2.GaussianBlur(rng.standard_normal(profile.shape).astype(np.float32), (0, 0), max(1.0, size_px / 6))
    uneven /= max(float(uneven.std()), 1e-6)
    strength = profile * np.clip(1 + 0.3 * uneven, 0.2, 1.8)
    loss = st.contrast * strength
    if st.ridge_period_px > 0:
        # whorl of ridges round a core, bent by a smooth warp of about a period
        x0, y0, x1, y1 = bbox
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        core = poly.mean(0) + rng.uniform(-0.15, 0.15, 2) * size_px
        stretch = float(rng.uniform(1.2, 1.6))
        warp = cv2.GaussianBlur(rng.standard_normal(profile.shape).astype(np.float32), (0, 0), max(1.0, size_px / 4))
        warp *= st.ridge_period_px / max(float(warp.std()), 1e-6)
        r = np.hypot(xx - core[0], (yy - core[1]) / stretch) + warp
        loss = loss + st.ridge_contrast * profile * np.cos(2 * np.pi * r / st.ridge_period_px)
    _apply(tau, bbox, (1 - loss).astype(np.float32), "mul")
    _apply(haze, bbox, (st.haze * strength).astype(np.float32), "add")
    area_px = polygon_area(poly)
    d_px = 2 * np.sqrt(area_px / np.pi)
    return {"kind": st.kind, "x_px": round(float(poly[:, 0].mean()), 2), "y_px": round(float(poly[:, 1].mean()), 2),
            "diameter_px": float(d_px), "diameter_mm": float(d_px * ps), "area_mm2": float(area_px * ps * ps),
            "contrast": st.contrast, "haze": st.haze, "ridges": st.ridge_period_px > 0, "bbox_px": tb,
            "zone": _zone(masks.inside_mm, bbox, cover, marginal)}


def _nuisance(item, tau, haze, masks: LensMasks, ps: float, marginal: float) -> dict:
    """Render a watermark or stain into τ and h; its truth record (``kind``, centre, size, ``bbox_px``)."""
    if isinstance(item, Watermark):
        return _watermark(item, tau, haze, masks, ps, marginal)
    if isinstance(item, Stain):
        return _stain(item, tau, haze, masks, ps, marginal)
    raise TypeError(f"not a nuisance: {type(item).__name__}")


def _dull(ds: DullSpot, haze: np.ndarray) -> None:
    sigma = ds.diameter_px / 2.355  # the diameter is the FWHM
    r = int(np.ceil(3 * sigma)) + 1
    bbox = clip_bbox((int(ds.x_px) - r, int(ds.y_px) - r, int(ds.x_px) + r + 1, int(ds.y_px) + r + 1), haze.shape)
    x0, y0, x1, y1 = bbox
    yy, xx = np.mgrid[y0:y1, x0:x1]
    _apply(haze, bbox, (ds.haze * np.exp(-((xx - ds.x_px) ** 2 + (yy - ds.y_px) ** 2) / (2 * sigma ** 2))).astype(np.float32), "add")


def lens_fields(station: SimStation, spec: LensSpec, masks: LensMasks | None = None,
                marginal_mm: float = 5.0):
    """Transmittance ``τ`` and haze ``h`` fields of a lens, and the truth of its defects
    (and, under ``nuisances``, of its watermarks and stains)."""
    p = station.params
    ps = p.pixel_size_mm
    masks = masks or render_masks(p, spec.pose)
    if masks.lit is None:
        masks.lit = station.radiance > np.float32(0.25 * np.percentile(station.radiance, 90))
    tau_lens = np.full(station.shape, spec.tau_clear, np.float32)
    haze = np.full(station.shape, spec.haze, np.float32)
    found = {"scratches": [], "spots": [], "coating": [], "nuisances": []}
    extra = {"scratches": [], "spots": [], "coating": []}
    for item in spec.nuisances:
        found["nuisances"].append(_nuisance(item, tau_lens, haze, masks, ps, marginal_mm))
    for key, items, fn in (("coating", spec.coating, _coating), ("scratches", spec.scratches, _scratch),
                           ("spots", spec.spots, _spot)):
        for item in items:
            rec, more = fn(item, tau_lens, haze, masks, ps, marginal_mm)
            found[key].append(rec)
            extra[key].append(more)
    for ds in spec.dull_spots:
        _dull(ds, haze)
    lens, goggle = masks.lens, masks.goggle
    tau = (1 - goggle) + (goggle - lens) * p.product.tau_frame + lens * tau_lens
    return tau.astype(np.float32), (lens * haze).astype(np.float32), tau_lens, found, extra, masks


def _haze_truth(station: SimStation, haze: np.ndarray, masks: LensMasks, marginal_mm: float) -> tuple[float, list[dict]]:
    p = station.params
    ps = p.pixel_size_mm
    central = (masks.lens > 0.999) & (masks.inside_mm >= marginal_mm)
    if p.backlight.kind == "uniform" and p.backlight.traps:
        regions = []
        for i, trap in enumerate(p.backlight.traps):
            cx = trap.x_mm / ps + (p.width - 1) / 2
            cy = trap.y_mm / ps + (p.height - 1) / 2
            yy, xx = np.ogrid[:p.height, :p.width]
            disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= (trap.diameter_mm / ps / 2) ** 2
            if not (masks.lens[disc] > 0.999).all():
                continue  # this trap is not seen through the lens
            regions.append({"region": f"trap{i}", "x_px": round(cx, 2), "y_px": round(cy, 2),
                            "haze_pct": float(haze[disc].mean() * 100)})
        if regions:
            return max(r["haze_pct"] for r in regions), regions
    # the worst 8 mm region centred in the central zone, averaged over the part of the
    # central zone it covers (station-model §3: the worst haze over the central zone)
    k = max(3, int(round(HAZE_REGION_MM / ps)) | 1)
    zone = central.astype(np.float32)
    cover = cv2.blur(zone, (k, k))
    local = cv2.blur(haze * zone, (k, k)) / np.maximum(cover, 1e-6)
    if not central.any():
        return float(haze[masks.lens > 0.5].max() * 100), []
    return float(local[central].max() * 100), []


def render_lens(station: SimStation, spec: LensSpec, rng: np.random.Generator, *, name: str = "lens",
                limits: Spec | None = None) -> tuple[np.ndarray, dict]:
    """Render one lens image and its truth record.

    Parameters
    ----------
    station : SimStation
    spec : LensSpec
        What to render; defect coordinates are image pixels.
    rng : numpy Generator
        Drives the shot and read noise only, so a spec renders the same lens each time.
    name : str
        The image name written into the truth record.
    limits : Spec, optional
        When given, the truth carries the verdict and reasons under these limits.

    Returns
    -------
    image : (M, N) or (M, N, 3) uint8 or uint16 ndarray
    truth : dict
        The result schema of station-model.md §3 plus a ``truth`` block.
    """
    marginal = limits.marginal_width_mm if limits else 5.0
    tau, haze, tau_lens, found, extra, masks = lens_fields(station, spec, marginal_mm=marginal)
    image = station.expose(station.through(tau, haze), rng, spec.gain)
    ps = station.params.pixel_size_mm
    haze_pct, regions = _haze_truth(station, haze, masks, marginal)
    central = (masks.lens > 0.999) & (masks.inside_mm >= marginal)
    trans_pct = float(np.median(tau_lens[central]) * 100) if central.any() else None
    measures = {"haze_pct": haze_pct, "transmittance_pct": trans_pct,
                "scratches": [asdict(s) for s in found["scratches"]],
                "coating": [asdict(c) for c in found["coating"]],
                "spots": [asdict(s) for s in found["spots"]]}
    verdict, reasons, _ = decide(measures, limits) if limits else ("unknown", [], [])
    result = R.Result(image=name, verdict=verdict, reasons=reasons, haze_pct=haze_pct, haze_regions=regions,
                      transmittance_pct=trans_pct, scratches=found["scratches"], coating=found["coating"],
                      spots=found["spots"], pixel_size_mm=ps)
    truth = result.to_dict()
    for key in ("scratches", "spots", "coating"):
        for rec, more in zip(truth[key], extra[key]):
            rec.update(more)
    if found["nuisances"]:
        # not defects: kept out of the result lists, so scoring counts finds on them as false
        truth["nuisances"] = found["nuisances"]
    truth["truth"] = {
        "haze_global_pct": spec.haze * 100,
        "tau_clear": spec.tau_clear,
        "gain": spec.gain,
        "pose": asdict(spec.pose),
        "dull_spots": [asdict(d) for d in spec.dull_spots],
        "lens_area_mm2": float(masks.lens.sum() * ps * ps),
    }
    if spec.nuisances:
        # the haze a wipe would leave: nuisances scatter too, and raise the worst region's haze
        _, clean_haze, *_ = lens_fields(station, replace(spec, nuisances=()), masks=masks, marginal_mm=marginal)
        truth["truth"]["haze_pct_without_nuisances"] = _haze_truth(station, clean_haze, masks, marginal)[0]
    return image, truth


def render_plate(station: SimStation, haze_pct: float, rng: np.random.Generator, *, tau: float = 0.9,
                 gain: float = 1.0) -> np.ndarray:
    """A haze reference plate of certified haze ``haze_pct`` filling the whole field of view."""
    tau_map = np.full(station.shape, tau, np.float32)
    return station.expose(station.through(tau_map, np.float32(haze_pct / 100.0)), rng, gain)


def render_scale_target(station: SimStation, rng: np.random.Generator, *, square_mm: float | None = None,
                        inner: tuple[int, int] = (9, 6), angle_deg: float = 3.0) -> tuple[np.ndarray, dict]:
    """A chessboard on opal glass in the lens plane, for measuring the pixel scale.

    The opal diffuses the backlight completely (h = 1), so the pattern or traps behind it
    vanish and only the chessboard's transmittance remains. Returns the image and its truth:
    the square size, the inner-corner count and the true pixel size.
    """
    p = station.params
    ps = p.pixel_size_mm
    cols, rows = inner
    if square_mm is None:
        square_mm = max(0.5, round(0.6 * min(p.width * ps / (cols + 1), p.height * ps / (rows + 1)) * 2) / 2)
    a = np.deg2rad(angle_deg)
    x = (np.arange(p.width, dtype=np.float32) - (p.width - 1) / 2) * ps
    y = (np.arange(p.height, dtype=np.float32) - (p.height - 1) / 2) * ps
    x, y = x[None, :], y[:, None]
    u = (np.cos(a) * x + np.sin(a) * y) / square_mm + (cols + 1) / 2
    v = (-np.sin(a) * x + np.cos(a) * y) / square_mm + (rows + 1) / 2
    on_board = (u >= 0) & (u < cols + 1) & (v >= 0) & (v < rows + 1)
    white = (np.floor(u).astype(int) + np.floor(v).astype(int)) % 2 == 0
    tau = np.where(on_board, np.where(white, 0.85, 0.05), 0.85).astype(np.float32)
    tau = cv2.GaussianBlur(tau, (0, 0), 0.5)  # print edge quality
    image = station.expose(station.through(tau, np.float32(1.0)), rng)
    truth = {"square_mm": square_mm, "inner_corners": [cols, rows], "pixel_size_mm": ps, "angle_deg": angle_deg}
    return image, truth
