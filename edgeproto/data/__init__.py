"""Datasets for prototype models, built from a config dict.

Importing this package does not import torch (datasets load lazily in :func:`build_dataset`),
so :mod:`edgeproto.data.preprocess` stays usable on edge devices.

Names: ``procedural`` (default; synthetic shapes with exact part masks), ``digits`` (scikit-learn's
bundled handwritten digits), ``folder`` (``root/<class>/*.png``), ``cub`` (CUB-200-2011 layout), ``seg_folder``, ``multilabel_folder``
(``root/images/*`` + ``root/labels.csv``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from edgeproto.data.options import DATASETS, SPLITS, check_config
from edgeproto.errors import EdgeprotoError

if TYPE_CHECKING:
    from edgeproto.data.base import ImageDataset

__all__ = ["DATASETS", "SPLITS", "build_dataset"]


def build_dataset(config: Mapping[str, Any], split: str) -> ImageDataset:
    """The ``split`` ("train" or "test") of the dataset that ``config`` describes.

    ``config["name"]`` picks the dataset; the other keys are its options (see each dataset class).
    Unknown names or keys raise EdgeprotoError listing the allowed ones.
    """
    if config is None:
        raise EdgeprotoError("this checkpoint has no dataset (it was imported without --data): import it again "
                             "with --data DIR (an image folder or the CUB-200-2011 layout)")
    name, options = check_config(config, split)
    module_name, class_name, _, _ = DATASETS[name]
    dataset_class = getattr(importlib.import_module(module_name), class_name)
    return dataset_class(split=split, **options)
