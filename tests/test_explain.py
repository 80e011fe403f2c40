"""``goggleqc explain``: each measured value against its limit, the margin, and what decided."""

from __future__ import annotations

import json

import numpy as np

from goggleqc.capture.imagefile import write_image
from goggleqc.classify.explain import explain_record
from goggleqc.inspect.pipeline import inspect_lens
from goggleqc.spec import load_spec
from goggleqc.synth.lens import render_masks
from goggleqc.synth.render import render_lens
from goggleqc.synth.scenes import random_lens, random_scratch
from tests.test_thresholds import CACHE, sim_and_station

SPEC = load_spec("en166-clear")


def _scratched(sim):
    """A lens with a 6 mm, 30 % scratch somewhere on it (truth: fails the 1 mm central limit)."""
    from dataclasses import replace

    rng = np.random.default_rng(11)
    lens = random_lens(rng, sim, defects=0, haze=0.01, tau_clear=0.9)
    sc = random_scratch(rng, render_masks(sim.params, lens.pose), 0.2, length_mm=6.0, contrast=0.3, width_mm=0.3,
                        shape="straight")
    return render_lens(sim, replace(lens, scratches=(sc,)), np.random.default_rng(11), limits=SPEC)


def test_explain_record_margins_against_truth():
    sim, station = sim_and_station()
    image, truth = _scratched(sim)
    assert truth["verdict"] == "fail"
    rec = inspect_lens(image, station, SPEC).to_dict()
    ex = explain_record(rec, SPEC)
    assert ex.verdict == "fail"
    row = next(r for r in ex.rows if r.code == "scratch" and r.zone == "central")
    assert row.status == "fail" and abs(row.margin - (1.0 - row.value)) < 1e-9
    assert abs(row.value - truth["scratches"][0]["length_mm"]) < 1.5
    haze = next(r for r in ex.rows if r.code == "haze")
    assert haze.status == "pass" and haze.margin > 0
    assert any(d.startswith("spec: scratch") for d in ex.decided_by)


def test_explain_without_a_pixel_size_shows_the_assumed_scale():
    """Uncalibrated with no pixel size, the verdict judged the pixel sizes at 0.1 mm/px:
    explain shows that row (px against px), as the verdict decided it."""
    sim, _ = sim_and_station()
    image, _ = _scratched(sim)
    rec = inspect_lens(image, None, SPEC).to_dict()
    ex = explain_record(rec, SPEC)
    row = next(r for r in ex.rows if r.code == "scratch" and r.zone == "central")
    assert row.field == "length_px" and row.unit == "px" and row.limit == 10.0
    assert row.status == "fail" and rec["verdict"] == "fail"


def test_explain_cli_on_record_and_image(cli, tmp_path):
    sim, station = sim_and_station()
    image, _ = _scratched(sim)
    rec = inspect_lens(image, station, SPEC, name="lens.png").to_dict()
    (tmp_path / "r.jsonl").write_text(json.dumps(rec) + "\n")
    r = cli("explain", tmp_path / "r.jsonl")
    assert r.exit_code == 0, r.output
    assert "scratch length_mm" in r.output and "decided by spec: scratch" in r.output and "fail" in r.output
    write_image(tmp_path / "lens.png", image)
    r = cli("explain", tmp_path / "lens.png", "--station", CACHE / "station_3" / "station")
    assert r.exit_code == 0, r.output
    assert "haze_pct" in r.output and "margin" in r.output


def test_explain_bad_inputs(cli, tmp_path):
    r = cli("explain", tmp_path / "missing.jsonl")
    assert r.exit_code == 2 and "no such file" in r.output
    (tmp_path / "x.json").write_text('{"a": 1}')
    r = cli("explain", tmp_path / "x.json")
    assert r.exit_code == 2 and "no 'verdict'" in r.output
    (tmp_path / "r.jsonl").write_text(json.dumps({"image": "a.png", "verdict": "pass"}) + "\n")
    r = cli("explain", tmp_path / "r.jsonl", "--image", "b.png")
    assert r.exit_code == 2 and "no record for image 'b.png'" in r.output
