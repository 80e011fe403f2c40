"""The pixel scale from an image of a chessboard of known square size.

Inner corners are found with ``cv2.findChessboardCornersSB`` (falling back to
``cv2.findChessboardCorners`` + ``cv2.cornerSubPix``), then a similarity transform
(rotation, one scale, translation; a mirrored board is allowed) is fitted from board
millimetres to pixels by least squares. The pixel size is ``1 / scale`` and the rms corner
residual of the fit is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from goggleqc.errors import CalibrationError


@dataclass(frozen=True)
class ScaleFit:
    """Result of a chessboard scale measurement."""

    pixel_size_mm: float
    residual_px: float
    corners: int
    angle_deg: float
    method: str


def _to_8bit(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, (0.5, 99.5))
    scaled = (image.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1e-6))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _similarity(obj: np.ndarray, img: np.ndarray) -> tuple[float, float, float, np.ndarray]:
    """Least-squares ``img ≈ s·R·obj + t``; returns (s, rms residual px, angle deg, residuals)."""
    mo, mi = obj.mean(0), img.mean(0)
    a, b = obj - mo, img - mi
    u, sv, vt = np.linalg.svd(b.T @ a)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    s = float((sv * np.diag(d)).sum() / (a ** 2).sum())
    resid = np.sqrt(((b - s * a @ rot.T) ** 2).sum(1))
    return s, float(np.sqrt((resid ** 2).mean())), float(np.degrees(np.arctan2(rot[1, 0], rot[0, 0]))), resid


def measure_pixel_size(image: np.ndarray, square_mm: float, board: tuple[int, int] = (9, 6),
                       name: str = "scale target") -> ScaleFit:
    """Measure mm per pixel from a chessboard image.

    Parameters
    ----------
    image : (M, N) uint8 or uint16 ndarray
        The chessboard in the lens plane.
    square_mm : float
        Side of one printed square, mm.
    board : (int, int)
        Inner corners (columns, rows), e.g. (9, 6) for a 10 × 7 square board.
    name : str
        Used in error messages.
    """
    if not square_mm > 0:
        raise CalibrationError(f"--square-mm must be a positive length in mm, not {square_mm}")
    gray = _to_8bit(image)
    pattern = (int(board[0]), int(board[1]))
    flags = cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_EXHAUSTIVE | cv2.CALIB_CB_ACCURACY
    found, corners = cv2.findChessboardCornersSB(gray, pattern, flags=flags)
    method = "findChessboardCornersSB"
    if not found:
        found, corners = cv2.findChessboardCorners(gray, pattern, flags=cv2.CALIB_CB_ADAPTIVE_THRESH |
                                                   cv2.CALIB_CB_NORMALIZE_IMAGE)
        method = "findChessboardCorners+cornerSubPix"
        if found:
            corners = cv2.cornerSubPix(gray, corners, (5, 5), (-1, -1),
                                       (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 1e-3))
    if not found:
        raise CalibrationError(f"{name}: no {pattern[0]}×{pattern[1]} inner-corner chessboard found; check --board "
                               "(inner corners, columns x rows), the focus and that the whole board is in view")
    pts = corners.reshape(-1, 2).astype(np.float64)
    cols, rows = pattern
    grid = np.stack(np.meshgrid(np.arange(cols), np.arange(rows)), -1).reshape(-1, 2).astype(np.float64) * square_mm
    s, resid, angle, each = _similarity(grid, pts)
    # on a poor fit, corners caught on dust or a print flaw are dropped (at most a tenth)
    keep = each <= max(3.0 * float(np.median(each)), 0.5)
    if resid > 0.5 and not keep.all() and keep.sum() >= 0.9 * len(pts):
        s, resid, angle, _ = _similarity(grid[keep], pts[keep])
        pts = pts[keep]
    if resid > 1.0:
        raise CalibrationError(f"{name}: the chessboard corners fit a flat square grid badly (rms {resid:.2f} px); "
                               "is the board flat, square-printed and in the lens plane?")
    return ScaleFit(pixel_size_mm=1.0 / s, residual_px=resid, corners=len(pts), angle_deg=angle, method=method)
