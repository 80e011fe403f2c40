"""Calibrated accuracy when a station leaves the simulator's usual ranges, as the README's stress table.

    python benchmarks/stress_report.py --stations 3 --count 40

Each variant changes one thing about the station (or the lens) beyond what
``goggleqc.synth.random_station`` normally draws, writes sample sets with ``goggleqc samples``'s
code (calibrated by goggleqc's own calibration, as a user's station would be), inspects them
end to end and prints one markdown row per variant and backlight. It is how three bugs were
found: one light trap under strong vignetting calibrated as a 21 mm "grid", a pattern period
wider than the band beside the goggle corrupting the exposure-drift correction, and a goggle
framed tighter than the field giving "no lens found".

Sets are cached under ``.cache/stress/``, keyed by the simulator's and the calibration's
source as the test sets are. Seeds 91000 + 17·k.
``--size`` and ``--pixel-size`` set the camera (default 480×384 at 0.1 mm/px).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np

import goggleqc.synth.sampleset as sampleset
from goggleqc.synth.sampleset import source_digest
from goggleqc.calibration.station import Station
from goggleqc.capture.imagefile import read_image
from goggleqc.inspect.pipeline import inspect_lens
from goggleqc.spec import load_spec
from goggleqc.synth.scoring import evaluate


ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "stress"


def _camera(**changes):
    return lambda p, r: dataclasses.replace(p, camera=dataclasses.replace(p.camera, **{k: v(r) for k, v in changes.items()}))


def _lens(**changes):
    """A change to each drawn lens rather than to the station (marked by ``lens=True``)."""
    def change(spec, r):
        return dataclasses.replace(spec, **{k: v(r) for k, v in changes.items()})
    change.lens = True
    return change


def _backlight(**changes):
    return lambda p, r: dataclasses.replace(p, backlight=dataclasses.replace(
        p.backlight, **{k: v(r) for k, v in changes.items()}))


#: variant → (what it changes, station change ``(params, rng) → params``, backlights)
VARIANTS = {
    "base": ("nothing", lambda p, r: p, ("uniform", "pattern")),
    "soft optics": ("camera PSF σ 1.5–2.0 px (usual 0.5–1.2)",
                    _camera(psf_sigma_px=lambda r: float(r.uniform(1.5, 2.0))), ("uniform", "pattern")),
    "sharp optics": ("camera PSF σ 0.2–0.4 px", _camera(psf_sigma_px=lambda r: float(r.uniform(0.2, 0.4))),
                     ("uniform", "pattern")),
    "dim": ("backlight at 25–40 % of full scale (usual 60–85 %)",
            _backlight(level_frac=lambda r: float(r.uniform(0.25, 0.4))), ("uniform", "pattern")),
    "bright": ("backlight at 88–93 % of full scale",
               _backlight(level_frac=lambda r: float(r.uniform(0.88, 0.93))), ("uniform", "pattern")),
    "noisy": ("full well 2,500–4,000 e⁻, read noise 10–20 e⁻ (usual 6,000–20,000, 3–12)",
              _camera(full_well_e=lambda r: float(r.uniform(2500, 4000)), read_noise_e=lambda r: float(r.uniform(10, 20))),
              ("uniform", "pattern")),
    "vignetted": ("vignetting 40–60 %, panel non-uniformity 4–8 %",
                  _backlight(vignetting=lambda r: float(r.uniform(0.4, 0.6)), nonuniformity=lambda r: float(r.uniform(0.04, 0.08))),
                  ("uniform", "pattern")),
    "12-bit": ("12-bit data in 16-bit files", _camera(bits=lambda r: 16, data_bits=lambda r: 12), ("uniform", "pattern")),
    "10-bit": ("10-bit data in 16-bit files", _camera(bits=lambda r: 16, data_bits=lambda r: 10), ("uniform", "pattern")),
    "quantised": ("an 8-bit camera with 2–4 e⁻ of read noise and no fixed pattern in the dark: the traps' "
                  "fill is rounded the same way in every pixel (calibration warns)",
                  _camera(read_noise_e=lambda r: float(r.uniform(2, 4)), dsnu_frac=lambda r: 0.0), ("uniform",)),
    "colour": ("a colour camera (frames turned into luminance)", _camera(colour=lambda r: True), ("uniform", "pattern")),
    "tight framing": ("the goggle is taller than the field: lens half-height 0.52 of it (usual 0.30–0.36), the "
                      "frame cut in pieces and the lens reaching the image border",
                      lambda p, r: dataclasses.replace(p, product=dataclasses.replace(
                          p.product, half_height_mm=0.52 * p.height * p.pixel_size_mm,
                          nose_height_mm=p.product.nose_height_mm * 0.52 / 0.33)), ("uniform", "pattern")),
    "coarse pattern": ("pattern period 7–10 mm (usual 1.5–6)", _backlight(period_mm=lambda r: float(r.uniform(7, 10))),
                       ("pattern",)),
    "fine pattern": ("pattern period 1.0–1.4 mm (10–14 px; usual 1.5–6 mm)",
                     _backlight(period_mm=lambda r: float(r.uniform(1.0, 1.4))), ("pattern",)),
    "sharp pattern": ("the target in focus (no defocus; usual up to 0.2 period)",
                      _backlight(defocus_mm=lambda r: 0.0), ("pattern",)),
    "stripes": ("a stripe target (usual: checker or grid 90 % of the time)",
                _backlight(pattern=lambda r: "stripes"), ("pattern",)),
    "drift": ("exposure drift between flat and lens ±6–10 % (usual ±3 %)",
              _lens(gain=lambda r: float(1 + r.choice([-1, 1]) * r.uniform(0.06, 0.10))), ("uniform", "pattern")),
    "hazy": ("every lens hazy: haze 4–10 % (usual: 85 % of lenses under 2.5 %)",
             _lens(haze=lambda r: float(r.uniform(0.04, 0.10))), ("uniform", "pattern")),
}


def _set(variant: str, backlight: str, seed: int, count: int, size=(480, 384), pixel_size_mm: float = 0.1) -> Path:
    """The folder of one cached stress set, written on first use."""
    folder = CACHE / (f"{variant.replace(' ', '-')}_{backlight}_{seed}_n{count}_{size[0]}x{size[1]}_{pixel_size_mm:g}"
                      f"_{source_digest()}")
    if (folder / "truth.jsonl").exists():
        return folder
    change = VARIANTS[variant][1]
    draw, draw_lens = sampleset.random_station, sampleset.random_lens
    lens_rng = np.random.default_rng([seed, 78])

    def station(rng, **kw):
        params = draw(rng, **kw)
        return params if getattr(change, "lens", False) else change(params, np.random.default_rng([seed, 77]))

    def lens(rng, sim, **kw):
        spec = draw_lens(rng, sim, **kw)
        return change(spec, lens_rng) if getattr(change, "lens", False) else spec

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    sampleset.random_station, sampleset.random_lens = station, lens
    try:
        note = sampleset.write_sample_set(tmp, sampleset.SampleSetOptions(
            count=count, seed=seed, width=size[0], height=size[1], pixel_size_mm=pixel_size_mm, backlight=backlight))
    finally:
        sampleset.random_station, sampleset.random_lens = draw, draw_lens
    if "station_error" in note:
        print(f"{variant}, {backlight}, seed {seed}: calibration failed: {note['station_error']}", file=sys.stderr)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def run(variant: str, backlight: str, stations: int, count: int, size=(480, 384),
        pixel_size_mm: float = 0.1) -> tuple[dict, int]:
    """Metrics over ``stations`` sets of ``count`` lenses, and how many stations failed to calibrate."""
    pairs, failed = [], 0
    for k in range(stations):
        folder = _set(variant, backlight, 91000 + 17 * k, count, size, pixel_size_mm)
        if not (folder / "station" / "station.toml").exists():
            failed += 1
            continue
        station, spec = Station.load(folder / "station"), load_spec(folder / "spec.toml")
        for line in (folder / "truth.jsonl").read_text(encoding="utf-8").splitlines():
            truth = json.loads(line)
            image = read_image(folder / "lenses" / truth["image"])
            pairs.append((truth, inspect_lens(image, station, spec, name=truth["image"]).to_dict()))
    m = evaluate(pairs, load_spec("en166-clear"))
    # a lens the product refused (blank, no lens found) is out of every rate above: count it
    m["error_verdicts"] = sum(r["verdict"] == "error" for _, r in pairs)
    return m, failed


COLUMNS = [("haze MAE pp", "haze_mae_pp", "num"), ("τ MAE pp", "transmittance_mae_pp", "num"),
           ("scratch recall", "recall_scratch_1mm", "pct"), ("spot recall", "recall_spot", "pct"),
           ("coating recall", "recall_coating", "pct"), ("false scratches / clean", "false_scratches_per_clean_lens", "num"),
           ("false accepts", "false_accept_rate", "pct"), ("false rejects", "false_reject_rate", "pct"),
           ("errors", "error_verdicts", "int")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stations", type=int, default=3)
    ap.add_argument("--count", type=int, default=40)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--size", default="480x384", help="camera size WxH")
    ap.add_argument("--pixel-size", type=float, default=0.1, help="mm per pixel")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    print("| variant | backlight | " + " | ".join(c for c, _, _ in COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for variant in args.variants:
        for backlight in VARIANTS[variant][2]:
            m, failed = run(variant, backlight, args.stations, args.count, size, args.pixel_size)
            cells = ["–" if m.get(key) is None else f"{100 * m[key]:.1f} %" if kind == "pct" else
                     str(m[key]) if kind == "int" else f"{m[key]:.2f}"
                     for _, key, kind in COLUMNS]
            note = f" ({failed} station(s) failed to calibrate)" if failed else ""
            print(f"| {variant}{note} | {backlight} | " + " | ".join(cells) + " |", flush=True)
    print("\n" + "\n".join(f"- {name}: {VARIANTS[name][0]}" for name in args.variants))


if __name__ == "__main__":
    main()
