"""The calibrated station: what inspection needs to know about a camera and its backlight.

A ``Station`` holds the averaged dark frame, the dark-subtracted flat ``B`` (station-model.md
§2), the backlight geometry (light traps or pattern), the pixel scale and the haze-plate
correction. Per-station work (the reciprocal flat, the scatter map, the haze sampling plan) is
done once, when the station is built or loaded, never per lens.

Station folder layout (version 1)::

    station.toml          version, date, inputs and every derived number (TOML)
    dark.npy              averaged dark frame, float32 DN, (M, N)
    flat.npy              averaged flat minus dark, float32 DN, (M, N)
    scatter.npy           B ⊛ K̂ on a reduced grid, float32 DN (the nominal wide-angle scatter)
    pattern_contrast.npy  pattern backlights only: local pattern contrast on a coarse grid
    haze_response.npy     with haze plates: each haze region's reading of a plate ÷ the field's
                          (1 × traps, or the grid of 8 mm pattern windows; HazeFit.response)

The frames are stored as ``.npy`` because they are float: a 16-bit PNG cannot hold the
fractional DN an average of several frames carries, and ``.npy`` is exact and loads fast.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from goggleqc.errors import CalibrationError, InputError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

STATION_VERSION = 1
STATION_TOML = "station.toml"
#: nominal width (Gaussian sigma, mm) of the wide-angle scatter kernel K̂ used for raw haze
NOMINAL_SCATTER_SIGMA_MM = 20.0


@dataclass(frozen=True)
class Trap:
    """A light trap seen in the flat: centre and radius in pixels."""

    x_px: float
    y_px: float
    r_px: float


@dataclass(frozen=True)
class Pattern:
    """A periodic backlight target: ``kind`` (checker, grid, stripes), period and orientation.

    ``angle_deg`` is the direction of the pattern's first axis from the image x axis, in
    [0, 90) for checker and grid, [0, 180) for stripes. ``contrast`` is the median local
    pattern contrast (√2 × band-passed rms ÷ local mean: the amplitude of an equivalent sine).
    """

    kind: str
    period_px: float
    angle_deg: float
    contrast: float = 0.0


@dataclass(frozen=True)
class HazeFit:
    """Linear correction of raw haze to certified haze: ``certified = slope·raw + intercept`` (in %).

    ``response`` is the plates' response map: how much higher each haze region (each light
    trap, as a 1 × n row; each 8 mm window of a pattern, as its grid) reads a field-filling
    plate than the whole field does. The nominal kernel ``K̂`` is not the true ``K``, and the
    ratio of their effects varies over the field (vignetting, traps near one another), so a
    region's raw haze is divided by its response before the line is applied: the line was
    fitted on whole-field values. None: no map (every region taken as the field).

    ``region_sd`` is how far the plates' regions, so divided, still scatter about the whole
    field's reading (raw %, pooled over the plates): a part of each region's reading that is
    the station's own, not noise. The worst-region test counts it with the region's noise.
    """

    slope: float = 1.0
    intercept: float = 0.0
    plates: tuple[dict, ...] = ()
    response: np.ndarray | None = field(default=None, compare=False)
    region_sd: float = 0.0

    def apply(self, raw_pct: float) -> float:
        return self.slope * raw_pct + self.intercept


def scatter_map(flat: np.ndarray, sigma_px: float) -> np.ndarray:
    """``B ⊛ K̂``: the flat blurred by the nominal wide scatter kernel, on a reduced grid.

    K̂ is far wider than a trap or pattern period, so a ~1/8 resolution computation is exact
    to well under a percent. Returns the reduced map (float32); :func:`expand_map` restores
    the full size.
    """
    h, w = flat.shape
    factor = max(1, int(min(h, w) // 128))
    small = cv2.resize(flat, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(small, (0, 0), sigma_px / factor, borderType=cv2.BORDER_REFLECT).astype(np.float32)


def expand_map(small: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a smooth reduced map back to the frame ``shape`` (M, N)."""
    return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR).astype(np.float32)


@dataclass
class Station:
    """A calibrated station.

    Attributes
    ----------
    dark : (M, N) float32 ndarray
        Averaged dark frame, in DN.
    flat : (M, N) float32 ndarray
        Averaged flat minus dark, in DN: the backlight ``B`` as the camera sees it.
    bits : int
        File bit depth of the frames (8 or 16).
    pixel_size_mm : float or None
        Millimetres per pixel in the lens plane.
    backlight : str
        ``uniform`` (with ``traps``) or ``pattern`` (with ``pattern``).
    haze_fit : HazeFit or None
        Haze-plate correction; None when no plates were measured.
    thresholds : dict
        Detector sensitivities fitted from good lenses (empty means the defaults).
    meta : dict
        Provenance: creation time, inputs, noise gain, residuals.
    scatter_small : (m, n) float32 ndarray or None
        ``B ⊛ K̂`` on a reduced grid (see :func:`scatter_map`); computed on demand if None.
    pattern_contrast : (m, n) float32 ndarray or None
        Local pattern contrast of the flat on a coarse grid (pattern backlights).
    noise_model : (float, float) or None
        Single-frame noise ``var_dn2 = gain·(I − dark) + offset`` measured from the flats:
        (gain in DN, offset in DN²). Lets the analyses tell noise from texture.
    flat_frames : int
        How many flat frames were averaged (the flat's own noise is ``1/flat_frames`` of a frame's).
    cache : dict
        Per-station precomputations of the analyses (e.g. the haze sampling plan); never saved.
    """

    dark: np.ndarray
    flat: np.ndarray
    bits: int
    pixel_size_mm: float | None
    backlight: str
    traps: tuple[Trap, ...] = ()
    pattern: Pattern | None = None
    haze_fit: HazeFit | None = None
    thresholds: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    version: int = STATION_VERSION
    scatter_small: np.ndarray | None = None
    pattern_contrast: np.ndarray | None = None
    scatter_sigma_mm: float = NOMINAL_SCATTER_SIGMA_MM
    noise_model: tuple[float, float] | None = None
    flat_frames: int = 1
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.flat.shape  # type: ignore[return-value]

    @cached_property
    def inv_flat(self) -> np.ndarray:
        """1 / B where the backlight is bright enough to divide by, else 0 (computed once)."""
        floor = max(float(np.percentile(self.flat, 99)) * 0.02, 1e-6)
        with np.errstate(divide="ignore"):
            inv = np.where(self.flat > floor, 1.0 / np.maximum(self.flat, floor), 0.0)
        if not np.isfinite(inv).all():
            raise CalibrationError("the flat holds NaN or infinite values; recalibrate this station")
        return inv.astype(np.float32)

    @cached_property
    def scatter(self) -> np.ndarray:
        """``B ⊛ K̂`` at full size, float32 DN: what haze ``h = 1`` would show (station-model §2)."""
        small = self.scatter_small
        if small is None:
            sigma_px = self.scatter_sigma_mm / (self.pixel_size_mm or 0.05)
            small = self.scatter_small = scatter_map(self.flat, sigma_px)
        return expand_map(small, self.shape)

    def check_image(self, image: np.ndarray, name: str = "image") -> None:
        """Refuse an image of another size or bit depth than the station, naming both."""
        h, w = self.shape
        if image.shape[:2] != (h, w):
            raise InputError(f"{name} is {image.shape[1]}×{image.shape[0]} but the station was calibrated at "
                             f"{w}×{h}; recalibrate the station for this camera size")
        bits = 8 if image.dtype == np.uint8 else 16
        if bits != self.bits:
            raise InputError(f"{name} is {bits}-bit but the station was calibrated with {self.bits}-bit frames; "
                             "use the same camera bit depth or recalibrate")
        if not self.finite:
            raise CalibrationError("the station's flat or dark holds NaN or infinite values; recalibrate this station")

    @cached_property
    def finite(self) -> bool:
        """True when the dark and flat maps hold only finite numbers (checked once)."""
        return bool(np.isfinite(self.flat).all() and np.isfinite(self.dark).all())

    def transmission(self, image: np.ndarray) -> np.ndarray:
        """Flat-corrected image ``(I − dark) / B``: ``g·τ`` where the backlight is bright.

        float32; 0 where the flat is too dark to divide by (traps, dark pattern cells).
        """
        return (image.astype(np.float32) - self.dark) * self.inv_flat

    # -- station folder ------------------------------------------------------------------
    def to_toml_dict(self) -> dict:
        """Everything in ``station.toml`` (no arrays), TOML-serialisable."""
        h, w = self.shape
        doc: dict = {
            "version": self.version,
            "station": _clean({"created": self.meta.get("created") or _now(), "width": w, "height": h,
                               "bits": self.bits, "backlight": self.backlight, "pixel_size_mm": self.pixel_size_mm,
                               "scatter_sigma_mm": self.scatter_sigma_mm}),
            "files": {"dark": "dark.npy", "flat": "flat.npy", "scatter": "scatter.npy"},
        }
        if self.pattern_contrast is not None:
            doc["files"]["pattern_contrast"] = "pattern_contrast.npy"
        if self.haze_fit is not None and self.haze_fit.response is not None:
            doc["files"]["haze_response"] = "haze_response.npy"
        if self.noise_model is not None:
            doc["noise"] = {"gain_dn": float(self.noise_model[0]), "offset_dn2": float(self.noise_model[1]),
                            "flat_frames": int(self.flat_frames)}
        if self.traps:
            doc["traps"] = [{"x_px": t.x_px, "y_px": t.y_px, "r_px": t.r_px} for t in self.traps]
        if self.pattern is not None:
            p = self.pattern
            doc["pattern"] = {"kind": p.kind, "period_px": p.period_px, "angle_deg": p.angle_deg,
                              "contrast": p.contrast}
        if self.haze_fit is not None:
            f = self.haze_fit
            doc["haze_fit"] = {"slope": f.slope, "intercept": f.intercept, "region_sd": f.region_sd,
                               "plates": [_clean(dict(p)) for p in f.plates]}
        if self.thresholds:
            doc["thresholds"] = _clean(self.thresholds)
        meta = _clean({k: v for k, v in self.meta.items() if k != "created"})
        if meta:
            doc["meta"] = meta
        return doc

    def save(self, folder: str | Path, *, force: bool = False) -> Path:
        """Write the station folder atomically (a temporary folder, then a rename).

        An existing station folder is refused unless ``force``; a failed write never leaves a
        half-written station behind.
        """
        import tomli_w

        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise CalibrationError(f"{folder} exists and is not a folder; choose another --out")
        if (folder / STATION_TOML).exists() and not force:
            raise CalibrationError(f"{folder} already holds a station; use --force to replace it, or choose another --out")
        if folder.is_dir() and any(folder.iterdir()) and not (folder / STATION_TOML).exists():
            raise CalibrationError(f"{folder} is a folder that holds other files; choose an empty or new --out")
        parent = folder.resolve().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=parent))
        except OSError as exc:
            raise CalibrationError(f"{parent}: cannot write here ({exc.strerror or exc}); choose another --out") from None
        try:
            np.save(tmp / "dark.npy", np.ascontiguousarray(self.dark, np.float32))
            np.save(tmp / "flat.npy", np.ascontiguousarray(self.flat, np.float32))
            if self.scatter_small is None:
                _ = self.scatter
            np.save(tmp / "scatter.npy", np.ascontiguousarray(self.scatter_small, np.float32))
            if self.pattern_contrast is not None:
                np.save(tmp / "pattern_contrast.npy", np.ascontiguousarray(self.pattern_contrast, np.float32))
            if self.haze_fit is not None and self.haze_fit.response is not None:
                np.save(tmp / "haze_response.npy", np.ascontiguousarray(self.haze_fit.response, np.float32))
            doc = self.to_toml_dict()
            (tmp / STATION_TOML).write_bytes(tomli_w.dumps(doc).encode("utf-8"))
            old = None
            if folder.exists():
                old = parent / f".{folder.name}.old-{os.getpid()}"
                folder.rename(old)
            tmp.rename(folder)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise CalibrationError(f"{folder}: cannot write the station ({exc.strerror or exc})") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Station":
        """Read and validate a station folder written by :meth:`save`."""
        folder = Path(folder)
        path = folder / STATION_TOML
        if not folder.is_dir():
            raise CalibrationError(f"{folder}: no such station folder; run `goggleqc calibrate --out {folder}` first")
        if not path.exists():
            raise CalibrationError(f"{folder}: no {STATION_TOML} here; is this a station folder made by goggleqc calibrate?")
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise CalibrationError(f"{path}: not valid TOML ({exc}); recalibrate this station") from None
        version = doc.get("version")
        if version != STATION_VERSION:
            raise CalibrationError(f"{path}: station version {version!r}, but this goggleqc reads version "
                                   f"{STATION_VERSION}; recalibrate this station")
        try:
            st = doc["station"]
            width, height, bits = int(st["width"]), int(st["height"]), int(st["bits"])
            backlight = str(st["backlight"])
            files = doc["files"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"{path}: missing or bad entry {exc}; recalibrate this station") from None
        if backlight not in ("uniform", "pattern"):
            raise CalibrationError(f"{path}: backlight {backlight!r} is neither uniform nor pattern")

        def array(key: str, shape: tuple[int, int] | None) -> np.ndarray:
            name = files.get(key)
            if name is None:
                raise CalibrationError(f"{path}: no [files].{key} entry; recalibrate this station")
            fp = folder / name
            try:
                arr = np.load(fp, allow_pickle=False)
            except FileNotFoundError:
                raise CalibrationError(f"{fp}: missing from the station folder; recalibrate this station") from None
            except (OSError, ValueError) as exc:
                raise CalibrationError(f"{fp}: unreadable ({exc}); recalibrate this station") from None
            if arr.ndim != 2 or (shape is not None and arr.shape != shape):
                want = f"{shape[1]}×{shape[0]}" if shape else "2-D"
                raise CalibrationError(f"{fp}: holds a {'×'.join(map(str, arr.shape[::-1]))} array, expected {want}; "
                                       "recalibrate this station")
            if not np.isfinite(arr).all():
                raise CalibrationError(f"{fp}: holds NaN or infinite values; recalibrate this station")
            return arr.astype(np.float32, copy=False)

        dark = array("dark", (height, width))
        flat = array("flat", (height, width))
        scatter_small = array("scatter", None)
        contrast = array("pattern_contrast", None) if "pattern_contrast" in files else None
        traps = tuple(Trap(float(t["x_px"]), float(t["y_px"]), float(t["r_px"])) for t in doc.get("traps", []))
        pattern = None
        if "pattern" in doc:
            p = doc["pattern"]
            pattern = Pattern(str(p["kind"]), float(p["period_px"]), float(p["angle_deg"]), float(p.get("contrast", 0.0)))
        fit = None
        if "haze_fit" in doc:
            f = doc["haze_fit"]
            response = array("haze_response", None) if "haze_response" in files else None
            fit = HazeFit(float(f["slope"]), float(f["intercept"]), tuple(f.get("plates", [])), response,
                          float(f.get("region_sd", 0.0)))
        noise = None
        if "noise" in doc:
            noise = (float(doc["noise"]["gain_dn"]), float(doc["noise"]["offset_dn2"]))
            flat_frames = int(doc["noise"].get("flat_frames", 1))
        else:
            flat_frames = 1
        meta = dict(doc.get("meta", {}))
        meta["created"] = st.get("created")
        meta["folder"] = str(folder)
        return cls(dark=dark, flat=flat, bits=bits, pixel_size_mm=st.get("pixel_size_mm"), backlight=backlight,
                   traps=traps, pattern=pattern, haze_fit=fit, thresholds=dict(doc.get("thresholds", {})), meta=meta,
                   version=int(version), scatter_small=scatter_small, pattern_contrast=contrast,
                   scatter_sigma_mm=float(st.get("scatter_sigma_mm", NOMINAL_SCATTER_SIGMA_MM)), noise_model=noise,
                   flat_frames=flat_frames)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _clean(obj):
    """Make ``obj`` TOML-serialisable: drop None, numpy scalars to Python, tuples to lists."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj if v is not None]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj
