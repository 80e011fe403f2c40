"""Frozen result records, serialising to the JSON schema of station-model.md §3.

Units are in the field names: ``*_mm``, ``*_mm2``, ``*_px``, ``*_pct``. ``contrast`` is the
fractional change of transmittance in the defect's core (0.1 = 10 % darker; negative means
brighter); for a scratch narrower than a pixel it is the darkening of the pixels it crosses
(the τ drop times the width in pixels), which is what the image shows. ``bbox_px`` is ``[x0, y0, x1, y1]`` in pixels with exclusive ends. ``zone`` is
``central`` or ``marginal`` (EN 166 marginal band), or ``unknown`` when no lens region exists.
Millimetre fields are ``None`` for uncalibrated images without a pixel size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Scratch:
    length_px: float
    width_px: float
    contrast: float
    zone: str
    bbox_px: list[int]
    length_mm: float | None = None
    width_mm: float | None = None
    polarity: str = "dark"
    score: float = 0.0
    #: the length on which it was judged a line and what kind (full-resolution px): its chain
    #: less the constant allowance at each end on which the detectors' floors were set, where
    #: ``length_px`` places its ends by the line's strength. Not serialised.
    seen_px: float | None = field(default=None, repr=False, compare=False)

    @property
    def judged_px(self) -> float:
        """The length every detection decision reads (``seen_px``, else ``length_px``)."""
        return self.length_px if self.seen_px is None else self.seen_px


@dataclass(frozen=True)
class Spot:
    diameter_px: float
    contrast: float
    zone: str
    bbox_px: list[int]
    diameter_mm: float | None = None
    kind: str = "spot"
    polarity: str = "dark"
    score: float = 0.0


@dataclass(frozen=True)
class CoatingDefect:
    kind: str
    area_px: float
    contrast: float
    zone: str
    bbox_px: list[int]
    area_mm2: float | None = None
    score: float = 0.0


@dataclass(frozen=True)
class Mark:
    """What is seen but is not a flaw of the lens, reported and never failing it.

    A ``watermark`` is the ring of deposit a dried drop leaves (a circle or an arc of one,
    ``arc_deg`` of it seen; ``diameter_px`` the circle's). A ``target`` mark is dust or a
    flaw on the defocused backlight target of an uncalibrated photograph, blurred as much as
    the pattern's edges (``diameter_px`` its length, ``arc_deg`` 0)."""

    kind: str
    diameter_px: float
    contrast: float
    zone: str
    bbox_px: list[int]
    diameter_mm: float | None = None
    arc_deg: float = 360.0


@dataclass
class VerdictCounts:
    """Running counts of verdicts, shared by the batch runner and the line station."""

    n_pass: int = 0
    n_fail: int = 0
    n_error: int = 0

    @property
    def n_done(self) -> int:
        return self.n_pass + self.n_fail + self.n_error

    def add(self, verdict: str) -> None:
        if verdict == "pass":
            self.n_pass += 1
        elif verdict == "fail":
            self.n_fail += 1
        else:
            self.n_error += 1


@dataclass(frozen=True)
class Reason:
    """Why a lens failed: ``code`` is haze, transmittance, scratch, coating, spot or error."""

    code: str
    value: float | None
    limit: float | None
    unit: str
    zone: str | None
    message: str
    decided_by: str = "spec"


@dataclass(frozen=True)
class Result:
    image: str
    verdict: str
    reasons: list[Reason] = field(default_factory=list)
    haze_pct: float | None = None
    haze_kind: str = "calibrated"
    haze_regions: list[dict[str, Any]] = field(default_factory=list)
    transmittance_pct: float | None = None
    scratches: list[Scratch] = field(default_factory=list)
    coating: list[CoatingDefect] = field(default_factory=list)
    spots: list[Spot] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    pixel_size_mm: float | None = None
    lens_found: bool = True
    error: str | None = None
    timing_ms: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for sc in out["scratches"]:
            sc.pop("seen_px", None)
        return out
