"""Models: registered backbones and the prototype network, built from a config by ``create_model``."""

from __future__ import annotations

from torch import nn

from edgeproto.models import densenet, efficientnet_lite, resnet, vgg  # noqa: F401  (register their backbones)
from edgeproto.models.backbones import backbones, create_backbone, register_backbone
from edgeproto.models.cbr_autoencoder import CbrAutoencoderNet, CbrDecoder, CbrEncoder
from edgeproto.models.prototype_net import ADD_ONS, HEADS, NonNegLinear, PrototypeLayer, PrototypeNet, TverskyHead
from edgeproto.models.segmentation import SEGMENTATION_ARCHS, LatentGridSegNet, RegionSegNet, ScaleGroupedSegNet

ARCHS = ("protopnet", "cbr_ae") + SEGMENTATION_ARCHS


def create_model(config: dict, backbone: nn.Module | None = None) -> PrototypeNet | CbrAutoencoderNet:
    """Build a ``PrototypeNet`` from a model config.

    ``config``: ``{"num_classes", "in_channels", "backbone": {"name", ...kwargs},
    "prototypes": {"family", "per_class", "dim", "attrs"}, "head", "head_features", "head_attrs"}``
    (the head keys are optional: ``linear`` by default; ``"add_on"``: ``regular`` (default) or
    ``bottleneck``, ProtoPNet's two add-on types); ``"arch": "cbr_ae"`` (with a
    ``cbr_encoder`` backbone and ``"image_size"``) builds the case-based reasoning autoencoder
    instead of the ProtoPNet-shaped network. Pass ``backbone`` to plug in any
    ``nn.Module`` that has an ``out_channels`` attribute (its config entry is then ignored).
    """
    if backbone is None:
        spec = dict(config["backbone"])
        backbone = create_backbone(spec.pop("name"), in_channels=config.get("in_channels", 3), **spec)
    protos = config["prototypes"]
    arch = config.get("arch", "protopnet")
    if arch == "cbr_ae":
        return CbrAutoencoderNet(backbone, num_classes=config["num_classes"], image_size=config["image_size"],
                                 family=protos["family"], per_class=protos["per_class"], attrs=protos.get("attrs"),
                                 dim=protos["dim"])
    if arch == "latent_seg":
        return LatentGridSegNet(backbone, num_classes=config["num_classes"], image_size=config["image_size"],
                                family=protos["family"], per_class=protos["per_class"], dim=protos["dim"],
                                attrs=protos.get("attrs"))
    if arch == "region_seg":
        return RegionSegNet(backbone, num_classes=config["num_classes"], image_size=config["image_size"],
                            regions=config.get("regions", 0), family=protos["family"], per_class=protos["per_class"],
                            dim=protos["dim"], attrs=protos.get("attrs"))
    if arch == "scale_seg":
        return ScaleGroupedSegNet(backbone, num_classes=config["num_classes"], image_size=config["image_size"],
                                  family=protos["family"], per_class=protos["per_class"], dim=protos["dim"],
                                  attrs=protos.get("attrs"), scales=config.get("scales", 4),
                                  groups=config.get("groups", 3))
    if arch != "protopnet":
        from edgeproto.errors import EdgeprotoError

        raise EdgeprotoError(f"unknown model arch {arch!r}; known: {', '.join(ARCHS)}")
    return PrototypeNet(
        backbone,
        num_classes=config["num_classes"],
        family=protos["family"],
        per_class=protos["per_class"],
        dim=protos["dim"],
        attrs=protos.get("attrs"),
        head=config.get("head", "linear"),
        head_features=config.get("head_features", 0),
        head_attrs=config.get("head_attrs") or None,
        add_on=config.get("add_on", "regular"),
    )


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
    "TverskyHead",
    "PrototypeLayer",
    "PrototypeNet",
    "backbones",
    "create_backbone",
    "create_model",
    "register_backbone",
]
