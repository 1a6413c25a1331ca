"""VGG-11/13/16/19 (with or without BatchNorm) feature extractors, torchvision key layout.

The convolutional part only: ``features.N`` as torchvision's ``VGG.features`` (3×3 convolutions
with bias, [BatchNorm,] ReLU, 2×2 max-pools, including the last pool: output stride 32), which is
what the official ProtoPNet's ``vgg_features.VGG_features`` holds under the same key.
"""

from __future__ import annotations

from torch import Tensor, nn

from edgeproto.models.backbones import register_backbone

# torchvision's / ProtoPNet's configurations: channel counts, "M" = 2×2 max-pool
VGG_CONFIGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


class VGGFeatures(nn.Module):
    """``features``: the VGG convolution stack of one configuration."""

    def __init__(self, config: list, batch_norm: bool = False, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool2d(2, stride=2))
                continue
            layers.append(nn.Conv2d(cin, v, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            cin = v
        self.features = nn.Sequential(*layers)
        self.out_channels = cin
        self.stride = 2 ** config.count("M")

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


def _factory(name: str, batch_norm: bool):
    def build(in_channels: int = 3) -> VGGFeatures:
        return VGGFeatures(VGG_CONFIGS[name], batch_norm, in_channels)

    build.__name__ = name + ("_bn" if batch_norm else "")
    build.__doc__ = f"{build.__name__} feature extractor (torchvision key layout, no classifier)."
    return build


for _name in VGG_CONFIGS:
    register_backbone(_name)(_factory(_name, False))
    register_backbone(_name + "_bn")(_factory(_name, True))
