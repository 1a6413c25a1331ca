"""What ``edgeproto explain`` reads: an image file, a folder of images, a video file or a camera
(like jetson-inference's ``imagenet``). Every source yields ``(name, RGB uint8 frame)`` pairs and
knows its length when it can. Video and camera go through OpenCV (the ``video`` extra).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeproto.data.preprocess import IMAGE_EXTENSIONS, load_image
from edgeproto.device.annotate import cv2_module
from edgeproto.errors import EdgeprotoError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
MAX_FOLDER_IMAGES = 100_000


@dataclass
class Source:
    """An input: ``kind`` (image, folder, video, camera), a ``label``, ``total`` frames (None: unknown),
    ``fps`` (video/camera), and :meth:`frames`."""

    kind: str
    label: str
    total: int | None
    fps: float | None
    _frames: object
    paths: tuple[Path, ...] = ()

    def frames(self) -> Iterator[tuple[str, np.ndarray]]:
        """``(name, RGB uint8 (H, W, 3))`` pairs: file names for images, ``frame-000123`` for video."""
        return self._frames()


def camera_index(text: str) -> int | None:
    """The OpenCV camera index of ``0``, ``camera:0`` or ``/dev/video0``; None for anything else."""
    m = re.fullmatch(r"(?:camera:|/dev/video)?(\d{1,3})", text.strip())
    if m and (text.strip().isdigit() or text.startswith(("camera:", "/dev/video"))):
        return int(m.group(1))
    return None


def open_source(spec: str | Path, *, max_frames: int | None = None) -> Source:
    """The source named by ``spec``: a camera (``0``, ``camera:0``, ``/dev/video0``), a folder, a
    video file (by extension) or an image file. ``max_frames`` stops a video or camera early."""
    text = str(spec)
    cam = camera_index(text)
    path = Path(text)
    if cam is not None and not path.exists() or text.startswith("/dev/video"):
        return _capture(cam if cam is not None else 0, f"camera {cam}", "camera", max_frames)
    if path.is_dir():
        paths = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
                       key=lambda p: p.name)
        if not paths:
            raise EdgeprotoError(f"folder {path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        if len(paths) > MAX_FOLDER_IMAGES:
            raise EdgeprotoError(f"folder {path} holds {len(paths)} images; at most {MAX_FOLDER_IMAGES} per run")
        paths = paths[:max_frames] if max_frames else paths

        def images():
            for p in paths:
                yield p.name, np.asarray(load_image(p))
        return Source("folder", str(path), len(paths), None, images, tuple(paths))
    if not path.exists():
        what = "video file" if path.suffix.lower() in VIDEO_EXTENSIONS else "image file"
        raise EdgeprotoError(f"{what} not found: {path} (INPUT is an image, a folder of images, a video file or a "
                             "camera such as 0)")
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return _capture(str(path), path.name, "video", max_frames)

    def image():
        yield path.name, np.asarray(load_image(path))
    return Source("image", str(path), 1, None, image, (path,))


def _capture(device, label: str, kind: str, max_frames: int | None) -> Source:
    cv2 = cv2_module()
    cap = cv2.VideoCapture(device)
    if not cap.isOpened():
        cap.release()
        raise EdgeprotoError(f"cannot open {kind} {device}: OpenCV could not read it")
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if kind == "video" else 0
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0) or None
    total = count if count > 0 else None
    if max_frames:
        total = min(total, max_frames) if total else max_frames

    def frames():
        n = 0
        try:
            while max_frames is None or n < max_frames:
                ok, bgr = cap.read()
                if not ok:
                    break
                yield f"frame-{n:06d}", np.ascontiguousarray(bgr[..., ::-1])
                n += 1
        finally:
            cap.release()
        if n == 0:
            raise EdgeprotoError(f"{kind} {device} gave no frames (unsupported codec or empty file)")
    return Source(kind, label, total, fps, frames)
