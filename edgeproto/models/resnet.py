"""ResNet-18/34/50/101/152 feature extractors in torchvision's state-dict key layout, no classifier.

Keys are ``conv1``, ``bn1``, ``layer{1..4}.{i}.conv{1,2[,3]}``, ``bn*``, ``downsample.{0,1}``: a
torchvision ResNet state dict without ``fc.*`` loads as is, and so does the ``features.*`` part of
a checkpoint saved by the official ProtoPNet (``resnet_features.ResNet_features``), which is the same
network without the average pool and the fully connected layer.
"""

from __future__ import annotations

from torch import Tensor, nn

from edgeproto.models.backbones import register_backbone


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)


class ResNetBasicBlock(nn.Module):
    """Two 3×3 convolutions (stride on the first) and the residual sum."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv(cin, planes, 3, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv(planes, planes, 3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNetBottleneck(nn.Module):
    """1×1 → 3×3 (stride here, as torchvision and ProtoPNet) → 1×1 (×4 channels), residual sum."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv(cin, planes, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv(planes, planes * 4, 1)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNetFeatures(nn.Module):
    """7×7/2 stem, 3×3/2 max-pool, four stages (64, 128, 256, 512 planes); output stride 32."""

    def __init__(self, block: type[nn.Module], layers: tuple[int, int, int, int], in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            out = planes * block.expansion
            down = None
            if stride != 1 or cin != out:
                down = nn.Sequential(_conv(cin, out, 1, stride), nn.BatchNorm2d(out))
            stage = [block(cin, planes, stride, down)] + [block(out, planes) for _ in range(blocks - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))
            cin = out
        self.out_channels = cin
        self.stride = 32

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


RESNETS = {
    "resnet18": (ResNetBasicBlock, (2, 2, 2, 2)),
    "resnet34": (ResNetBasicBlock, (3, 4, 6, 3)),
    "resnet50": (ResNetBottleneck, (3, 4, 6, 3)),
    "resnet101": (ResNetBottleneck, (3, 4, 23, 3)),
    "resnet152": (ResNetBottleneck, (3, 8, 36, 3)),
}


def _factory(name: str):
    block, layers = RESNETS[name]

    def build(in_channels: int = 3) -> ResNetFeatures:
        return ResNetFeatures(block, layers, in_channels)

    build.__name__ = name
    build.__doc__ = f"{name} feature extractor (torchvision key layout, no classifier)."
    return build


for _name in RESNETS:
    register_backbone(_name)(_factory(_name))
