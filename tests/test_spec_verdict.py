"""The spec file and the verdict: limits, zones, reasons, presets and bad specs."""

from __future__ import annotations

import pytest

from goggleqc.errors import SpecError
from goggleqc.inspect.verdict import decide
from goggleqc.spec import load_spec, parse_spec, presets


def _spec():
    return load_spec("en166-clear")


def test_presets_ship_with_sources():
    shipped = presets()
    assert {"en166-clear", "cosmetic-strict"} <= set(shipped)
    for path in shipped.values():
        text = path.read_text()
        assert "Sources" in text and "EN 166" in text


def test_clean_lens_passes():
    verdict, reasons, unchecked = decide({"haze_pct": 1.0, "transmittance_pct": 90.0, "scratches": [],
                                          "coating": [], "spots": []}, _spec())
    assert verdict == "pass" and reasons == [] and unchecked == []


def test_reason_names_code_value_limit_and_zone():
    measures = {"haze_pct": 1.0, "transmittance_pct": 90.0,
                "scratches": [{"length_mm": 4.2, "zone": "central"}, {"length_mm": 2.0, "zone": "central"}],
                "coating": [], "spots": []}
    verdict, reasons, _ = decide(measures, _spec())
    assert verdict == "fail"
    (r,) = reasons
    assert (r.code, r.value, r.limit, r.zone) == ("scratch", 4.2, 1.0, "central")
    assert r.message == "scratch 4.2 mm in central zone > 1 mm"


def test_marginal_zone_has_its_own_limit():
    measures = {"scratches": [{"length_mm": 4.2, "zone": "marginal"}], "coating": [], "spots": []}
    verdict, reasons, _ = decide(measures, _spec())
    assert verdict == "pass"
    measures["scratches"][0]["length_mm"] = 13.0
    verdict, reasons, _ = decide(measures, _spec())
    assert verdict == "fail" and reasons[0].zone == "marginal" and reasons[0].limit == 12.0


def test_haze_and_transmittance_limits():
    verdict, reasons, _ = decide({"haze_pct": 3.5, "transmittance_pct": 70.0}, _spec())
    assert verdict == "fail"
    assert [r.code for r in reasons] == ["haze", "transmittance"]
    assert reasons[0].message == "haze 3.5% > 3%"
    assert reasons[1].message == "transmittance 70% < 74.4%"


def test_missing_key_means_no_limit():
    spec = parse_spec({"haze": {"max_pct": 3.0}})
    verdict, _, _ = decide({"haze_pct": 1.0, "scratches": [{"length_mm": 50.0, "zone": "central"}]}, spec)
    assert verdict == "pass"


def test_limits_without_a_measure_are_reported_unchecked():
    verdict, reasons, unchecked = decide({"haze_pct": None, "scratches": [{"length_mm": None, "zone": "unknown"}]},
                                         _spec())
    assert verdict == "pass" and "haze_pct" in unchecked and "scratch length_mm" in unchecked


def test_mm_limits_without_a_pixel_size_are_checked_at_the_coarsest_common_scale():
    """No pixel size: a pass must still mean the lens meets the spec. A defect in pixels is
    judged at 0.1 mm/px, the most millimetres a pixel count plausibly is (station-model §1:
    0.03–0.10 mm/px): 40 px is at least 1.2 mm and up to 4 mm, so over a 1 mm limit; 9 px is
    at most 0.9 mm, within it at any common scale."""
    spec = load_spec("en166-clear")
    long = {"scratches": [{"length_mm": None, "length_px": 40.0, "zone": "unknown"}]}
    verdict, reasons, unchecked = decide(long, spec)
    assert verdict == "fail" and "scratch length_mm" not in unchecked
    assert reasons[0].unit == "px" and reasons[0].value == 40.0 and reasons[0].limit == 10.0
    assert "scratch 40 px in unknown zone > 10 px" in reasons[0].message and "--pixel-size" in reasons[0].message
    short = {"scratches": [{"length_mm": None, "length_px": 9.0, "zone": "unknown"}],
             "spots": [{"diameter_mm": None, "diameter_px": 5.0, "zone": "unknown"}],
             "coating": [{"area_mm2": None, "area_px": 399.0, "zone": "unknown"}]}
    assert decide(short, spec)[0] == "pass"
    spot = {"spots": [{"diameter_mm": None, "diameter_px": 6.0, "zone": "unknown"}]}
    verdict, reasons, _ = decide(spot, spec)
    assert verdict == "fail" and reasons[0].code == "spot" and reasons[0].limit == 5.0
    area = {"coating": [{"area_mm2": None, "area_px": 401.0, "zone": "central"}]}
    verdict, reasons, _ = decide(area, spec)
    assert verdict == "fail" and reasons[0].unit == "px²" and reasons[0].limit == 400.0


def test_pixel_limits_apply_to_uncalibrated_images():
    spec = parse_spec({"scratches": {"max_length_px": 20}})
    verdict, reasons, _ = decide({"scratches": [{"length_px": 40.0, "zone": "unknown"}]}, spec)
    assert verdict == "fail" and reasons[0].message == "scratch 40 px in unknown zone > 20 px"


@pytest.mark.parametrize(
    "text, message",
    [
        ("[haze]\nmax_pct = 'three'\n", "must be a number"),
        ("[haze]\nmax = 3\n", "unknown key [haze] max"),
        ("[scratch]\nmax_length_mm_central = 1\n", "unknown section [scratch]"),
        ("[scratches]\nmax_lenght_mm_central = 1\n", "unknown key [scratches] max_lenght_mm_central"),
        ("[zones]\nmarginal_width_mm = -1\n", "must be ≥ 0"),
        ("haze = 3\n", "must be a [section]"),
        ("[haze\n", "not valid TOML"),
    ],
)
def test_bad_spec_files_are_refused_with_a_clear_message(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SpecError, match=None) as err:
        load_spec(path)
    assert message in str(err.value)


def test_unknown_spec_name():
    with pytest.raises(SpecError, match="neither a file nor a preset"):
        load_spec("no-such-spec")
