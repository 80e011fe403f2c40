"""Detector sensitivities for a target false-reject rate, fitted from known-good lenses.

Method (docs/thresholds.md gives the reasoning):

1. **Noise floor.** The good lenses are inspected once with every detector at a permissive
   multiplier ``s`` (:mod:`goggleqc.classify.noise`). Per lens and detector, ``x`` is the
   worst response (in default thresholds) of an object that breaks a spec limit; the lens is
   rejected by that detector at multiplier ``m`` when ``x ≥ m``.
2. **Budget.** The per-lens target ``t`` is split over the ``D`` detectors the spec constrains,
   assuming independent noise: each gets ``t_d = 1 − (1 − t)^(1/D)``, so that
   ``1 − Π(1 − t_d) = t``.
3. **Threshold per detector.** ``m_d`` is the ``1 − t_d`` quantile of ``x``:

   - *empirical* when the sample resolves it (``n·t_d ≥ 5`` expected exceedances): the
     order-statistic quantile, moved up by a margin of half a binomial standard error of the
     rank (``0.5·√(n·t_d·(1 − t_d))`` ranks), so that sampling error errs towards fewer
     rejects;
   - *exponential tail* otherwise: the exceedances over the ``k``-th largest value ``u``
     (``k = max(5, ⌈0.1·n⌉)``) are fitted by an exponential with mean ``β`` (the tail of a
     Gumbel law, which per-lens maxima of many noise responses follow), and
     ``m = u + β·ln(k / (n·t_d))``;
   - *floor* when fewer than ``t_d·n`` lenses have any limit-breaking candidate at all:
     the noise never reaches a limit often enough to matter, and ``m = s``, the most
     sensitive setting the noise run resolves.

   A warning is raised when ``n·t < 5``: the target is then beyond what the sample measures
   (a 0.1 % target from 50 lenses is not a measurement) and the tail is extrapolated.
4. **Check.** The in-sample false-reject rate of all detectors together is reported; with
   known-bad lenses the false-accept rate at the setting and the whole FRR-vs-FAR trade-off
   (targets from 0.1 % to 50 %) are reported too.

Lenses that fail on haze or transmittance are rejected whatever the detector thresholds; they
are left out of the fit and reported. If most "good" lenses clearly fail (haze, transmittance,
or a response ≥ 2 default thresholds: a real defect), the folder is refused: it does not
hold good lenses.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field

import numpy as np

from goggleqc.classify.noise import CODES, DETECTORS, NoiseSample, scaled_thresholds
from goggleqc.errors import InputError
from goggleqc.spec import Spec

#: a fit needs at least this many usable good lenses
MIN_GOOD = 10
#: expected exceedances below which a quantile is not measured but extrapolated
MIN_EXCEEDANCES = 5.0
#: the margin of the empirical quantile, in binomial standard errors of the rank
MARGIN_SE = 0.5
#: the largest multiplier a fit may set (noise this high means the station needs attention)
MAX_MULTIPLIER = 4.0
#: targets of the trade-off curve
CURVE_TARGETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)


def check_target(target_frr: float) -> None:
    """Refuse a target outside (0, 0.5) with a message that says why."""
    if not (isinstance(target_frr, (int, float)) and math.isfinite(target_frr) and 0 < target_frr < 0.5):
        raise InputError(f"--target-frr {target_frr!r} is outside (0, 0.5): give the fraction of good lenses you "
                         "accept to reject, e.g. 0.01 for 1 %")


@dataclass(frozen=True)
class DetectorFit:
    """The fitted multiplier of one detector and how it was found."""

    detector: str
    multiplier: float
    method: str
    budget_frr: float
    candidates: int
    noise_floor: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ThresholdFit:
    """The result of :func:`fit_thresholds`.

    Attributes
    ----------
    multipliers : dict
        ``{detector: m}``: thresholds at ``m ×`` the shipped defaults.
    detectors : list of DetectorFit
    target_frr : float
    n_good : int
        Good lenses used (after leaving out errors and haze/transmittance fails).
    n_excluded : int
        Good lenses left out (haze/transmittance fail, or could not be inspected).
    in_sample_frr : float
        False-reject rate of all detectors together on the fitting lenses.
    warnings : list of str
    scale : float
        The permissive multiplier of the noise run.
    """

    multipliers: dict
    detectors: list
    target_frr: float
    n_good: int
    n_excluded: int
    in_sample_frr: float
    warnings: list
    scale: float

    def thresholds(self, base: dict | None = None) -> dict:
        """The station ``thresholds`` table for this fit."""
        return scaled_thresholds(self.multipliers, base)


def quantile_threshold(x: np.ndarray, tail: float, floor: float) -> tuple[float, str]:
    """The multiplier ``m`` with ``P(x ≥ m) ≈ tail``, and the method used.

    Parameters
    ----------
    x : (n,) float ndarray
        Per-lens statistics; values below ``floor`` (0) mean no candidate was seen.
    tail : float
        The exceedance probability wanted, in (0, 1).
    floor : float
        The permissive multiplier: the smallest value the sample resolves.

    Returns
    -------
    m : float
    method : str
        ``floor``, ``empirical``, ``exponential-tail`` or ``maximum+10%`` (too few values
        above the floor to fit a tail, or a tail rarer than one in the sample that the fit
        placed below the sample's own maximum).
    """
    n = len(x)
    seen = np.sort(x[x >= floor])[::-1]  # descending
    if len(seen) <= tail * n:
        return floor, "floor"
    if n * tail >= MIN_EXCEEDANCES:
        # rank from the top of the 1 − tail quantile, moved up by a margin of half a binomial SE
        rank = n * tail - MARGIN_SE * math.sqrt(n * tail * (1 - tail))
        rank = min(max(rank, 0.5), len(seen))
        lo = int(math.floor(rank - 0.5))
        frac = rank - 0.5 - lo
        hi_val = seen[min(lo, len(seen) - 1)]
        lo_val = seen[min(lo + 1, len(seen) - 1)] if lo + 1 < len(seen) else floor
        value = hi_val + (lo_val - hi_val) * frac
        return float(max(value, floor) + 1e-9), "empirical"
    k = min(len(seen), max(5, int(math.ceil(0.1 * n))))
    if k < 3:
        return float(seen[0] * 1.1), "maximum+10%"
    u = seen[k - 1]
    beta = float(np.mean(seen[:k] - u)) * k / max(k - 1, 1)  # excesses over the k-th largest
    beta = max(beta, 1e-3 * u)
    value = max(u + beta * math.log(k / (n * tail)), floor)
    if n * tail < 1 and value <= seen[0]:
        # a tail rarer than one lens in the sample cannot start below a value the sample
        # holds: its own exceedance rate there is at least 1/n. A tail fitted on a sample that
        # is mostly ties at the floor and one outlier did (spots 0.697 under a lens's 0.71, an
        # in-sample false-reject rate 15 times the target)
        return float(seen[0] * 1.1), "maximum+10%"
    return float(value), "exponential-tail"


def constrained_detectors(spec: Spec) -> list[str]:
    """Detectors whose objects the spec limits (only they can reject a lens)."""
    return [d for d in DETECTORS if spec.limits_for(CODES[d])]


def fit_thresholds(good: NoiseSample, spec: Spec, target_frr: float) -> ThresholdFit:
    """Choose each detector's multiplier so that good lenses are rejected at ``target_frr``.

    Parameters
    ----------
    good : NoiseSample
        Noise statistics of the known-good lenses (errors already left out).
    spec : Spec
        The limits; detectors it does not constrain keep the defaults (m = 1).
    target_frr : float
        Per-lens false-reject rate of all detectors together, in (0, 0.5).

    Returns
    -------
    ThresholdFit

    Raises
    ------
    InputError
        Too few lenses, or a "good" folder where most lenses clearly fail.
    """
    check_target(target_frr)
    n_all = good.n
    if n_all == 0:
        raise InputError("no good lens could be inspected; give a folder of known-good lens images")
    clearly = good.fixed_fail | np.any([good.x[d] >= 2.0 for d in DETECTORS], axis=0)
    if clearly.mean() > 0.5:
        raise InputError(f"{int(clearly.sum())} of {n_all} lenses given as good clearly fail the spec (haze, "
                         "transmittance, or a defect far above the noise); these are not known-good lenses — "
                         "check the --good folder")
    warnings: list[str] = []
    usable = good.subset(~good.fixed_fail)
    if good.fixed_fail.any():
        warnings.append(f"{int(good.fixed_fail.sum())} of {n_all} good lenses fail on haze or transmittance, which "
                        "no detector threshold changes; they are left out of the fit")
    n = usable.n
    if n < MIN_GOOD:
        raise InputError(f"only {n} usable good lenses; a threshold fit needs at least {MIN_GOOD} (and 5/target "
                         f"for the target itself: {math.ceil(5 / target_frr)} for {target_frr:.3g})")
    if n * target_frr < MIN_EXCEEDANCES:
        warnings.append(f"{n} good lenses are too few for a {target_frr:.2%} target: that is {n * target_frr:.2g} "
                        f"expected rejects, not a measurement; the tail is extrapolated. Give at least "
                        f"{math.ceil(MIN_EXCEEDANCES / target_frr)} lenses")
    active = constrained_detectors(spec)
    budget = 1.0 - (1.0 - target_frr) ** (1.0 / max(len(active), 1))
    fits: list[DetectorFit] = []
    multipliers: dict[str, float] = {}
    for det in DETECTORS:
        x = usable.x[det]
        floor_by_zone = usable.zone_floor(det, 1.0 - budget)
        if det not in active:
            fits.append(DetectorFit(det, 1.0, "unconstrained (no limit in the spec)", 0.0, 0, floor_by_zone))
            continue
        m, method = quantile_threshold(x, budget, usable.scale)
        if m > MAX_MULTIPLIER:
            warnings.append(f"{det}: the noise reaches {m:.2f}× the default threshold; capped at "
                            f"{MAX_MULTIPLIER:g}× — check the station (focus, backlight, dirt)")
            m = MAX_MULTIPLIER
        multipliers[det] = round(m, 4)
        fits.append(DetectorFit(det, multipliers[det], method, budget, int(np.count_nonzero(x >= usable.scale)),
                                floor_by_zone))
    in_sample = float(usable.rejected(multipliers).mean()) if n else 0.0
    return ThresholdFit(multipliers=multipliers, detectors=fits, target_frr=float(target_frr), n_good=n,
                        n_excluded=n_all - n, in_sample_frr=in_sample, warnings=warnings, scale=good.scale)


def false_accept_rate(bad: NoiseSample, multipliers: dict[str, float]) -> float:
    """Fraction of known-bad lenses that pass at these multipliers."""
    if bad.n == 0:
        return float("nan")
    return float(1.0 - bad.rejected(multipliers).mean())


@dataclass(frozen=True)
class CurvePoint:
    target_frr: float
    multipliers: dict
    frr: float
    far: float


def tradeoff_curve(good: NoiseSample, bad: NoiseSample, spec: Spec,
                   targets: tuple[float, ...] = CURVE_TARGETS) -> list[CurvePoint]:
    """FRR (good, in-sample) against FAR (bad) over a range of targets, fitted as by :func:`fit_thresholds`."""
    usable = good.subset(~good.fixed_fail)
    active = constrained_detectors(spec)
    points = []
    previous: dict[str, float] = {}
    for t in sorted(targets):
        budget = 1.0 - (1.0 - t) ** (1.0 / max(len(active), 1))
        mult = {d: min(quantile_threshold(usable.x[d], budget, usable.scale)[0], MAX_MULTIPLIER) for d in active}
        # a looser target never raises a threshold (the tail and empirical methods meet unevenly)
        mult = {d: min(m, previous.get(d, m)) for d, m in mult.items()}
        previous = mult
        points.append(CurvePoint(t, mult, float(usable.rejected(mult).mean()), false_accept_rate(bad, mult)))
    return points


def plot_curve(points: list[CurvePoint], path, chosen: CurvePoint | None = None) -> None:
    """Write the FRR-vs-FAR trade-off as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2), dpi=110)
    frr = [100 * p.frr for p in points]
    far = [100 * p.far for p in points]
    ax.plot(frr, far, "o-", color="#2a6fbb", label="fitted settings")
    for p, a, b in zip(points, frr, far):
        ax.annotate(f"{p.target_frr:.3g}", (a, b), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if chosen is not None:
        ax.plot([100 * chosen.frr], [100 * chosen.far], "s", color="#d62728", ms=9,
                label=f"chosen (target {chosen.target_frr:.3g})")
    ax.set_xlabel("false-reject rate on good lenses (%)")
    ax.set_ylabel("false-accept rate on bad lenses (%)")
    ax.set_title("Detector thresholds: FRR vs FAR (labels: target FRR)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def record_fit(station, fit: ThresholdFit, *, spec_name: str, n_bad: int = 0, far: float | None = None,
               good_dir: str | None = None, bad_dir: str | None = None) -> None:
    """Write the fit into ``station`` (thresholds and ``meta``), keeping the previous setting in history.

    ``station.meta["thresholds_history"]`` is a list (oldest first) of earlier settings, each
    ``{"thresholds": {...}, "fit": {...}, "replaced": date}``; :func:`undo_fit` restores the last.
    """
    history = list(station.meta.get("thresholds_history", []))
    history.append({"thresholds": dict(station.thresholds), "fit": dict(station.meta.get("thresholds_fit", {})),
                    "replaced": _now()})
    station.thresholds = fit.thresholds(station.thresholds)
    station.meta["thresholds_fit"] = {
        "date": _now(), "method": "per-lens noise maxima at permissive multiplier; quantile + margin or exponential "
                                  "tail per detector; budget split 1-(1-t)^(1/D) (docs/thresholds.md)",
        "target_frr": fit.target_frr, "n_good": fit.n_good, "n_good_excluded": fit.n_excluded, "n_bad": n_bad,
        "in_sample_frr": fit.in_sample_frr, "expected_far": far if far is not None and not math.isnan(far) else None,
        "permissive_scale": fit.scale, "spec": spec_name, "good_dir": good_dir, "bad_dir": bad_dir,
        "multipliers": dict(fit.multipliers),
        "detectors": {d.detector: {"multiplier": d.multiplier, "method": d.method, "budget_frr": d.budget_frr,
                                   "lenses_with_candidates": d.candidates,
                                   "noise_floor_central": d.noise_floor.get("central", 0.0),
                                   "noise_floor_marginal": d.noise_floor.get("marginal", 0.0)}
                      for d in fit.detectors},
        "warnings": list(fit.warnings),
    }
    station.meta["thresholds_history"] = history


def undo_fit(station) -> dict:
    """Restore the thresholds in force before the last fit; returns the restored entry.

    Raises
    ------
    InputError
        When the station has no earlier thresholds to go back to.
    """
    history = list(station.meta.get("thresholds_history", []))
    if not history:
        raise InputError("this station has no earlier thresholds to go back to (no thresholds_history in "
                         "station.toml)")
    last = history.pop()
    station.thresholds = dict(last.get("thresholds", {}))
    if last.get("fit"):
        station.meta["thresholds_fit"] = dict(last["fit"])
    else:
        station.meta.pop("thresholds_fit", None)
    station.meta["thresholds_history"] = history
    return last
