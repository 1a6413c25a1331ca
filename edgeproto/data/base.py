"""The common dataset base: labelled RGB images at one size, optional ground-truth part masks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from edgeproto.data.options import check_split
from edgeproto.errors import EdgeprotoError
from edgeproto.data.preprocess import to_input, to_raw

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageDataset(Dataset):
    """Base for every edgeproto dataset.

    ``ds[i]`` is ``(float32 tensor (3, S, S) made by preprocess.to_input, int label)``;
    ``raw_image(i)`` is the same picture as uint8 (S, S, 3) for visualisation; ``part_masks(i)``
    is bool (P, S, S) over ``part_names`` or None when the dataset has no parts.
    Subclasses implement :meth:`source_image` (and :meth:`part_masks` if they have parts).
    A segmentation dataset sets ``task = "segmentation"`` and implements :meth:`mask`; its
    ``classes`` are then the pixel classes. A multi-label dataset sets ``task = "multilabel"`` and
    ``targets``, the (N, C) 0/1 matrix of each image's label set (``labels`` keeps one of them).
    """

    task = "classification"
    superpixels = 0  # > 0: ds[i] appends a SLIC label map of that many regions as a 4th channel

    def __init__(
        self,
        *,
        split: str,
        classes: Sequence[str],
        labels: Sequence[int] | np.ndarray,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        part_names: Sequence[str] = (),
    ) -> None:
        self.split = check_split(split)
        self.classes: list[str] = list(classes)
        self.labels: np.ndarray = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.image_size: int = int(image_size)
        self.mean: tuple[float, float, float] = tuple(float(v) for v in mean)  # type: ignore[assignment]
        self.std: tuple[float, float, float] = tuple(float(v) for v in std)  # type: ignore[assignment]
        self.part_names: list[str] = list(part_names)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        i = self._index(index)
        img = self.source_image(i)
        x = to_input(img, self.image_size, self.mean, self.std)
        if self.superpixels:
            from edgeproto.data.superpixels import with_superpixels

            x = with_superpixels(x, to_raw(img, self.image_size), self.superpixels)
        return torch.from_numpy(x), int(self.labels[i])

    def source_image(self, index: int) -> Image.Image:
        """Image ``index`` before resizing (any size and mode; to_input/to_raw convert it)."""
        raise NotImplementedError

    def raw_image(self, index: int) -> np.ndarray:
        """Image ``index`` as uint8 (S, S, 3), exactly what ``ds[index]`` normalises."""
        return to_raw(self.source_image(self._index(index)), self.image_size)

    def part_masks(self, index: int) -> np.ndarray | None:
        """bool (P, S, S) ground-truth mask per entry of ``part_names``; None without parts."""
        self._index(index)
        return None

    def mask(self, index: int) -> np.ndarray:
        """uint8 (S, S) pixel classes (``IGNORE_INDEX`` = not labelled); segmentation datasets only."""
        raise EdgeprotoError(f"{type(self).__name__} has no segmentation masks")

    def _index(self, index: int) -> int:
        """A valid non-negative index (negative counts from the end); IndexError otherwise."""
        n = len(self)
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"dataset index must be an integer, got {type(index).__name__}")
        i = int(index) + n if index < 0 else int(index)
        if not 0 <= i < n:
            raise IndexError(f"index {index} out of range for {self.split} split of size {n}")
        return i

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, n={len(self)}, classes={self.num_classes}, "
            f"image_size={self.image_size}, parts={len(self.part_names)})"
        )

