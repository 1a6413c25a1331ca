"""A segmentation folder: ``root/images/*.png|jpg|…`` with ``root/masks/<same stem>.png``.

A mask is an index PNG (mode ``L``) or a palette PNG (mode ``P``: its indices are the classes, the
palette only colours them), of the same size as its image. Each pixel holds a class index into the
``classes`` option (``classes[0]`` is usually ``background``) or ``IGNORE_INDEX`` (255: not labelled).
If ``root`` has ``train/`` and ``test/`` subfolders, each has its own ``images/`` and ``masks/``;
otherwise the images are split 80/20 train/test, deterministically by ``seed``.

Every mask is read and checked when the dataset is built, so a bad file stops before training:
an image without a mask (or a mask without an image), a mask of another size, a colour (RGB) mask,
or class indices beyond ``classes`` are each one clear error naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edgeproto.data.base import IMAGENET_MEAN, IMAGENET_STD, ImageDataset
from edgeproto.data.options import IGNORE_INDEX, check_split, int_option, path_option
from edgeproto.data.preprocess import IMAGE_EXTENSIONS, load_image, read_image_size
from edgeproto.errors import EdgeprotoError

TEST_FRACTION = 0.2
MASK_MODES = ("L", "P")


class SegFolderDataset(ImageDataset):
    """Images with per-pixel class masks from ``images/`` + ``masks/`` folders."""

    task = "segmentation"

    def __init__(
        self, split: str = "train", root: str | Path = "", classes: Any = None, image_size: int = 64, seed: int = 0
    ) -> None:
        check_split(split)
        root = path_option("root", root)
        size = int_option("image_size", image_size, 8, 2048)
        self.seed = int_option("seed", seed, 0, 2**32 - 1)
        names = _class_names(classes)
        if not root.is_dir():
            raise EdgeprotoError(f"segmentation folder not found: {root}")
        has_train, has_test = (root / "train").is_dir(), (root / "test").is_dir()
        if has_train != has_test:
            raise EdgeprotoError(f"{root} has only one of train/ and test/: give both, or neither "
                                 "(then the images are split 80/20)")
        if has_train:
            pairs = _pairs(root / split)
        else:
            pairs = _pairs(root)
            n_test = max(1, int(round(TEST_FRACTION * len(pairs)))) if len(pairs) >= 2 else 0
            order = np.random.default_rng([self.seed]).permutation(len(pairs))
            chosen = order[:n_test] if split == "test" else order[n_test:]
            pairs = [pairs[i] for i in sorted(chosen)]
        self.files: list[Path] = [img for img, _ in pairs]
        self.mask_files: list[Path] = [m for _, m in pairs]
        self._masks: list[np.ndarray] = []
        labels = []
        if not has_train:  # both splits come from one folder: a bad file fails either split
            others = set(_pairs(root)) - set(pairs)
            for img, m in sorted(others):
                _read_mask(m, read_image_size(img), len(names))
        for img, m in pairs:
            mask = _read_mask(m, read_image_size(img), len(names))
            resized = np.asarray(Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST))
            self._masks.append(resized)
            counts = np.bincount(resized[resized != IGNORE_INDEX].ravel(), minlength=len(names))
            labels.append(int(counts[1:].argmax()) + 1 if counts[1:].any() else 0)
        super().__init__(split=split, classes=names, labels=labels, image_size=size,
                         mean=IMAGENET_MEAN, std=IMAGENET_STD)

    def source_image(self, index: int) -> Image.Image:
        return load_image(self.files[self._index(index)])

    def mask(self, index: int) -> np.ndarray:
        return self._masks[self._index(index)].copy()


def _class_names(classes: Any) -> list[str]:
    if (not isinstance(classes, (list, tuple)) or len(classes) < 2
            or not all(isinstance(c, str) and c for c in classes)):
        raise EdgeprotoError(f"dataset option 'classes' must be a list of at least two class names "
                             f"(index 0 first, e.g. [background, ...]), got {classes!r}")
    if len(set(classes)) != len(classes):
        raise EdgeprotoError(f"dataset option 'classes' names a class twice: {list(classes)}")
    if len(classes) > IGNORE_INDEX:
        raise EdgeprotoError(f"at most {IGNORE_INDEX} classes (index {IGNORE_INDEX} means 'ignore')")
    return list(classes)


def _files(folder: Path, extensions) -> dict[str, Path]:
    if not folder.is_dir():
        raise EdgeprotoError(f"folder not found: {folder} (expected images/ and masks/ side by side)")
    return {f.stem: f for f in sorted(folder.iterdir())
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in extensions}


def _pairs(folder: Path) -> list[tuple[Path, Path]]:
    images, masks = _files(folder / "images", IMAGE_EXTENSIONS), _files(folder / "masks", (".png",))
    if not images:
        raise EdgeprotoError(f"no images in {folder / 'images'} ({', '.join(IMAGE_EXTENSIONS)})")
    lonely = sorted(set(images) - set(masks))
    if lonely:
        raise EdgeprotoError(f"image {images[lonely[0]]} has no mask {folder / 'masks' / (lonely[0] + '.png')}"
                             + (f" (and {len(lonely) - 1} more images without masks)" if len(lonely) > 1 else ""))
    orphans = sorted(set(masks) - set(images))
    if orphans:
        raise EdgeprotoError(f"mask {masks[orphans[0]]} has no image of the same name in {folder / 'images'}")
    return [(images[k], masks[k]) for k in sorted(images)]


def _read_mask(path: Path, image_size: tuple[int, int], num_classes: int) -> np.ndarray:
    """uint8 (H, W) class indices of one mask file, checked against its image and the classes."""
    try:
        with Image.open(path) as img:
            if img.size != image_size:
                raise EdgeprotoError(f"mask {path} is {img.size[0]}×{img.size[1]} but its image is "
                                     f"{image_size[0]}×{image_size[1]}: a mask must match its image pixel for pixel")
            if img.mode not in MASK_MODES:
                raise EdgeprotoError(f"mask {path} has mode {img.mode}: give an index (L) or palette (P) PNG "
                                     "whose pixel values are class indices")
            arr = np.array(img, dtype=np.uint8)
    except EdgeprotoError:
        raise
    except (OSError, SyntaxError, ValueError) as err:
        raise EdgeprotoError(f"cannot read mask {path}: {err}") from None
    values = np.unique(arr)
    bad = [int(v) for v in values if v >= num_classes and v != IGNORE_INDEX]
    if bad:
        raise EdgeprotoError(f"mask {path} holds class index(es) {bad[:5]} but there are {num_classes} classes "
                             f"(0..{num_classes - 1}; {IGNORE_INDEX} = ignore)")
    return arr
