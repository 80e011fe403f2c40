"""Frames in parallel on Python threads: the interpreter's switch interval while they run.

The analyses spend most of their time in OpenCV and numpy, which release the interpreter
lock (GIL), and a few milliseconds per frame in Python between those calls, which hold it.
With two frames on two threads, a thread that comes back from a released call and finds
the other thread running Python waits for it to let go, and by default the holder is only
asked to after 5 ms (``sys.getswitchinterval()``), far longer than the stretches of Python
between two OpenCV calls. Every wait leaves a core idle.

:func:`frame_threads` shortens the interval while frames run on several threads. Measured
on the 2-core development machine, two threads inspecting 5 MP frames (8 interleaved rounds
of 32 frames, one process): 37.1 lenses/s median at the default 5 ms, 41.0 at 1 ms, 41.4 at
0.5 ms, 39.0 at 0.2 ms (more switches than work); 0.5 ms won in each of the 8 rounds. Two
processes, which share no lock, read 45–54 lenses/s in the same minutes.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

#: the interpreter's switch interval while frames run on several threads, seconds
FRAME_SWITCH_INTERVAL_S = 0.0005


@contextlib.contextmanager
def frame_threads(workers: int) -> Iterator[None]:
    """With ``workers`` > 1, set the switch interval to :data:`FRAME_SWITCH_INTERVAL_S` for the
    duration and restore it after (it is process-wide); with one worker, change nothing."""
    if workers <= 1:
        yield
        return
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, FRAME_SWITCH_INTERVAL_S))
    try:
        yield
    finally:
        sys.setswitchinterval(before)
