"""``report.html``: one self-contained page summarising a batch.

The page has inline CSS and inline SVG charts and no scripts; overlay thumbnails and
full-size overlays are relative links into ``overlays/`` beside it. It is built from the
records themselves (normally read back from ``results.jsonl``), so what the page says is
exactly what the results file says. When a path occurs more than once (a resumed run that
retried an unreadable file) its last record counts.

Sections: the summary (yield, counts by verdict and by reason, a Pareto chart of defect
kinds, haze and transmittance histograms, throughput), a table of failed lenses with
overlay thumbnails, a table of images that could not be inspected, and the spec and
station used.
"""

from __future__ import annotations

import html
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

from goggleqc.report.records import DEFECT_LISTS, defect_kind, total_ms

REASON_ORDER = ("haze", "transmittance", "scratch", "coating", "spot")


@dataclass
class _Row:
    image: str
    verdict: str
    codes: tuple[str, ...]
    messages: tuple[str, ...]
    overlay: str | None
    haze_pct: float | None
    haze_kind: str | None
    transmittance_pct: float | None
    kinds: tuple[str, ...]
    time_ms: float | None
    haze_index: float | None = None


@dataclass
class ReportData:
    """Everything the page shows, aggregated from records (one entry per path, last record wins)."""

    rows: dict[str, _Row] = field(default_factory=dict)

    def add(self, record: dict[str, Any]) -> None:
        reasons = record.get("reasons") or []
        kinds = tuple(defect_kind(name, d) for name in DEFECT_LISTS for d in record.get(name) or [])
        self.rows[record["path"]] = _Row(
            image=record.get("image") or os.path.basename(record["path"]),
            verdict=record.get("verdict", "error"),
            codes=tuple(dict.fromkeys(r.get("code", "") for r in reasons)),
            messages=tuple(r.get("message", "") for r in reasons) or ((record.get("error") or "",) if record.get("error") else ()),
            overlay=record.get("overlay"),
            haze_pct=record.get("haze_pct"),
            haze_kind=record.get("haze_kind"),
            transmittance_pct=record.get("transmittance_pct"),
            kinds=kinds,
            time_ms=total_ms(record),
            haze_index=(record.get("extra") or {}).get("haze_contrast_index"),
        )

    @property
    def counts(self) -> Counter:
        return Counter(r.verdict for r in self.rows.values())

    @property
    def reason_counts(self) -> Counter:
        """Failed lenses per reason code (a lens failing for two reasons counts under both)."""
        return Counter(code for r in self.rows.values() if r.verdict == "fail" for code in r.codes)

    @property
    def kind_counts(self) -> Counter:
        """Defects found per kind over all inspected lenses."""
        return Counter(k for r in self.rows.values() for k in r.kinds)


def collect(records: Iterable[dict[str, Any]]) -> ReportData:
    """Aggregate records (streamed, e.g. from :func:`goggleqc.report.writers.read_records`)."""
    data = ReportData()
    for record in records:
        data.add(record)
    return data


# -- SVG charts -----------------------------------------------------------------------------------

_FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _nice_step(span: float, target: int = 5) -> float:
    raw = span / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def bar_chart_svg(items: list[tuple[str, int]], *, title: str, colour: str = "#c0392b", width: int = 420) -> str:
    """Horizontal bars, one per ``(label, count)``."""
    if not items:
        return f'<p class="none">{_e(title)}: none</p>'
    row, left = 22, 130
    height = row * len(items) + 28
    top = max(c for _, c in items) or 1
    parts = [f'<svg class="chart" role="img" aria-label="{_e(title)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" {_FONT}>',
             f'<text x="0" y="12" font-weight="600">{_e(title)}</text>']
    for i, (label, count) in enumerate(items):
        y = 22 + i * row
        w = (width - left - 50) * count / top
        parts.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{_e(label)}</text>'
                     f'<rect x="{left}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{colour}"/>'
                     f'<text x="{left + w + 4:.1f}" y="{y + 14}">{count}</text>')
    parts.append("</svg>")
    return "".join(parts)


def pareto_svg(counts: Counter, *, title: str = "Pareto of defect kinds", width: int = 520, height: int = 260) -> str:
    """Bars by count, largest first, with the cumulative percentage as a line (right axis)."""
    items = counts.most_common()
    if not items:
        return f'<p class="none">{_e(title)}: no defects found</p>'
    left, right, top, bottom = 40, 44, 34, 70
    pw, ph = width - left - right, height - top - bottom
    total = sum(c for _, c in items)
    peak = items[0][1]
    bw = pw / len(items)
    parts = [f'<svg class="chart" role="img" aria-label="{_e(title)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" {_FONT}>',
             f'<text x="0" y="12" font-weight="600">{_e(title)}</text>',
             f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#555"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#555"/>',
             f'<line x1="{left + pw}" y1="{top}" x2="{left + pw}" y2="{top + ph}" stroke="#555"/>',
             f'<text x="{left - 4}" y="{top + ph}" text-anchor="end">0</text>',
             f'<text x="{left + pw + 4}" y="{top + 4}">100%</text>',
             f'<text x="{left + pw + 4}" y="{top + ph}">0%</text>',
             f'<line x1="{left}" y1="{top + ph * 0.2:.1f}" x2="{left + pw}" y2="{top + ph * 0.2:.1f}" '
             f'stroke="#999" stroke-dasharray="4 3"/><text x="{left + pw + 4}" y="{top + ph * 0.2 + 4:.1f}">80%</text>']
    cum, points = 0, []
    for i, (label, count) in enumerate(items):
        x = left + i * bw
        h = ph * count / peak
        cum += count
        points.append(f"{x + bw / 2:.1f},{top + ph * (1 - cum / total):.1f}")
        parts.append(f'<rect x="{x + bw * 0.12:.1f}" y="{top + ph - h:.1f}" width="{bw * 0.76:.1f}" height="{h:.1f}" '
                     f'fill="#2e6da4"><title>{_e(label)}: {count}</title></rect>'
                     f'<text x="{x + bw / 2:.1f}" y="{top + ph - h - 3:.1f}" text-anchor="middle">{count}</text>'
                     f'<text transform="translate({x + bw / 2:.1f},{top + ph + 8}) rotate(35)">{_e(label)}</text>')
    parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="#e67e22" stroke-width="2"/>')
    parts.extend(f'<circle cx="{p.split(",")[0]}" cy="{p.split(",")[1]}" r="3" fill="#e67e22"/>' for p in points)
    parts.append("</svg>")
    return "".join(parts)


def histogram_svg(values: list[float], *, title: str, unit: str, limit: float | None = None,
                  limit_label: str = "limit", width: int = 520, height: int = 220, bins: int = 24) -> str:
    """A histogram of ``values`` with the spec limit drawn as a red line."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return f'<p class="none">{_e(title)}: no values</p>'
    lo, hi = min(values), max(values)
    if limit is not None:
        lo, hi = min(lo, limit), max(hi, limit)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    step = _nice_step(hi - lo, bins)
    lo = math.floor(lo / step) * step
    n = max(1, math.ceil((hi - lo) / step + 1e-9))
    if lo + n * step <= hi:
        n += 1
    counts = [0] * n
    for v in values:
        counts[min(n - 1, int((v - lo) // step))] += 1
    left, right, top, bottom = 40, 12, 22, 36
    pw, ph = width - left - right, height - top - bottom
    peak = max(counts)
    bw = pw / n
    x_of = lambda v: left + (v - lo) / (n * step) * pw  # noqa: E731
    parts = [f'<svg class="chart" role="img" aria-label="{_e(title)}" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" {_FONT}>',
             f'<text x="0" y="12" font-weight="600">{_e(title)} (n = {len(values)})</text>',
             f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#555"/>',
             f'<text x="{left - 4}" y="{top + 4}" text-anchor="end">{peak}</text>',
             f'<text x="{left - 4}" y="{top + ph}" text-anchor="end">0</text>']
    for i, c in enumerate(counts):
        h = ph * c / peak
        parts.append(f'<rect x="{left + i * bw + 0.5:.1f}" y="{top + ph - h:.1f}" width="{max(bw - 1, 0.5):.1f}" '
                     f'height="{h:.1f}" fill="#5b8db8"><title>{lo + i * step:.4g}–{lo + (i + 1) * step:.4g} {_e(unit)}: '
                     f'{c}</title></rect>')
    tick = _nice_step(n * step, 6)
    t = math.ceil(lo / tick) * tick
    while t <= lo + n * step + 1e-9:
        parts.append(f'<text x="{x_of(t):.1f}" y="{top + ph + 14}" text-anchor="middle">{t:.4g}</text>')
        t += tick
    parts.append(f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle">{_e(unit)}</text>')
    if limit is not None:
        x = x_of(limit)
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#c0392b" stroke-width="2"/>'
                     f'<text x="{x + 3:.1f}" y="{top + 10}" fill="#c0392b">{_e(limit_label)} {limit:g}</text>')
    parts.append("</svg>")
    return "".join(parts)


# -- the page -------------------------------------------------------------------------------------

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;font-size:13px} .cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:10px 16px;min-width:110px}
.card b{display:block;font-size:24px} .card span{font-size:12px;color:#666}
.pass b{color:#1e8449} .fail b{color:#c0392b} .error b{color:#d68910}
.charts{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
table{border-collapse:collapse;font-size:13px;margin:6px 0} th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.num{text-align:right} td.thumb img{display:block;max-width:240px;height:auto;border:1px solid #ccc}
.path{color:#666;font-size:11px;word-break:break-all} .none{color:#666;font-style:italic}
ul.reasons{margin:0;padding-left:16px} code{font-size:12px}
"""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _href(rel: str) -> str:
    return quote(rel.replace(os.sep, "/"), safe="/")


def _spec_section(spec: Any) -> str:
    if spec is None:
        return '<p class="none">no spec recorded</p>'
    rows = [f"<tr><td>zones</td><td>marginal_width_mm</td><td>—</td><td class=num>{spec.marginal_width_mm:g}</td>"
            "<td>mm</td><td>—</td></tr>"]
    for lim in spec.limits:
        rows.append(f"<tr><td>{_e(lim.code)}</td><td>{_e(lim.field)}</td><td>{_e(lim.bound)}</td>"
                    f"<td class=num>{lim.value:g}</td><td>{_e(lim.unit)}</td><td>{_e(lim.zone or 'any')}</td></tr>")
    return (f"<p>Spec <b>{_e(spec.name)}</b>. A lens fails if any measured value breaks a limit; a missing limit "
            "is not checked.</p><table><tr><th>code</th><th>field</th><th>bound</th><th>value</th><th>unit</th>"
            f"<th>zone</th></tr>{''.join(rows)}</table>")


def _station_section(station: dict[str, Any] | None) -> str:
    if not station:
        return '<p class="none">no station: uncalibrated images, sizes in pixels unless --pixel-size was given</p>'
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v, 4))}</td></tr>" for k, v in station.items())
    return f"<table>{rows}</table>"


def render_report(data: ReportData, *, spec: Any = None, station: dict[str, Any] | None = None,
                  run: dict[str, Any] | None = None, title: str = "goggleqc inspection report") -> str:
    """The HTML text of the report.

    Parameters
    ----------
    data : ReportData
        From :func:`collect`.
    spec : goggleqc.spec.Spec, optional
        The limits used; drawn on the histograms and listed in full.
    station : dict, optional
        What to show about the station (folder, backlight, pixel size, calibration date, ...).
    run : dict, optional
        Throughput of the run that wrote the report: ``images``, ``wall_s``,
        ``images_per_s``, ``workers``, ``pool`` (threads, processes or dask), ``skipped``,
        ``interrupted``, ``out_dir``.
    """
    run = run or {}
    counts = data.counts
    n_pass, n_fail, n_error = counts.get("pass", 0), counts.get("fail", 0), counts.get("error", 0)
    inspected = n_pass + n_fail
    total = inspected + n_error
    yield_pct = 100.0 * n_pass / inspected if inspected else None
    rows = data.rows
    # haze in % (plate-corrected, or raw when the station has no plate fit); uncalibrated
    # images only have a relative contrast index, which is never mixed with %
    haze_values = [r.haze_pct for r in rows.values() if r.haze_pct is not None]
    n_raw = sum(1 for r in rows.values() if r.haze_pct is not None and r.haze_kind == "raw")
    index_values = [r.haze_index for r in rows.values() if r.haze_pct is None and r.haze_index is not None]
    trans_values = [r.transmittance_pct for r in rows.values() if r.transmittance_pct is not None]
    haze_lim = next((lim.value for lim in spec.limits if lim.field == "haze_pct"), None) if spec else None
    trans_lim = next((lim.value for lim in spec.limits if lim.field == "transmittance_pct"), None) if spec else None
    times = [r.time_ms for r in rows.values() if r.time_ms is not None]

    reason_items = sorted(data.reason_counts.items(),
                          key=lambda kv: (-kv[1], REASON_ORDER.index(kv[0]) if kv[0] in REASON_ORDER else 99))
    charts = [bar_chart_svg(reason_items, title="Failed lenses by reason"), pareto_svg(data.kind_counts),
              histogram_svg(haze_values, title="Haze" + (f" ({n_raw} without haze-plate correction)" if n_raw else ""),
                            unit="haze, %", limit=haze_lim, limit_label="max"),
              histogram_svg(trans_values, title="Transmittance", unit="luminous transmittance, %", limit=trans_lim,
                            limit_label="min")]
    if index_values:
        charts.append(histogram_svg(index_values, title="Haze contrast index (uncalibrated, relative)",
                                    unit="relative contrast index"))

    reasons_table = "".join(f"<tr><td>{_e(code)}</td><td class=num>{n}</td><td class=num>{100 * n / max(n_fail, 1):.1f}%</td></tr>"
                            for code, n in reason_items)
    throughput = [("images inspected in this run", run.get("images")),
                  ("skipped (already done, --resume)", run.get("skipped")),
                  ("wall time", f"{run['wall_s']:.1f} s" if run.get("wall_s") is not None else None),
                  ("throughput", f"{run['images_per_s']:.2f} images/s" if run.get("images_per_s") else None),
                  ("workers", f"{run['workers']} {run['pool']}" if run.get("workers") and run.get("pool")
                   else run.get("workers")),
                  ("median time per image (one worker)", f"{sorted(times)[len(times) // 2]:.0f} ms" if times else None)]
    throughput_rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in throughput if v is not None)
    if run.get("interrupted"):
        throughput_rows += "<tr><th>status</th><td>interrupted: rerun with --resume to finish</td></tr>"

    failed = sorted(((p, r) for p, r in rows.items() if r.verdict == "fail"), key=lambda pr: pr[0])
    fail_rows = []
    for path, r in failed:
        if r.overlay:
            thumb = _href(os.path.join(os.path.dirname(r.overlay), "thumbs", os.path.splitext(os.path.basename(r.overlay))[0] + ".jpg"))
            cell = (f'<a href="{_href(r.overlay)}"><img src="{thumb}" alt="overlay of {_e(r.image)}" '
                    'loading="lazy" width="240"></a>')
        else:
            cell = '<span class="none">no overlay</span>'
        msgs = "".join(f"<li>{_e(m)}</li>" for m in r.messages)
        fail_rows.append(f'<tr class="failed" data-path="{_e(path)}" data-verdict="fail"><td class="thumb">{cell}</td>'
                         f'<td><b>{_e(r.image)}</b><div class="path">{_e(path)}</div></td>'
                         f'<td><ul class="reasons">{msgs}</ul></td></tr>')
    errors = sorted(((p, r) for p, r in rows.items() if r.verdict not in ("pass", "fail")), key=lambda pr: pr[0])
    error_rows = "".join(f'<tr class="errored" data-path="{_e(p)}" data-verdict="error"><td><b>{_e(r.image)}</b>'
                         f'<div class="path">{_e(p)}</div></td><td>{_e("; ".join(r.messages))}</td></tr>'
                         for p, r in errors)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out_dir = run.get("out_dir")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{CSS}</style></head>
<body>
<h1>{_e(title)}</h1>
<div class="sub">generated {now}{f" · results in <code>{_e(out_dir)}</code>" if out_dir else ""} · spec <code>{_e(spec.name if spec else "—")}</code></div>
<section id="summary">
<h2>Summary</h2>
<div class="cards">
<div class="card" id="yield"><b>{_fmt(yield_pct, 4) + " %" if yield_pct is not None else "—"}</b><span>yield (pass ÷ inspected)</span></div>
<div class="card"><b id="n-images">{total}</b><span>images</span></div>
<div class="card pass"><b id="n-pass">{n_pass}</b><span>pass</span></div>
<div class="card fail"><b id="n-fail">{n_fail}</b><span>fail</span></div>
<div class="card error"><b id="n-error">{n_error}</b><span>could not be inspected</span></div>
</div>
<div class="charts">{"".join(charts)}</div>
<h3>Counts by reason</h3>
{f"<table><tr><th>reason</th><th>failed lenses</th><th>share of fails</th></tr>{reasons_table}</table>" if reasons_table else '<p class="none">no failures</p>'}
<h3>Throughput</h3>
<table>{throughput_rows or '<tr><td class="none">no run information</td></tr>'}</table>
</section>
<section id="failed">
<h2>Failed lenses ({n_fail})</h2>
<p class="sub">Overlays: lens edge cyan, central-zone edge yellow, scratches red, spots magenta, coating defects orange, marks (watermarks; dust on the target of an uncalibrated photograph; reported, never failing) white. Click a thumbnail for the full-size overlay.</p>
{f"<table><tr><th>overlay</th><th>image</th><th>reasons</th></tr>{''.join(fail_rows)}</table>" if fail_rows else '<p class="none">no failed lenses</p>'}
</section>
<section id="errors">
<h2>Could not be inspected ({n_error})</h2>
{f"<table><tr><th>image</th><th>message</th></tr>{error_rows}</table>" if error_rows else '<p class="none">none</p>'}
</section>
<section id="spec"><h2>Spec</h2>{_spec_section(spec)}</section>
<section id="station"><h2>Station</h2>{_station_section(station)}</section>
<p class="sub">goggleqc measures and applies limits; a notified body certifies.</p>
</body></html>
"""


def write_report(path: str | Path, records: Iterable[dict[str, Any]], **kwargs: Any) -> ReportData:
    """Aggregate ``records`` and write the page to ``path`` (atomically: a reader never sees half a page)."""
    path = Path(path)
    data = collect(records)
    text = render_report(data, **kwargs)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return data
