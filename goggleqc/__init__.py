"""goggleqc: optical quality inspection of goggle lenses against a calibrated backlight.

The physics every number follows is the station model (``shared/design/station-model.md``):
a lens image is ``I = g·τ·[(1−h)·(B⊛p) + h·(B⊛K)] + noise`` after dark subtraction.
"""

__version__ = "0.1.0"
