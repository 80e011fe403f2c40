"""Find the cameras this machine can open, and what sizes and rates they accept.

On Linux the candidates are the ``/dev/video*`` nodes (a USB camera usually makes two: one
that streams and one that carries metadata only, which will not open for capture). Each is
opened with ``CAP_V4L2``, asked for MJPG and then for each common machine-vision size; what the
driver reads back after each request is what it accepts. Controls (exposure, white balance,
focus) are read, never changed. Elsewhere, indexes 0–9 are tried
with the platform's backend.
"""

from __future__ import annotations

import glob
import re
import sys
from dataclasses import dataclass, field

import cv2

from goggleqc.capture.sources import camera_backend, fourcc_text, quiet_opencv, tidy_number

#: sizes asked for, from VGA to 5 MP (width, height)
CANDIDATE_SIZES = ((640, 480), (1280, 720), (1280, 960), (1280, 1024), (1600, 1200), (1920, 1080),
                   (2048, 1536), (2448, 2048), (2592, 1944))

#: controls reported as the camera has them (V4L2: auto_exposure 1 = manual, 3 = auto)
CONTROLS = (("auto_exposure", cv2.CAP_PROP_AUTO_EXPOSURE), ("exposure", cv2.CAP_PROP_EXPOSURE),
            ("gain", cv2.CAP_PROP_GAIN), ("auto_wb", cv2.CAP_PROP_AUTO_WB), ("autofocus", cv2.CAP_PROP_AUTOFOCUS),
            ("focus", cv2.CAP_PROP_FOCUS))


@dataclass(frozen=True)
class CameraInfo:
    """What one device accepted.

    Attributes
    ----------
    device : str
        ``/dev/videoN`` or the index as text.
    backend : str
        The OpenCV backend that opened it.
    fourcc : str
        The pixel format in use after asking for MJPG.
    modes : list of (width, height, fps)
        Each distinct size the driver accepted, with the frame rate it reports there.
    frame_ok : bool
        Whether a frame could be read at the first accepted mode.
    controls : list of str
        Exposure, gain, white-balance and focus settings as the camera has them now.
    """

    device: str
    backend: str
    fourcc: str
    modes: list[tuple[int, int, float]] = field(default_factory=list)
    frame_ok: bool = False
    controls: list[str] = field(default_factory=list)


def candidate_devices() -> list[str | int]:
    """Device paths (Linux) or indexes (elsewhere) worth trying, in order."""
    if sys.platform.startswith("linux"):
        nodes = glob.glob("/dev/video*")
        return sorted(nodes, key=lambda p: int(re.sub(r"\D", "", p) or 0))
    return list(range(10))


def probe_camera(device: str | int, *, sizes=CANDIDATE_SIZES, capture_factory=cv2.VideoCapture) -> CameraInfo | None:
    """Open ``device`` and record the sizes and rates it accepts; None when it does not open.

    Parameters
    ----------
    device : str or int
    sizes : sequence of (width, height)
    capture_factory : callable
        ``cv2.VideoCapture`` (replaced by a fake in tests).
    """
    quiet_opencv()
    cap = capture_factory(device, camera_backend())
    try:
        if not cap.isOpened():
            return None
        backend = cap.getBackendName()
        # controls are only read: V4L2 keeps control values after close, and listing must not change them
        controls = [f"{name}={tidy_number(cap.get(prop))}" for name, prop in CONTROLS]
        modes: list[tuple[int, int, float]] = []
        for width, height in sizes:
            # FOURCC first on every request: some drivers reset it with the size
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*"MJPG"))
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
            got = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
            if got == (width, height):
                mode = (width, height, round(float(cap.get(cv2.CAP_PROP_FPS)), 2))
                if mode not in modes:
                    modes.append(mode)
        if modes:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, modes[0][0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, modes[0][1])
        ok, _ = cap.read()
        return CameraInfo(device=str(device), backend=backend, fourcc=fourcc_text(cap.get(cv2.CAP_PROP_FOURCC)),
                          modes=modes, frame_ok=bool(ok), controls=controls)
    finally:
        cap.release()


def list_cameras(devices=None, *, capture_factory=cv2.VideoCapture) -> tuple[list[str | int], list[CameraInfo]]:
    """Probe every candidate device: ``(what was tried, what opened)``."""
    tried = list(candidate_devices() if devices is None else devices)
    found = []
    for device in tried:
        info = probe_camera(device, capture_factory=capture_factory)
        if info is not None:
            found.append(info)
    return tried, found
