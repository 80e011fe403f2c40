"""Rasterising lens-plane shapes with exact truth: lens outline, zones, curves and blobs.

Shapes are drawn on a supersampled patch and reduced with area averaging, so each pixel
holds the fraction of its area the shape covers; lengths and areas are computed from the
analytic shape, never from the pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

SUPERSAMPLE = 4
_SHIFT = 4  # fractional bits for OpenCV drawing


def _fixed(points: np.ndarray, scale: float) -> np.ndarray:
    return np.round(points * scale * (1 << _SHIFT)).astype(np.int32)


def fill_polygons(shape: tuple[int, int], polygons: list[np.ndarray], value: float = 1.0) -> np.ndarray:
    """Area coverage (float32 in [0, value]) of filled polygons given in pixel coordinates."""
    h, w = shape
    canvas = np.zeros((h, w), np.uint8)
    pts = [_fixed(p + 0.5, 1.0).reshape(-1, 1, 2) for p in polygons]  # pixel centres at integers
    cv2.fillPoly(canvas, pts, 255, lineType=cv2.LINE_AA, shift=_SHIFT)
    return canvas.astype(np.float32) * (value / 255.0)


def patch_coverage(bbox: tuple[int, int, int, int], draw) -> np.ndarray:
    """Coverage of a shape inside ``bbox = (x0, y0, x1, y1)`` (exclusive ends).

    ``draw(canvas, to_fixed)`` draws in white on a ``SUPERSAMPLE``× uint8 canvas;
    ``to_fixed(points_px)`` maps image pixel coordinates to the canvas' fixed-point ints
    (pass ``shift=_SHIFT`` to OpenCV).
    """
    x0, y0, x1, y1 = bbox
    s = SUPERSAMPLE
    canvas = np.zeros(((y1 - y0) * s, (x1 - x0) * s), np.uint8)

    def to_fixed(points: np.ndarray) -> np.ndarray:
        return _fixed(np.asarray(points, np.float64) - [x0 - 0.5, y0 - 0.5], s)

    draw(canvas, to_fixed)
    small = cv2.resize(canvas, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255.0


def polyline_length(points: np.ndarray) -> float:
    """Length of a polyline (N, 2) along its segments."""
    return float(np.hypot(*np.diff(points, axis=0).T).sum())


def clip_bbox(bbox, shape) -> tuple[int, int, int, int]:
    h, w = shape
    x0, y0, x1, y1 = bbox
    return max(0, int(x0)), max(0, int(y0)), min(w, int(x1)), min(h, int(y1))


def footprint_bbox(coverage: np.ndarray, origin: tuple[int, int], threshold: float = 0.1) -> list[int]:
    """``[x0, y0, x1, y1]`` (exclusive ends) of the pixels a shape covers above ``threshold``."""
    ys, xs = np.nonzero(coverage > threshold)
    if len(xs) == 0:
        return [origin[0], origin[1], origin[0], origin[1]]
    return [int(origin[0] + xs.min()), int(origin[1] + ys.min()),
            int(origin[0] + xs.max() + 1), int(origin[1] + ys.max() + 1)]


def superellipse(cx: float, cy: float, a: float, b: float, n: float, angle_rad: float = 0.0,
                 points: int = 720) -> np.ndarray:
    """Outline (points, 2) of ``|x/a|^n + |y/b|^n = 1``, rotated and centred, in input units."""
    t = np.linspace(0, 2 * np.pi, points, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    x = a * np.sign(c) * np.abs(c) ** (2 / n)
    y = b * np.sign(s) * np.abs(s) ** (2 / n)
    ca, sa = np.cos(angle_rad), np.sin(angle_rad)
    return np.stack([cx + ca * x - sa * y, cy + sa * x + ca * y], axis=1)


def polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
