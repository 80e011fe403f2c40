"""report.html in a real browser: headless Chromium renders it, and the DOM shows the summary.

Installs Debian's chromium when it is missing (needs root and the network); skips with the
reason when it cannot. The screenshot is kept at .cache/report_screenshot.png to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from urllib.parse import unquote

import pytest

from goggleqc.batch import iter_image_paths, run_batch
from goggleqc.report.html import write_report
from goggleqc.report.writers import JsonlWriter, read_records
from goggleqc.spec import load_spec
from test_batch import CACHE, TruthInspector, load_truth, truth_set

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be installed here (needs root and apt-get)")
    try:
        subprocess.run(["apt-get", "update"], check=True, capture_output=True, timeout=300)
        subprocess.run(["apt-get", "install", "-y", "chromium"], check=True, capture_output=True, timeout=600,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"chromium could not be installed with apt-get ({exc})")
    path = shutil.which("chromium")
    if not path:
        pytest.skip("apt-get ran but no chromium binary appeared")
    return path


def test_report_renders_in_headless_chromium(tmp_path):
    browser = _chromium()
    folder = truth_set()
    truth = load_truth(folder)
    out = tmp_path / "out ü"  # a non-ASCII, spaced folder in the file:// URL
    out.mkdir()
    jsonl = JsonlWriter(out / "results.jsonl")
    summary = run_batch(iter_image_paths([folder / "lenses"]), TruthInspector(truth), [jsonl], workers=2,
                        overlays="fail", out_dir=out)
    jsonl.close()
    write_report(out / "report.html", read_records(out / "results.jsonl"), spec=load_spec("en166-clear"),
                 station={"folder": "station/", "backlight": "uniform"},
                 run={"images": summary.n_done, "wall_s": summary.wall_s, "images_per_s": summary.images_per_s,
                      "workers": 2})
    url = (out / "report.html").as_uri()
    profile = tmp_path / "profile"
    png = tmp_path / "report.png"
    shot = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
                           "--window-size=1280,2000", url], capture_output=True, text=True, timeout=120)
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a rendered page, not a blank one
    import cv2
    import numpy as np

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape[:2] == (2000, 1280)
    assert image.std() > 20  # text, charts and thumbnails, not an empty or error page
    CACHE.mkdir(exist_ok=True)
    shutil.copy(png, CACHE / "report_screenshot.png")

    dom = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    n_fail = sum(r["verdict"] == "fail" for r in truth.values())
    assert "goggleqc inspection report" in text and 'id="summary"' in text
    assert f'<b id="n-fail">{n_fail}</b>' in text
    assert f'<b id="n-images">{len(truth)}</b>' in text
    assert "Pareto of defect kinds" in text and "Haze (n = " in text
    assert len(re.findall(r'<tr class="failed"', text)) == n_fail
    # every thumbnail the page links loads from beside it
    for src in set(re.findall(r'<img src="([^"]+)"', text)):
        assert (out / unquote(src)).is_file(), src
