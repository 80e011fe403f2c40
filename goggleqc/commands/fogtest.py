"""``goggleqc fogtest``: fog-free time, N verdict and coating voids from a fog-test recording.

SRC is a video file, a folder of frames (timestamps from the names, e.g. ``00012_t0001.2000s.png``
or ``frame_1200ms.png``, or from ``--fps``), or a camera index for a live test. Frames are
streamed: only reduced frames are kept (station-model.md §5, inspect/fog.py).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import typer

from goggleqc.cli import app, console, fail
from goggleqc.errors import GoggleQCError, InputError

#: a timestamp at the end of a frame's file name: ``…1.25s`` or ``…1250ms``
_STAMP = re.compile(r"(\d+(?:\.\d+)?)(ms|s)$", re.IGNORECASE)


def frame_time_s(name: str) -> float | None:
    """Seconds from a frame file's stem (``…_t0001.2500s`` or ``…_1250ms``), or None."""
    m = _STAMP.search(Path(name).stem)
    if not m:
        return None
    value = float(m.group(1))
    return value / 1000.0 if m.group(2).lower() == "ms" else value


def _folder_frames(folder: Path, fps: float | None) -> Iterator[tuple[np.ndarray, float]]:
    from goggleqc.capture.imagefile import IMAGE_SUFFIXES, read_image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"{folder}: holds no images ({', '.join(IMAGE_SUFFIXES)})")
    stamps = [frame_time_s(p.name) for p in files]
    if all(s is not None for s in stamps):
        order = np.argsort(stamps, kind="stable")
        files = [files[i] for i in order]
        stamps = [stamps[i] for i in order]
    elif fps:
        stamps = [i / fps for i in range(len(files))]
    else:
        raise InputError(f"{folder}: the frame names carry no timestamps (like 00012_t0001.2000s.png); "
                         "give the frame rate with --fps")
    for path, t in zip(files, stamps):
        yield read_image(path), float(t)


def _video_frames(path: Path, fps: float | None) -> Iterator[tuple[np.ndarray, float]]:
    from goggleqc.capture.sources import VideoFileSource

    src = VideoFileSource(path)
    src.open()
    try:
        rate = fps or src.fps
        if not rate or rate <= 0:
            raise InputError(f"{path}: the video does not state its frame rate; give it with --fps")
        while (frame := src.read()) is not None:
            yield frame.image, frame.index / rate
    finally:
        src.close()


def _camera_frames(text: str, duration_s: float) -> Iterator[tuple[np.ndarray, float]]:
    from goggleqc.capture.sources import open_source

    src = open_source(text)
    src.open()
    try:
        t0 = None
        last = None
        while True:
            frame = src.read()
            if frame is None:
                return
            if last is not None and frame.t_s <= last:
                time.sleep(0.002)
                continue  # the newest-frame grabber repeats a frame until a new one arrives
            last = frame.t_s
            t0 = frame.t_s if t0 is None else t0
            if frame.t_s - t0 > duration_s:
                return
            yield frame.image, frame.t_s - t0
    finally:
        src.close()


def open_frames(src: str, fps: float | None, duration_s: float) -> Iterator[tuple[np.ndarray, float]]:
    """``(image, t_s)`` pairs from a video file, a frame folder or a camera index."""
    path = Path(src)
    if src.strip().isdigit() and not path.exists():
        return _camera_frames(src.strip(), duration_s)
    if path.is_dir():
        return _folder_frames(path, fps)
    if not path.exists():
        raise InputError(f"{src}: no such video file, frame folder or camera index")
    return _video_frames(path, fps)


def _parse_start(text: str) -> float | None:
    if text.strip().lower() == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise InputError(f"--start {text!r}: give auto or the exposure start in seconds") from None


def run_fogtest(src: str, out_dir: Path, *, station_dir: Path | None, fps: float | None, start: str,
                threshold: float, reference_s: float, duration_s: float, marginal_mm: float,
                progress=None) -> dict:
    """Analyse ``src`` and write fogtest.json, the two PNGs and fogtest.html into ``out_dir``."""
    from goggleqc.calibration.station import Station
    from goggleqc.inspect.fog import FogTest
    from goggleqc.report.fogtest import (write_contrast_plot, write_fogtest_html, write_fogtest_json,
                                         write_void_map)
    from goggleqc.synth.sampleset import ensure_writable

    if fps is not None and fps <= 0:
        raise InputError(f"--fps {fps} must be positive")
    station = Station.load(station_dir) if station_dir is not None else None
    test = FogTest(station, threshold=threshold, start_s=_parse_start(start), reference_s=reference_s,
                   marginal_mm=marginal_mm)
    ensure_writable(out_dir)
    n = 0
    for image, t in open_frames(src, fps, duration_s):
        test.add(image, t)
        n += 1
        if progress:
            progress(n)
    if n == 0:
        raise InputError(f"{src}: no frames could be read")
    result = test.result()
    plot = write_contrast_plot(result, out_dir / "fogtest_contrast.png")
    vmap = write_void_map(result, out_dir / "fogtest_voids.png")
    write_fogtest_json(result, out_dir / "fogtest.json", {"source": str(src), "frames_read": n,
                                                          "station": str(station_dir) if station_dir else None})
    write_fogtest_html(result, out_dir / "fogtest.html", plot.name, vmap.name, source=str(src))
    return {"result": result, "frames": n}


@app.command()
def fogtest(
    src: str = typer.Argument(..., help="Video file, frame folder, or camera index (live test)."),
    out: Path = typer.Option(..., "--out", help="Folder for fogtest.json, the plots and fogtest.html."),
    station: Path = typer.Option(None, "--station", help="Station folder (dark, flat, pixel size); needed for mm²."),
    fps: float = typer.Option(None, "--fps", help="Frame rate, when the video or frame names do not give times."),
    start: str = typer.Option("auto", "--start", help="Exposure start: auto, or seconds from the first frame."),
    threshold: float = typer.Option(0.8, "--threshold", help="Fogged = contrast below this fraction of clear."),
    reference_s: float = typer.Option(1.0, "--reference", help="With --start auto: seconds of clear frames at the start."),
    duration: float = typer.Option(60.0, "--duration", help="Live cameras: seconds to record."),
    marginal_mm: float = typer.Option(5.0, "--marginal-mm", help="Marginal band width (EN 166: 5 mm)."),
) -> None:
    """Measure the fog-free time (EN 168 N mark: ≥ 8 s) and map coating voids from a fog-test recording."""
    try:
        with console.status("analysing frames…") as status:
            summary = run_fogtest(src, out, station_dir=station, fps=fps, start=start, threshold=threshold,
                                  reference_s=reference_s, duration_s=duration, marginal_mm=marginal_mm,
                                  progress=lambda n: status.update(f"analysing frames… {n}"))
    except GoggleQCError as exc:
        fail(str(exc))
    r = summary["result"]
    ff = f"{r.fog_free_s:.2f} s" if r.fog_free_s is not None else f"≥ {r.fog_free_at_least_s:.1f} s (never fogged)"
    console.print(f"fog-free {ff}, N {r.n_verdict}, {len(r.voids)} void(s), {summary['frames']} frames; wrote {out}")
