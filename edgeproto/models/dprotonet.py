"""DProtoNet, the decoupling prototypical network (Peng, Liu, Yang & He, arXiv 2210.08336, 2022).

Three modules, decoupled so that the explanation puts no constraint on the classifier:

- **encoder**: a registered backbone, then a 1×1 add-on *without* ProtoPNet's sigmoid, whose
  output is gated by an **unrestricted feature mask** (:class:`FeatureMask`): ``z = h ⊙ (1 + W h + b)``,
  a per-location, per-channel mask of any sign and size (initialised to the identity), instead of
  features squeezed into [0, 1] for interpretability;
- **inference**: a prototype layer of one of the project's families (``cosine`` in the recipe) and a
  linear head, with **multi-image prototype learning**: besides its gradient step, after every
  training step each prototype moves (momentum ``train.proto_momentum``) toward the mean of its
  nearest latent patch in *every* image of its class in the mini-batch, among the locations where it
  is the most similar of its class's prototypes (:meth:`DProtoNet.update_prototypes`; without that
  competition all prototypes of a class collapsed onto the same mean in our first run),
  and at the end of training (the push stage) it is set to the mean of its nearest patches in its
  ``train.proto_images`` most similar training images of its class (:mod:`edgeproto.train.dprotonet`):
  a prototype is a summary of several images, never one image's patch;
- **interpretation**: not in this network. The multiple-dynamic-masks (MDM) explanation is computed
  from the deployed model's outputs on masked copies of the image
  (:mod:`edgeproto.device.mdm`), on the device, without prototype activations.

Only the paper's abstract is public (no code); every choice above is ours: see
``models/dprotonet_procedural.md``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgeproto.models.archs import register_arch
from edgeproto.models.prototype_net import PrototypeClassifier, PrototypeLayer


class FeatureMask(nn.Module):
    """``h ⊙ (1 + conv1×1(h))``: an unrestricted (unbounded, signed) per-location channel mask."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mask = nn.Conv2d(dim, dim, 1)
        nn.init.zeros_(self.mask.weight)  # starts as the identity: the mask is learned, not imposed
        nn.init.zeros_(self.mask.bias)

    def forward(self, h: Tensor) -> Tensor:
        return h * (1.0 + self.mask(h))


class DProtoNet(PrototypeClassifier):
    """Backbone → add-on (conv, ReLU, conv) → feature mask → prototype layer → max-pool → linear.

    ``forward`` returns ``logits`` (B,C), ``scores`` (B,M) and ``maps`` (B,M,H,W) like every
    prototype model (and ``features`` in training mode)."""

    def __init__(self, backbone: nn.Module, num_classes: int, family: str = "cosine", per_class: int = 5,
                 dim: int = 64, attrs: dict | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.add_on = nn.Sequential(nn.Conv2d(backbone.out_channels, dim, 1), nn.ReLU(inplace=True),
                                    nn.Conv2d(dim, dim, 1), FeatureMask(dim))
        self.prototype_layer = PrototypeLayer(family, num_classes * per_class, dim, attrs)
        self.last_layer = nn.Linear(num_classes * per_class, num_classes, bias=False)
        self._init_classes(num_classes, per_class)
        self.set_last_layer_incorrect_connection(-0.5)

    def features(self, x: Tensor) -> Tensor:
        """Latent patches z (B,D,H,W)."""
        return self.add_on(self.backbone(x))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.classify(self.features(x))

    @torch.no_grad()
    def nearest_patches(self, z: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """For every image and prototype of the image's class: the latent patch most similar to it
        **among the locations it wins** (where it is the most similar of that class's prototypes),
        (B,M,D), and that similarity (B,M); −inf where the prototype is of another class or wins no
        location. Winning keeps a class's prototypes apart: two prototypes never share a patch."""
        maps = self.prototype_layer(z).flatten(2)  # (B,M,HW)
        own = self.prototype_classes[None, :] == labels[:, None]  # (B,M)
        winner = maps.masked_fill(~own[:, :, None], -float("inf")).argmax(dim=1)  # (B,HW)
        wins = winner[:, None, :] == torch.arange(maps.shape[1], device=maps.device)[None, :, None]
        best, pos = maps.masked_fill(~(wins & own[:, :, None]), -float("inf")).max(dim=2)
        flat = z.flatten(2).transpose(1, 2)  # (B,HW,D)
        patches = torch.gather(flat, 1, pos[:, :, None].expand(-1, -1, flat.shape[2]))  # (B,M,D)
        return patches, best

    @torch.no_grad()
    def update_prototypes(self, z: Tensor, labels: Tensor, momentum: float) -> None:
        """Multi-image prototype learning step: ``p ← (1 − momentum)·p + momentum·mean_b patch_b``,
        the mean over the batch's images of the prototype's class of its nearest patch among the
        locations it wins (:meth:`nearest_patches`); a prototype that wins nowhere stays."""
        patches, best = self.nearest_patches(z.detach(), labels)
        used = torch.isfinite(best).to(patches.dtype)  # (B,M)
        count = used.sum(dim=0)  # (M,)
        seen = count > 0
        if not seen.any():
            return
        mean = (patches * used[:, :, None]).sum(dim=0) / count.clamp_min(1)[:, None]  # (M,D)
        centers = self.prototype_layer.centers
        centers[seen] = (1.0 - momentum) * centers[seen] + momentum * mean[seen].to(centers.dtype)


@register_arch("dprotonet")
def _build_dprotonet(config: dict, backbone: nn.Module) -> DProtoNet:
    """``arch: dprotonet``: reads ``prototypes`` (family, per_class, dim, attrs)."""
    protos = config["prototypes"]
    return DProtoNet(backbone, num_classes=config["num_classes"], family=protos["family"],
                     per_class=protos["per_class"], dim=protos["dim"], attrs=protos.get("attrs"))
