"""goggleqc on lenses from a second, independent renderer of station-model.md.

``benchmarks/second_renderer.py`` is written from the station model alone (it imports
nothing from ``goggleqc.synth``) and chooses otherwise wherever the model leaves a choice
open: a defocus-disc optics, a two-Gaussian scatter kernel, its own lens shapes, scratch
profile, spots, coating flaws and haze plates. Its lenses go through the command line as a
user's would: ``goggleqc calibrate`` on its dark, flat and plate frames, then
``goggleqc inspect``, and are scored against its truth. A quirk goggleqc shares with its own
simulator shows here: this set found τ read 0.1·h low over light traps and haze read 3 % of
h high where the plates' field differed from the lens' (both fixed).

One seed per backlight, never tuned on; the figures asserted leave room for a few lenses.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import second_renderer as R  # noqa: E402

COUNT = 40
SIZE = (640, 512)
PIXEL_MM = 0.08
SPEC = "en166-clear"


@pytest.fixture(scope="module", params=["uniform", "grid"])
def scored(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"second_{request.param}")
    R.render_set(out, width=SIZE[0], height=SIZE[1], ps=PIXEL_MM, backlight=request.param, count=COUNT,
                 seed=4100 + len(request.param))
    results = R.run_goggleqc(out, PIXEL_MM, SPEC)
    return request.param, out, R.score(out, results, SPEC)


def test_every_lens_is_inspected(scored):
    _, out, m = scored
    assert m["lenses"] == COUNT and m["errors"] == 0, m
    station = json.loads((out / "station2.json").read_text())
    assert (out / "station" / "station.toml").exists() and station["ps"] == PIXEL_MM


def test_haze_and_transmittance_against_its_truth(scored):
    """Issue 4's targets: haze MAE ≤ 0.15 pp with plates, transmittance ≤ 1 pp."""
    backlight, out, m = scored
    assert m["haze_mae_pp"] <= 0.15, m
    assert m["transmittance_mae_pp"] <= 0.3, m
    # the station keeps the plates' response map (one value per trap, or per pattern region)
    assert (out / "station" / "haze_response.npy").exists()


def test_defects_against_its_truth(scored):
    _, _, m = scored
    assert m["recall_scratch_1mm"] >= 0.9, m
    assert m["recall_spot"] >= 0.9, m
    assert m["recall_coating"] >= 0.85, m
    for key in ("scratches", "spots", "coating"):
        assert m[f"false_{key}_per_clean_lens"] <= 0.1, m


def test_verdicts_against_its_truth(scored):
    _, _, m = scored
    assert m["n_clearly_bad"] >= 10 and m["n_clearly_good"] >= 5, m
    assert m["false_accept_rate"] <= 0.05, m
    assert m["false_reject_rate"] <= 0.05, m


def test_a_stripe_target_has_one_edge_direction():
    """A stripe target's flat concentrates its edge gradients at one orientation, and the other
    bins hold next to nothing, where a ripple stood 4× their median: seed 3's stripes read a
    second "edge" at 91° (seed 13's station at 21°, where a kinked scratch then went unjoined
    at its kink as if it ran along the pattern). A second direction must hold a share of the
    first's energy."""
    import numpy as np

    from goggleqc.inspect.background import pattern_edge_normals, reduce_image

    for seed in range(8):
        st = R.make_station(SIZE[0], SIZE[1], PIXEL_MM, "stripes", np.random.default_rng(seed))
        flat = reduce_image(R._psf(R.backlight_radiance(st), st).astype(np.float32), 2)
        normals = pattern_edge_normals(flat, flat > 0.1 * flat.max())
        assert len(normals) == 1
        assert min(normals[0], np.pi - normals[0]) < np.deg2rad(2)  # across the vertical stripes
