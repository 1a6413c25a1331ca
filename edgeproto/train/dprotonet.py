"""Training DProtoNet (``model.arch: dprotonet``): the classification schedule with multi-image
prototype learning instead of gradient steps on the prototypes and instead of ProtoPNet's projection.

- warm and joint stages: ProtoPNet's loss and optimizer steps (prototypes included); after every
  step each prototype also moves toward the mean of its nearest patches in the batch's images of its
  class (:meth:`DProtoNet.update_prototypes`, momentum ``train.proto_momentum``);
- push stage: each prototype becomes the mean of its nearest patches in the ``train.proto_images``
  training images of its class it is most similar to (:func:`multi_image_projection`); its picture
  (source image, patch box, PNG) is then the closest training patch to that mean, found as push
  ``visualize`` finds it, with the images it averages listed as ``multi_image_sources``;
- last-layer stage: as ProtoPNet's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from edgeproto.errors import EdgeprotoError
from edgeproto.models import DProtoNet
from edgeproto.train.push import push_prototypes
from edgeproto.train.trainer import Trainer


@torch.no_grad()
def multi_image_projection(model: DProtoNet, images: Tensor, labels: Tensor, k: int,
                           batch_size: int = 128) -> list[list[int]]:
    """Set each prototype to the mean of its nearest latent patch (among the locations it wins,
    :meth:`DProtoNet.nearest_patches`) in each of the ``k`` training images of its class most similar
    to it; return those images per prototype (most similar first). A prototype that wins no location
    of any image of its class keeps its vector (an empty list)."""
    model.eval()
    centers = model.prototype_layer.centers
    m, d = centers.shape
    best = torch.full((m, 0), -float("inf"))
    best_idx = torch.zeros((m, 0), dtype=torch.long)
    best_patch = torch.zeros((m, 0, d))
    for start in range(0, len(images), batch_size):
        x, y = images[start: start + batch_size], labels[start: start + batch_size]
        patches, sim = model.nearest_patches(model.features(x), y)  # (B,M,D), (B,M): own class, won locations
        sim = sim.t()  # (M,B)
        idx = torch.arange(start, start + len(x))[None, :].expand(m, -1)
        best = torch.cat([best, sim], dim=1)
        best_idx = torch.cat([best_idx, idx], dim=1)
        best_patch = torch.cat([best_patch, patches.transpose(0, 1).to(best_patch.dtype)], dim=1)
        keep = best.topk(min(k, best.shape[1]), dim=1).indices  # (M,k')
        best, best_idx = best.gather(1, keep), best_idx.gather(1, keep)
        best_patch = best_patch.gather(1, keep[:, :, None].expand(-1, -1, d))
    sources = []
    for j in range(m):
        ok = torch.isfinite(best[j])
        if ok.any():
            centers[j] = best_patch[j][ok].mean(dim=0).to(centers.dtype)
        sources.append([int(i) for i in best_idx[j][ok]])
    return sources


class DProtoNetTrainer(Trainer):
    """:class:`Trainer` with DProtoNet's multi-image prototype learning (see the module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.dist.enabled:  # each rank would move its own copy of the prototypes
            raise EdgeprotoError("model.arch dprotonet trains on one process (its multi-image prototype "
                                 "update is not synchronised across ranks); run it without torchrun")

    def _after_step(self, out: dict[str, Tensor], y: Tensor) -> None:
        self.model.update_prototypes(out["features"], y, self.cfg["proto_momentum"])

    def _run_push(self, si: int, bar) -> None:
        self.metrics["test_accuracy_before_push"] = self.evaluate()
        sources = multi_image_projection(self.model, self.images, self.labels, self.cfg["proto_images"],
                                         self.cfg["push_batch_size"])
        self.prototypes = push_prototypes(self.model, self.images, self.labels, self.cfg["push_batch_size"],
                                          progress=lambda n: bar("push", 0, n, {}), project=False)
        for rec, src in zip(self.prototypes, sources):
            rec["multi_image_sources"] = src
        self.metrics["test_accuracy_after_push"] = self.evaluate()
        self._checkpoint_epoch(si + 1, 0, None)
