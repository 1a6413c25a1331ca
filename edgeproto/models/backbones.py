"""Backbones defined in the project (no hub downloads), registered by name like timm's models."""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from edgeproto.errors import EdgeprotoError

_BACKBONES: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str):
    """Class decorator: make a backbone constructible from a recipe as ``backbone: {name: ...}``."""

    def wrap(cls):
        _BACKBONES[name] = cls
        return cls

    return wrap


def create_backbone(name: str, **kwargs) -> nn.Module:
    """Build a registered backbone; it exposes ``out_channels`` and ``stride``."""
    if name not in _BACKBONES:
        raise EdgeprotoError(f"unknown backbone {name!r}; known: {', '.join(sorted(_BACKBONES))}")
    try:
        return _BACKBONES[name](**kwargs)
    except TypeError as exc:
        raise EdgeprotoError(f"backbone {name!r}: {exc}") from None


def _conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


@register_backbone("small_cnn")
class SmallCNN(nn.Module):
    """``stages`` × (conv-bn-relu, conv-bn-relu, 2× max-pool); width doubles per stage up to 4×."""

    def __init__(self, in_channels: int = 3, width: int = 32, stages: int = 3) -> None:
        super().__init__()
        layers, cin = [], in_channels
        for i in range(stages):
            cout = width * min(2**i, 4)
            layers += [_conv_bn_relu(cin, cout), _conv_bn_relu(cout, cout), nn.MaxPool2d(2)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.out_channels = cin
        self.stride = 2**stages

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3×3 convs and a projection shortcut when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn_relu(cin, cout, stride),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.shortcut(x))


@register_backbone("small_resnet")
class SmallResNet(nn.Module):
    """A ResNet: stem, then ``len(widths)`` stages of ``blocks`` basic blocks, stride 2 from stage 2.

    ``widths=(64, 128, 256, 512), blocks=2, stem_stride=4`` is ResNet-18-sized (for CUB-scale timing).
    """

    def __init__(
        self,
        in_channels: int = 3,
        widths: tuple[int, ...] | list[int] = (32, 64, 128),
        blocks: int = 2,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        stem: list[nn.Module] = [_conv_bn_relu(in_channels, widths[0], stride=2 if stem_stride > 1 else 1)]
        if stem_stride > 2:
            stem.append(nn.MaxPool2d(3, stride=stem_stride // 2, padding=1))
        stages, cin = [], widths[0]
        for i, cout in enumerate(widths):
            for b in range(blocks):
                stages.append(BasicBlock(cin, cout, 2 if (i > 0 and b == 0) else 1))
                cin = cout
        self.features = nn.Sequential(*stem, *stages)
        self.out_channels = cin
        self.stride = stem_stride * 2 ** (len(widths) - 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


@register_backbone("dilated_cnn")
class DilatedCNN(nn.Module):
    """A DeepLab-style dense backbone: a 3×3 stem, ``downsample`` stride-2 convs (stride 2**downsample),
    then 3×3 convs of growing dilation (a wide receptive field on a fine grid, for segmentation)."""

    def __init__(self, in_channels: int = 3, width: int = 16, dilations: tuple[int, ...] | list[int] = (1, 2, 4, 8),
                 downsample: int = 1) -> None:
        super().__init__()
        layers = [_conv_bn_relu(in_channels, width), _conv_bn_relu(width, 2 * width, stride=2)]
        layers += [_conv_bn_relu(2 * width, 2 * width, stride=2) for _ in range(downsample - 1)]
        for d in dilations:
            layers += [nn.Conv2d(2 * width, 2 * width, 3, padding=d, dilation=d, bias=False),
                       nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.out_channels = 2 * width
        self.stride = 2**downsample

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


def backbones() -> list[str]:
    """Names of the registered backbones."""
    return sorted(_BACKBONES)
