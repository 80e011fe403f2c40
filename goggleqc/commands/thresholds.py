"""``goggleqc thresholds``: fit detector sensitivities from known-good lenses for a target false-reject rate.

The method is in :mod:`goggleqc.classify.thresholds` and docs/thresholds.md. The station folder
is updated in place (or written to ``--out``); the thresholds it replaces are kept in
``station.toml``'s ``thresholds_history`` and ``--undo`` restores them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.table import Table

from goggleqc.batch import DEFAULT_WORKERS, POOLS
from goggleqc.cli import app, console, fail
from goggleqc.errors import GoggleQCError, InputError

CURVE_PNG = "thresholds_curve.png"


def _images(folder: Path, what: str):
    """(paths, reader) for a lens folder, refusing a missing or empty one."""
    from goggleqc.batch import iter_image_paths

    if not folder.exists():
        raise InputError(f"{what} {folder}: no such folder")
    if not folder.is_dir():
        raise InputError(f"{what} {folder}: is a file; give a folder of lens images")
    paths = sorted(iter_image_paths([folder]))
    if not paths:
        raise InputError(f"{what} {folder}: the folder holds no lens images (png, jpg, bmp, tif); give a folder of "
                         f"{'known-good' if what == '--good' else 'known-bad'} lens images")
    return paths


def _read_all(paths, unreadable: list[str]):
    from goggleqc.capture.imagefile import read_image

    for path in paths:
        try:
            yield path.name, read_image(path)
        except GoggleQCError as exc:
            unreadable.append(str(exc))


def _inspect_all(paths, station, spec, detectors, workers: int, pool: str):
    from goggleqc.ordered import map_in_order

    return list(map_in_order(_NamedInspection(station, spec, detectors), _read_all(paths, []), workers, pool))


@dataclass(frozen=True)
class _NamedInspection:
    """Inspect a ``(name, frame)`` pair without any learned model (picklable, for worker processes)."""

    station: object
    spec: object
    detectors: object

    def __call__(self, named):
        from goggleqc.inspect.pipeline import inspect_lens

        return inspect_lens(named[1], self.station, self.spec, name=named[0], detectors=self.detectors,
                            model=_NoModel())


class _NoModel:
    """Inspect without any learned model, even if the station has one attached (fitting a new one)."""

    def apply(self, result):
        return result


@app.command()
def thresholds(
    station_dir: Path = typer.Option(..., "--station", help="Calibrated station folder.", metavar="DIR"),
    good: Path = typer.Option(None, "--good", help="Folder of known-good lens images.", metavar="GOOD_DIR"),
    bad: Path = typer.Option(None, "--bad", help="Folder of known-bad lens images (for the false-accept rate "
                             "and the trade-off curve).", metavar="BAD_DIR"),
    target_frr: float = typer.Option(0.01, "--target-frr", help="False-reject rate to aim for, in (0, 0.5)."),
    spec_name: str = typer.Option(None, "--spec", help="Spec TOML file or preset (default: the shipped default).",
                                  metavar="FILE|PRESET"),
    out: Path = typer.Option(None, "--out", help="Write the updated station here instead of in place.",
                             metavar="STATION_DIR"),
    learn: bool = typer.Option(False, "--learn", help="Also fit a learned pass/fail model from --good and --bad "
                               "(it may only fail lenses the spec passes)."),
    undo: bool = typer.Option(False, "--undo", help="Restore the thresholds in force before the last fit."),
    workers: int = typer.Option(DEFAULT_WORKERS, "--workers", "-j", help="Lenses inspected at once (default: one "
                                "per core); the fit does not depend on it."),
    pool: str = typer.Option("processes", "--pool", help="processes: each worker a process of its own (the "
                             "default: each lens is inspected five times, and processes share the cores best); "
                             "threads: threads of this process, less memory."),
) -> None:
    """Fit detector thresholds from known-good lenses for a target false-reject rate (and FAR from bad ones)."""
    from goggleqc.calibration.station import Station
    from goggleqc.classify.model import MODEL_FILE, fit_classifier, save_model
    from goggleqc.classify.noise import measure_noise
    from goggleqc.classify.thresholds import (check_target, false_accept_rate, fit_thresholds, plot_curve,
                                              record_fit, tradeoff_curve, undo_fit)
    from goggleqc.inspect.pipeline import Detectors
    from goggleqc.spec import DEFAULT_SPEC, load_spec

    try:
        if workers < 1:
            raise InputError(f"--workers must be 1 or more, not {workers}")
        if pool not in POOLS:
            raise InputError(f"--pool must be one of {', '.join(POOLS)}, not {pool!r}")
        if not undo:
            check_target(target_frr)
        station = Station.load(station_dir)
        dest = Path(out) if out is not None else Path(station_dir)
        in_place = dest.resolve() == Path(station_dir).resolve()
        old_model = (Path(station_dir) / MODEL_FILE).read_bytes() if (Path(station_dir) / MODEL_FILE).exists() else None
        if undo:
            last = undo_fit(station)
            station.save(dest, force=in_place)
            if old_model is not None:
                (dest / MODEL_FILE).write_bytes(old_model)
            console.print(f"restored the thresholds in force before {last.get('replaced', 'the last fit')} "
                          f"into {dest / 'station.toml'}", highlight=False)
            return
        if good is None:
            raise InputError("--good GOOD_DIR is required: a folder of known-good lens images")
        if station.pixel_size_mm is None:
            raise InputError(f"{station_dir}: the station has no pixel size, so the spec's mm limits cannot be "
                             "checked; recalibrate it with a scale target or --pixel-size")
        if learn and bad is None:
            raise InputError("--learn needs --bad BAD_DIR too: the model learns from good and bad lenses")
        spec = load_spec(spec_name or DEFAULT_SPEC)
        good_paths = _images(Path(good), "--good")
        bad_paths = _images(Path(bad), "--bad") if bad is not None else []
        console.print(f"measuring the detector noise on {len(good_paths)} good lenses"
                      + (f" and {len(bad_paths)} bad lenses" if bad_paths else "") + " …", highlight=False)
        unreadable: list[str] = []
        good_sample, good_lenses = measure_noise(_read_all(good_paths, unreadable), station, spec,
                                                 base=station.thresholds, workers=workers,
                                                 pool=pool)
        errors = [ln for ln in good_lenses if ln.error]
        fit = fit_thresholds(good_sample, spec, target_frr)
        bad_sample = None
        if bad_paths:
            bad_sample, _ = measure_noise(_read_all(bad_paths, unreadable), station, spec, base=station.thresholds,
                                          workers=workers, pool=pool)
    except GoggleQCError as exc:
        fail(str(exc))

    for msg in [*fit.warnings, *(f"could not read: {u}" for u in unreadable),
                *(f"{ln.name}: could not be inspected ({ln.error})" for ln in errors)]:
        console.print(f"[yellow]warning:[/] {msg}", highlight=False, soft_wrap=True)

    table = Table(title=f"Fitted thresholds (target FRR {target_frr:.2%}, {fit.n_good} good lenses)")
    for col in ("detector", "× default", "method", "FRR budget", "lenses with candidates",
                "noise floor central", "noise floor marginal"):
        table.add_column(col)
    for d in fit.detectors:
        table.add_row(d.detector, f"{d.multiplier:.3f}", d.method, f"{d.budget_frr:.2%}", str(d.candidates),
                      f"{d.noise_floor.get('central', 0):.3f}", f"{d.noise_floor.get('marginal', 0):.3f}")
    console.print(table)
    console.print(f"in-sample false-reject rate of all detectors together: {fit.in_sample_frr:.2%} "
                  f"({fit.n_good} lenses)", highlight=False)

    far = None
    if bad_sample is not None:
        far = false_accept_rate(bad_sample, fit.multipliers)
        points = tradeoff_curve(good_sample, bad_sample, spec)
        curve = Table(title="Trade-off: false-reject rate (good, in-sample) vs false-accept rate (bad)")
        for col in ("target FRR", "scratches ×", "spots ×", "coating ×", "FRR", "FAR"):
            curve.add_column(col)
        for p in points:
            curve.add_row(f"{p.target_frr:.3g}", *(f"{p.multipliers[d]:.3f}" if d in p.multipliers else "default"
                                                   for d in ("scratches", "spots", "coating")),
                          f"{p.frr:.2%}", f"{p.far:.2%}")
        console.print(curve)
        console.print(f"expected false-accept rate at this setting: {far:.2%} ({bad_sample.n} bad lenses)",
                      highlight=False)

    try:
        record_fit(station, fit, spec_name=spec.name, n_bad=bad_sample.n if bad_sample is not None else 0, far=far,
                   good_dir=str(good), bad_dir=str(bad) if bad is not None else None)
        model = None
        if learn:
            detectors = Detectors.from_thresholds(station.thresholds)
            model, cv = fit_classifier(_inspect_all(good_paths, station, spec, detectors, workers, pool),
                                       _inspect_all(bad_paths, station, spec, detectors, workers, pool))
            station.meta["classifier"] = {"file": MODEL_FILE, "kind": "logistic-regression", **model.info}
        station.save(dest, force=in_place)
        if model is not None:
            save_model(model, dest)
        elif old_model is not None:
            (dest / MODEL_FILE).write_bytes(old_model)  # saving rewrites the folder: keep the earlier model
        if bad_sample is not None:
            plot_curve(points, dest / CURVE_PNG,
                       chosen=next((p for p in points if math.isclose(p.target_frr, target_frr)), None))
    except GoggleQCError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{dest}: cannot write ({exc.strerror or exc})")
    if model is not None:
        console.print(f"learned model: {cv['folds']}-fold cross-validated accuracy {cv['accuracy_model']:.1%} "
                      f"(spec alone: {cv['accuracy_spec']:.1%}); saved to {dest / MODEL_FILE}. It only fails lenses "
                      "the spec passes.", highlight=False)
    console.print(f"wrote {dest / 'station.toml'}" + (f" and {dest / CURVE_PNG}" if bad_sample is not None else "")
                  + "; the previous thresholds are in its thresholds_history (undo with --undo)", highlight=False)
