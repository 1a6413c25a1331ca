"""ProC-KD student (``arch: proc_kd``): an edge-sized backbone whose features are augmented with a
teacher's prototypes and explained by them.

backbone → add-on (the learned projection into the teacher's prototype space, D = the teacher's
prototype dim) → task-adaptive feature augmentation → the teacher's prototype layer (same family,
same frozen parameters) → max-pool → linear head over the student's own classes.

The augmentation (our reading of ProC-KD's "task-adaptive feature augmentation": Li et al. 2022,
arXiv 2212.13180 -- only the abstract is public): every location's feature z attends to the M
teacher prototypes P with ``edgeproto::codebook`` (softmax_m of cos(z, p_m)/τ), the attended
prototype Σ_m a_m p_m is scaled per channel by a learned gate g and added: z' = z + g ⊙ Σ_m a_m p_m.
The prototype layer then compares z' with the same P, so the student's maps and scores are indexed
by the teacher's prototypes (explanation agreement is the same index on both sides).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgeproto.layers import get_family
from edgeproto.models.archs import register_arch
from edgeproto.models.prototype_net import PrototypeClassifier, PrototypeLayer, add_on_layers

ARCH = "proc_kd"


class ProcKdStudent(PrototypeClassifier):
    """The ProC-KD student. ``forward`` returns ``logits`` (B,C), ``scores`` (B,M), ``maps`` (B,M,H,W)
    (and in training mode ``features`` z', the projection z before augmentation (``projected``) and
    the augmentation's ``attention`` (B,M,H,W))."""

    def __init__(self, backbone: nn.Module, num_classes: int, num_prototypes: int, family: str, dim: int,
                 attrs: dict | None = None, augment_tau: float = 0.1, add_on: str = "regular") -> None:
        super().__init__()
        self.backbone = backbone
        self.add_on = add_on_layers(backbone.out_channels, dim, add_on)
        self.prototype_layer = PrototypeLayer(family, num_prototypes, dim, attrs)
        self.augment_gate = nn.Parameter(torch.ones(dim))
        self.augment_tau = float(augment_tau)
        self._attention = get_family("codebook").torch_module.op
        self.last_layer = nn.Linear(num_prototypes, num_classes, bias=False)
        # each prototype's student class is set by the distillation trainer (feature matching);
        # until then round-robin, so the buffer has its shape
        identity = torch.zeros(num_prototypes, num_classes)
        identity[torch.arange(num_prototypes), torch.arange(num_prototypes) % num_classes] = 1.0
        self.register_buffer("prototype_class_identity", identity)
        self.num_classes = num_classes

    def augment(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z (B,D,H,W) → (z + g ⊙ Σ_m a_m p_m, attention a (B,M,H,W))."""
        protos = self.prototype_layer.centers
        attention = self._attention(z, protos, tau=self.augment_tau)
        attended = torch.einsum("bmhw,md->bdhw", attention, protos)
        return z + self.augment_gate[None, :, None, None] * attended, attention

    def features(self, x: Tensor) -> Tensor:
        """Augmented latent patches z' (B,D,H,W) that the teacher's prototypes are compared with."""
        return self.augment(self.add_on(self.backbone(x)))[0]

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        projected = self.add_on(self.backbone(x))
        z, attention = self.augment(projected)
        out = self.classify(z)
        if self.training:
            out["attention"], out["projected"] = attention, projected
        return out


@register_arch(ARCH)
def _build_proc_kd(config: dict, backbone: nn.Module) -> ProcKdStudent:
    """``arch: proc_kd``: reads ``teacher_prototypes`` (M), ``prototypes`` (the teacher's family, dim
    and attrs), ``augment_tau`` and ``add_on``; written into the checkpoint config by ``edgeproto distill``."""
    protos = config["prototypes"]
    return ProcKdStudent(backbone, num_classes=config["num_classes"], num_prototypes=config["teacher_prototypes"],
                         family=protos["family"], dim=protos["dim"], attrs=protos.get("attrs"),
                         augment_tau=config.get("augment_tau", 0.1), add_on=config.get("add_on", "regular"))
