"""Turn a pytest-benchmark ``--benchmark-json`` file into the markdown of docs/performance.md.

    python benchmarks/summarise.py bench.json > docs/performance.md
    python benchmarks/summarise.py bench.json --out docs/performance.md

Medians only (the machine is shared and noisy; every claim is a ratio against a baseline
measured in the same run, or a median). The page holds the machine, the exact command, a
table of the issue-9 targets, and one table per benchmark group.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import OrderedDict
from pathlib import Path

#: extra_info keys shown in the notes column, in this order, with their labels
NOTE_KEYS = (
    ("lenses_per_s", "lenses/s"),
    ("images_per_s", "images/s"),
    ("speedup", "speed-up vs 1 worker"),
    ("of_decode_only", "of decode-only rate"),
    ("speed_ratio", "× faster than baseline"),
    ("recall_scratch_1mm", "recall ≥1 mm"),
    ("false_scratches_per_clean_lens", "false/clean lens"),
    ("same_result", "same result"),
    ("raw_haze_pct_goggleqc", "raw haze % (goggleqc)"),
    ("raw_haze_pct_naive_max", "raw haze % (naive)"),
    ("blur_passes", "blur passes"),
    ("peak_rss_mb", "peak RSS MB"),
    ("rss_ratio", "RSS ratio to 200"),
    ("ms_per_mp", "ms/MP"),
    ("fit_slope_ms_per_mp", "fit ms/MP"),
    ("fit_intercept_ms", "fit intercept ms"),
    ("fit_r2", "fit R² (sizes interleaved)"),
    ("fit_consecutive_r2", "fit R² (sizes one after another)"),
    ("quadratic_share_at_max", "MP² share at 12 MP"),
    ("fit_same_scale_ms_per_mp", "one-grid fit ms/MP"),
    ("fit_same_scale_r2", "one-grid fit R²"),
    ("working_scales", "working grid scale"),
    ("analysis_s", "analysis s"),
    ("sequence_s", "of a sequence s"),
    ("realtime_factor", "× real time"),
    ("ms_per_frame", "ms/frame"),
    ("latency_ms", "latency ms"),
    ("error_verdicts", "error verdicts"),
)


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}"
    return str(value)


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def _param_id(bench: dict) -> str:
    name = bench["name"]
    return name[name.index("[") + 1:-1] if "[" in name else name


def machine_lines(doc: dict) -> list[str]:
    mi = doc.get("machine_info", {})
    cpu = mi.get("cpu_model") or mi.get("cpu", {}).get("brand_raw", "unknown CPU")
    cores = mi.get("cores") or mi.get("cpu", {}).get("count", "?")
    versions = ", ".join(f"{k} {v}" for k, v in mi.get("versions", {}).items())
    commit = doc.get("commit_info", {})
    lines = [
        f"- **Machine:** {cores} cores, {cpu} ({mi.get('system', '')} {mi.get('machine', '')}), "
        f"Python {mi.get('python_version', '?')}" + (f", {versions}" if versions else ""),
        f"- **OpenCV threads:** {mi.get('opencv_threads', 'not recorded')}",
        f"- **Load average at start (1, 5, 15 min):** {mi.get('load_average_at_start', 'not recorded')} "
        "(other work on the machine slows every number, and multi-core ones most)",
        f"- **Run:** {doc.get('datetime', '?')}, commit {commit.get('id', '?')[:10]}"
        + (" (with uncommitted changes)" if commit.get("dirty") else ""),
        f"- **Command:** `{doc.get('command', 'python -m pytest benchmarks/ --benchmark-only')}`",
    ]
    return lines


def targets_table(benches: list[dict]) -> list[str]:
    rows = []
    for b in benches:
        ei = b.get("extra_info", {})
        if "meets_target" not in ei:
            continue
        if "target_lenses_per_s" in ei:
            what, value, target = "lenses/s", ei.get("lenses_per_s"), f"≥ {ei['target_lenses_per_s']:g}"
        elif "target_speed_ratio" in ei:
            what = "× scikit-image, recall ours / baseline"
            value = f"{_fmt(ei['speed_ratio'])}×, {_fmt(ei['recall_goggleqc'])} / {_fmt(ei['recall_skimage'])}"
            target = f"≥ {ei['target_speed_ratio']:g}×, recall ≥ baseline"
        elif "target_latency_ms" in ei:
            what, value, target = "latency ms", ei.get("latency_ms"), f"≤ {ei['target_latency_ms']:g}"
        elif "target_realtime_factor" in ei:
            what = f"× real time ({_fmt(ei['sequence_s'])} s sequence in {_fmt(ei['analysis_s'])} s)"
            value, target = ei.get("realtime_factor"), f"> {ei['target_realtime_factor']:g}"
        elif "target_r2" in ei:
            what, value, target = "linear fit R², all sizes timed in turn", ei.get("fit_r2"), f"≥ {ei['target_r2']:g}"
            if "fit_same_scale_r2" in ei:
                ok = ei["fit_same_scale_r2"] >= ei["target_r2"]
                rows.append(f"| `{b['fullname'].split('::')[-1]}` | linear fit R², sizes on one working grid "
                            f"({', '.join(f'{v:g}' for v in ei['fit_same_scale_mp'])} MP) | "
                            f"{_fmt(ei['fit_same_scale_r2'])} | ≥ {ei['target_r2']:g} | {'**met**' if ok else '**missed**'} |")
        else:
            continue
        rows.append(f"| `{b['fullname'].split('::')[-1]}` | {what} | {_fmt(value)} | {target} | "
                    f"{'**met**' if ei['meets_target'] else '**missed**'} |")
    extra = []
    for b in benches:
        ei = b.get("extra_info", {})
        if "flat_within_10pct" in ei:
            extra.append(f"| `{b['fullname'].split('::')[-1]}` | peak RSS 2,000 ÷ 200 images | {_fmt(ei['rss_ratio'])} "
                         f"| ≤ 1.10 | {'**met**' if ei['flat_within_10pct'] else '**missed**'} |")
        if "of_decode_only" in ei and (ei.get("workers") == 1 or ei.get("pool") == ei.get("default_pool")):
            extra.append(f"| `{b['fullname'].split('::')[-1]}` | batch rate ÷ decode-only rate | "
                         f"{_fmt(ei['of_decode_only'])} | ≥ 0.85 (issue 6, default workers = {ei.get('default_workers', '?')}"
                         + (f", {ei['pool']}" if "pool" in ei else "") + ") "
                         f"| {'**met**' if ei['of_decode_only'] >= 0.85 else '**missed**'} |")
    rows += extra
    if not rows:
        return []
    return ["| benchmark | measure | median | target | |", "|---|---|---|---|---|", *rows]


def analyses_pivot(benches: list[dict]) -> list[str]:
    """Stages × sizes: median ms and, in brackets, the number of blur passes it equals."""
    cells: dict = OrderedDict()
    cols: list[str] = []
    for b in benches:
        ei = b.get("extra_info", {})
        col = f"{ei['size']} {ei['bits']}-bit"
        if col not in cols:
            cols.append(col)
        cells.setdefault(ei["stage"], {})[col] = f"{_ms(b['stats']['median'])} ({_fmt(ei.get('blur_passes', 0.0))})"
    refs = {}
    for b in benches:
        ei = b["extra_info"]
        refs[f"{ei['size']} {ei['bits']}-bit"] = (ei.get("gaussian_ms"), ei.get("memcpy_ms"))
    lines = ["| stage | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for stage, row in cells.items():
        lines.append(f"| {stage} | " + " | ".join(row.get(c, "") for c in cols) + " |")
    lines.append("| *one GaussianBlur / one memcpy* | "
                 + " | ".join(f"*{_fmt(refs[c][0])} / {_fmt(refs[c][1])}*" for c in cols) + " |")
    return lines


def group_table(benches: list[dict]) -> list[str]:
    lines = ["| case | median ms | rounds | notes |", "|---|---|---|---|"]
    for b in benches:
        ei = b.get("extra_info", {})
        notes = ", ".join(f"goggleqc {_fmt(ei[k])}× faster" if k == "speed_ratio" else f"{label} {_fmt(ei[k])}"
                          for k, label in NOTE_KEYS if k in ei)
        if not notes:  # a benchmark this script does not know: show its scalar extra_info as is
            notes = ", ".join(f"{k} {_fmt(v)}" for k, v in ei.items() if isinstance(v, (int, float, str)))
        stages = {k[6:-3]: v for k, v in ei.items() if k.startswith("stage_") and k.endswith("_ms") and k != "stage_total_ms"}
        if stages and "fit_r2" not in ei:
            notes += ("; " if notes else "") + "stages ms: " + ", ".join(f"{k} {_fmt(v)}" for k, v in stages.items())
        if "fit_r2" in ei:
            slopes = {k[6:-10]: v for k, v in ei.items() if k.startswith("stage_") and k.endswith("_ms_per_mp")}
            notes += "; stage ms/MP: " + ", ".join(f"{k} {_fmt(v)}" for k, v in slopes.items() if k != "total")
        lines.append(f"| {_param_id(b)} | {_ms(b['stats']['median'])} | {b['stats']['rounds']} | {notes} |")
    return lines


def summarise(doc: dict) -> str:
    benches = doc.get("benchmarks", [])
    groups: dict[str, list[dict]] = OrderedDict()
    for b in benches:
        groups.setdefault(b.get("group") or b["fullname"].split("::")[0], []).append(b)
    out = ["# Performance", "",
           "Generated by `benchmarks/summarise.py` from a pytest-benchmark JSON file; regenerate it whenever a "
           "hot path changes (see `benchmarks/README.md`). All times are medians. The machine is shared, so "
           "compare ratios against the baseline measured in the same run rather than absolute times across runs.",
           "", *machine_lines(doc), ""]
    t = targets_table(benches)
    if t:
        out += ["## Targets (issue 9, with issue 6's batch targets)", "", *t, ""]
    for name, items in groups.items():
        out += [f"## {name}", ""]
        out += analyses_pivot(items) if all("stage" in b.get("extra_info", {}) for b in items) else group_table(items)
        out.append("")
    if any(name.startswith("analyses") for name in groups):
        out += ["Analyses cells are `median ms (N GaussianBlur passes of the same frame)`; the last row gives "
                "one 7×7 float32 GaussianBlur and one memcpy of the frame in ms.", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", type=Path, help="a file written by --benchmark-json")
    ap.add_argument("--out", type=Path, help="write the markdown here instead of stdout")
    args = ap.parse_args(argv)
    try:
        doc = json.loads(args.json.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: {args.json}: cannot read a benchmark JSON file ({exc})", file=sys.stderr)
        return 2
    text = summarise(doc)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
