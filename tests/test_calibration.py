"""Station calibration (goggleqc.calibration, ``goggleqc calibrate``), checked against simulator truth."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from goggleqc.calibration.backlight import classify_backlight, find_pattern, find_traps
from goggleqc.calibration.build import build_station, parse_haze_standard
from goggleqc.calibration.scale import measure_pixel_size
from goggleqc.calibration.station import STATION_TOML, Station
from goggleqc.capture.imagefile import write_image
from goggleqc.errors import CalibrationError, InputError
from goggleqc.synth.render import render_plate, render_scale_target
from goggleqc.synth.sampleset import station_truth
from goggleqc.synth.scenes import random_station
from goggleqc.synth.station import Dust, SimStation
from simsets import cache_dir

CACHE = cache_dir("calibration")


def _sim(seed: int, kind: str, bits: int = 8, size=(480, 384), ps: float = 0.15, **backlight) -> SimStation:
    params = random_station(np.random.default_rng([seed, 77]), width=size[0], height=size[1], pixel_size_mm=ps,
                            backlight=kind, bits=bits, seed=seed)
    if backlight:
        params = dataclasses.replace(params, backlight=dataclasses.replace(params.backlight, **backlight))
    return SimStation(params)


def _averaged_flat(sim: SimStation, n: int = 4) -> np.ndarray:
    rng = np.random.default_rng([sim.params.seed, 5])
    darks = np.mean([sim.dark_frame(rng) for _ in range(n)], axis=0)
    flats = np.mean([sim.flat_frame(rng, float(rng.uniform(0.99, 1.01))) for _ in range(n)], axis=0)
    return (flats - darks).astype(np.float32)


def _write_calibration(folder: Path, sim: SimStation, *, plates=(0.5, 1.0, 2.0, 4.0, 8.0)) -> dict:
    """Dark, flat, plate and chessboard files of a simulated station (cached)."""
    marker = folder / "done.json"
    if marker.exists():
        return json.loads(marker.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([sim.params.seed, 9])
    for i in range(4):
        write_image(folder / f"dark_{i}.png", sim.dark_frame(rng))
        write_image(folder / f"flat_{i}.png", sim.flat_frame(rng, float(rng.uniform(0.99, 1.01))))
    for pct in plates:
        write_image(folder / f"plate_{pct:g}.png", render_plate(sim, pct, rng, gain=float(rng.uniform(0.98, 1.02))))
    target, ttruth = render_scale_target(sim, rng)
    write_image(folder / "target.png", target)
    info = {"square_mm": ttruth["square_mm"], "truth": station_truth(sim.params), "plates": list(plates)}
    marker.write_text(json.dumps(info))
    return info


def _files(folder: Path, kind: str) -> list[Path]:
    return sorted(folder.glob(f"{kind}_*.png"))


# -- traps -----------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_traps_found_within_one_pixel_with_vignetting_and_dust(bits, seed):
    base = _sim(seed, "uniform", bits)
    bl = base.params.backlight
    # strong vignetting and diffuser dust right beside every trap, as well as the random dust
    dust = bl.dust + tuple(Dust(t.x_mm + 0.8 * t.diameter_mm, t.y_mm + 0.3 * t.diameter_mm, 0.6, 0.4) for t in bl.traps)
    sim = _sim(seed, "uniform", bits, vignetting=0.3, dust=dust)
    found = find_traps(_averaged_flat(sim), sim.params.pixel_size_mm)
    truth = station_truth(sim.params)["traps_px"]
    assert len(found) == len(truth)
    for t in truth:
        nearest = min(found, key=lambda f: np.hypot(f.x_px - t["x"], f.y_px - t["y"]))
        assert np.hypot(nearest.x_px - t["x"], nearest.y_px - t["y"]) < 1.0
        assert abs(nearest.r_px - t["r"]) < 1.0


def test_uniform_panel_is_not_taken_for_a_pattern():
    for seed in range(4):
        sim = _sim(seed, "uniform")
        kind, traps, pattern, _, _ = classify_backlight(_averaged_flat(sim), sim.params.pixel_size_mm)
        assert kind == "uniform" and pattern is None and len(traps) == len(sim.params.backlight.traps)


def test_one_trap_under_strong_vignetting_is_not_taken_for_a_grid():
    """A 4.5 mm trap on a panel vignetted by a quarter, 48 mm across: the phase drift that
    refines a pattern's frequency wandered from its spectral peak to a 21 mm "grid" (the
    sample set of seed 91000). A true period refines within a bin of its peak."""
    from goggleqc.synth.scenes import random_station
    from goggleqc.synth.station import SimStation

    params = random_station(np.random.default_rng([91000, 0]), width=480, height=384, pixel_size_mm=0.1,
                            backlight="uniform", bits=8, seed=91000)
    sim = SimStation(params)
    rng = np.random.default_rng([91000, 2])
    flat = np.mean([sim.flat_frame(rng).astype(np.float32) for _ in range(4)], 0) - sim.dark_map
    kind, traps, pattern, _, _ = classify_backlight(flat, 0.1)
    assert (kind, len(traps), pattern) == ("uniform", 1, None)


def test_flat_without_traps_has_none():
    sim = _sim(0, "uniform", traps=())
    assert find_traps(_averaged_flat(sim), sim.params.pixel_size_mm) == ()


# -- pattern ---------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern", ["checker", "grid", "stripes"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pattern_period_and_orientation(pattern, seed):
    sim = _sim(seed, "pattern", bits=16 if seed % 2 else 8, pattern=pattern)
    found, cmap, cell = find_pattern(_averaged_flat(sim), sim.params.pixel_size_mm)
    truth = station_truth(sim.params)["pattern"]
    assert found is not None and found.kind == pattern
    assert found.period_px == pytest.approx(truth["period_px"], rel=0.01)
    mod = 180.0 if pattern == "stripes" else 90.0
    d = (found.angle_deg - truth["angle_deg"] + mod / 2) % mod - mod / 2
    assert abs(d) < 0.5
    assert cmap is not None and cmap.size > 0 and 0 < found.contrast < 1.5 and cell > 0


def test_a_thin_line_grid_is_found():
    """A grid of thin lines (15 % of the period) spreads its power over both axes and their
    harmonics: no single peak holds much of it, yet it is a pattern."""
    from goggleqc.synth import SimStation, random_station

    params = random_station(np.random.default_rng([38001, 0]), width=640, height=512, pixel_size_mm=0.08,
                            backlight="pattern", bits=8, seed=38001)
    bl = params.backlight
    assert bl.pattern == "grid" and bl.line_frac < 0.2  # the case this test is about
    sim = SimStation(params)
    found, _, _ = find_pattern(_averaged_flat(sim), 0.08)
    assert found is not None and found.kind == "grid"
    assert found.period_px == pytest.approx(bl.period_mm / 0.08, rel=0.01)


def test_pattern_contrast_falls_with_defocus():
    sharp = _sim(4, "pattern", pattern="grid", defocus_mm=0.0)
    soft = _sim(4, "pattern", pattern="grid", defocus_mm=0.25 * sharp.params.backlight.period_mm)
    c_sharp = find_pattern(_averaged_flat(sharp), 0.15)[0].contrast
    c_soft = find_pattern(_averaged_flat(soft), 0.15)[0].contrast
    assert c_soft < 0.7 * c_sharp


# -- pixel scale -----------------------------------------------------------------------------

@pytest.mark.parametrize("seed,ps,bits", [(0, 0.2, 8), (1, 0.15, 16), (2, 0.1, 8), (3, 0.12, 16)])
def test_pixel_scale_from_chessboard(seed, ps, bits):
    sim = _sim(seed, "pattern" if seed % 2 else "uniform", bits, ps=ps)
    target, truth = render_scale_target(sim, np.random.default_rng(seed), angle_deg=2.0 + seed)
    fit = measure_pixel_size(target.astype(np.float32) - sim.dark_map, truth["square_mm"])
    assert fit.pixel_size_mm == pytest.approx(ps, rel=0.005)
    assert fit.residual_px < 0.5 and fit.corners == 54


def test_chessboard_missing_is_a_clear_error():
    sim = _sim(0, "uniform")
    with pytest.raises(CalibrationError, match="no 9×6 inner-corner chessboard found"):
        measure_pixel_size(_averaged_flat(sim), 5.0, name="flat.png")


# -- the station folder ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def uniform_files():
    folder = CACHE / "uniform_s3_b16"
    info = _write_calibration(folder, _sim(3, "uniform", bits=16))
    return folder, info


@pytest.fixture(scope="module")
def pattern_files():
    folder = CACHE / "pattern_s4_b8"
    info = _write_calibration(folder, _sim(4, "pattern", bits=8, pattern="checker"))
    return folder, info


def test_a_weak_pattern_is_warned_about(tmp_path):
    """A 1.27 mm checker under 0.32 mm of defocus keeps 3 % of contrast: it calibrates, but
    haze read from its loss is several times less precise (0.75 pp MAE on a stress set), so
    the station says so; a clear pattern gets no warning."""
    weak = _sim(5, "pattern", ps=0.1, pattern="checker", period_mm=1.27, defocus_mm=0.32, modulation=0.67)
    clear = _sim(5, "pattern", ps=0.1, pattern="checker", period_mm=3.0, defocus_mm=0.1, modulation=0.67)
    for sim, name in ((weak, "weak"), (clear, "clear")):
        rng = np.random.default_rng(3)
        for i in range(2):
            write_image(tmp_path / f"{name}_dark_{i}.png", sim.dark_frame(rng))
            write_image(tmp_path / f"{name}_flat_{i}.png", sim.flat_frame(rng))
    st = build_station(sorted(tmp_path.glob("weak_dark_*.png")), sorted(tmp_path.glob("weak_flat_*.png")), pixel_size_mm=0.1)
    assert st.backlight == "pattern" and st.pattern.contrast < 0.08
    assert "imprecise" in st.meta.get("warning", "")
    st = build_station(sorted(tmp_path.glob("clear_dark_*.png")), sorted(tmp_path.glob("clear_flat_*.png")), pixel_size_mm=0.1)
    assert st.pattern.contrast > 0.1 and "warning" not in st.meta


def test_an_8_bit_camera_without_dither_is_warned_that_trap_haze_is_quantised(tmp_path):
    """A light trap is dark: its fill is a DN or two over the dark offset. An 8-bit camera
    with a tenth of a DN of read noise and a uniform sensor rounds it the same way in every
    frame, so trap haze is biased by up to half a DN (0.66 % haze per DN here). Calibration
    says so, and how much; the bound holds on lenses; a camera whose noise and fixed pattern
    spread the rounding gets no warning."""
    from goggleqc.inspect.pipeline import inspect_lens
    from goggleqc.spec import load_spec
    from goggleqc.synth import random_lens, render_lens

    spec = load_spec("en166-clear")
    stations = {}
    for name, camera in (("quantised", dict(read_noise_e=3.0, dsnu_frac=0.0)), ("dithered", {})):
        sim = _sim(11, "uniform", ps=0.15)
        sim = SimStation(dataclasses.replace(sim.params, camera=dataclasses.replace(sim.params.camera, **camera)))
        rng = np.random.default_rng(3)
        for i in range(4):
            write_image(tmp_path / f"{name}_dark_{i}.png", sim.dark_frame(rng))
            write_image(tmp_path / f"{name}_flat_{i}.png", sim.flat_frame(rng))
        plates = []
        for pct in (0.5, 1.0, 2.0, 4.0, 8.0):
            write_image(tmp_path / f"{name}_plate_{pct:g}.png", render_plate(sim, pct, rng))
            plates.append((tmp_path / f"{name}_plate_{pct:g}.png", pct))
        st = build_station(sorted(tmp_path.glob(f"{name}_dark_*.png")), sorted(tmp_path.glob(f"{name}_flat_*.png")),
                           pixel_size_mm=0.15, haze_standards=plates)
        stations[name] = (sim, st, st.meta["trap_quantisation"])
    sim, st, quant = stations["quantised"]
    assert quant["error_pp"] >= 0.3 and "8-bit steps" in st.meta["warning"]
    rng = np.random.default_rng(5)
    for h in (0.0, 0.2, 0.5, 1.0):
        image, truth = render_lens(sim, random_lens(rng, sim, defects=0, haze=h / 100), rng)
        assert abs(inspect_lens(image, st, spec).haze_pct - truth["haze_pct"]) <= quant["error_pp"]
    _, st, quant = stations["dithered"]
    assert quant["error_pp"] < 0.1 and "8-bit steps" not in st.meta.get("warning", "")


def test_build_save_load_round_trip(uniform_files, tmp_path):
    folder, info = uniform_files
    plates = [(folder / f"plate_{p:g}.png", p) for p in info["plates"]]
    st = build_station(_files(folder, "dark"), _files(folder, "flat"), scale_target=folder / "target.png",
                       square_mm=info["square_mm"], haze_standards=plates, out_dir=tmp_path / "st")
    assert st.pixel_size_mm == pytest.approx(0.15, rel=0.005)
    assert st.backlight == "uniform" and len(st.traps) == len(info["truth"]["traps_px"])
    assert st.meta["frames"]["flat"]["noise_gain"] == pytest.approx(2.0)
    assert st.meta["scale"]["residual_px"] < 0.5
    st.save(tmp_path / "st")
    loaded = Station.load(tmp_path / "st")
    assert loaded.version == 1 and loaded.bits == 16 and loaded.backlight == "uniform"
    np.testing.assert_array_equal(loaded.flat, st.flat)
    np.testing.assert_array_equal(loaded.dark, st.dark)
    assert loaded.traps == st.traps and loaded.haze_fit.slope == pytest.approx(st.haze_fit.slope)
    assert loaded.noise_model == pytest.approx(st.noise_model)
    np.testing.assert_allclose(loaded.scatter, st.scatter, rtol=1e-6)
    assert [p["file"] for p in loaded.haze_fit.plates][0].startswith("..")  # recorded relative to the station
    assert sorted(p.name for p in (tmp_path).iterdir()) == ["st"]  # no temporary folder left behind


def test_pattern_station_records_pattern_and_contrast_map(pattern_files, tmp_path):
    folder, info = pattern_files
    st = build_station(_files(folder, "dark"), _files(folder, "flat"), pixel_size_mm=0.15)
    assert st.backlight == "pattern" and st.pattern.kind == "checker"
    assert st.pattern.period_px == pytest.approx(info["truth"]["pattern"]["period_px"], rel=0.01)
    st.save(tmp_path / "p")
    loaded = Station.load(tmp_path / "p")
    assert loaded.pattern == st.pattern
    np.testing.assert_array_equal(loaded.pattern_contrast, st.pattern_contrast)


def test_noise_model_matches_the_camera(uniform_files):
    folder, info = uniform_files
    st = build_station(_files(folder, "dark"), _files(folder, "flat"), pixel_size_mm=0.15)
    cam = info["truth"]["params"]["camera"]
    true_gain = ((1 << cam["data_bits"]) - 1) / cam["full_well_e"]  # DN per electron: var = signal·gain
    assert st.noise_model[0] == pytest.approx(true_gain, rel=0.1)


def test_failed_save_leaves_nothing_behind(uniform_files, tmp_path, monkeypatch):
    folder, _ = uniform_files
    st = build_station(_files(folder, "dark"), _files(folder, "flat"), pixel_size_mm=0.15)
    calls = {"n": 0}
    real_save = np.save

    def failing_save(path, arr, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real_save(path, arr, *a, **k)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(CalibrationError, match="cannot write the station"):
        st.save(tmp_path / "st")
    assert list(tmp_path.iterdir()) == []


def test_load_refuses_other_version_and_missing_files(uniform_files, tmp_path):
    folder, _ = uniform_files
    st = build_station(_files(folder, "dark"), _files(folder, "flat"), pixel_size_mm=0.15)
    st.save(tmp_path / "st")
    toml = tmp_path / "st" / STATION_TOML
    toml.write_text(toml.read_text().replace("version = 1", "version = 99"))
    with pytest.raises(CalibrationError, match="station version 99, but this goggleqc reads version 1; recalibrate"):
        Station.load(tmp_path / "st")
    toml.write_text(toml.read_text().replace("version = 99", "version = 1"))
    (tmp_path / "st" / "flat.npy").unlink()
    with pytest.raises(CalibrationError, match=r"flat\.npy: missing from the station folder"):
        Station.load(tmp_path / "st")
    with pytest.raises(CalibrationError, match="no such station folder"):
        Station.load(tmp_path / "nowhere")


def test_lens_image_of_another_size_or_depth_names_both(uniform_files):
    folder, _ = uniform_files
    st = build_station(_files(folder, "dark"), _files(folder, "flat"), pixel_size_mm=0.15)
    with pytest.raises(InputError, match="lens.png is 320×256 but the station was calibrated at 480×384"):
        st.check_image(np.zeros((256, 320), np.uint16), "lens.png")
    with pytest.raises(InputError, match="lens.png is 8-bit but the station was calibrated with 16-bit"):
        st.check_image(np.zeros((384, 480), np.uint8), "lens.png")


# -- bad inputs, through the command line ----------------------------------------------------

def _cal_args(folder: Path, out: Path, *extra) -> list:
    args = ["calibrate"]
    for p in _files(folder, "dark"):
        args += ["--dark", p]
    for p in _files(folder, "flat"):
        args += ["--flat", p]
    return args + ["--pixel-size", "0.15", "--out", out, *extra]


def test_cli_calibrate_show_and_png(cli, uniform_files, tmp_path):
    folder, info = uniform_files
    out = tmp_path / "station"
    res = cli("calibrate", "--dark", str(folder / "dark_*.png"), "--flat", str(folder / "flat_*.png"),
              "--scale-target", folder / "target.png", "--square-mm", info["square_mm"],
              "--haze-standard", f"{folder / 'plate_0.5.png'}=0.5", "--haze-standard", f"{folder / 'plate_2.png'}=2",
              "--haze-standard", f"{folder / 'plate_8.png'}=8", "--out", out)
    assert res.exit_code == 0, res.output
    assert (out / STATION_TOML).exists() and "station written" in res.output
    res = cli("calibrate", "--show", out, "--png", tmp_path / "overview.png")
    assert res.exit_code == 0, res.output
    assert "trap 0" in res.output and "haze fit" in res.output and "chessboard" in res.output
    from goggleqc.capture.imagefile import read_image
    assert read_image(tmp_path / "overview.png").shape == (384, 480)


def test_cli_calibrate_from_folders(cli, uniform_files, tmp_path):
    """--dark DIR takes the folder's image files (a camera's capture tool writes one folder
    per kind); a folder without images is a clear error."""
    import shutil

    folder, _ = uniform_files
    for kind in ("dark", "flat"):
        (tmp_path / kind).mkdir()
        for p in _files(folder, kind):
            shutil.copy(p, tmp_path / kind)
    (tmp_path / "dark" / "notes.txt").write_text("taken with the lens cap on")  # not an image: ignored
    res = cli("calibrate", "--dark", tmp_path / "dark", "--flat", tmp_path / "flat", "--pixel-size", "0.15",
              "--out", tmp_path / "st")
    assert res.exit_code == 0, res.output
    meta = (tmp_path / "st" / STATION_TOML).read_text()
    assert all(Path(p).name in meta for p in _files(folder, "flat"))  # every frame was used
    (tmp_path / "none").mkdir()
    res = cli("calibrate", "--dark", tmp_path / "none", "--flat", tmp_path / "flat", "--pixel-size", "0.15",
              "--out", tmp_path / "st2")
    assert res.exit_code == 2 and "a folder with no image files" in res.output


def test_existing_station_refused_unless_force(cli, uniform_files, tmp_path):
    folder, _ = uniform_files
    out = tmp_path / "st"
    assert cli(*_cal_args(folder, out)).exit_code == 0
    res = cli(*_cal_args(folder, out))
    assert res.exit_code == 2
    assert f"{out} already holds a station; use --force to replace it" in res.output
    res = cli(*_cal_args(folder, out, "--force"))
    assert res.exit_code == 0, res.output


def test_mismatched_sizes_name_both_files(cli, uniform_files, tmp_path):
    folder, _ = uniform_files
    small = tmp_path / "small_dark.png"
    write_image(small, np.zeros((256, 320), np.uint16))
    res = cli("calibrate", "--dark", small, "--dark", _files(folder, "dark")[0], "--flat", _files(folder, "flat")[0],
              "--pixel-size", "0.15", "--out", tmp_path / "st")
    assert res.exit_code == 2
    assert "is 480×384 but" in res.output and "small_dark.png is 320×256" in res.output
    assert "one camera at one size" in res.output
    assert not (tmp_path / "st").exists()


def test_mixed_bit_depth_is_refused(cli, uniform_files, tmp_path):
    folder, _ = uniform_files
    d8 = tmp_path / "dark8.png"
    write_image(d8, np.zeros((384, 480), np.uint8))
    res = cli("calibrate", "--dark", d8, "--flat", _files(folder, "flat")[0], "--pixel-size", "0.15",
              "--out", tmp_path / "st")
    assert res.exit_code == 2 and "is 16-bit but" in res.output and "dark8.png is 8-bit" in res.output


def test_swapped_dark_and_flat(cli, uniform_files, tmp_path):
    folder, _ = uniform_files
    res = cli("calibrate", "--dark", _files(folder, "flat")[0], "--flat", _files(folder, "dark")[0],
              "--pixel-size", "0.15", "--out", tmp_path / "st")
    assert res.exit_code == 2
    assert "darker than the dark frames" in res.output and "did you swap --dark and --flat?" in res.output


def test_saturated_flat_judged_at_the_frames_own_ceiling(cli, tmp_path):
    # 12-bit data in 16-bit files: saturation is a pile-up at 4095, far below 65535
    params = random_station(np.random.default_rng(8), width=320, height=256, pixel_size_mm=0.2, backlight="uniform",
                            bits=16)
    params = dataclasses.replace(params, camera=dataclasses.replace(params.camera, data_bits=12))
    sim = SimStation(params)
    rng = np.random.default_rng(0)
    write_image(tmp_path / "dark.png", sim.dark_frame(rng))
    write_image(tmp_path / "ok.png", sim.flat_frame(rng))
    write_image(tmp_path / "hot.png", sim.flat_frame(rng, gain=1.6))
    assert sim.flat_frame(rng, gain=1.6).max() == 4095
    res = cli("calibrate", "--dark", tmp_path / "dark.png", "--flat", tmp_path / "ok.png", "--pixel-size", "0.2",
              "--out", tmp_path / "good")
    assert res.exit_code == 0, res.output
    res = cli("calibrate", "--dark", tmp_path / "dark.png", "--flat", tmp_path / "hot.png", "--pixel-size", "0.2",
              "--out", tmp_path / "bad")
    assert res.exit_code == 2
    assert "hot.png is saturated" in res.output and "maximum code 4095" in res.output
    assert "lower the exposure" in res.output


def test_unreadable_file(cli, uniform_files, tmp_path):
    folder, _ = uniform_files
    junk = tmp_path / "flat_junk.png"
    junk.write_bytes(b"not a png at all")
    res = cli("calibrate", "--dark", _files(folder, "dark")[0], "--flat", junk, "--pixel-size", "0.15",
              "--out", tmp_path / "st")
    assert res.exit_code == 2 and "flat frame" in res.output and "flat_junk.png: not a readable image" in res.output
    res = cli("calibrate", "--dark", tmp_path / "missing.png", "--flat", junk, "--pixel-size", "0.15",
              "--out", tmp_path / "st")
    assert res.exit_code == 2 and "missing.png: no such file" in res.output


def test_plate_value_not_a_number(cli, uniform_files, tmp_path):
    folder, _ = uniform_files
    res = cli(*_cal_args(folder, tmp_path / "st", "--haze-standard", f"{folder / 'plate_2.png'}=two"))
    assert res.exit_code == 2
    assert "the plate value 'two' is not a number" in res.output and "IMG=PCT" in res.output
    with pytest.raises(CalibrationError, match="write IMG=PCT"):
        parse_haze_standard("plate.png")
    assert parse_haze_standard("a=b.png=2.5") == (Path("a=b.png"), 2.5)


def test_missing_scale_and_shell_expanded_files(cli, uniform_files, tmp_path):
    folder, _ = uniform_files
    darks = _files(folder, "dark")
    res = cli("calibrate", "--dark", darks[0], "--flat", _files(folder, "flat")[0], "--out", tmp_path / "st")
    assert res.exit_code == 2 and "no pixel scale: give --pixel-size MM" in res.output
    res = cli("calibrate", "--dark", darks[0], darks[1], "--flat", _files(folder, "flat")[0], "--pixel-size", "0.15",
              "--out", tmp_path / "st")
    assert res.exit_code == 2 and "quote a glob" in res.output


def test_broken_haze_fit_is_refused(uniform_files):
    folder, info = uniform_files
    # certificates paired with the wrong images: the line through them is clearly broken
    wrong = [(folder / "plate_0.5.png", 8.0), (folder / "plate_2.png", 0.5), (folder / "plate_8.png", 2.0)]
    with pytest.raises(CalibrationError, match="haze fit is broken|off the line"):
        build_station(_files(folder, "dark"), _files(folder, "flat"), pixel_size_mm=0.15, haze_standards=wrong)
