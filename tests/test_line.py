"""The line station: one inspection per placement on simulated lines (synthetic:, MJPG video, a
faulty live camera), averaging, manual/continuous modes, recording, and the CLI end to end."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from goggleqc.calibration.station import Pattern, Station, Trap
from goggleqc.capture.sources import Frame, Source, SourceLost, open_source
from goggleqc.capture.synthetic import SyntheticLine, parse_synthetic
from goggleqc.capture.watchdog import Backoff, LiveFeed
from goggleqc.inspect.results import Result
from goggleqc.line.station import LineStation
from goggleqc.line.trigger import Trigger, TriggerSettings, reduce_frame
from goggleqc.report.writers import JsonlWriter, read_records
from goggleqc.synth.sampleset import station_truth
from simsets import cache_dir

LINE = "synthetic:seed=3,size=320x256,pixel=0.2,backlight=uniform,lenses=6"
CACHE = cache_dir("line")


def run_line(source_or_factory, settings=TriggerSettings(), inspect=None, **feed_kw):
    """Run a LineStation with a recording inspect function; returns (station, calls)."""
    calls = []

    def inspect_fn(image, name):
        calls.append(image)
        return inspect(image, name) if inspect else Result(image=name, verdict="pass")

    make = source_or_factory if callable(source_or_factory) else (lambda: source_or_factory)
    station = LineStation(inspect_fn, Trigger(settings))
    station.run(LiveFeed(make, **feed_kw), handle_signals=False)
    return station, calls


def placement_of(line: SyntheticLine, frame_index: int) -> int | None:
    for i in range(len(line.placements)):
        lo, hi = line.placements[i]["still_frames"]
        if lo <= frame_index <= hi:
            return i
    return None


@pytest.mark.parametrize("text", [LINE, "synthetic:seed=5,size=320x256,pixel=0.2,backlight=pattern,lenses=6",
                                  "synthetic:seed=11,size=256x200,lenses=5,bits=16,mix=random"])
def test_one_inspection_per_placement_on_a_still_frame(text):
    src = open_source(text)
    station, _ = run_line(src)
    line = src.line
    hit = [placement_of(line, i.frame_index) for i in station.inspections]
    assert hit == list(range(line.options.lenses))
    k = station.trigger.settings.settle_frames
    assert all(i.frame_index == line.placements[p]["still_frames"][0] + k for i, p in zip(station.inspections, hit))


def test_a_lens_that_never_settles_is_not_inspected():
    # stay=2 frames < settle 3: a hand passing through the fixture
    station, calls = run_line(open_source("synthetic:seed=3,size=160x128,pixel=0.4,lenses=4,stay=2"))
    assert calls == [] and station.summary.frames == 4 * (6 + 8 + 2) + 6


def test_averaging_uses_only_still_frames_and_lowers_noise():
    line_text = "synthetic:seed=3,size=320x256,pixel=0.2,backlight=uniform,lenses=2,stay=12"
    src = open_source(line_text)
    station, calls = run_line(src, TriggerSettings(average_frames=6))
    line = src.line
    for insp, image in zip(station.inspections, calls):
        p = placement_of(line, insp.frame_index)
        lo, _ = line.placements[p]["still_frames"]
        assert insp.frame_index - 5 >= lo  # all six averaged frames were still
        single = line.frame(insp.frame_index).astype(np.float32)
        mean = np.mean([line.frame(i).astype(np.float32) for i in range(lo, lo + 12)], axis=0)
        assert np.std(image - mean) < 0.6 * np.std(single - mean)
    assert len(calls) == 2 and calls[0].dtype == np.uint8


def test_manual_and_continuous_modes():
    src = open_source("synthetic:seed=3,size=160x128,pixel=0.4,lenses=2")
    trigger = Trigger(TriggerSettings(mode="manual"))
    station = LineStation(lambda im, n: Result(image=n, verdict="pass"), trigger)
    pressed_at = 15
    feed = LiveFeed(lambda: src)
    for frame in feed.frames():
        if frame.index == pressed_at:
            trigger.press()
        step = trigger.update(reduce_frame(frame.image), frame.image)
        if step.fire:
            station.inspect_frame(step.image, frame_index=frame.index)
    assert [i.frame_index for i in station.inspections] == [pressed_at]
    station, calls = run_line(open_source("synthetic:seed=3,size=160x128,pixel=0.4,lenses=1"),
                              TriggerSettings(mode="continuous"))
    assert len(calls) >= 4  # every settled run, lens or empty fixture


def test_mjpg_video_of_a_line_gives_one_inspection_per_placement(tmp_path):
    line = SyntheticLine(parse_synthetic("synthetic:seed=5,size=320x256,pixel=0.2,backlight=pattern,lenses=5"))
    path = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (320, 256), False)
    for i in range(line.n_frames):
        writer.write(line.frame(i))
    writer.release()
    station, _ = run_line(open_source(str(path)))
    assert [placement_of(line, i.frame_index) for i in station.inspections] == [0, 1, 2, 3, 4]


class WorldCamera(Source):
    """A live camera looking at a synthetic line that runs on in real time, camera or not."""

    kind = "camera"
    live = True

    def __init__(self, line, t0, fps, fault=None, fault_after_s=None, log=None):
        super().__init__("fake-usb")
        self.line, self.t0, self.fps, self.fault, self.fault_after_s = line, t0, fps, fault, fault_after_s
        self.fault_at = None
        self.last = None

    def open(self):
        self.is_open = True

    def read(self):
        time.sleep(1.0 / self.fps)
        now = time.monotonic()
        if self.fault and now - self.t0 >= self.fault_after_s:
            self.fault_at = self.fault_at or now
            if self.fault == "freeze":
                return Frame(self.last.image.copy(), now, self.last.index)
            raise SourceLost("fake camera unplugged")
        index = int((now - self.t0) * self.fps)
        if index >= self.line.n_frames:
            time.sleep(10)  # the line is over: the camera keeps showing nothing new
        self.last = Frame(self.line.frame(index), now, index)
        self.frames_read += 1
        return self.last


def test_frozen_then_unplugged_camera_is_detected_reconnected_and_loses_no_record(tmp_path):
    fps = 40.0
    line = SyntheticLine(parse_synthetic("synthetic:seed=3,size=160x128,pixel=0.4,backlight=uniform,lenses=3,"
                                         "empty=24,move=4,stay=48"))
    period_s = line.period / fps
    t0 = time.monotonic()
    # placement 0 inspected, then frozen while it stays; placement 1 inspected, unplugged in the empty gap
    faults = [("freeze", 0.15 * period_s + (24 + 4 + 20) / fps), ("unplug", period_s + (24 + 4 + 30) / fps)]
    made = []

    def make():
        fault, after = faults[len(made)] if len(made) < len(faults) else (None, None)
        cam = WorldCamera(line, t0, fps, fault, after)
        made.append(cam)
        return cam

    events = []
    jsonl = JsonlWriter(tmp_path / "results.jsonl")
    station = LineStation(lambda im, n: Result(image=n, verdict="pass"), Trigger(TriggerSettings()), sinks=[jsonl])
    feed = LiveFeed(make, timeout_s=0.25, freeze_s=0.25, backoff=Backoff(0.05, 0.2))
    feed.on_health = lambda h: events.append((time.monotonic(), h.state))
    original = station._on_health
    station._on_health = lambda h: (events.append((time.monotonic(), h.state)), original(h))
    station.run(feed, max_inspections=3, duration_s=3 * period_s + 5, handle_signals=False)
    jsonl.close()
    lost = [t for t, s in events if s == "lost"]
    assert len(lost) == 2 and feed.health.reconnects == 2
    assert lost[0] - made[0].fault_at < 0.25 + 0.15  # frozen: within freeze_s (+ one frame and slack)
    assert lost[1] - made[1].fault_at < 0.15  # unplugged: at the next read
    hit = [placement_of(line, i.frame_index) for i in station.inspections]
    assert hit == [0, 1, 2]  # the frozen lens was not inspected twice, nothing was missed
    records = list(read_records(tmp_path / "results.jsonl"))
    assert [r["image"] for r in records] == [i.result.image for i in station.inspections]


# -- end to end ---------------------------------------------------------------------------------


def station_folder(text: str) -> Path:
    """A station folder for a synthetic line, calibrated from 8 dark and 8 flat frames of its simulator.

    Trap or pattern geometry and the pixel size are taken from the simulator's truth, so the
    test depends on the line, not on the calibration code.
    """
    line = SyntheticLine(parse_synthetic(text))
    key = text.split(":", 1)[1].replace(",", "_").replace("=", "-")
    folder = CACHE / key
    if (folder / "station.toml").exists():
        return folder
    sim = line.station
    rng = np.random.default_rng(99)
    dark = np.mean([sim.dark_frame(rng).astype(np.float32) for _ in range(8)], axis=0)
    flat = np.mean([sim.flat_frame(rng).astype(np.float32) for _ in range(8)], axis=0) - dark
    truth = station_truth(line.params)
    traps = tuple(Trap(t["x"], t["y"], t["r"]) for t in truth.get("traps_px", []))
    pat = truth.get("pattern")
    station = Station(dark=dark.astype(np.float32), flat=flat.astype(np.float32), bits=line.params.camera.bits,
                      pixel_size_mm=line.params.pixel_size_mm, backlight=line.params.backlight.kind, traps=traps,
                      pattern=Pattern(pat["kind"], pat["period_px"], pat["angle_deg"]) if pat else None)
    station.save(folder, force=True)
    return folder


def test_cli_line_end_to_end_with_the_real_pipeline(cli, tmp_path):
    folder = station_folder(LINE)
    out = tmp_path / "out"
    res = cli("line", "--camera", LINE, "--station", folder, "--out", out, "--no-window", "--save", "fail")
    assert res.exit_code == 0, res.output
    line = SyntheticLine(parse_synthetic(LINE))
    truth = [line.placement(i)["verdict"] for i in range(6)]
    records = list(read_records(out / "results.jsonl"))
    assert [r["verdict"] for r in records] == truth
    assert [placement_of(line, r["extra"]["line"]["frame_index"]) for r in records] == list(range(6))
    for r, i in zip(records, range(6)):
        assert sorted({x["code"] for x in r["reasons"]}) == sorted(set(line.placement(i)["reasons"]))
    con = sqlite3.connect(out / "results.sqlite")
    assert con.execute("SELECT verdict FROM inspections ORDER BY inspection_id").fetchall() == [(v,) for v in truth]
    assert con.execute("SELECT status, n_images FROM runs").fetchall() == [("finished", 6)]
    n_fail = truth.count("fail")
    assert len(list((out / "images").glob("*.png"))) == n_fail == len(list((out / "overlays").glob("*.png")))
    assert f"yield {6 - n_fail}/6" in res.output and "PASS" in res.output and "FAIL" in res.output
    assert "line started" in (out / "line.log").read_text()


@pytest.mark.parametrize("args, message", [
    (["--save", "some"], "--save 'some': use fail, all or none"),
    (["--mode", "sometimes"], "--mode 'sometimes': use auto, manual, continuous"),
    (["--average", "0"], "--average must be 1–64 frames, not 0"),
    (["--settle-frames", "0"], "--settle-frames must be at least 1, not 0"),
    (["--timeout", "0"], "--timeout must be positive"),
    (["--size", "huge"], "--size 'huge' is not WIDTHxHEIGHT"),
    (["--camera", "missing.avi"], "missing.avi: no such video file"),
    (["--camera", "synthetic:lenses=-1"], "synthetic: lenses must be ≥ 0"),
    (["--station", "no_such_station"], "no_such_station: no such station folder"),
    (["--spec", "no_such_spec"], "spec 'no_such_spec' is neither a file nor a preset"),
])
def test_cli_line_bad_input_messages(cli, tmp_path, args, message):
    base = {"--camera": "synthetic:size=96x80,lenses=1", "--out": str(tmp_path / "o")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    res = cli("line", "--no-window", *[x for kv in base.items() for x in kv])
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output


def test_cli_refuses_a_camera_of_another_size_than_the_station(cli, tmp_path):
    folder = station_folder(LINE)
    res = cli("line", "--camera", "synthetic:seed=3,size=160x128,lenses=1", "--station", folder, "--out",
              tmp_path / "o", "--no-window")
    assert res.exit_code == 2
    assert "gives 160×128 frames but the station was calibrated at 320×256; set --size 320x256" in res.output


def test_sigterm_stops_cleanly_and_a_kill_loses_no_committed_record(tmp_path):
    text = "synthetic:seed=3,size=160x128,pixel=0.4,lenses=0,fps=40,realtime=1,empty=8,move=3,stay=10"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "goggleqc", "line", "--camera", text, "--no-window", "--save", "none"]

    def start(out):
        return subprocess.Popen(cmd + ["--out", str(out)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                text=True, env=env)

    def wait_for_records(out, n, proc):
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and proc.poll() is None:
            path = out / "results.jsonl"
            if path.exists() and path.read_text().count("\n") >= n:
                return
            time.sleep(0.1)
        raise AssertionError("the line did not inspect in time")

    proc = start(tmp_path / "term")
    wait_for_records(tmp_path / "term", 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and "interrupted:" in err
    con = sqlite3.connect(tmp_path / "term" / "results.sqlite")
    n_db = con.execute("SELECT COUNT(*) FROM inspections").fetchone()[0]
    assert con.execute("SELECT status, n_images FROM runs").fetchone() == ("interrupted", n_db)
    assert n_db == len(list(read_records(tmp_path / "term" / "results.jsonl"))) >= 2

    proc = start(tmp_path / "kill")
    wait_for_records(tmp_path / "kill", 2, proc)
    proc.kill()
    proc.wait(timeout=20)
    records = list(read_records(tmp_path / "kill" / "results.jsonl"))
    con = sqlite3.connect(tmp_path / "kill" / "results.sqlite")
    images = [r[0] for r in con.execute("SELECT image FROM inspections ORDER BY inspection_id")]
    # the JSONL line is written before the SQLite commit: at most the one in flight is missing there
    assert len(records) >= 2 and [r["image"] for r in records][:len(images)] == images
    assert len(records) - len(images) <= 1
