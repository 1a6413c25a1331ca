"""An image folder: ``root/<class>/*.png|jpg|jpeg|bmp``; classes are the sorted subfolder names.

If ``root`` has both ``train/`` and ``test/`` subfolders, each holds its own ``<class>/`` folders
(the same class names in both). Otherwise each class is split 80/20 train/test, deterministically
by ``seed``. No part annotations.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from edgeproto.data.base import IMAGENET_MEAN, IMAGENET_STD, ImageDataset
from edgeproto.data.options import check_split, int_option, path_option
from edgeproto.data.preprocess import IMAGE_EXTENSIONS, load_image, read_image_size
from edgeproto.errors import EdgeprotoError

TEST_FRACTION = 0.2


class FolderDataset(ImageDataset):
    """Labelled images from class subfolders."""

    def __init__(
        self, split: str = "train", root: str | Path = "", image_size: int = 64, seed: int = 0
    ) -> None:
        check_split(split)
        root = path_option("root", root)
        size = int_option("image_size", image_size, 8, 2048)
        self.seed = int_option("seed", seed, 0, 2**32 - 1)
        if not root.is_dir():
            raise EdgeprotoError(f"image folder not found: {root}")
        self.root = root
        has_train, has_test = (root / "train").is_dir(), (root / "test").is_dir()
        if has_train != has_test:
            present, absent = ("train", "test") if has_train else ("test", "train")
            raise EdgeprotoError(
                f"{root} has a {present}/ folder but no {absent}/ folder: give both, or neither "
                "(then every class is split 80/20)"
            )
        if has_train:
            train, test = _class_files(root / "train"), _class_files(root / "test")
            if list(train) != list(test):
                raise EdgeprotoError(
                    f"{root}/train and {root}/test must hold the same class folders; "
                    f"train has {sorted(train)}, test has {sorted(test)}"
                )
            per_class = train if split == "train" else test
        else:
            per_class = {
                name: _split_files(files, split, [self.seed, k])
                for k, (name, files) in enumerate(_class_files(root).items())
            }
        files = [f for fs in per_class.values() for f in fs]
        labels = [k for k, fs in enumerate(per_class.values()) for _ in fs]
        for f in files:
            read_image_size(f)  # header check now, so a non-image fails before training starts
        super().__init__(
            split=split,
            classes=list(per_class),
            labels=labels,
            image_size=size,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
        )
        self.files: list[Path] = files

    def source_image(self, index: int) -> Image.Image:
        return load_image(self.files[self._index(index)])


def _class_files(folder: Path) -> dict[str, list[Path]]:
    """Sorted class name -> sorted image files; EdgeprotoError for no classes or an empty class."""
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise EdgeprotoError(
            f"no class folders in {folder}: expected {folder}/<class>/*"
            f"{{{','.join(IMAGE_EXTENSIONS)}}}"
        )
    out: dict[str, list[Path]] = {}
    for d in class_dirs:
        files = sorted(
            f for f in d.iterdir()
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise EdgeprotoError(
                f"class folder {d} has no images ({', '.join(IMAGE_EXTENSIONS)})"
            )
        out[d.name] = files
    return out


def _split_files(files: list[Path], split: str, seed: list[int]) -> list[Path]:
    """This split's share of one class: 20% test (at least one when the class has two or more)."""
    n = len(files)
    n_test = max(1, int(round(TEST_FRACTION * n))) if n >= 2 else 0
    order = np.random.default_rng(seed).permutation(n)
    chosen = order[:n_test] if split == "test" else order[n_test:]
    return [files[i] for i in sorted(chosen)]
