"""Cached synthetic frames, the size grid and reference timings for the benchmarks.

Frames are rendered once per (size, bits, backlight, kind of lenses) with goggleqc.synth and
cached under ``.cache/bench_<digest>/`` (the simulator's and calibration's source digest) as a station folder (``Station.save``) plus ``.npy`` frames and
a ``truths.json``, so a rerun starts timing at once; a changed simulator renders new sets.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from goggleqc.benchmarking import SyntheticSet, median_time_s, synthetic_set
from goggleqc.calibration.station import Station
from goggleqc.synth.sampleset import source_digest

ROOT = Path(__file__).resolve().parent.parent
#: keyed by the simulator's and calibration's source, as the test caches are
CACHE = ROOT / ".cache" / f"bench_{source_digest()}"

#: the camera sizes of the station model (1.3 MP, 2 MP, 5 MP)
SIZES = {"1.3MP": (1280, 1024), "2MP": (1600, 1200), "5MP": (2448, 2048)}
#: the quick subset (run with ``-m "not full"``): 5 MP 8-bit (the headline) and 1.3 MP 8-bit
QUICK = {("5MP", 8), ("1.3MP", 8)}



def size_grid():
    """pytest params over SIZES × (8, 16) bits; all but the quick subset are marked ``full``."""
    return [pytest.param(name, bits, id=f"{name}-{bits}bit",
                         marks=() if (name, bits) in QUICK else pytest.mark.full)
            for name in SIZES for bits in (8, 16)]


def set_folder(width: int, height: int, *, bits: int = 8, backlight: str = "uniform", count: int = 4,
               seed: int = 0, tag: str = "mix") -> Path:
    """The cache folder of a set; its saved station is ``set_folder(...) / "station"``."""
    return CACHE / f"{width}x{height}-{bits}bit-{backlight}-{tag}-n{count}-s{seed}"


def load_or_render(width: int, height: int, *, bits: int = 8, backlight: str = "uniform", count: int = 4,
                   seed: int = 0, defects: int | None = None, kinds: tuple[str, ...] | None = None,
                   pixel_size_mm: float | None = None, tag: str = "mix") -> SyntheticSet:
    """A :class:`SyntheticSet` from the bench cache, rendering and caching it on first use."""
    folder = set_folder(width, height, bits=bits, backlight=backlight, count=count, seed=seed, tag=tag)
    done = folder / "truths.json"
    if done.exists():
        station = Station.load(folder / "station")
        frames = [np.load(folder / f"frame_{i:03d}.npy") for i in range(count)]
        truths = json.loads(done.read_text())
        return SyntheticSet(station=station, frames=frames, truths=truths)
    data = synthetic_set(width, height, bits=bits, backlight=backlight, count=count, seed=seed,
                         defects=defects, kinds=kinds, pixel_size_mm=pixel_size_mm)
    folder.mkdir(parents=True, exist_ok=True)
    data.station.save(folder / "station", force=True)
    for i, frame in enumerate(data.frames):
        np.save(folder / f"frame_{i:03d}.npy", frame)
    done.write_text(json.dumps(data.truths, default=_jsonable))  # written last: marks the cache complete
    # reload so that cached and fresh runs time the same Station (e.g. the saved scatter map)
    return load_or_render(width, height, bits=bits, backlight=backlight, count=count, seed=seed,
                          defects=defects, kinds=kinds, pixel_size_mm=pixel_size_mm, tag=tag)


def _jsonable(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)




def reference_ms(frame: np.ndarray) -> dict[str, float]:
    """Physical reference times (ms, median) on ``frame``: one Gaussian blur, one memcpy.

    ``gaussian_ms`` is one ``cv2.GaussianBlur`` (7×7, σ = 1.5 px) over the frame as float32,
    the working type of the analyses; ``memcpy_ms`` is one ``np.copyto`` of the raw frame.
    A stage time divided by them reads as "N blur passes" or "N copies" of the frame.
    """
    f32 = frame.astype(np.float32)
    out = np.empty_like(f32)
    dst = np.empty_like(frame)
    blur = median_time_s(lambda: cv2.GaussianBlur(f32, (7, 7), 1.5, dst=out), repeats=15)
    copy = median_time_s(lambda: np.copyto(dst, frame), repeats=25)
    return {"gaussian_ms": blur * 1e3, "memcpy_ms": copy * 1e3}



def add_passes(benchmark, ref: dict[str, float]) -> None:
    """Put the median as multiples of one blur pass and one memcpy into ``extra_info``."""
    median_ms = benchmark.stats.stats.median * 1e3
    benchmark.extra_info["median_ms"] = round(median_ms, 3)
    benchmark.extra_info["gaussian_ms"] = round(ref["gaussian_ms"], 3)
    benchmark.extra_info["memcpy_ms"] = round(ref["memcpy_ms"], 3)
    benchmark.extra_info["blur_passes"] = round(median_ms / ref["gaussian_ms"], 2)
    benchmark.extra_info["memcpy_passes"] = round(median_ms / ref["memcpy_ms"], 1)


#: the analyses as the pipeline calls them: (label, module, function name). The pipeline's own
#: calls are recorded (arguments included) and replayed, so a benchmark times exactly what
#: ``inspect_lens`` does even while the analyses' signatures evolve.
STAGES = (
    ("lens", "goggleqc.inspect.pipeline", "find_lens"),
    ("haze", "goggleqc.inspect.pipeline", "measure_haze"),
    ("transmittance", "goggleqc.inspect.pipeline", "measure_transmittance"),
    ("background", "goggleqc.inspect.pipeline", "relative_image"),
    ("scratches+spots", "goggleqc.inspect.pipeline", "separate"),
    ("spots", "goggleqc.inspect.spots", "find_spots"),
    ("scratches", "goggleqc.inspect.scratches", "find_scratches"),
    ("coating", "goggleqc.inspect.pipeline", "find_coating"),
    ("verdict", "goggleqc.inspect.pipeline", "decide"),
)


class StageCall:
    """One recorded call of an analysis: ``call()`` repeats it with the same arguments."""

    def __init__(self, label, fn, args, kwargs, result):
        self.label, self.fn, self.args, self.kwargs, self.result = label, fn, args, kwargs, result

    def call(self):
        return self.fn(*self.args, **self.kwargs)


def record_stage_calls(image, station, spec) -> dict[str, StageCall]:
    """Run ``inspect_lens`` once and record the first call of every analysis in :data:`STAGES`.

    Stages the pipeline does not call (or whose function no longer exists) are absent.
    """
    import importlib

    from goggleqc.inspect.pipeline import inspect_lens

    calls: dict[str, StageCall] = {}
    patched = []

    def wrap(label, fn):
        def recorder(*args, **kwargs):
            result = fn(*args, **kwargs)
            calls.setdefault(label, StageCall(label, fn, args, kwargs, result))
            return result
        return recorder

    try:
        for label, module_name, name in STAGES:
            module = importlib.import_module(module_name)
            fn = getattr(module, name, None)
            if fn is None:
                continue
            patched.append((module, name, fn))
            setattr(module, name, wrap(label, fn))
        result = inspect_lens(image, station, spec)
    finally:
        for module, name, fn in reversed(patched):
            setattr(module, name, fn)
    if result.verdict == "error":
        raise RuntimeError(f"the pipeline refused the benchmark frame: {result.error}")
    return calls
