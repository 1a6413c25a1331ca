"""ProtoPNet's training objective, written over similarity scores so every family shares it.

Cluster and separation costs use each family's ``dissimilarity(scores)``: for ``l2_log`` the squared
distance d (as in ProtoPNet), for the likelihood families (HyperPg, Gaussian) the negative
log-density, for cosine 1 − cos.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from edgeproto.models import PrototypeNet


def prototype_loss(
    out: dict[str, Tensor], labels: Tensor, model: PrototypeNet, coefs: dict, use_l1: bool = False
) -> tuple[Tensor, dict[str, float]]:
    """crs_ent·CE + clst·cluster + sep·separation (+ l1·|wrong-class weights| in the last stage)."""
    identity = model.prototype_class_identity  # (M,C)
    own = identity[:, labels].t().bool()  # (B,M): prototype belongs to the image's class
    layer = model.prototype_layer
    dis = layer.family.torch_module.dissimilarity(out["scores"], **layer.attrs)
    ce = F.cross_entropy(out["logits"], labels)
    cluster = dis.masked_fill(~own, float("inf")).amin(dim=1).mean()
    separation = dis.masked_fill(own, float("inf")).amin(dim=1).mean()
    l1 = (model.last_layer.weight * (1 - identity.t())).abs().sum()
    total = coefs["crs_ent"] * ce + coefs["clst"] * cluster + coefs["sep"] * separation
    if use_l1:
        total = total + coefs["l1"] * l1
    parts = {"ce": ce.item(), "clst": cluster.item(), "sep": separation.item(), "l1": l1.item()}
    return total, parts


def last_layer_loss(out: dict[str, Tensor], labels: Tensor, model: PrototypeNet, coefs: dict) -> Tensor:
    """Last-layer fine-tuning: cross-entropy plus L1 on the wrong-class connections."""
    identity = model.prototype_class_identity
    l1 = (model.last_layer.weight * (1 - identity.t())).abs().sum()
    return coefs["crs_ent"] * F.cross_entropy(out["logits"], labels) + coefs["l1"] * l1


@torch.no_grad()
def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Fraction of correct top-1 predictions."""
    return (logits.argmax(dim=1) == labels).float().mean().item()
