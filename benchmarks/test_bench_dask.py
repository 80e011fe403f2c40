"""Dask executor: a LocalCluster of 2 worker processes against the local thread pool, and the cost of a task.

Throughput
    The same PNG files (simulated lenses with a calibrated station, real pipeline,
    no overlays, no sinks) through :func:`goggleqc.batch.run_batch` with 2 threads (the
    local pool, the baseline) and through :class:`goggleqc.dask_executor.DaskRunner` on a
    LocalCluster of 2 processes × 1 thread, already started and warmed up (starting one
    costs ~1.5 s once per command). Two frame sizes: 256×200 px (≈ 30 ms per image, the
    worst case for per-task overhead) and 640×512 px. ``extra_info``: ``images_per_s``;
    for Dask also ``of_local_pool`` (its rate ÷ the pool's in the same run), ``tasks``,
    ``mean_chunk`` (images per task) and ``overhead_ms_per_image`` = (wall × threads − time
    inside tasks) ÷ images: scheduling, transfer, writing and idle threads at start and tail.

Task overhead
    Round trip of an empty task (``inspect_chunk`` with no paths, scattered job, through
    ``as_completed``), 40 at a time. ``extra_info``: ``ms_per_task`` and
    ``ms_per_image_at_25`` (the per-image share at the chunk size the sizing rule picks for
    40 ms images).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from goggleqc.batch import ImageJob, LensInspector, decode_only, iter_image_paths, run_batch
from goggleqc.calibration.station import Station
from goggleqc.spec import load_spec
from goggleqc.synth.sampleset import SampleSetOptions, source_digest, write_sample_set

distributed = pytest.importorskip("distributed", reason="Dask distributed is not installed: pip install 'goggleqc[dask]'")

from goggleqc.dask_executor import DaskRunner, inspect_chunk  # noqa: E402

CACHE = Path(__file__).resolve().parent.parent / ".cache"
#: (width, height, count): the test suite's 200-lens set, and fewer larger frames
SETS = {"256x200": (256, 200, 200), "640x512": (640, 512, 60)}
WORKERS = 2


def _set_folder(width: int, height: int, count: int) -> Path:
    folder = CACHE / f"dask_samples_{count}_s7_{width}x{height}_{source_digest()}"
    if not (folder / "station" / "station.toml").exists():
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        write_sample_set(tmp, SampleSetOptions(count=count, seed=7, width=width, height=height, pixel_size_mm=0.25,
                                               backlight="uniform"))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    return folder


@pytest.fixture(scope="module")
def runner():
    with DaskRunner(n_workers=WORKERS) as r:
        yield r


@pytest.fixture(scope="module", params=list(SETS))
def lens_set(request):
    folder = _set_folder(*SETS[request.param])
    fn = LensInspector(Station.load(folder / "station"), load_spec(folder / "spec.toml"))
    return request.param, fn, [str(p) for p in iter_image_paths([folder / "lenses"])]


_pool_rate: dict[str, float] = {}


@pytest.mark.parametrize("executor", ["local-pool", "dask-localcluster"])
def test_dask_vs_local_pool(benchmark, runner, lens_set, executor):
    size, fn, paths = lens_set
    summaries = []

    def run():
        if executor == "local-pool":
            summary = run_batch(paths, fn, [], workers=WORKERS)
        else:
            summary = runner(paths, fn, [], total=len(paths))
        assert summary.n_done == len(paths) and not summary.interrupted
        summaries.append(summary)

    run()  # warm-up: page cache, worker imports, station plans
    benchmark.group = f"batch executors, {size} PNG, {len(paths)} images, {WORKERS} workers"
    benchmark.pedantic(run, rounds=3, iterations=1)
    rate = len(paths) / benchmark.stats.stats.median
    benchmark.extra_info.update(executor=executor, size=size, images=len(paths), workers=WORKERS,
                                images_per_s=round(rate, 1))
    if executor == "local-pool":
        _pool_rate[size] = rate
    else:
        last = summaries[-1]
        benchmark.extra_info.update(tasks=last.n_tasks, mean_chunk=round(last.mean_chunk, 1),
                                    overhead_ms_per_image=round(last.overhead_ms_per_image, 2))
        if size in _pool_rate:
            benchmark.extra_info["of_local_pool"] = round(rate / _pool_rate[size], 3)


def test_dask_task_overhead(benchmark, runner):
    client = runner.client
    job = client.scatter(ImageJob(decode_only), broadcast=True, hash=False)
    n_tasks = 40

    def round_trip():
        futures = [client.submit(inspect_chunk, job, [], None, pure=False) for _ in range(n_tasks)]
        for future in distributed.as_completed(futures, loop=client.loop):
            assert future.result().outcomes == []

    round_trip()
    benchmark.group = "Dask task overhead"
    benchmark.pedantic(round_trip, rounds=5, iterations=1)
    ms_per_task = benchmark.stats.stats.median / n_tasks * 1e3
    benchmark.extra_info.update(tasks=n_tasks, ms_per_task=round(ms_per_task, 2),
                                ms_per_image_at_25=round(ms_per_task / 25, 3))
    job.release()
