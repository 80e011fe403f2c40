"""The calibrated station: what inspection needs to know about a camera and its backlight.

A ``Station`` holds the averaged dark frame, the dark-subtracted flat ``B`` (station-model.md
§2), the backlight geometry (light traps or pattern), the pixel scale and the haze-plate
correction. Per-station work (the reciprocal flat) is done once, when the station is built
or loaded, never per lens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from goggleqc.errors import CalibrationError, InputError

STATION_VERSION = 1


@dataclass(frozen=True)
class Trap:
    """A light trap seen in the flat: centre and radius in pixels."""

    x_px: float
    y_px: float
    r_px: float


@dataclass(frozen=True)
class Pattern:
    """A periodic backlight target: ``kind`` (checker, grid, stripes), period and orientation.

    ``angle_deg`` is the direction of the pattern's first axis from the image x axis, in
    [0, 90) for checker and grid, [0, 180) for stripes.
    """

    kind: str
    period_px: float
    angle_deg: float
    contrast: float = 0.0


@dataclass(frozen=True)
class HazeFit:
    """Linear correction of raw haze to certified haze: ``certified = slope·raw + intercept`` (in %)."""

    slope: float = 1.0
    intercept: float = 0.0
    plates: tuple[dict, ...] = ()

    def apply(self, raw_pct: float) -> float:
        return self.slope * raw_pct + self.intercept


@dataclass
class Station:
    """A calibrated station.

    Attributes
    ----------
    dark : (M, N) float32 ndarray
        Averaged dark frame, in DN.
    flat : (M, N) float32 ndarray
        Averaged flat minus dark, in DN: the backlight ``B`` as the camera sees it.
    bits : int
        File bit depth of the frames (8 or 16).
    pixel_size_mm : float or None
        Millimetres per pixel in the lens plane.
    backlight : str
        ``uniform`` (with ``traps``) or ``pattern`` (with ``pattern``).
    haze_fit : HazeFit or None
        Haze-plate correction; None when no plates were measured.
    thresholds : dict
        Detector sensitivities fitted from good lenses (empty means the defaults).
    meta : dict
        Provenance: creation time, inputs, noise gain, residuals.
    """

    dark: np.ndarray
    flat: np.ndarray
    bits: int
    pixel_size_mm: float | None
    backlight: str
    traps: tuple[Trap, ...] = ()
    pattern: Pattern | None = None
    haze_fit: HazeFit | None = None
    thresholds: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    version: int = STATION_VERSION

    @property
    def shape(self) -> tuple[int, int]:
        return self.flat.shape  # type: ignore[return-value]

    @cached_property
    def inv_flat(self) -> np.ndarray:
        """1 / B where the backlight is bright enough to divide by, else 0 (computed once)."""
        floor = max(float(np.percentile(self.flat, 99)) * 0.02, 1e-6)
        with np.errstate(divide="ignore"):
            inv = np.where(self.flat > floor, 1.0 / np.maximum(self.flat, floor), 0.0)
        if not np.isfinite(inv).all():
            raise CalibrationError("the flat holds NaN or infinite values; recalibrate this station")
        return inv.astype(np.float32)

    def check_image(self, image: np.ndarray, name: str = "image") -> None:
        """Refuse an image of another size or bit depth than the station, naming both."""
        h, w = self.shape
        if image.shape[:2] != (h, w):
            raise InputError(f"{name} is {image.shape[1]}×{image.shape[0]} but the station was calibrated at "
                             f"{w}×{h}; recalibrate the station for this camera size")
        bits = 8 if image.dtype == np.uint8 else 16
        if bits != self.bits:
            raise InputError(f"{name} is {bits}-bit but the station was calibrated with {self.bits}-bit frames; "
                             "use the same camera bit depth or recalibrate")

    def transmission(self, image: np.ndarray) -> np.ndarray:
        """Flat-corrected image ``(I − dark) / B``: ``g·τ`` where the backlight is bright.

        float32; 0 where the flat is too dark to divide by (traps, dark pattern cells).
        """
        return (image.astype(np.float32) - self.dark) * self.inv_flat
