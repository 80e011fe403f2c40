"""Reduced grids: block means of a frame, shared by every analysis that works coarser.

Full-resolution pixel ``(x, y)`` belongs to reduced pixel ``(x // f, y // f)``; the last
``M % f`` rows and ``N % f`` columns are not used.

Several analyses of one lens reduce the same frame (the lens finder by 8, the background by
2 or 4, transmittance by its own factor). Each thread keeps its last frame's power-of-two
reductions, so each is computed once per frame and each builds on the finer one; the kept
arrays are read-only, so no caller can change what another one sees.
"""

from __future__ import annotations

import threading
import weakref

import cv2
import numpy as np

#: per thread (batch workers inspect in threads): the last frame reduced and its
#: power-of-two reductions by factor
_local = threading.local()


def _halve(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.resize(image[: h // 2 * 2, : w // 2 * 2], (w // 2, h // 2), interpolation=cv2.INTER_AREA)


#: full-resolution pixels converted to float32 at a time when a large frame is first reduced
_CHUNK_PX = 1 << 20


def _first_levels(image: np.ndarray, factor: int) -> dict[int, np.ndarray]:
    """Levels 4, … ``factor`` (and 2 when ``factor`` is 2) of a frame, computed in bands of rows.

    Converting a 5 MP frame to float32 whole writes a 20 MB array into freshly mapped
    memory (page faults) before the first halving reads it back; a band of about a megapixel
    at a time, in reused buffers, costs less than half as much. The 2× level, which nothing
    needs at this size when a coarser one is asked for, stays in a band buffer too (it is
    computed again if it is asked for later). Each output block is the same 2 × 2 mean of
    the same values, so the levels are bit for bit those of halving the whole frame (bands
    are a multiple of ``factor`` rows, so no block straddles two).
    """
    h, w = image.shape[:2]
    rows = max(factor, (_CHUNK_PX // max(w, 1)) // factor * factor)
    levels, step = {}, 2 if factor == 2 else 4
    while step <= factor:
        levels[step] = np.empty((h // step, w // step), np.float32)
        step *= 2
    buf = np.empty((min(rows, h), w), np.float32)
    half = np.empty((min(rows, h) // 2, w // 2), np.float32)
    for r0 in range(0, h, rows):
        src = image[r0:r0 + rows]
        band = buf[: src.shape[0]]
        np.copyto(band, src, casting="unsafe")  # integers to float32: exact
        step = 2
        while step <= factor:
            n, m = band.shape[0] // 2, band.shape[1] // 2
            dst = levels[step][r0 // step: r0 // step + n] if step in levels else half[:n, :m]
            if n and m:
                cv2.resize(band[: 2 * n, : 2 * m], (m, n), dst=dst, interpolation=cv2.INTER_AREA)
            band = dst
            step *= 2
    for out in levels.values():
        out.flags.writeable = False
    return levels


def _pyramid_level(image: np.ndarray, factor: int) -> np.ndarray:
    """Block means by a power of two, reusing the last frame's finer levels."""
    ref = getattr(_local, "ref", None)
    if ref is None or ref() is not image:
        _local.ref = weakref.ref(image)
        _local.levels = {}
    levels = _local.levels
    if factor in levels:
        return levels[factor]
    if not levels and image.ndim == 2 and image.shape[0] * image.shape[1] > 2 * _CHUNK_PX:
        levels.update(_first_levels(image, factor))
        return levels[factor]
    step = max((k for k in levels if factor % k == 0), default=1)
    out = levels[step] if step > 1 else image.astype(np.float32)
    while step < factor:
        step *= 2
        out = _halve(out)
        out.flags.writeable = False
        levels[step] = out
    return out


def reduce_image(image: np.ndarray, factor: int) -> np.ndarray:
    """Block means of ``image`` over ``factor × factor`` cells, as float32.

    Parameters
    ----------
    image : (M, N) ndarray
    factor : int

    Returns
    -------
    (M // factor, N // factor) float32 ndarray
        Read-only when ``factor`` is a power of two above 1 (it is shared; copy it to
        change it).

    Notes
    -----
    Powers of two go through repeated 2× ``INTER_AREA`` reductions, OpenCV's fast path
    (about 40× faster than a generic factor at 5 MP); the result is the same block mean of
    the cells that fit (a 2× step drops an odd last row or column, as the block grid does).
    Integer inputs are converted to float32 first, so no rounding is added.
    """
    h, w = image.shape[:2]
    hs, ws = h // factor, w // factor
    if factor == 1:
        return np.ascontiguousarray(image, dtype=np.float32)
    if factor & (factor - 1) == 0:
        out = _pyramid_level(image, factor)
        return out[:hs, :ws]
    src = image[: hs * factor, : ws * factor]
    src = src.astype(np.float32) if src.dtype != np.float32 else src
    return cv2.resize(src, (ws, hs), interpolation=cv2.INTER_AREA)
