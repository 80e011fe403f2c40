"""Frame sources: parsing SRC, camera settings order and read-back, video/folder/simulator playback,
the newest-frame grabber, and the watchdog that detects frozen or lost cameras and reconnects."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest

from goggleqc.capture.devices import list_cameras, probe_camera
from goggleqc.capture.imagefile import write_image
from goggleqc.capture.sources import (CameraSettings, CameraSource, Frame, ImageFolderSource, NewestFrame, Source,
                                      SourceLost, StreamSource, VideoFileSource, apply_camera_settings, open_source)
from goggleqc.capture.synthetic import SyntheticLine, SyntheticSource, parse_synthetic
from goggleqc.capture.watchdog import Backoff, LiveFeed
from goggleqc.errors import InputError


# -- fakes -------------------------------------------------------------------------------------


class FakeCapture:
    """A cv2.VideoCapture stand-in: records set() calls; accepts what ``accepts`` allows."""

    def __init__(self, device=None, backend=None, *, opened=True, sizes=((640, 480), (1280, 1024)),
                 refuse=(), frame=None):
        self.device, self.backend, self.opened = device, backend, opened
        self.calls: list[tuple[int, float]] = []
        self.props = {cv2.CAP_PROP_FRAME_WIDTH: 640, cv2.CAP_PROP_FRAME_HEIGHT: 480, cv2.CAP_PROP_FPS: 30,
                      cv2.CAP_PROP_FOURCC: cv2.VideoWriter.fourcc(*"YUYV"), cv2.CAP_PROP_AUTO_EXPOSURE: 3}
        self.sizes, self.refuse = sizes, set(refuse)
        self.frame = frame if frame is not None else np.full((480, 640, 3), 128, np.uint8)

    def isOpened(self):
        return self.opened

    def getBackendName(self):
        return "FAKE"

    def set(self, prop, value):
        self.calls.append((prop, value))
        if prop in self.refuse:
            return False
        if prop == cv2.CAP_PROP_FRAME_WIDTH and not any(w == value for w, _ in self.sizes):
            return True  # drivers often say yes and keep their old value
        if prop == cv2.CAP_PROP_FRAME_HEIGHT:
            if (self.props[cv2.CAP_PROP_FRAME_WIDTH], value) not in self.sizes:
                return True
        self.props[prop] = value
        return True

    def get(self, prop):
        return float(self.props.get(prop, 0))

    def read(self):
        return True, self.frame

    def release(self):
        self.opened = False


class FakeCamera(Source):
    """A live camera over a synthetic line that can freeze, hang or disconnect after ``fault_after`` frames."""

    kind = "camera"
    live = True

    def __init__(self, frames, fault=None, fault_after=0, fps=100.0):
        super().__init__("fake")
        self.frames, self.fault, self.fault_after, self.fps = frames, fault, fault_after, fps
        self.fault_at: float | None = None
        self._last = None

    def open(self):
        self.is_open = True

    def read(self):
        time.sleep(1.0 / self.fps)
        if self.fault and self.frames_read >= self.fault_after:
            if self.fault_at is None:
                self.fault_at = time.monotonic()
            if self.fault == "freeze":
                return Frame(self._last.image.copy(), time.monotonic(), self.frames_read)
            if self.fault == "hang":
                time.sleep(30)
            raise SourceLost("fake camera unplugged")
        image = next(self.frames)
        frame = Frame(image, time.monotonic(), self.frames_read)
        self._last = frame
        self.frames_read += 1
        return frame


def noisy_frames(shape=(64, 80), seed=0):
    rng = np.random.default_rng(seed)
    while True:
        yield rng.integers(100, 140, shape, dtype=np.uint8)


# -- parsing SRC -------------------------------------------------------------------------------


def test_open_source_kinds(tmp_path):
    assert isinstance(open_source("0"), NewestFrame) and isinstance(open_source("0").inner, CameraSource)
    assert isinstance(open_source("rtsp://10.0.0.5/stream").inner, StreamSource)
    assert isinstance(open_source("http://cam.local/mjpg").inner, StreamSource)
    write_image(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    assert isinstance(open_source(str(tmp_path)), ImageFolderSource)
    (tmp_path / "line.avi").write_bytes(b"")
    assert isinstance(open_source(str(tmp_path / "line.avi")), VideoFileSource)
    assert isinstance(open_source("synthetic:seed=1,size=96x80"), SyntheticSource)


@pytest.mark.parametrize("text, message", [
    ("", "--camera is empty"),
    ("/dev/video99", "/dev/video99: no such device; `goggleqc cameras` lists"),
    ("nothing_here.avi", "nothing_here.avi: no such video file"),
    ("nothing_here", "is not a camera index, /dev/video device, URL, video file, image folder"),
    ("synthetic:seed=1,colour=red", "synthetic: unknown key 'colour'"),
    ("synthetic:size=12x12", "synthetic: size 12x12 is too small"),
    ("synthetic:size=big", "synthetic: size='big' is not a valid value"),
    ("synthetic:bits=12", "synthetic: bits=12; use 8 or 16"),
    ("synthetic:seed", "synthetic: 'seed' is not key=value"),
])
def test_open_source_bad_text(text, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("[", r"\[")):
        open_source(text)


def test_bad_files_say_why(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(InputError, match="not a video file"):
        open_source(str(tmp_path / "x.txt"))
    (tmp_path / "broken.avi").write_bytes(b"not a video at all")
    with pytest.raises(InputError, match="not a video OpenCV can read"):
        open_source(str(tmp_path / "broken.avi")).open()
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        ImageFolderSource(tmp_path / "empty").open()


# -- camera settings -------------------------------------------------------------------------


def test_mjpg_is_set_before_size_and_fps_and_every_set_is_read_back():
    cap = FakeCapture(refuse={cv2.CAP_PROP_AUTOFOCUS})
    reports = apply_camera_settings(cap, CameraSettings(width=1280, height=1024, fps=15, exposure=50))
    props = [p for p, _ in cap.calls]
    assert props.index(cv2.CAP_PROP_FOURCC) < props.index(cv2.CAP_PROP_FRAME_WIDTH) < props.index(cv2.CAP_PROP_FPS)
    assert props.index(cv2.CAP_PROP_AUTO_EXPOSURE) < props.index(cv2.CAP_PROP_EXPOSURE)  # auto off before manual value
    by_name = {r.name: r for r in reports}
    assert by_name["fourcc"].actual == "MJPG" and by_name["fourcc"].matches
    assert by_name["width"].matches and by_name["height"].actual == 1024
    assert not by_name["autofocus"].accepted and "refused" in by_name["autofocus"].line()
    assert by_name["auto_wb"].matches and by_name["buffer_frames"].actual == 1


def test_a_size_the_driver_ignores_is_reported_not_assumed():
    cap = FakeCapture(sizes=((640, 480),))
    reports = {r.name: r for r in apply_camera_settings(cap, CameraSettings(width=2448, height=2048))}
    assert reports["width"].accepted and not reports["width"].matches
    assert reports["width"].line() == "width: asked 2448, camera gives 640"


def test_camera_source_opens_with_explicit_backend_and_reports_settings():
    made = []

    def factory(device, backend):
        made.append((device, backend))
        return FakeCapture(device, backend)

    cam = CameraSource("0", 0, CameraSettings(width=1280, height=1024), capture_factory=factory)
    with cam:
        frame = cam.read()
    assert made == [(0, cv2.CAP_V4L2)]
    assert frame.image.ndim == 2 and frame.image.shape == (480, 640)  # colour MJPG frames become luminance
    info = cam.describe()
    assert info["backend"] == "FAKE"
    assert "fourcc=MJPG" in info["settings"] and info["settings_ok"]


def test_camera_that_does_not_open_is_lost_with_advice():
    cam = CameraSource("3", 3, capture_factory=lambda d, b: FakeCapture(opened=False))
    with pytest.raises(SourceLost, match="camera 3 cannot be opened; check the cable, `goggleqc cameras`"):
        cam.open()


def test_probe_lists_accepted_sizes_without_touching_controls():
    cap = FakeCapture(sizes=((640, 480), (1280, 1024)))
    info = probe_camera("/dev/video0", capture_factory=lambda d, b: cap)
    assert [(w, h) for w, h, _ in info.modes] == [(640, 480), (1280, 1024)]
    assert info.fourcc == "MJPG" and info.frame_ok
    changed = {p for p, _ in cap.calls}
    assert not changed & {cv2.CAP_PROP_AUTO_EXPOSURE, cv2.CAP_PROP_AUTO_WB, cv2.CAP_PROP_AUTOFOCUS}
    tried, found = list_cameras(["/dev/video0", "/dev/video1"],
                                capture_factory=lambda d, b: FakeCapture(opened=d == "/dev/video0"))
    assert tried == ["/dev/video0", "/dev/video1"] and [c.device for c in found] == ["/dev/video0"]


def test_cameras_command_says_cleanly_there_is_none(cli, monkeypatch):
    monkeypatch.setattr("goggleqc.capture.devices.candidate_devices", lambda: [])
    res = cli("cameras")
    assert res.exit_code == 1
    assert "no camera found" in res.output and "v4l2-ctl --list-devices" in res.output
    assert "Traceback" not in res.output


# -- playback ------------------------------------------------------------------------------------


def test_mjpg_video_and_image_folder_play_every_frame_in_order(tmp_path):
    frames = [np.full((64, 80), 20 + 30 * i, np.uint8) for i in range(6)]
    writer = cv2.VideoWriter(str(tmp_path / "v.avi"), cv2.VideoWriter.fourcc(*"MJPG"), 10, (80, 64), False)
    for f in frames:
        writer.write(f)
    writer.release()
    with open_source(str(tmp_path / "v.avi")) as src:
        got = list(src)
    assert [f.index for f in got] == list(range(6)) and got[0].image.shape == (64, 80)
    assert np.allclose([f.image.mean() for f in got], [f.mean() for f in frames], atol=2)
    assert got[3].t_s == pytest.approx(0.3)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, f in enumerate(frames):
        write_image(folder / f"f_{i:02d}.png", f)
    with open_source(str(folder)) as src:
        assert [int(fr.image.mean()) for fr in src] == [int(f.mean()) for f in frames]


def test_synthetic_station_is_the_station_of_goggleqc_samples(cli, tmp_path):
    res = cli("samples", tmp_path / "s", "--count", "0", "--seed", "4", "--size", "160x128")
    assert res.exit_code == 0, res.output
    truth = json.loads((tmp_path / "s" / "calibration" / "station_truth.json").read_text())
    line = SyntheticLine(parse_synthetic("synthetic:seed=4,size=160x128,lenses=1"))
    assert json.loads(json.dumps(line.params.to_dict())) == truth["params"]


def test_synthetic_line_is_deterministic_with_truth():
    opts = parse_synthetic("synthetic:seed=2,size=160x128,pixel=0.4,backlight=uniform,lenses=3,bad=0.5")
    a, b = SyntheticLine(opts), SyntheticLine(opts)
    assert a.n_frames == 3 * (6 + 8 + 10) + 6
    assert np.array_equal(a.frame(15), b.frame(15)) and not np.array_equal(a.frame(15), a.frame(16))
    for i in range(3):
        p = a.placement(i)
        assert p["verdict"] == ("pass" if p["kind"] == "good" else "fail")
    empty, placed = a.frame(0).astype(float), a.frame(a.placement(0)["still_frames"][0]).astype(float)
    assert abs(placed.mean() - empty.mean()) > 0.05 * empty.mean()  # the goggle frame is opaque


# -- grabber and watchdog ------------------------------------------------------------------------


def test_newest_frame_never_hands_out_a_stale_frame():
    cam = NewestFrame(FakeCamera(noisy_frames(), fps=200), timeout_s=1.0)
    with cam:
        first = cam.read()
        time.sleep(0.1)  # a slow inspection: ~20 frames arrive meanwhile
        second = cam.read()
    assert second.index > first.index + 5
    assert time.monotonic() - second.t_s < 1.0 and cam.dropped > 0


def test_a_hung_camera_is_lost_within_the_timeout():
    cam = NewestFrame(FakeCamera(noisy_frames(), fault="hang", fault_after=3), timeout_s=0.3)
    with cam:
        for _ in range(3):
            cam.read()
        t0 = time.monotonic()
        with pytest.raises(SourceLost, match="no frame for 0.3 s"):
            cam.read()
        assert time.monotonic() - t0 < 0.5


@pytest.mark.parametrize("fault", ["freeze", "unplug"])
def test_feed_detects_reconnects_and_never_repeats_a_frame(fault):
    made: list[FakeCamera] = []
    events = []
    stream = noisy_frames()

    def make():
        cam = FakeCamera(stream, fault=fault if not made else None, fault_after=10)
        made.append(cam)
        return cam

    feed = LiveFeed(make, timeout_s=0.3, freeze_s=0.3, backoff=Backoff(0.05, 0.4),
                    on_health=lambda h: events.append((time.monotonic(), h.state, h.message)))
    seen = []
    for frame in feed.frames():
        seen.append(frame.image.tobytes())
        if len(seen) == 30:
            feed.stop()
    feed.close()
    lost_at = next(t for t, state, _ in events if state == "lost")
    # stated detection time: freeze_s (0.3 s) for frozen frames, one read for an unplug; +0.2 s slack
    assert lost_at - made[0].fault_at < (0.5 if fault == "freeze" else 0.2)
    states = [s for _, s, _ in events]
    assert states[states.index("lost"):][:3] == ["lost", "reconnecting", "ok"]
    assert feed.health.reconnects == 1 and len(made) == 2
    assert len(set(seen)) == len(seen) == 30  # no frozen duplicate reached the reader


def test_backoff_doubles_to_a_ceiling():
    b = Backoff(0.5, 4.0)
    assert [b.delay_s(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]


def test_feed_keeps_trying_until_the_camera_returns():
    attempts = []

    def make():
        attempts.append(time.monotonic())
        if 2 <= len(attempts) <= 4:  # the second to fourth opens fail: still unplugged
            raise SourceLost("no device")
        fault = "unplug" if len(attempts) == 1 else None
        return FakeCamera(noisy_frames(seed=len(attempts)), fault=fault, fault_after=2)

    sleeps = []
    feed = LiveFeed(make, timeout_s=0.3, backoff=Backoff(0.01, 0.04), sleep=lambda s: sleeps.append(s))
    got = 0
    for _ in feed.frames():
        got += 1
        if got == 5:
            feed.stop()
    feed.close()
    assert sleeps == [0.01, 0.02, 0.04, 0.04] and got == 5 and feed.health.reconnects == 1
    assert len(attempts) == 5


def test_a_camera_that_never_opened_is_reported_at_once():
    def make():
        raise SourceLost("camera 0 cannot be opened")

    with pytest.raises(SourceLost, match="cannot be opened"):
        next(LiveFeed(make).frames())
