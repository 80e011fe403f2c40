"""Write a simulated sample set: calibration frames, lenses, a spec and truth.

Layout of ``OUT_DIR``::

    calibration/   dark_NN.png, flat_NN.png, haze_<pct>.png, scale_target.png, station_truth.json
    lenses/        lens_NNNN.png (or .tif for 16-bit)
    truth.jsonl    one truth record per lens, in the product's result schema
    spec.toml      the limits the truth verdicts were decided with

The same seed gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from goggleqc.capture.imagefile import write_image
from goggleqc.errors import InputError
from goggleqc.spec import DEFAULT_SPEC, load_spec, presets
from goggleqc.synth.render import render_lens, render_plate, render_scale_target
from goggleqc.synth.scenes import random_lens, random_station
from goggleqc.synth.station import SimStation, StationParams

PLATES_PCT = (0.5, 1.0, 2.0, 4.0, 8.0)
N_CALIBRATION_FRAMES = 4


@dataclass(frozen=True)
class SampleSetOptions:
    count: int = 12
    seed: int = 0
    width: int = 1280
    height: int = 1024
    pixel_size_mm: float | None = None
    backlight: str | None = None
    bits: int = 8
    colour: bool = False
    spec: str = DEFAULT_SPEC
    fog_sequence: bool = False
    #: defects per lens; None draws a realistic mix (about a third of lenses defect-free)
    defects: int | None = None
    #: a pattern target's bend across the frame (see ``Backlight.warp``); 0 is square on
    warp: float = 0.0

    def check(self) -> None:
        if self.count < 0:
            raise InputError(f"--count must be 0 or more, not {self.count}")
        if self.width < 64 or self.height < 64:
            raise InputError(f"--size {self.width}x{self.height} is too small; each side must be at least 64 px")
        if self.width * self.height > 50_000_000:
            raise InputError(f"--size {self.width}x{self.height} is over 50 MP; use a real camera size")
        if self.pixel_size_mm is not None and not 0.005 <= self.pixel_size_mm <= 1.0:
            raise InputError(f"--pixel-size {self.pixel_size_mm} mm is outside 0.005–1 mm")
        if self.backlight not in (None, "uniform", "pattern"):
            raise InputError(f"--backlight {self.backlight!r}: use uniform or pattern")
        if self.bits not in (8, 16):
            raise InputError(f"--bits {self.bits}: use 8 or 16")
        if not 0.0 <= self.warp <= 0.3:
            raise InputError(f"--warp {self.warp}: use 0 (a target square to the camera) to 0.3")
        if self.warp and self.backlight == "uniform":
            raise InputError("--warp bends a pattern target; a uniform panel has nothing to bend (use --backlight pattern)")


@lru_cache(maxsize=1)
def source_digest() -> str:
    """A digest of the simulator's and the calibration's source, with the haze estimator the
    plates are read with: the key of every cache of simulated sets and their calibrated
    stations (tests, benchmarks), so a changed simulator or calibration is never hidden by
    frames or stations made before."""
    import goggleqc.calibration
    import goggleqc.inspect.haze
    import goggleqc.synth

    digest = hashlib.sha1()
    for package in (goggleqc.synth, goggleqc.calibration):
        for path in sorted(Path(package.__file__).parent.glob("*.py")):
            digest.update(path.read_bytes())
    digest.update(Path(goggleqc.inspect.haze.__file__).read_bytes())
    return digest.hexdigest()[:10]


def ensure_writable(folder: Path) -> None:
    """Create ``folder`` and prove it takes a file, so a bad output fails before any work."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".goggleqc-write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"{folder}: cannot write here ({exc.strerror or exc}); choose another output folder") from None


def station_truth(params: StationParams) -> dict:
    """What calibration should find: traps in pixels, pattern period and angle, pixel size."""
    ps = params.pixel_size_mm
    bl = params.backlight
    cx, cy = (params.width - 1) / 2, (params.height - 1) / 2
    out = {"params": params.to_dict(), "pixel_size_mm": ps, "backlight": bl.kind,
           "shape": [params.height, params.width], "bits": params.camera.bits, "data_bits": params.camera.data_bits}
    if bl.kind == "uniform":
        out["traps_px"] = [{"x": cx + t.x_mm / ps, "y": cy + t.y_mm / ps, "r": t.diameter_mm / ps / 2} for t in bl.traps]
    else:
        out["pattern"] = {"kind": bl.pattern, "period_px": bl.period_mm / ps, "angle_deg": bl.angle_deg}
    return out


def write_sample_set(out_dir: Path, options: SampleSetOptions,
                     progress: Callable[[str, int], None] | None = None) -> dict:
    """Render and write a sample set; ``progress(stage, n_done)`` is called as work completes.

    Returns a summary dict (counts and paths).
    """
    options.check()
    out_dir = Path(out_dir)
    ensure_writable(out_dir)
    spec = load_spec(options.spec)
    tick = progress or (lambda stage, n: None)
    rng = np.random.default_rng([options.seed, 0])
    # a bend is a pattern target's: asking for one asks for a pattern
    backlight = options.backlight or ("pattern" if options.warp else None)
    params = random_station(rng, width=options.width, height=options.height, pixel_size_mm=options.pixel_size_mm,
                            backlight=backlight, bits=options.bits, colour=options.colour,
                            seed=options.seed, marginal_mm=spec.marginal_width_mm, warp=options.warp)
    station = SimStation(params)
    suffix = ".png"
    cal = out_dir / "calibration"
    cal.mkdir(exist_ok=True)
    frame_rng = np.random.default_rng([options.seed, 2])
    for i in range(N_CALIBRATION_FRAMES):
        write_image(cal / f"dark_{i:02d}{suffix}", station.dark_frame(frame_rng))
        write_image(cal / f"flat_{i:02d}{suffix}", station.flat_frame(frame_rng, float(frame_rng.uniform(0.99, 1.01))))
        tick("calibration", 2)
    for pct in PLATES_PCT:
        write_image(cal / f"haze_{pct:g}{suffix}", render_plate(station, pct, frame_rng,
                                                              gain=float(frame_rng.uniform(0.98, 1.02))))
        tick("calibration", 1)
    target, target_truth = render_scale_target(station, frame_rng)
    write_image(cal / f"scale_target{suffix}", target)
    truth = station_truth(params)
    truth["scale_target"] = target_truth
    truth["haze_plates_pct"] = list(PLATES_PCT)
    (cal / "station_truth.json").write_text(json.dumps(truth, indent=1), encoding="utf-8")
    tick("calibration", 1)
    station_note = calibrate_sample_station(out_dir, options.seed)

    lenses = out_dir / "lenses"
    lenses.mkdir(exist_ok=True)
    shutil.copyfile(presets()[options.spec] if options.spec in presets() else options.spec, out_dir / "spec.toml")
    n_fail = 0
    with open(out_dir / "truth.jsonl", "w", encoding="utf-8") as fh:
        for i in range(options.count):
            lens_rng = np.random.default_rng([options.seed, 1, i])
            spec_i = random_lens(lens_rng, station, defects=options.defects)
            name = f"lens_{i:04d}{suffix}"
            image, rec = render_lens(station, spec_i, lens_rng, name=name, limits=spec)
            write_image(lenses / name, image)
            rec["truth"]["spec"] = asdict(spec_i)
            fh.write(json.dumps(rec, default=_jsonable) + "\n")
            n_fail += rec["verdict"] == "fail"
            tick("lenses", 1)
    if options.fog_sequence:
        from goggleqc.synth.fog import random_fog_sequence, write_fog_sequence

        fog_rng = np.random.default_rng([options.seed, 3])
        write_fog_sequence(out_dir / "fog", station, random_fog_sequence(fog_rng, station, fps=10.0, seed=options.seed))
        tick("fog", 1)
    return {"out_dir": str(out_dir), "lenses": options.count, "truth_fail": n_fail,
            "backlight": params.backlight.kind, "pixel_size_mm": params.pixel_size_mm, **station_note}


def calibrate_sample_station(out_dir: Path, seed: int) -> dict:
    """Calibrate ``out_dir/calibration`` into ``out_dir/station`` with goggleqc's own calibration.

    Uses the frames, the scale target and the haze plates just written, so every sample set
    carries a ready station folder. The creation time is fixed, so a seed still gives
    byte-identical files. Returns ``{"station": path}`` or ``{"station_error": message}``.
    """
    from goggleqc.calibration.build import build_station
    from goggleqc.errors import GoggleQCError

    cal = out_dir / "calibration"
    truth = json.loads((cal / "station_truth.json").read_text(encoding="utf-8"))
    folder = out_dir / "station"
    try:
        station = build_station(sorted(cal.glob("dark_*.png")), sorted(cal.glob("flat_*.png")),
                                scale_target=cal / "scale_target.png", square_mm=truth["scale_target"]["square_mm"],
                                board=tuple(truth["scale_target"]["inner_corners"]),
                                haze_standards=[(cal / f"haze_{pct:g}.png", pct) for pct in PLATES_PCT],
                                out_dir=folder, created="2000-01-01T00:00:00+00:00")
        station.meta["note"] = f"calibrated from the simulated sample set (seed {seed})"
        station.save(folder, force=True)
    except GoggleQCError as exc:
        return {"station_error": str(exc)}
    return {"station": str(folder)}


def _jsonable(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
