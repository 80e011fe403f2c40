"""The station loop: frames in, one inspection per placement, verdicts shown and recorded.

The inspection and the sinks are injected, so the loop is tested with simple functions and
run with the real pipeline (:class:`goggleqc.batch.LensInspector`) and the batch sinks
(:class:`goggleqc.report.writers.JsonlWriter`, :class:`goggleqc.report.store.ResultStore`).

Every record is written as soon as its verdict exists: the image and overlay files first,
then one flushed ``results.jsonl`` line, then one committed SQLite row. A first Ctrl-C or a
SIGTERM lets the current inspection finish and ends the run cleanly; a kill loses at most
the inspection in progress.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from goggleqc.capture.watchdog import Health, LiveFeed
from goggleqc.errors import GoggleQCError, InputError
from goggleqc.inspect.results import Result, VerdictCounts
from goggleqc.line.display import Display, render_panel
from goggleqc.line.trigger import Trigger, TriggerStep, reduce_frame
from goggleqc.report.overlay import draw_overlay, write_png
from goggleqc.report.records import error_record, make_record, result_from_record

log = logging.getLogger("goggleqc.line")

SAVE_MODES = ("fail", "all", "none")

InspectFn = Callable[[np.ndarray, str], Result]


@dataclass
class Tally(VerdictCounts):
    """Running counts of a line run; ``yield`` is passes over all inspections."""

    @property
    def n(self) -> int:
        return self.n_done

    @property
    def yield_pct(self) -> float | None:
        return 100.0 * self.n_pass / self.n if self.n else None

    def line(self) -> str:
        if not self.n:
            return "yield: no lens yet"
        err = f", {self.n_error} error" if self.n_error else ""
        return f"yield {self.n_pass}/{self.n} = {self.yield_pct:.1f} % ({self.n_fail} fail{err})"


@dataclass(frozen=True)
class Inspection:
    """One inspection of the line.

    Attributes
    ----------
    seq : int
        1, 2, … within the run.
    result : Result
    record : dict
        What the sinks received.
    overlay : (M, N, 3) uint8 ndarray
        The inspected frame with defects and verdict drawn.
    latency_ms : float
        From the settled frame's arrival to the verdict being ready to show.
    frame_index : int
        The source's index of the settled frame.
    """

    seq: int
    result: Result
    record: dict
    overlay: np.ndarray
    latency_ms: float
    frame_index: int


@dataclass
class LineSummary:
    status: str = "running"
    frames: int = 0
    tally: Tally = field(default_factory=Tally)
    reconnects: int = 0
    wall_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def median_latency_ms(self) -> float | None:
        return float(np.median(self.latencies_ms)) if self.latencies_ms else None


def frame_hash(png: bytes) -> str:
    return "blake2b:" + hashlib.blake2b(png, digest_size=16).hexdigest()


class _GracefulStop:
    """While active, the first SIGINT or SIGTERM asks the loop to stop after the current frame."""

    def __init__(self, stop: Callable[[], None]):
        self.stop = stop
        self.previous: dict[int, Any] = {}
        self.asked = False

    def _handler(self, signum, frame) -> None:
        if self.asked and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.asked = True
        log.warning("signal %d: finishing the current inspection and stopping", signum)
        self.stop()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


class LineStation:
    """Trigger, inspect, show and record.

    Parameters
    ----------
    inspect_fn : callable
        ``inspect_fn(image, name) -> Result``.
    trigger : Trigger
    sinks : sequence
        Objects with ``write(record)`` (and ``close()``, called by the owner).
    display : Display, optional
        Where verdicts and camera health are shown.
    out_dir : Path, optional
        Where ``images/`` and ``overlays/`` go; nothing is saved without it.
    save : str
        ``fail`` (failed and error inspections), ``all`` or ``none``.
    source_text : str
        The ``--camera`` text, written into each record.
    expected_shape : (int, int), optional
        The station's frame shape (rows, columns); a camera giving another size stops the run
        at its first frame, rather than producing an error verdict for every lens.
    clock : callable
        Monotonic seconds.
    """

    def __init__(self, inspect_fn: InspectFn, trigger: Trigger, *, sinks: Sequence[Any] = (),
                 display: Display | None = None, out_dir: str | Path | None = None, save: str = "fail",
                 source_text: str = "", expected_shape: tuple[int, int] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if save not in SAVE_MODES:
            raise GoggleQCError(f"--save {save!r}: use {', '.join(SAVE_MODES)}")
        self.inspect_fn = inspect_fn
        self.trigger = trigger
        self.sinks = list(sinks)
        self.display = display
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.save = save
        self.source_text = source_text
        self.expected_shape = tuple(expected_shape) if expected_shape is not None else None
        self.clock = clock
        self.prefix = "line_" + datetime.now().strftime("%Y%m%dT%H%M%S")
        self.summary = LineSummary()
        self.inspections: list[Inspection] = []
        self.keep_inspections = True
        self._feed: LiveFeed | None = None

    # -- one settled frame -----------------------------------------------------------------------

    def show_verdict(self, image: np.ndarray, name: str) -> tuple[Result, np.ndarray, np.ndarray]:
        """A settled frame → the verdict, its overlay and the window panel (no file I/O).

        This is the path from a settled frame to the verdict on screen that the latency
        benchmark times. An input the pipeline refuses gives an ``error`` verdict.

        Returns
        -------
        result : Result
        overlay : (M, N, 3) uint8 ndarray
        panel : (H, W, 3) uint8 ndarray
            What the window would show.
        """
        result = self._inspect(image, name)
        overlay = draw_overlay(image, result.to_dict())
        panel = render_panel(overlay, result, self.summary.tally, self._health_line())
        return result, overlay, panel

    def _inspect(self, image: np.ndarray, name: str) -> Result:
        try:
            return self.inspect_fn(image, name)
        except GoggleQCError as exc:
            message = str(exc)
        except Exception as exc:  # a pipeline bug must not stop the line; the log keeps the traceback
            log.error("inspection of %s failed:\n%s", name, traceback.format_exc())
            message = f"internal error: {type(exc).__name__}: {exc}"
        return result_from_record(error_record(name, message))

    def _health_line(self) -> str:
        return self._feed.health.line() if self._feed is not None else ""

    def inspect_frame(self, image: np.ndarray, *, frame_index: int = 0, t_arrived: float | None = None,
                      step: TriggerStep | None = None) -> Inspection:
        """Inspect one settled (possibly averaged) frame, then show, save and record it."""
        t0 = self.clock() if t_arrived is None else t_arrived
        seq = self.summary.tally.n + 1
        name = f"{self.prefix}_{seq:05d}"
        result = self._inspect(image, name)
        record_src = result.to_dict()
        overlay = draw_overlay(image, record_src)
        latency_ms = (self.clock() - t0) * 1000.0
        self.summary.tally.add(result.verdict)
        self.summary.latencies_ms.append(latency_ms)
        path, content_hash, overlay_rel = f"line/{name}", None, None
        if self.out_dir is not None and (self.save == "all" or (self.save == "fail" and result.verdict != "pass")):
            ok, png = cv2.imencode(".png", image)  # lossless, native bit depth: the frame can be re-inspected
            if ok:
                (self.out_dir / "images").mkdir(parents=True, exist_ok=True)
                (self.out_dir / "overlays").mkdir(parents=True, exist_ok=True)
                png.tofile(str(self.out_dir / "images" / f"{name}.png"))
                write_png(self.out_dir / "overlays" / f"{name}.png", overlay)
                path, content_hash, overlay_rel = f"images/{name}.png", frame_hash(png.tobytes()), f"overlays/{name}.png"
        record = make_record(result, path=path, content_hash=content_hash, overlay=overlay_rel)
        record["extra"] = {**(record.get("extra") or {}), "line": {
            "source": self.source_text, "frame_index": frame_index, "seq": seq,
            "averaged_frames": self.trigger.settings.average_frames, "mode": self.trigger.settings.mode,
            "latency_ms": round(latency_ms, 2),
            "occupied_frac": round(step.occupied_frac, 4) if step else None}}
        for sink in self.sinks:
            sink.write(record)
        inspection = Inspection(seq, result, record, overlay, latency_ms, frame_index)
        if self.keep_inspections:
            self.inspections.append(inspection)
        log.info("%s %s %s", name, result.verdict, ";".join(r.code for r in result.reasons))
        if self.display is not None:
            self.display.verdict(inspection, self.summary.tally, self._health_line())
        return inspection

    # -- the loop ---------------------------------------------------------------------------------

    def _on_health(self, health: Health) -> None:
        if self.display is not None:
            self.display.health(health.line(), health.state)

    def run(self, feed: LiveFeed, *, max_inspections: int | None = None, duration_s: float | None = None,
            handle_signals: bool = True) -> LineSummary:
        """Run until the source ends, ``quit`` is pressed, a limit is reached, or a stop signal.

        Parameters
        ----------
        feed : LiveFeed
            Frames with watchdog and reconnects.
        max_inspections : int, optional
            Stop after this many inspections.
        duration_s : float, optional
            Stop after this long.
        handle_signals : bool
            Turn the first Ctrl-C / SIGTERM into a clean stop (main thread only).
        """
        self._feed = feed
        feed.on_health = self._on_health
        if self.display is not None:
            feed.sleep = lambda s: self._idle(s)
        start = self.clock()
        status = "finished"
        guard = _GracefulStop(feed.stop) if handle_signals else None
        try:
            if guard:
                guard.__enter__()
            for frame in feed.frames():
                self.summary.frames += 1
                if self.expected_shape is not None and frame.image.shape[:2] != self.expected_shape:
                    h, w = self.expected_shape
                    raise InputError(f"{self.source_text} gives {frame.image.shape[1]}×{frame.image.shape[0]} frames "
                                     f"but the station was calibrated at {w}×{h}; set --size {w}x{h} or recalibrate")
                if feed.reconnected:  # the scene may have changed while the camera was away
                    feed.reconnected = False
                    self.trigger.restart_motion()
                step = self.trigger.update(reduce_frame(frame.image), frame.image)
                if self.display is not None:
                    self.display.live(frame.image, f"trigger: {step.state} ({self.trigger.settings.mode})",
                                      feed.health.line())
                    key = self.display.poll(0)
                    if key == "quit":
                        status = "stopped"
                        break
                    if key == "trigger":
                        self.trigger.press()
                if step.fire:
                    self.inspect_frame(step.image, frame_index=frame.index, t_arrived=self._arrival(frame), step=step)
                    if max_inspections is not None and self.summary.tally.n >= max_inspections:
                        break
                if duration_s is not None and self.clock() - start >= duration_s:
                    break
            if guard and guard.asked:
                status = "interrupted"
            elif feed.health.state == "ended" and feed.health.message.startswith("lost"):
                status = "camera lost"
        except KeyboardInterrupt:
            status = "interrupted"
        finally:
            if guard:
                guard.__exit__()
            feed.close()
            self.summary.status = status
            self.summary.reconnects = feed.health.reconnects
            self.summary.wall_s = self.clock() - start
        return self.summary

    def _arrival(self, frame) -> float:
        # live frames carry their monotonic arrival time; file frames are inspected as they are read
        return frame.t_s if self._feed is not None and self._feed.source is not None and self._feed.source.live \
            else self.clock()

    def _idle(self, seconds: float) -> None:
        """Wait while keeping the window responsive (used between reconnect attempts)."""
        end = self.clock() + seconds
        while (left := end - self.clock()) > 0:
            key = self.display.poll(min(left, 0.1))
            if key == "quit" and self._feed is not None:
                self._feed.stop()
                return
