"""Archive re-grading on Dask distributed: the batch of :mod:`goggleqc.batch`, spread over a cluster.

The work per image is exactly the local batch's :class:`~goggleqc.batch.ImageJob` (read,
hash, decode, inspect, overlay), so a record from a Dask worker is the record the local
pool writes, field for field. What changes is where it runs:

- The job (station, spec, detector settings, overlay mode) is scattered to every worker
  once with ``broadcast=True``; tasks refer to that copy instead of carrying a station each.
- A task is a *chunk* of image paths, sized from the measured time per image so that each
  task is about :data:`TARGET_TASK_S` of work (:func:`chunk_size`): the scheduler's cost per
  task (a few ms) is then well under 1 % of the work, and the tail is split finely enough
  that every worker finishes at about the same time.
- At most :data:`TASKS_IN_FLIGHT_PER_THREAD` tasks per worker thread are submitted at a
  time, so the driver's memory does not grow with the archive, and results are taken with
  :class:`distributed.as_completed` and written to the local sinks (JSONL, CSV, SQLite) in
  the driver as each task finishes.
- A worker that dies mid-run: the scheduler reruns its tasks on the other workers (and its
  nanny restarts it). The driver writes each path once, so a chunk whose result arrives
  twice adds nothing; a chunk whose result was lost is recomputed, so nothing is missing.
- ``--resume``: only the resume state of a chunk's own paths travels with the chunk, so a
  million finished images are not shipped to every worker.

Images (and, with overlays, the output folder) must be reachable from every worker at the
path the driver names them by: see docs/cluster.md.
"""

from __future__ import annotations

import importlib.util
import math
import os
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import cv2

from goggleqc.batch import (OVERLAY_MODES, record_outcome, BatchSummary, ImageJob, InspectFn, Outcome, OutputError, Sink,
                            _StopOnSigint, _usable_cores)
from goggleqc.errors import InputError

#: how to get the optional dependency; every "dask is missing" message says this
INSTALL_HINT = "pip install 'goggleqc[dask]'"

#: seconds of work one task should hold: ~1 s keeps the scheduler's few ms per task below 1 %
#: while a lost worker costs at most a second or two of recomputation per task it held
TARGET_TASK_S = 1.0
#: images in each task of the first wave, before any time per image has been measured
FIRST_CHUNK = 4
#: upper bound on a chunk, so a run of very fast images (e.g. all skipped by --resume)
#: still streams results and progress
MAX_CHUNK = 512
#: tasks submitted but not yet written, per worker thread: one running, one queued behind it
TASKS_IN_FLIGHT_PER_THREAD = 2
#: times Dask reruns a task that raised (a transient share or network error); a task on a
#: worker that died is rescheduled by the scheduler regardless (``distributed.scheduler.allowed-failures``)
DEFAULT_RETRIES = 2
#: how long to wait to connect to a scheduler, and for it to have at least one worker
CONNECT_TIMEOUT_S = 10.0
WAIT_FOR_WORKERS_S = 60.0

#: Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536. Setting it at all turns off
#: glibc's dynamic mmap threshold, so every frame-sized array is a fresh mmap and page-faulted
#: in: the pipeline ran at half speed (640×512 px: 19 instead of 38 images/s on one core,
#: measured). Unset here for the LocalCluster; docs/cluster.md says how to unset it on workers.
LOCAL_CLUSTER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}

CLUSTER_HINT = ("with --executor dask the images, and OUT_DIR when overlays are written, must be reachable at the "
                "same path from every worker (or pass --overlays none)")


class ClusterError(OutputError):
    """The cluster failed mid-run (a task kept killing workers, the scheduler went away).

    A kind of :class:`~goggleqc.batch.OutputError` because the command treats it the same way:
    the records written so far are kept, the report is written, and ``--resume`` finishes.
    """


def require_dask():
    """Import ``distributed``, or raise :class:`InputError` saying how to install it."""
    try:
        import distributed
    except ImportError as exc:
        raise InputError(f"--executor dask needs Dask distributed, which is not installed ({exc}); "
                         f"install it with: {INSTALL_HINT}") from None
    return distributed


def chunk_size(s_per_image: float | None, *, n_threads: int = 1, remaining: int | None = None,
               target_s: float = TARGET_TASK_S, max_chunk: int = MAX_CHUNK) -> int:
    """How many images the next task gets.

    Parameters
    ----------
    s_per_image : float or None
        Measured worker time per image so far, in s (None before the first task returns).
    n_threads : int
        Worker threads in the cluster.
    remaining : int, optional
        Images not yet submitted, when known. The chunk is capped so that at least two tasks
        per thread remain, so the last tasks are small and every worker finishes together.
    target_s : float
        Seconds of work per task.
    max_chunk : int
        Largest chunk.

    Returns
    -------
    int
        ``target_s / s_per_image`` (:data:`FIRST_CHUNK` before any measurement), capped by
        the tail rule and ``max_chunk``, at least 1.
    """
    if s_per_image is None:
        n = FIRST_CHUNK
    else:
        n = round(target_s / max(s_per_image, 1e-6))
    if remaining is not None:
        n = min(n, math.ceil(remaining / (2 * max(n_threads, 1))))
    return int(max(1, min(n, max_chunk)))


@dataclass
class ChunkResult:
    """What one task returns: the outcomes of its paths and the worker time they took."""

    outcomes: list[Outcome]
    busy_s: float
    pid: int


def inspect_chunk(job: ImageJob, paths: Sequence[str], done: Mapping[str, str] | None = None) -> ChunkResult:
    """Run ``job`` over ``paths`` on a worker (the Dask task).

    Parameters
    ----------
    job : ImageJob
        The scattered job; ``done`` replaces its resume state for this chunk only.
    paths : sequence of str
        Absolute image paths, as the worker sees them.
    done : mapping of path -> content hash, optional
        Resume state of these paths.
    """
    # the cluster parallelises over images, as the local pool does with workers > 1; OpenCV's
    # own pool on top would oversubscribe the cores of every worker process
    cv2.setNumThreads(1)
    t0 = time.perf_counter()
    chunk_job = replace(job, done=dict(done) if done else None)
    outcomes = [chunk_job(p) for p in paths]
    return ChunkResult(outcomes, time.perf_counter() - t0, os.getpid())


def _warm_up() -> None:
    """Import the pipeline (and OpenCV, scikit-image) in a worker process."""
    import goggleqc.inspect.pipeline  # noqa: F401


@dataclass
class DaskSummary(BatchSummary):
    """:class:`~goggleqc.batch.BatchSummary` plus what the cluster did."""

    n_tasks: int = 0
    n_duplicates: int = 0
    busy_s: float = 0.0
    n_threads: int = 0
    worker_pids: set[int] = field(default_factory=set)

    @property
    def mean_chunk(self) -> float:
        """Mean images (inspected or skipped) per task."""
        return (self.n_done + self.n_skipped) / self.n_tasks if self.n_tasks else 0.0

    @property
    def overhead_ms_per_image(self) -> float:
        """Wall time not spent inside tasks, per image, in ms: ``(wall × threads − busy) / images``.

        Includes scheduling, transfer, the driver's writing and any idle thread at the start
        and the tail of the run.
        """
        n = self.n_done + self.n_skipped
        return (self.wall_s * self.n_threads - self.busy_s) / n * 1e3 if n else 0.0


def run_batch_dask(paths: Iterable[str | Path], inspect_fn: InspectFn, sinks: Sequence[Sink], client: Any, *,
                   overlays: str = "none", out_dir: str | Path | None = None, done: Mapping[str, str] | None = None,
                   total: int | None = None, retries: int = DEFAULT_RETRIES, target_task_s: float = TARGET_TASK_S,
                   on_record: Callable[[dict[str, Any], BatchSummary], None] | None = None,
                   on_skip: Callable[[str, BatchSummary], None] | None = None,
                   error_log: str | Path | None = None, stop: threading.Event | None = None) -> DaskSummary:
    """Inspect every path on a Dask cluster and stream records to ``sinks``, each path once.

    Parameters
    ----------
    paths : iterable of paths
        Consumed lazily (e.g. :func:`goggleqc.batch.iter_image_paths`); sent as absolute paths.
    inspect_fn : callable ``(image, name) -> Result``
        Must be picklable (:class:`~goggleqc.batch.LensInspector` is).
    sinks : sequence of objects with ``write(record)``
        Called in this thread, in completion order, once per inspected image.
    client : distributed.Client
        A connected client; left open.
    overlays, out_dir, done
        As for :func:`goggleqc.batch.run_batch`.
    total : int, optional
        Number of paths, when known: lets the last tasks shrink (:func:`chunk_size`).
    retries : int
        Reruns of a task that raised.
    target_task_s : float
        Seconds of work per task.
    on_record, on_skip, error_log, stop
        As for :func:`goggleqc.batch.run_batch`.

    Returns
    -------
    DaskSummary
        Sinks are not closed: the caller owns them.

    Raises
    ------
    OutputError
        A sink or overlay write failed; records written before are kept.
    ClusterError
        A task failed for a reason other than a bad image (it killed workers repeatedly, the
        scheduler was lost); records written before are kept.
    """
    from distributed import as_completed

    if overlays not in OVERLAY_MODES:
        raise InputError(f"--overlays {overlays!r}: use one of {', '.join(OVERLAY_MODES)}")
    out = Path(out_dir).resolve() if out_dir is not None else None
    if out is not None and overlays != "none":
        (out / "overlays" / "thumbs").mkdir(parents=True, exist_ok=True)
    done = done or {}
    stop = stop or threading.Event()
    summary = DaskSummary()
    run_id = uuid.uuid4().hex[:8]
    # shipped once to every worker (and fetched from a peer by a worker that joins later)
    job_future = client.scatter(ImageJob(inspect_fn, overlays=overlays, out_dir=out), broadcast=True, hash=False)
    source = iter(paths)
    exhausted = False
    submitted = 0
    written: set[str] = set()
    pending = 0
    ac = as_completed(loop=client.loop)

    def n_threads() -> int:
        return max(1, sum(client.nthreads().values()))

    s_per_image: float | None = None  # recent worker seconds per image (EWMA over tasks)

    def submit_more(threads: int) -> None:
        nonlocal exhausted, submitted, pending
        while not exhausted and not stop.is_set() and pending < TASKS_IN_FLIGHT_PER_THREAD * threads:
            remaining = total - submitted if total is not None else None
            n = chunk_size(s_per_image, n_threads=threads, remaining=remaining, target_s=target_task_s)
            chunk = []
            for path in source:
                chunk.append(os.path.abspath(path))
                if len(chunk) == n:
                    break
            else:
                exhausted = True
            if not chunk:
                break
            subset = {p: done[p] for p in chunk if p in done}
            ac.add(client.submit(inspect_chunk, job_future, chunk, subset, key=f"goggleqc-{run_id}-{submitted}",
                                 retries=retries))
            submitted += len(chunk)
            pending += 1

    def handle(result: ChunkResult) -> None:
        nonlocal s_per_image
        if result.outcomes:
            # weighted towards recent tasks: a worker's first task also pays its imports
            recent = result.busy_s / len(result.outcomes)
            s_per_image = recent if s_per_image is None else 0.5 * s_per_image + 0.5 * recent
        summary.n_tasks += 1
        summary.busy_s += result.busy_s
        summary.worker_pids.add(result.pid)
        for outcome in result.outcomes:
            if outcome.path in written:
                summary.n_duplicates += 1
                continue
            written.add(outcome.path)
            record_outcome(outcome, sinks, summary, on_skip=on_skip, on_record=on_record, error_log=error_log)

    try:
        with _StopOnSigint(stop):
            threads = summary.n_threads = n_threads()
            submit_more(threads)
            for future in ac:
                pending -= 1
                try:
                    result = future.result()
                except OutputError as exc:  # an overlay write failed on a worker
                    raise OutputError(f"{exc}; {CLUSTER_HINT}") from None
                except Exception as exc:
                    raise ClusterError(f"a Dask task failed ({type(exc).__name__}: {exc}); the records written so "
                                       "far are saved: check the workers' logs, then rerun with --resume") from None
                finally:
                    future.release()
                handle(result)
                if not stop.is_set():
                    threads = n_threads()
                    summary.n_threads = max(summary.n_threads, threads)
                    submit_more(threads)
                # on stop nothing new is submitted; the tasks already in flight finish and are written
            if stop.is_set() and not exhausted:
                summary.interrupted = True
    finally:
        for future in ac.futures:
            future.cancel()
        ac.clear()
        job_future.release()
        summary.wall_s = time.perf_counter() - summary.started
    return summary


class DaskRunner:
    """A Dask cluster to run batches on: connects to ``scheduler``, or starts a LocalCluster.

    Called like :func:`goggleqc.batch.run_batch` (``runner(paths, inspect_fn, sinks, workers,
    **options)``), so the ``inspect`` command swaps one for the other.

    Parameters
    ----------
    scheduler : str, optional
        Scheduler address, e.g. ``tcp://10.0.0.5:8786``. Without it a LocalCluster of
        ``n_workers`` processes with one thread each is started on this machine.
    n_workers : int, optional
        LocalCluster worker processes (default: the usable cores).
    total : int, optional
        Number of images of the run (for :func:`chunk_size`'s tail rule).
    retries : int
        Reruns of a task that raised.
    client : distributed.Client, optional
        Use this client (left open by :meth:`close`).

    Raises
    ------
    InputError
        Dask is not installed, the scheduler cannot be reached, or it has no workers.
    """

    def __init__(self, scheduler: str | None = None, n_workers: int | None = None, *, total: int | None = None,
                 retries: int = DEFAULT_RETRIES, client: Any = None,
                 connect_timeout_s: float | None = None, wait_for_workers_s: float | None = None):
        distributed = require_dask()
        import dask.config as dask_config
        connect_timeout_s = CONNECT_TIMEOUT_S if connect_timeout_s is None else connect_timeout_s
        wait_for_workers_s = WAIT_FOR_WORKERS_S if wait_for_workers_s is None else wait_for_workers_s
        self.scheduler = scheduler
        self.total = total
        self.retries = retries
        self.cluster = None
        self._own_client = client is None
        if client is not None:
            self.client = client
        elif scheduler:
            try:
                self.client = distributed.Client(scheduler, timeout=f"{connect_timeout_s}s", set_as_default=False)
            except (OSError, TimeoutError, ValueError) as exc:
                raise InputError(f"--scheduler {scheduler}: cannot reach the Dask scheduler ({exc}); start one with "
                                 "`dask scheduler` and check the address and port (default 8786)") from None
        else:
            if n_workers is not None and n_workers < 1:
                raise InputError(f"--workers must be 1 or more, not {n_workers}")
            # the dashboard needs bokeh; without it there is nothing to serve
            dashboard = ":0" if importlib.util.find_spec("bokeh") else None
            try:
                with dask_config.set(LOCAL_CLUSTER_CONFIG):
                    self.cluster = distributed.LocalCluster(n_workers=n_workers or _usable_cores(),
                                                            threads_per_worker=1, processes=True,
                                                            dashboard_address=dashboard)
            except (RuntimeError, OSError) as exc:
                raise InputError(f"cannot start a local Dask cluster ({exc}); run with --executor local, or start "
                                 "a scheduler and workers and pass --scheduler") from None
            self.client = distributed.Client(self.cluster, set_as_default=False)
        try:
            self.client.wait_for_workers(1, timeout=wait_for_workers_s)
        except (TimeoutError, OSError) as exc:
            self.close()
            raise InputError(f"--scheduler {scheduler}: no worker joined within {wait_for_workers_s:.0f} s ({exc}); "
                             f"start workers with `dask worker {scheduler}`") from None
        # import the pipeline on the workers now, so the first tasks measure inspection, not imports
        self.client.run(_warm_up)

    @property
    def n_threads(self) -> int:
        """Worker threads in the cluster now."""
        return sum(self.client.nthreads().values())

    def describe(self) -> str:
        """One line for the console: where the batch runs."""
        n_workers = len(self.client.nthreads())
        where = "LocalCluster" if self.cluster is not None else f"scheduler {self.scheduler or self.client.scheduler.address}"
        text = f"Dask {where}: {n_workers} workers, {self.n_threads} threads"
        if importlib.util.find_spec("bokeh"):
            text += f", dashboard {self.client.dashboard_link}"
        return text

    def __call__(self, paths: Iterable[str | Path], inspect_fn: InspectFn, sinks: Sequence[Sink],
                 workers: int | None = None, **options: Any) -> DaskSummary:
        """Run a batch on this cluster; ``workers`` is ignored (the cluster is already sized)."""
        options.setdefault("total", self.total)
        options.setdefault("retries", self.retries)
        return run_batch_dask(paths, inspect_fn, sinks, self.client, **options)

    def close(self) -> None:
        """Disconnect, and stop the LocalCluster if this runner started it."""
        if self._own_client:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()
            self.cluster = None

    def __enter__(self) -> "DaskRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
