"""Frame sources behind one interface: cameras, streams, video files, image folders, the simulator.

Every source is opened from a text the user types (``--camera SRC``):

========================  ============================================================
``0``, ``1`` …            a camera by index (``CAP_V4L2`` on Linux)
``/dev/video0``           a V4L2 device path
``rtsp://…``, ``http://…``  a network stream (FFmpeg, with open and read timeouts)
``line.avi``              a video file (any container/codec FFmpeg reads, e.g. MJPG AVI)
``frames/``               an image folder played as a stream, in name order
``synthetic:seed=3,…``    the simulator as a live camera (:mod:`goggleqc.capture.synthetic`)
========================  ============================================================

Frames come out as monochrome luminance (station-model.md §1), at the native dtype.

Live sources (cameras and streams) are read by a grabber thread that keeps only the newest
frame (:class:`NewestFrame`), so a slow inspection never works on a frame that waited in a
driver queue. Losing a live source raises :class:`SourceLost`; the watchdog in
:mod:`goggleqc.capture.watchdog` turns that into reconnects.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from goggleqc.capture.imagefile import IMAGE_SUFFIXES, read_image, to_luminance
from goggleqc.errors import GoggleQCError, InputError

log = logging.getLogger("goggleqc.capture")

VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".m4v", ".mjpg", ".mjpeg", ".webm", ".wmv", ".mpg", ".mpeg")
URL_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")


class SourceLost(GoggleQCError):
    """A live source stopped delivering frames (unplugged, frozen, network down, late)."""


@dataclass(frozen=True)
class Frame:
    """One frame from a source.

    Attributes
    ----------
    image : (M, N) uint8 or uint16 ndarray
        Luminance, native bit depth.
    t_s : float
        Capture time in seconds: ``time.monotonic()`` when a live frame arrived, or the
        stream position for files and the simulator.
    index : int
        Running frame number from this source, from 0.
    """

    image: np.ndarray
    t_s: float
    index: int


class Source(ABC):
    """A stream of frames: ``open()``, ``read()`` until None, ``close()``; also a context manager.

    ``live`` sources (cameras, network streams) run in real time and can be lost; finite
    sources (files, folders, a finite simulated line) end with ``read() → None``.
    """

    kind: str = "source"
    live: bool = False

    def __init__(self, text: str):
        self.text = text
        self.frames_read = 0
        self.is_open = False

    @abstractmethod
    def open(self) -> None:
        """Open the source; raises :class:`InputError` (or :class:`SourceLost` for a live one)."""

    @abstractmethod
    def read(self) -> Frame | None:
        """The next frame, or None at the end of a finite stream."""

    def close(self) -> None:
        self.is_open = False

    def describe(self) -> dict[str, Any]:
        """What the source is and how it is doing, for the health line and the log."""
        return {"source": self.text, "kind": self.kind, "live": self.live, "open": self.is_open,
                "frames": self.frames_read}

    def __enter__(self) -> "Source":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self):
        while (frame := self.read()) is not None:
            yield frame


# -- camera settings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraSettings:
    """What to ask of a USB camera. ``None`` leaves a property as the camera has it.

    Exposure, white balance and focus are locked by default: an automatic loop would change
    the gain ``g`` between the flat and each lens (station-model.md §2) and fight the
    backlight's traps and pattern.

    Attributes
    ----------
    fourcc : str or None
        Pixel format, ``MJPG`` by default: USB 2 bandwidth carries full-size frames at a useful
        rate only compressed. It is set before the size, which drivers validate against it.
    width, height : int or None
        Frame size in pixels.
    fps : float or None
        Frames per second.
    exposure : float or None
        Manual exposure in the driver's units (V4L2: 100 µs steps for ``exposure_absolute``).
    gain : float or None
        Analogue gain in the driver's units.
    lock_exposure, lock_white_balance, lock_focus : bool
        Switch the automatic loops off.
    wb_temperature_k : float or None
        White-balance temperature once the automatic loop is off.
    focus : float or None
        Manual focus position in the driver's units.
    buffer_frames : int or None
        Driver queue length; 1 so a read returns the newest frame.
    """

    fourcc: str | None = "MJPG"
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    exposure: float | None = None
    gain: float | None = None
    lock_exposure: bool = True
    lock_white_balance: bool = True
    lock_focus: bool = True
    wb_temperature_k: float | None = None
    focus: float | None = None
    buffer_frames: int | None = 1


@dataclass(frozen=True)
class SettingReport:
    """One ``set()``: what was asked, whether the driver took it, and what it reads back."""

    name: str
    requested: Any
    accepted: bool
    actual: Any

    @property
    def matches(self) -> bool:
        if not self.accepted:
            return False
        if isinstance(self.requested, str):
            return self.requested == self.actual
        try:
            return abs(float(self.actual) - float(self.requested)) <= 1e-6 + 0.01 * abs(float(self.requested))
        except (TypeError, ValueError):
            return False

    def line(self) -> str:
        if self.matches:
            return f"{self.name}={self.actual}"
        if not self.accepted:
            return f"{self.name}: refused (asked {self.requested}, camera has {self.actual})"
        return f"{self.name}: asked {self.requested}, camera gives {self.actual}"


def fourcc_text(value: float) -> str:
    """The four characters of a ``CAP_PROP_FOURCC`` value (``''`` when the driver gives 0)."""
    code = int(value)
    text = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))
    return text if code and text.isprintable() else ""


def _auto_exposure_off_values() -> tuple[float, ...]:
    # V4L2 reports auto exposure as a menu: 1 = manual, 3 = aperture priority. OpenCV's V4L2
    # backend passes the value through, while DirectShow and others use the 0.25/0.75 convention.
    return (1.0, 0.25) if sys.platform.startswith("linux") else (0.25, 1.0)


def apply_camera_settings(cap, settings: CameraSettings) -> list[SettingReport]:
    """Apply ``settings`` to an open ``cv2.VideoCapture`` in the order drivers need.

    The FOURCC goes first, then width, height and FPS (a driver checks a size against the
    current pixel format), then the automatic loops are switched off before their manual
    values are set. Every ``set()`` return is kept and every property read back, because
    drivers silently clamp or ignore values.

    Parameters
    ----------
    cap : cv2.VideoCapture or anything with ``set(prop, value) -> bool`` and ``get(prop)``
    settings : CameraSettings

    Returns
    -------
    list of SettingReport
        In the order applied.
    """
    reports: list[SettingReport] = []

    def put(name: str, prop: int, value: float, shown: Any = None) -> bool:
        ok = bool(cap.set(prop, value))
        actual = cap.get(prop)
        reports.append(SettingReport(name, value if shown is None else shown, ok,
                                     fourcc_text(actual) if prop == cv2.CAP_PROP_FOURCC else tidy_number(actual)))
        return ok

    s = settings
    if s.fourcc:
        put("fourcc", cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*s.fourcc.ljust(4)[:4]), s.fourcc)
    if s.width:
        put("width", cv2.CAP_PROP_FRAME_WIDTH, s.width)
    if s.height:
        put("height", cv2.CAP_PROP_FRAME_HEIGHT, s.height)
    if s.fps:
        put("fps", cv2.CAP_PROP_FPS, s.fps)
    if s.buffer_frames:
        put("buffer_frames", cv2.CAP_PROP_BUFFERSIZE, s.buffer_frames)
    if s.lock_exposure:
        for value in _auto_exposure_off_values():
            if put("auto_exposure", cv2.CAP_PROP_AUTO_EXPOSURE, value):
                break
    if s.exposure is not None:
        put("exposure", cv2.CAP_PROP_EXPOSURE, s.exposure)
    if s.gain is not None:
        put("gain", cv2.CAP_PROP_GAIN, s.gain)
    if s.lock_white_balance:
        put("auto_wb", cv2.CAP_PROP_AUTO_WB, 0)
    if s.wb_temperature_k is not None:
        put("wb_temperature", cv2.CAP_PROP_WB_TEMPERATURE, s.wb_temperature_k)
    if s.lock_focus:
        put("autofocus", cv2.CAP_PROP_AUTOFOCUS, 0)
    if s.focus is not None:
        put("focus", cv2.CAP_PROP_FOCUS, s.focus)
    return reports


def tidy_number(value: float) -> float | int:
    """A property value as the driver meant it: an int when whole, else 4 decimals."""
    return int(value) if float(value).is_integer() else round(float(value), 4)


def camera_backend() -> int:
    """The explicit capture backend for USB cameras on this platform."""
    if sys.platform.startswith("linux"):
        return cv2.CAP_V4L2
    if sys.platform == "win32":
        return cv2.CAP_DSHOW
    if sys.platform == "darwin":
        return cv2.CAP_AVFOUNDATION
    return cv2.CAP_ANY


def quiet_opencv() -> None:
    """Silence OpenCV's own warnings (failed probes print them); our messages say what happened."""
    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:  # builds without the logging utilities
        pass


# -- sources -----------------------------------------------------------------------------------


class _CaptureSource(Source):
    """Common code for sources read through ``cv2.VideoCapture``."""

    def __init__(self, text: str):
        super().__init__(text)
        self.cap = None
        self.size: tuple[int, int] | None = None
        self.backend: str | None = None
        self._t0 = 0.0
        self._t_last = 0.0
        self._fps_s = 0.0

    def _opened(self, cap) -> None:
        if cap is None or not cap.isOpened():
            raise self._not_found()
        self.cap = cap
        self.is_open = True
        self._t0 = time.monotonic()
        try:
            self.backend = cap.getBackendName()
        except cv2.error:
            self.backend = None

    def _not_found(self) -> GoggleQCError:
        return InputError(f"{self.text}: cannot be opened")

    def _grab(self) -> np.ndarray | None:
        ok, image = self.cap.read()
        if not ok or image is None:
            return None
        image = to_luminance(image)
        self.size = (image.shape[1], image.shape[0])
        now = time.monotonic()
        if self.frames_read:  # exponential average of the frame interval: the measured fps
            dt = now - self._t_last
            self._fps_s = dt if self._fps_s == 0 else 0.9 * self._fps_s + 0.1 * dt
        self._t_last = now
        return image

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None
        super().close()

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["size"] = list(self.size) if self.size else None
        out["fps_measured"] = round(1.0 / self._fps_s, 2) if self._fps_s > 0 else None
        out["backend"] = self.backend
        return out


class CameraSource(_CaptureSource):
    """A USB camera by index or device path, opened with the platform's explicit backend."""

    kind = "camera"
    live = True

    def __init__(self, text: str, device: int | str, settings: CameraSettings | None = None, *,
                 capture_factory=cv2.VideoCapture):
        super().__init__(text)
        self.device = device
        self.settings = settings or CameraSettings()
        self.reports: list[SettingReport] = []
        self._factory = capture_factory

    def _not_found(self) -> GoggleQCError:
        return SourceLost(f"camera {self.text} cannot be opened; check the cable, `goggleqc cameras`, "
                          "`v4l2-ctl --list-devices`, and that no other program holds it")

    def open(self) -> None:
        quiet_opencv()
        self._opened(self._factory(self.device, camera_backend()))
        self.reports = apply_camera_settings(self.cap, self.settings)
        for rep in self.reports:
            if not rep.matches:
                log.warning("camera %s: %s", self.text, rep.line())
        log.info("camera %s opened: %s", self.text, ", ".join(r.line() for r in self.reports))

    def read(self) -> Frame | None:
        image = self._grab()
        if image is None:
            raise SourceLost(f"camera {self.text} returned no frame (unplugged or stopped)")
        frame = Frame(image, time.monotonic(), self.frames_read)
        self.frames_read += 1
        return frame

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["settings"] = [r.line() for r in self.reports]
        out["settings_ok"] = all(r.matches for r in self.reports)
        return out


class StreamSource(_CaptureSource):
    """An RTSP/HTTP network stream through FFmpeg, with open and read timeouts."""

    kind = "stream"
    live = True

    def __init__(self, text: str, *, timeout_s: float = 5.0, capture_factory=cv2.VideoCapture):
        super().__init__(text)
        self.timeout_ms = int(timeout_s * 1000)
        self._factory = capture_factory

    def _not_found(self) -> GoggleQCError:
        return SourceLost(f"stream {self.text} cannot be opened (check the URL, network and credentials)")

    def open(self) -> None:
        quiet_opencv()
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self.timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, self.timeout_ms]
        self._opened(self._factory(self.text, cv2.CAP_FFMPEG, params))

    def read(self) -> Frame | None:
        image = self._grab()
        if image is None:
            raise SourceLost(f"stream {self.text} stopped sending frames")
        frame = Frame(image, time.monotonic(), self.frames_read)
        self.frames_read += 1
        return frame


class VideoFileSource(_CaptureSource):
    """A video file, every frame in order (no frames dropped), timestamped by stream position."""

    kind = "video"
    live = False

    def __init__(self, path: str | Path):
        super().__init__(str(path))
        self.path = Path(path)
        self.fps = 0.0

    def open(self) -> None:
        if not self.path.exists():
            raise InputError(f"{self.path}: no such video file")
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a folder; an image folder is played as a stream only "
                             "when it holds images")
        quiet_opencv()
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise InputError(f"{self.path}: not a video OpenCV can read (try an MJPG AVI or an MP4)")
        self._opened(cap)
        self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)

    def read(self) -> Frame | None:
        image = self._grab()
        if image is None:
            return None
        t = self.frames_read / self.fps if self.fps > 0 else float(self.frames_read)
        frame = Frame(image, t, self.frames_read)
        self.frames_read += 1
        return frame


class ImageFolderSource(Source):
    """An image folder played as a stream: its images in name order, optionally looped."""

    kind = "folder"
    live = False

    def __init__(self, path: str | Path, *, fps: float = 10.0, loop: bool = False):
        super().__init__(str(path))
        self.path = Path(path)
        self.fps = fps
        self.loop = loop
        self.files: list[Path] = []
        self._next = 0

    def open(self) -> None:
        if not self.path.is_dir():
            raise InputError(f"{self.path}: no such folder")
        self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise InputError(f"{self.path}: holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self._next = 0
        self.is_open = True

    def read(self) -> Frame | None:
        if self._next >= len(self.files):
            if not self.loop:
                return None
            self._next = 0
        image = read_image(self.files[self._next])
        self._next += 1
        frame = Frame(image, self.frames_read / self.fps, self.frames_read)
        self.frames_read += 1
        return frame

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["images"] = len(self.files)
        return out


# -- the newest-frame grabber ------------------------------------------------------------------


class NewestFrame(Source):
    """Read a live source in a thread and keep only its newest frame.

    A driver queue, or an inspection slower than the camera, would otherwise hand out frames
    that are seconds old. ``read()`` returns a frame that has not been returned before,
    waiting at most ``timeout_s``; when none comes it raises :class:`SourceLost`, so a camera
    that stops sending is noticed even if its driver call blocks. The inner source is opened,
    read and closed by the thread alone, never concurrently.
    """

    live = True

    def __init__(self, inner: Source, *, timeout_s: float = 2.0):
        super().__init__(inner.text)
        self.inner = inner
        self.kind = inner.kind
        self.timeout_s = timeout_s
        self._cond = threading.Condition()
        self._newest: Frame | None = None
        self._delivered = -1
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def open(self) -> None:
        self.inner.open()  # in the caller's thread, so open errors surface here
        self.is_open = True
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"grab {self.text}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                frame = self.inner.read()
                with self._cond:
                    if frame is None:
                        self._error = SourceLost(f"{self.text}: the stream ended")
                    else:
                        if self._newest is not None and self._newest.index > self._delivered:
                            self.dropped += 1
                        self._newest = frame
                    self._cond.notify_all()
                if frame is None:
                    return
        except BaseException as exc:  # handed to the reader; a thread must not die silently
            with self._cond:
                self._error = exc
                self._cond.notify_all()
        finally:
            try:
                self.inner.close()
            except Exception:  # a vanished device may fail to release; nothing more to do
                log.debug("closing %s failed", self.text, exc_info=True)

    def read(self) -> Frame | None:
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            while True:
                if self._newest is not None and self._newest.index > self._delivered:
                    frame = self._newest
                    self._delivered = frame.index
                    self.frames_read += 1
                    return frame
                if self._error is not None:
                    err = self._error
                    if isinstance(err, GoggleQCError):
                        raise SourceLost(str(err)) if not isinstance(err, SourceLost) else err
                    raise SourceLost(f"{self.text}: capture failed ({err})") from err
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SourceLost(f"{self.text}: no frame for {self.timeout_s:.1f} s")
                self._cond.wait(left)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            if self._thread.is_alive():  # blocked in a driver call on a vanished device
                log.warning("%s: the capture thread is stuck in the driver; leaving it behind", self.text)
            self._thread = None
        super().close()

    def describe(self) -> dict[str, Any]:
        out = self.inner.describe()
        out.update(open=self.is_open, frames=self.frames_read, dropped_stale=self.dropped)
        return out


# -- parsing SRC ---------------------------------------------------------------------------------


def open_source(text: str, *, settings: CameraSettings | None = None, timeout_s: float = 2.0,
                fps: float | None = None) -> Source:
    """Build (not open) the source a ``--camera`` text names; live ones come wrapped in :class:`NewestFrame`.

    Parameters
    ----------
    text : str
        A camera index, a V4L2 device path, a URL, a video file, an image folder, or
        ``synthetic:key=value,...``.
    settings : CameraSettings, optional
        For cameras only.
    timeout_s : float
        How long a live source may go without a new frame before it counts as lost.
    fps : float, optional
        Play rate for image folders.

    Raises
    ------
    InputError
        When the text names nothing usable, with what was expected.
    """
    text = str(text).strip()
    if not text:
        raise InputError("--camera is empty; give a camera index (0), a device (/dev/video0), a URL, "
                         "a video file, an image folder, or synthetic:")
    if text.startswith("synthetic:") or text == "synthetic":
        from goggleqc.capture.synthetic import SyntheticSource  # the simulator is only loaded when asked for

        return SyntheticSource.from_text(text)
    if text.lower().startswith(URL_SCHEMES):
        return NewestFrame(StreamSource(text, timeout_s=max(timeout_s, 1.0) * 2), timeout_s=timeout_s)
    if text.isdigit():
        return NewestFrame(CameraSource(text, int(text), settings), timeout_s=timeout_s)
    path = Path(text)
    if text.startswith("/dev/"):
        if not path.exists():
            raise InputError(f"{text}: no such device; `goggleqc cameras` lists the cameras this machine has")
        return NewestFrame(CameraSource(text, text, settings), timeout_s=timeout_s)
    if path.is_dir():
        return ImageFolderSource(path, fps=fps or 10.0)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        if not path.exists():
            raise InputError(f"{text}: no such video file")
        return VideoFileSource(path)
    if path.exists():
        raise InputError(f"{text}: not a video file ({', '.join(VIDEO_SUFFIXES)}) or an image folder")
    raise InputError(f"--camera {text!r} is not a camera index, /dev/video device, URL, video file, image "
                     "folder or synthetic:…")

