"""Cached simulator sets for truth-based tests.

A set is written once by ``goggleqc samples`` machinery (lenses, truth and a station
calibrated by goggleqc's own calibration) under ``.cache/sets/`` and reused by every test
and later runs; the key holds every parameter, so a changed parameter makes a new set.
"""

from __future__ import annotations

import json
import shutil
from functools import lru_cache, partial
from pathlib import Path

from goggleqc.batch import DEFAULT_WORKERS
from goggleqc.calibration.station import Station
from goggleqc.capture.imagefile import read_image
from goggleqc.inspect.pipeline import inspect_lens
from goggleqc.ordered import map_in_order
from goggleqc.spec import load_spec
from goggleqc.synth.sampleset import SampleSetOptions, source_digest, write_sample_set

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "sets"


def cache_dir(name: str) -> Path:
    """``.cache/NAME_<digest>``: a test's own cache folder, keyed like the sets by the
    simulator's and the calibration's source, so a changed simulator is never hidden by
    frames it drew before (a fresh clone would draw new ones and could fail where a
    developer's machine passes)."""
    return CACHE.parent / f"{name}_{source_digest()}"


def sample_set(count: int, seed: int, backlight: str, size=(480, 384), pixel_size_mm: float = 0.1,
               bits: int = 8, defects: int | None = None) -> Path:
    """The folder of a cached sample set (written on first use); ``defects=0`` makes a
    defect-free set."""
    key = f"n{count}_s{seed}_{backlight}_{size[0]}x{size[1]}_{pixel_size_mm}_{bits}bit_d{defects}_{source_digest()}"
    folder = CACHE / key
    if not (folder / "truth.jsonl").exists() or not (folder / "station" / "station.toml").exists():
        tmp = folder.with_name(key + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        write_sample_set(tmp, SampleSetOptions(count=count, seed=seed, width=size[0], height=size[1],
                                               pixel_size_mm=pixel_size_mm, backlight=backlight, bits=bits,
                                               defects=defects))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    return folder


def truth_records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "truth.jsonl").read_text(encoding="utf-8").splitlines()]


@lru_cache(maxsize=16)
def inspected(folder: Path, plates: bool = True) -> list[tuple[dict, dict]]:
    """(truth, result) pairs for a set, inspected with its calibrated station.

    ``plates=False`` drops the station's haze-plate correction, to measure raw haze.
    """
    station = Station.load(folder / "station")
    if not plates:
        station.haze_fit = None
    return inspect_set(folder, station, load_spec(folder / "spec.toml"))


def inspect_set(folder: Path, station: Station | None, spec, **options) -> list[tuple[dict, dict]]:
    """(truth, result) pairs for a set's lenses inspected as ``inspect_lens(image, station,
    spec, **options)`` would, on one worker process per core."""
    return list(map_in_order(partial(_inspect_one, folder, station, spec, options), truth_records(folder),
                             DEFAULT_WORKERS, "processes"))


def _inspect_one(folder: Path, station: Station | None, spec, options: dict, truth: dict) -> tuple[dict, dict]:
    image = read_image(folder / "lenses" / truth["image"])
    return truth, inspect_lens(image, station, spec, name=truth["image"], **options).to_dict()


def sim_and_station(seed: int, backlight: str, bits: int = 8, size=(320, 256), ps: float = 0.2):
    """A simulated station and an ideal calibrated Station of it (averaged dark and flats,
    the true trap or pattern geometry), to test analyses apart from calibration."""
    import numpy as np

    from goggleqc.benchmarking import calibrate_from_sim
    from goggleqc.synth import SimStation, random_station

    params = random_station(np.random.default_rng(seed), width=size[0], height=size[1], pixel_size_mm=ps,
                            backlight=backlight, bits=bits)
    sim = SimStation(params)
    return sim, calibrate_from_sim(sim, np.random.default_rng([seed, 7]))
