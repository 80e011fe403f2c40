"""The verdict: measurements against the spec's limits, with a reason for every break.

A lens fails if any measured value breaks a limit (station-model.md §4). Each reason names
the code, the measured value, the limit and the zone, e.g.
``scratch 4.2 mm in central zone > 1.0 mm``.

An image with no pixel size (uncalibrated, no ``--pixel-size``) has its defects in pixels
only. A pass must mean that the lens meets the spec, so a millimetre limit is not left
unchecked: it is applied at the coarsest pixel size stations commonly have
(:data:`ASSUMED_PIXEL_MM`, station-model §1, 0.03–0.10 mm/px), where a pixel count is the
most millimetres it can plausibly be. A defect within the limit even there passes; a larger
one fails, and its reason says the scale was assumed and how to give the real one. Limits
with no pixel measure at all (haze, transmittance) stay unchecked.
"""

from __future__ import annotations

from typing import Iterable

from goggleqc.inspect.results import Reason
from goggleqc.spec import Limit, Spec

_DEFECT_LISTS = {"scratch": "scratches", "coating": "coating", "spot": "spots"}
#: without a pixel size, mm limits are applied at this scale (mm per pixel): the coarsest
#: that stations commonly have (station-model §1), so a pass holds at every common scale
ASSUMED_PIXEL_MM = 0.10
#: a mm field and its pixel counterpart, with the power of the scale between them
PIXEL_FIELDS = {"length_mm": ("length_px", 1), "diameter_mm": ("diameter_px", 1), "area_mm2": ("area_px", 2)}


def _breaks(value: float, limit: Limit) -> bool:
    return value > limit.value if limit.bound == "max" else value < limit.value


def _fmt(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.1f}"


def _message(code: str, value: float, limit: Limit, zone: str | None) -> str:
    op = ">" if limit.bound == "max" else "<"
    unit = f" {limit.unit}" if limit.unit else ""
    what = code if limit.field in ("haze_pct", "transmittance_pct") else f"{code} {limit.field.split('_')[0]}"
    where = f" in {zone} zone" if zone else ""
    if limit.unit == "%":
        return f"{code} {_fmt(value)}%{where} {op} {_fmt(limit.value)}%"
    if limit.field.startswith(("length", "diameter", "area")):
        return f"{code} {_fmt(value)}{unit}{where} {op} {_fmt(limit.value)}{unit}"
    return f"{what} {_fmt(value)}{unit}{where} {op} {_fmt(limit.value)}{unit}"


def assumed_pixel_limit(limit: Limit) -> tuple[str, float, str] | None:
    """``(pixel field, limit in pixels, unit)`` of a mm limit applied at :data:`ASSUMED_PIXEL_MM`,
    or None for a limit that has no pixel counterpart (or is a lower bound)."""
    if limit.field not in PIXEL_FIELDS or limit.bound != "max":
        return None
    px_field, power = PIXEL_FIELDS[limit.field]
    return px_field, round(limit.value / ASSUMED_PIXEL_MM ** power, 6), "px²" if power == 2 else "px"


def _assumed_scale_reason(limit: Limit, px: float, zone: str | None) -> Reason:
    """A break of a mm limit by a defect measured in pixels only, at :data:`ASSUMED_PIXEL_MM`."""
    _, limit_px, unit = assumed_pixel_limit(limit)
    where = f" in {zone} zone" if zone else ""
    message = (f"{limit.code} {_fmt(px)} {unit}{where} > {_fmt(limit_px)} {unit} (the {_fmt(limit.value)} {limit.unit} "
               f"limit at {ASSUMED_PIXEL_MM:g} mm/px, assumed: no pixel size; give --pixel-size to check it)")
    return Reason(limit.code, float(px), float(limit_px), unit, zone, message)


def check_limits(measures: dict, spec: Spec) -> tuple[list[Reason], list[str]]:
    """All limit breaks of one lens, and the limits that could not be checked.

    Parameters
    ----------
    measures : dict
        ``haze_pct``, ``transmittance_pct`` (numbers or None) and ``scratches``, ``coating``,
        ``spots``: lists of dicts with the fields the spec names plus ``zone``.
    spec : Spec

    Returns
    -------
    reasons : list of Reason
        One per broken limit and zone, for the worst object there.
    unchecked : list of str
        Limits whose measure is missing (haze on an uncalibrated image). A mm limit on a
        defect measured in pixels only is checked at :data:`ASSUMED_PIXEL_MM` instead.
    """
    reasons: list[Reason] = []
    unchecked: list[str] = []
    for limit in spec.limits:
        if limit.code in _DEFECT_LISTS:
            objects: Iterable[dict] = measures.get(_DEFECT_LISTS[limit.code]) or []
            worst = worst_px = None
            for obj in objects:
                if limit.zone and obj.get("zone") not in (limit.zone, "unknown"):
                    continue
                value = obj.get(limit.field)
                if value is None:
                    assumed = assumed_pixel_limit(limit)
                    px = obj.get(assumed[0]) if assumed else None
                    if px is None:
                        unchecked.append(f"{limit.code} {limit.field}")
                    elif px > assumed[1] and (worst_px is None or px > worst_px[0]):
                        worst_px = (px, obj.get("zone"))
                    continue
                if _breaks(value, limit) and (worst is None or (value > worst[0]) == (limit.bound == "max")):
                    worst = (value, obj.get("zone"))
            if worst is not None:
                value, zone = worst
                reasons.append(Reason(limit.code, float(value), limit.value, limit.unit, zone,
                                      _message(limit.code, value, limit, zone)))
            elif worst_px is not None:
                reasons.append(_assumed_scale_reason(limit, *worst_px))
        else:
            value = measures.get(limit.field)
            if value is None:
                unchecked.append(limit.field)
                continue
            if _breaks(value, limit):
                reasons.append(Reason(limit.code, float(value), limit.value, limit.unit, None,
                                      _message(limit.code, value, limit, None)))
    return reasons, sorted(set(unchecked))


def decide(measures: dict, spec: Spec) -> tuple[str, list[Reason], list[str]]:
    """``(verdict, reasons, unchecked)``: ``fail`` if any limit is broken, else ``pass``."""
    reasons, unchecked = check_limits(measures, spec)
    return ("fail" if reasons else "pass"), reasons, unchecked
