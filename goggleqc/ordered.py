"""A function over a stream of items on worker threads or processes, results in order.

For work that is many independent inspections of frames already read (the threshold fit's
ladder of inspections, a test's cached set). OpenCV and numpy release the interpreter lock
in their big calls but the pipeline makes many small ones too, so on small frames two
threads are barely faster than one, and two processes nearly twice as fast (60 lenses of
320×256 through the threshold fit's ladder: 14.4 s on one worker, 14.3 s on two threads, 7.8 s
on two processes; ``docs/thresholds.md``, "Workers"). At most ``2 · workers`` items are taken
from the stream ahead of the result being waited for, so a stream that reads frames from
disk holds a few of them in memory, not all.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

POOLS = ("threads", "processes")

_held: Callable | None = None


def _hold(fn: Callable, opencv_threads: int) -> None:
    """Start a worker process: keep ``fn`` for every item it is sent."""
    from goggleqc.batch import start_worker_process

    global _held
    start_worker_process(opencv_threads)
    _held = fn


def _call_held(item):
    assert _held is not None, "worker started without a function"
    return _held(item)


def map_in_order(fn: Callable[[T], R], items: Iterable[T], workers: int, pool: str = "threads") -> Iterator[R]:
    """``fn(item)`` for each item, computed on ``workers`` threads or processes, yielded in order.

    ``workers <= 1`` computes in the calling thread. With ``pool="processes"``, ``fn`` and
    the items must pickle; ``fn`` (which may hold a station's arrays) is sent to each worker
    once, when it starts as the batch's do (:func:`goggleqc.batch.process_context`). An
    exception from ``fn`` is raised when its item's turn comes; no further item is taken.
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {', '.join(POOLS)}, not {pool!r}")
    if workers <= 1:
        yield from map(fn, items)
        return
    executor: Executor
    if pool == "processes":
        from goggleqc.batch import process_context

        executor = ProcessPoolExecutor(max_workers=workers, mp_context=process_context(), initializer=_hold,
                                       initargs=(fn, 1))
        call = _call_held
    else:
        executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="goggleqc-map")
        call = fn
    with executor:
        pending = deque()
        for item in items:
            pending.append(executor.submit(call, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
