"""The haze-plate correction: a straight line from raw to certified haze.

Reference plates of certified haze (0.5–8 %, ASTM D1003) are imaged on the station. Their
raw haze comes from the same estimator inspection uses
(:func:`goggleqc.inspect.haze.raw_plate_haze_pct`); a least-squares line
``certified = slope·raw + intercept`` removes the bias of the nominal scatter kernel. Each
plate's residual and leave-one-out residual (its error when left out of the fit) are kept.
"""

from __future__ import annotations

import numpy as np

from goggleqc.calibration.station import HazeFit
from goggleqc.errors import CalibrationError

#: a sane fit: the raw estimator is within a factor of two of the truth ...
SLOPE_RANGE = (0.5, 2.0)
#: ... with a small offset (percentage points) ...
MAX_INTERCEPT_PP = 1.0
#: ... and every plate on the line within this (percentage points, or 10 % of its value)
MAX_RESIDUAL_PP = 0.3


def fit_haze(names: list[str], certified_pct: list[float], raw_pct: list[float]) -> HazeFit:
    """Fit ``certified = slope·raw + intercept`` and refuse a clearly broken fit.

    Parameters
    ----------
    names : list of str
        Plate image names, for the report and messages.
    certified_pct, raw_pct : list of float
        Certified and raw haze of each plate, %.

    Returns
    -------
    HazeFit
        With ``plates``: one dict per plate (``file``, ``certified_pct``, ``raw_pct``,
        ``corrected_pct``, ``residual_pp`` and, with three plates or more, ``loo_residual_pp``).
    """
    cert = np.asarray(certified_pct, np.float64)
    raw = np.asarray(raw_pct, np.float64)
    if len(cert) < 2:
        raise CalibrationError("a haze fit needs at least two --haze-standard plates of different haze")
    if np.ptp(cert) < 0.2:
        raise CalibrationError("the haze plates' certified values are all about the same; use plates spanning "
                               "0.5–8 % haze")
    bad = [n for n, r in zip(names, raw) if not np.isfinite(r)]
    if bad:
        raise CalibrationError(f"{bad[0]}: its raw haze could not be measured; is it a plate image from this station?")
    slope, intercept = np.polyfit(raw, cert, 1)
    corrected = slope * raw + intercept
    resid = corrected - cert
    loo = np.full(len(cert), np.nan)
    if len(cert) >= 3:
        for i in range(len(cert)):
            keep = np.arange(len(cert)) != i
            s, c = np.polyfit(raw[keep], cert[keep], 1)
            loo[i] = s * raw[i] + c - cert[i]
    worst = int(np.argmax(np.abs(resid) - np.maximum(MAX_RESIDUAL_PP, 0.1 * cert)))
    if not SLOPE_RANGE[0] <= slope <= SLOPE_RANGE[1]:
        raise CalibrationError(f"the haze fit is broken: slope {slope:.3f} (raw haze {raw.min():.2f}–{raw.max():.2f} % "
                               f"against certified {cert.min():.2f}–{cert.max():.2f} %); check that each "
                               "--haze-standard IMG=PCT pairs the right image with its certificate")
    if abs(intercept) > MAX_INTERCEPT_PP:
        raise CalibrationError(f"the haze fit is broken: offset {intercept:+.2f} percentage points; check the plate "
                               "images and their certified values")
    if abs(resid[worst]) > max(MAX_RESIDUAL_PP, 0.1 * cert[worst]):
        raise CalibrationError(f"{names[worst]}: {raw[worst]:.2f} % raw haze is {resid[worst]:+.2f} points off the line "
                               f"through the other plates (certified {cert[worst]:g} %); check its certified value "
                               "or retake the image")
    plates = []
    for i, name in enumerate(names):
        rec = {"file": name, "certified_pct": float(cert[i]), "raw_pct": round(float(raw[i]), 4),
               "corrected_pct": round(float(corrected[i]), 4), "residual_pp": round(float(resid[i]), 4)}
        if np.isfinite(loo[i]):
            rec["loo_residual_pp"] = round(float(loo[i]), 4)
        plates.append(rec)
    return HazeFit(slope=float(slope), intercept=float(intercept), plates=tuple(plates))
