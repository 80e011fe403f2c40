"""Showing the verdict: a window with a big PASS/FAIL, or the same lines on the console.

Both displays take the same calls from the station loop (:class:`Display`):
``live`` for every frame, ``verdict`` after each inspection, ``health`` when the camera's
state changes, and ``poll`` to wait and collect operator keys (``trigger``, ``quit``).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from typing import Callable, Protocol

import cv2
import numpy as np

from goggleqc.errors import InputError
from goggleqc.report.overlay import COLOURS, display_bgr

#: width of the side column of the window, px
SIDE_PX = 380
#: the inspected image is shown at most this wide, px
VIEW_PX = 900


class Display(Protocol):
    def live(self, image: np.ndarray, state: str, health_line: str) -> None: ...

    def verdict(self, inspection, tally, health_line: str) -> None: ...

    def health(self, health_line: str, state: str) -> None: ...

    def poll(self, wait_s: float) -> str | None: ...

    def close(self) -> None: ...


def verdict_lines(result) -> list[str]:
    """The reasons of a result as short lines (``transmittance 62.1 % < 74.4 %``)."""
    out = []
    for r in result.reasons:
        if r.value is not None and r.limit is not None:
            op = "<" if r.code == "transmittance" else ">"
            zone = f" ({r.zone})" if r.zone else ""
            out.append(f"{r.code}{zone} {r.value:.3g} {r.unit} {op} {r.limit:.3g} {r.unit}".replace("  ", " "))
        else:
            out.append(f"{r.code}: {r.message}")
    return out


def summary_line(result) -> str:
    """Haze, transmittance and defect counts of a result in one line."""
    parts = []
    if result.haze_pct is not None:
        parts.append(f"haze {result.haze_pct:.2f} %" if result.haze_kind == "calibrated" else
                     f"haze index {result.haze_pct:.2f}")
    if result.transmittance_pct is not None:
        parts.append(f"T {result.transmittance_pct:.1f} %")
    parts.append(f"{len(result.scratches)} scratch, {len(result.spots)} spot, {len(result.coating)} coating")
    return ", ".join(parts)


def _put(canvas, text, org, scale, colour, thick=1):
    cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)


def render_panel(overlay_bgr: np.ndarray | None, result, tally, health_line: str, state_line: str = "",
                 live: np.ndarray | None = None) -> np.ndarray:
    """Compose the station window: the inspected image with its overlay, and a side column.

    Parameters
    ----------
    overlay_bgr : (M, N, 3) uint8 ndarray or None
        The last inspected frame with its defects drawn; None before the first inspection.
    result : Result or None
        The last verdict.
    tally : Tally
        Running counts for the yield.
    health_line, state_line : str
        Camera health and trigger state.
    live : (m, n) ndarray, optional
        The current camera frame, shown small in the side column.

    Returns
    -------
    (H, W, 3) uint8 ndarray
        The window image (pure: nothing is shown).
    """
    if overlay_bgr is None:
        view = np.zeros((600, VIEW_PX, 3), np.uint8)
        _put(view, "waiting for a lens", (30, 300), 1.2, (200, 200, 200), 2)
    else:
        h, w = overlay_bgr.shape[:2]
        scale = min(1.0, VIEW_PX / w)
        view = overlay_bgr if scale == 1.0 else cv2.resize(overlay_bgr, (round(w * scale), round(h * scale)),
                                                           interpolation=cv2.INTER_AREA)
    height = max(view.shape[0], 520)
    side = np.full((height, SIDE_PX, 3), 32, np.uint8)
    y = 90
    if result is not None:
        colour = COLOURS.get(result.verdict, (255, 255, 255))
        cv2.rectangle(side, (10, 10), (SIDE_PX - 10, 110), colour, cv2.FILLED)
        _put(side, result.verdict.upper(), (24, 90), 2.6, (255, 255, 255), 6)
        y = 140
        _put(side, result.image[-34:], (12, y), 0.5, (220, 220, 220))
        for line in verdict_lines(result)[:6]:
            y += 24
            _put(side, line[:40], (12, y), 0.5, colour)
        y += 24
        _put(side, summary_line(result)[:44], (12, y), 0.45, (200, 200, 200))
    y += 40
    _put(side, tally.line(), (12, y), 0.55, (255, 255, 255), 1)
    if live is not None:
        bgr = display_bgr(live)
        lw = SIDE_PX - 20
        lh = max(1, round(bgr.shape[0] * lw / bgr.shape[1]))
        y0 = min(y + 20, height - lh - 70)
        if y0 > y:
            side[y0:y0 + lh, 10:10 + lw] = cv2.resize(bgr, (lw, lh), interpolation=cv2.INTER_AREA)
    _put(side, state_line[:46], (12, height - 40), 0.5, (200, 200, 200))
    ok = health_line.startswith("camera ok")
    _put(side, health_line[:46], (12, height - 14), 0.5, (120, 220, 120) if ok else (60, 60, 255))
    if view.shape[0] < height:
        view = cv2.copyMakeBorder(view, 0, height - view.shape[0], 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    return np.hstack([view, side])


class ConsoleDisplay:
    """Headless stations: one line per verdict, one per camera state change, keys from stdin.

    Parameters
    ----------
    echo : callable
        Prints one line (the CLI passes its rich console).
    keys : queue.Queue, optional
        Operator keys (``trigger``, ``quit``), e.g. from :func:`stdin_keys`.
    """

    def __init__(self, echo: Callable[[str], None] = print, keys: queue.Queue | None = None):
        self.echo = echo
        self.keys = keys

    def live(self, image, state, health_line) -> None:
        return None  # the console shows verdicts, not frames

    def verdict(self, inspection, tally, health_line: str) -> None:
        r = inspection.result
        why = "; ".join(verdict_lines(r)) or summary_line(r)
        self.echo(f"#{inspection.seq} {r.image}  {r.verdict.upper()}  {why}  | {tally.line()} | "
                  f"{inspection.latency_ms:.0f} ms | {health_line}")

    def health(self, health_line: str, state: str) -> None:
        self.echo(health_line)

    def poll(self, wait_s: float) -> str | None:
        if self.keys is None:
            if wait_s > 0:
                time.sleep(wait_s)
            return None
        try:
            return self.keys.get(timeout=wait_s) if wait_s > 0 else self.keys.get_nowait()
        except queue.Empty:
            return None

    def close(self) -> None:
        return None


def stdin_keys() -> queue.Queue:
    """Operator keys from the terminal: Enter triggers an inspection, ``q`` + Enter quits."""
    keys: queue.Queue = queue.Queue()

    def read() -> None:
        for line in sys.stdin:
            keys.put("quit" if line.strip().lower() in ("q", "quit") else "trigger")

    threading.Thread(target=read, name="stdin keys", daemon=True).start()
    return keys


class WindowDisplay:
    """The OpenCV window: SPACE or ``t`` triggers, ``q`` or Esc quits.

    Raises :class:`InputError` when no display can be opened (then use ``--no-window``).
    """

    TITLE = "goggleqc line"

    def __init__(self, max_fps: float = 15.0):
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise InputError("no display to open a window on (DISPLAY is not set); use --no-window")
        try:
            cv2.namedWindow(self.TITLE, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise InputError(f"cannot open a window ({exc.err}); use --no-window") from None
        self.min_dt = 1.0 / max_fps
        self._shown_at = 0.0
        self.overlay = None
        self.result = None
        self.tally = None
        self.health_line = ""
        self.state = ""
        self.live_image = None

    def _show(self) -> None:
        from goggleqc.line.station import Tally

        panel = render_panel(self.overlay, self.result, self.tally or Tally(), self.health_line, self.state,
                             self.live_image)
        cv2.imshow(self.TITLE, panel)
        self._shown_at = time.monotonic()

    def live(self, image, state, health_line) -> None:
        self.live_image, self.state, self.health_line = image, state, health_line
        if time.monotonic() - self._shown_at >= self.min_dt:  # drawing every frame would cost the inspection time
            self._show()

    def verdict(self, inspection, tally, health_line: str) -> None:
        self.overlay, self.result, self.tally, self.health_line = inspection.overlay, inspection.result, tally, health_line
        self._show()

    def health(self, health_line: str, state: str) -> None:
        self.health_line = health_line
        self._show()

    def poll(self, wait_s: float) -> str | None:
        key = cv2.waitKey(max(1, int(wait_s * 1000))) & 0xFF
        if key in (ord("q"), 27):
            return "quit"
        if key in (ord(" "), ord("t")):
            return "trigger"
        return None

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.TITLE)
        except cv2.error:
            pass
