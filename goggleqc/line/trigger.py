"""When to inspect: a lens arrives in the fixture, settles, is inspected once, and leaves.

The trigger works on a reduced frame (long side 64 px, ``INTER_AREA``), which averages
out sensor noise and costs well under a millisecond at 5 MP. Two measures drive it:

- **occupancy**: the fraction of reduced pixels that differ from the empty-fixture reference
  by more than ``change`` (relative). A goggle's opaque frame alone blocks about a tenth of
  the field, and clear lens areas change it by 7–15 % (τ 0.85–0.93), while exposure drift
  stays within a few percent.
- **motion**: the fraction of reduced pixels that changed by more than ``motion`` between two
  consecutive frames.

States (auto mode)::

    LEARN ──still k frames──► EMPTY ──occupied──► SETTLING ──still k frames──► (inspect) ─► PLACED
      ▲ (no reference given)    ▲                     │ empty again: nothing inspected      │
      │                         └─────────────────────┴──────── empty for k frames ◄────────┘

Manual mode inspects the first settled frame after a key press; continuous mode inspects
every settled run of frames, lens or not.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

#: states of :class:`Trigger`
LEARN, EMPTY, SETTLING, PLACED = "learn", "empty", "settling", "placed"
MODES = ("auto", "manual", "continuous")


def reduce_frame(image: np.ndarray, long_side_px: int = 64) -> np.ndarray:
    """A small float32 copy of a frame for triggering.

    Parameters
    ----------
    image : (M, N) ndarray
        Luminance, any dtype.
    long_side_px : int
        Length of the reduced frame's longer side.

    Returns
    -------
    (m, n) float32 ndarray
        Area-averaged, in the input's DN.
    """
    h, w = image.shape[:2]
    step = max(h, w) // (4 * long_side_px)
    if step >= 2:  # an integer first step in the native dtype is OpenCV's fast path (≈1 ms at 5 MP)
        image = cv2.resize(image[:h - h % step, :w - w % step], (w // step, h // step), interpolation=cv2.INTER_AREA)
        h, w = image.shape[:2]
    image = image.astype(np.float32)  # averaging in uint8 would round away the changes we look for
    scale = long_side_px / max(h, w)
    if scale >= 1:
        return image
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _dark_floor(small: np.ndarray) -> float:
    """The level below which changes are judged against a quarter of the bright panel.

    Traps, dark pattern cells and the opaque goggle frame are near the dark level, where a
    relative change is mostly noise; the 95th percentile is the bright backlight even when
    the goggle covers most of the view.
    """
    return 0.25 * float(np.percentile(small, 95))


@dataclass(frozen=True)
class TriggerSettings:
    """Thresholds of the trigger; fractions are of reduced pixels, changes relative.

    Attributes
    ----------
    mode : str
        ``auto``, ``manual`` or ``continuous``.
    settle_frames : int
        k: consecutive frames without motion before a lens counts as settled, and empty
        frames before the trigger re-arms.
    average_frames : int
        N: frames averaged for one inspection; all of them must be still.
    change : float
        Relative change of a reduced pixel against the reference that counts as covered.
    occupied_frac, empty_frac : float
        Covered fraction above which the fixture holds something, and below which it is
        empty (hysteresis between them).
    motion : float
        Relative change of a reduced pixel between consecutive frames that counts as motion.
    still_frac : float
        Moving fraction below which a frame counts as still.
    reference_rate : float
        How fast the reference follows slow drift of the bare backlight (weight per still
        empty frame).
    """

    mode: str = "auto"
    settle_frames: int = 3
    average_frames: int = 1
    change: float = 0.05
    occupied_frac: float = 0.02
    empty_frac: float = 0.005
    motion: float = 0.03
    still_frac: float = 0.01
    reference_rate: float = 0.05

    def check(self) -> None:
        from goggleqc.errors import InputError

        if self.mode not in MODES:
            raise InputError(f"--mode {self.mode!r}: use {', '.join(MODES)}")
        if self.settle_frames < 1:
            raise InputError(f"--settle-frames must be at least 1, not {self.settle_frames}")
        if not 1 <= self.average_frames <= 64:
            raise InputError(f"--average must be 1–64 frames, not {self.average_frames}")
        if not 0 < self.empty_frac < self.occupied_frac < 1:
            raise InputError("the empty fraction must be below the occupied fraction, both in (0, 1)")


@dataclass(frozen=True)
class TriggerStep:
    """What the trigger made of one frame."""

    state: str
    occupied_frac: float
    moving_frac: float
    still_frames: int
    fire: bool
    image: np.ndarray | None = None  # the (averaged) frame to inspect when ``fire``


class Trigger:
    """The trigger state machine; feed it every frame with :meth:`update`.

    Parameters
    ----------
    settings : TriggerSettings
    reference : (m, n) float32 ndarray, optional
        The empty fixture as :func:`reduce_frame` gives it (e.g. from the station's dark +
        flat). Without one, the first still frames are taken as the empty fixture.
    """

    def __init__(self, settings: TriggerSettings = TriggerSettings(), reference: np.ndarray | None = None):
        settings.check()
        self.settings = settings
        self.reference = None if reference is None else reference.astype(np.float32)
        self.state = EMPTY if reference is not None else LEARN
        self.previous: np.ndarray | None = None
        self.still = 0
        self.empty_run = 0
        self.pending_key = False
        self.recent: deque = deque(maxlen=settings.average_frames)

    def press(self) -> None:
        """The manual trigger key: inspect the next settled frame."""
        self.pending_key = True

    def restart_motion(self) -> None:
        """Forget the previous frame (after a reconnect), so the settle count starts again."""
        self.previous = None
        self.still = 0
        self.recent.clear()

    def _covered(self, small: np.ndarray) -> float:
        ref = self.reference
        rel = np.abs(small - ref) / np.maximum(ref, _dark_floor(ref))
        return float(np.count_nonzero(rel > self.settings.change)) / rel.size

    def _moving(self, small: np.ndarray) -> float:
        prev = self.previous
        rel = np.abs(small - prev) / np.maximum(prev, _dark_floor(prev))
        return float(np.count_nonzero(rel > self.settings.motion)) / rel.size

    def update(self, small: np.ndarray, frame=None) -> TriggerStep:
        """Advance by one frame.

        Parameters
        ----------
        small : (m, n) float32 ndarray
            The frame reduced by :func:`reduce_frame`.
        frame : optional
            The full frame; the last ``average_frames`` still ones are kept in :attr:`recent`
            for the inspection.

        Returns
        -------
        TriggerStep
            ``fire`` is True on the one frame at which to inspect.
        """
        s = self.settings
        if self.previous is None or small.shape != self.previous.shape:
            moving = 1.0
        else:
            moving = self._moving(small)
        self.previous = small
        if moving < s.still_frac:
            self.still += 1
        else:
            self.still = 0
            self.recent.clear()
        self.recent.append(frame)
        settled = self.still >= max(s.settle_frames, s.average_frames - 1)
        if self.reference is None or self.reference.shape != small.shape:
            if settled:  # the first still view is taken as the empty fixture
                self.reference = small.copy()
                self.state = EMPTY
            return TriggerStep(LEARN if self.reference is None else self.state, 0.0, moving, self.still, False)
        covered = self._covered(small)
        fire = False
        if s.mode == "continuous":
            fire = settled
            self.state = PLACED if covered > s.occupied_frac else EMPTY
        elif s.mode == "manual":
            fire = settled and self.pending_key
            self.state = PLACED if covered > s.occupied_frac else EMPTY
        elif self.state == EMPTY:
            if covered > s.occupied_frac:
                self.state = SETTLING
                fire = settled  # something already still in the fixture (e.g. at start-up)
            elif moving < s.still_frac:  # follow slow backlight drift while nothing is there
                self.reference += s.reference_rate * (small - self.reference)
        elif self.state == SETTLING:
            if covered < s.empty_frac:
                self.state = EMPTY  # passed through without settling: nothing to inspect
            else:
                fire = settled
        image = None
        if fire:
            image = self.averaged()
            self.pending_key = False
            if s.mode == "auto":
                self.state = PLACED
                self.empty_run = 0
            if s.mode == "continuous":  # the next inspection averages frames after this one
                self.still = 0
                self.recent.clear()
        elif self.state == PLACED and s.mode == "auto":
            self.empty_run = self.empty_run + 1 if covered < s.empty_frac else 0
            if self.empty_run >= s.settle_frames:
                self.state = EMPTY  # re-armed
        return TriggerStep(self.state, covered, moving, self.still, fire, image)

    def averaged(self) -> np.ndarray | None:
        """The mean of the last ``average_frames`` still frames, in their dtype (rounded)."""
        frames = [f for f in self.recent if f is not None]
        if not frames:
            return None
        if len(frames) == 1:
            return frames[0]
        acc = np.zeros(frames[0].shape, np.float32)
        for f in frames:
            acc += f
        acc /= len(frames)
        info = np.iinfo(frames[0].dtype) if frames[0].dtype.kind in "ui" else None
        if info is None:
            return acc
        return np.clip(np.rint(acc), info.min, info.max).astype(frames[0].dtype)
