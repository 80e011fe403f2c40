"""``goggleqc thresholds`` end to end on small sets, and a message for every bad input."""

from __future__ import annotations

import shutil

import pytest

from goggleqc.calibration.station import Station
from goggleqc.capture.imagefile import write_image
from goggleqc.spec import load_spec
from tests.test_thresholds import CACHE, bad_lenses, good_lenses, sim_and_station


@pytest.fixture(scope="module")
def folders():
    sim, _ = sim_and_station()
    root = CACHE / "cli_sets"
    if not (root / "done").exists():
        shutil.rmtree(root, ignore_errors=True)
        for name, gen in (("good", good_lenses(sim, 200, 24)),
                          ("bad", bad_lenses(sim, 201, 12, load_spec("en166-clear")))):
            (root / name).mkdir(parents=True)
            for n, img in gen:
                write_image(root / name / f"{n}.png", img)
        (root / "done").write_text("ok")
    return root


@pytest.fixture
def station_copy(tmp_path):
    shutil.copytree(CACHE / "station_3" / "station", tmp_path / "station")
    return tmp_path / "station"


def test_fit_records_history_plot_and_undo(cli, folders, station_copy):
    r = cli("thresholds", "--station", station_copy, "--good", folders / "good", "--bad", folders / "bad",
            "--target-frr", "0.1")
    assert r.exit_code == 0, r.output
    assert "expected false-accept rate" in r.output and "too few" in r.output
    st = Station.load(station_copy)
    fit = st.meta["thresholds_fit"]
    assert fit["target_frr"] == 0.1 and fit["n_good"] == 24 and fit["n_bad"] == 12 and fit["date"]
    assert set(st.thresholds) == {"scratches", "spots", "coating"}
    assert st.meta["thresholds_history"][-1]["thresholds"] == {}
    assert (station_copy / "thresholds_curve.png").stat().st_size > 1000
    r = cli("thresholds", "--station", station_copy, "--undo")
    assert r.exit_code == 0, r.output
    assert Station.load(station_copy).thresholds == {}


def test_learn_stores_model_with_cv_accuracy(cli, folders, station_copy):
    r = cli("thresholds", "--station", station_copy, "--good", folders / "good", "--bad", folders / "bad",
            "--target-frr", "0.1", "--learn")
    assert r.exit_code == 0, r.output
    assert "cross-validated accuracy" in r.output
    assert (station_copy / "classifier.json").exists()
    assert Station.load(station_copy).meta["classifier"]["accuracy_model"] >= 0.5


def test_empty_folder(cli, station_copy, tmp_path):
    (tmp_path / "empty").mkdir()
    r = cli("thresholds", "--station", station_copy, "--good", tmp_path / "empty")
    assert r.exit_code == 2 and "holds no lens images" in r.output


def test_bad_lenses_given_as_good_are_refused(cli, folders, station_copy):
    r = cli("thresholds", "--station", station_copy, "--good", folders / "bad")
    assert r.exit_code == 2 and "are not known-good lenses" in r.output


def test_station_without_calibration(cli, folders, tmp_path):
    (tmp_path / "nostation").mkdir()
    r = cli("thresholds", "--station", tmp_path / "nostation", "--good", folders / "good")
    assert r.exit_code == 2 and "no station.toml" in r.output


@pytest.mark.parametrize("target", ["0", "0.5", "-0.1", "1.2"])
def test_target_outside_range(cli, folders, station_copy, target):
    r = cli("thresholds", "--station", station_copy, "--good", folders / "good", "--target-frr", target)
    assert r.exit_code == 2 and "outside (0, 0.5)" in r.output


def test_undo_without_history(cli, station_copy):
    r = cli("thresholds", "--station", station_copy, "--undo")
    assert r.exit_code == 2 and "no earlier thresholds" in r.output


def test_the_fit_does_not_depend_on_the_pool(cli, folders, tmp_path):
    fitted = []
    for pool, workers in (("processes", "2"), ("threads", "2"), ("threads", "1")):
        station = tmp_path / f"station_{pool}_{workers}"
        shutil.copytree(CACHE / "station_3" / "station", station)
        r = cli("thresholds", "--station", station, "--good", folders / "good", "--target-frr", "0.1",
                "--pool", pool, "--workers", workers)
        assert r.exit_code == 0, r.output
        fitted.append(Station.load(station).thresholds)
    assert fitted[0] == fitted[1] == fitted[2]


@pytest.mark.parametrize("args, message", [(["--pool", "dask"], "--pool must be one of threads, processes"),
                                           (["--workers", "0"], "--workers must be 1 or more")])
def test_bad_pool_or_workers(cli, folders, station_copy, args, message):
    r = cli("thresholds", "--station", station_copy, "--good", folders / "good", *args)
    assert r.exit_code == 2 and message in r.output
