"""Station calibration: dark/flat averaging, trap or pattern geometry, pixel scale, haze fit."""

from goggleqc.calibration.station import HazeFit, Pattern, Station, Trap

__all__ = ["HazeFit", "Pattern", "Station", "Trap"]
