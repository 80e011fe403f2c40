"""The streaming batch runner: path walking, bounded memory, bad inputs, Ctrl-C and resume.

The per-image function here replays simulator truth (the same schema the pipeline
returns), so these tests check the runner and its sinks, not the analyses.
The helpers at the top are shared with the other test_batch*/test_report*/test_store* files.
"""

from __future__ import annotations

import _thread
import json
import os
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from goggleqc.batch import (ImageJob, count_image_paths, decode_image, decode_only, exit_status, iter_image_paths,
                            overlay_name, read_file, run_batch)
from goggleqc.capture.imagefile import write_image
from goggleqc.errors import InputError
from goggleqc.report.records import result_from_record
from goggleqc.report.writers import CsvWriter, JsonlWriter, read_records, resume_state
from goggleqc.spec import load_spec
from goggleqc.synth import SimStation, random_lens, random_station, render_lens
from goggleqc.synth.lens import render_masks
from simsets import cache_dir

ROOT = Path(__file__).resolve().parents[1]
CACHE = cache_dir("batch")


# -- shared helpers ------------------------------------------------------------------------------


def _contours(mask: np.ndarray) -> list[list[list[int]]]:
    found, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [c.reshape(-1, 2).tolist() for c in found]


def truth_set(count: int = 30, seed: int = 11, *, size=(320, 256), pixel_size_mm: float = 0.2,
              backlight: str = "uniform", bits: int = 8) -> Path:
    """A cached folder of simulated lenses with ``truth.jsonl`` (zone contours in ``extra``)."""
    folder = CACHE / f"b6_truth_{count}_{seed}_{size[0]}x{size[1]}_{pixel_size_mm}_{backlight}_{bits}"
    if (folder / "truth.jsonl").exists():
        return folder
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "lenses").mkdir(parents=True)
    spec = load_spec("en166-clear")
    rng = np.random.default_rng([seed, 0])
    params = random_station(rng, width=size[0], height=size[1], pixel_size_mm=pixel_size_mm, backlight=backlight,
                            bits=bits, seed=seed)
    station = SimStation(params)
    with open(tmp / "truth.jsonl", "w", encoding="utf-8") as fh:
        for i in range(count):
            lens_rng = np.random.default_rng([seed, 1, i])
            lens = random_lens(lens_rng, station)
            name = f"lens_{i:04d}.png"
            image, rec = render_lens(station, lens, lens_rng, name=name, limits=spec)
            masks = render_masks(params, lens.pose)
            rec["extra"] = {"lens_contours_px": _contours(masks.lens >= 0.5),
                            "central_contours_px": _contours((masks.lens >= 0.5) & (masks.inside_mm >= 5.0))}
            rec.pop("truth")
            write_image(tmp / "lenses" / name, image)
            fh.write(json.dumps(rec) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def load_truth(folder: Path) -> dict[str, dict]:
    return {rec["image"]: rec for rec in map(json.loads, (folder / "truth.jsonl").read_text().splitlines())}


class TruthInspector:
    """An ``inspect_fn`` that replays the simulator truth of each lens, by file name.

    It checks the decoded frame against the rendered size, as a station would, so wrong-size
    frames give the station's error message.
    """

    def __init__(self, truth: dict[str, dict], shape: tuple[int, int] | None = None, delay_s: float = 0.0):
        self.truth = truth
        self.shape = shape
        self.delay_s = delay_s
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def __call__(self, image: np.ndarray, name: str):
        with self._lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if self.shape is not None and image.shape[:2] != self.shape:
                h, w = self.shape
                raise InputError(f"{name} is {image.shape[1]}×{image.shape[0]} but the station was calibrated at "
                                 f"{w}×{h}; recalibrate the station for this camera size")
            if self.delay_s:
                time.sleep(self.delay_s)
            rec = self.truth.get(name)
            if rec is None:
                return decode_only(image, name)
            return result_from_record(rec)
        finally:
            with self._lock:
                self.active -= 1


    def __getstate__(self):  # a worker process gets its own counters and lock
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()


class ListSink:
    def __init__(self):
        self.records: list[dict] = []

    def write(self, record):
        self.records.append(record)

    def close(self):
        pass


# -- finding images ------------------------------------------------------------------------------


def test_iter_paths_recursive_globs_and_exclusions(tmp_path):
    img = np.full((8, 8), 100, np.uint8)
    for rel in ["a/x.png", "a/b/y.TIF", "a/b/c/z.jpg", "a/skip.txt", "a/.hidden/h.png", "a/out/o.png", "b/x.png",
                "with space/ü ñ.bmp"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".txt"):
            (tmp_path / rel).write_text("not an image")
        else:
            ok, buf = cv2.imencode(Path(rel).suffix, img)
            buf.tofile(str(tmp_path / rel))
    found = [p.relative_to(tmp_path).as_posix() for p in iter_image_paths([tmp_path / "a"], exclude=[tmp_path / "a/out"])]
    assert found == ["a/b/c/z.jpg", "a/b/y.TIF", "a/x.png"]
    # a glob, a folder overlapping it and an explicit file: each path once
    found = list(iter_image_paths([str(tmp_path / "**/x.png"), tmp_path / "b", tmp_path / "with space"]))
    names = sorted(p.relative_to(tmp_path).as_posix() for p in found)
    assert names == ["a/x.png", "b/x.png", "with space/ü ñ.bmp"]
    assert count_image_paths([tmp_path]) == 6  # hidden folders are skipped, .txt too
    # an explicitly named file is always tried, so a mislabelled file gets an error record
    assert list(iter_image_paths([tmp_path / "a/skip.txt"])) == [tmp_path / "a/skip.txt"]
    with pytest.raises(InputError, match="no such file or folder"):
        list(iter_image_paths([tmp_path / "missing"]))


def test_iter_paths_is_lazy(tmp_path):
    """The first path comes out before the walk has listed the rest (nothing is listed up front)."""
    for d in range(3):
        (tmp_path / f"d{d}").mkdir()
        for i in range(3):
            write_image(tmp_path / f"d{d}" / f"{i}.png", np.zeros((4, 4), np.uint8))
    it = iter_image_paths([tmp_path])
    first = next(it)
    assert first.name == "0.png" and first.parent.name == "d0"
    shutil.rmtree(tmp_path / "d2")  # removed after the walk started: a lazy walk sees it gone
    rest = list(it)
    assert [p.name for p in rest] == ["1.png", "2.png", "0.png", "1.png", "2.png", "d2"]
    # the vanished folder is not silently dropped: it gets an error record
    with pytest.raises(InputError, match="d2: no such file"):
        read_file(rest[-1])


# -- reading one file ----------------------------------------------------------------------------


def test_decode_reads_8_and_16_bit_colour_and_mono(tmp_path):
    mono16 = (np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 13)
    write_image(tmp_path / "m16.tif", mono16)
    data, h = read_file(tmp_path / "m16.tif")
    assert h.startswith("blake2b:") and len(h) == len("blake2b:") + 32
    out = decode_image(data, "m16.tif")
    assert out.dtype == np.uint16 and np.array_equal(out, mono16)
    colour = np.dstack([np.full((20, 30), v, np.uint8) for v in (10, 120, 250)])
    cv2.imencode(".png", colour)[1].tofile(str(tmp_path / "c.png"))
    out = decode_image(read_file(tmp_path / "c.png")[0], "c.png")
    assert out.shape == (20, 30) and out.dtype == np.uint8
    assert abs(int(out[0, 0]) - round(0.114 * 10 + 0.587 * 120 + 0.299 * 250)) <= 1


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty (0 bytes)"),
    (b"hello, I am a text file\n", "not an image file (no PNG, JPEG, TIFF or BMP signature)"),
    ("png-half", "truncated PNG (the file ends before its IEND chunk)"),
    ("jpg-half", "truncated or corrupt JPEG file"),
    ("tif-half", "truncated or corrupt TIFF file"),
])
def test_bad_files_give_clear_messages(tmp_path, content, message):
    path = tmp_path / "bad file ü.img"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        ext, _ = content.split("-")
        buf = cv2.imencode("." + ext, np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))[1].tobytes()
        path.write_bytes(buf[: len(buf) // 2])
    with pytest.raises(InputError) as err:
        decode_image(read_file(path)[0], path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_unreadable_file_message(tmp_path, monkeypatch):
    """Permission denied (mocked: the tests run as root, who may read anything)."""
    path = tmp_path / "locked.png"
    write_image(path, np.zeros((8, 8), np.uint8))

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(np, "fromfile", denied)
    with pytest.raises(InputError, match="locked.png: permission denied; check the file's read permission"):
        read_file(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions; see the mocked test")
def test_unreadable_file_real_permissions(tmp_path):
    path = tmp_path / "locked.png"
    write_image(path, np.zeros((8, 8), np.uint8))
    path.chmod(0)
    with pytest.raises(InputError, match="permission denied"):
        read_file(path)


def test_overlay_names_are_unique_per_path():
    a, b = overlay_name("/x/lot1/lens_0001.png"), overlay_name("/x/lot2/lens_0001.png")
    assert a != b and a.startswith("lens_0001-") and b.endswith(".png")
    assert overlay_name("/x/ü ñ/Glas ü.png").startswith("Glas_ü-")


# -- the runner ----------------------------------------------------------------------------------


def test_batch_writes_one_record_per_image_matching_truth(tmp_path):
    folder = truth_set()
    truth = load_truth(folder)
    sink = ListSink()
    fn = TruthInspector(truth)
    summary = run_batch(iter_image_paths([folder / "lenses"]), fn, [sink], workers=2, overlays="fail", out_dir=tmp_path)
    assert summary.n_done == len(truth) and not summary.interrupted and summary.n_skipped == 0
    by_name = {r["image"]: r for r in sink.records}
    assert set(by_name) == set(truth)
    for name, rec in by_name.items():
        assert rec["verdict"] == truth[name]["verdict"]
        assert rec["path"] == os.path.abspath(folder / "lenses" / name)
        assert rec["content_hash"].startswith("blake2b:")
        assert {"batch_read", "batch_decode", "batch_inspect", "batch_total"} <= set(rec["timing_ms"])
        if rec["verdict"] == "fail":
            assert rec["overlay"] and (tmp_path / rec["overlay"]).is_file()
            assert (tmp_path / "overlays" / "thumbs" / (Path(rec["overlay"]).stem + ".jpg")).is_file()
        else:
            assert rec["overlay"] is None
    n_fail = sum(r["verdict"] == "fail" for r in truth.values())
    assert summary.n_fail == n_fail and summary.n_pass == len(truth) - n_fail
    assert len(list((tmp_path / "overlays").glob("*.png"))) == n_fail
    assert exit_status(summary.n_fail, summary.n_error) == (1 if n_fail else 0)


def test_bounded_in_flight_and_parallel(tmp_path):
    """Never more than max_in_flight paths taken ahead of the records written: memory is bounded."""
    folder = truth_set()
    truth = load_truth(folder)
    taken = []
    sink = ListSink()
    ahead = []

    def paths():
        for p in iter_image_paths([folder / "lenses"]):
            taken.append(p)
            ahead.append(len(taken) - len(sink.records))
            yield p

    fn = TruthInspector(truth, delay_s=0.01)
    summary = run_batch(paths(), fn, [sink], workers=3, max_in_flight=4)
    assert summary.n_done == len(truth)
    assert max(ahead) <= 4
    assert fn.max_active <= 3 and fn.max_active >= 2  # the pool really runs images side by side


def test_bad_inputs_get_error_records_and_the_batch_goes_on(tmp_path):
    folder = truth_set()
    truth = load_truth(folder)
    lot = tmp_path / "lot ü"
    shutil.copytree(folder / "lenses", lot)
    (lot / "zero.png").write_bytes(b"")
    good = (lot / "lens_0000.png").read_bytes()
    (lot / "truncated.png").write_bytes(good[: len(good) // 3])
    (lot / "notes.png").write_text("this is not a picture")
    write_image(lot / "small.png", np.full((100, 120), 128, np.uint8))
    sink = ListSink()
    summary = run_batch(iter_image_paths([lot]), TruthInspector(truth, shape=(256, 320)), [sink], workers=2)
    errors = {Path(r["path"]).name: r for r in sink.records if r["verdict"] == "error"}
    assert set(errors) == {"zero.png", "truncated.png", "notes.png", "small.png"}
    assert "the file is empty (0 bytes)" in errors["zero.png"]["error"]
    assert "truncated PNG" in errors["truncated.png"]["error"]
    assert "not an image file" in errors["notes.png"]["error"]
    assert "small.png is 120×100 but the station was calibrated at 320×256" in errors["small.png"]["error"]
    for rec in errors.values():
        assert rec["reasons"][0]["code"] == "error" and rec["reasons"][0]["message"] == rec["error"]
    assert summary.n_error == 4 and summary.n_done == len(truth) + 4
    assert exit_status(summary.n_fail, summary.n_error) == 3


def test_internal_error_is_recorded_with_traceback(tmp_path):
    folder = truth_set()
    truth = load_truth(folder)

    def buggy(image, name):
        if name == "lens_0003.png":
            raise ZeroDivisionError("division by zero")
        return result_from_record(truth[name])

    sink = ListSink()
    summary = run_batch(iter_image_paths([folder / "lenses"]), buggy, [sink], workers=2,
                        error_log=tmp_path / "errors.log")
    bad = [r for r in sink.records if r["verdict"] == "error"]
    assert len(bad) == 1 and summary.n_done == len(truth)
    assert "internal error (ZeroDivisionError: division by zero); see errors.log" in bad[0]["error"]
    log = (tmp_path / "errors.log").read_text()
    assert "lens_0003.png" in log and "Traceback" in log


def test_same_name_in_two_folders(tmp_path):
    folder = truth_set()
    truth = load_truth(folder)
    fail_name = next(n for n, r in truth.items() if r["verdict"] == "fail")
    for lot in ("lot1", "lot2"):
        (tmp_path / "in" / lot).mkdir(parents=True)
        shutil.copy(folder / "lenses" / fail_name, tmp_path / "in" / lot / fail_name)
    sink = ListSink()
    run_batch(iter_image_paths([tmp_path / "in"]), TruthInspector(truth), [sink], workers=2, overlays="fail",
              out_dir=tmp_path / "out")
    assert len(sink.records) == 2
    assert len({r["path"] for r in sink.records}) == 2
    overlays = {r["overlay"] for r in sink.records}
    assert len(overlays) == 2 and all((tmp_path / "out" / o).is_file() for o in overlays)


def test_ctrl_c_stops_cleanly_and_resume_finishes(tmp_path):
    folder = truth_set()
    truth = load_truth(folder)
    out = tmp_path / "out"
    out.mkdir()
    fn = TruthInspector(truth, delay_s=0.02)
    count = {"n": 0}

    def interrupting(image, name):
        count["n"] += 1
        if count["n"] == 6:
            _thread.interrupt_main()  # exactly what Ctrl-C does to the main thread
        return fn(image, name)

    jsonl = JsonlWriter(out / "results.jsonl")
    summary = run_batch(iter_image_paths([folder / "lenses"]), interrupting, [jsonl], workers=2, max_in_flight=4)
    jsonl.close()
    assert summary.interrupted
    first = list(read_records(out / "results.jsonl"))
    assert 6 <= len(first) <= 6 + 4 and len(first) == summary.n_done  # running images were finished, then stop
    assert len({r["path"] for r in first}) == len(first)

    # resume: skip what is done (same path, same content), redo a file whose content changed
    done = resume_state(out / "results.jsonl")
    assert set(done) == {r["path"] for r in first}
    changed = Path(first[0]["path"])
    lens_copy = tmp_path / "lenses"
    shutil.copytree(folder / "lenses", lens_copy)
    jsonl = JsonlWriter(out / "results.jsonl", append=True)
    # the copy has other paths: nothing is skipped there
    s2 = run_batch(iter_image_paths([lens_copy]), TruthInspector(truth), [ListSink()], workers=2, done=done)
    assert s2.n_skipped == 0
    s3 = run_batch(iter_image_paths([folder / "lenses"]), TruthInspector(truth), [jsonl], workers=2, done=done)
    jsonl.close()
    assert s3.n_skipped == len(first) and s3.n_done == len(truth) - len(first)
    records = list(read_records(out / "results.jsonl"))
    assert sorted(r["image"] for r in records) == sorted(truth)
    # a changed file is inspected again although its path is done
    job = ImageJob(TruthInspector(truth), done={str(changed): "blake2b:" + "0" * 32})
    assert not job(changed).skipped
    assert ImageJob(TruthInspector(truth), done=done)(changed).skipped


def _stop_after(n: int):
    """A stop event and an ``on_record`` hook that sets it once ``n`` images are done."""
    stop = threading.Event()

    def on_record(record, summary):
        if summary.n_done == n:
            stop.set()

    return stop, on_record


def test_stop_event_and_sink_failure(tmp_path):
    folder = truth_set()
    truth = load_truth(folder)
    stop, on_record = _stop_after(3)
    sink = ListSink()

    summary = run_batch(iter_image_paths([folder / "lenses"]), TruthInspector(truth), [sink], workers=1,
                        max_in_flight=1, on_record=on_record, stop=stop)
    assert summary.interrupted and summary.n_done == 3

    class FullDisk(ListSink):
        def write(self, record):
            if len(self.records) == 5:
                raise OSError(28, "No space left on device")
            super().write(record)

    from goggleqc.batch import OutputError

    full = FullDisk()
    with pytest.raises(OutputError, match="No space left on device.*rerun with --resume"):
        run_batch(iter_image_paths([folder / "lenses"]), TruthInspector(truth), [full], workers=2)
    assert len(full.records) == 5


def test_resume_state_corrupt_and_torn(tmp_path):
    path = tmp_path / "results.jsonl"
    good = {"path": "/a.png", "verdict": "pass", "content_hash": "blake2b:1"}
    path.write_text(json.dumps(good) + "\n" + '{"path": "/b.png", "verd')  # killed mid-write
    assert resume_state(path) == {"/a.png": "blake2b:1"}
    assert path.read_text() == json.dumps(good) + "\n"  # the torn line is cut off for appending
    path.write_text(json.dumps(good) + "\nGARBAGE\n" + json.dumps(good) + "\n")
    with pytest.raises(InputError, match="line 2 is not a JSON record; the resume state is corrupt"):
        resume_state(path)
    path.write_text('{"foo": 1}\n')
    with pytest.raises(InputError, match="line 1 is not a goggleqc result record"):
        resume_state(path)
    path.write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(InputError, match="resume state is corrupt"):
        resume_state(path)


def test_csv_and_jsonl_flush_per_record(tmp_path):
    folder = truth_set()
    truth = load_truth(folder)
    jsonl, csvw = JsonlWriter(tmp_path / "r.jsonl"), CsvWriter(tmp_path / "r.csv")
    seen = []

    def on_record(record, summary):
        # another reader sees every record as soon as it is handed over, before close()
        seen.append((len((tmp_path / "r.jsonl").read_text().splitlines()),
                     len((tmp_path / "r.csv").read_text().splitlines()) - 1))

    run_batch(iter_image_paths([folder / "lenses"]), TruthInspector(truth), [jsonl, csvw], workers=2,
              on_record=on_record)
    assert seen == [(i, i) for i in range(1, len(truth) + 1)]
    jsonl.close()
    csvw.close()


# -- worker processes ----------------------------------------------------------------------------


def _comparable(records: list[dict]) -> list[dict]:
    return sorted(({k: v for k, v in r.items() if k != "timing_ms"} for r in records), key=lambda r: r["path"])


def test_worker_processes_write_what_threads_write(tmp_path):
    """``--pool processes``: each worker a process holding the job, sent once. The records (and
    overlays) are those of the thread pool."""
    folder = truth_set()
    truth = load_truth(folder)
    out = {}
    for pool in ("threads", "processes"):
        sink = ListSink()
        summary = run_batch(iter_image_paths([folder / "lenses"]), TruthInspector(truth), [sink], workers=2,
                            pool=pool, overlays="fail", out_dir=tmp_path / pool)
        assert summary.n_done == len(truth) and not summary.interrupted
        out[pool] = sink.records
    assert _comparable(out["processes"]) == _comparable(out["threads"])
    assert sorted(p.name for p in (tmp_path / "processes" / "overlays").glob("*.png")) == \
        sorted(p.name for p in (tmp_path / "threads" / "overlays").glob("*.png"))
    with pytest.raises(InputError, match="--pool 'fibres': use threads or processes"):
        run_batch([], TruthInspector(truth), [], pool="fibres")
    with pytest.raises(InputError, match="cannot be sent to a worker process .*; use --pool threads"):
        run_batch(iter_image_paths([folder / "lenses"]), lambda image, name: None, [], workers=2, pool="processes")


def test_a_stop_request_with_worker_processes_keeps_what_was_done():
    folder = truth_set()
    truth = load_truth(folder)
    stop, on_record = _stop_after(3)
    sink = ListSink()

    summary = run_batch(iter_image_paths([folder / "lenses"]), TruthInspector(truth, delay_s=0.02), [sink],
                        workers=2, pool="processes", stop=stop, on_record=on_record)
    assert summary.interrupted and 3 <= summary.n_done < len(truth)
    assert len(sink.records) == summary.n_done


class DiesOn(TruthInspector):
    """Truth replay whose worker process exits at one image, as when the kernel kills it."""

    def __init__(self, truth, name: str):
        super().__init__(truth)
        self.name = name

    def __call__(self, image, name):
        if name == self.name:
            os._exit(9)
        return super().__call__(image, name)


def test_a_worker_process_that_dies_ends_the_batch_with_a_clear_error():
    from goggleqc.batch import WorkerError

    folder = truth_set()
    truth = load_truth(folder)
    victim = sorted(truth)[5]
    sink = ListSink()
    with pytest.raises(WorkerError, match=r"a worker process died \(killed, or out of memory\?\) with these images "
                                          r"in progress: .*" + victim + r".*rerun with --resume"):
        run_batch(iter_image_paths([folder / "lenses"]), DiesOn(truth, victim), [sink], workers=2, pool="processes")
    assert 0 < len(sink.records) < len(truth)  # what finished before is written
    assert victim not in {r["image"] for r in sink.records}


def test_worker_processes_ignore_ctrl_c():
    """Ctrl-C reaches every process of the terminal's group: the workers leave it to the batch,
    which finishes the images in progress (a worker that died of it would lose them)."""
    import signal

    from goggleqc.batch import ImageJob, JobProcessPool

    folder = truth_set()
    truth = load_truth(folder)
    job = ImageJob(TruthInspector(truth, delay_s=0.3))
    paths = sorted(iter_image_paths([folder / "lenses"]))[:4]
    pool = JobProcessPool(job, 2)
    try:
        futures = [pool.submit(job, p) for p in paths]
        time.sleep(0.2)
        for proc in list(pool._pool._processes.values()):
            os.kill(proc.pid, signal.SIGINT)
        errors = [f.exception(timeout=30) for f in futures]
    finally:
        pool.shutdown()
    assert errors == [None] * len(paths)
    assert [f.result().record["image"] for f in futures] == [p.name for p in paths]

