"""Accuracy of goggleqc against simulator truth, as the README's table.

    python benchmarks/accuracy_report.py --size 2448x2048 --pixel-size 0.04 --count 40

The held-out check (seeds no test or tuning ever used; run it, do not tune on it):

    python benchmarks/accuracy_report.py --size 640x512 --pixel-size 0.08 --count 240 --stations 8 --seed 70001

Writes sample sets (with goggleqc's own calibration) under .cache/sets/, inspects them
end to end and prints a markdown table: one column per backlight, the issue 4 measures in
rows. The same code (tests/simsets.py, goggleqc.synth.scoring) backs tests/test_accuracy.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from simsets import inspected, sample_set  # noqa: E402

from goggleqc.spec import load_spec  # noqa: E402
from goggleqc.synth.scoring import evaluate, match_objects  # noqa: E402

ROWS = [
    ("haze MAE, with plates (pp)", "haze_mae_pp", None),
    ("haze MAE, without plates (pp)", "haze_mae_pp", "raw"),
    ("transmittance MAE (pp)", "transmittance_mae_pp", None),
    ("scratch recall, ≥ 1 mm, ≥ 5 %", "recall_scratch_1mm", None),
    ("scratch recall, 0.5–1 mm", "recall_scratch_05_1mm", None),
    ("median scratch length error", "median_length_error", None),
    ("spot recall, ≥ 0.2 mm, ≥ 30 %", "recall_spot", None),
    ("coating recall, ≥ 4 mm², ≥ 1.5 %", "recall_coating", None),
    ("false scratches per defect-free lens", "false_scratches_per_clean_lens", None),
    ("scratch reports matching no true scratch, per lens", "unmatched_scratches_per_lens", None),
    ("false spots per defect-free lens", "false_spots_per_clean_lens", None),
    ("false coating defects per defect-free lens", "false_coating_per_clean_lens", None),
    ("false accepts (outside the guard band)", "false_accept_rate", None),
    ("false rejects (outside the guard band)", "false_reject_rate", None),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="480x384")
    ap.add_argument("--pixel-size", type=float, default=0.1)
    ap.add_argument("--count", type=int, default=150)
    ap.add_argument("--seed", type=int, default=101)
    ap.add_argument("--stations", type=int, default=1,
                    help="simulated stations per backlight (seeds seed + 1000·k), lenses split among them")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    cols = {}
    per = max(1, args.count // args.stations)
    for i, backlight in enumerate(("uniform", "pattern")):
        pairs, raw = [], []
        for k in range(args.stations):
            folder = sample_set(per, args.seed + 101 * i + 1000 * k, backlight, size=(w, h), pixel_size_mm=args.pixel_size)
            spec = load_spec(folder / "spec.toml")
            pairs += inspected(folder)
            raw += inspected(folder, plates=False)
        m = evaluate(pairs, spec)
        # every scratch report that matches no true scratch, on any lens (a defect-free lens's
        # are the row above; on a flawed lens they are the texture of a coating flaw, a bubble's
        # rim, a piece of a true scratch): what an engineer reading the reasons is misled by
        unmatched = sum(len(r["scratches"]) - len(match_objects(t["scratches"], r["scratches"])) for t, r in pairs
                        if r.get("verdict") != "error")
        m["unmatched_scratches_per_lens"] = unmatched / max(1, len(pairs))
        cols[backlight] = (m, evaluate(raw, spec))
    where = f"{args.stations} stations, " if args.stations > 1 else ""
    print(f"| {w}×{h}, {args.pixel_size} mm/px, {where}{per * args.stations} lenses each | uniform (traps) | pattern |")
    print("|---|---|---|")
    for label, key, variant in ROWS:
        cells = []
        for m, raw in cols.values():
            v = (raw if variant == "raw" else m)[key]
            cells.append("–" if v is None else f"{v:.3f}" if "mae" in key or "per_" in key or "error" in key else f"{100 * v:.1f} %")
        print(f"| {label} | {' | '.join(cells)} |")
    counts = [f"{m['n_scratch_1mm']} scratches, {m['n_spot']} spots, {m['n_coating']} coating defects, "
              f"{m['defect_free_lenses']} defect-free" for m, _ in cols.values()]
    print(f"\nscored objects: uniform {counts[0]}; pattern {counts[1]}")


if __name__ == "__main__":
    main()
