"""``goggleqc line``: run a station: trigger on each lens placed, inspect it, show and record the verdict."""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

import typer

from goggleqc.cli import app, console, fail
from goggleqc.errors import GoggleQCError, InputError
from goggleqc.spec import DEFAULT_SPEC, load_spec

#: exit status after Ctrl-C or SIGTERM (128 + SIGINT, as shells report it)
EXIT_INTERRUPTED = 130

HELP = """Run an inspection station on a live camera (or a recorded or simulated line).

SRC is a camera index (0), a V4L2 device (/dev/video0), an RTSP/HTTP URL, a video file, an
image folder played as a stream, or synthetic:seed=3,size=640x512,lenses=5 (the simulator;
its seed, size, pixel and backlight keys match `goggleqc samples`).

Each lens placed in the fixture is inspected once, when it has settled (no motion for
--settle-frames frames); the station re-arms when the fixture is empty again. --mode manual
inspects on SPACE in the window (Enter on the console); --mode continuous inspects every
settled frame. Cameras are opened with exposure, white balance and focus locked; what the
camera really accepted is printed and logged (docs/line-station.md).

OUT_DIR receives, appended across runs:
  results.jsonl    one record per inspection (as `goggleqc inspect` writes)
  results.sqlite   the SQLite store, committed per inspection
  images/          the inspected frames (lossless PNG) for --save fail|all
  overlays/        the same with defects drawn
  line.log         camera events (lost, reconnected, settings) and verdicts

A lost or frozen camera is detected within --timeout seconds and reconnected with backoff.
Ctrl-C or SIGTERM finishes the current inspection and stops; every verdict shown is already
on disk.

Exit status: 0 finished or stopped; 2 usage error; 130 interrupted.
"""


def _parse_size(text: str | None) -> tuple[int | None, int | None]:
    if not text:
        return None, None
    parts = text.lower().replace("×", "x").split("x")
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        raise InputError(f"--size {text!r} is not WIDTHxHEIGHT, e.g. 2448x2048") from None
    return width, height


def make_inspect_fn(station, spec, pixel_size_mm):
    """The real pipeline bound to a station and spec (a seam tests can replace)."""
    from goggleqc.batch import LensInspector

    return LensInspector(station, spec, pixel_size_mm)


@app.command(help=HELP, no_args_is_help=True)
def line(
    camera: str = typer.Option(..., "--camera", "-c", help="Camera index, /dev/videoN, URL, video file, image folder "
                               "or synthetic:…", metavar="SRC"),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (created if missing).", metavar="OUT_DIR"),
    station_dir: Path = typer.Option(None, "--station", help="Station folder from `goggleqc calibrate`.",
                                     metavar="DIR"),
    spec_name: str = typer.Option(DEFAULT_SPEC, "--spec", help="Spec TOML file or preset name.", metavar="FILE|PRESET"),
    window: bool = typer.Option(True, "--window/--no-window", help="Show the station window, or print to the console."),
    mode: str = typer.Option("auto", "--mode", help="auto (lens placed), manual (key) or continuous.",
                             metavar="auto|manual|continuous"),
    average: int = typer.Option(1, "--average", help="Frames averaged per inspection (all still).", metavar="N"),
    settle_frames: int = typer.Option(3, "--settle-frames", help="Still frames before a lens counts as settled.",
                                      metavar="K"),
    save: str = typer.Option("fail", "--save", help="Save inspected images and overlays for: fail, all or none.",
                             metavar="fail|all|none"),
    size: str = typer.Option(None, "--size", help="Camera frame size WIDTHxHEIGHT.", metavar="WxH"),
    fps: float = typer.Option(None, "--fps", help="Camera frame rate."),
    exposure: float = typer.Option(None, "--exposure", help="Manual exposure in the driver's units "
                                   "(V4L2: 100 µs steps); exposure is locked either way."),
    gain: float = typer.Option(None, "--gain", help="Camera gain in the driver's units."),
    pixel_size: float = typer.Option(None, "--pixel-size", help="mm per pixel without a station.", metavar="MM"),
    timeout: float = typer.Option(2.0, "--timeout", help="Seconds without a new frame before the camera counts as "
                                  "lost (frozen frames too).", metavar="S"),
    max_inspections: int = typer.Option(None, "--max-inspections", help="Stop after N inspections.", metavar="N"),
    duration: float = typer.Option(None, "--duration", help="Stop after S seconds.", metavar="S"),
) -> None:
    from goggleqc.capture.sources import CameraSettings, open_source
    from goggleqc.capture.watchdog import LiveFeed
    from goggleqc.line.display import ConsoleDisplay, WindowDisplay, stdin_keys
    from goggleqc.line.station import SAVE_MODES, LineStation
    from goggleqc.line.trigger import Trigger, TriggerSettings, reduce_frame
    from goggleqc.report.store import ResultStore
    from goggleqc.report.writers import JsonlWriter

    try:
        if save not in SAVE_MODES:
            raise InputError(f"--save {save!r}: use fail, all or none")
        if timeout <= 0:
            raise InputError(f"--timeout must be positive, not {timeout}")
        if pixel_size is not None and not 0 < pixel_size <= 10:
            raise InputError(f"--pixel-size {pixel_size} mm is not a plausible pixel size (0–10 mm)")
        settings = TriggerSettings(mode=mode, settle_frames=settle_frames, average_frames=average)
        settings.check()
        width, height = _parse_size(size)
        cam_settings = CameraSettings(width=width, height=height, fps=fps, exposure=exposure, gain=gain)
        source = open_source(camera, settings=cam_settings, timeout_s=timeout)
        spec = load_spec(spec_name)
        station = None
        reference = None
        if station_dir is not None:
            from goggleqc.calibration.station import Station
            from goggleqc.classify.model import attach_model

            station = Station.load(station_dir)
            attach_model(station)  # a learned model in the folder, if one was fitted
            reference = reduce_frame(station.dark + station.flat)  # the empty fixture, as calibrated
        inspect_fn = make_inspect_fn(station, spec, pixel_size)
        out.mkdir(parents=True, exist_ok=True)
        display = WindowDisplay() if window else ConsoleDisplay(
            echo=lambda text: console.print(text, highlight=False, soft_wrap=True, markup=False),
            keys=stdin_keys() if mode == "manual" else None)
        store = ResultStore(out / "results.sqlite")
        jsonl = JsonlWriter(out / "results.jsonl", append=True)
    except GoggleQCError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{out}: cannot write ({exc.strerror or exc}); choose another output folder")

    logger = logging.getLogger("goggleqc")
    handler = logging.FileHandler(out / "line.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    previous_level = logger.level
    logger.setLevel(logging.INFO)
    store.start_run(command=shlex.join(["goggleqc", "line", *sys.argv[2:]]) if len(sys.argv) > 1 else "goggleqc line",
                    out_dir=str(out), spec_name=spec.name, spec=spec.source,
                    station=str(station_dir) if station_dir else None,
                    pixel_size_mm=station.pixel_size_mm if station is not None else pixel_size, workers=1)
    station_loop = LineStation(inspect_fn, Trigger(settings, reference), sinks=[jsonl, store], display=display,
                               out_dir=out, save=save, source_text=camera,
                               expected_shape=station.shape if station is not None else None)
    station_loop.keep_inspections = False  # a station runs for days: memory must stay flat
    feed = LiveFeed(lambda: source, timeout_s=timeout, freeze_s=timeout)
    logger.info("line started: source %s, mode %s, spec %s, station %s", camera, mode, spec.name, station_dir)
    problem = None
    try:
        summary = station_loop.run(feed, max_inspections=max_inspections, duration_s=duration)
    except GoggleQCError as exc:
        problem = str(exc)
        summary = station_loop.summary
        summary.status = "failed"
    finally:
        jsonl.close()
        t = station_loop.summary.tally
        store.finish_run(status=station_loop.summary.status, n_images=t.n, n_pass=t.n_pass, n_fail=t.n_fail,
                         n_error=t.n_error, wall_s=station_loop.summary.wall_s)
        store.close()
        display.close()
        logger.info("line %s: %s", station_loop.summary.status, t.line())
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
        handler.close()
    if problem:
        fail(problem)
    lat = summary.median_latency_ms
    console.print(f"{summary.status}: {summary.tally.n} inspections, {summary.tally.line()}, "
                  f"{summary.frames} frames" + (f", median {lat:.0f} ms settled frame → verdict" if lat else "")
                  + (f", {summary.reconnects} reconnect(s)" if summary.reconnects else "")
                  + f". Results in {out}", highlight=False, soft_wrap=True)
    if summary.status == "interrupted":
        raise typer.Exit(EXIT_INTERRUPTED)
