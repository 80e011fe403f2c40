"""Luminous transmittance of the clear lens, corrected for exposure drift.

Station-model.md §3: ``transmittance_pct`` is the median τ over the clear central zone,
corrected for the exposure drift ``g`` between the flat and this frame using the backlight
seen beside the goggle, where ``τ = 1`` and so ``(I − dark)/B = g`` exactly.

Haze only redistributes the light a lens transmits (ASTM D1003: total = regular + diffuse), so
over an area spanning whole periods of a patterned backlight the ratio of summed signal to
summed flat is ``g·τ`` whatever the haze, while the per-pixel ratio is not (haze lifts dark
pattern cells and dims bright ones). τ is therefore measured as a ratio of block sums: the
frame and the flat are area-reduced alike (the same reduction as the lens region) and, for a
pattern, box-summed over about one period before dividing. Beside the goggle there is no lens
and no haze, so the drift ``g`` is read pixel by pixel there: a period-wide box would reach
the goggle's frame wherever the band of backlight beside it is narrower than a period.

Redistribution is local only over a pattern. The light a hazy lens scatters comes from
``B ⊛ K`` (station-model §2), and beside a light trap that is less than ``B``: the trap's
missing light. So ``(I − dark)/B`` reads ``g·τ·(1 − h·(1 − S/B))`` there, 0.1·h low over a
central zone holding traps, and the frame is divided by ``(1 − h)·B + h·S`` instead, with the
lens' raw haze ``h`` and the station's scatter map ``S = B ⊛ K̂`` that raw haze was read against.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from goggleqc.inspect.lens import LensRegion, np_median, reduce_image, reduced_station

#: a drift estimate needs at least this many reduced backlight pixels beside the goggle
MIN_BACKGROUND_SAMPLES = 20
#: box (in pattern periods) over which signal and flat are summed for a patterned backlight
PATTERN_BOX_PERIODS = 1.0
#: beside the goggle, only blocks whose flat reaches this fraction of its brightest are read
#: for the drift (a pattern's dark cells divide poorly)
MIN_BESIDE_FLAT_FRAC = 0.25
#: period assumed for a patterned backlight whose period the station does not record (mm)
DEFAULT_PERIOD_MM = 4.0


@dataclass(frozen=True)
class TransmittanceMeasurement:
    """Transmittance of the clear central zone.

    Attributes
    ----------
    transmittance_pct : float or None
        Median τ over the clear central zone, drift-corrected, in %; None when no usable
        central pixel exists.
    drift_gain : float
        Exposure drift ``g`` (frame ÷ flat), from the backlight beside the goggle; 1.0 when
        none is visible.
    drift_corrected : bool
        False when no backlight was visible beside the goggle, so ``g = 1`` was assumed.
    raw_pct : float or None
        The same median before the drift correction (``g·τ``), in %.
    spread_pct : float or None
        Robust spread (1.4826 × median absolute deviation) of τ over the zone, in %.
    n_samples : int
        Reduced pixels the median was taken over.
    note : str
        Why the drift correction or the measurement was not possible, else empty.
    """

    transmittance_pct: float | None
    drift_gain: float
    drift_corrected: bool
    raw_pct: float | None
    spread_pct: float | None
    n_samples: int
    note: str = ""


def _box_px(station, factor: int) -> int:
    """Side (reduced px) of the box that spans about one period of a patterned backlight."""
    if station.backlight != "pattern":
        return 1
    pattern = getattr(station, "pattern", None)
    if pattern is not None and pattern.period_px > 0:
        period_px = pattern.period_px
    elif station.pixel_size_mm:
        period_px = DEFAULT_PERIOD_MM / station.pixel_size_mm
    else:
        period_px = max(station.shape) / 40
    return max(1, int(round(PATTERN_BOX_PERIODS * period_px / factor)))


def _inner(mask: np.ndarray, box: int) -> np.ndarray:
    """``mask`` eroded by a ``box``-wide square, or ``mask`` itself when that leaves nothing."""
    if box <= 1:
        return mask
    eroded = cv2.erode(mask.astype(np.uint8), np.ones((box, box), np.uint8)).view(bool)
    return eroded if eroded.any() else mask


def _station_sums(station, factor: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """The summing box, the flat's box sums (floored for division), the clean-block mask and
    the scatter map's box sums (``B ⊛ K̂``) of a station on the grid reduced by ``factor``:
    frame-independent, so kept in ``station.cache``."""
    key = ("transmittance_sums", factor)
    cache = getattr(station, "cache", None)
    if cache is not None and key in cache:
        return cache[key]
    red = reduced_station(station, factor)
    box = _box_px(station, factor)
    den, den_s = red.flat, reduce_image(station.scatter, factor)
    if box > 1:
        den, den_s = (cv2.boxFilter(d, -1, (box, box), normalize=False, borderType=cv2.BORDER_REFLECT)
                      for d in (den, den_s))
    den = np.maximum(den, 1e-6)
    # blocks touching a light trap (flat too dark to divide) carry its haze fill: leave them
    # out, with a one-block margin for the camera blur
    clean = cv2.erode((red.valid > 0.999).astype(np.uint8), np.ones((3, 3), np.uint8), iterations=1 + box // 2) > 0
    for a in (den, clean, den_s):
        a.flags.writeable = False
    entry = (box, den, clean, den_s)
    if cache is not None:
        cache[key] = entry
    return entry


def measure_transmittance(image: np.ndarray, station, region: LensRegion,
                          haze_raw_pct: float | None = None) -> TransmittanceMeasurement:
    """Measure the transmittance of the clear central zone (station-model.md §3).

    Parameters
    ----------
    image : (M, N) uint8 or uint16 ndarray
        The raw frame (dark not subtracted).
    station : Station
        The calibrated station (dark and flat).
    region : LensRegion
        The lens region of this frame, from :func:`goggleqc.inspect.lens.find_lens`.
    haze_raw_pct : float, optional
        The lens' raw haze (:func:`goggleqc.inspect.haze.measure_haze`'s ``raw_pct``, read
        against the same nominal scatter map ``B ⊛ K̂``). A hazy lens sends the light it
        scatters from ``B ⊛ K``, not ``B``; where the backlight has dark parts (light traps)
        that is less than ``B`` around them, so ``(I − dark)/B`` reads ``g·τ·(1 − h·(1 − S/B))``
        rather than ``g·τ``. With the haze given, the frame is divided by
        ``(1 − h)·B + h·S`` (station-model §2) and τ is the lens' own transmittance.

    Returns
    -------
    TransmittanceMeasurement
    """
    station.check_image(image)
    factor = region.factor
    red = reduced_station(station, factor)
    signal = reduce_image(image, factor) - red.dark
    box, den, clean, den_s = _station_sums(station, factor)
    h = max(0.0, float(haze_raw_pct)) / 100.0 if haze_raw_pct is not None and np.isfinite(haze_raw_pct) else 0.0
    if h > 0:
        den = np.maximum((1.0 - h) * den + h * den_s, 1e-6)
    num = signal
    if box > 1:
        num = cv2.boxFilter(signal, -1, (box, box), normalize=False, borderType=cv2.BORDER_REFLECT)
    ratio = num / den

    # keep the summing box inside its zone, so the frame never enters a central block
    zone = _inner(region.central_small, box)
    samples = ratio[zone & clean]
    # beside the goggle there is no lens and no haze to redistribute light, so (I − dark)/B = g
    # pixel by pixel: no summing box, which would reach the goggle's frame where the band
    # beside it is narrower than a period (an 8.6 mm grid read τ 22 pp high that way)
    beside = cv2.erode(region.background_small.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool)
    lit = beside & (red.valid > 0.999) & (red.flat > MIN_BESIDE_FLAT_FRAC * float(np.max(red.flat)))
    background = signal[lit] / red.flat[lit]
    if background.size >= MIN_BACKGROUND_SAMPLES:
        gain, corrected, note = np_median(background), True, ""
    else:
        gain, corrected = 1.0, False
        note = "no backlight visible beside the goggle: exposure drift not corrected (g = 1 assumed)"
    if samples.size == 0:
        return TransmittanceMeasurement(None, gain, corrected, None, None, 0,
                                        "no usable pixel in the central zone" + (f"; {note}" if note else ""))
    raw = np_median(samples)
    spread = 1.4826 * np_median(np.abs(samples - raw)) / gain
    return TransmittanceMeasurement(transmittance_pct=100.0 * raw / gain, drift_gain=gain, drift_corrected=corrected,
                                    raw_pct=100.0 * raw, spread_pct=100.0 * spread, n_samples=int(samples.size),
                                    note=note)
