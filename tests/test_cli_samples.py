"""``goggleqc samples`` writes what it says and refuses impossible arguments."""

from __future__ import annotations

import json
import os

import pytest

from goggleqc.capture.imagefile import read_image


def test_samples_writes_station_lenses_spec_and_truth(cli, tmp_path):
    out = tmp_path / "set"
    res = cli("samples", out, "--count", "3", "--seed", "1", "--size", "320x256", "--pixel-size", "0.2",
              "--backlight", "pattern", "--bits", "16")
    assert res.exit_code == 0, res.output
    assert "wrote 3 lenses" in res.output
    lenses = sorted((out / "lenses").glob("*.png"))
    assert len(lenses) == 3
    image = read_image(lenses[0])
    assert image.shape == (256, 320) and image.dtype.name == "uint16"
    records = [json.loads(line) for line in (out / "truth.jsonl").read_text().splitlines()]
    assert [r["image"] for r in records] == [p.name for p in lenses]
    for r in records:
        assert r["verdict"] in ("pass", "fail")
        assert {"haze_pct", "transmittance_pct", "scratches", "coating", "spots", "reasons", "truth"} <= set(r)
    cal = out / "calibration"
    assert len(list(cal.glob("dark_*.png"))) >= 2 and len(list(cal.glob("flat_*.png"))) >= 2
    assert len(list(cal.glob("haze_*.png"))) == 5 and (cal / "scale_target.png").exists()
    truth = json.loads((cal / "station_truth.json").read_text())
    assert truth["backlight"] == "pattern" and truth["pixel_size_mm"] == 0.2
    assert (out / "spec.toml").read_text().startswith("#")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--count", "-1"], "--count must be 0 or more"),
        (["--size", "0x10"], "too small"),
        (["--size", "big"], "not WIDTHxHEIGHT"),
        (["--bits", "12"], "use 8 or 16"),
        (["--pixel-size", "-0.1"], "outside 0.005–1 mm"),
        (["--backlight", "laser"], "use uniform or pattern"),
        (["--spec", "nonexistent-preset"], "neither a file nor a preset"),
        (["--warp", "0.5"], "use 0 (a target square to the camera) to 0.3"),
        (["--backlight", "uniform", "--warp", "0.1"], "a uniform panel has nothing to bend"),
    ],
)
def test_samples_refuses_impossible_arguments(cli, tmp_path, args, message):
    res = cli("samples", tmp_path / "x", *args)
    assert res.exit_code == 2
    assert message in res.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; chmod does not stop it")
def test_samples_refuses_unwritable_folder(cli, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    res = cli("samples", locked / "set", "--count", "1")
    assert res.exit_code == 2 and "cannot write here" in res.output


def test_samples_refuses_a_file_as_folder(cli, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    res = cli("samples", blocker / "set", "--count", "1", "--size", "128x128")
    assert res.exit_code == 2 and "cannot write here" in res.output
