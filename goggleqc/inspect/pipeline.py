"""One call per lens: region, haze, transmittance, scratches, spots, coating, then the verdict.

``inspect_lens(image, station, spec)`` composes the pure analyses of this package into a
:class:`~goggleqc.inspect.results.Result` in the schema of station-model.md §3. A bad input
(wrong size, blank or saturated frame, no lens in the fixture) is not an exception here: it
gives a Result with ``verdict == "error"`` and a reason that says what is wrong, so a batch
goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from time import perf_counter

import cv2
import numpy as np

from goggleqc.capture.imagefile import to_luminance
from goggleqc.errors import GoggleQCError, InputError
from goggleqc.inspect.background import EDGE_MARGIN_PX, relative_image, station_maps, working_scale
from goggleqc.inspect.grid import reduce_image
from goggleqc.inspect.coating import CoatingParams, find_coating, uncalibrated
from goggleqc.inspect.haze import haze_contrast_index, measure_haze
from goggleqc.inspect.lens import find_lens, through_lens_region
from goggleqc.inspect.results import Reason, Result
from goggleqc.inspect.scratches import ScratchParams, wide_and_faint
from goggleqc.inspect.spots import SpotParams, separate
from goggleqc.inspect.tone import Tone, linearise
from goggleqc.inspect.transmittance import measure_transmittance
from goggleqc.inspect.verdict import decide
from goggleqc.spec import Spec

#: more than this fraction of the frame at one top code is a saturated frame
SATURATED_FRACTION = 0.3


@dataclass(frozen=True)
class Detectors:
    """The detector sensitivities used for one station (defaults, or fitted from good lenses)."""

    scratches: ScratchParams = field(default_factory=ScratchParams)
    spots: SpotParams = field(default_factory=SpotParams)
    coating: CoatingParams = field(default_factory=CoatingParams)

    @classmethod
    def from_thresholds(cls, thresholds: dict | None) -> "Detectors":
        """Build from a station's ``[thresholds]`` table: ``{detector: {param: value}}``."""
        base = cls()
        if not thresholds:
            return base
        changes = {}
        for name in ("scratches", "spots", "coating"):
            values = thresholds.get(name)
            if values:
                known = {k: v for k, v in values.items() if k in getattr(base, name).__dataclass_fields__}
                changes[name] = replace(getattr(base, name), **known)
        return replace(base, **changes)


def _covers_found(defect, scratches, spots, marks=()) -> bool:
    """True when a coating defect is only the low-contrast halo of a found scratch, spot or
    watermark: its box lies within theirs (grown by a few pixels)."""
    x0, y0, x1, y1 = defect.bbox_px
    for obj in (*scratches, *spots, *marks):
        bx0, by0, bx1, by1 = obj.bbox_px
        pad = 6
        if x0 >= bx0 - pad and y0 >= by0 - pad and x1 <= bx1 + pad and y1 <= by1 + pad:
            return True
    return False


#: a line inside a found mottle is the mottle's own texture unless this many times its contrast
MOTTLE_TEXTURE_RATIO = 3.0
#: ... inside meaning within the mottle's box grown by this many full-resolution px
MOTTLE_TEXTURE_PAD_PX = 4


def _mottle_texture(scratch, coating) -> bool:
    """True when a "scratch" is a ridge of a found mottle's orange-peel texture: it lies within
    the mottle's box (grown by :data:`MOTTLE_TEXTURE_PAD_PX`: the texture fades out past where
    it is found significant) and is no more than :data:`MOTTLE_TEXTURE_RATIO` times as dark as
    the texture itself. A scratch across a mottled area stands far above it."""
    x0, y0, x1, y1 = scratch.bbox_px
    pad = MOTTLE_TEXTURE_PAD_PX
    for c in coating:
        if c.kind != "mottle":
            continue
        bx0, by0, bx1, by1 = c.bbox_px
        if (x0 >= bx0 - pad and y0 >= by0 - pad and x1 <= bx1 + pad and y1 <= by1 + pad
                and abs(scratch.contrast) < MOTTLE_TEXTURE_RATIO * abs(c.contrast)):
            return True
    return False


#: a line lying mostly (this fraction of its box) within a found run, and no more than
#: RUN_LINE_RATIO times as dark, is the run itself (a scratch's own faint halo, read as a run
#: around it, is 2.5× fainter or more than the scratch)
RUN_LINE_OVERLAP = 0.8
RUN_LINE_RATIO = 1.5


def _run_itself(scratch, coating) -> bool:
    """True when a "scratch" is a found run (an elongated coating streak, often millimetres
    wide) read by the line filter: its box lies mostly within the run's and it is about as
    faint. A scratch is thin and, crossing a run, runs past it or stands far above it."""
    return any(c.kind == "run" and abs(scratch.contrast) < RUN_LINE_RATIO * abs(c.contrast)
               and _share_within(scratch.bbox_px, c.bbox_px) >= RUN_LINE_OVERLAP for c in coating)


def _share_within(box, outer, pad: float = 0.0) -> float:
    """The fraction of ``box`` ([x0, y0, x1, y1), full-resolution px) lying within ``outer``
    grown by ``pad`` px on every side."""
    x0, y0, x1, y1 = box
    bx0, by0, bx1, by1 = outer[0] - pad, outer[1] - pad, outer[2] + pad, outer[3] + pad
    inside = max(0, min(x1, bx1) - max(x0, bx0)) * max(0, min(y1, by1) - max(y0, by0))
    return inside / max((x1 - x0) * (y1 - y0), 1)


#: a wide faint line (:func:`~goggleqc.inspect.scratches.wide_and_faint`) with at least this
#: fraction of its box within a found coating flaw's (grown by WIDE_LINE_PAD_MM) is that flaw
WIDE_LINE_OVERLAP = 0.5
#: a flaw's found box falls short of its own by up to about a millimetre (its edge fades under
#: the coating detector's threshold after smoothing: 0.7–1.2 mm on our development sets), and
#: the line filter reads a flaw's edge as a line just there
WIDE_LINE_PAD_MM = 1.0


def _flaw_itself(scratch, coating, pixel_size_mm, params: ScratchParams) -> bool:
    """True when a "scratch" is a coating flaw's departure read by the line filter: as wide and
    faint as one (a run's streak, a mottle's ridge, a void's edge) and lying mostly on a found
    flaw or along its edge. A 25 mm² run read as a 15.7 mm line of 3.4 %, 0.9 mm wide, whose
    box held the mottle the coating detector found there, which was then dropped as the
    line's halo."""
    if not coating or not wide_and_faint(scratch, pixel_size_mm, params):
        return False
    pad = WIDE_LINE_PAD_MM / pixel_size_mm
    return any(_share_within(scratch.bbox_px, c.bbox_px, pad) >= WIDE_LINE_OVERLAP for c in coating)


#: full-resolution pixels by which the relative image's edge margin reaches past the lens
#: mask's quantisation (half a lens-finder cell) into the lens
_EDGE_SLACK_PX = 3


def lens_edge_slack(factor: int, scale: int) -> int:
    """Working pixels to take off the lens mask, beyond the relative image's own edge margin,
    because the mask was found ``factor`` times coarser than full resolution.

    The finder's cells are ``factor`` pixels wide, so its edge may lie up to half a cell
    outside the lens; the relative image keeps :data:`~goggleqc.inspect.background.EDGE_MARGIN_PX`
    working pixels clear of it, which at a fine
    finder grid leaves several pixels to spare and at a coarse one (a 2 MP frame of 0.1 mm
    pixels: cells of 8 px, a working grid of 2) puts the lens' own blurred edge, 3–4 px
    inside it, among the valid pixels as a line along the rim (about one false scratch per
    lens). The slack brings the spare back to :data:`_EDGE_SLACK_PX`.
    """
    spare = EDGE_MARGIN_PX * scale - factor // 2  # full-resolution px between the mask's worst edge and the valid pixels
    return max(0, -(-(_EDGE_SLACK_PX - spare) // scale))


def check_exposure(image: np.ndarray, name: str = "image") -> None:
    """Refuse a blank (no light) or saturated frame with a message that says which."""
    if image.ndim == 2 and image.size:
        lo, hi, _, _ = cv2.minMaxLoc(image)  # one pass for both, several times faster than two
    else:
        lo, hi = float(image.min()), float(image.max())
    # 10–16-bit data sit LSB-aligned in 16-bit files (station-model §1): full scale is the
    # smallest 2^k − 1 of 10 bits or more at or above the brightest pixel, not 65535, or a
    # 10-bit frame at 60 % of its range would read as blank
    full = 255.0 if image.dtype == np.uint8 else float((1 << max(10, int(hi).bit_length())) - 1)
    # the fraction at the top code only matters for a bright top: counted only then
    if hi >= (250 if image.dtype == np.uint8 else 1000):
        top = np.count_nonzero(image[::4, ::4] == hi) / image[::4, ::4].size
        if top > SATURATED_FRACTION:
            raise InputError(f"{name}: the frame is saturated ({top:.0%} of pixels at {hi:g}); lower the exposure or gain")
    if hi - lo < 0.02 * max(hi, 1.0) or hi < 0.01 * full:
        raise InputError(f"{name}: the frame is blank (values {lo:g}–{hi:g}); is the backlight on and the lens cap off?")


def error_result(name: str, message: str, *, lens_found: bool = True) -> Result:
    """A Result for an image that could not be inspected."""
    return Result(image=name, verdict="error", reasons=[Reason("error", None, None, "", None, message)],
                  lens_found=lens_found, error=message)


def inspect_lens(image: np.ndarray, station=None, spec: Spec | None = None, *, pixel_size_mm: float | None = None,
                 name: str = "", detectors: Detectors | None = None, model=None, tone: Tone | None = None) -> Result:
    """Inspect one lens image.

    Parameters
    ----------
    image : (M, N) or (M, N, 3) uint8 or uint16 ndarray
        The raw frame (colour is turned into luminance).
    station : Station, optional
        The calibrated station. Without one the image is inspected uncalibrated: the
        background is estimated from the image itself, sizes are in pixels (or mm with
        ``pixel_size_mm``) and haze is only a relative contrast index.
    spec : Spec
        The pass/fail limits.
    pixel_size_mm : float, optional
        mm per pixel for an uncalibrated image (a station's own scale wins).
    name : str
        The image name written into the result.
    detectors : Detectors, optional
        Detector sensitivities; default: the station's fitted thresholds, else the defaults.
    model : optional
        A learned pass/fail model (:class:`goggleqc.classify.model.LogisticModel`) applied
        after the spec: it may only turn a pass into a fail. Default: the station's, if one was
        attached with :func:`goggleqc.classify.model.attach_model`.
    tone : Tone, optional
        The tone curve of an uncalibrated picture (:mod:`goggleqc.inspect.tone`): an ordinary
        camera's sRGB picture is turned back into linear light first, so contrasts are
        fractions of light. Default linear; a station's camera is always linear.

    Returns
    -------
    Result
        ``verdict`` is ``pass``, ``fail`` or ``error``; ``reasons`` says why.
    """
    if spec is None:
        from goggleqc.spec import DEFAULT_SPEC, load_spec

        spec = load_spec(DEFAULT_SPEC)
    timing: dict[str, float] = {}
    t = perf_counter()

    def lap(stage: str) -> None:
        nonlocal t
        now = perf_counter()
        timing[stage] = round((now - t) * 1000, 2)
        t = now

    undo_tone = tone is not None and tone.kind != "linear"
    try:
        if undo_tone:
            if station is not None:
                raise InputError(f"tone {tone}: a calibrated station's camera is linear; a tone curve is "
                                 "undone only on uncalibrated pictures")
            image = linearise(image, tone)
        image = to_luminance(image)
        if station is not None:
            station.check_image(image, name or "image")
        check_exposure(image, name or "image")
        ps = station.pixel_size_mm if station is not None and station.pixel_size_mm else pixel_size_mm
        if detectors is None:
            detectors = Detectors.from_thresholds(station.thresholds if station is not None else None)
        whole_frame = False
        try:
            region = find_lens(image, station, marginal_mm=spec.marginal_width_mm, pixel_size_mm=ps)
        except InputError as exc:
            if station is not None or not str(exc).startswith("no lens found"):
                raise
            # uncalibrated, with no goggle frame in view: a photograph through the lens
            region, whole_frame = through_lens_region(image, spec.marginal_width_mm), True
        lap("lens")
    except GoggleQCError as exc:
        return error_result(name, str(exc), lens_found="no lens" not in str(exc))

    try:
        extra: dict = {}
        if whole_frame:
            extra["lens_outline"] = ("whole frame: no goggle frame in view" if region.lens_small.all() else
                                     "whole frame less the goggle frame reaching in from its border: no lens enclosed")
        if undo_tone:
            extra["tone"] = f"{tone} (undone before inspection)"
        if station is not None:
            haze = measure_haze(image, station, lens_mask=region.reduced("lens"), central_mask=region.reduced("central"))
            haze_pct, haze_kind, regions = haze.haze_pct, ("calibrated" if haze.corrected else "raw"), haze.regions
            extra["haze_raw_pct"] = haze.raw_pct
            lap("haze")
            trans = measure_transmittance(image, station, region, haze_raw_pct=haze.raw_pct)
            transmittance_pct = trans.transmittance_pct
            extra["exposure_drift"] = trans.drift_gain
            lap("transmittance")
        else:
            haze_pct, haze_kind, regions = None, "contrast_index", []
            extra["haze_contrast_index"] = haze_contrast_index(image, region.lens)
            transmittance_pct = None
            lap("haze")
        scale = working_scale(image.shape, ps)
        reduced = reduce_image(image, scale)
        work_shape = (reduced.shape[1], reduced.shape[0])
        lens_work = cv2.resize(region.lens_small.view(np.uint8), work_shape, interpolation=cv2.INTER_NEAREST)
        extra_margin = lens_edge_slack(region.factor, scale)
        if extra_margin:
            lens_work = cv2.erode(lens_work, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * extra_margin + 1,) * 2))
        # the flat-corrected working grid, shared by the background fit and the coating detector
        maps = station_maps(station, scale) if station is not None else None
        trans_work = (reduced - maps.dark) * maps.inv if maps is not None else None
        rel = relative_image(image, station, lens_work.view(bool), scale=scale, reduced=reduced,
                             transmission=trans_work)
        # after flat correction a scratch is dark wherever light passes; bright lines only
        # mean something against a local fit (a scratch shining over a dark pattern cell):
        # measured against the pattern's own repeats, dark cells are left out
        scratch_params = replace(detectors.scratches, bright=rel.model == "local" and detectors.scratches.bright)
        zone_of = region.zone_of if ps and not whole_frame else None
        lap("background")
        marks: list = []
        scratches, spots = separate(rel, zone_of=zone_of, pixel_size_mm=ps, scratch_params=scratch_params,
                                    spot_params=detectors.spots, marks=marks)
        lap("scratches_spots")
        if station is not None:
            coating = find_coating(trans_work, region, pixel_size_mm=ps,
                                   params=detectors.coating, station=station, scale=scale)
        elif rel.model == "local":
            # no flat, on a plain panel: the image stands in for the transmission. A pattern
            # read as a lattice is its own background cell by cell, which a flaw of
            # millimetres follows too: no coating is sought there
            coating = find_coating(reduced, region, pixel_size_mm=ps, params=uncalibrated(detectors.coating),
                                   scale=scale, whole_frame=whole_frame)
        else:
            coating = []
        # a mottle's texture ridges, a run or another flaw read as a line go first, so they do
        # not hide the coating defect itself below
        scratches = [sc for sc in scratches if not (_mottle_texture(sc, coating) or _run_itself(sc, coating)
                                                    or _flaw_itself(sc, coating, ps, detectors.scratches))]
        coating = [c for c in coating if not _covers_found(c, scratches, spots, marks)]
        lap("coating")
    except GoggleQCError as exc:
        return error_result(name, str(exc))

    measures = {
        "haze_pct": haze_pct,
        "transmittance_pct": transmittance_pct,
        "scratches": [s.__dict__ for s in scratches],
        "coating": [c.__dict__ for c in coating],
        "spots": [s.__dict__ for s in spots],
    }
    verdict, reasons, unchecked = decide(measures, spec)
    lap("verdict")
    extra["lens_contours_px"] = [c.tolist() for c in region.contours_px]
    extra["central_contours_px"] = [c.tolist() for c in region.central_contours_px]
    if unchecked:
        extra["unchecked_limits"] = unchecked
    timing["total"] = round(sum(timing.values()), 2)
    result = Result(image=name, verdict=verdict, reasons=reasons, haze_pct=haze_pct, haze_kind=haze_kind,
                    haze_regions=regions, transmittance_pct=transmittance_pct, scratches=scratches, coating=coating,
                    spots=spots, marks=marks, pixel_size_mm=ps, timing_ms=timing, extra=extra)
    if model is None and station is not None:
        model = getattr(station, "cache", {}).get("classifier")
    return model.apply(result) if model is not None else result
