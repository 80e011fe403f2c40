"""The simulator as a live camera: lenses arrive in the fixture, stay, and leave, with truth.

``synthetic:seed=3,size=640x512,lenses=5`` plays a line through a simulated station. Its keys
``seed``, ``size``, ``pixel`` (mm/px), ``backlight`` and ``bits`` mean what the same options of
``goggleqc samples`` mean and default the same way, so the station of
``goggleqc samples OUT --seed 3 --size 640x512`` is the station this camera looks at, and a
station calibrated from that sample set inspects these frames.

Each placement is a lens of :mod:`goggleqc.synth` whose transmittance and haze fields slide
in from the left over ``move`` frames, stay still for ``stay`` frames and slide out to the
right; ``empty`` frames of the bare backlight separate placements. Every frame has its own
shot and read noise, like a camera. The truth of each placement (verdict and reasons under
the spec) is in :attr:`SyntheticLine.placements`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from goggleqc.capture.sources import Frame, Source
from goggleqc.errors import InputError
from goggleqc.spec import DEFAULT_SPEC, load_spec
from goggleqc.synth.lens import LensSpec, Pose, render_masks
from goggleqc.synth.render import lens_fields, render_lens
from goggleqc.synth.scenes import random_lens, random_scratch, random_spot, random_station
from goggleqc.synth.station import SimStation

#: how a clear-cut bad lens fails: one unmistakable fault each
BAD_KINDS = ("scratch", "spot", "transmittance", "haze")


@dataclass(frozen=True)
class LineOptions:
    """A simulated line. Sizes in pixels, frame counts per phase of each placement.

    ``mix`` is ``clear`` (good lenses free of defects, bad ones with one unmistakable fault,
    so verdicts are not in doubt) or ``random`` (lenses as ``goggleqc samples`` draws them).
    ``lenses=0`` plays placements for ever.
    """

    seed: int = 0
    width: int = 1280
    height: int = 1024
    pixel_size_mm: float | None = None
    backlight: str | None = None
    bits: int = 8
    lenses: int = 5
    bad_fraction: float = 0.4
    empty_frames: int = 6
    move_frames: int = 4
    stay_frames: int = 10
    fps: float = 10.0
    realtime: bool = False
    mix: str = "clear"
    spec: str = DEFAULT_SPEC

    def check(self) -> None:
        if self.width < 64 or self.height < 64:
            raise InputError(f"synthetic: size {self.width}x{self.height} is too small; use at least 64x64")
        if self.bits not in (8, 16):
            raise InputError(f"synthetic: bits={self.bits}; use 8 or 16")
        if self.backlight not in (None, "uniform", "pattern"):
            raise InputError(f"synthetic: backlight={self.backlight}; use uniform or pattern")
        if self.lenses < 0 or not 0 <= self.bad_fraction <= 1:
            raise InputError("synthetic: lenses must be ≥ 0 and bad between 0 and 1")
        if min(self.empty_frames, self.move_frames) < 1 or self.stay_frames < 1:
            raise InputError("synthetic: empty, move and stay must each be at least 1 frame")
        if self.fps <= 0:
            raise InputError(f"synthetic: fps={self.fps} must be positive")
        if self.mix not in ("clear", "random"):
            raise InputError(f"synthetic: mix={self.mix}; use clear or random")


#: ``synthetic:`` keys → (LineOptions field, parser)
_KEYS = {
    "seed": ("seed", int), "pixel": ("pixel_size_mm", float), "backlight": ("backlight", str),
    "bits": ("bits", int), "lenses": ("lenses", int), "bad": ("bad_fraction", float),
    "empty": ("empty_frames", int), "move": ("move_frames", int), "stay": ("stay_frames", int),
    "fps": ("fps", float), "realtime": ("realtime", lambda v: v.lower() in ("1", "true", "yes")),
    "mix": ("mix", str), "spec": ("spec", str),
}


def parse_synthetic(text: str) -> LineOptions:
    """``synthetic:seed=3,size=640x512,lenses=5`` → :class:`LineOptions`, refusing unknown keys."""
    body = text.split(":", 1)[1] if ":" in text else ""
    values: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in body.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep:
            raise InputError(f"synthetic: {item!r} is not key=value")
        try:
            if key == "size":
                w, h = value.lower().replace("×", "x").split("x")
                values["width"], values["height"] = int(w), int(h)
            elif key in _KEYS:
                name, parse = _KEYS[key]
                values[name] = parse(value.strip())
            else:
                raise InputError(f"synthetic: unknown key {key!r}; keys are size, {', '.join(_KEYS)}")
        except ValueError:
            raise InputError(f"synthetic: {key}={value!r} is not a valid value") from None
    options = LineOptions(**values)
    options.check()
    return options


def _clear_cut_lens(rng: np.random.Generator, station: SimStation, bad: bool, limits) -> tuple[LensSpec, str]:
    """A lens whose verdict nobody could doubt: defect-free and clear, or one gross fault."""
    p = station.params
    pose = Pose(float(rng.uniform(-1.5, 1.5)), float(rng.uniform(-1.5, 1.5)), float(rng.uniform(-1.5, 1.5)))
    base = dict(pose=pose, tau_clear=float(rng.uniform(0.86, 0.92)), haze=float(rng.uniform(0.003, 0.010)),
                gain=float(rng.uniform(0.985, 1.015)))
    if not bad:
        return LensSpec(**base), "good"
    kind = str(rng.choice(BAD_KINDS))
    masks = render_masks(p, pose)
    ps = p.pixel_size_mm
    if kind == "scratch":
        scratch = random_scratch(rng, masks, ps, length_mm=float(rng.uniform(6.0, 11.0)),
                                 contrast=float(rng.uniform(0.25, 0.45)), width_mm=max(1.5 * ps, 0.15),
                                 shape="straight")
        return LensSpec(**base, scratches=(scratch,) if scratch else ()), kind
    if kind == "spot":
        spot = random_spot(rng, masks, ps, diameter_mm=float(rng.uniform(1.5, 2.5)),
                           contrast=float(rng.uniform(0.5, 0.8)), kind="inclusion")
        return LensSpec(**base, spots=(spot,) if spot else ()), kind
    if kind == "transmittance":
        return LensSpec(**{**base, "tau_clear": float(rng.uniform(0.55, 0.66))}), kind
    return LensSpec(**{**base, "haze": float(rng.uniform(0.07, 0.10))}), kind


class SyntheticLine:
    """A deterministic timeline of frames: placement by placement, frame by frame.

    Frame ``i`` is the same image whenever it is asked for, so tests can replay the line.
    """

    def __init__(self, options: LineOptions):
        options.check()
        self.options = options
        self.limits = load_spec(options.spec)
        rng = np.random.default_rng([options.seed, 0])  # as goggleqc samples draws its station
        self.params = random_station(rng, width=options.width, height=options.height,
                                     pixel_size_mm=options.pixel_size_mm, backlight=options.backlight,
                                     bits=options.bits, colour=False, seed=options.seed,
                                     marginal_mm=self.limits.marginal_width_mm)
        self.station = SimStation(self.params)
        o = options
        self.period = o.empty_frames + 2 * o.move_frames + o.stay_frames
        self.placements: list[dict] = []
        self._cache: tuple[int, np.ndarray, np.ndarray, float] | None = None

    @property
    def n_frames(self) -> int | None:
        """Frames in the whole line, or None when it never ends."""
        o = self.options
        return o.lenses * self.period + o.empty_frames if o.lenses else None

    def placement(self, i: int) -> dict:
        """Truth of placement ``i``: name, verdict, reasons, kind and its still frames."""
        while len(self.placements) <= i:
            self._make_placement(len(self.placements))
        return self.placements[i]

    def _make_placement(self, i: int) -> None:
        o = self.options
        rng = np.random.default_rng([o.seed, 7, i])
        bad = bool(rng.uniform() < o.bad_fraction)
        for _attempt in range(30):  # redraw the rare lens whose truth lands on the other side
            if o.mix == "clear":
                spec, kind = _clear_cut_lens(rng, self.station, bad, self.limits)
            else:
                spec, kind = random_lens(rng, self.station), "random"
            _, truth = render_lens(self.station, spec, np.random.default_rng([o.seed, 9, i]),
                                   name=f"placement_{i:04d}", limits=self.limits)
            if o.mix == "random" or (truth["verdict"] == "fail") == bad:
                break
        first_still = i * self.period + o.empty_frames + o.move_frames
        self.placements.append({"index": i, "kind": kind, "verdict": truth["verdict"],
                                "reasons": [r["code"] for r in truth["reasons"]], "truth": truth,
                                "lens": spec, "still_frames": [first_still, first_still + o.stay_frames - 1]})

    def _fields(self, i: int) -> tuple[np.ndarray, np.ndarray, float]:
        if self._cache is None or self._cache[0] != i:
            spec = self.placement(i)["lens"]
            tau, haze, *_ = lens_fields(self.station, spec, marginal_mm=self.limits.marginal_width_mm)
            self._cache = (i, tau, haze, spec.gain)
        return self._cache[1:]

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` of the line: (M, N) uint8 or uint16."""
        o = self.options
        rng = np.random.default_rng([o.seed, 8, index])
        i, phase = divmod(index, self.period)
        if (o.lenses and i >= o.lenses) or phase < o.empty_frames:
            return self.station.flat_frame(rng)
        phase -= o.empty_frames
        travel_px = 0.7 * self.params.width
        if phase < o.move_frames:  # arriving from the left
            shift = -travel_px * (1 - (phase + 1) / (o.move_frames + 1))
        elif phase < o.move_frames + o.stay_frames:
            shift = 0.0
        else:  # leaving to the right
            shift = travel_px * (phase - o.move_frames - o.stay_frames + 1) / (o.move_frames + 1)
        tau, haze, gain = self._fields(i)
        if shift:
            m = np.float32([[1, 0, shift], [0, 1, 0]])
            size = (self.params.width, self.params.height)
            tau = cv2.warpAffine(tau, m, size, flags=cv2.INTER_LINEAR, borderValue=1.0)
            haze = cv2.warpAffine(haze, m, size, flags=cv2.INTER_LINEAR, borderValue=0.0)
        return self.station.expose(self.station.through(tau, haze), rng, gain)


class SyntheticSource(Source):
    """``synthetic:…`` as a :class:`Source`; frames on demand, or paced to ``fps`` with ``realtime=1``.

    In real time a reader slower than the camera misses frames, as with a real camera.
    """

    kind = "synthetic"
    live = False

    def __init__(self, text: str, options: LineOptions):
        super().__init__(text)
        self.options = options
        self.line: SyntheticLine | None = None
        self._next = 0
        self._t0 = 0.0

    @classmethod
    def from_text(cls, text: str) -> "SyntheticSource":
        return cls(text, parse_synthetic(text))

    def open(self) -> None:
        if self.line is None:
            self.line = SyntheticLine(self.options)
        self._next = 0
        self._t0 = time.monotonic()
        self.is_open = True

    def read(self) -> Frame | None:
        o = self.options
        if self.options.realtime:
            due = self._t0 + self._next / o.fps
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            else:  # a live camera does not wait for a slow reader
                self._next = max(self._next, int((now - self._t0) * o.fps))
        total = self.line.n_frames
        if total is not None and self._next >= total:
            return None
        index = self._next
        self._next += 1
        self.frames_read += 1
        return Frame(self.line.frame(index), index / o.fps, index)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.line is not None:
            p = self.line.params
            out.update(size=[p.width, p.height], pixel_size_mm=round(p.pixel_size_mm, 5),
                       backlight=p.backlight.kind, frames_total=self.line.n_frames, fps=self.options.fps)
        return out

