"""Ordinary cameras' pictures: tone curves undone, coloured noise measured, and the CLI's --tone."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from goggleqc.batch import LensInspector
from goggleqc.errors import InputError
from goggleqc.inspect.background import noise_colour
from goggleqc.inspect.pipeline import inspect_lens
from goggleqc.inspect.tone import LINEAR, Tone, linearise, parse_tone, png_tone, tone_for_name
from goggleqc.spec import load_spec
from goggleqc.synth.lens import Scratch
from goggleqc.synth.render import render_lens
from goggleqc.synth.scenes import centred, close_up_station, random_lens
from goggleqc.synth.station import Photo, SimStation

SPEC = load_spec("en166-clear")
PS = 0.1


def test_parse_tone():
    assert parse_tone("auto") is None
    assert parse_tone("linear") == LINEAR and parse_tone(" sRGB ") == Tone("srgb")
    assert parse_tone("gamma=1.8") == Tone("gamma", 1.8)
    for bad in ("gamma=0.5", "gamma=x", "log", "gamma=9"):
        with pytest.raises(InputError, match="tone"):
            parse_tone(bad)


def test_tone_by_file_name():
    assert tone_for_name("a/lens 1.JPG", None) == Tone("srgb")
    assert tone_for_name("lens.jpeg", None) == Tone("srgb")
    assert tone_for_name("lens.png", None) == LINEAR
    assert tone_for_name("lens.jpg", LINEAR) == LINEAR  # --tone wins
    assert tone_for_name("lens.tif", Tone("srgb")) == Tone("srgb")


@pytest.mark.parametrize("tone", [Tone("srgb"), Tone("gamma", 2.2), Tone("gamma", 1.8)])
def test_linearise_undoes_the_camera_curve(tone):
    """8-bit codes of a tone curve come back as the light they encode, to the code's step."""
    light = np.linspace(0.02, 1.0, 400)
    photo = Photo(tone=tone.kind, gamma=tone.gamma, jpeg_quality=None)
    codes = np.rint(photo.encode(light) * 255).astype(np.uint8)
    back = linearise(codes, tone).astype(float) / 65535
    c = codes.astype(float)
    mid = tone.decode(c / 255)  # light per half code, the larger side (a curve is steeper above)
    half_step = np.maximum(tone.decode((c + 0.5) / 255) - mid, mid - tone.decode((c - 0.5) / 255))
    assert np.all(np.abs(back - light) <= half_step + 1e-4)
    assert linearise(codes, LINEAR) is codes


def test_linearise_rejects_float_pictures():
    with pytest.raises(InputError, match="8- or 16-bit"):
        linearise(np.zeros((4, 4), np.float32), Tone("srgb"))


def test_noise_colour_reads_white_sharpened_and_smoothed_noise():
    rng = np.random.default_rng(5)
    white = rng.standard_normal((400, 400)).astype(np.float32)
    ok = np.ones(white.shape, bool)
    sharp = white + 1.0 * (white - cv2.GaussianBlur(white, (0, 0), 1.0))
    soft = cv2.GaussianBlur(white, (0, 0), 0.6)

    def k(d):
        from goggleqc.inspect.background import noise_sigma
        return noise_colour(d, ok, noise_sigma(d, ok))

    assert k(white) == pytest.approx(1.0, abs=0.05)
    assert k(sharp) < 0.9
    assert k(soft) > 1.15


def _photographed_scratch(photo: Photo, contrast: float = 0.3):
    """A close-up through a clean lens with one wide scratch, taken by a camera that does ``photo``."""
    params = close_up_station(np.random.default_rng(71), pixel_size_mm=PS)
    sim = SimStation(dataclasses.replace(params, camera=dataclasses.replace(params.camera, photo=photo)))
    lens = centred(random_lens(np.random.default_rng(72), sim, defects=0, haze=0.01, tau_clear=0.9))
    cx, cy = params.width / 2, params.height / 2
    lens = dataclasses.replace(lens, scratches=(Scratch(((cx - 50, cy - 10), (cx + 50, cy + 10)), 3.0, contrast),))
    image, truth = render_lens(sim, lens, np.random.default_rng(73))
    return image, truth["scratches"][0]


def test_an_srgb_photograph_reports_the_contrast_of_light_once_its_curve_is_undone():
    """Station-model §3: contrast is a fraction of light. Read off sRGB codes it comes out
    at about half; with the curve undone it is the truth's."""
    image, truth = _photographed_scratch(Photo(tone="srgb", jpeg_quality=None))
    raw = inspect_lens(image, None, SPEC, pixel_size_mm=PS)
    fixed = inspect_lens(image, None, SPEC, pixel_size_mm=PS, tone=Tone("srgb"))
    assert len(fixed.scratches) == 1 and len(raw.scratches) == 1
    assert fixed.scratches[0].contrast == pytest.approx(truth["contrast"], rel=0.3)
    assert raw.scratches[0].contrast < 0.7 * truth["contrast"]


def test_a_jpeg_file_is_inspected_as_srgb_and_a_station_stays_linear():
    image, truth = _photographed_scratch(Photo(tone="srgb", jpeg_quality=95))
    fn = LensInspector(None, SPEC, PS)
    as_jpeg, as_png = fn(image, "lens.jpg"), fn(image, "lens.png")
    assert as_jpeg.extra["tone"].startswith("srgb") and "tone" not in as_png.extra  # the record says so
    assert as_jpeg.scratches[0].contrast == pytest.approx(truth["contrast"], rel=0.3)
    assert as_png.scratches[0].contrast < 0.7 * truth["contrast"]


def _png_with(chunk_type: bytes, payload: bytes, image=None) -> bytes:
    """A PNG (OpenCV writes none of the colour chunks) with one chunk added before its data."""
    import struct
    import zlib

    import cv2

    data = cv2.imencode(".png", np.full((8, 8), 100, np.uint8) if image is None else image)[1].tobytes()
    chunk = struct.pack(">I", len(payload)) + chunk_type + payload
    chunk += struct.pack(">I", zlib.crc32(chunk_type + payload) & 0xFFFFFFFF)
    at = 8 + 25  # after the signature and IHDR (13 bytes of data + 12)
    return data[:at] + chunk + data[at:]


def test_a_png_says_its_tone_curve():
    import cv2
    import struct

    plain = cv2.imencode(".png", np.full((8, 8), 100, np.uint8))[1].tobytes()
    assert png_tone(plain) is None  # a station camera's frame: says nothing, read as linear
    assert png_tone(_png_with(b"sRGB", b"\x00")) == Tone("srgb")
    assert png_tone(_png_with(b"iCCP", b"Display P3\x00\x00" + b"x" * 20)) == Tone("srgb")
    assert png_tone(_png_with(b"gAMA", struct.pack(">I", 45455))) == Tone("gamma", 2.2)
    assert png_tone(_png_with(b"gAMA", struct.pack(">I", 100000))) == LINEAR
    assert png_tone(b"\xff\xd8\xff\xe0 a jpeg") is None and png_tone(b"") is None
    assert png_tone(_png_with(b"sRGB", b"\x00")[:40]) is None  # cut inside the chunk's header: no error
    # --tone wins over the file, the file over its name
    assert tone_for_name("lens.png", None, Tone("srgb")) == Tone("srgb")
    assert tone_for_name("lens.png", LINEAR, Tone("srgb")) == LINEAR
    assert tone_for_name("lens.jpg", None, LINEAR) == LINEAR


def test_a_batch_reads_a_png_s_srgb_chunk(tmp_path):
    """A phone picture saved as PNG carries an sRGB (or iCCP) chunk: the batch undoes its curve
    as it does a JPEG's; the same pixels without the chunk are read as linear."""
    from goggleqc.batch import ImageJob

    image, truth = _photographed_scratch(Photo(tone="srgb", jpeg_quality=None))
    (tmp_path / "phone.png").write_bytes(_png_with(b"sRGB", b"\x00", image))
    import cv2

    cv2.imwrite(str(tmp_path / "camera.png"), image)
    job = ImageJob(LensInspector(None, SPEC, PS))
    phone, camera = job(tmp_path / "phone.png").record, job(tmp_path / "camera.png").record
    assert phone["extra"]["tone"].startswith("srgb") and "tone" not in camera["extra"]
    assert phone["scratches"][0]["contrast"] == pytest.approx(truth["contrast"], rel=0.3)
    assert camera["scratches"][0]["contrast"] < 0.7 * truth["contrast"]


def test_a_tone_curve_with_a_station_is_an_error():
    from goggleqc.calibration.station import Station

    station = Station(dark=np.zeros((64, 80), np.float32), flat=np.full((64, 80), 200, np.float32), bits=8,
                      pixel_size_mm=PS, backlight="uniform", traps=())
    res = inspect_lens(np.full((64, 80), 100, np.uint8), station, SPEC, tone=Tone("srgb"))
    assert res.verdict == "error" and "station's camera is linear" in res.error


def test_photographs_by_ordinary_cameras_keep_their_scratches_once_the_curve_is_undone():
    """Truth-based: close-ups through a lens taken by ordinary cameras (colour mosaics, sRGB or
    gamma curves, noise reduction, sharpening, JPEG; :func:`goggleqc.synth.station.random_photo`).
    Read off the codes, scratches lose about half their contrast and many fall under the
    detector's floor; undone as sRGB (what ``--tone auto`` does for a JPEG file), recall comes
    back to near that of a linear camera, with no false scratch on a defect-free lens.
    Measured: 11 → 13 of 17 scratches; the four misses are hairlines of 0.3–0.7 px and
    6–10 % contrast."""
    from goggleqc.synth.scenes import close_up
    from goggleqc.synth.scoring import evaluate

    raw, fixed = [], []
    for i in range(48):
        _, image, truth = close_up(np.random.default_rng(3100 + i // 6), np.random.default_rng([3100, i, 5]),
                                   pixel_size_mm=PS, photo=True)
        raw.append((truth, inspect_lens(image, None, SPEC, pixel_size_mm=PS).to_dict()))
        fixed.append((truth, inspect_lens(image, None, SPEC, pixel_size_mm=PS, tone=Tone("srgb")).to_dict()))
    m_raw, m_fixed = evaluate(raw, SPEC), evaluate(fixed, SPEC)
    print({k: (m_raw[k], m_fixed[k]) for k in ("n_scratch_1mm", "recall_scratch_1mm", "recall_spot",
                                              "false_scratches_per_clean_lens")})
    assert m_fixed["n_scratch_1mm"] >= 15
    assert m_fixed["recall_scratch_1mm"] >= 0.75
    assert m_fixed["recall_scratch_1mm"] > m_raw["recall_scratch_1mm"]
    assert m_fixed["false_scratches_per_clean_lens"] <= 0.05


def test_a_phone_jpeg_stored_on_its_side_is_read_as_it_is_shown(tmp_path):
    """Phones often store a portrait photograph as a landscape JPEG with an EXIF orientation
    tag (6: rotate 90° clockwise) that every viewer applies. Read ignoring the tag, a defect's
    box would not land where the user sees it; the frame is read as shown."""
    Image = pytest.importorskip("PIL.Image")
    from goggleqc.capture.imagefile import read_image

    stored = np.full((60, 100, 3), 40, np.uint8)
    stored[:10, :30] = 220  # a bright block at the stored frame's top left
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    shown = read_image(tmp_path / "phone.jpg")
    assert shown.shape == (100, 60)
    # rotated 90° clockwise: the stored top-left block is now at the top right
    assert shown[:30, -10:].mean() > 200 and shown[:30, :10].mean() < 60
