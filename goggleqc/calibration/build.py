"""``build_station``: from calibration files to a :class:`Station` (station-model.md §6).

Steps: average and check the dark and flat frames; set the pixel scale (given, or measured
from a chessboard); find the backlight kind and geometry; precompute the scatter map; fit
the haze plates. Every failure is a :class:`CalibrationError` naming the file and the fix.
"""

from __future__ import annotations

import dataclasses

import glob
import os
from pathlib import Path

import numpy as np

import goggleqc
from goggleqc.calibration.backlight import classify_backlight
from goggleqc.calibration.frames import FrameStack, dark_and_flat, read_frames
from goggleqc.calibration.hazefit import fit_haze
from goggleqc.calibration.scale import measure_pixel_size
from goggleqc.calibration.station import NOMINAL_SCATTER_SIGMA_MM, Station, _now, scatter_map
from goggleqc.errors import CalibrationError, InputError


def parse_haze_standard(text: str) -> tuple[Path, float]:
    """``IMG=PCT`` → (path, certified haze %), refusing anything else with a clear message."""
    if "=" not in text:
        raise CalibrationError(f"--haze-standard {text!r}: write IMG=PCT, e.g. plate_2.png=2.0")
    name, value = text.rsplit("=", 1)
    try:
        pct = float(value)
    except ValueError:
        raise CalibrationError(f"--haze-standard {text!r}: the plate value {value!r} is not a number; "
                               "write IMG=PCT with PCT the certified haze in %, e.g. plate_2.png=2.0") from None
    if not np.isfinite(pct) or not 0.0 <= pct < 100.0:
        raise CalibrationError(f"--haze-standard {text!r}: certified haze must be a percentage in 0–100, not {value}")
    if not name:
        raise CalibrationError(f"--haze-standard {text!r}: no image before '='; write IMG=PCT")
    return Path(name), pct


#: below this contrast of the pattern in the flat, pattern haze is imprecise: the stress
#: sets' stations at 12–63 % read haze to 0.08–0.17 pp (MAE), one at 3.1 % (a 1.27 mm checker
#: under 0.32 mm of defocus) to 0.75 pp
LOW_PATTERN_CONTRAST = 0.08


def expand_paths(items: list[str] | None) -> list[str]:
    """Expand quoted globs, comma-separated lists and folders (their image files, sorted by
    name); keep plain names as they are, so a missing file is reported by name."""
    from goggleqc.capture.imagefile import IMAGE_SUFFIXES

    out: list[str] = []
    for item in items or []:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            if os.path.isdir(part):
                images = sorted(str(p) for p in Path(part).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
                if not images:
                    raise CalibrationError(f"{part}: a folder with no image files ({', '.join(IMAGE_SUFFIXES)})")
                out.extend(images)
                continue
            matches = sorted(glob.glob(part)) if any(c in part for c in "*?[") else []
            out.extend(matches if matches else [part])
    return out


def _rel(path: str | Path, base: Path | None) -> str:
    if base is None:
        return str(path)
    try:
        return os.path.relpath(Path(path).resolve(), base.resolve())
    except ValueError:  # another drive on Windows
        return str(path)


#: an 8-bit station warns when its traps' quantisation allows a haze error above this (pp):
#: two thirds of issue 4's 0.15 pp target
QUANTISATION_WARN_PP = 0.1


def _noise_summary(stack: FrameStack) -> dict:
    return {"frames": len(stack.files), "noise_dn_per_frame": stack.noise_dn, "noise_dn_averaged": stack.mean_noise_dn,
            "noise_gain": stack.noise_gain}


def build_station(dark: list[str | Path], flat: list[str | Path], *, pixel_size_mm: float | None = None,
                  scale_target: str | Path | None = None, square_mm: float | None = None,
                  board: tuple[int, int] = (9, 6), haze_standards: list[tuple[str | Path, float]] = (),
                  out_dir: str | Path | None = None, created: str | None = None) -> Station:
    """Calibrate a station from files.

    Parameters
    ----------
    dark, flat : list of path
        Dark and flat frames (several of each are averaged in float).
    pixel_size_mm : float, optional
        The pixel scale, mm per pixel in the lens plane; or measure it with ``scale_target``.
    scale_target : path, optional
        Image of a chessboard in the lens plane with ``square_mm`` squares and ``board``
        inner corners (columns, rows).
    haze_standards : list of (path, float)
        Haze reference plate images and their certified haze (%). Several images with the
        same certified value are taken as frames of one plate and averaged.
    out_dir : path, optional
        Only used to record input paths relative to the station folder.
    created : str, optional
        Creation time to record (ISO 8601); now by default.
    """
    base = Path(out_dir) if out_dir is not None else None
    dark_stack, flat_stack, signal, noise_model = dark_and_flat(list(dark), list(flat))
    ref_name = flat_stack.files[0]

    def same_format(path: str | Path, kind: str) -> np.ndarray:
        """Read an image that must match the flats' size and bit depth."""
        (p, image), = read_frames([path], kind)
        h, w = signal.shape
        if image.shape != (h, w):
            raise CalibrationError(f"{p} is {image.shape[1]}×{image.shape[0]} but the flat {ref_name} is {w}×{h}; "
                                   f"take the {kind} with the same camera at the same size")
        bits = 8 if image.dtype == np.uint8 else 16
        if bits != flat_stack.bits:
            raise CalibrationError(f"{p} is {bits}-bit but the flat {ref_name} is {flat_stack.bits}-bit; save the "
                                   f"{kind} at the flats' bit depth")
        return image

    scale: dict = {}
    if pixel_size_mm is not None and scale_target is not None:
        raise CalibrationError("give either --pixel-size or --scale-target with --square-mm, not both")
    if scale_target is not None:
        if square_mm is None:
            raise CalibrationError("--scale-target needs --square-mm, the side of one chessboard square in mm")
        target = same_format(scale_target, "scale target")
        fit = measure_pixel_size(target.astype(np.float32) - dark_stack.mean, square_mm, board, name=str(scale_target))
        pixel_size_mm = fit.pixel_size_mm
        scale = {"source": "chessboard", "file": _rel(scale_target, base), "square_mm": square_mm,
                 "board": list(board), "residual_px": round(fit.residual_px, 4), "corners": fit.corners,
                 "angle_deg": round(fit.angle_deg, 3), "method": fit.method}
    elif pixel_size_mm is not None:
        if not 0.001 <= pixel_size_mm <= 5.0:
            raise CalibrationError(f"--pixel-size {pixel_size_mm} mm per pixel is implausible; give mm per pixel in "
                                   "the lens plane, e.g. 0.05")
        scale = {"source": "given"}
    else:
        raise CalibrationError("no pixel scale: give --pixel-size MM, or --scale-target IMG with --square-mm S")

    kind, traps, pattern, cmap, cell_px = classify_backlight(signal, pixel_size_mm)
    meta = {
        "goggleqc_version": goggleqc.__version__,
        "inputs": {"dark": [_rel(p, base) for p in dark_stack.files], "flat": [_rel(p, base) for p in flat_stack.files]},
        "frames": {"dark": _noise_summary(dark_stack), "flat": _noise_summary(flat_stack),
                   "data_bits": flat_stack.data_bits},
        "scale": scale,
        "flat_levels_dn": {"p5": float(np.percentile(signal, 5)), "median": float(np.median(signal)),
                           "p95": float(np.percentile(signal, 95))},
    }
    if cmap is not None:
        meta["pattern_contrast_cell_px"] = cell_px
    if kind == "uniform" and not traps:
        meta["warning"] = "no light traps found in the flat: haze cannot be measured on this station"
    elif pattern is not None and pattern.contrast < LOW_PATTERN_CONTRAST:
        meta["warning"] = (f"the pattern's contrast in the flat is only {pattern.contrast:.1%}: haze is read from its "
                           "loss, so it will be imprecise (errors of several tenths of a percentage point, against "
                           "about 0.1 with 10 % or more); focus the target better or use a coarser one")
    station = Station(dark=dark_stack.mean, flat=signal, bits=flat_stack.bits, pixel_size_mm=float(pixel_size_mm),
                      backlight=kind, traps=traps, pattern=pattern, meta=meta,
                      scatter_small=scatter_map(signal, NOMINAL_SCATTER_SIGMA_MM / pixel_size_mm),
                      pattern_contrast=cmap, noise_model=noise_model, flat_frames=len(flat_stack.files))
    station.meta["created"] = created or _now()
    if kind == "uniform" and traps and flat_stack.bits == 8:
        from goggleqc.inspect.haze import trap_quantisation

        quant = trap_quantisation(station, dark_stack.noise_dn, len(dark_stack.files))
        if quant is not None:
            station.meta["trap_quantisation"] = quant
            if quant["error_pp"] > QUANTISATION_WARN_PP:
                text = (f"the traps are read in 8-bit steps of {quant['step_pct']:.2f} % haze with only "
                        f"{quant['dither_dn']:.2f} DN of noise to spread them: haze may be off by up to "
                        f"{quant['error_pp']:.2f} percentage points near 0 %; use the camera's 10- or 12-bit mode "
                        "(or more gain)")
                station.meta["warning"] = f"{station.meta['warning']}; {text}" if station.meta.get("warning") else text

    if haze_standards:
        if kind == "uniform" and not traps:
            raise CalibrationError("haze plates were given but the flat shows no light traps and no pattern, so haze "
                                   "cannot be measured; check the flat frames")
        from goggleqc.inspect.haze import fit_region_sd, fit_response, plate_haze_parts

        # several images of one plate (the same certified value) are averaged into one point
        groups: dict[float, list[tuple[str, float]]] = {}
        fields, parts = [], []
        for path, pct in haze_standards:
            image = same_format(path, "haze plate")
            try:
                value, regions = plate_haze_parts(image, station)
            except InputError as exc:
                raise CalibrationError(f"{path}: {exc}") from None
            groups.setdefault(float(pct), []).append((_rel(path, base), value))
            fields.append(value)
            parts.append(regions)
        names = [" + ".join(name for name, _ in group) for group in groups.values()]
        cert = list(groups)
        raw = [float(np.mean([value for _, value in group])) for group in groups.values()]
        response = fit_response(fields, parts)
        station.haze_fit = dataclasses.replace(fit_haze(names, cert, raw), response=response,
                                               region_sd=fit_region_sd(fields, parts, response))
        station.cache.clear()
    return station
