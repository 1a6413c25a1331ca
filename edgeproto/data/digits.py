"""scikit-learn's bundled handwritten digits (1797 real 8x8 scans, 0..16; no download).

Upsampled bilinearly to image_size as RGB; a deterministic stratified 75/25 train/test split
(``train_test_split`` with ``seed``). No part annotations.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from edgeproto.data.base import ImageDataset
from edgeproto.data.options import check_split, int_option
from edgeproto.errors import EdgeprotoError

TEST_FRACTION = 0.25


class DigitsDataset(ImageDataset):
    """Handwritten digits 0-9 from ``sklearn.datasets.load_digits``."""

    def __init__(self, split: str = "train", image_size: int = 32, seed: int = 0) -> None:
        check_split(split)
        size = int_option("image_size", image_size, 8, 512)
        self.seed = int_option("seed", seed, 0, 2**32 - 1)
        try:
            from sklearn.datasets import load_digits
            from sklearn.model_selection import train_test_split
        except ImportError:  # pragma: no cover - sklearn ships with the train extra
            raise EdgeprotoError(
                "the 'digits' dataset needs scikit-learn: pip install 'edgeproto[train]'"
            ) from None
        digits = load_digits()
        index = np.arange(len(digits.target))
        train, test = train_test_split(
            index, test_size=TEST_FRACTION, stratify=digits.target, random_state=self.seed
        )
        chosen = np.sort(train if split == "train" else test)
        super().__init__(
            split=split,
            classes=[str(d) for d in range(10)],
            labels=digits.target[chosen],
            image_size=size,
            mean=(0.3, 0.3, 0.3),  # measured over the upsampled images
            std=(0.32, 0.32, 0.32),
        )
        self.source_index: np.ndarray = chosen  # row in load_digits() of each sample
        self._pixels = np.rint(digits.images[chosen] * (255.0 / 16.0)).astype(np.uint8)

    def source_image(self, index: int) -> Image.Image:
        return Image.fromarray(self._pixels[self._index(index)], "L")
