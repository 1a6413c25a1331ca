"""``arch: patchct`` -- multi-label classification with conditional transport between the image's patch
set and the label set (after Li et al., ICCV 2023, PatchCT; what was read and decided: models/patchct_procedural.md).

backbone → 1×1 add-on (conv-ReLU-conv, no sigmoid: the embeddings are compared by angle) → patch
embeddings z (B,D,h,w), the image as a uniform distribution over its h·w patches → label embeddings
(the class prototypes, ``per_class`` per label) compared with every patch by the ``cosine`` family
(``edgeproto::CosineSimilarity``): s (B,M,h,w), transport cost 1 − s.

- ``maps`` (B,M,h,w): the backward transport plan (label → patch) ``π(x_i | y_j) = softmax_i(s_ij / τ)``
  (the patch weights are uniform, so they cancel): where each label embedding sends its mass. It sums
  to 1 over the grid and is the explanation (which patches carry the label).
- ``scores`` (B,M): ``Σ_i π(x_i | y_j) s_ij``, the transport-weighted similarity of each label embedding
  to the image (a soft maximum over the patches).
- ``logits`` (B,C): a linear layer with bias on the scores (init: +``scale`` from a label's own
  prototypes, 0 from others), one independent logit per label (sigmoid → probability).

The forward plan (patch → label) needs a label distribution; it exists in training only (the ground
truth label set) and lives in the loss (:func:`edgeproto.train.multilabel.ct_cost`). In training mode
the outputs also hold ``similarity`` (the raw s) for it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgeproto.errors import EdgeprotoError
from edgeproto.models.archs import register_arch
from edgeproto.models.prototype_net import PrototypeClassifier, PrototypeLayer

FAMILY = "cosine"
INIT_SCALE = 5.0  # the last layer's initial weight from a label's own prototypes (cosines lie in [-1, 1])


class PatchCTNet(PrototypeClassifier):
    """Patch set ↔ label set by conditional transport (see the module docstring)."""

    task = "multilabel"

    def __init__(self, backbone: nn.Module, num_classes: int, per_class: int = 1, dim: int = 32,
                 temperature: float = 0.1, family: str = FAMILY, attrs: dict | None = None) -> None:
        super().__init__()
        if family != FAMILY:
            raise EdgeprotoError(f"model.arch patchct compares patches and labels by cosine (cost 1 − cos): "
                                 f"set model.prototypes.family: {FAMILY}, got {family!r}")
        if not temperature > 0:
            raise EdgeprotoError(f"model.temperature must be > 0, got {temperature!r}")
        self.backbone = backbone
        self.add_on = nn.Sequential(nn.Conv2d(backbone.out_channels, dim, 1), nn.ReLU(inplace=True),
                                    nn.Conv2d(dim, dim, 1))
        self.prototype_layer = PrototypeLayer(family, num_classes * per_class, dim, attrs)
        self.last_layer = nn.Linear(num_classes * per_class, num_classes, bias=True)
        self._init_classes(num_classes, per_class)
        self.set_last_layer_incorrect_connection(0.0)
        with torch.no_grad():
            self.last_layer.weight.mul_(INIT_SCALE)
            self.last_layer.bias.fill_(-INIT_SCALE / 2)
        self.temperature = float(temperature)

    def features(self, x: Tensor) -> Tensor:
        """Patch embeddings z (B,D,h,w)."""
        return self.add_on(self.backbone(x))

    def transport(self, sim: Tensor) -> Tensor:
        """Backward plan π(x_i | y_j): softmax of s/τ over each label embedding's patches, (B,M,h,w)."""
        b, m, h, w = sim.shape
        return torch.softmax(sim.reshape(b, m, h * w) / self.temperature, dim=2).reshape(b, m, h, w)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        z = self.features(x)
        sim = self.prototype_layer(z)
        plan = self.transport(sim)
        scores = (plan * sim).sum(dim=(2, 3))
        out = {"logits": self.last_layer(scores), "scores": scores, "maps": plan}
        if self.training:
            out["similarity"], out["features"] = sim, z
        return out


@register_arch("patchct")
def _build_patchct(config: dict, backbone: nn.Module) -> PatchCTNet:
    """``arch: patchct``: reads ``prototypes`` (family cosine, per_class, dim) and ``temperature``."""
    protos = config["prototypes"]
    return PatchCTNet(backbone, num_classes=config["num_classes"], per_class=protos["per_class"], dim=protos["dim"],
                      temperature=config.get("temperature", 0.1), family=protos["family"],
                      attrs=protos.get("attrs") or None)
