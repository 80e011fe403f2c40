"""``goggleqc inspect``: grade images, folders or globs, streaming results to OUT_DIR.

The command is thin: it checks the arguments and the output folder before any work, opens
the sinks (JSONL, CSV, SQLite), hands the lazily walked paths to
:func:`goggleqc.batch.run_batch`, and finally writes ``report.html`` from ``results.jsonl``.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from goggleqc.batch import (DEFAULT_POOL, DEFAULT_WORKERS, OVERLAY_MODES, POOLS, LensInspector, OutputError,
                            WorkerError, check_inputs, count_image_paths, exit_status, iter_image_paths, run_batch)
from goggleqc.cli import app, console, fail
from goggleqc.errors import GoggleQCError, InputError
from goggleqc.inspect.tone import parse_tone
from goggleqc.report.html import write_report
from goggleqc.report.store import ResultStore
from goggleqc.report.writers import CsvWriter, JsonlWriter, read_records, resume_state
from goggleqc.spec import DEFAULT_SPEC, Spec, load_spec

#: exit status after Ctrl-C (128 + SIGINT, as shells report it)
EXIT_INTERRUPTED = 130
#: bytes written and synced to the output folder before any work, so a full disk fails first
PROBE_BYTES = 1 << 20
RUN_STATE = "run.json"

HELP = """Inspect lens images and write results, a database and an HTML report to OUT_DIR.

PATH is an image, a folder (searched recursively for png, jpg, bmp and tif files, 8- or
16-bit) or a quoted glob such as 'archive/**/*.png'. Images stream through --workers
threads (or processes: --pool) in bounded memory; every result is written as soon as it is
known.

OUT_DIR receives:
  results.jsonl    one JSON record per image (station-model.md §3 schema + path, content_hash)
  results.csv      one flat row per image
  results.sqlite   SQLite store: tables runs, inspections, reasons, defects (or --db PATH);
                   query it with `goggleqc db query OUT_DIR/results.sqlite "SQL"`
  report.html      summary, charts, failed lenses with overlays, spec and station
  overlays/        overlay PNGs (and thumbs/) for --overlays fail|all

Ctrl-C stops cleanly: images in progress are finished and written, the report is
written, and `--resume` later skips every image already done (same path, same content).

Exit status:
  0    all images inspected, all passed
  1    all images inspected, some failed
  2    usage error (bad option, missing PATH, unusable output folder or resume state)
  3    some images could not be inspected (each has an `error` record); the rest were
  130  interrupted by Ctrl-C; rerun with --resume to finish
"""


class _RateColumn(ProgressColumn):
    """images/s over the run so far."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:5.2f} img/s" if speed else "  -.-- img/s", style="progress.data.speed")


def _probe_writable(folder: Path, what: str) -> None:
    """Create ``folder`` and write, sync and delete a 1 MiB file, so a read-only or full disk fails now."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".goggleqc-write-probe"
        with open(probe, "wb") as fh:
            fh.write(b"\0" * PROBE_BYTES)
            fh.flush()
            os.fsync(fh.fileno())
        probe.unlink()
    except OSError as exc:
        try:
            (folder / ".goggleqc-write-probe").unlink(missing_ok=True)
        except OSError:
            pass
        reason = exc.strerror or str(exc)
        raise InputError(f"{folder}: cannot write the {what} here ({reason}); choose another folder "
                         "or free some space") from None


def _station_summary(station: Any, folder: str | None, pixel_size_mm: float | None) -> dict[str, Any]:
    if station is None:
        return {"station": "none (uncalibrated)", "pixel_size_mm": pixel_size_mm}
    h, w = station.shape
    out: dict[str, Any] = {"folder": folder, "backlight": station.backlight, "frame": f"{w}×{h}, {station.bits}-bit",
                           "pixel_size_mm": station.pixel_size_mm}
    if station.traps:
        out["light traps"] = len(station.traps)
    if station.pattern is not None:
        out["pattern"] = f"{station.pattern.kind}, period {station.pattern.period_px:.1f} px"
    if station.haze_fit is not None:
        out["haze fit"] = f"certified = {station.haze_fit.slope:.4g}·raw + {station.haze_fit.intercept:.4g} %"
    if station.meta.get("created"):
        out["calibrated"] = station.meta["created"]
    if station.thresholds:
        out["fitted thresholds"] = ", ".join(sorted(station.thresholds))
    return out


def make_inspect_fn(station: Any, spec: Spec, pixel_size_mm: float | None, tone: Any = None):
    """The per-image function the batch runs (a seam tests can replace)."""
    try:
        import goggleqc.inspect.pipeline  # noqa: F401  (fail now, not once per image)
    except ImportError as exc:
        raise InputError(f"the inspection pipeline cannot be loaded ({exc}); reinstall goggleqc") from None
    return LensInspector(station, spec, pixel_size_mm, tone)


def _check_run_state(out_dir: Path, state: dict[str, Any], resume: bool) -> None:
    """Refuse to mix runs: an earlier run's results need --resume, and --resume needs the same spec."""
    path = out_dir / RUN_STATE
    jsonl = out_dir / "results.jsonl"
    has_results = jsonl.exists() and jsonl.stat().st_size > 0
    if not resume:
        if has_results:
            raise InputError(f"{out_dir} already holds results from an earlier run; pass --resume to continue it, "
                             "or choose an empty output folder")
        return
    if not path.exists():
        if has_results:
            raise InputError(f"{path}: missing, so the resume state is incomplete; start a new run in an empty "
                             "output folder")
        return
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(before, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise InputError(f"{path}: the resume state is corrupt ({exc}); start a new run in an empty "
                         "output folder") from None
    if before.get("spec") != state["spec"]:
        raise InputError(f"--resume with another spec than the run in {out_dir} ({before.get('spec_name')!r}); "
                         "resume with the same --spec, or start a new run in an empty output folder")


@app.command(help=HELP, no_args_is_help=True)
def inspect(
    paths: list[str] = typer.Argument(..., metavar="PATH", help="Images, folders (recursive) or quoted globs."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (created if missing).", metavar="OUT_DIR"),
    station_dir: Path = typer.Option(None, "--station", help="Station folder from `goggleqc calibrate`; "
                                     "without it images are inspected uncalibrated.", metavar="DIR"),
    spec_name: str = typer.Option(DEFAULT_SPEC, "--spec", help="Spec TOML file or preset name.", metavar="FILE|PRESET"),
    pixel_size: float = typer.Option(None, "--pixel-size", help="mm per pixel for uncalibrated images "
                                     "(a station's own scale wins).", metavar="MM"),
    tone: str = typer.Option("auto", "--tone", help="Tone curve of uncalibrated pictures, undone before inspection: "
                             "auto (what the file declares: a PNG's sRGB, iCCP or gAMA chunk; else JPEG files are an "
                             "ordinary camera's sRGB, others linear), linear, srgb or "
                             "gamma=G. A station's camera is linear.", metavar="auto|linear|srgb|gamma=G"),
    workers: int = typer.Option(DEFAULT_WORKERS, "--workers", "-j", help="Workers, one image each at a time "
                                "(default: the CPU count).", metavar="N"),
    pool: str = typer.Option(DEFAULT_POOL, "--pool", help="threads: workers are threads of this process; "
                             "processes: each a process of its own, sent the station once. Processes inspect about "
                             "a tenth faster from uncompressed files (BMP, TIFF), as fast from PNG, but take about "
                             "a second to start and hold a copy of everything each (docs/results-db.md).",
                             metavar="threads|processes"),
    resume: bool = typer.Option(False, "--resume", help="Continue a run in OUT_DIR, skipping images already done "
                                "(same path and content)."),
    db: Path = typer.Option(None, "--db", help="SQLite results store (default OUT_DIR/results.sqlite).", metavar="PATH"),
    overlays: str = typer.Option("fail", "--overlays", help="Overlay PNGs for: fail, all or none.",
                                 metavar="fail|all|none"),
    executor: str = typer.Option("local", "--executor", help="local: a pool on this machine; dask: Dask distributed "
                                 "(a LocalCluster of --workers processes, or the --scheduler's cluster; see "
                                 "docs/cluster.md).", metavar="local|dask"),
    scheduler: str = typer.Option(None, "--scheduler", help="Dask scheduler to connect to, with --executor dask.",
                                  metavar="tcp://HOST:8786"),
) -> None:
    try:
        if workers < 1:
            raise InputError(f"--workers must be 1 or more, not {workers}")
        if overlays not in OVERLAY_MODES:
            raise InputError(f"--overlays {overlays!r}: use one of {', '.join(OVERLAY_MODES)}")
        if pool not in POOLS:
            raise InputError(f"--pool {pool!r}: use threads or processes")
        if executor not in ("local", "dask"):
            raise InputError(f"--executor {executor!r}: use local or dask")
        if scheduler is not None and executor != "dask":
            raise InputError("--scheduler is for --executor dask; add --executor dask")
        if executor == "dask" and pool != DEFAULT_POOL:
            raise InputError("--pool is for --executor local; Dask sizes its own workers (see docs/cluster.md)")
        if executor == "dask":
            from goggleqc.dask_executor import require_dask

            require_dask()  # says how to install it, before any work
        if pixel_size is not None and not 0 < pixel_size <= 10:
            raise InputError(f"--pixel-size {pixel_size} mm is not a plausible pixel size (0–10 mm)")
        curve = parse_tone(tone)
        if station_dir is not None and curve is not None and curve.kind != "linear":
            raise InputError(f"--tone {tone} is for uncalibrated pictures; a station's camera is linear "
                             "(leave --tone out, or drop --station)")
        check_inputs(paths)
        spec = load_spec(spec_name)
        station = None
        if station_dir is not None:
            from goggleqc.calibration.station import Station
            from goggleqc.classify.model import attach_model

            station = Station.load(station_dir)
            attach_model(station)  # a learned model in the folder, if one was fitted
        out = Path(out)
        _probe_writable(out, "results")
        db_path = Path(db) if db is not None else out / "results.sqlite"
        if db is not None:
            _probe_writable(db_path.parent, "results database")
        state = {"spec_name": spec.name, "spec": spec.source, "station": str(station_dir) if station_dir else None,
                 "pixel_size_mm": pixel_size, "tone": tone}
        _check_run_state(out, state, resume)
        done = resume_state(out / "results.jsonl") if resume else {}
        inspect_fn = make_inspect_fn(station, spec, pixel_size, curve)
        total = count_image_paths(paths, exclude=[out])
        if total == 0:
            raise InputError(f"no images found in {', '.join(paths)} (looked for png, jpg, bmp and tif files)")
        (out / RUN_STATE).write_text(json.dumps(state, indent=1, ensure_ascii=False), encoding="utf-8")
        store = ResultStore(db_path)
        # worker processes are sent the real pipeline; a replaced inspect_fn (the tests' seam,
        # make_inspect_fn) need not be picklable and runs on threads
        pool = pool if isinstance(inspect_fn, LensInspector) else "threads"
        runner = functools.partial(run_batch, pool=pool)
        if executor == "dask":
            from goggleqc.dask_executor import DaskRunner

            runner = DaskRunner(scheduler, n_workers=workers, total=total)
            console.print(runner.describe(), highlight=False, soft_wrap=True)
    except GoggleQCError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{out}: cannot write ({exc.strerror or exc}); choose another output folder")

    store.start_run(command=shlex.join(["goggleqc", "inspect", *sys.argv[2:]]) if len(sys.argv) > 1 else "goggleqc inspect",
                    out_dir=str(out), spec_name=spec.name, spec=spec.source,
                    station=str(station_dir) if station_dir else None,
                    pixel_size_mm=station.pixel_size_mm if station is not None else pixel_size,
                    workers=getattr(runner, "n_threads", workers),
                    version=_version())
    jsonl = JsonlWriter(out / "results.jsonl", append=resume)
    csv = CsvWriter(out / "results.csv", append=resume)
    summary = None
    failure: str | None = None
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _RateColumn(),
                  TextColumn("[green]{task.fields[n_pass]} pass[/] [red]{task.fields[n_fail]} fail[/] "
                             "[yellow]{task.fields[n_error]} error[/] {task.fields[skipped]}"),
                  TimeRemainingColumn(), console=console, transient=False) as bar:
        task = bar.add_task("inspecting", total=total, n_pass=0, n_fail=0, n_error=0, skipped="")

        def on_record(record, s) -> None:
            bar.update(task, advance=1, n_pass=s.n_pass, n_fail=s.n_fail, n_error=s.n_error)

        def on_skip(path, s) -> None:
            bar.update(task, advance=1, skipped=f"{s.n_skipped} already done")

        try:
            summary = runner(iter_image_paths(paths, exclude=[out]), inspect_fn, [jsonl, csv, store], workers,
                                overlays=overlays, out_dir=out, done=done, on_record=on_record, on_skip=on_skip,
                                error_log=out / "errors.log")
        except (OutputError, WorkerError) as exc:
            failure = str(exc)
        finally:
            jsonl.close()
            csv.close()
            if executor == "dask":
                runner.close()
    if summary is not None:
        store.finish_run(status="interrupted" if summary.interrupted else "finished", n_images=summary.n_done,
                         n_pass=summary.n_pass, n_fail=summary.n_fail, n_error=summary.n_error,
                         n_skipped=summary.n_skipped, wall_s=summary.wall_s)
    else:
        store.finish_run(status="failed", n_images=0, n_pass=0, n_fail=0, n_error=0)
    store.close()
    run_info = {"out_dir": str(out), "workers": workers,
                "pool": "dask" if executor == "dask" else pool if workers > 1 else "thread"}
    if summary is not None:
        run_info.update(images=summary.n_done, skipped=summary.n_skipped, wall_s=summary.wall_s,
                        images_per_s=summary.images_per_s, interrupted=summary.interrupted)
    try:
        data = write_report(out / "report.html", read_records(out / "results.jsonl"), spec=spec,
                            station=_station_summary(station, str(station_dir) if station_dir else None, pixel_size),
                            run=run_info)
    except (OSError, GoggleQCError) as exc:
        fail(f"cannot write {out / 'report.html'} ({getattr(exc, 'strerror', None) or exc}); "
             f"the results are in {out / 'results.jsonl'}")
    if failure:
        fail(failure)
    counts = data.counts
    n_pass, n_fail, n_error = counts.get("pass", 0), counts.get("fail", 0), counts.get("error", 0)
    rate = f", {summary.images_per_s:.2f} images/s" if summary.n_done else ""
    skipped = f", {summary.n_skipped} already done" if summary.n_skipped else ""
    console.print(f"{n_pass + n_fail + n_error} images: {n_pass} pass, {n_fail} fail, {n_error} could not be inspected"
                  f"{skipped}{rate}. Report: {out / 'report.html'}", highlight=False, soft_wrap=True)
    if summary.interrupted:
        console.print(f"interrupted: {summary.n_done} images inspected in this run are saved in {out}; "
                      "rerun the same command with --resume to finish", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_INTERRUPTED)
    raise typer.Exit(exit_status(n_fail, n_error))


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("goggleqc")
    except Exception:  # running from a source tree without metadata
        return "unknown"
