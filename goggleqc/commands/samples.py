"""``goggleqc samples``: write a simulated sample set with truth."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from goggleqc.cli import app, console, fail
from goggleqc.errors import GoggleQCError
from goggleqc.synth.sampleset import N_CALIBRATION_FRAMES, PLATES_PCT, SampleSetOptions, write_sample_set


def parse_size(text: str) -> tuple[int, int]:
    """``WxH`` → (width, height), refusing anything else with a clear message."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        raise GoggleQCError(f"--size {text!r} is not WIDTHxHEIGHT, e.g. 1280x1024") from None
    return width, height


@app.command()
def samples(
    out_dir: Path = typer.Argument(..., help="Folder to write the sample set into (created if missing)."),
    count: int = typer.Option(12, "--count", "-n", help="Number of lenses."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives identical files."),
    backlight: str = typer.Option(None, "--backlight", help="uniform or pattern (default: random from the seed)."),
    size: str = typer.Option("1280x1024", "--size", help="Frame size WIDTHxHEIGHT in pixels."),
    pixel_size: float = typer.Option(None, "--pixel-size", help="mm per pixel in the lens plane (default: random 0.03–0.10)."),
    bits: int = typer.Option(8, "--bits", help="File bit depth: 8 or 16."),
    colour: bool = typer.Option(False, "--colour/--mono", help="Write colour (BGR) frames instead of monochrome."),
    spec: str = typer.Option("en166-clear", "--spec", help="Spec file or preset the truth verdicts use."),
    fog_sequence: bool = typer.Option(False, "--fog-sequence", help="Also write a fog-test sequence into OUT_DIR/fog/."),
    warp: float = typer.Option(0.0, "--warp", help="Bend the pattern target as seen through a curved visor or by a "
                               "tilted camera: the change of its scale from centre to corner (0–0.3; implies a pattern)."),
) -> None:
    """Write a simulated station (dark, flat, haze plates, scale target), lenses, a spec and truth."""
    try:
        width, height = parse_size(size)
        options = SampleSetOptions(count=count, seed=seed, width=width, height=height, pixel_size_mm=pixel_size,
                                   backlight=backlight, bits=bits, colour=colour, spec=spec,
                                   fog_sequence=fog_sequence, warp=warp)
        options.check()
        total = 2 * N_CALIBRATION_FRAMES + len(PLATES_PCT) + 1 + count + int(fog_sequence)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task("rendering", total=total)
            summary = write_sample_set(out_dir, options,
                                       progress=lambda stage, n: bar.update(task, advance=n, description=stage))
    except GoggleQCError as exc:
        fail(str(exc))
    console.print(f"wrote {summary['lenses']} lenses ({summary['truth_fail']} fail by truth), "
                  f"{summary['backlight']} backlight, {summary['pixel_size_mm']:.4f} mm/px, to {out_dir}")
