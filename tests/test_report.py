"""The HTML report, the CSV rows and the overlays, checked against simulator truth."""

from __future__ import annotations

import csv
import html
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from goggleqc.batch import decode_image, iter_image_paths, read_file, run_batch
from goggleqc.report.html import collect, histogram_svg, pareto_svg, write_report
from goggleqc.report.overlay import COLOURS, defect_label, display_bgr, draw_overlay
from goggleqc.report.records import error_record, result_from_record
from goggleqc.report.writers import CSV_COLUMNS, CsvWriter, JsonlWriter, read_records
from goggleqc.spec import load_spec
from test_batch import TruthInspector, load_truth, truth_set


@pytest.fixture(scope="module")
def batch_out(tmp_path_factory):
    """A batch over a truth set: records in results.jsonl/csv, overlays for fails, report.html."""
    folder = truth_set(count=40, seed=5)
    truth = load_truth(folder)
    out = tmp_path_factory.mktemp("report")
    jsonl, csvw = JsonlWriter(out / "results.jsonl"), CsvWriter(out / "results.csv")
    summary = run_batch(iter_image_paths([folder / "lenses"]), TruthInspector(truth), [jsonl, csvw], workers=2,
                        overlays="fail", out_dir=out)
    jsonl.close()
    csvw.close()
    data = write_report(out / "report.html", read_records(out / "results.jsonl"), spec=load_spec("en166-clear"),
                        station={"folder": "station/", "backlight": "uniform", "pixel_size_mm": 0.2},
                        run={"images": summary.n_done, "wall_s": summary.wall_s, "images_per_s": summary.images_per_s,
                             "workers": 2, "skipped": 0, "out_dir": str(out)})
    return folder, truth, out, data


def test_report_lists_every_truth_fail_and_matches_jsonl(batch_out):
    folder, truth, out, data = batch_out
    page = (out / "report.html").read_text(encoding="utf-8")
    records = list(read_records(out / "results.jsonl"))
    failed_rows = {html.unescape(p) for p in re.findall(r'<tr class="failed" data-path="([^"]+)" data-verdict="fail">', page)}
    truth_fails = {str((folder / "lenses" / n).resolve()) for n, r in truth.items() if r["verdict"] == "fail"}
    assert truth_fails and failed_rows == truth_fails
    assert failed_rows == {r["path"] for r in records if r["verdict"] == "fail"}
    counts = Counter(r["verdict"] for r in records)
    assert f'<b id="n-pass">{counts["pass"]}</b>' in page
    assert f'<b id="n-fail">{counts["fail"]}</b>' in page
    assert f'<b id="n-images">{len(truth)}</b>' in page
    assert f"{100 * counts['pass'] / len(truth):.4g} %" in page
    # every reason message and every thumbnail/overlay link of the failed lenses is on the page
    for r in records:
        if r["verdict"] == "fail":
            for reason in r["reasons"]:
                assert html.escape(reason["message"]) in page
            assert f'href="{r["overlay"]}"' in page
            thumb = "overlays/thumbs/" + Path(r["overlay"]).stem + ".jpg"
            assert f'src="{thumb}"' in page and (out / thumb).is_file()
    # counts by reason are the truth's
    reason_counts = Counter(c for r in truth.values() if r["verdict"] == "fail"
                            for c in dict.fromkeys(x["code"] for x in r["reasons"]))
    for code, n in reason_counts.items():
        assert f"<tr><td>{code}</td><td class=num>{n}</td>" in page
    assert data.reason_counts == reason_counts
    # self-contained: inline CSS and SVG, no scripts, no remote resources
    assert "<style>" in page and "<svg" in page and "<script" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "en166-clear" in page and "marginal_width_mm" in page and "station/" in page


def test_csv_has_one_flat_row_per_image(batch_out):
    folder, truth, out, _ = batch_out
    with open(out / "results.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(truth) and tuple(rows[0]) == CSV_COLUMNS
    for row in rows:
        t = truth[row["image"]]
        assert row["verdict"] == t["verdict"]
        assert int(row["n_scratches"]) == len(t["scratches"])
        if t["scratches"]:
            assert float(row["max_scratch_length_mm"]) == pytest.approx(max(s["length_mm"] for s in t["scratches"]))
        else:
            assert row["max_scratch_length_mm"] == ""
        assert float(row["haze_pct"]) == pytest.approx(t["haze_pct"])


def test_overlay_outlines_each_defect_in_its_colour(batch_out):
    folder, truth, out, _ = batch_out
    name, rec = next((n, r) for n, r in truth.items() if r["scratches"] and r["spots"])
    image = decode_image(read_file(folder / "lenses" / name)[0], name)
    canvas = draw_overlay(image, rec)
    assert canvas.shape == image.shape + (3,) and canvas.dtype == np.uint8

    def has_colour(region, colour):
        return bool(np.all(np.abs(region.astype(int) - colour) <= 40, axis=-1).any())

    for kind, items in (("scratch", rec["scratches"]), ("spot", rec["spots"])):
        for d in items:
            x0, y0, x1, y1 = d["bbox_px"]
            ring = canvas[max(y0 - 8, 0):y1 + 8, max(x0 - 8, 0):x1 + 8]
            assert has_colour(ring, COLOURS[kind]), (kind, d["bbox_px"])
    # zones drawn from the contours in extra
    x, y = rec["extra"]["lens_contours_px"][0][0]
    assert has_colour(canvas[max(y - 2, 0):y + 3, max(x - 2, 0):x + 3], COLOURS["lens"])
    # the input image is not modified
    assert np.array_equal(image, decode_image(read_file(folder / "lenses" / name)[0], name))


def test_overlay_of_16_bit_and_labels():
    image = np.full((120, 160), 4000, np.uint16)  # 12-bit data in a 16-bit file
    bgr = display_bgr(image)
    assert bgr.dtype == np.uint8 and 200 <= bgr[0, 0, 0] <= 245
    assert defect_label("scratch", {"length_mm": 4.21, "length_px": 42.1}) == "scratch 4.2mm"
    assert defect_label("scratch", {"length_mm": None, "length_px": 42.1}) == "scratch 42px"
    assert defect_label("coating", {"kind": "void", "area_mm2": 12.3}) == "void 12mm2"
    assert defect_label("spot", {"kind": "dig", "diameter_mm": 0.314}) == "dig 0.31mm"
    rec = {"verdict": "error", "reasons": [], "scratches": [{"bbox_px": [10, 10, 30, 12], "length_px": 20}]}
    assert draw_overlay(image, rec).shape == (120, 160, 3)


def test_report_last_record_per_path_wins_and_errors_listed(tmp_path):
    folder = truth_set()
    truth = load_truth(folder)
    name = next(n for n, r in truth.items() if r["verdict"] == "fail")
    from goggleqc.report.records import make_record

    first = error_record("/lot/<b>x ü.png", "/lot/<b>x ü.png: permission denied; check the file's read permission")
    second = make_record(result_from_record(truth[name]), path="/lot/<b>x ü.png", content_hash="blake2b:1")
    other = error_record("/lot/zero.png", "/lot/zero.png: the file is empty (0 bytes)")
    data = write_report(tmp_path / "report.html", [first, second, other], spec=load_spec("en166-clear"))
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert data.counts == Counter({"fail": 1, "error": 1})
    assert "&lt;b&gt;x ü.png" in page and "<b>x" not in page  # escaped
    assert "the file is empty (0 bytes)" in page and "permission denied" not in page
    assert '<b id="n-error">1</b>' in page and "no overlay" in page


def test_charts():
    svg = pareto_svg(Counter({"scratch": 6, "spot:dig": 3, "coating:run": 1}))
    assert svg.index("scratch") < svg.index("spot:dig") < svg.index("coating:run")
    pts = re.search(r'<polyline points="([^"]+)"', svg).group(1).split()
    ys = [float(p.split(",")[1]) for p in pts]
    assert ys == sorted(ys, reverse=True)  # the cumulative line only rises (SVG y grows downwards)
    assert "no defects found" in pareto_svg(Counter())
    hist = histogram_svg([0.5, 1.0, 1.2, 4.0], title="Haze", unit="%", limit=3.0, limit_label="max")
    assert "(n = 4)" in hist and "max 3" in hist
    assert sum(int(m) for m in re.findall(r": (\d+)</title>", hist)) == 4
    assert "no values" in histogram_svg([None], title="Haze", unit="%")
    assert collect([]).counts == Counter()


def test_haze_charts_keep_percent_and_relative_index_apart(tmp_path):
    from goggleqc.inspect.results import Result
    from goggleqc.report.records import make_record

    recs = [make_record(Result(image=f"{i}.png", verdict="pass", haze_pct=1.0 + i, haze_kind="raw"),
                        path=f"/c/{i}.png", content_hash=None) for i in range(3)]
    recs += [make_record(Result(image=f"u{i}.png", verdict="pass", haze_pct=None, haze_kind="contrast_index",
                                extra={"haze_contrast_index": 0.1 * i}), path=f"/u/{i}.png", content_hash=None)
             for i in range(4)]
    write_report(tmp_path / "r.html", recs, spec=load_spec("en166-clear"))
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Haze (3 without haze-plate correction) (n = 3)" in page
    assert "Haze contrast index (uncalibrated, relative) (n = 4)" in page
