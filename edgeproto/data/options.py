"""Dataset config keys per dataset name, and checks that turn bad values into EdgeprotoError.

torch-free: ``build_dataset`` validates a config before importing any dataset module.
Defaults live in the dataset constructors; this table only says which keys each accepts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeproto.errors import EdgeprotoError

SPLITS = ("train", "test")
IGNORE_INDEX = 255  # segmentation masks: pixels that count for no class (loss and metrics skip them)

# name -> (module, class, accepted keys besides "name", required keys)
DATASETS: dict[str, tuple[str, str, tuple[str, ...], tuple[str, ...]]] = {
    "procedural": (
        "edgeproto.data.procedural",
        "ProceduralDataset",
        ("image_size", "num_classes", "train_size", "test_size", "seed", "rule", "task", "superpixels"),
        (),
    ),
    "digits": ("edgeproto.data.digits", "DigitsDataset", ("image_size", "seed"), ()),
    "folder": ("edgeproto.data.folder", "FolderDataset", ("root", "image_size", "seed"), ("root",)),
    "cub": ("edgeproto.data.cub", "CubDataset", ("root", "image_size", "crop_to_bbox"), ("root",)),
    "seg_folder": ("edgeproto.data.seg_folder", "SegFolderDataset", ("root", "classes", "image_size", "seed"),
                   ("root", "classes")),
    "multilabel_folder": ("edgeproto.data.multilabel_folder", "MultilabelFolderDataset",
                          ("root", "classes", "image_size", "seed"), ("root",)),
}


def check_config(config: Mapping[str, Any], split: str) -> tuple[str, dict[str, Any]]:
    """Validate a dataset config's name, keys and split; return (name, keyword options)."""
    if not isinstance(config, Mapping):
        raise EdgeprotoError(f"dataset config must be a mapping, got {type(config).__name__}")
    names = ", ".join(DATASETS)
    if "name" not in config:
        raise EdgeprotoError(f"dataset config needs a 'name'; allowed names: {names}")
    name = config["name"]
    if name not in DATASETS:
        raise EdgeprotoError(f"unknown dataset name {name!r}; allowed names: {names}")
    _, _, keys, required = DATASETS[name]
    unknown = sorted(str(k) for k in config if k != "name" and k not in keys)
    if unknown:
        allowed = ", ".join(("name",) + keys)
        raise EdgeprotoError(
            f"unknown key(s) {', '.join(repr(k) for k in unknown)} in dataset config {name!r}; "
            f"allowed keys: {allowed}"
        )
    missing = [k for k in required if k not in config]
    if missing:
        raise EdgeprotoError(f"dataset {name!r} needs key(s): {', '.join(missing)}")
    check_split(split)
    return name, {k: v for k, v in config.items() if k != "name"}


def check_split(split: str) -> str:
    """The split name, or EdgeprotoError naming the allowed ones."""
    if split not in SPLITS:
        raise EdgeprotoError(f"unknown split {split!r}; allowed splits: {', '.join(SPLITS)}")
    return split


def int_option(key: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """An integer option within [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise EdgeprotoError(f"dataset option {key!r} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and at most {maximum}"
        raise EdgeprotoError(f"dataset option {key!r} must be at least {minimum}{upper}, got {value}")
    return value


def bool_option(key: str, value: Any) -> bool:
    """A true/false option."""
    if not isinstance(value, bool):
        raise EdgeprotoError(f"dataset option {key!r} must be true or false, got {value!r}")
    return value


def path_option(key: str, value: Any) -> Path:
    """A filesystem path option (existence is checked by the dataset, which names what is missing)."""
    if not isinstance(value, (str, Path)) or str(value) == "":
        raise EdgeprotoError(f"dataset option {key!r} must be a path, got {value!r}")
    return Path(value).expanduser()
