"""Where streamed explanations go: an annotated MP4 (OpenCV), a figure PNG per image, and one JSON
line per frame. Each output appears whole or not at all: the MP4 and the JSON Lines file are written
under a temporary name and renamed when the run completes; every PNG is written atomically.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from edgeproto import atomic_files
from edgeproto.device.annotate import annotate_frame, cv2_module
from edgeproto.errors import EdgeprotoError


class JsonLines:
    """One JSON record per frame, published at :meth:`close`."""

    def __init__(self, path: Path, stack: contextlib.ExitStack) -> None:
        self.path = path
        self._tmp = stack.enter_context(atomic_files.staged_path(path))
        self._fh = stack.enter_context(open(self._tmp, "w", encoding="utf-8"))

    def write(self, record: dict) -> None:
        self._fh.write(json.dumps(record) + "\n")


class VideoOut:
    """An annotated MP4 (``mp4v``), opened at the first frame's size, published when the stack closes."""

    def __init__(self, path: Path, fps: float | None, map_range, stack: contextlib.ExitStack) -> None:
        self.path, self.fps, self.map_range = path, fps or 25.0, map_range
        self._tmp = stack.enter_context(atomic_files.staged_path(path, suffix=path.suffix or ".mp4"))
        self._writer = None
        stack.callback(self._release)

    def write(self, frame, result) -> None:
        cv2 = cv2_module()
        bgr = annotate_frame(frame, result, self.map_range)
        if self._writer is None:
            h, w = bgr.shape[:2]
            self._size = (w, h)
            self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._writer.isOpened():
                raise EdgeprotoError(f"OpenCV cannot write an MP4 video at {self.path}")
        if (bgr.shape[1], bgr.shape[0]) != self._size:
            bgr = cv2.resize(bgr, self._size)
        self._writer.write(bgr)

    def _release(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
