"""ProtoPNet's training objective, written over similarity scores so every family shares it (plus a
family's ``auxiliary_loss`` on the latent features, weighted by ``coefs.commit``, where it has one).

Cluster and separation costs use each family's ``dissimilarity(scores)``: for ``l2_log`` the squared
distance d (as in ProtoPNet), for the likelihood families (HyperPg, Gaussian) the negative
log-density, for cosine 1 − cos. Separation is ProtoPNet's (the nearest wrong-class prototype) unless
the family's torch module sets ``SEPARATION = "mean_over_wrong_classes"`` (HyperPg's public code:
each wrong class's nearest prototype, averaged over the wrong classes).
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
    separation = _separation(dis, own, identity, labels, getattr(layer.family.torch_module, "SEPARATION", "min"))
    l1 = _l1(model)
    total = coefs["crs_ent"] * ce + coefs["clst"] * cluster + coefs["sep"] * separation
    if use_l1:
        total = total + coefs["l1"] * l1
    parts = {"ce": ce.item(), "clst": cluster.item(), "sep": separation.item(), "l1": l1.item()}
    aux = getattr(layer.family.torch_module, "auxiliary_loss", None)
    if aux is not None and "features" in out and coefs.get("commit", 0.0):
        commit = aux(out["features"], *[getattr(layer, n) for n in layer.family.param_names], **layer.attrs)
        total = total + coefs["commit"] * commit
        parts["commit"] = commit.item()
    return total, parts


def _separation(dis: Tensor, own: Tensor, identity: Tensor, labels: Tensor, mode: str) -> Tensor:
    """ProtoPNet's ``min`` over all wrong-class prototypes, or the mean over wrong classes of each
    class's min (``mean_over_wrong_classes``); mean over the batch."""
    if mode == "min":
        return dis.masked_fill(own, float("inf")).amin(dim=1).mean()
    if mode != "mean_over_wrong_classes":
        raise ValueError(f"unknown separation aggregation {mode!r}")
    per_class = dis[:, :, None].masked_fill(~identity.bool()[None], float("inf")).amin(dim=1)  # (B,C)
    wrong = torch.ones_like(per_class, dtype=torch.bool)
    wrong[torch.arange(len(labels)), labels] = False
    return per_class[wrong].mean()


def cbr_loss(
    out: dict[str, Tensor], target: Tensor, labels: Tensor, model, coefs: dict
) -> tuple[Tensor, dict[str, float]]:
    """Li et al. (2018)'s objective for the case-based reasoning autoencoder, as their public code
    computes it (OscarcarLi/PrototypeDL @ 3ae7f47, ``CAE_MNIST.py``):
    crs_ent·CE + recon·R + r1·mean_j min_i d(p_j, z_i) + r2·mean_i min_j d(z_i, p_j), with R the
    per-image *sum* of squared pixel errors of decoder(z) against the image, averaged over the batch
    (their ``ae_error``), d the family's dissimilarity (squared distance for ``cbr_ae``), the minima
    over the mini-batch (R1: every prototype is near some encoding; R2: every encoding is near some
    prototype). Their weights: class 20, the other three 1. ``target`` is the input image in [0, 1]."""
    layer = model.prototype_layer
    dis = layer.family.torch_module.dissimilarity(out["scores"], **layer.attrs)  # (B,M)
    ce = F.cross_entropy(out["logits"], labels)
    recon = (out["reconstruction"] - target).pow(2).flatten(1).sum(dim=1).mean()
    r1 = dis.amin(dim=0).mean()
    r2 = dis.amin(dim=1).mean()
    total = coefs["crs_ent"] * ce + coefs["recon"] * recon + coefs["r1"] * r1 + coefs["r2"] * r2
    return total, {"ce": ce.item(), "recon": recon.item(), "r1": r1.item(), "r2": r2.item()}


def last_layer_loss(out: dict[str, Tensor], labels: Tensor, model: PrototypeNet, coefs: dict) -> Tensor:
    """Last-layer fine-tuning: cross-entropy plus L1 on the wrong-class connections."""
    l1 = _l1(model)
    return coefs["crs_ent"] * F.cross_entropy(out["logits"], labels) + coefs["l1"] * l1


def _l1(model: PrototypeNet) -> Tensor:
    """L1 of the wrong-class weights of a linear head (0 for the Tversky head, whose class
    prototypes are not class weights)."""
    if getattr(model, "head", "linear") == "tversky":
        return model.last_layer.weight.new_zeros(())
    identity = model.prototype_class_identity
    return (model.last_layer.weight * (1 - identity.t())).abs().sum()


@torch.no_grad()
def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Fraction of correct top-1 predictions."""
    return (logits.argmax(dim=1) == labels).float().mean().item()
