"""Fog-test sequences (station-model.md §5): a lens over warm water, filmed over time.

The lens is clear at first (the clear reference). At ``exposure_s`` the fog exposure starts
(warm water at about 50 °C, as in EN 168). Fog is scatter: it adds a haze ``h_fog(x, t)`` on
top of the lens' own haze ``h0``, so that regular transmission multiplies,

    1 − h_tot = (1 − h0) · (1 − h_fog),

with a small loss of total transmittance ``τ_fog = τ · (1 − κ·h_fog)`` (back-scatter by the
droplets), and a fine droplet texture ``h_fog = H(t) · (1 + ρ·n(x))``. Every frame is then
rendered with the station model of §2 (:meth:`SimStation.through` and :meth:`SimStation.expose`).

A good coating keeps contrast (its fog haze stays small); a failing coating fogs after a
chosen fog-free time; coating voids fog right after exposure while the coated area stays clear.

Truth (all exact, computed from the rendered fields, not from the images):

- ``contrast_truth``: per frame, the mean over the central zone (lens coverage > 0.999 and at
  least ``marginal_mm`` from the lens edge) of the regular-transmittance ratio to the clear lens,
  ``r(x, t) = (1 − κ·h_fog) · (1 − h_fog)``: the fraction of the clear-lens pattern or trap
  contrast that survives (camera blur, noise and exposure drift excluded).
- ``fog_free_s``: seconds from the exposure start until that central mean first falls below
  ``threshold`` (0.8) of clear, found by bisection on the continuous curve; ``None`` for a lens
  that does not fog within the sequence, with ``fog_free_at_least_s`` the time it was watched.
- per void: ``area_mm2`` (polygon area), ``onset_s`` (seconds from exposure start until the
  void's own ratio, without droplet texture, falls below ``threshold``), ``zone`` and
  ``bbox_px`` ([x0, y0, x1, y1], exclusive ends).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Iterator

import cv2
import numpy as np

from goggleqc.errors import InputError
from goggleqc.synth.geometry import clip_bbox, patch_coverage, polygon_area
from goggleqc.synth.lens import CoatingDefect, LensSpec
from goggleqc.synth.render import lens_fields
from goggleqc.synth.scenes import random_coating, random_lens
from goggleqc.synth.station import SimStation

#: EN 168 §16: an "N" (anti-fog) lens stays fog-free for at least this long
N_MIN_FOG_FREE_S = 8.0


@dataclass(frozen=True)
class FogVoid:
    """A coating void: an uncoated patch that fogs soon after exposure.

    ``outline_px`` is the polygon (image pixels); the void's fog haze rises as
    ``haze · (1 − exp(−(t − t_e − delay_s) / rise_s))`` after the exposure start ``t_e``.
    """

    outline_px: tuple[tuple[float, float], ...]
    delay_s: float = 0.0
    rise_s: float = 0.5
    haze: float = 0.6
    edge_px: float = 1.0


@dataclass(frozen=True)
class FogSequenceSpec:
    """What a fog-test sequence shows.

    ``coating`` is ``good`` (fog haze on the coated area rises to ``good_haze`` only) or
    ``failing`` (it rises to ``fog_haze`` with time constant ``rise_s``, timed so that the
    central contrast crosses ``threshold`` exactly ``fog_free_s`` after ``exposure_s``).
    ``tau_loss`` is κ, the fraction of τ lost per unit fog haze; ``droplet_rms`` is ρ, the rms of
    the droplet texture relative to the fog haze, with grain ``droplet_px`` (Gaussian σ, px).
    Exposure drifts by ``gain_drift`` over the sequence plus ``gain_jitter`` rms per frame.
    """

    lens: LensSpec = field(default_factory=LensSpec)
    fps: float = 10.0
    duration_s: float = 30.0
    exposure_s: float = 3.0
    coating: str = "failing"
    fog_free_s: float | None = 10.0
    rise_s: float = 2.0
    fog_haze: float = 0.7
    good_haze: float = 0.03
    tau_loss: float = 0.03
    droplet_rms: float = 0.2
    droplet_px: float = 1.0
    voids: tuple[FogVoid, ...] = ()
    threshold: float = 0.8
    marginal_mm: float = 5.0
    gain_drift: float = 0.02
    gain_jitter: float = 0.003
    seed: int = 0

    @property
    def n_frames(self) -> int:
        return int(np.floor(self.duration_s * self.fps + 1e-9))

    def check(self) -> None:
        if self.fps <= 0:
            raise InputError(f"fps must be positive, not {self.fps}")
        if self.coating not in ("good", "failing"):
            raise InputError(f"coating {self.coating!r}: use good or failing")
        if self.coating == "failing" and (self.fog_free_s is None or self.fog_free_s <= 0):
            raise InputError("a failing coating needs a positive fog_free_s")
        if not 0 < self.threshold < 1:
            raise InputError(f"threshold {self.threshold} must lie between 0 and 1")
        if self.n_frames < 2:
            raise InputError(f"a {self.duration_s} s sequence at {self.fps} fps has fewer than 2 frames")


def _rise(t_rel: np.ndarray | float, rise_s: float) -> np.ndarray:
    """Saturating fog growth ``1 − exp(−t/rise)`` for ``t > 0``, 0 before."""
    t_rel = np.asarray(t_rel, np.float64)
    return np.where(t_rel > 0, -np.expm1(-np.maximum(t_rel, 0) / max(rise_s, 1e-6)), 0.0)


class FogRenderer:
    """Renders the frames of one :class:`FogSequenceSpec` and computes its exact truth.

    Everything static (lens fields, void coverages, droplet texture, the radiance terms) is
    computed once here, so a frame costs a few array operations plus the camera model.
    """

    def __init__(self, station: SimStation, spec: FogSequenceSpec):
        spec.check()
        self.station, self.spec = station, spec
        p = station.params
        self.ps = p.pixel_size_mm
        tau, haze0, _, found, _, masks = lens_fields(station, spec.lens, marginal_mm=spec.marginal_mm)
        self.masks = masks
        self.static_truth = found
        lens = masks.lens
        rng = np.random.default_rng([spec.seed, 7])
        tex = rng.standard_normal(station.shape).astype(np.float32)
        if spec.droplet_px > 0:
            tex = cv2.GaussianBlur(tex, (0, 0), spec.droplet_px)
        tex /= max(float(tex.std()), 1e-6)
        # fog only forms on the lens: texture factor (1 + ρ n) ≥ 0 times lens coverage
        self.texture = (lens * np.maximum(1 + spec.droplet_rms * tex, 0)).astype(np.float32)
        # void coverages, each inside its bbox
        self.void_cov: list[tuple[tuple[int, int, int, int], np.ndarray]] = []
        union = np.zeros(station.shape, np.float32)
        for v in spec.voids:
            poly = np.asarray(v.outline_px, np.float64)
            pad = 3 * v.edge_px + 3
            bbox = clip_bbox((np.floor(poly[:, 0].min() - pad), np.floor(poly[:, 1].min() - pad),
                              np.ceil(poly[:, 0].max() + pad) + 1, np.ceil(poly[:, 1].max() + pad) + 1), station.shape)

            def draw(canvas, fx, poly=poly):
                cv2.fillPoly(canvas, [fx(poly).reshape(-1, 1, 2)], 255, cv2.LINE_8, 4)

            cov = patch_coverage(bbox, draw)
            if v.edge_px > 0:
                cov = cv2.GaussianBlur(cov, (0, 0), v.edge_px)
            x0, y0, x1, y1 = bbox
            cov = np.minimum(cov, 1 - union[y0:y1, x0:x1])  # overlapping voids share coverage
            union[y0:y1, x0:x1] += cov
            self.void_cov.append((bbox, cov))
        self.coated = (1 - union).astype(np.float32)
        # radiance = τ (1 − κ h_f) (P0 + h_f Q) with P0 = L + h0 (LK − L), Q = (1 − h0)(LK − L)
        D = station.scattered - station.radiance
        self.tau = tau
        self.P0 = (station.radiance + haze0 * D).astype(np.float32)
        self.Q = ((1 - haze0) * D).astype(np.float32)
        self.central = (lens > 0.999) & (masks.inside_mm >= spec.marginal_mm)
        self.coated_haze = spec.fog_haze if spec.coating == "failing" else spec.good_haze
        self.coat_onset_s = self._solve_coat_onset()

    # -- time courses --------------------------------------------------------------------
    def coat_level(self, t_s: float | np.ndarray, coat_onset_s: float | None = None) -> np.ndarray:
        """Fog haze H(t) of the coated area (before texture)."""
        s = self.spec
        onset = self.coat_onset_s if coat_onset_s is None else coat_onset_s
        return self.coated_haze * _rise(np.asarray(t_s) - s.exposure_s - onset, s.rise_s)

    def void_level(self, i: int, t_s: float | np.ndarray) -> np.ndarray:
        v = self.spec.voids[i]
        return v.haze * _rise(np.asarray(t_s) - self.spec.exposure_s - v.delay_s, v.rise_s)

    def fog_haze(self, t_s: float, coat_onset_s: float | None = None) -> np.ndarray:
        """``h_fog(x, t)`` over the whole frame, float32 in [0, 1]."""
        h = self.coated * np.float32(self.coat_level(t_s, coat_onset_s))
        for i, (bbox, cov) in enumerate(self.void_cov):
            x0, y0, x1, y1 = bbox
            h[y0:y1, x0:x1] += cov * np.float32(self.void_level(i, t_s))
        h *= self.texture
        return np.minimum(h, 1.0, out=h)

    def central_ratio(self, t_s: float, coat_onset_s: float | None = None) -> float:
        """Truth contrast at ``t_s``: central-zone mean of ``(1 − κ h_fog)(1 − h_fog)``."""
        h = self.fog_haze(t_s, coat_onset_s)[self.central]
        k = self.spec.tau_loss
        return float(np.mean((1 - k * h) * (1 - h), dtype=np.float64))

    def _solve_coat_onset(self) -> float:
        """Onset of the coated area's fog (s after exposure) that puts the crossing at fog_free_s."""
        s = self.spec
        if s.coating == "good" or not self.central.any():
            return 0.0
        target = s.exposure_s + s.fog_free_s
        lo, hi = -50 * s.rise_s, s.fog_free_s  # at onset hi the coated area is still clear at target
        if self.central_ratio(target, hi) < s.threshold:
            raise InputError("the voids alone bring the central contrast below the threshold; use smaller voids")
        if self.central_ratio(target, lo) > s.threshold:
            raise InputError(f"fog haze {s.fog_haze} is too low to bring the contrast below {s.threshold}")
        for _ in range(50):
            mid = (lo + hi) / 2
            if self.central_ratio(target, mid) < s.threshold:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    def fog_free_truth_s(self) -> float | None:
        """First time after exposure the truth contrast falls below the threshold (bisection)."""
        s = self.spec
        end = float(self.times_s()[-1])
        thr = s.threshold
        if end <= s.exposure_s or self.central_ratio(end) >= thr:
            return None
        lo, hi = s.exposure_s, end  # the truth curve is monotone: fog only grows
        for _ in range(50):
            mid = (lo + hi) / 2
            if self.central_ratio(mid) < thr:
                hi = mid
            else:
                lo = mid
        return (lo + hi) / 2 - s.exposure_s

    def times_s(self) -> np.ndarray:
        return np.arange(self.spec.n_frames) / self.spec.fps

    def gains(self) -> np.ndarray:
        s = self.spec
        rng = np.random.default_rng([s.seed, 8])
        t = self.times_s()
        return 1 + s.gain_drift * t / max(s.duration_s, 1e-9) + s.gain_jitter * rng.standard_normal(len(t))

    # -- frames --------------------------------------------------------------------------
    def radiance(self, t_s: float) -> np.ndarray:
        h = self.fog_haze(t_s)
        out = self.P0 + h * self.Q
        out *= self.tau
        out *= 1 - np.float32(self.spec.tau_loss) * h
        return out

    def frames(self) -> Iterator[tuple[float, np.ndarray]]:
        """Yield ``(t_s, image)`` for every frame; noise from the spec's seed."""
        rng = np.random.default_rng([self.spec.seed, 9])
        g = self.spec.lens.gain * self.gains()
        for t, gi in zip(self.times_s(), g):
            yield float(t), self.station.expose(self.radiance(float(t)), rng, float(gi))

    # -- truth ---------------------------------------------------------------------------
    def truth(self) -> dict:
        s = self.spec
        times = self.times_s()
        curve = [self.central_ratio(float(t)) for t in times]
        last_t = float(times[-1])
        fog_free = self.fog_free_truth_s()
        voids = []
        thr = s.threshold
        for i, (v, (bbox, cov)) in enumerate(zip(s.voids, self.void_cov)):
            poly = np.asarray(v.outline_px, np.float64)
            area_px = polygon_area(poly)
            x0, y0, x1, y1 = bbox
            inside = self.masks.inside_mm[y0:y1, x0:x1][cov > 0.05]
            zone = "central" if inside.size and float(inside.max()) >= s.marginal_mm else "marginal"
            # (1 − κh)(1 − h) = thr  →  h*, then the time the void's haze reaches h*
            k = s.tau_loss
            h_star = ((1 + k) - np.sqrt((1 + k) ** 2 - 4 * k * (1 - thr))) / (2 * k) if k > 0 else 1 - thr
            onset = None
            if v.haze > h_star:
                onset = v.delay_s - v.rise_s * np.log(1 - h_star / v.haze)
            voids.append({"area_mm2": area_px * self.ps ** 2, "area_px": area_px,
                          "onset_s": None if onset is None else float(onset),
                          "zone": zone,
                          "bbox_px": [int(np.floor(poly[:, 0].min())), int(np.floor(poly[:, 1].min())),
                                      int(np.ceil(poly[:, 0].max())) + 1, int(np.ceil(poly[:, 1].max())) + 1],
                          "haze": v.haze, "delay_s": v.delay_s, "rise_s": v.rise_s})
        watched = max(0.0, last_t - s.exposure_s)
        ff = fog_free if fog_free is not None else None
        return {
            "fps": s.fps, "n_frames": s.n_frames, "duration_s": s.duration_s, "exposure_s": s.exposure_s,
            "coating": s.coating, "threshold": thr, "marginal_mm": s.marginal_mm,
            "fog_free_s": ff, "fog_free_at_least_s": None if ff is not None else watched,
            "n_verdict": "pass" if (ff is None and watched >= N_MIN_FOG_FREE_S) or (ff is not None and ff >= N_MIN_FOG_FREE_S)
            else "fail",
            "coat_onset_s": self.coat_onset_s, "rise_s": s.rise_s, "fog_haze": self.coated_haze,
            "tau_loss": s.tau_loss, "pixel_size_mm": self.ps,
            "times_s": [float(t) for t in times], "contrast_truth": curve, "gains": self.gains().tolist(),
            "voids": voids, "lens_spec": asdict(s.lens),
        }


def random_fog_sequence(rng: np.random.Generator, station: SimStation, *, fps: float | None = None,
                        duration_s: float | None = None, exposure_s: float | None = None,
                        coating: str | None = None, fog_free_s: float | None = None,
                        rise_s: float | None = None, n_voids: int | None = None,
                        void_area_mm2: tuple[float, float] = (10.0, 60.0), marginal_mm: float = 5.0,
                        seed: int = 0) -> FogSequenceSpec:
    """A random fog-test sequence; arguments pin what the caller wants fixed.

    Fog-free times are drawn over 2–60 s, rise time constants over 0.3–8 s, voids (placed in
    the lens without overlapping) over ``void_area_mm2``; each void is also a faint static
    coating defect (a τ change of 0.5–2 %), as real uncoated patches are.
    """
    coating = coating or ("failing" if rng.uniform() < 0.7 else "good")
    fps = fps if fps is not None else float(rng.choice([5.0, 10.0, 15.0, 25.0]))
    exposure_s = exposure_s if exposure_s is not None else float(rng.uniform(2.0, 4.0))
    if coating == "failing":
        fog_free_s = fog_free_s if fog_free_s is not None else float(rng.uniform(2.0, 60.0))
    rise_s = rise_s if rise_s is not None else float(np.exp(rng.uniform(np.log(0.3), np.log(8.0))))
    if duration_s is None:
        duration_s = exposure_s + (fog_free_s + 3 * rise_s + 2 if coating == "failing" else float(rng.uniform(10, 40)))
    n_voids = n_voids if n_voids is not None else int(rng.integers(0, 4))
    lens = random_lens(rng, station, defects=0)
    lens = replace(lens, haze=float(rng.uniform(0.002, 0.02)))
    from goggleqc.synth.lens import render_masks
    masks = render_masks(station.params, lens.pose)
    ps = station.params.pixel_size_mm
    voids: list[FogVoid] = []
    statics: list[CoatingDefect] = []
    centres: list[tuple[float, float, float]] = []
    for _ in range(n_voids):
        for _try in range(30):
            area = float(np.exp(rng.uniform(*np.log(void_area_mm2))))
            cd = random_coating(rng, masks, ps, kind="void", area_mm2=area, contrast=float(rng.uniform(0.005, 0.02)))
            if cd is None:
                continue
            poly = np.asarray(cd.outline_px)
            c = poly.mean(0)
            r = float(np.hypot(*(poly - c).T).max())
            if all(np.hypot(c[0] - x, c[1] - y) > r + rr + 3 / ps for x, y, rr in centres):
                centres.append((float(c[0]), float(c[1]), r))
                statics.append(cd)
                voids.append(FogVoid(cd.outline_px, delay_s=float(rng.uniform(0.0, 0.5)),
                                     rise_s=float(rng.uniform(0.2, 1.0)), haze=float(rng.uniform(0.4, 0.8)),
                                     edge_px=max(0.5, 0.2 / ps)))
                break
    lens = replace(lens, coating=tuple(statics))
    return FogSequenceSpec(lens=lens, fps=fps, duration_s=float(duration_s), exposure_s=exposure_s, coating=coating,
                           fog_free_s=fog_free_s if coating == "failing" else None, rise_s=rise_s,
                           fog_haze=float(rng.uniform(0.45, 0.9)), good_haze=float(rng.uniform(0.0, 0.06)),
                           tau_loss=float(rng.uniform(0.0, 0.05)), droplet_rms=float(rng.uniform(0.1, 0.3)),
                           droplet_px=float(rng.uniform(0.6, 1.5)), voids=tuple(voids), marginal_mm=marginal_mm,
                           gain_drift=float(rng.uniform(-0.03, 0.03)), gain_jitter=float(rng.uniform(0.0, 0.005)),
                           seed=seed)


def frame_name(index: int, t_s: float, suffix: str = ".png") -> str:
    """File name of a fog-sequence frame, carrying its timestamp: ``00012_t0001.2000s.png``."""
    return f"{index:05d}_t{t_s:09.4f}s{suffix}"


def write_fog_sequence(folder, station: SimStation, spec: FogSequenceSpec, *, video: bool = True) -> dict:
    """Write a fog-test sequence: ``fog.avi`` (MJPG), ``frames/`` (lossless, timestamped names)
    and ``fog_truth.json``. Returns the truth.

    The AVI is 8-bit (MJPG has no deeper mode; 16-bit frames are scaled to their data depth's
    8 top bits); the frame folder keeps the native depth.
    """
    import json
    from pathlib import Path

    from goggleqc.capture.imagefile import write_image

    folder = Path(folder)
    frames_dir = folder / "frames"
    frames_dir.mkdir(parents=True, exist_ok=True)
    renderer = FogRenderer(station, spec)
    cam = station.params.camera
    writer = None
    if video:
        h, w = station.shape
        writer = cv2.VideoWriter(str(folder / "fog.avi"), cv2.VideoWriter_fourcc(*"MJPG"), float(spec.fps), (w, h),
                                 isColor=cam.colour)
        if not writer.isOpened():
            raise InputError(f"{folder / 'fog.avi'}: OpenCV cannot write an MJPG AVI here")
    suffix = ".png" if cam.bits == 8 else ".tif"
    try:
        for i, (t, image) in enumerate(renderer.frames()):
            write_image(frames_dir / frame_name(i, t, suffix), image)
            if writer is not None:
                frame8 = image if image.dtype == np.uint8 else (image >> max(0, cam.data_bits - 8)).astype(np.uint8)
                writer.write(frame8)
    finally:
        if writer is not None:
            writer.release()
    truth = renderer.truth()
    (folder / "fog_truth.json").write_text(json.dumps(truth, indent=1), encoding="utf-8")
    return truth
