"""Models: registered backbones and the prototype network, built from a config by ``create_model``."""

from __future__ import annotations

from torch import nn

from edgeproto.models import densenet, efficientnet_lite, resnet, vgg  # noqa: F401  (register their backbones)
from edgeproto.models.archs import arch_builder, archs, register_arch
from edgeproto.models.backbones import backbones, create_backbone, register_backbone
from edgeproto.models.cbr_autoencoder import CbrAutoencoderNet, CbrDecoder, CbrEncoder
from edgeproto.models.patchct import PatchCTNet
from edgeproto.models.prototype_net import ADD_ONS, HEADS, NonNegLinear, PrototypeLayer, PrototypeNet, TverskyHead
from edgeproto.models.proc_kd import ProcKdStudent
from edgeproto.models.segmentation import SEGMENTATION_ARCHS, LatentGridSegNet, RegionSegNet, ScaleGroupedSegNet

ARCHS = archs()  # every module above has registered its architectures


def create_model(config: dict, backbone: nn.Module | None = None) -> nn.Module:
    """Build the network of a model config: its ``"arch"`` (default ``protopnet``) from the registry.

    ``config``: ``{"num_classes", "in_channels", "backbone": {"name", ...kwargs},
    "prototypes": {"family", "per_class", "dim", "attrs"}, ...}`` plus the keys its architecture reads
    (see each builder: ``protopnet`` in :mod:`~edgeproto.models.prototype_net`, ``cbr_ae`` in
    :mod:`~edgeproto.models.cbr_autoencoder`, the segmentation archs in
    :mod:`~edgeproto.models.segmentation`). Pass ``backbone`` to plug in any ``nn.Module`` that has an
    ``out_channels`` attribute (its config entry is then ignored).
    """
    build = arch_builder(config.get("arch", "protopnet"))
    if backbone is None:
        spec = dict(config["backbone"])
        backbone = create_backbone(spec.pop("name"), in_channels=config.get("in_channels", 3), **spec)
    return build(config, backbone)


__all__ = [
    "ADD_ONS",
    "ARCHS",
    "CbrAutoencoderNet",
    "CbrDecoder",
    "CbrEncoder",
    "HEADS",
    "LatentGridSegNet",
    "RegionSegNet",
    "SEGMENTATION_ARCHS",
    "ScaleGroupedSegNet",
    "NonNegLinear",
    "PatchCTNet",
    "TverskyHead",
    "PrototypeLayer",
    "PrototypeNet",
    "ProcKdStudent",
    "backbones",
    "create_backbone",
    "create_model",
    "archs",
    "register_arch",
    "register_backbone",
]
