"""Overlays: the lens image with its zones drawn and each defect outlined and labelled.

Drawn with OpenCV on an 8-bit BGR copy of the frame. Colours (BGR) are fixed so a reader
learns them once: lens edge cyan, central-zone edge yellow, scratches red, spots magenta,
coating defects orange, marks that are not flaws of the lens (watermarks, and dust on the defocused target of an uncalibrated photograph; they never fail a lens) white. The verdict and its reasons head the image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

COLOURS = {
    "lens": (255, 255, 0),
    "central": (0, 215, 255),
    "scratch": (40, 40, 255),
    "spot": (255, 60, 255),
    "coating": (0, 140, 255),
    "mark": (240, 240, 240),
    "pass": (60, 200, 60),
    "fail": (40, 40, 255),
    "error": (0, 165, 255),
}
#: width of the thumbnails the HTML report shows, in px
THUMB_WIDTH_PX = 240


def display_bgr(image: np.ndarray) -> np.ndarray:
    """An 8-bit BGR copy of a frame for drawing on.

    Parameters
    ----------
    image : (M, N) or (M, N, 3) uint8 or uint16 ndarray

    Returns
    -------
    (M, N, 3) uint8 ndarray
        16-bit frames are scaled so that the 99.5th percentile of a subsample (the bright
        backlight) maps to 240, whatever the sensor's data bits (10–16).
    """
    if image.dtype != np.uint8:
        white = float(np.percentile(image[::4, ::4], 99.5)) or 1.0
        image = cv2.convertScaleAbs(image, alpha=240.0 / white)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image.copy()


def _fmt(value: float) -> str:
    return f"{value:.2g}" if abs(value) < 10 else f"{value:.0f}"


def defect_label(kind: str, defect: dict[str, Any]) -> str:
    """Short ASCII label for a defect, e.g. ``scratch 4.2mm``, ``void 12mm2``, ``dig 0.31mm``.

    Millimetres when the record has them, else pixels (OpenCV's Hershey fonts are ASCII only).
    """
    if kind == "scratch":
        name, fields = "scratch", (("length_mm", "mm"), ("length_px", "px"))
    elif kind in ("spot", "mark"):
        name, fields = defect.get("kind") or "spot", (("diameter_mm", "mm"), ("diameter_px", "px"))
    else:
        name, fields = defect.get("kind") or "coating", (("area_mm2", "mm2"), ("area_px", "px2"))
    for field, unit in fields:
        if defect.get(field) is not None:
            return f"{name} {_fmt(float(defect[field]))}{unit}"
    return name


def _contours(value: Any) -> list[np.ndarray]:
    out = []
    for contour in value or []:
        pts = np.asarray(contour, dtype=np.float64).reshape(-1, 2)
        if len(pts) >= 2 and np.isfinite(pts).all():
            out.append(np.round(pts).astype(np.int32).reshape(-1, 1, 2))
    return out


def _text(canvas: np.ndarray, text: str, org: tuple[int, int], colour, scale: float, thick: int) -> None:
    """Text on a dark box so it reads on any backlight."""
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    x, y = org
    H, W = canvas.shape[:2]
    x = int(np.clip(x, 0, max(0, W - w - 2)))
    y = int(np.clip(y, h + 2, H - base - 1))
    cv2.rectangle(canvas, (x - 1, y - h - 2), (x + w + 1, y + base), (0, 0, 0), cv2.FILLED)
    cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)


def draw_overlay(image: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """Draw zones, defects and the verdict of one record on its image.

    Parameters
    ----------
    image : (M, N) or (M, N, 3) uint8 or uint16 ndarray
        The inspected frame.
    record : dict
        The result record (``Result.to_dict()`` plus batch fields). ``extra`` may carry
        ``lens_contours_px`` and ``central_contours_px``: lists of ``[[x, y], ...]``.

    Returns
    -------
    (M, N, 3) uint8 ndarray
        BGR overlay.
    """
    canvas = display_bgr(image)
    H, W = canvas.shape[:2]
    thick = max(1, round(max(H, W) / 900))
    scale = max(0.35, max(H, W) / 2200)
    extra = record.get("extra") or {}
    cv2.polylines(canvas, _contours(extra.get("lens_contours_px")), True, COLOURS["lens"], thick, cv2.LINE_AA)
    cv2.polylines(canvas, _contours(extra.get("central_contours_px")), True, COLOURS["central"], thick, cv2.LINE_AA)
    pad = 2 + 2 * thick
    for list_name, kind in (("marks", "mark"), ("coating", "coating"), ("scratches", "scratch"), ("spots", "spot")):
        for defect in record.get(list_name) or []:
            bbox = defect.get("bbox_px")
            if not bbox or len(bbox) != 4:
                continue
            x0, y0, x1, y1 = (int(v) for v in bbox)
            colour = COLOURS[kind]
            cv2.rectangle(canvas, (x0 - pad, y0 - pad), (x1 - 1 + pad, y1 - 1 + pad), colour, thick, cv2.LINE_AA)
            _text(canvas, defect_label(kind, defect), (x0 - pad, y0 - pad - 3), colour, scale, max(1, thick - 1))
    verdict = str(record.get("verdict", "?"))
    codes = ", ".join(dict.fromkeys(r["code"] for r in record.get("reasons") or []))
    head = f"{verdict.upper()}" + (f": {codes}" if codes else "")
    _text(canvas, head, (4, 4 + int(28 * scale)), COLOURS.get(verdict, (255, 255, 255)), scale * 1.3, thick + 1)
    return canvas


def thumbnail(bgr: np.ndarray, width_px: int = THUMB_WIDTH_PX) -> np.ndarray:
    """A ``width_px`` wide copy (INTER_AREA keeps thin outlines visible when shrinking)."""
    h, w = bgr.shape[:2]
    if w <= width_px:
        return bgr
    return cv2.resize(bgr, (width_px, max(1, round(h * width_px / w))), interpolation=cv2.INTER_AREA)


def write_png(path: Path, bgr: np.ndarray) -> None:
    """Encode and write a PNG (or JPEG by suffix) through numpy, so non-ASCII paths work."""
    params = [cv2.IMWRITE_JPEG_QUALITY, 85] if path.suffix.lower() in (".jpg", ".jpeg") else \
        [cv2.IMWRITE_PNG_COMPRESSION, 1]  # fast: overlays are written inside the batch loop
    ok, buf = cv2.imencode(path.suffix, bgr, params)
    if not ok:
        raise OSError(f"OpenCV could not encode {path.name}")
    buf.tofile(str(path))
