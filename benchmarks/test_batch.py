"""Batch: decode-only against decode + inspect on 5 MP PNG files, and peak memory against image count.

Throughput
    :func:`goggleqc.batch.run_batch` over the same 5 MP 8-bit PNG files with
    ``inspect_fn=decode_only`` (read, hash, decode: the floor any batch pays) and with the
    real pipeline (:class:`goggleqc.batch.LensInspector`), each with 1, 2 and 4 workers:
    threads (the command's default) or processes (``--pool processes``; one worker is always
    a thread). Each round is 8 files: a process pool's start (about a second) is in it. ``extra_info``: ``images_per_s`` and, for decode + inspect,
    ``of_decode_only`` = its rate ÷ the decode-only rate with the same workers and pool
    (issue 6 asks ≥ 0.85 with the default workers).

Memory
    A subprocess runs ``run_batch`` with the real pipeline and a JSONL sink over 200 and
    over 2,000 small images (the same 20 files repeated: streaming must not grow with the
    count), with two worker threads and with two worker processes. With threads it reports
    its peak RSS (``VmHWM``: unlike ``ru_maxrss``, it does not carry over the peak of the
    forked pytest process across ``execve``); with processes, the peak of the RSS summed over
    it and every process under it (the fork server and the workers), sampled every 20 ms
    (shared pages count once per process, so this overstates the total a little).
    ``extra_info``: ``peak_rss_mb`` and, for 2,000, ``rss_ratio`` to 200 with the same pool
    (must be ≤ 1.10).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench_data import CACHE, load_or_render, set_folder
from goggleqc.batch import DEFAULT_POOL, DEFAULT_WORKERS, LensInspector, decode_only, run_batch
from goggleqc.capture.imagefile import write_image
from goggleqc.spec import DEFAULT_SPEC, load_spec

SPEC = load_spec(DEFAULT_SPEC)
N_FILES_5MP = 8
N_FILES_SMALL = 20


def _write_pngs(folder: Path, frames, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"lens_{i:04d}.png" for i in range(n)]
    for i, p in enumerate(paths):
        if not p.exists():
            write_image(p, frames[i % len(frames)])
    return paths


@pytest.fixture(scope="module")
def png_5mp(frame_sets):
    data = frame_sets("5MP", 8)
    return data, _write_pngs(CACHE / "png-5MP-8bit", data.frames, N_FILES_5MP)


_decode_rate: dict = {}


POOLED = [pytest.param(1, "threads", id="1-thread")] + [
    pytest.param(w, pool, id=f"{w}-{pool}") for w in (2, 4) for pool in ("processes", "threads")]


@pytest.mark.parametrize("workers, pool", POOLED)
@pytest.mark.parametrize("work", ["decode-only", "decode+inspect"])
def test_batch_5mp_png(benchmark, png_5mp, work, workers, pool):
    data, paths = png_5mp
    fn = decode_only if work == "decode-only" else LensInspector(data.station, SPEC)

    def run():
        summary = run_batch(paths, fn, [], workers=workers, pool=pool)
        assert summary.n_done == len(paths)
        return summary

    errors = run().n_error  # warm-up (page cache, station plans); an error verdict is not a full inspection
    benchmark.group = "batch, 5 MP 8-bit PNG files"
    benchmark.pedantic(run, rounds=3, iterations=1)
    rate = len(paths) / benchmark.stats.stats.median
    benchmark.extra_info.update(work=work, workers=workers, pool=pool, images=len(paths), images_per_s=round(rate, 1),
                                default_workers=DEFAULT_WORKERS, default_pool=DEFAULT_POOL, error_verdicts=errors)
    if work == "decode-only":
        _decode_rate[workers, pool] = rate
    elif (workers, pool) in _decode_rate:
        benchmark.extra_info["of_decode_only"] = round(rate / _decode_rate[workers, pool], 3)


_MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys, tempfile, os
    from goggleqc.batch import LensInspector, run_batch
    from goggleqc.calibration.station import Station
    from goggleqc.report.writers import JsonlWriter
    from goggleqc.spec import DEFAULT_SPEC, load_spec

    import threading, time

    def tree_rss_kb(root):
        # RSS (kB) of root and every process under it, from /proc
        kids = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as fh:
                        kids.setdefault(int(fh.read().rsplit(")", 1)[1].split()[1]), []).append(int(d))
                except OSError:
                    pass
        total, stack = 0, [root]
        while stack:
            pid = stack.pop()
            try:
                with open(f"/proc/{pid}/statm") as fh:
                    total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
            except OSError:
                pass
            stack += kids.get(pid, [])
        return total

    station_dir, n, workers, pool, *files = sys.argv[1:]
    n, workers = int(n), int(workers)
    station = Station.load(station_dir)
    paths = (files[i % len(files)] for i in range(n))  # lazy: run_batch must not list them
    tree_peak, done = [0], threading.Event()

    def sample():
        while not done.wait(0.02):
            tree_peak[0] = max(tree_peak[0], tree_rss_kb(os.getpid()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with tempfile.TemporaryDirectory() as tmp:
        sink = JsonlWriter(os.path.join(tmp, "results.jsonl"))
        summary = run_batch(paths, LensInspector(station, load_spec(DEFAULT_SPEC)), [sink], workers=workers, pool=pool)
        sink.close()
    done.set()
    sampler.join()
    # VmHWM is the peak RSS of this program image. ru_maxrss on Linux also keeps the peak of
    # the process before execve, i.e. of the forked pytest (about 1 GB with cached frames).
    with open("/proc/self/status") as fh:
        hwm_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM"))
    print(json.dumps({"peak_rss_kb": hwm_kb, "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "peak_tree_rss_kb": tree_peak[0],
                      "done": summary.n_done, "errors": summary.n_error, "wall_s": summary.wall_s}))
""")

_peak: dict = {}


@pytest.mark.parametrize("count", [200, 2000])
@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_batch_peak_memory(benchmark, pool, count):
    data = load_or_render(320, 256, bits=8, count=4, tag="small")
    station_dir = set_folder(320, 256, bits=8, count=4, tag="small") / "station"
    files = _write_pngs(CACHE / "png-320x256-8bit", data.frames, N_FILES_SMALL)
    cmd = [sys.executable, "-c", _MEMORY_SCRIPT, str(station_dir), str(count), "2", pool, *map(str, files)]
    out: dict = {}

    def run():
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ})
        out.update(json.loads(proc.stdout.strip().splitlines()[-1]))

    benchmark.group = "batch peak memory, 320×256 images"
    benchmark.pedantic(run, rounds=1, iterations=1)
    assert out["done"] == count
    peak_mb = (out["peak_rss_kb"] if pool == "threads" else out["peak_tree_rss_kb"]) / 1024
    _peak[pool, count] = peak_mb
    benchmark.extra_info.update(images=count, pool=pool, peak_rss_mb=round(peak_mb, 1), error_verdicts=out["errors"],
                                images_per_s=round(count / out["wall_s"], 1))
    if count == 2000 and (pool, 200) in _peak:
        ratio = peak_mb / _peak[pool, 200]
        benchmark.extra_info.update(rss_ratio=round(ratio, 3), flat_within_10pct=bool(ratio <= 1.10))
