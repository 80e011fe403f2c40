"""``goggleqc bench``: can this PC keep up with its camera? Time the pipeline at the station's size."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from goggleqc.cli import app, console, fail
from goggleqc.errors import GoggleQCError

#: exit status when the pipeline cannot keep up with the target FPS
EXIT_TOO_SLOW = 1
#: distinct frames rendered and cycled through (more only costs rendering time)
BENCH_FRAMES = 4
#: --seconds is capped so that rendering + warm-up + timing stays under 30 s at 5 MP
MAX_SECONDS = 20.0


@app.command()
def bench(
    station_dir: Path = typer.Option(None, "--station", help="Station folder: time frames of its size, through its calibration."),
    size: str = typer.Option(None, "--size", help="Frame size WIDTHxHEIGHT of a synthetic station (default 2448x2048)."),
    fps: float = typer.Option(30.0, "--fps", help="Target camera frame rate (lenses/s) the station must sustain."),
    seconds: float = typer.Option(10.0, "--seconds", help=f"Timing budget in seconds (at most {MAX_SECONDS:g}); half single-threaded, half on all cores."),
    bits: int = typer.Option(8, "--bits", help="Bit depth of a synthetic station (8 or 16); a --station sets its own."),
    backlight: str = typer.Option("uniform", "--backlight", help="Backlight of a synthetic station: uniform or pattern."),
    workers: int = typer.Option(None, "--workers", help="Workers for the all-core rate (default: one per core)."),
    pool: str = typer.Option("threads", "--pool", help="What the all-core workers are, as in `goggleqc inspect "
                             "--pool`: threads (the batch's default) or processes.", metavar="threads|processes"),
) -> None:
    """Time the end-to-end inspection on synthetic lenses and check it against a target camera FPS.

    Prints lenses/s single-threaded and on all cores, the single-frame latency p50/p95/p99 and the headroom (all-core lenses/s ÷ target FPS). Finishes in under 30 s.

    Exit status: 0 the target is met, 1 it is not, 2 usage error.
    """
    from goggleqc import benchmarking as B

    t0 = time.perf_counter()
    try:
        if station_dir is not None and size is not None:
            raise GoggleQCError("give --station or --size, not both (a station fixes the frame size)")
        if not fps > 0:
            raise GoggleQCError(f"--fps must be above 0, not {fps:g}")
        if not 0 < seconds <= MAX_SECONDS:
            raise GoggleQCError(f"--seconds must be above 0 and at most {MAX_SECONDS:g}, not {seconds:g}")
        if workers is not None and workers < 1:
            raise GoggleQCError(f"--workers must be 1 or more, not {workers}")
        from goggleqc.batch import POOLS

        if pool not in POOLS:
            raise GoggleQCError(f"--pool {pool!r}: use threads or processes")
        if bits not in (8, 16):
            raise GoggleQCError(f"--bits {bits}: use 8 or 16")
        if backlight not in ("uniform", "pattern"):
            raise GoggleQCError(f"--backlight {backlight!r}: use uniform or pattern")
        from goggleqc.spec import DEFAULT_SPEC, load_spec

        spec = load_spec(DEFAULT_SPEC)
        if station_dir is not None:
            from goggleqc.calibration.station import Station

            station = Station.load(station_dir)
            source = f"station {station_dir}"
            with console.status(f"rendering {BENCH_FRAMES} lenses through {station_dir} ..."):
                frames = B.frames_for_station(station, BENCH_FRAMES)
        else:
            from goggleqc.commands.samples import parse_size

            width, height = parse_size(size or "2448x2048")
            B.check_size(width, height)
            source = f"synthetic {backlight} station"
            with console.status(f"rendering a {width}×{height} station and {BENCH_FRAMES} lenses ..."):
                data = B.synthetic_set(width, height, bits=bits, backlight=backlight, count=BENCH_FRAMES)
            station, frames = data.station, data.frames
        with console.status(f"timing inspect_lens for {seconds:g} s ..."):
            report = B.run_bench(station, frames, spec, seconds=seconds, target_fps=fps, workers=workers,
                                 pool=pool)
    except GoggleQCError as exc:
        fail(str(exc))
        return
    elapsed = time.perf_counter() - t0
    _print(report, source, B.cpu_model(), elapsed)
    if not report.meets_target:
        console.print(f"[bold red]too slow:[/] {report.multi_lenses_per_s:.1f} lenses/s on {report.workers} "
                      f"{report.pool} is below the target {fps:g} FPS", highlight=False)
        raise typer.Exit(EXIT_TOO_SLOW)
    console.print(f"[bold green]ok:[/] meets {fps:g} FPS with headroom ×{report.headroom:.2f}", highlight=False)


def _print(report, source: str, cpu: str, elapsed_s: float) -> None:
    table = Table(title=f"goggleqc bench: {report.width}×{report.height} {report.bits}-bit, {source}",
                  title_justify="left", show_header=True)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("machine", f"{report.cores} cores, {cpu}")
    table.add_row("lenses/s, single-threaded", f"{report.single_lenses_per_s:.1f}")
    table.add_row(f"lenses/s, all cores ({report.workers} {report.pool})", f"{report.multi_lenses_per_s:.1f}")
    lat = report.latency_ms
    table.add_row("latency p50 / p95 / p99 (ms)", f"{lat['p50']:.1f} / {lat['p95']:.1f} / {lat['p99']:.1f}")
    table.add_row("target camera FPS", f"{report.target_fps:g}")
    table.add_row("headroom (all-core lenses/s ÷ FPS)", f"×{report.headroom:.2f}")
    stages = {k: v for k, v in report.stage_ms.items() if k != "total"}
    if stages:
        table.add_row("median stage ms", ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    table.add_row("frames timed", f"{report.frames_timed} ({', '.join(f'{k} {v}' for k, v in sorted(report.verdicts.items()))})")
    table.add_row("wall time (s)", f"{elapsed_s:.1f}")
    console.print(table)
    if report.errors:
        console.print(f"[yellow]warning:[/] {report.verdicts.get('error', 0)} frame(s) gave an "
                      f"error verdict, so their time is not a full inspection: {report.errors[0]}", highlight=False)
