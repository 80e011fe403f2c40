"""Tone curves: turning an ordinary camera's encoded picture back into linear light.

Every contrast goggleqc reports is a fractional change of transmitted light (station-model
§2), so the analyses need pixel values proportional to light. A machine-vision camera gives
that. An ordinary camera (a phone, a DSLR's JPEG) does not: it encodes light with the sRGB
tone curve (about a 1/2.2 power), which reads a 30 % dark spot as about 15 %, and a 5 %
scratch as about 2 %. Undoing the curve is a lookup table per pixel.

Which curve a picture carries is not in its pixels in any way that can be read reliably: a
photograph through a lens on a defocused target spans too narrow a range of levels for the
noise-against-level law (``var ∝ L`` linear, ``∝ V^(2 − γ)`` encoded) to tell them apart
(tried: slopes of linear and sRGB close-ups overlap). So the file says it: a JPEG is an
ordinary camera's picture and sRGB by the JFIF/Exif convention; a PNG that declares its
colour space (an ``sRGB`` or ``iCCP`` chunk: sRGB, or a profile such as Display P3 with the
same curve; a ``gAMA`` chunk: a power) is taken at its word (:func:`png_tone`); a PNG, TIFF
or BMP that says nothing, as a station camera's frames do, is linear; ``--tone`` overrides
all of these (:func:`tone_for_name`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from goggleqc.errors import InputError


@dataclass(frozen=True)
class Tone:
    """A tone curve: ``linear``, ``srgb`` or ``gamma`` (a plain power ``gamma``)."""

    kind: str = "linear"
    gamma: float = 2.2

    def __str__(self) -> str:
        return f"gamma={self.gamma:g}" if self.kind == "gamma" else self.kind

    def decode(self, v: np.ndarray) -> np.ndarray:
        """Linear light (0–1) of encoded values ``v`` (0–1)."""
        v = np.clip(np.asarray(v, np.float64), 0.0, 1.0)
        if self.kind == "srgb":
            return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
        if self.kind == "gamma":
            return v ** self.gamma
        return v


LINEAR = Tone("linear")


def parse_tone(text: str) -> Tone | None:
    """``auto`` (None: by the file name, :func:`tone_for_name`), ``linear``, ``srgb`` or ``gamma=G`` (1 < G ≤ 4)."""
    t = str(text).strip().lower()
    if t == "auto":
        return None
    if t in ("linear", "srgb"):
        return Tone(t)
    if t.startswith("gamma="):
        try:
            g = float(t.split("=", 1)[1])
        except ValueError:
            g = float("nan")
        if not 1.0 < g <= 4.0:
            raise InputError(f"tone {text!r}: the gamma must be a number above 1 and at most 4, as gamma=2.2")
        return Tone("gamma", g)
    raise InputError(f"unknown tone {text!r}; use auto, linear, srgb or gamma=G (as gamma=2.2)")


def linearise(image: np.ndarray, tone: Tone) -> np.ndarray:
    """``image`` in linear light, as uint16 (full scale 65535) for an encoded picture.

    A linear tone returns the image itself. 8- and 16-bit inputs go through a lookup table of
    their whole range, so the cost is one table read per pixel.
    """
    if tone.kind == "linear":
        return image
    if image.dtype == np.uint8:
        lut = np.rint(tone.decode(np.arange(256) / 255.0) * 65535).astype(np.uint16)
    elif image.dtype == np.uint16:
        lut = np.rint(tone.decode(np.arange(65536) / 65535.0) * 65535).astype(np.uint16)
    else:
        raise InputError(f"a tone curve is undone on 8- or 16-bit pictures, not {image.dtype}")
    return lut[image]


#: file name endings of JPEG pictures
JPEG_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: a gAMA within this of 1/1 is a linear file
_LINEAR_GAMMA_TOLERANCE = 0.05


def png_tone(data) -> Tone | None:
    """The tone curve a PNG file declares, or None when it declares none (or is not a PNG).

    The colour chunks come before the image data (PNG 1.2, §4.2.2): ``sRGB`` or ``iCCP``
    (an embedded profile; phones write sRGB or Display P3, which share the sRGB curve) give
    sRGB and take precedence over ``gAMA``, whose value is the file's encoding exponent ×
    100000 (45455 for the usual 1/2.2): the decoding power is its inverse, 1 meaning linear.
    """
    head = bytes(data[:8]) if data is not None else b""
    if head != _PNG_SIGNATURE:
        return None
    view, pos, gamma = memoryview(data), 8, None
    while pos + 8 <= len(view):
        length, kind = struct.unpack(">I4s", view[pos:pos + 8])
        if kind in (b"IDAT", b"IEND"):
            break
        if kind in (b"sRGB", b"iCCP"):
            return Tone("srgb")
        if kind == b"gAMA" and length == 4 and pos + 12 <= len(view):
            (value,) = struct.unpack(">I", view[pos + 8:pos + 12])
            gamma = 100000.0 / value if value else None
        pos += 12 + length  # length, type, data, CRC
    if gamma is None:
        return None
    if abs(gamma - 1.0) <= _LINEAR_GAMMA_TOLERANCE:
        return LINEAR
    return Tone("gamma", round(min(max(gamma, 1.0 + 1e-6), 4.0), 4))


def tone_for_name(name: str, tone: Tone | None, declared: Tone | None = None) -> Tone:
    """The tone of a picture: ``tone`` when given (``--tone``), else what the file declares
    (``declared``, e.g. :func:`png_tone`), else sRGB for a JPEG and linear for anything else."""
    if tone is not None:
        return tone
    if declared is not None:
        return declared
    return Tone("srgb") if str(name).lower().endswith(JPEG_SUFFIXES) else LINEAR
