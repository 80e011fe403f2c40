"""The simulated station: camera, backlight and the calibration frames it produces.

Units: lengths in the lens plane are millimetres unless a name ends in ``_px``; radiance is in
digital numbers (DN) of the file, after the dark offset. The backlight ``L`` here is the
radiance of the panel as the camera would see it with a perfect lens; the flat frame is
``L ⊛ p`` (camera PSF) plus the dark offset and noise (station-model.md §1–2).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from goggleqc.errors import InputError


@dataclass(frozen=True)
class Photo:
    """What an ordinary camera does to a picture before it is a file: the real photographs
    of uncalibrated inspection, not a machine-vision camera's linear frame.

    In order: a colour camera samples a Bayer mosaic (RGGB) and demosaics it; the linear
    signal is encoded with the sRGB tone curve (``tone="srgb"``, or a plain power ``gamma``);
    edge-preserving noise reduction (a bilateral filter, 5 px, of range ``denoise`` in encoded
    units; 0 for none) smooths the grain a phone shows off;
    an unsharp mask of ``sharpen`` × (image − Gaussian blur of ``sharpen_sigma_px``) is added;
    the result is quantised to 8 bits and, when ``jpeg_quality`` is set, written and read back
    as a JPEG of that quality.
    """

    tone: str = "srgb"
    gamma: float = 2.2
    denoise: float = 0.0
    sharpen: float = 0.0
    sharpen_sigma_px: float = 1.0
    jpeg_quality: int | None = 90

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Tone curve of the linear signal ``x`` (0–1 at full scale) → encoded 0–1."""
        x = np.clip(x, 0.0, 1.0)
        if self.tone == "srgb":
            return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)
        if self.tone == "gamma":
            return np.power(x, 1 / self.gamma).astype(np.float32)
        if self.tone == "linear":
            return x.astype(np.float32)
        raise InputError(f"unknown tone curve {self.tone!r}; use srgb, gamma or linear")

    def develop(self, linear: np.ndarray, max_dn: float, colour: bool) -> np.ndarray:
        """8-bit picture of a noisy linear frame (DN, full scale ``max_dn``; (M, N, 3) BGR if
        ``colour``)."""
        x = linear.astype(np.float32) / np.float32(max_dn)
        if colour:
            # the sensor saw one colour per pixel (RGGB); OpenCV's edge-aware demosaic fills in
            # the others, on 16-bit data so the mosaic's quantisation stays below the noise
            h, w = x.shape[:2]
            mosaic = np.empty((h, w), np.float32)
            mosaic[0::2, 0::2] = x[0::2, 0::2, 2]
            mosaic[0::2, 1::2] = x[0::2, 1::2, 1]
            mosaic[1::2, 0::2] = x[1::2, 0::2, 1]
            mosaic[1::2, 1::2] = x[1::2, 1::2, 0]
            raw = np.clip(np.rint(mosaic * 65535), 0, 65535).astype(np.uint16)
            x = cv2.cvtColor(raw, cv2.COLOR_BayerBG2BGR_EA).astype(np.float32) / np.float32(65535)
        y = self.encode(x)
        if self.denoise > 0:
            y = cv2.bilateralFilter(y, 5, float(self.denoise), 1.5)
        if self.sharpen > 0:
            y = y + np.float32(self.sharpen) * (y - cv2.GaussianBlur(y, (0, 0), self.sharpen_sigma_px))
        out = np.clip(np.rint(y * 255), 0, 255).astype(np.uint8)
        if self.jpeg_quality is not None:
            ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(self.jpeg_quality)])
            if not ok:
                raise InputError("OpenCV cannot write a JPEG here")
            out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        return out


def random_photo(rng: np.random.Generator) -> Photo:
    """A random ordinary camera's processing: sRGB (or a 1.8–2.4 power), noise reduction and
    sharpening each from none to strong, JPEG quality 70–98 (or none)."""
    tone = str(rng.choice(["srgb", "gamma"], p=[0.8, 0.2]))
    return Photo(tone=tone, gamma=float(rng.uniform(1.8, 2.4)), denoise=float(rng.choice([0.0, rng.uniform(0.01, 0.04)])),
                 sharpen=float(rng.choice([0.0, rng.uniform(0.2, 1.2)])),
                 sharpen_sigma_px=float(rng.uniform(0.7, 1.5)),
                 jpeg_quality=None if rng.random() < 0.15 else int(rng.integers(70, 99)))


@dataclass(frozen=True)
class Camera:
    """A monochrome (or colour) camera with a linear response.

    ``bits`` is the file depth (8 or 16); ``data_bits`` the significant bits, LSB aligned
    (10–16-bit data in 16-bit files). Noise is shot noise from ``full_well_e`` electrons at full
    scale plus Gaussian read noise, quantised to integers.
    """

    bits: int = 8
    data_bits: int = 8
    full_well_e: float = 12000.0
    read_noise_e: float = 8.0
    dark_level_frac: float = 0.02
    dsnu_frac: float = 0.002
    psf_sigma_px: float = 0.8
    colour: bool = False
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    #: an ordinary camera's processing (tone curve, sharpening, JPEG); None: a linear frame
    photo: Photo | None = None

    @property
    def max_dn(self) -> int:
        return (1 << self.data_bits) - 1

    @property
    def dtype(self) -> type:
        return np.uint8 if self.bits == 8 else np.uint16

    @property
    def gain_e_per_dn(self) -> float:
        return self.full_well_e / self.max_dn


@dataclass(frozen=True)
class Trap:
    """An opaque light trap on the uniform panel, centred at (x_mm, y_mm) from the image centre."""

    x_mm: float
    y_mm: float
    diameter_mm: float


@dataclass(frozen=True)
class Dust:
    """A particle on the diffuser: part of the flat, never a lens defect."""

    x_mm: float
    y_mm: float
    diameter_mm: float
    contrast: float


@dataclass(frozen=True)
class Backlight:
    """The panel behind the lens.

    ``kind`` is ``uniform`` (diffuse panel with ``traps``) or ``pattern`` (a periodic
    ``checker``, ``grid`` or ``stripes`` target of ``period_mm`` at ``angle_deg``, whose dark
    parts transmit ``1 - modulation`` of the bright ones, blurred by ``defocus_mm``).

    ``warp`` bends the target as a photograph through a goggle sees it: the camera not square
    to the target (perspective) and the curved lens' own refraction (a radial term). It is the
    fractional change of the pattern's scale from the frame's centre to its corner; 0 is a
    target square to the camera, exactly periodic in the image.
    """

    kind: str = "uniform"
    level_frac: float = 0.8
    vignetting: float = 0.2
    nonuniformity: float = 0.02
    traps: tuple[Trap, ...] = ()
    pattern: str = "checker"
    period_mm: float = 4.0
    angle_deg: float = 0.0
    modulation: float = 0.8
    line_frac: float = 0.25
    defocus_mm: float = 0.2
    dust: tuple[Dust, ...] = ()
    scatter_sigma_mm: float = 25.0
    scatter_shape: str = "gaussian"
    warp: float = 0.0


@dataclass(frozen=True)
class Product:
    """The goggle model a station inspects: a visor or two eye lenses in an opaque frame.

    Half sizes are of one lens (for ``two_eye``, of each eye lens); ``exponent`` shapes the
    superellipse outline; the nose cut-out is an ellipse at the bottom centre.
    """

    kind: str = "visor"
    half_width_mm: float = 40.0
    half_height_mm: float = 22.0
    exponent: float = 3.0
    eye_gap_mm: float = 8.0
    nose_width_mm: float = 12.0
    nose_height_mm: float = 10.0
    frame_mm: float = 4.0
    tau_frame: float = 0.01


@dataclass(frozen=True)
class StationParams:
    width: int = 1280
    height: int = 1024
    pixel_size_mm: float = 0.08
    camera: Camera = field(default_factory=Camera)
    backlight: Backlight = field(default_factory=Backlight)
    product: Product = field(default_factory=Product)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _coords_mm(params: StationParams) -> tuple[np.ndarray, np.ndarray]:
    """Lens-plane coordinates (mm) of pixel centres, origin at the image centre."""
    ps = params.pixel_size_mm
    x = (np.arange(params.width, dtype=np.float32) - (params.width - 1) / 2) * ps
    y = (np.arange(params.height, dtype=np.float32) - (params.height - 1) / 2) * ps
    return x[None, :], y[:, None]


def _soft_step(d_px: np.ndarray) -> np.ndarray:
    """Area-antialiased step: 0 well below the edge, 1 well above, linear over one pixel."""
    return np.clip(d_px + 0.5, 0.0, 1.0)


def _square_wave(u_mm: np.ndarray, period_mm: float, duty: float, ps: float) -> np.ndarray:
    """1 on the first ``duty`` of each period, 0 elsewhere, antialiased to one pixel."""
    phase = np.mod(u_mm, period_mm)
    half = duty * period_mm / 2
    centre = half
    d = half - np.abs(phase - centre)  # >0 inside the 'on' part, in mm
    # distance to the on-interval also wraps around the period
    d = np.maximum(d, half - np.abs(phase - period_mm - centre))
    return _soft_step(d / ps)


def _warped(x: np.ndarray, y: np.ndarray, warp: float, angle_deg: float, corner: float) -> tuple[np.ndarray, np.ndarray]:
    """Target coordinates (mm) seen at lens-plane ``(x, y)`` through a tilted, curved view.

    A projective tilt towards a direction 35° off the pattern's axes changes the local scale
    by ``±warp/2`` from centre to corner, and a radial term ``1 + (warp/2)·r²`` (r = 1 at the
    frame's ``corner``, mm from its centre) adds the barrel of a curved visor, so the scale
    changes by about ``warp`` overall.
    """
    t = np.deg2rad(angle_deg + 35.0)
    tilt = (np.cos(t) * x + np.sin(t) * y) / corner  # −1 … 1 across the frame
    r2 = (x * x + y * y) / corner ** 2
    s = (1.0 + 0.5 * warp * r2) / (1.0 + 0.5 * warp * tilt)
    return (x * s).astype(np.float32), (y * s).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """Zero-mean, unit-rms smooth random field varying over ``cells`` (x, y) across the frame."""
    coarse = rng.standard_normal((cells[1] + 2, cells[0] + 2)).astype(np.float32)
    field_ = cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    field_ -= field_.mean()
    return field_ / max(float(field_.std()), 1e-6)


def scatter_blur(image: np.ndarray, sigma_px: float, shape: str = "gaussian") -> np.ndarray:
    """``image ⊛ K`` for the wide-angle scatter kernel ``K``, computed on a reduced image.

    ``K`` is much wider than a trap or pattern period, so the result is smooth and a ~1/8
    resolution computation is exact to well under a percent. Shapes: ``gaussian``,
    ``mixture`` (0.6·G(σ) + 0.4·G(3σ), a heavier tail), ``exponential`` (a three-Gaussian
    approximation of an exponential kernel).
    """
    h, w = image.shape
    factor = max(1, int(min(h, w) // 128))
    small = cv2.resize(image, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)
    s = sigma_px / factor
    if shape == "gaussian":
        parts = [(1.0, s)]
    elif shape == "mixture":
        parts = [(0.6, s), (0.4, 3 * s)]
    elif shape == "exponential":
        parts = [(0.25, 0.4 * s), (0.45, 1.1 * s), (0.30, 2.6 * s)]
    else:
        raise ValueError(f"unknown scatter shape {shape!r}")
    out = np.zeros_like(small)
    for weight, sig in parts:
        out += weight * cv2.GaussianBlur(small, (0, 0), sig, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)


class SimStation:
    """A station: renders its backlight once, then dark, flat and lens frames on demand."""

    def __init__(self, params: StationParams):
        if params.width < 64 or params.height < 64:
            raise InputError(f"frame size {params.width}×{params.height} is too small; use at least 64×64")
        if not 0.005 <= params.pixel_size_mm <= 1.0:
            raise InputError(f"pixel size {params.pixel_size_mm} mm is outside 0.005–1 mm")
        self.params = params
        self.shape = (params.height, params.width)
        self.radiance = self._render_backlight()  # L, in DN above the dark offset
        bl = params.backlight
        self.scattered = scatter_blur(self.radiance, bl.scatter_sigma_mm / params.pixel_size_mm, bl.scatter_shape)
        rng = np.random.default_rng([params.seed, 1])
        cam = params.camera
        self.dark_map = (cam.dark_level_frac * cam.max_dn
                         + cam.dsnu_frac * cam.max_dn * rng.standard_normal(self.shape)).astype(np.float32)

    # -- backlight -----------------------------------------------------------------------
    def _render_backlight(self) -> np.ndarray:
        p = self.params
        bl = p.backlight
        ps = p.pixel_size_mm
        rng = np.random.default_rng([p.seed, 0])
        x, y = _coords_mm(p)
        corner = float(np.hypot(x[0, 0], y[0, 0]))
        r2 = (x ** 2 + y ** 2) / corner ** 2
        panel = (1.0 - bl.vignetting * r2).astype(np.float32)
        panel *= 1.0 + bl.nonuniformity * _smooth_noise(rng, self.shape, (6, 5))
        # The target is drawn beyond the frame by the reach of its defocus blur and cropped
        # after it: the camera sees a crop of a continuous target, not one mirrored at the
        # frame's border (which would bend the pattern's last cells there).
        pad = int(np.ceil(4 * bl.defocus_mm / ps)) + 1 if bl.defocus_mm > 0 else 0
        if pad:
            x = np.concatenate([x[:, :1] - ps * np.arange(pad, 0, -1, dtype=np.float32), x,
                                x[:, -1:] + ps * np.arange(1, pad + 1, dtype=np.float32)], axis=1)
            y = np.concatenate([y[:1] - ps * np.arange(pad, 0, -1, dtype=np.float32)[:, None], y,
                                y[-1:] + ps * np.arange(1, pad + 1, dtype=np.float32)[:, None]], axis=0)
        target = np.ones((y.shape[0], x.shape[1]), np.float32)
        if bl.kind == "uniform":
            for trap in bl.traps:
                d = np.sqrt((x - trap.x_mm) ** 2 + (y - trap.y_mm) ** 2) - trap.diameter_mm / 2
                target *= _soft_step(d / ps)
        elif bl.kind == "pattern":
            if bl.warp:
                x, y = _warped(x, y, bl.warp, bl.angle_deg, corner)
            a = np.deg2rad(bl.angle_deg)
            u = x * np.cos(a) + y * np.sin(a)
            v = -x * np.sin(a) + y * np.cos(a)
            if bl.pattern == "checker":
                su = _square_wave(u, bl.period_mm, 0.5, ps)
                sv = _square_wave(v, bl.period_mm, 0.5, ps)
                bright = su * sv + (1 - su) * (1 - sv)
            elif bl.pattern == "grid":
                lu = _square_wave(u, bl.period_mm, bl.line_frac, ps)
                lv = _square_wave(v, bl.period_mm, bl.line_frac, ps)
                bright = (1 - lu) * (1 - lv)
            elif bl.pattern == "stripes":
                bright = _square_wave(u, bl.period_mm, 0.5, ps)
            else:
                raise InputError(f"unknown pattern {bl.pattern!r}; use checker, grid or stripes")
            target = (1 - bl.modulation) + bl.modulation * bright.astype(np.float32)
        else:
            raise InputError(f"unknown backlight kind {bl.kind!r}; use uniform or pattern")
        for dust in bl.dust:
            d = np.sqrt((x - dust.x_mm) ** 2 + (y - dust.y_mm) ** 2) - dust.diameter_mm / 2
            target *= 1 - dust.contrast * (1 - _soft_step(d / ps))
        if bl.defocus_mm > 0:
            target = cv2.GaussianBlur(target, (0, 0), bl.defocus_mm / ps)
        if pad:
            target = target[pad:-pad, pad:-pad]
        peak = bl.level_frac * p.camera.max_dn * (1 - p.camera.dark_level_frac)
        return (peak * panel * target).astype(np.float32)

    # -- the camera ----------------------------------------------------------------------
    def expose(self, radiance: np.ndarray, rng: np.random.Generator, gain: float = 1.0) -> np.ndarray:
        """Camera blur, exposure ``gain``, dark offset, shot and read noise, quantisation."""
        cam = self.params.camera
        signal = cv2.GaussianBlur(radiance, (0, 0), cam.psf_sigma_px) if cam.psf_sigma_px > 0 else radiance
        signal = signal * np.float32(gain)
        if cam.colour:
            wb = np.asarray(cam.white_balance, np.float32)
            wb = wb / float(np.dot(wb, [0.114, 0.587, 0.299]))  # keeps Rec.601 luma == signal
            signal = signal[:, :, None] * wb[None, None, :]
            dark = self.dark_map[:, :, None]
        else:
            dark = self.dark_map
        var = np.maximum(signal, 0) / np.float32(cam.gain_e_per_dn) + np.float32((cam.read_noise_e / cam.gain_e_per_dn) ** 2)
        noisy = signal + dark + np.sqrt(var) * rng.standard_normal(signal.shape, dtype=np.float32)
        if cam.photo is not None:
            return cam.photo.develop(noisy, cam.max_dn, cam.colour)
        return np.clip(np.rint(noisy), 0, cam.max_dn).astype(cam.dtype)

    def dark_frame(self, rng: np.random.Generator) -> np.ndarray:
        return self.expose(np.zeros(self.shape, np.float32), rng)

    def flat_frame(self, rng: np.random.Generator, gain: float = 1.0) -> np.ndarray:
        return self.expose(self.radiance, rng, gain)

    def through(self, tau: np.ndarray, haze: np.ndarray | float) -> np.ndarray:
        """Radiance after a lens of transmittance ``tau`` and haze ``haze`` (station-model §2).

        ``τ · [(1 − h)·L + h·(L ⊛ K)]``; the camera PSF is applied later, in :meth:`expose`.
        """
        L, LK = self.radiance, self.scattered
        return tau * (L + haze * (LK - L))
