"""Station calibration: dark/flat averaging, trap or pattern geometry, pixel scale, haze fit.

``build_station(dark, flat, ...)`` turns calibration files into a :class:`Station`;
``Station.save(dir)`` / ``Station.load(dir)`` write and read the station folder.
"""

from goggleqc.calibration.build import build_station
from goggleqc.calibration.station import HazeFit, Pattern, Station, Trap

__all__ = ["HazeFit", "Pattern", "Station", "Trap", "build_station"]
