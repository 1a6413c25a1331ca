"""DenseNet-121/161/169/201 feature extractors, torchvision key layout (current names).

``features.conv0/norm0``, ``features.denseblockN.denselayerM.{norm1,conv1,norm2,conv2}``,
``features.transitionN.{norm,conv}``, ``features.norm5``; then a ReLU, as the official ProtoPNet's
``densenet_features.DenseNet_features`` (``final_relu``) and torchvision's forward apply it.
Output stride 32; dropout is 0 (as both use it), so it is left out.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from edgeproto.models.backbones import register_backbone


class DenseLayer(nn.Sequential):
    """BN-ReLU-1×1 (bn_size·k) - BN-ReLU-3×3 (k), concatenated to its input."""

    def __init__(self, cin: int, growth: int, bn_size: int) -> None:
        super().__init__(OrderedDict([
            ("norm1", nn.BatchNorm2d(cin)),
            ("relu1", nn.ReLU(inplace=True)),
            ("conv1", nn.Conv2d(cin, bn_size * growth, 1, bias=False)),
            ("norm2", nn.BatchNorm2d(bn_size * growth)),
            ("relu2", nn.ReLU(inplace=True)),
            ("conv2", nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)),
        ]))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, super().forward(x)], 1)


class Transition(nn.Sequential):
    """BN-ReLU-1×1 (halves the channels) - 2×2 average pool."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(OrderedDict([
            ("norm", nn.BatchNorm2d(cin)),
            ("relu", nn.ReLU(inplace=True)),
            ("conv", nn.Conv2d(cin, cout, 1, bias=False)),
            ("pool", nn.AvgPool2d(2, stride=2)),
        ]))


class DenseNetFeatures(nn.Module):
    """DenseNet-BC: stem (7×7/2 conv, BN, ReLU, 3×3/2 max-pool), 4 dense blocks, BN, ReLU."""

    def __init__(self, growth: int, blocks: tuple[int, ...], init_features: int, bn_size: int = 4,
                 in_channels: int = 3) -> None:
        super().__init__()
        layers = OrderedDict([
            ("conv0", nn.Conv2d(in_channels, init_features, 7, stride=2, padding=3, bias=False)),
            ("norm0", nn.BatchNorm2d(init_features)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(3, stride=2, padding=1)),
        ])
        c = init_features
        for i, n in enumerate(blocks):
            layers[f"denseblock{i + 1}"] = nn.Sequential(OrderedDict(
                (f"denselayer{j + 1}", DenseLayer(c + j * growth, growth, bn_size)) for j in range(n)))
            c += n * growth
            if i != len(blocks) - 1:
                layers[f"transition{i + 1}"] = Transition(c, c // 2)
                c //= 2
        layers["norm5"] = nn.BatchNorm2d(c)
        layers["relu5"] = nn.ReLU(inplace=True)
        self.features = nn.Sequential(layers)
        self.out_channels = c
        self.stride = 32

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


# name -> (growth rate k, layers per block, initial features), as torchvision and ProtoPNet
DENSENETS = {
    "densenet121": (32, (6, 12, 24, 16), 64),
    "densenet161": (48, (6, 12, 36, 24), 96),
    "densenet169": (32, (6, 12, 32, 32), 64),
    "densenet201": (32, (6, 12, 48, 32), 64),
}


def _factory(name: str):
    growth, blocks, init = DENSENETS[name]

    def build(in_channels: int = 3) -> DenseNetFeatures:
        return DenseNetFeatures(growth, blocks, init, in_channels=in_channels)

    build.__name__ = name
    build.__doc__ = f"{name} feature extractor (torchvision key layout, no classifier)."
    return build


for _name in DENSENETS:
    register_backbone(_name)(_factory(_name))
