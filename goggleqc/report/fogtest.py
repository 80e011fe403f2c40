"""Fog-test report: the contrast curve, the void map and an HTML page holding both.

The plot shows the central-zone contrast relative to clear against time from the exposure
start, with the threshold (80 % of clear) and the fog-free time marked. The void map shows the
reduced clear frame in grey, the lens outline, the pixels where fog can be measured (tinted),
and each void filled and numbered.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window (also on headless line PCs)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from goggleqc.inspect.fog import N_MIN_FOG_FREE_S, FogTestResult  # noqa: E402


def write_contrast_plot(result: FogTestResult, path: str | Path) -> Path:
    """PNG of contrast (relative to clear) against seconds from the exposure start."""
    path = Path(path)
    t = np.array([f.t_s for f in result.frames]) - result.exposure_start_s
    c = np.array([f.contrast for f in result.frames])
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=100)
    ax.plot(t, c * 100, color="#1f5fa8", lw=1.6, label="central-zone contrast")
    fogged = np.array([f.fogged_frac for f in result.frames])
    ax.plot(t, fogged * 100, color="#999999", lw=1.0, ls=":", label="fogged area of the lens")
    ax.axhline(result.threshold * 100, color="#c0392b", ls="--", lw=1.2,
               label=f"threshold {result.threshold:.0%} of clear")
    ax.axvline(0, color="#555555", lw=1.0, label="exposure start")
    ax.axvline(N_MIN_FOG_FREE_S, color="#27ae60", lw=0.8, ls="-.", label=f"N mark: {N_MIN_FOG_FREE_S:g} s")
    if result.fog_free_s is not None:
        ax.axvline(result.fog_free_s, color="#c0392b", lw=1.6)
        ax.annotate(f"fog-free {result.fog_free_s:.2f} s", (result.fog_free_s, result.threshold * 100),
                    xytext=(8, 12), textcoords="offset points", color="#c0392b")
    else:
        ax.annotate(f"fog-free ≥ {result.fog_free_at_least_s:.1f} s", (t[-1], result.threshold * 100),
                    xytext=(-140, 12), textcoords="offset points", color="#27ae60")
    ax.set_xlabel("time from exposure start (s)")
    ax.set_ylabel("% of clear")
    ax.set_ylim(0, max(110.0, float(np.nanmax(c)) * 100 + 5))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(f"Fog test: N {result.n_verdict}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_void_map(result: FogTestResult, path: str | Path) -> Path:
    """PNG of the voids over the reduced clear frame."""
    path = Path(path)
    clear = result.clear_small if result.clear_small is not None else np.zeros((10, 10), np.float32)
    hi = float(np.percentile(clear, 99.5)) or 1.0
    grey = np.clip(clear / hi, 0, 1)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    if result.measurable_small is not None:
        m = result.measurable_small
        rgb[m] = 0.8 * rgb[m] + 0.2 * np.array([0.2, 0.6, 1.0])
    labels = result.void_labels if result.void_labels is not None else np.zeros(clear.shape, np.int32)
    rgb[labels > 0] = 0.35 * rgb[labels > 0] + 0.65 * np.array([1.0, 0.45, 0.0])
    h, w = clear.shape
    fig, ax = plt.subplots(figsize=(8, 8 * h / w + 0.6), dpi=100)
    ax.imshow(rgb, interpolation="nearest")
    if result.lens_small is not None:
        ax.contour(result.lens_small.astype(float), levels=[0.5], colors=["#00e5ff"], linewidths=0.8)
    f = result.reduction
    for i, v in enumerate(result.voids, 1):
        x0, y0, x1, y1 = (b / f for b in v.bbox_px)
        size = f"{v.area_mm2:.1f} mm²" if v.area_mm2 is not None else f"{v.area_px:.0f} px"
        onset = f", {v.onset_s:.1f} s" if v.onset_s is not None else ""
        ax.text(x1 + 1, y0, f"{i}: {size}{onset}", color="#ffdd00", fontsize=8, va="top")
    ax.set_axis_off()
    ax.set_title(f"{len(result.voids)} void(s): regions that fogged while the rest stayed clear", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_fogtest_html(result: FogTestResult, path: str | Path, plot_name: str, map_name: str,
                       source: str = "") -> Path:
    """A self-contained page (images by relative link) with the numbers, the plot and the map."""
    path = Path(path)
    e = html.escape
    if result.fog_free_s is not None:
        ff = f"{result.fog_free_s:.2f} s"
    else:
        ff = f"≥ {result.fog_free_at_least_s:.1f} s (never fogged in the sequence)"
    rows = "".join(
        f"<tr><td>{i}</td><td>{'' if v.area_mm2 is None else f'{v.area_mm2:.1f}'}</td><td>{v.area_px:.0f}</td>"
        f"<td>{'' if v.onset_s is None else f'{v.onset_s:.2f}'}</td><td>{e(v.zone)}</td><td>{e(str(v.bbox_px))}</td></tr>"
        for i, v in enumerate(result.voids, 1))
    notes = "".join(f"<li>{e(m)}</li>" for m in result.messages)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>goggleqc fog test</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}td,th{{padding:2px 10px;text-align:left}}
.pass{{color:#27ae60}}.fail{{color:#c0392b}}.inconclusive{{color:#e67e22}}</style></head><body>
<h1>Fog test <span class="{e(result.n_verdict)}">N {e(result.n_verdict)}</span></h1>
<p>{e(source)}</p>
<table>
<tr><th>fog-free time</th><td>{e(ff)}</td></tr>
<tr><th>threshold</th><td>{result.threshold:.0%} of the clear contrast, central zone</td></tr>
<tr><th>exposure start</th><td>{result.exposure_start_s:.2f} s ({e(result.start_mode)})</td></tr>
<tr><th>clear reference</th><td>{result.clear_frames} frames</td></tr>
<tr><th>N mark (EN 168 §16)</th><td>fog-free ≥ {N_MIN_FOG_FREE_S:g} s</td></tr>
</table>
<ul>{notes}</ul>
<h2>Contrast</h2><img src="{e(plot_name)}" alt="contrast against time">
<h2>Coating voids</h2><img src="{e(map_name)}" alt="void map" style="max-width:100%">
<table><tr><th>#</th><th>area (mm²)</th><th>area (px)</th><th>onset (s)</th><th>zone</th><th>bbox (px)</th></tr>{rows}</table>
<p><small>goggleqc measures and applies limits; a notified body certifies.</small></p>
</body></html>
"""
    path.write_text(page, encoding="utf-8")
    return path


def write_fogtest_json(result: FogTestResult, path: str | Path, extra: dict | None = None) -> Path:
    """``fogtest.json``: the result fields plus the per-frame contrast curve."""
    path = Path(path)
    out = result.to_dict()
    out["contrast_curve"] = {"t_s": [f.t_s for f in result.frames], "contrast": [f.contrast for f in result.frames]}
    if extra:
        out.update(extra)
    path.write_text(json.dumps(out, indent=1), encoding="utf-8")
    return path
