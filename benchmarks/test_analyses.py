"""Per-analysis timings at 1.3, 2 and 5 MP, 8- and 16-bit, with the frame's blur and memcpy time.

Each analysis is timed exactly as :func:`goggleqc.inspect.pipeline.inspect_lens` calls it:
one pipeline run records every analysis call with its arguments
(:func:`bench_data.record_stage_calls`), and each benchmark repeats one recorded call.
``scratches+spots`` is the pipeline's combined stage (``separate``); ``spots`` and
``scratches`` are its two parts. The lens region's full-resolution masks are built lazily,
inside whichever stage first uses them, so ``lens`` is the outline search alone.

``extra_info``: ``median_ms``, ``blur_passes`` (median ÷ one GaussianBlur of the frame) and
``memcpy_passes`` (median ÷ one copy of the frame).
"""

from __future__ import annotations

import pytest

from bench_data import STAGES, add_passes, record_stage_calls, size_grid
from goggleqc.spec import DEFAULT_SPEC, load_spec

SPEC = load_spec(DEFAULT_SPEC)


@pytest.fixture(scope="module")
def stage_calls(frame_sets):
    memo: dict = {}

    def get(name, bits):
        if (name, bits) not in memo:
            data = frame_sets(name, bits)
            memo[name, bits] = (data.frames[0], record_stage_calls(data.frames[0], data.station, SPEC))
        return memo[name, bits]

    return get


@pytest.mark.parametrize("stage", [label for label, _, _ in STAGES])
@pytest.mark.parametrize("size, bits", size_grid())
def test_stage(benchmark, stage_calls, references, size, bits, stage):
    image, calls = stage_calls(size, bits)
    if stage not in calls:
        pytest.skip(f"inspect_lens does not call the {stage} analysis any more")
    benchmark.group = f"analyses {size} {bits}-bit"
    benchmark.extra_info.update(stage=stage, size=size, bits=bits)
    benchmark(calls[stage].call)
    add_passes(benchmark, references(image))
