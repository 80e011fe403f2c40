"""A lens to render: its pose, clear transmittance, haze and defects, all with exact truth.

Defect geometry is in image pixel coordinates (x right, y down, pixel centres at integers);
truth converts to millimetres with the station's pixel size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from goggleqc.synth.geometry import fill_polygons, superellipse
from goggleqc.synth.station import Product, StationParams


@dataclass(frozen=True)
class Scratch:
    """A thin line or curve. ``points_px`` is the centreline; ``dash_px`` = (on, off) for a
    broken scratch. ``contrast`` is the fractional drop of τ in its core; ``scatter`` the
    haze of its core, which makes it bright where the backlight behind is dark."""

    points_px: tuple[tuple[float, float], ...]
    width_px: float
    contrast: float
    shape: str = "straight"
    dash_px: tuple[float, float] | None = None
    scatter: float = 0.3


@dataclass(frozen=True)
class Spot:
    """A small blob: ``inclusion``, ``dig``, ``dust`` or ``bubble`` (dark rim, brighter core)."""

    x_px: float
    y_px: float
    diameter_px: float
    contrast: float
    kind: str = "inclusion"


@dataclass(frozen=True)
class CoatingDefect:
    """An anti-fog coating flaw: ``run``, ``void`` or ``mottle``, inside ``outline_px``.

    ``contrast`` is the fractional change of τ (positive = darker); for mottle it is the rms
    of the orange-peel texture, whose grain is ``grain_px``."""

    kind: str
    outline_px: tuple[tuple[float, float], ...]
    contrast: float
    edge_px: float = 2.0
    grain_px: float = 8.0
    seed: int = 0


@dataclass(frozen=True)
class DullSpot:
    """A local patch of extra haze (a fraction, not %), Gaussian-edged disc."""

    x_px: float
    y_px: float
    diameter_px: float
    haze: float


@dataclass(frozen=True)
class Watermark:
    """A dried water drop: a "coffee ring" of mineral deposit along ``outline_px``, a nuisance
    (it wipes off), not a product defect.

    The rim, ``rim_px`` wide, lowers τ by ``rim_contrast`` (a fraction) and adds ``rim_haze``;
    the interior is faintly lower (``interior_contrast``) and faintly hazy (``interior_haze``).
    ``rim_span`` = (start, end), fractions of the outline, is where the rim lies: (0, 1) is a
    whole ring, less a partial one. The deposit is uneven: the rim's contrast varies along it
    between ``(1 − rim_variation)·rim_contrast`` and ``rim_contrast``, seeded by ``seed``.
    """

    outline_px: tuple[tuple[float, float], ...]
    rim_px: float
    rim_contrast: float
    rim_haze: float = 0.0
    interior_contrast: float = 0.0
    interior_haze: float = 0.0
    rim_span: tuple[float, float] = (0.0, 1.0)
    rim_variation: float = 0.0
    seed: int = 0
    kind: str = "watermark"


@dataclass(frozen=True)
class Stain:
    """A smear, fingerprint or residue inside ``outline_px``: a soft-edged (``edge_px``, the
    Gaussian σ) patch that lowers τ by ``contrast`` and adds ``haze`` (fractions), a nuisance
    rather than a product defect. ``ridge_period_px`` > 0 adds a fingerprint's ridges, whirls
    of that period modulating τ by ± ``ridge_contrast``; ``seed`` drives the unevenness."""

    kind: str
    outline_px: tuple[tuple[float, float], ...]
    contrast: float
    haze: float
    edge_px: float = 2.0
    ridge_period_px: float = 0.0
    ridge_contrast: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class Pose:
    dx_mm: float = 0.0
    dy_mm: float = 0.0
    angle_deg: float = 0.0


@dataclass(frozen=True)
class LensSpec:
    pose: Pose = field(default_factory=Pose)
    tau_clear: float = 0.9
    haze: float = 0.005
    gain: float = 1.0
    dull_spots: tuple[DullSpot, ...] = ()
    scratches: tuple[Scratch, ...] = ()
    spots: tuple[Spot, ...] = ()
    coating: tuple[CoatingDefect, ...] = ()
    #: watermarks and stains: marks a wipe removes, rendered but never defects
    nuisances: tuple[Watermark | Stain, ...] = ()


@dataclass
class LensMasks:
    lens: np.ndarray      # area coverage of the clear lens, float32 in [0, 1]
    goggle: np.ndarray    # coverage of lens plus frame
    inside_mm: np.ndarray  # distance from the lens edge, mm, inside the lens (0 outside)
    lit: np.ndarray | None = None  # where the backlight is bright enough to see τ through


def _to_pixels(points_mm: np.ndarray, params: StationParams, pose: Pose) -> np.ndarray:
    a = np.deg2rad(pose.angle_deg)
    ca, sa = np.cos(a), np.sin(a)
    x = ca * points_mm[:, 0] - sa * points_mm[:, 1] + pose.dx_mm
    y = sa * points_mm[:, 0] + ca * points_mm[:, 1] + pose.dy_mm
    ps = params.pixel_size_mm
    return np.stack([x / ps + (params.width - 1) / 2, y / ps + (params.height - 1) / 2], axis=1)


def lens_outlines_mm(product: Product) -> tuple[list[np.ndarray], np.ndarray]:
    """Lens outlines and the nose cut-out (both in mm, lens-centred, before the pose)."""
    a, b, n = product.half_width_mm, product.half_height_mm, product.exponent
    if product.kind == "visor":
        lenses = [superellipse(0, 0, a, b, n)]
        nose_y = b
    elif product.kind == "two_eye":
        off = a + product.eye_gap_mm / 2
        lenses = [superellipse(-off, 0, a, b, n), superellipse(off, 0, a, b, n)]
        nose_y = b
    else:
        raise ValueError(f"unknown product kind {product.kind!r}")
    nose = superellipse(0, nose_y, product.nose_width_mm / 2, product.nose_height_mm, 2.0)
    return lenses, nose


def render_masks(params: StationParams, pose: Pose) -> LensMasks:
    """Lens and goggle coverage for one pose, and the distance from the lens edge in mm."""
    shape = (params.height, params.width)
    ps = params.pixel_size_mm
    product = params.product
    outlines, nose = lens_outlines_mm(product)
    lens = fill_polygons(shape, [_to_pixels(o, params, pose) for o in outlines])
    lens *= 1.0 - fill_polygons(shape, [_to_pixels(nose, params, pose)])
    binary = (lens >= 0.5).astype(np.uint8)
    outside_px = cv2.distanceTransform(1 - binary, cv2.DIST_L2, 5)
    goggle = np.clip(product.frame_mm / ps - outside_px + 0.5, 0, 1).astype(np.float32)
    if product.kind == "two_eye":
        a, b = product.half_width_mm, product.half_height_mm
        g = product.eye_gap_mm
        bridge = np.array([[-g / 2 - 0.3 * a, -0.8 * b], [g / 2 + 0.3 * a, -0.8 * b],
                           [g / 2 + 0.3 * a, 0.2 * b], [-g / 2 - 0.3 * a, 0.2 * b]])
        goggle = np.maximum(goggle, fill_polygons(shape, [_to_pixels(bridge, params, pose)]))
    goggle = np.maximum(goggle, lens)
    inside_mm = cv2.distanceTransform(binary, cv2.DIST_L2, 5) * np.float32(ps)
    return LensMasks(lens=lens, goggle=goggle, inside_mm=inside_mm)
