"""ProtoPNet's prototype pruning: drop prototypes whose nearest training patches are of other classes.

As ``prune.py`` / ``find_nearest.py`` of cfchen-duke/ProtoPNet (@81bf2b7, read for this module) do
it: for each prototype, each training image contributes its single nearest patch; of the ``k``
images whose nearest patch is nearest to the prototype, count those of the prototype's class; a
prototype with fewer than ``threshold`` of them is pruned (their ``run_pruning.py``: ``k = 6``,
``prune_threshold = 3``). ProtoPNet then removes the prototype; here its last-layer column is
zeroed and its record marked ``pruned`` so the prototype count (and every bundle index) stays the
same; explanations rank pruned prototypes last (:mod:`edgeproto.ranking`).

"Nearest" is the family's push closeness (``push_similarity``, else its similarity op), highest first.
"""

from __future__ import annotations

import torch
from torch import Tensor

from edgeproto.errors import EdgeprotoError
from edgeproto.models import PrototypeNet

PROTOPNET_K = 6
PROTOPNET_THRESHOLD = 3


@torch.no_grad()
def nearest_image_classes(model: PrototypeNet, images: Tensor, labels: Tensor, k: int = PROTOPNET_K,
                          batch_size: int = 128) -> Tensor:
    """(M, k) labels of the ``k`` images whose nearest patch is nearest to each prototype, nearest first."""
    model.eval()
    layer = model.prototype_layer
    closeness = getattr(layer.family.torch_module, "push_similarity", None)
    params = [getattr(layer, n) for n in layer.family.param_names]
    best = []
    for start in range(0, len(images), batch_size):
        z = model.features(images[start: start + batch_size])
        sim = closeness(z, *params, **layer.attrs) if closeness else layer(z)
        best.append(sim.flatten(2).max(dim=2).values)  # (B,M): each image's nearest patch
    per_image = torch.cat(best).double()  # (N,M)
    order = torch.topk(per_image, min(int(k), len(images)), dim=0).indices  # (k,M)
    return labels[order].t()


@torch.no_grad()
def prune(model: PrototypeNet, images: Tensor, labels: Tensor, records: list[dict] | None = None, *,
          k: int = PROTOPNET_K, threshold: int = PROTOPNET_THRESHOLD, batch_size: int = 128) -> list[int]:
    """Prune ``model``'s prototypes the way ProtoPNet does (see the module docstring); returns the
    pruned indices. Their last-layer columns are zeroed; ``records`` (the checkpoint's prototype
    records), when given, get ``pruned`` and ``nearest_own_class`` (how many of the k were of the
    prototype's class)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise EdgeprotoError(f"prune: k must be a positive whole number, got {k!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 0 <= threshold <= k:
        raise EdgeprotoError(f"prune: threshold must be a whole number from 0 to k={k}, got {threshold!r}")
    if len(images) < k:
        raise EdgeprotoError(f"prune: needs at least k={k} images, got {len(images)}")
    if getattr(model, "head", "linear") == "tversky":
        raise EdgeprotoError("prune: the Tversky head has no per-prototype class weights to remove")
    nearest = nearest_image_classes(model, images, labels, k, batch_size)
    own = (nearest == model.prototype_classes[:, None]).sum(dim=1)  # (M,)
    pruned = torch.nonzero(own < threshold).flatten().tolist()
    model.last_layer.weight[:, pruned] = 0.0
    for rec in records or []:
        j = int(rec["index"])
        rec["nearest_own_class"] = int(own[j])
        rec["pruned"] = bool(rec.get("pruned")) or j in pruned
    return pruned
