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
ordinary camera's picture and sRGB by the JFIF/Exif convention; a PNG, TIFF or BMP from a
station camera is linear; ``--tone`` overrides either (:func:`tone_for_name`).
"""

from __future__ import annotations

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


def tone_for_name(name: str, tone: Tone | None) -> Tone:
    """The tone of a picture by its file name: ``tone`` when given, else sRGB for a JPEG and
    linear for anything else."""
    if tone is not None:
        return tone
    return Tone("srgb") if str(name).lower().endswith(JPEG_SUFFIXES) else LINEAR
