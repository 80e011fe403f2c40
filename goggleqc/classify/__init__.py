"""Pass/fail classification fitted from data: detector thresholds and an optional learned model.

- :mod:`goggleqc.classify.noise`: each detector's noise floor on known-good lenses, measured
  by running the detectors permissively (sensitivity multipliers, per-lens maxima).
- :mod:`goggleqc.classify.thresholds`: detector sensitivities for a target false-reject rate
  (empirical quantile plus margin, or an exponential tail), the FRR/FAR trade-off, and the
  station record with its history.
- :mod:`goggleqc.classify.model`: an inspectable logistic-regression pass/fail model over the
  measured features, which may only turn a spec pass into a fail.
- :mod:`goggleqc.classify.explain`: each measured value against its limit, with the margin.

The method is described in docs/thresholds.md.
"""
