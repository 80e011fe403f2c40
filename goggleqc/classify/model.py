"""An optional learned pass/fail model over the measured features, next to the spec.

For plants whose labels disagree with the written spec (a count of small spots, a scratch
that is short but deep), a logistic regression over standardised features of the Result
(:data:`FEATURES`) learns the plant's rule from folders of good and bad lenses. It is small
and inspectable: one coefficient per named feature, stored as JSON in the station folder.

It never replaces the spec. The spec's limits stay hard limits: a spec fail stays a fail. The
model may only turn a spec pass into a fail, with a reason whose ``decided_by`` is ``model``;
its probability is reported alongside in ``extra["model_p_fail"]`` for every lens.

Fitting: L2-regularised logistic regression by iteratively reweighted least squares (Newton's
method; Hastie, Tibshirani & Friedman, *The Elements of Statistical Learning*, §4.4.1), on
features standardised by the training mean and standard deviation; the intercept is not
penalised. Accuracy is estimated by stratified k-fold cross-validation of the combined rule
(spec fail, or model fail), and compared with the spec alone on the same lenses.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from goggleqc.errors import CalibrationError, InputError
from goggleqc.inspect.results import Reason, Result

MODEL_FILE = "classifier.json"
#: feature names, in the order of the coefficient vector
FEATURES = (
    "haze_pct", "transmittance_pct",
    "scratch_length_mm_central", "scratch_length_mm_marginal", "scratch_severity_mm", "n_scratches",
    "spot_diameter_mm_central", "spot_diameter_mm_marginal", "n_spots",
    "coating_area_mm2_central", "coating_area_mm2_marginal", "n_coating",
)


def _max(objs, field: str, zone: str | None = None) -> float:
    vals = [getattr(o, field) or 0.0 for o in objs if zone is None or o.zone in (zone, "unknown")]
    return float(max(vals, default=0.0))


def features(result: Result) -> np.ndarray:
    """The (F,) feature vector of one lens, in the order of :data:`FEATURES`.

    ``scratch_severity_mm`` is the largest ``length_mm × |contrast|`` (the integrated darkening
    along a scratch). Missing measures (no pixel size, no calibration) count as 0.
    """
    sc, sp, co = result.scratches, result.spots, result.coating
    severity = max(((s.length_mm or 0.0) * abs(s.contrast) for s in sc), default=0.0)
    return np.array([
        result.haze_pct or 0.0, result.transmittance_pct or 0.0,
        _max(sc, "length_mm", "central"), _max(sc, "length_mm", "marginal"), severity, len(sc),
        _max(sp, "diameter_mm", "central"), _max(sp, "diameter_mm", "marginal"), len(sp),
        _max(co, "area_mm2", "central"), _max(co, "area_mm2", "marginal"), len(co),
    ], float)


def _irls(x: np.ndarray, y: np.ndarray, l2: float, iterations: int = 50) -> np.ndarray:
    """Coefficients (intercept first) of an L2-penalised logistic regression by Newton/IRLS."""
    a = np.hstack([np.ones((len(x), 1)), x])
    w = np.zeros(a.shape[1])
    pen = np.full(a.shape[1], l2)
    pen[0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(a @ w, -30, 30)))
        grad = a.T @ (p - y) + pen * w
        hess = (a * (p * (1 - p))[:, None]).T @ a + np.diag(pen + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w


@dataclass(frozen=True)
class LogisticModel:
    """A fitted model: ``P(fail) = σ(b0 + Σ b_i·(f_i − mean_i)/scale_i)``.

    Attributes
    ----------
    coef : tuple of float
        Intercept first, then one per feature.
    mean, scale : tuple of float
        Standardisation of each feature.
    threshold : float
        ``P(fail)`` at or above which a spec-passed lens fails.
    feature_names : tuple of str
    info : dict
        Provenance: date, lens counts, cross-validated accuracies.
    """

    coef: tuple
    mean: tuple
    scale: tuple
    threshold: float = 0.5
    feature_names: tuple = FEATURES
    info: dict | None = None

    def p_fail(self, f: np.ndarray) -> np.ndarray:
        """``P(fail)`` for (F,) or (n, F) features."""
        z = (np.atleast_2d(f) - np.asarray(self.mean)) / np.asarray(self.scale)
        logit = self.coef[0] + z @ np.asarray(self.coef[1:])
        p = 1.0 / (1.0 + np.exp(-np.clip(logit, -30, 30)))
        return p if np.ndim(f) == 2 else p[0]

    def top_features(self, f: np.ndarray, k: int = 2) -> list[str]:
        """The features that pushed this lens most towards fail."""
        z = (f - np.asarray(self.mean)) / np.asarray(self.scale) * np.asarray(self.coef[1:])
        order = np.argsort(-z)[:k]
        return [f"{self.feature_names[i]} = {f[i]:.3g}" for i in order if z[i] > 0]

    def apply(self, result: Result) -> Result:
        """The Result with the model's opinion: it may turn a pass into a fail, never the reverse."""
        if result.verdict == "error":
            return result
        f = features(result)
        p = float(self.p_fail(f))
        extra = {**result.extra, "model_p_fail": round(p, 4)}
        if result.verdict == "pass" and p >= self.threshold:
            why = ", ".join(self.top_features(f)) or "the combined features"
            reason = Reason("model", p, self.threshold, "", None,
                            f"learned model: P(fail) {p:.2f} ≥ {self.threshold:.2f} ({why}); the spec passed this lens",
                            decided_by="model")
            return replace(result, verdict="fail", reasons=[*result.reasons, reason], extra=extra)
        return replace(result, extra=extra)

    def to_dict(self) -> dict:
        return {"kind": "logistic-regression", "features": list(self.feature_names), "coef": list(self.coef),
                "mean": list(self.mean), "scale": list(self.scale), "threshold": self.threshold,
                "info": self.info or {}}

    @classmethod
    def from_dict(cls, data: dict, where: str = MODEL_FILE) -> "LogisticModel":
        try:
            names = tuple(data["features"])
            coef, mean, scale = (tuple(float(v) for v in data[k]) for k in ("coef", "mean", "scale"))
            threshold = float(data.get("threshold", 0.5))
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"{where}: not a goggleqc classifier ({exc}); refit it with "
                                   "`goggleqc thresholds --learn`") from None
        if names != FEATURES or len(coef) != len(names) + 1 or len(mean) != len(names) or len(scale) != len(names):
            raise CalibrationError(f"{where}: made for other features than this goggleqc computes; refit it with "
                                   "`goggleqc thresholds --learn`")
        return cls(coef, mean, scale, threshold, names, data.get("info") or {})


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 1.0, info: dict | None = None) -> LogisticModel:
    """Fit :class:`LogisticModel` to (n, F) features and (n,) labels (1 = fail)."""
    mean = x.mean(0)
    scale = x.std(0)
    scale = np.where(scale > 1e-9, scale, 1.0)
    w = _irls((x - mean) / scale, y.astype(float), l2)
    return LogisticModel(tuple(map(float, w)), tuple(map(float, mean)), tuple(map(float, scale)), info=info)


def cross_validate(x: np.ndarray, y: np.ndarray, spec_fail: np.ndarray, *, k: int = 5, l2: float = 1.0,
                   seed: int = 0) -> dict:
    """Stratified k-fold accuracy of the combined rule (spec fail or model fail) and of the spec alone.

    Returns
    -------
    dict
        ``accuracy_model`` (combined, out-of-fold), ``accuracy_spec``, ``folds``.
    """
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), int)
    for label in (0, 1):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        fold[idx] = np.arange(len(idx)) % k
    pred = np.zeros(len(y), bool)
    for f in range(k):
        test = fold == f
        if not test.any() or len(np.unique(y[~test])) < 2:
            pred[test] = spec_fail[test]
            continue
        m = fit_logistic(x[~test], y[~test], l2=l2)
        pred[test] = spec_fail[test] | (m.p_fail(x[test]) >= m.threshold)
    return {"accuracy_model": float(np.mean(pred == (y == 1))),
            "accuracy_spec": float(np.mean(spec_fail == (y == 1))), "folds": k}


def fit_classifier(results_good: list[Result], results_bad: list[Result], *, l2: float = 1.0,
                   k: int = 5) -> tuple[LogisticModel, dict]:
    """Fit the model from inspected good and bad lenses, with k-fold cross-validated accuracy.

    Raises
    ------
    InputError
        Fewer than 5 usable lenses of either label.
    """
    good = [r for r in results_good if r.verdict != "error"]
    bad = [r for r in results_bad if r.verdict != "error"]
    if len(good) < 5 or len(bad) < 5:
        raise InputError(f"the learned model needs at least 5 good and 5 bad lenses that could be inspected "
                         f"(got {len(good)} good, {len(bad)} bad); give --good and --bad folders")
    x = np.array([features(r) for r in (*good, *bad)])
    y = np.r_[np.zeros(len(good)), np.ones(len(bad))]
    spec_fail = np.array([r.verdict == "fail" for r in (*good, *bad)])
    cv = cross_validate(x, y, spec_fail, k=min(k, len(good), len(bad)), l2=l2)
    info = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "n_good": len(good),
            "n_bad": len(bad), "l2": l2, **cv}
    return fit_logistic(x, y, l2=l2, info=info), cv


def save_model(model: LogisticModel, folder: str | Path) -> Path:
    path = Path(folder) / MODEL_FILE
    path.write_text(json.dumps(model.to_dict(), indent=1), encoding="utf-8")
    return path


def load_model(folder: str | Path) -> LogisticModel | None:
    """The model in a station folder, or None when there is none."""
    path = Path(folder) / MODEL_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"{path}: unreadable ({exc}); refit it with `goggleqc thresholds --learn`") from None
    return LogisticModel.from_dict(data, str(path))


def attach_model(station) -> LogisticModel | None:
    """Load the station folder's model (if any) into ``station.cache["classifier"]``, where
    :func:`~goggleqc.inspect.pipeline.inspect_lens` finds it."""
    folder = station.meta.get("folder")
    model = load_model(folder) if folder else None
    if model is not None:
        station.cache["classifier"] = model
    return model
