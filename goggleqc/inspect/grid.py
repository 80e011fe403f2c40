"""Reduced grids: block means of a frame, shared by every analysis that works coarser.

Full-resolution pixel ``(x, y)`` belongs to reduced pixel ``(x // f, y // f)``; the last
``M % f`` rows and ``N % f`` columns are not used.
"""

from __future__ import annotations

import cv2
import numpy as np


def reduce_image(image: np.ndarray, factor: int) -> np.ndarray:
    """Block means of ``image`` over ``factor × factor`` cells, as float32.

    Parameters
    ----------
    image : (M, N) ndarray
    factor : int

    Returns
    -------
    (M // factor, N // factor) float32 ndarray

    Notes
    -----
    Powers of two go through repeated 2× ``INTER_AREA`` reductions, OpenCV's fast path
    (about 40× faster than a generic factor at 5 MP); the result is the same block mean.
    Integer inputs are converted to float32 first, so no rounding is added.
    """
    h, w = image.shape[:2]
    hs, ws = h // factor, w // factor
    out = image[: hs * factor, : ws * factor]
    out = out.astype(np.float32) if out.dtype != np.float32 else out
    if factor == 1:
        return np.ascontiguousarray(out)
    if factor & (factor - 1) == 0:
        step = 1
        while step < factor:
            step *= 2
            out = cv2.resize(out, (ws * factor // step, hs * factor // step), interpolation=cv2.INTER_AREA)
        return out
    return cv2.resize(out, (ws, hs), interpolation=cv2.INTER_AREA)
