"""The physically based sample generator: stations, lenses with known defects, and truth.

It implements the image formation of station-model.md §2 and is the truth every test and
benchmark stands on.
"""

from goggleqc.synth.lens import CoatingDefect, DullSpot, LensSpec, Pose, Scratch, Spot, Stain, Watermark
from goggleqc.synth.render import render_lens
from goggleqc.synth.scenes import centred, close_up_station, random_lens, random_station
from goggleqc.synth.station import Backlight, Camera, Product, SimStation, StationParams, Trap

__all__ = ["Backlight", "Camera", "CoatingDefect", "DullSpot", "LensSpec", "Pose", "Product", "Scratch",
           "SimStation", "Spot", "Stain", "StationParams", "Trap", "Watermark", "centred", "close_up_station", "random_lens",
           "random_station",
           "render_lens"]
