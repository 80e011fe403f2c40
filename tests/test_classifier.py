"""The learned model: it learns a plant rule the spec cannot express, and never overrules a spec fail.

Rule of the labelled set: a lens fails if the spec fails it **or if it carries two or more
spots anywhere**, however small (a count the spec has no key for).
"""

from __future__ import annotations

import numpy as np
import pytest

from goggleqc.classify.model import LogisticModel, attach_model, features, fit_classifier, load_model, save_model
from goggleqc.inspect.pipeline import inspect_lens
from goggleqc.inspect.results import Result, Spot
from goggleqc.spec import load_spec
from goggleqc.synth.lens import render_masks
from goggleqc.synth.render import render_lens
from goggleqc.synth.scenes import random_lens, random_spot
from tests.test_thresholds import sim_and_station

SPEC = load_spec("en166-clear")


def spot_lenses(sim, station, seed: int, n: int):
    """(result, label) pairs: 0–3 spots of 0.25–0.7 mm; label = spec fail or ≥ 2 spots."""
    out = []
    for i in range(n):
        r = np.random.default_rng([seed, i])
        lens = random_lens(r, sim, defects=0, haze=float(r.uniform(0.002, 0.02)), tau_clear=float(r.uniform(0.84, 0.93)))
        masks = render_masks(sim.params, lens.pose)
        k = int(r.integers(0, 4))
        spots = [random_spot(r, masks, 0.2, diameter_mm=float(r.uniform(0.25, 0.7)), contrast=float(r.uniform(0.4, 0.8)),
                             kind="inclusion") for _ in range(k)]
        from dataclasses import replace

        lens = replace(lens, spots=tuple(s for s in spots if s is not None))
        image, truth = render_lens(sim, lens, r, limits=SPEC)
        label = truth["verdict"] == "fail" or len(lens.spots) >= 2
        out.append((inspect_lens(image, station, SPEC), label))
    return out


@pytest.fixture(scope="module")
def sets():
    sim, station = sim_and_station()
    return spot_lenses(sim, station, 300, 160), spot_lenses(sim, station, 301, 100)


def _accuracy(pairs, model=None):
    pred = [(model.apply(r) if model else r).verdict == "fail" for r, _ in pairs]
    return float(np.mean([p == y for p, (_, y) in zip(pred, pairs)]))


def test_model_reaches_at_least_the_spec_accuracy(sets):
    train, test = sets
    model, cv = fit_classifier([r for r, y in train if not y], [r for r, y in train if y])
    print(f"cv: model {cv['accuracy_model']:.1%}, spec {cv['accuracy_spec']:.1%}; held out: model "
          f"{_accuracy(test, model):.1%}, spec {_accuracy(test):.1%}")
    assert cv["accuracy_model"] >= cv["accuracy_spec"]
    assert _accuracy(test, model) >= _accuracy(test)
    assert _accuracy(test, model) >= 0.85
    # the model leans on the spot count, the feature the plant rule is about
    coef = dict(zip(model.feature_names, model.coef[1:]))
    assert max(coef, key=lambda k: abs(coef[k])) == "n_spots"


def _result(verdict, n_spots):
    spots = [Spot(3.0, 0.5, "central", [0, 0, 3, 3], diameter_mm=0.3) for _ in range(n_spots)]
    return Result("x", verdict, haze_pct=1.0, transmittance_pct=88.0, spots=spots, pixel_size_mm=0.2)


def _count_model():
    n = len(features(_result("pass", 0)))
    coef = [-3.0] + [0.0] * n
    coef[1 + 8] = 4.0  # n_spots
    return LogisticModel(tuple(coef), tuple([0.0] * n), tuple([1.0] * n))


def test_model_only_turns_pass_into_fail():
    model = _count_model()
    assert model.apply(_result("fail", 0)).verdict == "fail"  # spec fail stays fail
    out = model.apply(_result("pass", 2))
    assert out.verdict == "fail" and out.reasons[-1].decided_by == "model" and "n_spots" in out.reasons[-1].message
    assert model.apply(_result("pass", 0)).verdict == "pass"
    assert "model_p_fail" in model.apply(_result("pass", 0)).extra


def test_model_round_trip_and_pipeline(tmp_path):
    sim, station = sim_and_station()
    save_model(_count_model(), tmp_path)
    loaded = load_model(tmp_path)
    assert loaded.coef == _count_model().coef and loaded.mean == _count_model().mean
    station.meta["folder"] = str(tmp_path)
    assert attach_model(station) is not None
    image = render_lens(sim, random_lens(np.random.default_rng(5), sim, defects=0, haze=0.01, tau_clear=0.9),
                        np.random.default_rng(5))[0]
    res = inspect_lens(image, station, SPEC)
    assert "model_p_fail" in res.extra
    station.cache.pop("classifier")


def test_corrupt_model_file_is_refused(tmp_path):
    (tmp_path / "classifier.json").write_text('{"features": ["x"]}')
    with pytest.raises(Exception, match="not a goggleqc classifier|other features"):
        load_model(tmp_path)
