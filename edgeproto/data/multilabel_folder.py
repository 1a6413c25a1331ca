"""A multi-label image folder: ``root/images/*.png|jpg|…`` and ``root/labels.csv``.

``labels.csv`` has the header ``file,labels`` and one row per image: the file name inside
``images/`` and its label names separated by ``;`` (an empty field: an image with none of the labels,
a negative example)::

    file,labels
    beach.jpg,sand;sea;sky
    street.png,car
    wall.png,

The labels are the ``classes`` option when given (then a label outside it is an error), otherwise
every label name the file uses, sorted. The images are split 80/20 train/test, deterministically by
``seed``. Checked when the dataset is built (one clear error each): a missing ``labels.csv`` or
header, a row naming a file that is not in ``images/``, an image without a row, a file listed twice,
an unknown label, and no image or no label at all. No part annotations.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edgeproto.data.base import IMAGENET_MEAN, IMAGENET_STD, ImageDataset
from edgeproto.data.options import check_split, int_option, path_option
from edgeproto.data.preprocess import IMAGE_EXTENSIONS, load_image, read_image_size
from edgeproto.errors import EdgeprotoError

LABELS_FILE = "labels.csv"
HEADER = ["file", "labels"]
SEPARATOR = ";"
TEST_FRACTION = 0.2


class MultilabelFolderDataset(ImageDataset):
    """Images with label sets from ``images/`` + ``labels.csv`` (see the module docstring)."""

    task = "multilabel"

    def __init__(self, split: str = "train", root: str | Path = "", classes: Any = None, image_size: int = 64,
                 seed: int = 0) -> None:
        check_split(split)
        root = path_option("root", root)
        size = int_option("image_size", image_size, 8, 2048)
        self.seed = int_option("seed", seed, 0, 2**32 - 1)
        if not root.is_dir():
            raise EdgeprotoError(f"multi-label folder not found: {root}")
        rows = read_labels(root)
        names = _class_names(classes, rows)
        index = {n: k for k, n in enumerate(names)}
        files = sorted(rows)
        for f in files:
            read_image_size(root / "images" / f)  # header check now, so a non-image fails before training
        n_test = max(1, int(round(TEST_FRACTION * len(files)))) if len(files) >= 2 else 0
        order = np.random.default_rng([self.seed]).permutation(len(files))
        chosen = sorted(order[:n_test] if split == "test" else order[n_test:])
        self.files: list[Path] = [root / "images" / files[i] for i in chosen]
        self.targets: np.ndarray = np.zeros((len(chosen), len(names)), dtype=np.uint8)
        for r, i in enumerate(chosen):
            for label in rows[files[i]]:
                self.targets[r, index[label]] = 1
        labels = [int(np.argmax(t)) if t.any() else 0 for t in self.targets]
        super().__init__(split=split, classes=names, labels=labels, image_size=size, mean=IMAGENET_MEAN,
                         std=IMAGENET_STD)

    def source_image(self, index: int) -> Image.Image:
        return load_image(self.files[self._index(index)])


def read_labels(root: Path) -> dict[str, list[str]]:
    """``labels.csv`` of ``root`` checked against ``root/images``: file name → its label names."""
    path, folder = root / LABELS_FILE, root / "images"
    if not path.is_file():
        raise EdgeprotoError(f"no {LABELS_FILE} in {root}: a multi-label folder has images/ and {LABELS_FILE} "
                             f"(header '{','.join(HEADER)}', labels separated by '{SEPARATOR}')")
    if not folder.is_dir():
        raise EdgeprotoError(f"folder not found: {folder} (expected images/ beside {LABELS_FILE})")
    images = {f.name for f in folder.iterdir()
              if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            table = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise EdgeprotoError(f"cannot read {path}: {err}") from None
    if not table or [c.strip() for c in table[0]] != HEADER:
        raise EdgeprotoError(f"{path}: the first line must be the header '{','.join(HEADER)}'")
    rows: dict[str, list[str]] = {}
    for line, row in enumerate(table[1:], start=2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) != 2:
            raise EdgeprotoError(f"{path} line {line}: expected 2 fields (file, labels), got {len(row)}")
        name = row[0].strip()
        if name not in images:
            raise EdgeprotoError(f"{path} line {line}: unknown file {name!r}: not an image in {folder}")
        if name in rows:
            raise EdgeprotoError(f"{path} line {line}: file {name!r} is listed twice")
        labels = [x.strip() for x in row[1].split(SEPARATOR) if x.strip()]
        if len(set(labels)) != len(labels):
            raise EdgeprotoError(f"{path} line {line}: file {name!r} names a label twice: {labels}")
        rows[name] = labels
    unlisted = sorted(images - set(rows))
    if unlisted:
        raise EdgeprotoError(f"image {folder / unlisted[0]} has no row in {path}"
                             + (f" (and {len(unlisted) - 1} more)" if len(unlisted) > 1 else ""))
    if not rows:
        raise EdgeprotoError(f"{path} lists no images")
    return rows


def _class_names(classes: Any, rows: dict[str, list[str]]) -> list[str]:
    used = sorted({label for labels in rows.values() for label in labels})
    if classes is None:
        if not used:
            raise EdgeprotoError("labels.csv gives no image a label: nothing to learn")
        return used
    if (not isinstance(classes, (list, tuple)) or not classes
            or not all(isinstance(c, str) and c.strip() and SEPARATOR not in c for c in classes)):
        raise EdgeprotoError(f"dataset option 'classes' must be a list of label names (without '{SEPARATOR}'), "
                             f"got {classes!r}")
    if len(set(classes)) != len(classes):
        raise EdgeprotoError(f"dataset option 'classes' names a label twice: {list(classes)}")
    for name, labels in sorted(rows.items()):
        unknown = [x for x in labels if x not in classes]
        if unknown:
            raise EdgeprotoError(f"labels.csv: file {name!r} has unknown label {unknown[0]!r}; "
                                 f"known (option 'classes'): {', '.join(classes)}")
    return list(classes)
