"""Reading, checking and averaging the dark and flat calibration frames.

Frames are averaged in float (never re-quantised), so ``N`` frames lower the noise by
``√N``; the noise is measured from frame-to-frame differences and reported. The single-frame
noise model ``var = gain·signal + offset`` (DN², shot plus read noise) is fitted from the flat
frames so that the analyses can tell noise from texture.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from goggleqc.capture.imagefile import read_image
from goggleqc.errors import CalibrationError, InputError


@dataclass(frozen=True)
class FrameStack:
    """The float average of several frames of one kind (``dark`` or ``flat``).

    ``noise_dn`` is the single-frame noise (rms DN, from frame differences; None for one
    frame); ``mean_noise_dn`` the noise left in the average; ``noise_gain`` their ratio.
    """

    mean: np.ndarray
    bits: int
    data_bits: int
    files: tuple[str, ...]
    noise_dn: float | None
    mean_noise_dn: float | None
    noise_gain: float
    pair: tuple[np.ndarray, np.ndarray] | None = None  # mean and difference of the first two frames


def _bits(image: np.ndarray) -> int:
    return 8 if image.dtype == np.uint8 else 16


def read_frames(paths: list[str | Path], kind: str) -> list[tuple[Path, np.ndarray]]:
    """Read frames and check they share one size and bit depth, naming the odd file out."""
    if not paths:
        raise CalibrationError(f"no {kind} frames given; pass at least one --{kind} FILE")
    out = []
    for p in paths:
        try:
            out.append((Path(p), read_image(p)))
        except InputError as exc:
            raise CalibrationError(f"{kind} frame {exc}") from None
    return out


def check_same_format(frames: list[tuple[Path, np.ndarray]]) -> None:
    """All frames must have the first frame's size and bit depth."""
    ref_path, ref = frames[0]
    for path, image in frames[1:]:
        if image.shape != ref.shape:
            raise CalibrationError(f"{path} is {image.shape[1]}×{image.shape[0]} but {ref_path} is "
                                   f"{ref.shape[1]}×{ref.shape[0]}; all calibration frames must come from "
                                   "one camera at one size")
        if image.dtype != ref.dtype:
            raise CalibrationError(f"{path} is {_bits(image)}-bit but {ref_path} is {_bits(ref)}-bit; save all "
                                   "calibration frames at one bit depth")


def saturation(image: np.ndarray) -> tuple[int, float]:
    """Return (max code, fraction of pixels clipped at it).

    10–16-bit data sit in 16-bit files, so the ceiling is the frame's own maximum code, not
    65535. A clipped frame piles many pixels on that code; an unclipped one has about as few
    there as on the next lower occupied code. The fraction is 0 when there is no pile-up.
    """
    top = int(image.max())
    n_top = int(np.count_nonzero(image == top))
    below = image[image < top]
    if below.size == 0:
        return top, 1.0
    nxt = int(below.max())
    n_next = int(np.count_nonzero(image == nxt))
    frac = n_top / image.size
    return top, frac if (n_top > 3 * max(n_next, 1) and frac > 2e-4) else 0.0


def average(frames: list[tuple[Path, np.ndarray]]) -> FrameStack:
    """Average frames in float64 and measure the noise from frame differences."""
    stack = np.zeros(frames[0][1].shape, np.float64)
    for _, image in frames:
        stack += image
    mean = stack / len(frames)
    noise = None
    model = None
    if len(frames) >= 2:
        a = frames[0][1].astype(np.float32)
        b = frames[1][1].astype(np.float32)
        # flats drift in exposure by a percent or so: match the levels before differencing,
        # or the drift reads as noise
        b *= np.float32(float(a.mean()) / max(float(b.mean()), 1e-6))
        diff = (a - b) / np.sqrt(2.0)
        noise = float(np.sqrt(np.mean(diff.astype(np.float64) ** 2)))
        model = ((a + b) / 2, diff)
    n = len(frames)
    top = max(int(img.max()) for _, img in frames)
    data_bits = 8 if frames[0][1].dtype == np.uint8 else max(8, int(np.ceil(np.log2(top + 1))))
    return FrameStack(mean=mean.astype(np.float32), bits=_bits(frames[0][1]), data_bits=data_bits,
                      files=tuple(str(p) for p, _ in frames), noise_dn=noise,
                      mean_noise_dn=float(noise / np.sqrt(n)) if noise is not None else None,
                      noise_gain=float(np.sqrt(n)), pair=model)


def _noise_model(level: np.ndarray, diff: np.ndarray, read_var: float | None) -> tuple[float, float] | None:
    """Fit ``var = gain·level + offset`` (DN², DN) over brightness bins of one flat pair.

    ``level`` is dark-subtracted, so the offset is the read-noise variance; it is taken from
    the dark frames when known (a flat spans too narrow a range of levels to pin it), and
    the gain is then the least-squares slope through it.
    """
    lv = level.ravel()
    dv = diff.ravel().astype(np.float64) ** 2
    edges = np.quantile(lv, np.linspace(0.02, 0.98, 12))
    means, variances = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (lv >= lo) & (lv < hi)
        if sel.sum() > 100:
            means.append(float(lv[sel].mean()))
            variances.append(float(dv[sel].mean()))  # a difference of frames holds no fixed pattern, only noise
    if not means:
        return None
    m, v = np.asarray(means), np.asarray(variances)
    if read_var is not None:
        offset = float(read_var)
        gain = float(np.dot(v - offset, m) / max(float(np.dot(m, m)), 1e-12))
    elif np.ptp(m) > 0:
        gain, offset = (float(x) for x in np.polyfit(m, v, 1))
    else:
        return 0.0, float(v.mean())
    return max(gain, 0.0), max(offset, 1e-6)


def dark_and_flat(dark_paths: list[str | Path], flat_paths: list[str | Path]):
    """Read, check and average the dark and flat frames.

    Returns (dark, flat, flat − dark, noise model): the two FrameStacks, the dark-subtracted
    flat (float32 DN) and the single-frame noise ``var_dn2 = gain·(I − dark) + offset`` as
    (gain, offset), or None with a single flat frame.

    Raises CalibrationError naming the file and the fix for: unreadable files, frames of
    different sizes or bit depths, dark and flat swapped, a flat not brighter than the dark,
    and a saturated flat.
    """
    darks = read_frames(dark_paths, "dark")
    flats = read_frames(flat_paths, "flat")
    check_same_format(darks + flats)
    for path, image in flats:
        top, frac = saturation(image)
        if frac > 0:
            raise CalibrationError(f"flat frame {path} is saturated: {frac:.2%} of its pixels sit at its maximum "
                                   f"code {top}; lower the exposure or the backlight and take the flats again")
    dark = average(darks)
    flat = average(flats)
    signal = flat.mean - dark.mean
    model = None
    if flat.pair is not None:
        model = _noise_model(flat.pair[0] - dark.mean, flat.pair[1],
                             dark.noise_dn ** 2 if dark.noise_dn is not None else None)
    dark_level = float(np.median(dark.mean))
    flat_level = float(np.median(flat.mean))
    if flat_level <= dark_level:
        raise CalibrationError(f"the flat frames ({Path(flat.files[0]).name} ...) are darker than the dark frames "
                               f"({Path(dark.files[0]).name} ...): median {flat_level:.1f} vs {dark_level:.1f} DN; "
                               "did you swap --dark and --flat?")
    bright = float(np.percentile(signal, 90))
    noise = dark.noise_dn or 1.0
    full = (1 << flat.data_bits) - 1
    if bright < max(20 * noise, 0.02 * full):
        raise CalibrationError(f"the flat ({Path(flat.files[0]).name} ...) is barely brighter than the dark "
                               f"({bright:.1f} DN above it over most of the field); switch the backlight on and "
                               "expose the flats to about 70 % of full scale")
    return dark, flat, signal.astype(np.float32), model
