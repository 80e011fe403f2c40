"""``goggleqc inspect --executor dask``: same records as the local pool, a lost worker, resume, bad options.

The set is 200 simulated lenses at 256×200 px (0.25 mm/px) with a station calibrated by
goggleqc itself, cached under ``.cache/``. The real pipeline runs on both executors, so
"identical" means every field of every record except the timings.

Tests that need Dask distributed skip when it cannot be imported
(``pip install 'goggleqc[dask]'``); the message for a missing Dask is tested either way.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import sqlite3
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import goggleqc.commands  # noqa: F401  (registers the sub-commands)
import goggleqc.dask_executor as dask_executor
from goggleqc.batch import LensInspector, iter_image_paths
from goggleqc.calibration.station import Station
from goggleqc.cli import app
from goggleqc.dask_executor import FIRST_CHUNK, MAX_CHUNK, chunk_size
from goggleqc.report.writers import JsonlWriter, read_records
from goggleqc.spec import load_spec
from goggleqc.synth.sampleset import SampleSetOptions, write_sample_set
from simsets import cache_dir

try:
    import distributed
except ImportError:
    distributed = None

needs_dask = pytest.mark.skipif(distributed is None, reason="Dask distributed is not installed: "
                                "pip install 'goggleqc[dask]' to run the Dask executor tests")

CACHE = cache_dir("dask")
N_LENSES = 200


def dask_set() -> Path:
    """The cached 200-lens set (what ``goggleqc samples OUT --count 200 --seed 7 --size 256x200 --pixel-size 0.25`` writes)."""
    folder = CACHE / f"dask_samples_{N_LENSES}_s7_256x200"
    if not (folder / "truth.jsonl").exists() or not (folder / "station" / "station.toml").exists():
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        write_sample_set(tmp, SampleSetOptions(count=N_LENSES, seed=7, width=256, height=200, pixel_size_mm=0.25,
                                               backlight="uniform"))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    return folder


def invoke(*args) -> "object":
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def station_args(folder: Path) -> list:
    return ["--station", folder / "station", "--spec", folder / "spec.toml"]


def without_timing(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "timing_ms"}


def by_path(out: Path) -> dict[str, dict]:
    records = list(read_records(out / "results.jsonl"))
    keyed = {r["path"]: without_timing(r) for r in records}
    assert len(keyed) == len(records), "a path was recorded twice"
    return keyed


def csv_rows(out: Path) -> dict[str, dict]:
    with open(out / "results.csv", encoding="utf-8", newline="") as fh:
        return {row["path"]: {k: v for k, v in row.items() if k != "time_ms"} for row in csv.DictReader(fh)}


def db_rows(out: Path) -> tuple[list, list]:
    """The SQLite inspections and their defects, keyed by path (row ids follow completion order)."""
    con = sqlite3.connect(out / "results.sqlite")
    inspections = con.execute("SELECT path, image, content_hash, verdict, reason_codes, haze_pct, haze_kind, "
                              "transmittance_pct, pixel_size_mm, lens_found, error, overlay FROM inspections "
                              "ORDER BY path").fetchall()
    defects = con.execute("SELECT i.path, d.kind, d.subkind, d.zone, d.contrast, d.length_mm, d.diameter_mm, "
                          "d.area_mm2, d.x0, d.y0, d.x1, d.y1 FROM defects d JOIN inspections i "
                          "USING (inspection_id)").fetchall()
    con.close()
    return inspections, sorted(defects, key=repr)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The 200-lens set inspected by the local pool (2 threads): the reference."""
    folder = dask_set()
    out = tmp_path_factory.mktemp("local") / "out"
    result = invoke("inspect", folder / "lenses", *station_args(folder), "--out", out, "--workers", "2")
    assert result.exit_code in (0, 1), result.output
    return folder, out, result


# -- chunk sizing --------------------------------------------------------------------------------


def test_chunk_size_targets_seconds_of_work_and_splits_the_tail():
    assert chunk_size(None) == FIRST_CHUNK  # nothing measured yet
    assert chunk_size(0.040) == 25  # 40 ms per image -> 1 s tasks
    assert chunk_size(0.040, target_s=2.0) == 50
    assert chunk_size(1.5) == 1  # a 5 MP image slower than a task's target still makes a task
    assert chunk_size(1e-6) == MAX_CHUNK  # skipped images (resume) are bounded
    # tail: at least two tasks per thread left, so every worker finishes together
    assert chunk_size(0.040, n_threads=4, remaining=80) == 10
    assert chunk_size(0.040, n_threads=2, remaining=3) == 1
    assert chunk_size(0.040, n_threads=2, remaining=10_000) == 25


# -- acceptance: same records as the local pool ------------------------------------------------


@needs_dask
def test_dask_local_cluster_gives_the_local_records(local_run, tmp_path):
    folder, local_out, local_result = local_run
    out = tmp_path / "dask"
    result = invoke("inspect", folder / "lenses", *station_args(folder), "--out", out, "--workers", "2",
                    "--executor", "dask")
    assert result.exit_code == local_result.exit_code, result.output
    assert "Dask LocalCluster: 2 workers, 2 threads" in result.output
    summary = local_result.output.strip().splitlines()[-1].split(", ")[:3]  # "200 images: P pass", "F fail", "0 ..."
    assert ", ".join(summary) in result.output
    local, dask = by_path(local_out), by_path(out)
    assert len(local) == N_LENSES and set(dask) == set(local)
    assert {r["verdict"] for r in local.values()} == {"pass", "fail"}  # a set that exercises the verdicts
    different = [p for p in local if local[p] != dask[p]]
    assert not different, f"{len(different)} records differ, e.g. {different[0]}"
    assert csv_rows(out) == csv_rows(local_out)
    assert db_rows(out) == db_rows(local_out)
    assert sorted(p.name for p in (out / "overlays").rglob("*.png")) == \
        sorted(p.name for p in (local_out / "overlays").rglob("*.png"))
    assert (out / "report.html").exists()


# -- acceptance: a worker killed mid-run -------------------------------------------------------


@needs_dask
def test_killing_one_of_two_workers_still_records_every_image_once(local_run, tmp_path):
    folder, local_out, _ = local_run
    reference = by_path(local_out)
    inspect_fn = LensInspector(Station.load(folder / "station"), load_spec(folder / "spec.toml"))
    killed: list[int] = []
    with dask_executor.DaskRunner(n_workers=2, total=N_LENSES) as runner:
        pids = runner.client.run(os.getpid)  # {worker address: pid}
        assert len(pids) == 2 and os.getpid() not in pids.values()
        # Dask's default MALLOC_TRIM_THRESHOLD_ halves the pipeline's speed; the runner's cluster unsets it
        assert not any(runner.client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_").values())
        lost_tasks: list[int] = []

        def kill_once(record, summary) -> None:
            if summary.n_done == 30 and not killed:
                # kill a worker that is running a task, so that task's images must be redone elsewhere
                busy = {addr: keys for addr, keys in runner.client.processing().items() if keys}
                address = sorted(busy or pids)[0]
                lost_tasks.append(len(busy.get(address, ())))
                os.kill(pids[address], signal.SIGKILL)
                killed.append(pids[address])

        jsonl = JsonlWriter(tmp_path / "results.jsonl")
        try:
            summary = runner(iter_image_paths([folder / "lenses"]), inspect_fn, [jsonl], on_record=kill_once,
                             overlays="none")
        finally:
            jsonl.close()
        alive = set(runner.client.run(os.getpid).values())
    assert len(killed) == 1 and lost_tasks[0] >= 1, "no busy worker was killed mid-run"
    assert killed[0] not in alive
    assert not summary.interrupted and summary.n_done == N_LENSES
    written = by_path(tmp_path)  # asserts no path twice
    assert set(written) == set(reference)
    assert all(written[p] == {**reference[p], "overlay": None} for p in reference)


# -- resume across runs and executors ----------------------------------------------------------


@pytest.fixture(scope="module")
def scheduler_address():
    """A LocalCluster that the CLI connects to with ``--scheduler``."""
    if distributed is None:
        pytest.skip("Dask distributed is not installed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


@needs_dask
def test_resume_across_dask_and_local_runs(local_run, scheduler_address, tmp_path):
    folder, local_out, _ = local_run
    reference = {r["image"]: r for r in by_path(local_out).values()}
    lot = tmp_path / "lot"
    lot.mkdir()
    names = sorted(reference)[:40]
    for name in names:
        shutil.copy(folder / "lenses" / name, lot / name)
    (lot / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    common = [*station_args(folder), "--out", out, "--executor", "dask", "--scheduler", scheduler_address]

    first = invoke("inspect", str(lot / "lens_000*.png"), *common)
    assert first.exit_code in (0, 1), first.output
    assert f"Dask scheduler {scheduler_address}: 2 workers" in first.output
    assert len(by_path(out)) == 10

    second = invoke("inspect", lot, *common, "--resume")
    assert second.exit_code == 3, second.output
    assert "10 already done" in second.output
    records = by_path(out)
    assert len(records) == 41
    assert records[str(lot / "empty.png")]["error"].endswith("the file is empty (0 bytes)")
    for path, record in records.items():
        if record["verdict"] != "error":
            expected = {**reference[record["image"]], "path": path}
            assert {k: v for k, v in record.items() if k != "overlay"} == \
                {k: v for k, v in expected.items() if k != "overlay"}

    third = invoke("inspect", lot, *station_args(folder), "--out", out, "--resume")  # the local pool finishes nothing new
    assert "41 already done" in third.output, third.output
    assert len(by_path(out)) == 41
    con = sqlite3.connect(out / "results.sqlite")
    assert con.execute("SELECT count(*) FROM inspections").fetchone()[0] == 41
    assert [r[0] for r in con.execute("SELECT n_images FROM runs ORDER BY rowid")] == [10, 31, 0]
    con.close()


# -- bad options and a missing Dask --------------------------------------------------------------


def test_missing_dask_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    folder = dask_set()
    out = tmp_path / "out"
    result = invoke("inspect", folder / "lenses", "--out", out, "--executor", "dask")
    assert result.exit_code == 2
    assert "--executor dask needs Dask distributed" in result.output
    assert "pip install 'goggleqc[dask]'" in result.output
    assert not out.exists()  # refused before any work


@pytest.mark.parametrize("args, message", [
    (["--executor", "spark"], "--executor 'spark': use local or dask"),
    (["--scheduler", "tcp://127.0.0.1:8786"], "--scheduler is for --executor dask; add --executor dask"),
    (["--executor", "dask", "--pool", "processes"], "--pool is for --executor local"),
    (["--pool", "fibres"], "--pool 'fibres': use threads or processes"),
])
def test_bad_executor_options_exit_2(tmp_path, args, message):
    folder = dask_set()
    result = invoke("inspect", folder / "lenses", "--out", tmp_path / "out", *args)
    assert result.exit_code == 2
    assert message in result.output


@needs_dask
def test_unreachable_scheduler_exits_2(tmp_path, monkeypatch):
    monkeypatch.setattr(dask_executor, "CONNECT_TIMEOUT_S", 1.0)
    folder = dask_set()
    result = invoke("inspect", folder / "lenses", "--out", tmp_path / "out", "--executor", "dask",
                    "--scheduler", "tcp://127.0.0.1:9")
    assert result.exit_code == 2
    assert "--scheduler tcp://127.0.0.1:9: cannot reach the Dask scheduler" in result.output
    assert "dask scheduler" in result.output
