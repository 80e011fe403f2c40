"""Reading and writing single image files, losslessly, at their native bit depth."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from goggleqc.errors import InputError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg", ".pgm", ".ppm")


def to_luminance(image: np.ndarray) -> np.ndarray:
    """Return the luminance of a frame, keeping its dtype.

    Parameters
    ----------
    image : (M, N) or (M, N, 3) or (M, N, 4) ndarray
        A monochrome frame, or a colour frame in OpenCV's BGR(A) channel order.

    Returns
    -------
    (M, N) ndarray
        Monochrome frames are returned as they are. Colour frames are converted with the
        Rec. 601 luma weights (``cv2.COLOR_BGR2GRAY``), rounded back to the input dtype.
    """
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] in (3, 4):
        code = cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        return cv2.cvtColor(image, code)
    raise InputError(f"an image of shape {image.shape} is neither monochrome nor colour")


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as a monochrome uint8 or uint16 array.

    Colour files are converted to luminance. Raises :class:`InputError` with the file name
    for anything that cannot be read as an 8- or 16-bit image.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image")
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: the file is empty (0 bytes)")
        data = np.fromfile(path, dtype=np.uint8)  # handles non-ASCII paths, unlike imread
    except PermissionError:
        raise InputError(f"{path}: permission denied; check the file's read permission") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        return decode_image(data, path)
    except InputError as exc:
        detail = str(exc).removeprefix(f"{path}: ")
        raise InputError(f"{path}: not a readable image ({detail})") from None


_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8", "JPEG"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
               (b"BM", "BMP"), (b"P5", "PGM"), (b"P6", "PPM"))


def decode_image(data: np.ndarray, path: str | Path) -> np.ndarray:
    """Decode file bytes to a monochrome uint8/uint16 frame, naming the problem when it cannot.

    Parameters
    ----------
    data : (K,) uint8 ndarray
        The whole file.
    path : str or Path
        For messages only.

    Returns
    -------
    (M, N) uint8 or uint16 ndarray
        Luminance at the file's bit depth (colour is converted, station-model.md §1).
    """
    if data.size == 0:
        raise InputError(f"{path}: the file is empty (0 bytes)")
    head = data[:8].tobytes()
    kind = next((name for sig, name in _SIGNATURES if head.startswith(sig)), None)
    if kind is None:
        raise InputError(f"{path}: not an image file (no PNG, JPEG, TIFF or BMP signature)")
    # A PNG cut short is recognised without calling libpng, which would print its own error
    if kind == "PNG" and b"IEND" not in data[-32:].tobytes():
        raise InputError(f"{path}: truncated PNG (the file ends before its IEND chunk); copy it again")
    # A phone's JPEG is often stored on its side with an EXIF orientation tag that every viewer
    # applies; IMREAD_UNCHANGED would ignore it, so boxes would not land where the user sees
    # the defect. IMREAD_COLOR applies it (8-bit, as every JPEG here is; grey stays grey).
    image = cv2.imdecode(data, cv2.IMREAD_COLOR if kind == "JPEG" else cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError(f"{path}: truncated or corrupt {kind} file; OpenCV cannot decode it")
    if image.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{path}: {image.dtype} pixels are not supported; use 8- or 16-bit images")
    return to_luminance(image)


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write an 8- or 16-bit image losslessly (PNG or TIFF by the suffix) and return the path."""
    path = Path(path)
    if image.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{path}: refusing to write {image.dtype} pixels; convert to uint8 or uint16")
    ok, buf = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise InputError(f"{path}: OpenCV could not encode an image with suffix {path.suffix!r}")
    buf.tofile(path)
    return path
