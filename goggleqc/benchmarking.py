"""Throughput and latency measurement shared by ``goggleqc bench`` and ``benchmarks/``.

Two things live here:

- **Synthetic frames of a station's size.** :func:`synthetic_set` renders a simulated station
  (goggleqc.synth), calibrates it the way a station is calibrated (averaged dark and flat
  frames, trap or pattern geometry from the simulator's truth) and renders lenses with
  known defects. :func:`frames_for_station` renders lenses *through a given calibrated
  station* (its own dark, flat and scatter map), so ``goggleqc bench --station DIR`` times
  the pipeline on frames that look like that station's.
- **Timing.** :func:`measure_latency` (one frame at a time), :func:`measure_throughput`
  (several worker threads) and :func:`measure_process_throughput` (several worker
  processes, each holding the station and frames: :func:`frame_pool`) run the pipeline for
  a fixed wall time and return per-frame latencies and lenses/s; :func:`opencv_threads`
  pins OpenCV's own thread pool while they run; :func:`linear_fit` gives slope, intercept
  and R² for the scaling check.

Parallel choice: one frame per worker, with OpenCV's internal pool set to 1 thread
(``cv2.setNumThreads(1)``) so that the two levels of parallelism do not fight over the
cores. OpenCV and numpy release the GIL in their big calls, but the pipeline makes many
small ones too: on two cores two threads inspect frames in memory about a quarter slower
than two processes, so both are measured (the batch runs threads by default, as decoding
files narrows the gap: :data:`goggleqc.batch.DEFAULT_POOL`). "Single-threaded" means one worker
and ``cv2.setNumThreads(1)``: one core.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

from goggleqc.calibration.station import Pattern, Station, Trap
from goggleqc.errors import InputError

#: field of view (mm across the frame width) used when no pixel size is given: a goggle
#: (about 80 mm of lens plus the frame) fills ~80 % of the frame, as on a real fixture
FIELD_OF_VIEW_MM = 120.0
#: frames averaged into the dark and flat of a synthetic station (as `goggleqc calibrate` does)
CALIBRATION_FRAMES = 4
#: largest frame `goggleqc bench` renders (a 5 MP station is the largest in the station model;
#: 12 MP leaves room for the scaling benchmark)
MAX_MEGAPIXELS = 50.0


def default_pixel_size_mm(width: int) -> float:
    """mm/px that puts :data:`FIELD_OF_VIEW_MM` across ``width`` pixels (0.03–0.25 mm)."""
    return float(np.clip(FIELD_OF_VIEW_MM / width, 0.03, 0.25))


def calibrate_from_sim(sim, rng: np.random.Generator, n_frames: int = CALIBRATION_FRAMES) -> Station:
    """A calibrated :class:`Station` from a simulated one: averaged dark and flat, true geometry.

    Parameters
    ----------
    sim : goggleqc.synth.SimStation
    rng : numpy Generator
        Drives the noise of the calibration frames.
    n_frames : int
        Dark and flat frames averaged.

    Returns
    -------
    Station
        ``dark`` is the mean dark frame (DN), ``flat`` the mean flat minus it (float32);
        traps (uniform backlight) or the pattern (pattern backlight) come from the
        simulator's truth, which is what calibration measures.
    """
    p = sim.params
    dark = np.mean([sim.dark_frame(rng).astype(np.float32) for _ in range(n_frames)], axis=0, dtype=np.float32)
    flat = np.mean([sim.flat_frame(rng).astype(np.float32) for _ in range(n_frames)], axis=0, dtype=np.float32)
    flat = (flat - dark).astype(np.float32)
    ps = p.pixel_size_mm
    cx, cy = (p.width - 1) / 2, (p.height - 1) / 2
    bl = p.backlight
    traps = tuple(Trap(cx + t.x_mm / ps, cy + t.y_mm / ps, t.diameter_mm / ps / 2) for t in bl.traps)
    pattern = (Pattern(bl.pattern, bl.period_mm / ps, bl.angle_deg % (180.0 if bl.pattern == "stripes" else 90.0))
               if bl.kind == "pattern" else None)
    return Station(dark=dark, flat=flat, bits=p.camera.bits, pixel_size_mm=ps, backlight=bl.kind,
                   traps=traps if bl.kind == "uniform" else (), pattern=pattern,
                   meta={"source": "goggleqc.benchmarking synthetic station"})


@dataclass
class SyntheticSet:
    """A calibrated synthetic station and lens frames rendered through it, with truth.

    ``frames`` are (M, N) uint8/uint16 arrays; ``truths[i]`` is the truth record of
    ``frames[i]`` in the result schema (station-model.md §3); ``sim`` is the simulator
    station or None when the frames were rendered through a loaded :class:`Station`.
    """

    station: Station
    frames: list[np.ndarray]
    truths: list[dict] = field(default_factory=list)
    sim: object | None = None

    @property
    def megapixels(self) -> float:
        h, w = self.station.shape
        return h * w / 1e6


def sim_station(width: int, height: int, *, bits: int = 8, backlight: str = "uniform",
                pixel_size_mm: float | None = None, seed: int = 0):
    """A plausible simulated station of the given size (goggleqc.synth.random_station)."""
    from goggleqc.synth import SimStation, random_station

    check_size(width, height)
    rng = np.random.default_rng([seed, 9])
    params = random_station(rng, width=width, height=height, backlight=backlight, bits=bits,
                            pixel_size_mm=pixel_size_mm or default_pixel_size_mm(width), seed=seed)
    return SimStation(params)


def check_size(width: int, height: int) -> None:
    if width < 64 or height < 64:
        raise InputError(f"--size {width}x{height} is too small; each side must be at least 64 px")
    if width * height > MAX_MEGAPIXELS * 1e6:
        raise InputError(f"--size {width}x{height} is over {MAX_MEGAPIXELS:g} MP; use a real camera size")


def synthetic_set(width: int, height: int, *, bits: int = 8, backlight: str = "uniform",
                  pixel_size_mm: float | None = None, count: int = 4, seed: int = 0,
                  defects: int | None = None, kinds: tuple[str, ...] | None = None) -> SyntheticSet:
    """Render a calibrated synthetic station and ``count`` lenses of ``width``×``height``.

    ``defects`` and ``kinds`` are passed to :func:`goggleqc.synth.random_lens` (default: a
    mix of defect-free and defective lenses with every defect kind).
    """
    from goggleqc.synth import random_lens, render_lens

    sim = sim_station(width, height, bits=bits, backlight=backlight, pixel_size_mm=pixel_size_mm, seed=seed)
    station = calibrate_from_sim(sim, np.random.default_rng([seed, 10]))
    frames, truths = [], []
    for i in range(count):
        rng = np.random.default_rng([seed, 11, i])
        lens_kw = {"defects": defects} if defects is not None else {}
        if kinds:
            lens_kw["kinds"] = kinds
        spec = random_lens(rng, sim, **lens_kw)
        image, truth = render_lens(sim, spec, rng, name=f"bench_{i:03d}")
        frames.append(image)
        truths.append(truth)
    return SyntheticSet(station=station, frames=frames, truths=truths, sim=sim)


def frames_for_station(station: Station, count: int = 4, *, seed: int = 0) -> list[np.ndarray]:
    """Lens frames rendered through a calibrated station's own dark, flat and scatter map.

    A simulated goggle of a plausible shape for the station's field of view gives ``τ`` and
    haze ``h`` maps with defects (goggleqc.synth), and the frame follows station-model.md §2
    with the station's ``B`` (flat) and ``B ⊛ K̂`` (scatter)::

        I = dark + g·τ·[(1 − h)·B + h·(B ⊛ K̂)] + noise

    with shot and read noise of a typical sensor, quantised to the station's bit depth.
    """
    from goggleqc.synth import random_lens
    from goggleqc.synth.render import lens_fields

    h, w = station.shape
    sim = sim_station(w, h, bits=station.bits, backlight="pattern" if station.backlight == "pattern" else "uniform",
                      pixel_size_mm=station.pixel_size_mm, seed=seed)
    cam = sim.params.camera
    max_dn = 255.0 if station.bits == 8 else float(max(np.percentile(station.flat, 99.9) * 1.25, 1023.0))
    e_per_dn = cam.full_well_e / max_dn
    scatter = station.scatter
    out = []
    for i in range(count):
        rng = np.random.default_rng([seed, 12, i])
        spec = random_lens(rng, sim)
        tau, haze, *_ = lens_fields(sim, spec)
        signal = np.float32(spec.gain) * tau * (station.flat + haze * (scatter - station.flat))
        sd = np.sqrt(np.maximum(signal, 0) / np.float32(e_per_dn) + np.float32((cam.read_noise_e / e_per_dn) ** 2))
        noisy = station.dark + signal + sd * rng.standard_normal(signal.shape, dtype=np.float32)
        top = 255 if station.bits == 8 else 65535
        out.append(np.clip(np.rint(noisy), 0, top).astype(np.uint8 if station.bits == 8 else np.uint16))
    return out


# -- timing ------------------------------------------------------------------------------------


@contextlib.contextmanager
def opencv_threads(n: int) -> Iterator[None]:
    """Set OpenCV's internal thread pool to ``n`` threads for the duration, then restore it."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(n)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def median_time_s(fn: Callable[[], object], *, repeats: int = 7, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after ``warmup`` calls (seconds)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def measure_latency(fn: Callable[[np.ndarray], object], frames: Sequence[np.ndarray], seconds: float, *,
                    min_calls: int = 5) -> np.ndarray:
    """Per-frame latency (ms) of ``fn(frame)`` called one frame at a time for ``seconds``.

    Frames are taken in turn; at least ``min_calls`` calls are made whatever the time.
    """
    lat = []
    t_end = time.perf_counter() + seconds
    i = 0
    while i < min_calls or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn(frames[i % len(frames)])
        lat.append((time.perf_counter() - t0) * 1e3)
        i += 1
    return np.asarray(lat)


def measure_throughput(fn: Callable[[np.ndarray], object], frames: Sequence[np.ndarray], workers: int,
                       seconds: float, *, min_calls: int | None = None) -> tuple[float, np.ndarray]:
    """Lenses/s and per-frame latencies (ms) with ``workers`` threads each taking the next frame.

    Every worker loops until ``seconds`` have passed (and at least ``min_calls`` frames, by
    default ``2·workers``, are done in total); the rate is frames done ÷ wall time of the
    whole run, so the tail of the last frames counts against it.
    """
    min_calls = 2 * workers if min_calls is None else min_calls
    counter = itertools.count()
    lat: list[float] = []
    t_start = time.perf_counter()
    t_end = t_start + seconds

    def worker() -> None:
        while True:
            i = next(counter)  # one C call, atomic under the GIL: no two workers get the same i
            if i >= min_calls and time.perf_counter() >= t_end:
                return
            t0 = time.perf_counter()
            fn(frames[i % len(frames)])
            lat.append((time.perf_counter() - t0) * 1e3)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for fut in [pool.submit(worker) for _ in range(workers)]:
            fut.result()
    wall = time.perf_counter() - t_start
    return len(lat) / wall, np.asarray(lat)


# -- worker processes holding frames ---------------------------------------------------------------

#: (inspect callable, frames) of a frame-pool worker, installed once when it starts
_held: tuple | None = None


def _hold(inspect_fn, frames) -> None:
    from goggleqc.ordered import start_worker_process

    global _held
    start_worker_process(1)
    _held = (inspect_fn, list(frames))


def _inspect_held(i: int) -> str:
    """Inspect held frame ``i`` (modulo their number); the verdict, so little crosses back."""
    fn, frames = _held
    return fn(frames[i % len(frames)]).verdict


def _loop_held(first: int, step: int, until: float, min_calls: int) -> tuple[list[float], list[str]]:
    """Inspect held frames ``first``, ``first + step``, … until wall time ``until``
    (``time.time()``) and at least ``min_calls`` frames; per-frame latencies (ms) and verdicts."""
    fn, frames = _held
    lat: list[float] = []
    verdicts: list[str] = []
    i = first
    while len(lat) < min_calls or time.time() < until:
        t0 = time.perf_counter()
        verdicts.append(fn(frames[i % len(frames)]).verdict)
        lat.append((time.perf_counter() - t0) * 1e3)
        i += step
    return lat, verdicts


@dataclass(frozen=True)
class HeldInspector:
    """``inspect_lens(frame, station, spec)`` as a picklable callable of one frame."""

    station: Station
    spec: object

    def __call__(self, frame: np.ndarray):
        from goggleqc.inspect.pipeline import inspect_lens

        return inspect_lens(frame, self.station, self.spec)


def frame_pool(inspect_fn: Callable[[np.ndarray], object], frames: Sequence[np.ndarray], workers: int):
    """A pool of ``workers`` processes, each holding ``inspect_fn`` (picklable) and ``frames``,
    sent once when it starts: submit :func:`_inspect_held` with a frame index, or use
    :func:`measure_process_throughput`. Started as the batch's are
    (:func:`goggleqc.ordered.process_context`)."""
    from concurrent.futures import ProcessPoolExecutor

    from goggleqc.ordered import process_context

    return ProcessPoolExecutor(max_workers=workers, mp_context=process_context(), initializer=_hold,
                               initargs=(inspect_fn, list(frames)))


def inspect_held(pool, indices: Sequence[int]) -> list[str]:
    """Verdicts of held frames ``indices``, inspected across a :func:`frame_pool`."""
    return list(pool.map(_inspect_held, indices))


def measure_process_throughput(pool, workers: int, seconds: float, *, min_calls: int | None = None
                               ) -> tuple[float, np.ndarray, dict[str, int]]:
    """Lenses/s, per-frame latencies (ms) and counts of verdicts of a :func:`frame_pool` of
    ``workers`` processes, each looping over the held frames for ``seconds`` (and at least
    ``min_calls`` frames in all, by default ``2·workers``); the rate is frames ÷ the wall
    time until the last worker is done. Each worker first inspects a frame untimed (the station's cached plans
    are built once per process)."""
    min_calls = 2 * workers if min_calls is None else min_calls
    inspect_held(pool, range(2 * workers))  # warm-up: start the processes, build their plans
    t_start = time.time()
    each = -(-min_calls // workers)
    futures = [pool.submit(_loop_held, k, workers, t_start + seconds, each) for k in range(workers)]
    done = [fut.result() for fut in futures]
    wall = time.time() - t_start
    lat = [v for ms, _ in done for v in ms]
    verdicts: dict[str, int] = {}
    for _, vs in done:
        for v in vs:
            verdicts[v] = verdicts.get(v, 0) + 1
    return len(lat) / wall, np.asarray(lat), verdicts


def percentiles_ms(latencies_ms: np.ndarray) -> dict[str, float]:
    """p50, p95 and p99 of latencies (ms)."""
    p50, p95, p99 = np.percentile(latencies_ms, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99)}


def linear_fit(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares line ``y = slope·x + intercept`` and its coefficient of determination R²."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid ** 2).sum()) / ss_tot if ss_tot > 0 else 1.0
    return float(slope), float(intercept), r2


# -- the station check `goggleqc bench` runs ---------------------------------------------------


@dataclass(frozen=True)
class BenchReport:
    """What ``goggleqc bench`` measured on one station size.

    Rates are lenses/s; latencies are single-threaded per-frame wall times in ms;
    ``headroom`` is the all-core rate over the target camera FPS (≥ 1 meets it).
    """

    width: int
    height: int
    bits: int
    cores: int
    workers: int
    single_lenses_per_s: float
    multi_lenses_per_s: float
    latency_ms: dict[str, float]
    target_fps: float
    frames_timed: int
    verdicts: dict[str, int]
    stage_ms: dict[str, float]
    errors: tuple[str, ...] = ()
    #: what the all-core workers were: processes or threads
    pool: str = "threads"

    @property
    def headroom(self) -> float:
        return self.multi_lenses_per_s / self.target_fps

    @property
    def meets_target(self) -> bool:
        return self.multi_lenses_per_s >= self.target_fps


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def run_bench(station: Station, frames: Sequence[np.ndarray], spec, *, seconds: float, target_fps: float,
              workers: int | None = None, pool: str = "threads") -> BenchReport:
    """Time :func:`goggleqc.inspect.pipeline.inspect_lens` on ``frames`` for about ``seconds``.

    Half the time runs one frame at a time on one core (latency percentiles, single-threaded
    lenses/s), half runs ``workers`` workers (default: all cores), threads or processes as
    ``pool`` says (the batch's default is threads), for the all-core rate. One warm-up
    call first builds the station's cached precomputations (in each worker process too). A
    slow pipeline overruns ``seconds`` by at most about four frame times (3 single-threaded
    frames minimum, one per worker, the tail), plus the worker processes' start.
    """
    from goggleqc.inspect.pipeline import inspect_lens

    cores = os.cpu_count() or 1
    workers = workers or cores
    verdicts: dict[str, int] = {}
    errors: list[str] = []
    stages: dict[str, list[float]] = {}

    def one(image: np.ndarray):
        result = inspect_lens(image, station, spec)
        verdicts[result.verdict] = verdicts.get(result.verdict, 0) + 1
        if result.verdict == "error" and result.error and result.error not in errors:
            errors.append(result.error)
        for k, v in result.timing_ms.items():
            stages.setdefault(k, []).append(v)
        return result

    with opencv_threads(1):
        one(frames[0])  # warm-up: builds the station's cached plans (a once-per-station cost)
        verdicts.clear()
        stages.clear()
        single = measure_latency(one, frames, seconds / 2, min_calls=3)
        single_rate = len(single) / (single.sum() / 1e3)
        # stage times from the single-threaded run only: under load they include waiting
        stage_ms = {k: float(np.median(v)) for k, v in stages.items()}
        if pool == "processes":
            with frame_pool(HeldInspector(station, spec), frames, workers) as procs:
                multi_rate, multi, counts = measure_process_throughput(procs, workers, seconds / 2, min_calls=workers)
            for k, v in counts.items():
                verdicts[k] = verdicts.get(k, 0) + v
        else:
            multi_rate, multi = measure_throughput(one, frames, workers, seconds / 2, min_calls=workers)
    h, w = station.shape
    return BenchReport(width=w, height=h, bits=station.bits, cores=cores, workers=workers, pool=pool,
                       single_lenses_per_s=float(single_rate), multi_lenses_per_s=float(multi_rate),
                       latency_ms=percentiles_ms(single), target_fps=target_fps,
                       frames_timed=len(single) + len(multi), verdicts=dict(verdicts),
                       stage_ms=stage_ms, errors=tuple(errors))
