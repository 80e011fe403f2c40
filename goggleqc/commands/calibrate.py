"""``goggleqc calibrate``: build a station folder from dark, flat, scale and haze plates, or show one."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import typer
from rich.table import Table

from goggleqc.cli import app, console, fail
from goggleqc.errors import GoggleQCError


def _board(text: str) -> tuple[int, int]:
    parts = text.lower().replace("×", "x").split("x")
    try:
        cols, rows = (int(p) for p in parts)
    except ValueError:
        raise GoggleQCError(f"--board {text!r} is not COLSxROWS inner corners, e.g. 9x6") from None
    if cols < 2 or rows < 2:
        raise GoggleQCError(f"--board {text!r}: a chessboard needs at least 2×2 inner corners")
    return cols, rows


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def calibrate(
    ctx: typer.Context,
    dark: list[str] = typer.Option(None, "--dark", help="Dark frame(s): repeat --dark, quote a glob ('cal/dark_*.png'), or give a folder of them."),
    flat: list[str] = typer.Option(None, "--flat", help="Flat frame(s) of the backlight alone: repeat, quote a glob, or give a folder."),
    pixel_size: float = typer.Option(None, "--pixel-size", help="mm per pixel in the lens plane."),
    scale_target: Path = typer.Option(None, "--scale-target", help="Chessboard image to measure the pixel scale."),
    square_mm: float = typer.Option(None, "--square-mm", help="Chessboard square side in mm."),
    board: str = typer.Option("9x6", "--board", help="Chessboard inner corners COLSxROWS."),
    haze_standard: list[str] = typer.Option(None, "--haze-standard", help="Haze plate IMG=PCT (certified haze %); repeat."),
    out: Path = typer.Option(None, "--out", help="Station folder to write."),
    force: bool = typer.Option(False, "--force", help="Replace an existing station folder."),
    show: Path = typer.Option(None, "--show", help="Print the summary of an existing station folder."),
    png: Path = typer.Option(None, "--png", help="With --show (or after calibrating): write a PNG marking traps/pattern and scale."),
) -> None:
    """Calibrate a station (dark, flat, pixel scale, haze plates) into a station folder, or --show one."""
    from goggleqc.calibration.build import build_station, expand_paths, parse_haze_standard
    from goggleqc.calibration.station import Station

    try:
        if ctx.args:
            raise GoggleQCError(f"unexpected argument {ctx.args[0]!r}: repeat the option before each file "
                                "(--dark a.png --dark b.png) or quote a glob (--dark 'cal/dark_*.png')")
        if show is not None:
            station = Station.load(show)
            _print_summary(station, show)
            if png is not None:
                write_overview_png(station, png)
                console.print(f"wrote {png}")
            return
        if out is None:
            raise GoggleQCError("--out STATION_DIR is required (or --show STATION_DIR to inspect one)")
        darks, flats = expand_paths(dark), expand_paths(flat)
        if not darks or not flats:
            raise GoggleQCError("give the calibration frames: --dark FILE... and --flat FILE...")
        if (out / "station.toml").exists() and not force:
            raise GoggleQCError(f"{out} already holds a station; use --force to replace it, or choose another --out")
        plates = [parse_haze_standard(text) for text in (haze_standard or [])]
        station = build_station(darks, flats, pixel_size_mm=pixel_size, scale_target=scale_target, square_mm=square_mm,
                                board=_board(board), haze_standards=plates, out_dir=out)
        station.save(out, force=force)
        _print_summary(station, out)
        if png is not None:
            write_overview_png(station, png)
            console.print(f"wrote {png}")
    except GoggleQCError as exc:
        fail(str(exc))
    console.print(f"station written to {out}")


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _print_summary(station, folder: Path) -> None:
    h, w = station.shape
    meta = station.meta
    table = Table(title=f"station {folder}", show_header=False, title_justify="left")
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("created", _fmt(meta.get("created")))
    table.add_row("frames", f"{w}×{h}, {station.bits}-bit files ({meta.get('frames', {}).get('data_bits', '?')}-bit data)")
    for kind in ("dark", "flat"):
        f = meta.get("frames", {}).get(kind)
        if f:
            table.add_row(f"{kind} frames", f"{f['frames']} averaged; noise {_fmt(f.get('noise_dn_per_frame'), 2)} DN per "
                          f"frame → {_fmt(f.get('noise_dn_averaged'), 2)} DN (gain ×{_fmt(f.get('noise_gain'), 2)})")
    scale = meta.get("scale", {})
    src = scale.get("source", "given")
    extra = f" (chessboard, residual {scale['residual_px']:.3f} px)" if src == "chessboard" else f" ({src})"
    table.add_row("pixel size", f"{_fmt(station.pixel_size_mm, 5)} mm/px{extra}")
    table.add_row("backlight", station.backlight)
    if station.backlight == "uniform":
        if not station.traps:
            table.add_row("light traps", "[red]none found: haze cannot be measured[/]")
        for i, t in enumerate(station.traps):
            dia = f", Ø {2 * t.r_px * station.pixel_size_mm:.2f} mm" if station.pixel_size_mm else ""
            table.add_row(f"trap {i}", f"centre ({t.x_px:.2f}, {t.y_px:.2f}) px, radius {t.r_px:.2f} px{dia}")
        quant = meta.get("trap_quantisation")
        if quant:
            table.add_row("trap quantisation", f"1 DN over a trap reads {quant['step_pct']:.3f} % haze; "
                          f"{quant['dither_dn']:.2f} DN of noise spreads the rounding → haze error up to "
                          f"{quant['error_pp']:.3f} pp")
    elif station.pattern is not None:
        p = station.pattern
        mm = f" = {p.period_px * station.pixel_size_mm:.3f} mm" if station.pixel_size_mm else ""
        table.add_row("pattern", f"{p.kind}, period {p.period_px:.3f} px{mm}, angle {p.angle_deg:.2f}°, "
                      f"contrast {p.contrast:.3f}")
    if station.haze_fit is not None:
        f = station.haze_fit
        table.add_row("haze fit", f"certified = {f.slope:.4f} × raw {f.intercept:+.4f} %")
        for plate in f.plates:
            loo = plate.get("loo_residual_pp")
            table.add_row(f"  {Path(plate['file']).name}",
                          f"certified {plate['certified_pct']:g} %, raw {plate['raw_pct']:.3f} %, corrected "
                          f"{plate['corrected_pct']:.3f} % (residual {plate['residual_pp']:+.3f} pp"
                          + (f", left out {loo:+.3f} pp)" if loo is not None else ")"))
    else:
        table.add_row("haze fit", "none (raw haze is reported uncorrected)")
    if meta.get("warning"):
        table.add_row("warning", f"[yellow]{meta['warning']}[/]")
    console.print(table)


def write_overview_png(station, path: Path) -> Path:
    """Write the flat as an 8-bit PNG marking the traps or the pattern axes and a scale bar."""
    from goggleqc.capture.imagefile import write_image

    flat = station.flat
    lo, hi = np.percentile(flat, (0.5, 99.5))
    gray = np.clip((flat - lo) * (255.0 / max(hi - lo, 1e-6)), 0, 255).astype(np.uint8)
    img = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    h, w = flat.shape
    thick = max(1, int(round(min(h, w) / 400)))
    green, red, yellow = (0, 200, 0), (0, 0, 255), (0, 220, 255)
    for i, t in enumerate(station.traps):
        c = (int(round(t.x_px)), int(round(t.y_px)))
        cv2.circle(img, c, int(round(t.r_px)), green, thick, cv2.LINE_AA)
        cv2.drawMarker(img, c, red, cv2.MARKER_CROSS, max(6, int(t.r_px / 2)), thick)
        cv2.putText(img, f"trap{i}", (c[0] + int(t.r_px) + 3, c[1]), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, yellow, thick)
    if station.pattern is not None:
        p = station.pattern
        a = np.deg2rad(p.angle_deg)
        u = np.array([np.cos(a), np.sin(a)])
        v = np.array([-u[1], u[0]])
        centre = np.array([w / 2, h / 2])
        span = 3 * p.period_px
        for axis, col in ((u, red), (v, green) if p.kind != "stripes" else (None, None)):
            if axis is None:
                continue
            a0, a1 = centre - axis * span, centre + axis * span
            cv2.arrowedLine(img, tuple(int(x) for x in a0), tuple(int(x) for x in a1), col, thick, cv2.LINE_AA, 0, 0.05)
        cv2.putText(img, f"{p.kind} {p.period_px:.2f} px @ {p.angle_deg:.1f} deg", (10, 20), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45 * thick, yellow, thick)
    if station.pixel_size_mm:
        bar_mm = 10.0 if w * station.pixel_size_mm > 40 else 5.0
        bar_px = int(round(bar_mm / station.pixel_size_mm))
        y = h - 15
        cv2.line(img, (10, y), (10 + bar_px, y), yellow, thick + 1)
        cv2.putText(img, f"{bar_mm:g} mm ({station.pixel_size_mm:.4f} mm/px)", (10, y - 6), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thick, yellow, thick)
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise GoggleQCError(f"--png {path}: the overview is written as PNG; give a .png name")
    return write_image(path, img)
