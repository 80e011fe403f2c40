"""Keep a live camera going: notice when it is gone, reconnect with backoff, say so.

A camera is gone when no new frame arrives within ``timeout_s`` (unplugged, driver hung,
network down) or when its frames stop changing for ``freeze_s`` (a driver that keeps
handing out its last buffer). Sensor noise makes two real exposures differ in some pixel,
so identical frames mean nothing new was captured; they are dropped at once and never
reach the trigger, so no verdict is made on a stale frame.

Finite sources (video files, image folders, the simulator) are played as they are: the
watchdog is for live sources.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import numpy as np

from goggleqc.capture.sources import Frame, NewestFrame, Source, SourceLost
from goggleqc.errors import GoggleQCError

log = logging.getLogger("goggleqc.capture")

OK, LOST, RECONNECTING, ENDED, STARTING = "ok", "lost", "reconnecting", "ended", "starting"


@dataclass(frozen=True)
class Health:
    """The camera's state for the health line.

    Attributes
    ----------
    state : str
        ``starting``, ``ok``, ``lost``, ``reconnecting`` or ``ended``.
    message : str
        One human line: what happened and what the station is doing about it.
    frames : int
        Frames delivered since start (all connections).
    fps : float
        Measured frames per second (exponential average).
    reconnects : int
        Successful reconnections since start.
    outage_s : float
        Length of the current outage, or of the last one once back.
    """

    state: str = STARTING
    message: str = "starting"
    frames: int = 0
    fps: float = 0.0
    reconnects: int = 0
    outage_s: float = 0.0

    def line(self) -> str:
        if self.state == OK:
            tail = f", {self.reconnects} reconnect(s)" if self.reconnects else ""
            return f"camera ok: {self.fps:.1f} fps, {self.frames} frames{tail}"
        return f"camera {self.state}: {self.message}"


@dataclass(frozen=True)
class Backoff:
    """Waits between reconnect attempts: ``first_s``, doubling, at most ``max_s``."""

    first_s: float = 0.5
    max_s: float = 10.0

    def delay_s(self, attempt: int) -> float:
        return min(self.max_s, self.first_s * 2 ** max(0, attempt - 1))


def signature(image: np.ndarray) -> bytes:
    """A cheap fingerprint of a frame's content: every 7th pixel of every 7th row.

    A prime stride avoids locking onto a periodic backlight pattern; ~2 % of the pixels is
    enough, because sensor noise changes many of them between real exposures.
    """
    return np.ascontiguousarray(image[::7, ::7]).tobytes()


class LiveFeed:
    """Frames from a source that is reopened whenever it is lost.

    Parameters
    ----------
    make_source : callable
        Returns a new, unopened :class:`Source` (called again for every reconnect).
    timeout_s : float
        No new frame for this long means the camera is gone.
    freeze_s : float
        Identical frames for this long mean the camera is gone.
    backoff : Backoff
        Waits between reconnect attempts.
    sleep : callable
        ``sleep(seconds)``; the station passes one that keeps its window responsive.
    on_health : callable, optional
        Called with a :class:`Health` whenever the state changes.
    give_up_s : float, optional
        Stop trying after an outage this long (None: keep trying, as a station should).
    retry_first_open : bool
        Keep trying when the source cannot be opened at the start. Off by default: a camera
        that never opened is more likely misconfigured than unplugged, so that is reported
        at once; a camera lost after streaming is always retried.
    clock : callable
        Monotonic seconds.

    Notes
    -----
    A camera is reported lost within ``timeout_s`` (+ one read) when frames stop, and within
    ``freeze_s`` (+ one frame interval) when they freeze.
    """

    def __init__(self, make_source: Callable[[], Source], *, timeout_s: float = 2.0, freeze_s: float = 2.0,
                 backoff: Backoff = Backoff(), sleep: Callable[[float], None] = time.sleep,
                 on_health: Callable[[Health], None] | None = None, give_up_s: float | None = None,
                 retry_first_open: bool = False, clock: Callable[[], float] = time.monotonic):
        self.make_source = make_source
        self.timeout_s = timeout_s
        self.freeze_s = freeze_s
        self.backoff = backoff
        self.sleep = sleep
        self.on_health = on_health
        self.give_up_s = give_up_s
        self.retry_first_open = retry_first_open
        self.clock = clock
        self.health = Health()
        self.source: Source | None = None
        self.stopped = False
        self.lost_at: float | None = None
        self.reconnected = False  # set when frames resume after an outage, cleared by the reader
        self._last_sig: bytes | None = None
        self._last_new: float = 0.0
        self._last_t: float | None = None

    def _set(self, **changes) -> None:
        before = self.health
        self.health = replace(self.health, **changes)
        if self.on_health is not None and (before.state != self.health.state or before.message != self.health.message):
            self.on_health(self.health)

    def _open(self) -> Source:
        source = self.make_source()
        if source.live and not isinstance(source, NewestFrame):
            source = NewestFrame(source, timeout_s=self.timeout_s)
        elif isinstance(source, NewestFrame):
            source.timeout_s = self.timeout_s
        source.open()
        return source

    def describe(self) -> dict:
        out = self.source.describe() if self.source is not None else {}
        out["health"] = self.health.line()
        return out

    def stop(self) -> None:
        """Ask :meth:`frames` to end after the current frame."""
        self.stopped = True

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None

    def _lost(self, why: str) -> None:
        now = self.clock()
        self.lost_at = now
        log.warning("camera lost: %s; reconnecting", why)
        self._set(state=LOST, message=f"{why}; reconnecting")
        self.close()

    def _reconnect(self) -> bool:
        """Try until the source opens again (True), or give up / stop (False)."""
        attempt = 0
        while not self.stopped:
            attempt += 1
            wait_s = self.backoff.delay_s(attempt)
            outage = self.clock() - (self.lost_at or self.clock())
            if self.give_up_s is not None and outage + wait_s > self.give_up_s:
                log.error("camera still lost after %.1f s; giving up", outage)
                self._set(state=ENDED, message=f"lost for {outage:.0f} s; gave up", outage_s=outage)
                return False
            self._set(state=RECONNECTING, message=f"attempt {attempt} in {wait_s:.1f} s (lost {outage:.0f} s ago)",
                      outage_s=outage)
            self.sleep(wait_s)
            if self.stopped:
                return False
            try:
                self.source = self._open()
            except GoggleQCError as exc:
                log.info("reconnect attempt %d failed: %s", attempt, exc)
                continue
            outage = self.clock() - (self.lost_at or self.clock())
            log.warning("camera back after %.1f s (attempt %d)", outage, attempt)
            self._set(state=OK, message=f"back after {outage:.1f} s", reconnects=self.health.reconnects + 1,
                      outage_s=outage)
            self.reconnected = True
            self._last_sig = None
            self._last_new = self.clock()
            return True
        return False

    def frames(self) -> Iterator[Frame]:
        """Yield new frames until a finite source ends, :meth:`stop` is called, or it gives up.

        Raises
        ------
        InputError
            When a file source cannot be opened.
        SourceLost
            When a live source cannot be opened at the start (unless ``retry_first_open``).
        """
        try:
            self.source = self._open()
        except SourceLost as exc:
            if not self.retry_first_open:
                raise
            self.lost_at = self.clock()
            log.warning("camera not available: %s", exc)
            self._set(state=LOST, message=str(exc))
            if not self._reconnect():
                return
        self._last_new = self.clock()
        self._set(state=OK, message="streaming")
        while not self.stopped:
            live = self.source.live
            try:
                frame = self.source.read()
            except SourceLost as exc:
                if not live:
                    raise
                self._lost(str(exc))
                if not self._reconnect():
                    return
                continue
            now = self.clock()
            if frame is None:
                self._set(state=ENDED, message="the stream ended")
                return
            if live:
                sig = signature(frame.image)
                if sig == self._last_sig:  # nothing new was captured: never inspect it
                    if now - self._last_new > self.freeze_s:
                        self._lost(f"frames frozen for {now - self._last_new:.1f} s")
                        if not self._reconnect():
                            return
                    continue
                self._last_sig = sig
                self._last_new = now
            if self._last_t is not None and now > self._last_t:
                dt = now - self._last_t
                fps = 1.0 / dt
                self.health = replace(self.health, fps=fps if self.health.fps == 0 else 0.9 * self.health.fps + 0.1 * fps)
            self._last_t = now
            self.health = replace(self.health, frames=self.health.frames + 1)
            yield frame
