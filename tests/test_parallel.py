"""The interpreter's switch interval while frames run on several threads."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

from goggleqc.batch import run_batch
from goggleqc.benchmarking import measure_throughput
from goggleqc.inspect.results import Result
from goggleqc.parallel import FRAME_SWITCH_INTERVAL_S, frame_threads


def test_several_workers_shorten_the_switch_interval_and_restore_it():
    before = sys.getswitchinterval()
    with frame_threads(2):
        assert sys.getswitchinterval() == pytest.approx(FRAME_SWITCH_INTERVAL_S, abs=2e-6)
    assert sys.getswitchinterval() == before
    with frame_threads(1):
        assert sys.getswitchinterval() == before
    with pytest.raises(RuntimeError), frame_threads(4):
        raise RuntimeError("a worker failed")
    assert sys.getswitchinterval() == before


def test_a_shorter_interval_set_by_the_caller_is_kept():
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(FRAME_SWITCH_INTERVAL_S / 5)
        with frame_threads(2):
            assert sys.getswitchinterval() == pytest.approx(FRAME_SWITCH_INTERVAL_S / 5, abs=2e-6)
    finally:
        sys.setswitchinterval(before)


def test_the_batch_and_the_throughput_benchmark_run_their_workers_under_it(tmp_path):
    seen = []

    def inspect(image, name):
        seen.append(sys.getswitchinterval())
        return Result(image=name, verdict="pass")

    paths = []
    for i in range(4):
        p = tmp_path / f"lens_{i}.png"
        cv2.imwrite(str(p), np.full((64, 64), 128, np.uint8))
        paths.append(p)

    class Sink:
        def write(self, record):
            pass

    before = sys.getswitchinterval()
    run_batch(iter(paths), inspect, [Sink()], workers=2)
    run_batch(iter(paths), inspect, [Sink()], workers=1)
    assert seen[:4] == [pytest.approx(FRAME_SWITCH_INTERVAL_S, abs=2e-6)] * 4
    assert seen[4:] == [before] * 4
    assert sys.getswitchinterval() == before

    seen.clear()
    measure_throughput(lambda f: seen.append(sys.getswitchinterval()), [np.zeros((4, 4))], 2, 0.01)
    assert seen and all(v == pytest.approx(FRAME_SWITCH_INTERVAL_S, abs=2e-6) for v in seen)
    assert sys.getswitchinterval() == before
