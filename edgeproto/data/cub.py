"""CUB-200-2011 in its published folder layout, with part keypoints as ground-truth masks.

``root`` holds ``images.txt`` ("id relpath"), ``image_class_labels.txt`` ("id label", 1-based),
``train_test_split.txt`` ("id is_train"), ``classes.txt`` ("label name"), ``bounding_boxes.txt``
("id x y w h"; needed for ``crop_to_bbox``), ``parts/parts.txt`` ("part_id name"),
``parts/part_locs.txt`` ("img_id part_id x y visible") and ``images/<relpath>``.
Without a ``parts/`` folder the dataset has no parts.

Keypoints are pixel coordinates in the original image. After the optional crop to the bounding box
(rounded outwards to whole pixels) and the resize to S x S, a point maps to
``x' = (x - left) * S / crop_width`` (same for y); a point that falls outside the crop counts as
not visible. ``part_masks`` draws a disk of radius S/28 around each visible point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from edgeproto.data.base import IMAGENET_MEAN, IMAGENET_STD, ImageDataset
from edgeproto.data.options import bool_option, check_split, int_option, path_option
from edgeproto.data.preprocess import load_image, read_image_size
from edgeproto.errors import EdgeprotoError

PART_RADIUS_FRACTION = 1 / 28  # disk radius as a fraction of image_size (8 px at 224)

_Row = tuple[int, tuple]  # (line number, parsed fields)


class CubDataset(ImageDataset):
    """CUB-200-2011 (or anything in its layout): birds, 200 classes, 15 part keypoints."""

    def __init__(
        self,
        split: str = "train",
        root: str | Path = "",
        image_size: int = 224,
        crop_to_bbox: bool = False,
    ) -> None:
        check_split(split)
        root = path_option("root", root)
        size = int_option("image_size", image_size, 8, 2048)
        self.crop_to_bbox = bool_option("crop_to_bbox", crop_to_bbox)
        if not root.is_dir():
            raise EdgeprotoError(f"CUB folder not found: {root}")
        self.root = root

        images = _by_id(root / "images.txt", [("id", int), ("relpath", str)])
        labels = _by_id(root / "image_class_labels.txt", [("id", int), ("label", int)])
        is_train = _by_id(root / "train_test_split.txt", [("id", int), ("is_train", _flag)])
        class_rows = _by_id(root / "classes.txt", [("label", int), ("name", str)])
        for path, table in (
            (root / "image_class_labels.txt", labels),
            (root / "train_test_split.txt", is_train),
        ):
            for image_id in images:
                if image_id not in table:
                    raise EdgeprotoError(f"{path}: no line for image id {image_id} (from images.txt)")
        class_ids = sorted(class_rows)
        class_index = {label: k for k, label in enumerate(class_ids)}
        for image_id, (line, (label,)) in labels.items():
            if label not in class_index:
                raise EdgeprotoError(
                    f"{root / 'image_class_labels.txt'}:{line}: class label {label} is not in classes.txt"
                )

        want = 1 if split == "train" else 0
        self.image_ids: list[int] = [i for i in images if is_train[i][1][0] == want]
        self.files: list[Path] = [root / "images" / images[i][1][0] for i in self.image_ids]
        for i, f in zip(self.image_ids, self.files):
            if not f.is_file():
                raise EdgeprotoError(f"image file not found: {f} (image id {i} in images.txt)")

        self._boxes: dict[int, tuple[float, float, float, float]] = {}
        bbox_path = root / "bounding_boxes.txt"
        if self.crop_to_bbox or bbox_path.exists():
            fields = [("id", int), ("x", _finite), ("y", _finite), ("w", _positive), ("h", _positive)]
            boxes = _by_id(bbox_path, fields)
            for i in self.image_ids:
                if i not in boxes and self.crop_to_bbox:
                    raise EdgeprotoError(f"{bbox_path}: no line for image id {i} (from images.txt)")
            self._boxes = {i: boxes[i][1] for i in self.image_ids if i in boxes}

        part_names, points = _read_parts(root, set(images))
        self._points = {i: points.get(i) for i in self.image_ids}  # raw (P, 3) or None
        self._sizes: dict[int, tuple[int, int]] = {}  # image id -> (width, height), lazily

        super().__init__(
            split=split,
            classes=[class_rows[c][1][0] for c in class_ids],
            labels=[class_index[labels[i][1][0]] for i in self.image_ids],
            image_size=size,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            part_names=part_names,
        )

    def source_image(self, index: int) -> Image.Image:
        i = self._index(index)
        img = load_image(self.files[i])
        if self.crop_to_bbox:
            img = img.crop(self._region(i))
        return img

    def part_points(self, index: int) -> np.ndarray:
        """float (P, 3): x, y in resized (and cropped) pixel coordinates, and visible 0/1."""
        i = self._index(index)
        raw = self._points[self.image_ids[i]]
        out = np.zeros((len(self.part_names), 3), dtype=np.float64)
        if raw is None:
            return out
        left, top, right, bottom = self._region(i)
        s = self.image_size
        x = (raw[:, 0] - left) * (s / (right - left))
        y = (raw[:, 1] - top) * (s / (bottom - top))
        visible = (raw[:, 2] > 0) & (x >= 0) & (x < s) & (y >= 0) & (y < s)
        out[visible, 0] = x[visible]
        out[visible, 1] = y[visible]
        out[visible, 2] = 1.0
        return out

    def part_masks(self, index: int) -> np.ndarray | None:
        """bool (P, S, S): a disk of radius S/28 around each visible keypoint; None without parts."""
        if not self.part_names:
            self._index(index)
            return None
        points = self.part_points(index)
        s = self.image_size
        radius = max(1.0, s * PART_RADIUS_FRACTION)
        centres = np.arange(s) + 0.5  # pixel (row, col) covers [col, col+1) x [row, row+1)
        dy = (centres[None, :, None] - points[:, 1, None, None]) ** 2
        dx = (centres[None, None, :] - points[:, 0, None, None]) ** 2
        return (dx + dy <= radius**2) & (points[:, 2, None, None] > 0)

    def _region(self, i: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the source image that becomes the S x S input."""
        image_id = self.image_ids[i]
        if image_id not in self._sizes:
            self._sizes[image_id] = read_image_size(self.files[i])
        width, height = self._sizes[image_id]
        if not self.crop_to_bbox:
            return 0, 0, width, height
        x, y, w, h = self._boxes[image_id]
        left, top = max(0, math.floor(x)), max(0, math.floor(y))
        right, bottom = min(width, math.ceil(x + w)), min(height, math.ceil(y + h))
        if right <= left or bottom <= top:
            raise EdgeprotoError(
                f"{self.root / 'bounding_boxes.txt'}: box for image id {image_id} "
                f"({x}, {y}, {w}, {h}) lies outside {self.files[i]} ({width}x{height})"
            )
        return left, top, right, bottom


def _read_parts(root: Path, image_ids: set[int]) -> tuple[list[str], dict[int, np.ndarray]]:
    """Part names in part-id order, and image id -> raw (P, 3) keypoints (x, y, visible)."""
    parts_txt, locs_txt = root / "parts" / "parts.txt", root / "parts" / "part_locs.txt"
    if not parts_txt.exists() and not locs_txt.exists():
        return [], {}
    parts = _by_id(parts_txt, [("part_id", int), ("name", str)])
    part_ids = sorted(parts)
    part_index = {p: k for k, p in enumerate(part_ids)}
    fields = [("img_id", int), ("part_id", int), ("x", _finite), ("y", _finite), ("visible", _flag)]
    points: dict[int, np.ndarray] = {}
    for line, (image_id, part_id, x, y, visible) in _read_rows(locs_txt, fields):
        where = f"{locs_txt}:{line}"
        if image_id not in image_ids:
            raise EdgeprotoError(f"{where}: image id {image_id} is not in images.txt")
        if part_id not in part_index:
            raise EdgeprotoError(f"{where}: part id {part_id} is not in parts/parts.txt")
        if image_id not in points:
            points[image_id] = np.zeros((len(part_ids), 3), dtype=np.float64)
        points[image_id][part_index[part_id]] = (x, y, visible)
    return [parts[p][1][0] for p in part_ids], points


def _read_rows(path: Path, fields: Sequence[tuple[str, Callable]]) -> list[_Row]:
    """Parse a whitespace-separated index file; the last str field takes the rest of the line."""
    if not path.is_file():
        raise EdgeprotoError(f"CUB index file not found: {path}")
    layout = " ".join(name for name, _ in fields)
    rest = fields[-1][1] is str
    rows: list[_Row] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise EdgeprotoError(f"cannot read CUB index file {path}: {err}") from None
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=len(fields) - 1) if rest else line.split()
        try:
            if len(parts) != len(fields):
                raise ValueError
            rows.append((line_no, tuple(conv(p) for (_, conv), p in zip(fields, parts))))
        except ValueError:
            raise EdgeprotoError(
                f"{path}:{line_no}: malformed line {line.strip()!r}; expected '{layout}'"
            ) from None
    return rows


def _by_id(path: Path, fields: Sequence[tuple[str, Callable]]) -> dict[int, _Row]:
    """First field (an id) -> (line number, remaining fields); duplicate ids are an error."""
    out: dict[int, _Row] = {}
    for line, values in _read_rows(path, fields):
        key = values[0]
        if key in out:
            raise EdgeprotoError(f"{path}:{line}: {fields[0][0]} {key} already on line {out[key][0]}")
        out[key] = (line, values[1:])
    return out


def _flag(text: str) -> int:
    if text.strip() not in ("0", "1", "0.0", "1.0"):
        raise ValueError(text)
    return int(float(text))


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise ValueError(text)
    return value
