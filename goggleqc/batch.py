"""The streaming batch runner: inspect any number of image files in bounded memory.

Paths are walked lazily (:func:`iter_image_paths`) and fed to a pool of workers with at
most ``max_in_flight`` images submitted at a time, so 100,000 files hold no more memory
than ten. Each worker reads a file, hashes it, decodes it, inspects it and draws its
overlay (:class:`ImageJob`). Workers are threads (OpenCV and numpy release the GIL in their
big calls, so one image decodes while another is analysed) or processes
(:class:`JobProcessPool`: each holds the job, sent once, and is sent only paths; see
:data:`DEFAULT_POOL` for when they pay). Records are handed to the sinks in
the calling thread as each image completes, so a single SQLite connection suffices and
every record is on disk before the next is taken.

The per-image function is injected: ``inspect_fn(image, name) -> Result``. The CLI passes
:class:`LensInspector` (the real pipeline); benchmarks pass :func:`decode_only`; a
distributed executor can submit the same :class:`ImageJob`, which is picklable when its
``inspect_fn`` is.

Ctrl-C (SIGINT) sets a stop flag instead of raising in the middle of a write: no new
images are started, the images being inspected are finished and written, the sinks are
closed, and the summary says ``interrupted``.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pickle
import re
import signal
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence

import cv2
import numpy as np

from goggleqc.capture.imagefile import decode_image
from goggleqc.errors import GoggleQCError, InputError
from goggleqc.inspect.results import Result, VerdictCounts
from goggleqc.inspect.tone import png_tone
from goggleqc.ordered import POOLS, call_held, hold_in_worker, process_context
from goggleqc.report.overlay import draw_overlay, thumbnail, write_png
from goggleqc.report.records import error_record, make_record

#: file suffixes a folder or glob contributes (an explicitly named file is always tried)
BATCH_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours taskset and container CPU sets
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


#: Workers by default: one per usable core (at most 8). Measured on the 2-core
#: development machine with 5 MP PNGs (docs/results-db.md, "Choosing --workers"): 2 threads
#: give 1.97× the images/s of 1 decoding and 1.73× with the full pipeline; 3 or 4 add
#: nothing while each costs another frame of memory.
DEFAULT_WORKERS = max(1, min(_usable_cores(), 8))

#: How the workers share the cores: threads of this process (the default) or separate
#: processes. OpenCV and numpy release the interpreter lock in their big calls, but the
#: pipeline also makes many small ones: two processes inspect 5 MP frames in memory about a
#: third faster than two threads. In a batch, reading and decoding each file (which releases
#: the lock) narrow that to nothing for PNG files and to about a tenth for BMP, while each
#: process takes about a second to start, receive the station and build its cached plans,
#: and holds its own copy of everything (docs/results-db.md, "Processes or threads").
DEFAULT_POOL = "threads"

#: images submitted but not yet written, per worker: enough to keep every worker busy while
#: the main thread writes, few enough that memory stays at a handful of frames
IN_FLIGHT_PER_WORKER = 2

OVERLAY_MODES = ("fail", "all", "none")

InspectFn = Callable[[np.ndarray, str], Result]


class Sink(Protocol):
    def write(self, record: dict[str, Any]) -> Any: ...

    def close(self) -> None: ...


class OutputError(GoggleQCError):
    """Results could not be written (disk full, folder removed, permissions)."""


# -- finding images ------------------------------------------------------------------------------


def _has_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _walk(folder: Path, exclude: frozenset[str], top: bool = True) -> Iterator[Path]:
    """Image files under ``folder``, depth first, each folder's entries in name order.

    A subfolder that cannot be listed (permissions, removed during the walk) is yielded
    itself, so it gets an ``error`` record saying so instead of vanishing from the batch.
    """
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)  # names only: one folder's worth of strings
    except OSError as exc:
        if top:
            raise InputError(f"{folder}: cannot list this folder ({exc.strerror or exc})") from None
        yield folder
        return
    for entry in entries:
        try:
            is_dir = entry.is_dir()
        except OSError:
            continue
        if is_dir:
            if os.path.abspath(entry.path) not in exclude and not entry.name.startswith("."):
                yield from _walk(Path(entry.path), exclude, top=False)
        elif entry.name.lower().endswith(BATCH_SUFFIXES):
            yield Path(entry.path)


def check_inputs(inputs: Sequence[str | Path]) -> None:
    """Refuse, before any work, an input that is neither a file, a folder nor a glob."""
    if not inputs:
        raise InputError("no PATH given; name an image, a folder or a glob such as 'lenses/*.png'")
    for item in inputs:
        text = str(item)
        if not os.path.exists(text) and not _has_glob(text):
            raise InputError(f"{text}: no such file or folder (quote a glob so the shell does not expand it)")


def iter_image_paths(inputs: Sequence[str | Path], *, exclude: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Yield image paths lazily from files, folders (recursive) and globs, each path once.

    Parameters
    ----------
    inputs : sequence of str or Path
        An image file (always yielded, whatever its suffix, so a mislabelled file gets a
        clear error record), a folder (walked recursively for png, jpg, bmp and tif files,
        skipping hidden folders) or a glob (``**`` recurses).
    exclude : iterable of paths
        Folders not to walk, e.g. the output folder when it lies inside an input folder.

    Notes
    -----
    Nothing is listed up front: memory holds one folder's file names and the set of paths
    already yielded (to drop duplicates when inputs overlap).
    """
    excluded = frozenset(os.path.abspath(p) for p in exclude)
    seen: set[str] = set()
    for item in inputs:
        text = str(item)
        if os.path.isdir(text):
            found: Iterable[Path] = _walk(Path(text), excluded)
        elif os.path.exists(text):
            found = [Path(text)]
        elif _has_glob(text):
            found = (Path(p) for p in glob.iglob(text, recursive=True)
                     if p.lower().endswith(BATCH_SUFFIXES) and os.path.isfile(p)
                     and not any(os.path.abspath(p).startswith(e + os.sep) for e in excluded))
        else:
            raise InputError(f"{text}: no such file or folder")
        for path in found:
            key = os.path.abspath(path)
            if key not in seen:
                seen.add(key)
                yield path


def count_image_paths(inputs: Sequence[str | Path], *, exclude: Iterable[str | Path] = ()) -> int:
    """How many paths :func:`iter_image_paths` yields (a walk that keeps no list, for the progress bar)."""
    return sum(1 for _ in iter_image_paths(inputs, exclude=exclude))


# -- reading one file ----------------------------------------------------------------------------


def read_file(path: str | Path) -> tuple[np.ndarray, str]:
    """The bytes of a file and their ``blake2b:<hex>`` hash, with a clear :class:`InputError` if unreadable."""
    path = Path(path)
    try:
        if path.is_dir():
            with os.scandir(path):  # raises for a folder the walk could not list either
                pass
            raise InputError(f"{path}: is a folder, not an image")
        data = np.fromfile(path, dtype=np.uint8)  # handles non-ASCII paths, unlike cv2.imread
    except PermissionError:
        what = "folder" if path.is_dir() else "file"
        raise InputError(f"{path}: permission denied; check the {what}'s read permission") from None
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (removed while the batch ran?)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return data, "blake2b:" + hashlib.blake2b(data, digest_size=16).hexdigest()


# -- per-image work ------------------------------------------------------------------------------


def decode_only(image: np.ndarray, name: str) -> Result:
    """An ``inspect_fn`` that does nothing after decoding: the baseline batch throughput is measured with it."""
    return Result(image=name, verdict="pass", lens_found=False)


@dataclass(frozen=True)
class LensInspector:
    """The real ``inspect_fn``: :func:`goggleqc.inspect.pipeline.inspect_lens` with a station and spec bound.

    A plain frozen dataclass rather than a closure, so a process or Dask executor can pickle it.
    """

    station: Any
    spec: Any
    pixel_size_mm: float | None = None
    #: the tone curve of uncalibrated pictures; None: what the file declares, else by its
    #: name (a JPEG is sRGB, :func:`goggleqc.inspect.tone.tone_for_name`). A station's
    #: camera is always linear.
    tone: Any = None

    def __call__(self, image: np.ndarray, name: str, declared_tone: Any = None) -> Result:
        """Inspect ``image``; ``declared_tone`` is the tone curve its file declares, if any
        (:func:`goggleqc.inspect.tone.png_tone`)."""
        from goggleqc.inspect.pipeline import inspect_lens
        from goggleqc.inspect.tone import tone_for_name

        tone = None if self.station is not None else tone_for_name(name, self.tone, declared_tone)
        return inspect_lens(image, self.station, self.spec, pixel_size_mm=self.pixel_size_mm, name=name, tone=tone)


def overlay_name(path: str) -> str:
    """A unique overlay file name for an image path: the stem plus a hash of the full path.

    Two ``lens_0001.png`` in two folders get two overlays; non-ASCII stems are kept.
    """
    stem = re.sub(r"[^\w.-]+", "_", os.path.splitext(os.path.basename(path))[0]).strip("._")[:80] or "image"
    return f"{stem}-{hashlib.blake2b(path.encode('utf-8', 'surrogateescape'), digest_size=4).hexdigest()}.png"


def thumb_name(overlay: str) -> str:
    """The thumbnail (JPEG, under ``overlays/thumbs/``) of an overlay file name."""
    return os.path.splitext(overlay)[0] + ".jpg"


@dataclass
class Outcome:
    """What one :class:`ImageJob` call produced: a record, or a skip for an image already done."""

    path: str
    record: dict[str, Any] | None
    skipped: bool = False
    traceback: str | None = None


@dataclass(frozen=True)
class ImageJob:
    """Read, hash, decode, inspect and draw one image; never raises for a bad image.

    Parameters
    ----------
    inspect_fn : callable ``(image, name) -> Result``
    overlays : {'fail', 'all', 'none'}
        Which verdicts get an overlay PNG (and a thumbnail) under ``out_dir/overlays``.
    out_dir : Path or None
        Output folder; overlay paths in records are relative to it.
    done : mapping of path -> content hash, optional
        Images already inspected (``--resume``): skipped when path and hash both match.
    """

    inspect_fn: InspectFn
    overlays: str = "none"
    out_dir: Path | None = None
    done: Mapping[str, str] | None = None

    def __call__(self, path: str | Path) -> Outcome:
        key = os.path.abspath(path)
        t0 = time.perf_counter()
        timing: dict[str, float] = {}
        content_hash = None
        try:
            data, content_hash = read_file(path)
            if self.done and self.done.get(key) == content_hash:
                return Outcome(key, None, skipped=True)
            t1 = time.perf_counter()
            image = decode_image(data, path)
            # an uncalibrated picture's file may declare its tone curve (a PNG's colour chunks);
            # read only when no --tone overrides it
            fn = self.inspect_fn
            reads_tone = isinstance(fn, LensInspector) and fn.station is None and fn.tone is None
            declared = {"declared_tone": png_tone(data)} if reads_tone else {}
            del data
            t2 = time.perf_counter()
            timing.update(batch_read=(t1 - t0) * 1e3, batch_decode=(t2 - t1) * 1e3)
            result = fn(image, os.path.basename(key), **declared)
            timing["batch_inspect"] = (time.perf_counter() - t2) * 1e3
        except GoggleQCError as exc:
            timing["batch_total"] = (time.perf_counter() - t0) * 1e3
            return Outcome(key, error_record(key, str(exc), content_hash=content_hash, timing_ms=timing))
        except Exception as exc:  # a bug must not end a night's batch: record it, keep the traceback
            timing["batch_total"] = (time.perf_counter() - t0) * 1e3
            message = f"{key}: inspection failed with an internal error ({type(exc).__name__}: {exc}); see errors.log"
            return Outcome(key, error_record(key, message, content_hash=content_hash, timing_ms=timing),
                           traceback=traceback.format_exc())
        record = make_record(result, path=key, content_hash=content_hash)
        trace = None
        if self.out_dir is not None and (self.overlays == "all" or (self.overlays == "fail" and result.verdict == "fail")):
            t3 = time.perf_counter()
            name = overlay_name(key)
            folder = self.out_dir / "overlays"
            try:
                bgr = draw_overlay(image, record)
                write_png(folder / name, bgr)
                write_png(folder / "thumbs" / thumb_name(name), thumbnail(bgr))
                record["overlay"] = f"overlays/{name}"
            except OSError as exc:
                raise OutputError(f"{folder}: cannot write overlays ({getattr(exc, 'strerror', None) or exc})") from None
            except Exception:  # a drawing bug costs the overlay, never the verdict
                trace = traceback.format_exc()
            timing["batch_overlay"] = (time.perf_counter() - t3) * 1e3
        timing["batch_total"] = (time.perf_counter() - t0) * 1e3
        record["timing_ms"] = {**record.get("timing_ms", {}), **timing}
        return Outcome(key, record, traceback=trace)


# -- worker processes ----------------------------------------------------------------------------

class WorkerError(GoggleQCError):
    """A worker process died (killed, out of memory); the records written before are kept."""


def _died(paths: list) -> WorkerError:
    shown = ", ".join(map(str, paths[:4])) + (f" and {len(paths) - 4} more" if len(paths) > 4 else "")
    return WorkerError(f"a worker process died (killed, or out of memory?) with these images in progress: {shown}; "
                       "the records written before are saved: rerun with --resume, or with --pool threads")


class JobProcessPool(Executor):
    """A pool of processes that each hold one :class:`ImageJob`, sent once when they start.

    Submitting the job's own path sends only the path: the station's arrays cross to each
    worker once, not once per image. Workers start as :func:`process_context` says.
    """

    def __init__(self, job: ImageJob, workers: int, opencv_threads: int = 1):
        self.job = job
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=process_context(),
                                         initializer=hold_in_worker, initargs=(job, opencv_threads))

    def submit(self, fn, /, *args, **kwargs) -> Future:
        if fn is self.job:
            return self._pool.submit(call_held, *args, **kwargs)
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)


# -- the runner ----------------------------------------------------------------------------------


@dataclass
class BatchSummary(VerdictCounts):
    """Counts of one run (images inspected by *this* run; skipped ones are counted apart)."""

    n_skipped: int = 0
    wall_s: float = 0.0
    interrupted: bool = False
    started: float = field(default_factory=time.perf_counter)

    @property
    def images_per_s(self) -> float:
        return self.n_done / self.wall_s if self.wall_s > 0 else 0.0


class _StopOnSigint:
    """While active, the first SIGINT sets ``stop``; a second one raises KeyboardInterrupt as usual."""

    def __init__(self, stop: threading.Event):
        self.stop = stop
        self.previous = None

    def _handler(self, signum, frame) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt
        self.stop.set()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def record_outcome(outcome: "Outcome", sinks, summary: "BatchSummary", *, on_skip=None, on_record=None,
                   error_log=None) -> None:
    """Write one image's outcome to every sink and count it (the local and Dask runners share this).

    Raises OutputError when a sink cannot write (disk full, read-only, SQLite I/O error); the
    records written before are kept and ``--resume`` carries on from there.
    """
    if outcome.skipped:
        summary.n_skipped += 1
        if on_skip:
            on_skip(outcome.path, summary)
        return
    record = outcome.record
    if outcome.traceback and error_log is not None:
        with open(error_log, "a", encoding="utf-8") as fh:
            fh.write(f"--- {outcome.path}\n{outcome.traceback}\n")
    try:
        for sink in sinks:
            sink.write(record)
    except OSError as exc:
        raise OutputError(f"cannot write results ({exc.strerror or exc}); the records before "
                          f"{outcome.path} are saved: free space or fix the folder, then rerun with --resume") from None
    except Exception as exc:
        if type(exc).__module__ == "sqlite3":  # disk full or I/O error inside SQLite
            raise OutputError(f"cannot write the results database ({exc}); the records before "
                              f"{outcome.path} are saved: fix it, then rerun with --resume") from None
        raise
    summary.add(record["verdict"])
    if on_record:
        on_record(record, summary)


def run_batch(paths: Iterable[str | Path], inspect_fn: InspectFn, sinks: Sequence[Sink], workers: int = DEFAULT_WORKERS,
              *, overlays: str = "none", out_dir: str | Path | None = None, done: Mapping[str, str] | None = None,
              max_in_flight: int | None = None, on_record: Callable[[dict[str, Any], BatchSummary], None] | None = None,
              on_skip: Callable[[str, BatchSummary], None] | None = None,
              error_log: str | Path | None = None, stop: threading.Event | None = None,
              executor: Executor | None = None, opencv_threads: int | None = None,
              pool: str = "threads") -> BatchSummary:
    """Inspect every path with ``inspect_fn`` on ``workers`` workers and stream records to ``sinks``.

    Parameters
    ----------
    paths : iterable of paths
        Consumed lazily (e.g. :func:`iter_image_paths`); never listed.
    inspect_fn : callable ``(image, name) -> Result``
        ``image`` is the decoded (M, N) uint8/uint16 luminance frame, ``name`` the file name.
        Raising :class:`~goggleqc.errors.GoggleQCError` gives the image an ``error`` record
        with that message; any other exception too, with its traceback in ``error_log``.
    sinks : sequence of objects with ``write(record)``
        Called in this thread, in completion order, once per inspected image.
    workers : int
        Worker threads or processes (ignored when ``executor`` is given).
    overlays, out_dir, done
        See :class:`ImageJob`.
    max_in_flight : int, optional
        Images submitted but not yet written; default ``IN_FLIGHT_PER_WORKER * workers``.
        Bounds memory whatever the number of paths.
    on_record, on_skip : callables, optional
        Progress hooks, called after each record is written / each image skipped.
    error_log : path, optional
        Tracebacks of internal errors are appended here.
    stop : threading.Event, optional
        Set it to stop early (SIGINT in the main thread sets it too).
    executor : concurrent.futures.Executor, optional
        Use this pool instead of a new thread pool (left open for the caller).
    opencv_threads : int, optional
        OpenCV's own thread count during the batch (restored after). Default: 1 when
        ``workers > 1``, so the cores are shared across images, not by nested pools inside
        each (measured neutral for the pipeline, see docs/results-db.md); unchanged with
        one worker.
    pool : {'threads', 'processes'}
        What the workers are (see :data:`POOLS`). Processes need a picklable
        ``inspect_fn``; one worker always runs as a thread, as a process would add only
        its start-up.

    Returns
    -------
    BatchSummary
        ``interrupted`` is True when the run stopped before all paths were done. Sinks are
        not closed: the caller owns them.

    Raises
    ------
    OutputError
        A sink or overlay write failed (disk full, ...). Records written before are kept.
    """
    if workers < 1:
        raise InputError(f"--workers must be 1 or more, not {workers}")
    if overlays not in OVERLAY_MODES:
        raise InputError(f"--overlays {overlays!r}: use one of {', '.join(OVERLAY_MODES)}")
    if pool not in POOLS:
        raise InputError(f"--pool {pool!r}: use threads or processes")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and overlays != "none":
        (out / "overlays" / "thumbs").mkdir(parents=True, exist_ok=True)
    job = ImageJob(inspect_fn, overlays=overlays, out_dir=out, done=done)
    limit = max_in_flight or IN_FLIGHT_PER_WORKER * workers
    stop = stop or threading.Event()
    summary = BatchSummary()
    cv_threads_before = cv2.getNumThreads()
    if opencv_threads is None and workers > 1 and executor is None:
        opencv_threads = 1
    processes = executor is None and pool == "processes" and workers > 1
    if opencv_threads is not None and not processes:
        cv2.setNumThreads(opencv_threads)
    if executor is not None:
        runner = executor
    elif processes:
        runner = JobProcessPool(job, workers, opencv_threads=opencv_threads or 1)
    else:
        runner = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="goggleqc-batch")
    pending: dict[Future, str] = {}
    source = iter(paths)
    exhausted = False

    def handle(future: Future, path: str) -> None:
        try:
            outcome: Outcome = future.result()
        except OutputError:
            raise
        except BrokenProcessPool:
            raise _died([path, *pending.values()]) from None
        except OSError as exc:
            raise OutputError(f"cannot write results ({exc.strerror or exc})") from None
        record_outcome(outcome, sinks, summary, on_skip=on_skip, on_record=on_record, error_log=error_log)

    try:
        with _StopOnSigint(stop):
            while True:
                while not exhausted and not stop.is_set() and len(pending) < limit:
                    try:
                        path = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    try:
                        pending[runner.submit(job, path)] = str(path)
                    except (BrokenProcessPool, BrokenPipeError):
                        raise _died([path, *pending.values()]) from None
                    except (pickle.PicklingError, AttributeError, TypeError) as exc:
                        if not processes:
                            raise
                        # a worker process is sent the job when it starts, in submit
                        raise InputError(f"--pool processes: the inspection cannot be sent to a worker process "
                                         f"({type(exc).__name__}: {exc}); use --pool threads") from None
                if not pending:
                    break
                # a short timeout so a stop request is seen even while every worker is busy
                finished, _ = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
                for future in finished:
                    handle(future, pending.pop(future))
                if stop.is_set():
                    # finish and write what is already running; drop what has not started
                    for future in pending:
                        future.cancel()
                    started = {f: p for f, p in pending.items() if not f.cancelled()}
                    cancelled = len(pending) - len(started)
                    pending = {}
                    for future in wait(started).done:
                        handle(future, started[future])
                    summary.interrupted = summary.interrupted or cancelled > 0 or not exhausted
                    break
            if stop.is_set() and not exhausted:
                summary.interrupted = True
    finally:
        for future in pending:
            future.cancel()
        if executor is None:
            runner.shutdown(wait=True, cancel_futures=True)
        if opencv_threads is not None and not processes:
            cv2.setNumThreads(cv_threads_before)
        summary.wall_s = time.perf_counter() - summary.started
    return summary


def exit_status(n_fail: int, n_error: int) -> int:
    """0 all passed, 1 some failed, 3 some could not be inspected (errors win over fails)."""
    if n_error:
        return 3
    return 1 if n_fail else 0
