"""Why a lens passed or failed: every spec limit against the measured value, with the margin.

For each limit of the spec the worst measured value (the largest object in that zone, or the
lens measure) is set against the limit. The margin is how far the value is inside the limit,
in the limit's unit (``limit − value`` for a maximum, ``value − limit`` for a minimum): positive
passes, negative fails. Then the rule that decided: the spec's broken limits, or the learned
model when it turned a spec pass into a fail.
"""

from __future__ import annotations

from dataclasses import dataclass

from goggleqc.inspect.verdict import assumed_pixel_limit
from goggleqc.spec import Spec

_LISTS = {"scratch": "scratches", "coating": "coating", "spot": "spots"}


@dataclass(frozen=True)
class LimitRow:
    """One limit of the spec against one lens."""

    code: str
    field: str
    zone: str | None
    value: float | None
    limit: float
    bound: str
    unit: str
    margin: float | None
    status: str  # pass, fail, none found, not measured


@dataclass(frozen=True)
class Explanation:
    image: str
    verdict: str
    rows: list
    decided_by: list
    model_p_fail: float | None = None
    error: str | None = None


def _worst(objects: list[dict], field: str, zone: str | None, bound: str) -> tuple[float | None, bool]:
    vals = [o.get(field) for o in objects if zone is None or o.get("zone") in (zone, "unknown")]
    if not vals:
        return None, False
    measured = [v for v in vals if v is not None]
    if not measured:
        return None, True
    return (max(measured) if bound == "max" else min(measured)), False


def explain_record(record: dict, spec: Spec) -> Explanation:
    """Explain one result record (the JSON schema of station-model.md §3) against ``spec``."""
    if record.get("verdict") == "error":
        return Explanation(str(record.get("image", "")), "error", [], ["error"], error=record.get("error"))
    rows = []
    for lim in spec.limits:
        if lim.code in _LISTS:
            objects = record.get(_LISTS[lim.code]) or []
            value, unmeasured = _worst(objects, lim.field, lim.zone, lim.bound)
            assumed = assumed_pixel_limit(lim) if unmeasured else None
            if assumed:
                # no pixel size: the verdict judged the pixel sizes at the assumed scale
                px_field, limit_px, unit = assumed
                px, _ = _worst(objects, px_field, lim.zone, lim.bound)
                if px is not None:
                    rows.append(LimitRow(lim.code, px_field, lim.zone, float(px), limit_px, lim.bound, unit,
                                         float(limit_px - px), "pass" if px <= limit_px else "fail"))
                    continue
            if value is None:
                rows.append(LimitRow(lim.code, lim.field, lim.zone, None, lim.value, lim.bound, lim.unit, None,
                                     "not measured" if unmeasured else "none found"))
                continue
        else:
            value = record.get(lim.field)
            if value is None:
                rows.append(LimitRow(lim.code, lim.field, None, None, lim.value, lim.bound, lim.unit, None,
                                     "not measured"))
                continue
        margin = lim.value - value if lim.bound == "max" else value - lim.value
        rows.append(LimitRow(lim.code, lim.field, lim.zone, float(value), lim.value, lim.bound, lim.unit,
                             float(margin), "pass" if margin >= 0 else "fail"))
    reasons = record.get("reasons") or []
    deciders = []
    for r in reasons:
        who = r.get("decided_by", "spec")
        deciders.append(f"{who}: {r.get('message', r.get('code'))}")
    if not deciders:
        deciders = ["spec: every limit met" if record.get("verdict") == "pass" else "spec"]
    p = (record.get("extra") or {}).get("model_p_fail")
    return Explanation(str(record.get("image", "")), str(record.get("verdict")), rows, deciders,
                       float(p) if p is not None else None)
