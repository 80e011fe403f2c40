"""The truth-scoring rules every accuracy number uses."""

from goggleqc.spec import load_spec
from goggleqc.synth.scoring import evaluate, lens_class, match_objects


def test_match_is_one_to_one_by_overlap():
    truth = [{"bbox_px": [10, 10, 20, 12]}, {"bbox_px": [100, 100, 110, 110]}]
    found = [{"bbox_px": [11, 9, 21, 13]}, {"bbox_px": [12, 10, 18, 12]}, {"bbox_px": [300, 300, 301, 301]}]
    pairs = match_objects(truth, found)
    assert pairs == [(0, 0)]


def test_lens_class_uses_the_guard_band():
    spec = load_spec("en166-clear")
    base = {"haze_pct": 1.0, "transmittance_pct": 90.0, "scratches": [], "spots": [], "coating": []}
    assert lens_class(base, spec) == "good"
    assert lens_class({**base, "haze_pct": 3.2}, spec) == "band"
    assert lens_class({**base, "haze_pct": 4.0}, spec) == "bad"
    faint = {"length_mm": 5.0, "zone": "central", "contrast": 0.01}
    assert lens_class({**base, "scratches": [faint]}, spec) == "band"
    assert lens_class({**base, "scratches": [{**faint, "contrast": 0.2}]}, spec) == "bad"


def test_evaluate_counts_false_accepts_and_recall():
    spec = load_spec("en166-clear")
    sc = {"length_mm": 5.0, "length_px": 50.0, "zone": "central", "contrast": 0.2, "bbox_px": [0, 0, 50, 3]}
    truth = {"haze_pct": 1.0, "transmittance_pct": 90.0, "scratches": [sc], "spots": [], "coating": []}
    missed = {"verdict": "pass", "haze_pct": 1.2, "transmittance_pct": 89.0, "scratches": [], "spots": [], "coating": []}
    found = {**missed, "verdict": "fail", "scratches": [{**sc, "length_px": 45.0}]}
    m = evaluate([(truth, missed), (truth, found)], spec)
    assert m["recall_scratch_1mm"] == 0.5 and m["false_accept_rate"] == 0.5
    assert abs(m["haze_mae_pp"] - 0.2) < 1e-9 and m["median_length_error"] == 0.1


def test_a_defect_at_the_central_zones_edge_may_be_judged_in_either_zone():
    """11.8 mm² of coating 0.26 mm inside the central zone: over the central limit (4 mm²) but
    under the marginal one (30 mm²), and within the 0.5 mm zone band, so either verdict is fair."""
    spec = load_spec("en166-clear")
    base = {"haze_pct": 1.0, "transmittance_pct": 90.0, "scratches": [], "spots": [], "coating": []}
    void = {"kind": "void", "area_mm2": 11.8, "zone": "central", "contrast": 0.024, "central_depth_mm": 0.26}
    assert lens_class({**base, "coating": [void]}, spec) == "band"
    assert lens_class({**base, "coating": [{**void, "central_depth_mm": 2.0}]}, spec) == "bad"
    assert lens_class({**base, "coating": [{**void, "area_mm2": 60.0}]}, spec) == "bad"  # clearly over both limits
