"""Score inspection results against simulator truth: recall, false alarms, errors, verdicts.

Used by the truth-based tests, the benchmarks and the README's accuracy table, so every
accuracy number is computed one way.

Matching: a found object matches a truth object of the same list when their bounding boxes,
each padded by ``pad_px``, overlap; pairs are taken greedily by overlap area, one to one.

Verdict scoring uses a guard band (:class:`GuardBand`) of measurement uncertainty around
each limit: a lens is *clearly bad* when some truth value breaks a limit by more than the
band, *clearly good* when every truth value is inside its limit by more than the band, and
otherwise in the band, where either verdict is acceptable. A defect too faint to be seen
(apparent contrast under the detection floor), or lying mostly over a light trap where no
light passes to show it, is also in the band when it alone decides, and is left out of recall.

Nuisances (watermarks and stains, the truth's ``nuisances`` list) are not defects: a lens
carrying only nuisances counts as defect-free, and whatever is found on it is a false alarm.
Sets with nuisances get extra metrics saying how many unmatched finds lie on one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from goggleqc.spec import Spec

LISTS = ("scratches", "spots", "coating")


@dataclass(frozen=True)
class GuardBand:
    """Measurement uncertainty around each limit, and the detection floors.

    Relative bands apply to sizes, absolute ones to percentages; a value within
    ``max(rel·limit, abs)`` of its limit is in the band. A defect within ``zone_mm`` of the
    central zone's edge may be judged in either zone.
    """

    haze_pp: float = 0.5
    transmittance_pp: float = 1.5
    length_rel: float = 0.25
    length_mm: float = 0.25
    area_rel: float = 0.4
    area_mm2: float = 1.0
    diameter_rel: float = 0.3
    diameter_mm: float = 0.1
    zone_mm: float = 0.5
    scratch_contrast_floor: float = 0.05
    spot_contrast_floor: float = 0.30
    coating_contrast_floor: float = 0.015

    def width(self, field: str, limit: float) -> float:
        if field == "haze_pct":
            return self.haze_pp
        if field == "transmittance_pct":
            return self.transmittance_pp
        if field.startswith("length"):
            return max(self.length_rel * limit, self.length_mm)
        if field.startswith("area"):
            return max(self.area_rel * limit, self.area_mm2)
        if field.startswith("diameter"):
            return max(self.diameter_rel * limit, self.diameter_mm)
        return 0.0

    def visible(self, key: str, obj: dict) -> bool:
        if obj.get("backlit", 1.0) < 0.5:
            return False
        floor = {"scratches": self.scratch_contrast_floor, "spots": self.spot_contrast_floor,
                 "coating": self.coating_contrast_floor}[key]
        return abs(obj.get("contrast", 1.0)) >= floor


def _padded(b, pad):
    return (b[0] - pad, b[1] - pad, b[2] + pad, b[3] + pad)


def _overlap(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return float(w * h) if w > 0 and h > 0 else 0.0


def match_objects(truth: list[dict], found: list[dict], pad_px: float = 3.0) -> list[tuple[int, int]]:
    """One-to-one (truth index, found index) pairs whose padded bboxes overlap."""
    cands = []
    for i, t in enumerate(truth):
        tb = _padded(t["bbox_px"], pad_px)
        for j, f in enumerate(found):
            ov = _overlap(tb, _padded(f["bbox_px"], pad_px))
            if ov > 0:
                cands.append((ov, i, j))
    used_t, used_f, pairs = set(), set(), []
    for _, i, j in sorted(cands, reverse=True):
        if i not in used_t and j not in used_f:
            used_t.add(i)
            used_f.add(j)
            pairs.append((i, j))
    return pairs


def on_nuisance(found: dict, nuisances: list[dict], pad_px: float = 3.0) -> int | None:
    """Index of the nuisance whose padded bbox overlaps ``found``'s the most, or None."""
    fb = _padded(found["bbox_px"], pad_px)
    best = max(((_overlap(fb, _padded(n["bbox_px"], pad_px)), i) for i, n in enumerate(nuisances)), default=(0.0, None))
    return best[1] if best[0] > 0 else None


def lens_class(truth: dict, spec: Spec, band: GuardBand = GuardBand()) -> str:
    """``bad``, ``good`` or ``band`` (either verdict acceptable) for a truth record.

    A defect within ``band.zone_mm`` of the central zone's edge may be judged in either zone:
    it makes the lens bad only if it breaks the limits of both zones clearly.
    """
    in_band = False
    edge_breaks: dict[int, set] = {}
    for limit in spec.limits:
        width = band.width(limit.field, limit.value)
        if limit.code in ("haze", "transmittance"):
            items = [(truth.get(limit.field), True, None)]
        else:
            key = {"scratch": "scratches", "spot": "spots", "coating": "coating"}[limit.code]
            items = []
            for o in truth.get(key, []):
                at_edge = bool(limit.zone) and abs(o.get("central_depth_mm", np.inf)) < band.zone_mm
                if not limit.zone or o.get("zone") == limit.zone or at_edge:
                    items.append((o.get(limit.field), band.visible(key, o), id(o) if at_edge else None))
        for value, visible, edge_id in items:
            if value is None:
                continue
            margin = (value - limit.value) if limit.bound == "max" else (limit.value - value)
            if margin > width and visible:
                if edge_id is None:
                    return "bad"
                edge_breaks.setdefault(edge_id, set()).add(limit.zone)
                in_band = True
            elif margin > -width:
                in_band = True
    if any(zones >= {"central", "marginal"} for zones in edge_breaks.values()):
        return "bad"
    return "band" if in_band else "good"


def _filtered(objs, pred):
    return [o for o in objs if pred(o)]


def evaluate(pairs: list[tuple[dict, dict]], spec: Spec, band: GuardBand = GuardBand()) -> dict:
    """Accuracy of results against truth.

    Parameters
    ----------
    pairs : list of (truth record, result dict)
    spec : Spec
        The limits the verdicts are scored under.

    Returns
    -------
    dict of metrics: haze and transmittance MAE (pp), recalls, false alarms per defect-free
    lens, median length error, and false accept / reject rates outside the guard band.
    """
    m: dict = {"lenses": len(pairs)}
    haze_err, trans_err, len_err = [], [], []
    hits = {k: [0, 0] for k in ("scratch_1mm", "scratch_05_1mm", "spot", "coating")}
    false = {k: 0 for k in LISTS}
    n_clean = 0
    classes = {"bad": [0, 0], "good": [0, 0]}
    with_nuisances = any(truth.get("nuisances") for truth, _ in pairs)
    on_marks = {k: 0 for k in LISTS}
    for truth, res in pairs:
        if res.get("verdict") == "error":
            continue
        if truth.get("haze_pct") is not None and res.get("haze_pct") is not None and truth["haze_pct"] <= 10:
            haze_err.append(abs(res["haze_pct"] - truth["haze_pct"]))
        if truth.get("transmittance_pct") is not None and res.get("transmittance_pct") is not None:
            trans_err.append(abs(res["transmittance_pct"] - truth["transmittance_pct"]))
        # defect-free: no scratch, spot or coating flaw, and no dull spot (a local haze patch
        # is a defect too, though it is reported as haze)
        clean = not any(truth.get(k) for k in LISTS) and not truth.get("truth", {}).get("dull_spots")
        n_clean += clean
        for key in LISTS:
            t_objs, f_objs = truth.get(key, []), res.get(key, [])
            matched = match_objects(t_objs, f_objs)
            found_t = {i for i, _ in matched}
            if clean:
                false[key] += len(f_objs)
            if truth.get("nuisances"):
                matched_f = {j for _, j in matched}
                on_marks[key] += sum(on_nuisance(f, truth["nuisances"]) is not None
                                     for j, f in enumerate(f_objs) if j not in matched_f)
            for i, t in enumerate(t_objs):
                if t.get("backlit", 1.0) < 0.5:
                    continue  # mostly over a light trap: nothing to see it against
                c = abs(t.get("contrast", 0))
                if key == "scratches":
                    length = t["length_mm"] if t.get("length_mm") is not None else None
                    if length is not None and length >= 1.0 and c >= 0.05:
                        hits["scratch_1mm"][0] += i in found_t
                        hits["scratch_1mm"][1] += 1
                    elif length is not None and 0.5 <= length < 1.0 and c >= 0.05:
                        hits["scratch_05_1mm"][0] += i in found_t
                        hits["scratch_05_1mm"][1] += 1
                elif key == "spots" and (t.get("diameter_mm") or 0) >= 0.2 and c >= 0.3:
                    hits["spot"][0] += i in found_t
                    hits["spot"][1] += 1
                elif key == "coating" and (t.get("area_mm2") or 0) >= 4.0 and c >= 0.015:
                    hits["coating"][0] += i in found_t
                    hits["coating"][1] += 1
            if key == "scratches":
                for i, j in matched:
                    t, f = t_objs[i], f_objs[j]
                    if t.get("length_px") and f.get("length_px") and t["length_mm"] and t["length_mm"] >= 1.0:
                        len_err.append(abs(f["length_px"] - t["length_px"]) / t["length_px"])
        cls = lens_class(truth, spec, band)
        if cls in classes:
            classes[cls][1] += 1
            wrong = res.get("verdict") == ("pass" if cls == "bad" else "fail")
            classes[cls][0] += wrong
    m["haze_mae_pp"] = float(np.mean(haze_err)) if haze_err else None
    m["transmittance_mae_pp"] = float(np.mean(trans_err)) if trans_err else None
    for key, (hit, total) in hits.items():
        m[f"recall_{key}"] = hit / total if total else None
        m[f"n_{key}"] = total
    m["median_length_error"] = float(np.median(len_err)) if len_err else None
    m["defect_free_lenses"] = n_clean
    for key in LISTS:
        m[f"false_{key}_per_clean_lens"] = false[key] / n_clean if n_clean else None
    if with_nuisances:  # only for sets with nuisances, so other sets' metrics keep their keys
        m["nuisance_lenses"] = sum(1 for truth, r in pairs if truth.get("nuisances") and r.get("verdict") != "error")
        for key in LISTS:
            m[f"false_{key}_on_nuisances"] = on_marks[key]
    m["false_accept_rate"] = classes["bad"][0] / classes["bad"][1] if classes["bad"][1] else None
    m["false_reject_rate"] = classes["good"][0] / classes["good"][1] if classes["good"][1] else None
    m["n_clearly_bad"], m["n_clearly_good"] = classes["bad"][1], classes["good"][1]
    m["errors"] = sum(1 for _, r in pairs if r.get("verdict") == "error")
    return m
