"""Models: registered backbones and the prototype network, built from a config by ``create_model``."""

from __future__ import annotations

from torch import nn

from edgeproto.models.backbones import backbones, create_backbone, register_backbone
from edgeproto.models.prototype_net import PrototypeLayer, PrototypeNet


def create_model(config: dict, backbone: nn.Module | None = None) -> PrototypeNet:
    """Build a ``PrototypeNet`` from a model config.

    ``config``: ``{"num_classes", "in_channels", "backbone": {"name", ...kwargs},
    "prototypes": {"family", "per_class", "dim", "attrs"}}``. Pass ``backbone`` to plug in any
    ``nn.Module`` that has an ``out_channels`` attribute (its config entry is then ignored).
    """
    if backbone is None:
        spec = dict(config["backbone"])
        backbone = create_backbone(spec.pop("name"), in_channels=config.get("in_channels", 3), **spec)
    protos = config["prototypes"]
    return PrototypeNet(
        backbone,
        num_classes=config["num_classes"],
        family=protos["family"],
        per_class=protos["per_class"],
        dim=protos["dim"],
        attrs=protos.get("attrs"),
    )


__all__ = [
    "PrototypeLayer",
    "PrototypeNet",
    "backbones",
    "create_backbone",
    "create_model",
    "register_backbone",
]
