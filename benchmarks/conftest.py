"""Fixtures of the benchmarks: cached synthetic stations and frames, reference timings.

OpenCV's internal thread pool is set to one thread for the whole session: every
single-threaded number is one core, and the multi-core benchmarks parallelise over frames
with Python threads (OpenCV releases the GIL), which is how batch and line mode use the cores.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_data import SIZES, SyntheticSet, load_or_render, reference_ms  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "full: the full size × bit-depth grid (skip with -m 'not full')")


@pytest.fixture(scope="session", autouse=True)
def _single_opencv_thread():
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(before)


@pytest.fixture(scope="session")
def frame_sets():
    """``frame_sets(size_name, bits, backlight='uniform')`` → cached mixed-defect SyntheticSet."""
    memo: dict = {}

    def get(name: str, bits: int, backlight: str = "uniform") -> SyntheticSet:
        key = (name, bits, backlight)
        if key not in memo:
            w, h = SIZES[name]
            memo[key] = load_or_render(w, h, bits=bits, backlight=backlight)
        return memo[key]

    return get


@pytest.fixture(scope="session")
def references():
    """``references(frame)`` → :func:`bench_data.reference_ms`, memoised per frame shape and dtype."""
    memo: dict = {}

    def get(frame) -> dict[str, float]:
        key = (frame.shape, frame.dtype.str)
        if key not in memo:
            memo[key] = reference_ms(frame)
        return memo[key]

    return get


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record the cores, the CPU model from /proc/cpuinfo and the library versions that matter."""
    import os

    import numpy as np
    import skimage

    from goggleqc.benchmarking import cpu_model

    machine_info["cores"] = os.cpu_count()
    machine_info["cpu_model"] = cpu_model()
    machine_info["versions"] = {"opencv": cv2.__version__, "numpy": np.__version__, "scikit-image": skimage.__version__}
    machine_info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    machine_info["opencv_threads"] = "1 per worker thread (cv2.setNumThreads(1)); frames in parallel on Python threads"


def pytest_benchmark_update_json(config, benchmarks, output_json):
    """Record the exact command that produced the file, for docs/performance.md."""
    import shlex

    output_json["command"] = "python -m pytest " + shlex.join(config.invocation_params.args)
