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

import multiprocessing
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import TypeVar

import cv2

T = TypeVar("T")
R = TypeVar("R")

#: what workers can be: threads of this process or processes of their own (the batch's choice
#: between them is measured at :data:`goggleqc.batch.DEFAULT_POOL`)
POOLS = ("threads", "processes")


def start_worker_process(opencv_threads: int = 1) -> None:
    """What every worker process does first: ignore Ctrl-C and size OpenCV's own pool.

    Ctrl-C reaches every process of the terminal's group; it is the parent's to handle (it
    lets the images being inspected finish), so a worker ignores it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(opencv_threads)


def process_context():
    """How worker processes start: from a fork server that has imported the pipeline (not by
    forking this process, whose other threads, such as a progress bar's or OpenCV's own, may
    hold locks), or spawned where there is no fork server."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["goggleqc.batch", "goggleqc.inspect.pipeline"])
    return context


#: the function a worker process runs, held once when the process starts
_held: Callable | None = None


def hold_in_worker(fn: Callable, opencv_threads: int) -> None:
    """A worker process's initializer: start it (:func:`start_worker_process`) and keep
    ``fn`` for every item it is sent (:func:`call_held`), so that ``fn``, which may hold a
    station's arrays, crosses to each worker once."""
    global _held
    start_worker_process(opencv_threads)
    _held = fn


def call_held(item):
    """``fn(item)`` for the function :func:`hold_in_worker` kept in this worker."""
    assert _held is not None, "worker started without a function"
    return _held(item)


def map_in_order(fn: Callable[[T], R], items: Iterable[T], workers: int, pool: str = "threads") -> Iterator[R]:
    """``fn(item)`` for each item, computed on ``workers`` threads or processes, yielded in order.

    ``workers <= 1`` computes in the calling thread. With ``pool="processes"``, ``fn`` and
    the items must pickle; ``fn`` (which may hold a station's arrays) is sent to each worker
    once, when it starts (:func:`process_context`, :func:`hold_in_worker`). An
    exception from ``fn`` is raised when its item's turn comes; no further item is taken.
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {', '.join(POOLS)}, not {pool!r}")
    if workers <= 1:
        yield from map(fn, items)
        return
    executor: Executor
    if pool == "processes":
        executor = ProcessPoolExecutor(max_workers=workers, mp_context=process_context(), initializer=hold_in_worker,
                                       initargs=(fn, 1))
        call = call_held
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
