"""``goggleqc cameras``: list the cameras this machine can open, with the sizes and rates they accept."""

from __future__ import annotations

import sys

import typer

from goggleqc.capture.devices import list_cameras
from goggleqc.cli import app, console

#: exit status when no camera could be opened
EXIT_NO_CAMERA = 1


@app.command()
def cameras() -> None:
    """List cameras (V4L2 devices on Linux) with the MJPG sizes and frame rates they accept.

    Exit status 0 when at least one camera opened, 1 when none did.
    """
    tried, found = list_cameras()
    if not found:
        where = ("/dev/video*: " + (", ".join(map(str, tried)) + " (none opened for capture)" if tried else "no devices")
                 if sys.platform.startswith("linux") else "camera indexes 0–9: none opened")
        console.print(f"no camera found ({where}). Check the USB cable, `v4l2-ctl --list-devices`, and that this "
                      "user may use the camera (Linux: the `video` group).", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_NO_CAMERA)
    for cam in found:
        modes = ", ".join(f"{w}x{h}@{fps:g}" for w, h, fps in cam.modes) or "no size accepted"
        read = "reads frames" if cam.frame_ok else "opens but gives no frame"
        console.print(f"{cam.device}  [{cam.backend}, {cam.fourcc or 'format ?'}] {read}\n  sizes: {modes}\n"
                      f"  controls: {', '.join(cam.controls)}", highlight=False, soft_wrap=True)
    console.print(f"use one with: goggleqc line --camera {found[0].device} ...", highlight=False)
