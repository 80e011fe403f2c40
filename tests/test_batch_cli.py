"""``goggleqc inspect`` and its outputs: exit statuses, bad inputs, output-folder problems, Ctrl-C and --resume.

The per-image function is replaced by the simulator-truth replay of test_batch.py, so these
tests check the command's plumbing; test_batch_pipeline.py runs the real pipeline end to end.
"""

from __future__ import annotations

import _thread
import errno
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

import goggleqc.commands.inspect as inspect_cmd
from goggleqc.capture.imagefile import write_image
from goggleqc.report.writers import read_records
from test_batch import TruthInspector, load_truth, truth_set


@pytest.fixture
def truth_fn(monkeypatch):
    """Replace the pipeline by truth replay; returns the list of (station, spec, pixel_size) it was built with."""
    folder = truth_set()
    truth = load_truth(folder)
    built = []

    def make(station, spec, pixel_size_mm, tone=None):
        built.append((station, spec, pixel_size_mm))
        return TruthInspector(truth, shape=(256, 320))

    monkeypatch.setattr(inspect_cmd, "make_inspect_fn", make)
    return folder, truth, built


def _records(out: Path) -> list[dict]:
    return list(read_records(out / "results.jsonl"))


def test_inspect_folder_writes_all_outputs(cli, tmp_path, truth_fn):
    folder, truth, built = truth_fn
    out = tmp_path / "out"
    result = cli("inspect", folder / "lenses", "--out", out, "--pixel-size", "0.2", "--workers", "2")
    n_fail = sum(r["verdict"] == "fail" for r in truth.values())
    assert result.exit_code == 1, result.output
    assert f"{len(truth)} images: {len(truth) - n_fail} pass, {n_fail} fail, 0 could not be inspected" in result.output
    assert built[0][2] == 0.2 and built[0][1].name == "en166-clear" and built[0][0] is None
    records = _records(out)
    assert sorted(r["image"] for r in records) == sorted(truth)
    assert all(r["verdict"] == truth[r["image"]]["verdict"] for r in records)
    assert len((out / "results.csv").read_text(encoding="utf-8").splitlines()) == len(truth) + 1
    con = sqlite3.connect(out / "results.sqlite")
    assert con.execute("SELECT count(*) FROM inspections").fetchone()[0] == len(truth)
    assert con.execute("SELECT status, n_images, n_fail, workers FROM runs").fetchone() == ("finished", len(truth),
                                                                                          n_fail, 2)
    con.close()
    page = (out / "report.html").read_text(encoding="utf-8")
    assert f'<b id="n-fail">{n_fail}</b>' in page
    assert "<th>workers</th><td>2 threads</td>" in page
    assert len(list((out / "overlays").glob("*.png"))) == n_fail


def test_exit_0_when_all_pass_and_overlay_modes(cli, tmp_path, truth_fn):
    folder, truth, _ = truth_fn
    passes = [n for n, r in truth.items() if r["verdict"] == "pass"][:3]
    lot = tmp_path / "good lot"
    lot.mkdir()
    for n in passes:
        shutil.copy(folder / "lenses" / n, lot / n)
    result = cli("inspect", lot, "--out", tmp_path / "o1", "--overlays", "all")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "o1" / "overlays").glob("*.png"))) == 3
    result = cli("inspect", str(folder / "lenses" / "lens_000*.png"), "--out", tmp_path / "o2", "--overlays", "none",
                 "--db", tmp_path / "elsewhere" / "my.sqlite")
    assert result.exit_code in (0, 1), result.output
    assert not (tmp_path / "o2" / "overlays").exists() and not (tmp_path / "o2" / "results.sqlite").exists()
    con = sqlite3.connect(tmp_path / "elsewhere" / "my.sqlite")
    assert con.execute("SELECT count(*) FROM inspections").fetchone()[0] == 10
    con.close()


def test_bad_inputs_exit_3_and_keep_the_rest(cli, tmp_path, truth_fn):
    folder, truth, _ = truth_fn
    lot = tmp_path / "lot ü ñ"
    shutil.copytree(folder / "lenses", lot / "a")
    (lot / "b").mkdir()
    shutil.copy(folder / "lenses" / "lens_0001.png", lot / "b" / "lens_0001.png")  # same name, other folder
    (lot / "zero.png").write_bytes(b"")
    raw = (folder / "lenses" / "lens_0002.png").read_bytes()
    (lot / "truncated.png").write_bytes(raw[:500])
    (lot / "text.jpg").write_text("not an image")
    write_image(lot / "wrong size.png", np.full((200, 300), 90, np.uint8))
    out = tmp_path / "out"
    result = cli("inspect", lot, "--out", out)
    assert result.exit_code == 3, result.output
    assert "4 could not be inspected" in result.output
    records = _records(out)
    assert len(records) == len(truth) + 5
    errors = {Path(r["path"]).name: r["error"] for r in records if r["verdict"] == "error"}
    assert "the file is empty (0 bytes)" in errors["zero.png"]
    assert "truncated PNG" in errors["truncated.png"]
    assert "not an image file" in errors["text.jpg"]
    assert "is 300×200 but the station was calibrated at 320×256" in errors["wrong size.png"]
    same = [r for r in records if r["image"] == "lens_0001.png"]
    assert len(same) == 2 and len({r["path"] for r in same}) == 2 and len({r["overlay"] for r in same}) == 2
    page = (out / "report.html").read_text(encoding="utf-8")
    assert '<b id="n-error">4</b>' in page and "lot ü ñ" in page


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "--workers must be 1 or more"),
    (["--overlays", "some"], "--overlays 'some': use one of fail, all, none"),
    (["--spec", "nope"], "spec 'nope' is neither a file nor a preset"),
    (["--pixel-size", "-1"], "--pixel-size -1.0 mm is not a plausible pixel size"),
    (["--station", "/no/such/station"], "no such station folder"),
    (["--tone", "log"], "unknown tone 'log'"),
    (["--tone", "srgb", "--station", "/no/such/station"], "--tone srgb is for uncalibrated pictures"),
])
def test_usage_errors_exit_2(cli, tmp_path, truth_fn, args, message):
    folder = truth_fn[0]
    result = cli("inspect", folder / "lenses", "--out", tmp_path / "out", *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_missing_path_and_empty_folder(cli, tmp_path, truth_fn):
    result = cli("inspect", tmp_path / "nothing here", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "nothing here: no such file or folder" in result.output
    (tmp_path / "empty").mkdir()
    result = cli("inspect", tmp_path / "empty", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "no images found" in result.output


def test_output_inside_an_existing_file(cli, tmp_path, truth_fn):
    folder = truth_fn[0]
    (tmp_path / "afile").write_text("x")
    result = cli("inspect", folder / "lenses", "--out", tmp_path / "afile" / "out")
    assert result.exit_code == 2 and "cannot write the results here" in result.output, result.output


@pytest.mark.parametrize("err, text", [(errno.EROFS, "Read-only file system"), (errno.ENOSPC, "No space left on device")])
def test_read_only_or_full_output_fails_before_any_work(cli, tmp_path, truth_fn, monkeypatch, err, text):
    """The probe write catches a read-only or full disk at the start (mocked: both need a special mount)."""
    folder, truth, built = truth_fn
    real_open = open

    def failing_open(path, mode="r", *args, **kwargs):
        if "w" in mode and ".goggleqc-write-probe" in str(path):
            raise OSError(err, text)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(inspect_cmd, "open", failing_open, raising=False)
    result = cli("inspect", folder / "lenses", "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert f"cannot write the results here ({text}); choose another folder or free some space" in result.output
    assert not built and not (tmp_path / "out" / "results.jsonl").exists()


def test_existing_results_need_resume(cli, tmp_path, truth_fn):
    folder = truth_fn[0]
    out = tmp_path / "out"
    assert cli("inspect", folder / "lenses", "--out", out).exit_code == 1
    before = (out / "results.jsonl").read_bytes()
    result = cli("inspect", folder / "lenses", "--out", out)
    assert result.exit_code == 2 and "already holds results from an earlier run; pass --resume" in result.output
    assert (out / "results.jsonl").read_bytes() == before
    result = cli("inspect", folder / "lenses", "--out", out, "--resume", "--spec", "cosmetic-strict")
    assert result.exit_code == 2 and "--resume with another spec" in result.output
    result = cli("inspect", folder / "lenses", "--out", out, "--resume")
    assert result.exit_code == 1 and "30 already done" in result.output
    assert (out / "results.jsonl").read_bytes() == before


@pytest.mark.parametrize("damage, message", [
    ("jsonl", "line 3 is not a JSON record; the resume state is corrupt"),
    ("run", "run.json: the resume state is corrupt"),
    ("run-missing", "run.json: missing, so the resume state is incomplete"),
])
def test_corrupt_resume_state_is_a_clear_error(cli, tmp_path, truth_fn, damage, message):
    folder = truth_fn[0]
    out = tmp_path / "out"
    cli("inspect", folder / "lenses", "--out", out)
    if damage == "jsonl":
        lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
        lines[2] = "{not json at all\n"
        (out / "results.jsonl").write_text("".join(lines), encoding="utf-8")
    elif damage == "run":
        (out / "run.json").write_text("{{{{")
    else:
        (out / "run.json").unlink()
    before = (out / "results.jsonl").read_bytes()
    result = cli("inspect", folder / "lenses", "--out", out, "--resume")
    assert result.exit_code == 2 and message in result.output, result.output
    assert (out / "results.jsonl").read_bytes() == before  # nothing already done is lost


def test_ctrl_c_then_resume(cli, tmp_path, truth_fn, monkeypatch):
    folder, truth, _ = truth_fn
    calls = {"n": 0}

    def make(station, spec, pixel_size_mm, tone=None):
        inner = TruthInspector(truth, delay_s=0.01)

        def fn(image, name):
            calls["n"] += 1
            if calls["n"] == 8:
                _thread.interrupt_main()  # what Ctrl-C does
            return inner(image, name)

        return fn

    monkeypatch.setattr(inspect_cmd, "make_inspect_fn", make)
    out = tmp_path / "out"
    result = cli("inspect", folder / "lenses", "--out", out)
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.output and "--resume" in result.output
    first = _records(out)
    assert 8 <= len(first) < len(truth)
    assert (out / "report.html").exists()

    monkeypatch.setattr(inspect_cmd, "make_inspect_fn", lambda *a: TruthInspector(truth))
    result = cli("inspect", folder / "lenses", "--out", out, "--resume")
    assert result.exit_code == 1, result.output
    assert f"{len(first)} already done" in result.output
    records = _records(out)
    assert sorted(r["image"] for r in records) == sorted(truth)  # each image exactly once
    con = sqlite3.connect(out / "results.sqlite")
    runs = con.execute("SELECT status, n_images, n_skipped FROM runs ORDER BY run_id").fetchall()
    assert runs == [("interrupted", len(first), 0), ("finished", len(truth) - len(first), len(first))]
    assert con.execute("SELECT count(DISTINCT path) FROM inspections").fetchone()[0] == len(truth)
    con.close()
    page = (out / "report.html").read_text(encoding="utf-8")
    assert f'<b id="n-images">{len(truth)}</b>' in page


def test_output_folder_inside_the_input_is_not_inspected(cli, tmp_path, truth_fn):
    folder = truth_fn[0]
    lot = tmp_path / "lot"
    shutil.copytree(folder / "lenses", lot)
    result = cli("inspect", lot, "--out", lot / "qc", "--overlays", "all")
    assert result.exit_code == 1
    assert cli("inspect", lot, "--out", lot / "qc", "--resume").exit_code == 1
    assert all("/qc/" not in r["path"] for r in _records(lot / "qc"))


def test_help_documents_exit_statuses(cli):
    result = cli("inspect", "--help")
    for line in ("0    all images inspected, all passed", "1    all images inspected, some failed",
                 "2    usage error", "3    some images could not be inspected", "130  interrupted by Ctrl-C"):
        assert line in result.output
