"""The verdict: measurements against the spec's limits, with a reason for every break.

A lens fails if any measured value breaks a limit (station-model.md §4). Each reason names
the code, the measured value, the limit and the zone, e.g.
``scratch 4.2 mm in central zone > 1.0 mm``.
"""

from __future__ import annotations

from typing import Iterable

from goggleqc.inspect.results import Reason
from goggleqc.spec import Limit, Spec

_DEFECT_LISTS = {"scratch": "scratches", "coating": "coating", "spot": "spots"}


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
        Limits whose measure is missing (e.g. mm limits on an image with no pixel size).
    """
    reasons: list[Reason] = []
    unchecked: list[str] = []
    for limit in spec.limits:
        if limit.code in _DEFECT_LISTS:
            objects: Iterable[dict] = measures.get(_DEFECT_LISTS[limit.code]) or []
            worst = None
            for obj in objects:
                if limit.zone and obj.get("zone") not in (limit.zone, "unknown"):
                    continue
                value = obj.get(limit.field)
                if value is None:
                    unchecked.append(f"{limit.code} {limit.field}")
                    continue
                if _breaks(value, limit) and (worst is None or (value > worst[0]) == (limit.bound == "max")):
                    worst = (value, obj.get("zone"))
            if worst is not None:
                value, zone = worst
                reasons.append(Reason(limit.code, float(value), limit.value, limit.unit, zone,
                                      _message(limit.code, value, limit, zone)))
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
