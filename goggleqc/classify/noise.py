"""The noise floor of each detector on known-good lenses, as per-lens limit-breaking responses.

Every detector compares a response, in noise standard deviations, with a threshold; a found
object carries ``score = response / threshold``. One *sensitivity multiplier* ``m`` per
detector scales all of that detector's thresholds together (:data:`SCALED_PARAMS`), so
``m = 1`` is the shipped default and ``m = 0.5`` halves every threshold.

To see the noise below the default thresholds, the good lenses are inspected once at a
permissive multiplier ``s`` (default 0.5). An object found there with score ``q`` has a
response of ``q·s`` default thresholds, so it is still reported at any multiplier ``m ≤ q·s``.
Only objects that break a spec limit (a scratch longer than the limit in its zone, ...) can
reject a lens, so per lens and per detector the statistic is

    x = max over limit-breaking objects of max(q, 1)·s      (0 when there is none)

and the lens is rejected by that detector at multiplier ``m`` when ``x ≥ m``. ``max(q, 1)``
covers objects that a detector reports for another reason than their peak (a long faint
scratch is seeded by its length): they count as just reaching ``s``. The same maximum is kept
per zone, so the noise floor can be reported for the central and marginal zones.

This is a model of the detectors, not an identity: hysteresis growth and the scratch/spot
separation change a little with the thresholds. The acceptance test measures the real
false-reject rate on lenses that were not used for the fit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from goggleqc.inspect.results import Result
from goggleqc.inspect.verdict import check_limits
from goggleqc.spec import Spec

#: detector -> {parameter: power}: the parameter is multiplied by ``m ** power``. Mottle's
#: thresholds act on a variance, so they scale with m² and its rms score with m.
SCALED_PARAMS: dict[str, dict[str, int]] = {
    "scratches": {"high_sigma": 1, "low_sigma": 1, "min_mean_sigma": 1},
    "spots": {"high_sigma": 1},
    "coating": {"k_high": 1, "k_low": 1, "min_contrast": 1, "k_texture_high": 2, "k_texture_low": 2,
                "min_mottle_rms": 1},
}
DETECTORS = tuple(SCALED_PARAMS)
#: detector -> the spec's reason code for its objects
CODES = {"scratches": "scratch", "spots": "spot", "coating": "coating"}
#: default permissive multiplier for the noise run
PERMISSIVE_SCALE = 0.5
#: the ladder of multipliers the good lenses are inspected at (geometric, 0.5 to 1)
LEVELS = (0.5, 0.6, 0.71, 0.84, 1.0)
#: a lens whose worst limit-breaking response reaches this many default thresholds carries a
#: real defect, not noise (used to refuse a "good" folder that holds bad lenses)
CLEAR_DEFECT = 2.0


def default_params(detector: str):
    """The shipped default parameter dataclass of ``detector``."""
    from goggleqc.inspect.pipeline import Detectors

    return getattr(Detectors(), detector)


def scaled_thresholds(multipliers: dict[str, float], base: dict | None = None) -> dict:
    """A station ``thresholds`` table with each detector's thresholds at ``m ×`` the defaults.

    Parameters
    ----------
    multipliers : dict
        ``{detector: m}``; detectors not named keep ``base``'s values.
    base : dict, optional
        The current ``{detector: {param: value}}`` table; its other parameters are kept.

    Returns
    -------
    dict
        ``{detector: {param: value}}``, TOML-serialisable.
    """
    out = {k: dict(v) for k, v in (base or {}).items()}
    for det, m in multipliers.items():
        defaults = default_params(det)
        table = out.setdefault(det, {})
        for param, power in SCALED_PARAMS[det].items():
            table[param] = float(getattr(defaults, param)) * float(m) ** power
    return out


def scaled_detectors(multipliers: dict[str, float], base: dict | None = None):
    """:class:`~goggleqc.inspect.pipeline.Detectors` at the given multipliers (see :func:`scaled_thresholds`)."""
    from goggleqc.inspect.pipeline import Detectors

    return Detectors.from_thresholds(scaled_thresholds(multipliers, base))


@dataclass(frozen=True)
class LensNoise:
    """What one lens contributes to the noise sample.

    Attributes
    ----------
    name : str
    x : dict
        ``{detector: x}``: worst limit-breaking response in default thresholds (0: none).
    by_zone : dict
        ``{detector: {zone: x}}``: the same statistic per zone (central, marginal, unknown).
    fixed_fail : list of str
        Reasons this lens fails whatever the detector thresholds (haze, transmittance).
    error : str or None
        The message when the lens could not be inspected.
    """

    name: str
    x: dict
    by_zone: dict
    fixed_fail: tuple[str, ...] = ()
    error: str | None = None

    @property
    def clearly_bad(self) -> bool:
        """Fails on haze/transmittance, or carries a response far above any noise."""
        return bool(self.fixed_fail) or any(v >= CLEAR_DEFECT for v in self.x.values())


def lens_noise(result: Result, spec: Spec, scale: float) -> LensNoise:
    """Reduce a Result inspected at multiplier ``scale`` to its per-detector statistic ``x``.

    Parameters
    ----------
    result : Result
        From :func:`~goggleqc.inspect.pipeline.inspect_lens` with
        ``detectors=scaled_detectors({d: scale ...})``.
    spec : Spec
        The limits a candidate must break to reject the lens.
    scale : float
        The permissive multiplier the result was inspected at.
    """
    if result.verdict == "error":
        return LensNoise(result.image, {d: 0.0 for d in DETECTORS}, {d: {} for d in DETECTORS},
                         error=result.error or "could not be inspected")
    by_zone: dict[str, dict[str, float]] = {}
    for det in DETECTORS:
        zones: dict[str, float] = {}
        for obj in getattr(result, det):
            reasons, _ = check_limits({det: [obj.__dict__]}, spec)
            if reasons:
                value = max(float(obj.score), 1.0) * scale
                zones[obj.zone] = max(zones.get(obj.zone, 0.0), value)
        by_zone[det] = zones
    x = {det: max(z.values(), default=0.0) for det, z in by_zone.items()}
    fixed = tuple(r.message for r in result.reasons if r.code in ("haze", "transmittance"))
    return LensNoise(result.image, x, by_zone, fixed)


@dataclass(frozen=True)
class NoiseSample:
    """The per-lens statistics of a set of lenses, as arrays.

    Attributes
    ----------
    names : list of str
    x : dict
        ``{detector: (n,) float ndarray}``.
    by_zone : dict
        ``{detector: {zone: (n,) float ndarray}}`` for the central and marginal zones.
    fixed_fail : (n,) bool ndarray
        Lenses failing on haze/transmittance, whatever the thresholds.
    scale : float
        The permissive multiplier: values below it are not resolved.
    """

    names: list[str]
    x: dict
    by_zone: dict
    fixed_fail: np.ndarray
    scale: float

    @property
    def n(self) -> int:
        return len(self.names)

    @classmethod
    def from_lenses(cls, lenses: list[LensNoise], scale: float) -> "NoiseSample":
        ok = [ln for ln in lenses if ln.error is None]
        return cls(names=[ln.name for ln in ok],
                   x={d: np.array([ln.x[d] for ln in ok], float) for d in DETECTORS},
                   by_zone={d: {z: np.array([ln.by_zone[d].get(z, 0.0) for ln in ok], float)
                                for z in ("central", "marginal")} for d in DETECTORS},
                   fixed_fail=np.array([bool(ln.fixed_fail) for ln in ok], bool), scale=scale)

    def subset(self, keep: np.ndarray) -> "NoiseSample":
        idx = np.flatnonzero(keep)
        return replace(self, names=[self.names[i] for i in idx], x={d: v[idx] for d, v in self.x.items()},
                       by_zone={d: {z: v[idx] for z, v in zs.items()} for d, zs in self.by_zone.items()},
                       fixed_fail=self.fixed_fail[idx])

    def rejected(self, multipliers: dict[str, float]) -> np.ndarray:
        """(n,) bool: lenses rejected at these multipliers (any detector, or haze/transmittance)."""
        out = self.fixed_fail.copy()
        for det, m in multipliers.items():
            out |= self.x[det] >= m
        return out

    def zone_floor(self, det: str, q: float = 0.95) -> dict[str, float]:
        """Per zone: the ``q`` quantile over lenses of the worst limit-breaking response there."""
        return {zone: float(np.quantile(v, q)) if len(v) else 0.0 for zone, v in self.by_zone[det].items()}


def measure_noise(images, station, spec: Spec, levels: tuple[float, ...] = LEVELS,
                  base: dict | None = None, workers: int = 1, pool: str = "threads"
                  ) -> tuple[NoiseSample, list[LensNoise]]:
    """Inspect lenses at a ladder of multipliers and collect their noise statistics.

    Parameters
    ----------
    images : iterable of (str, ndarray)
        ``(name, frame)`` pairs; frames as :func:`~goggleqc.inspect.pipeline.inspect_lens` takes them.
    station : Station
        The calibrated station.
    spec : Spec
    levels : tuple of float
        Increasing multipliers; the first is the permissive scale (see :func:`combine_levels`).
    base : dict, optional
        The station's current thresholds table (its other parameters are kept).
    workers, pool : int, str
        Lenses inspected at once, on ``"threads"`` or ``"processes"``
        (:func:`~goggleqc.ordered.map_in_order`); the result does not depend on them.

    Returns
    -------
    sample : NoiseSample
        Lenses that could be inspected.
    lenses : list of LensNoise
        Every lens, including those with an ``error``.
    """
    from goggleqc.ordered import map_in_order

    levels = tuple(sorted(levels))
    ladder = LadderInspection(station, spec, levels, [scaled_detectors({d: m for d in DETECTORS}, base) for m in levels])
    lenses = list(map_in_order(ladder, images, workers, pool))
    return NoiseSample.from_lenses(lenses, levels[0]), lenses


@dataclass(frozen=True)
class LadderInspection:
    """One lens's :class:`LensNoise`: its inspections at each multiplier of the ladder,
    combined (a picklable callable, so that worker processes can hold it)."""

    station: object
    spec: Spec
    levels: tuple[float, ...]
    ladder: list

    def __call__(self, named: tuple[str, np.ndarray]) -> LensNoise:
        from goggleqc.inspect.pipeline import inspect_lens

        name, image = named
        return combine_levels([lens_noise(inspect_lens(image, self.station, self.spec, name=name, detectors=det),
                                          self.spec, m) for m, det in zip(self.levels, self.ladder)], self.levels)


def combine_levels(per_level: list[LensNoise], levels: tuple[float, ...]) -> LensNoise:
    """One lens's statistic from inspections at increasing multipliers.

    A limit-breaking object seen at level ``L`` with score ``q`` proves a reject at ``L``, and
    its peak suggests one up to ``q·L``; the suggestion is trusted only up to the next level,
    where the next inspection shows what is really still found (hysteresis, length seeding and
    the mean-response test do not scale with the peak). So
    ``x = max over L of min(max(q, 1)·L, L_next)``.
    """
    first = per_level[0]
    if first.error is not None:
        return first
    by_zone: dict[str, dict[str, float]] = {d: {} for d in DETECTORS}
    for i, (lens, m) in enumerate(zip(per_level, levels)):
        cap = levels[i + 1] if i + 1 < len(levels) else np.inf
        for det, zones in lens.by_zone.items():
            for zone, value in zones.items():
                by_zone[det][zone] = max(by_zone[det].get(zone, 0.0), min(value, cap))
    x = {det: max(z.values(), default=0.0) for det, z in by_zone.items()}
    return LensNoise(first.name, x, by_zone, first.fixed_fail)
