"""The prototype network: backbone → 1×1 add-on → prototype layer → max-pool → last layer."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgeproto.layers import get_family


class PrototypeLayer(nn.Module):
    """Holds one family's parameters and calls its ``edgeproto::<family>`` op."""

    def __init__(self, family: str, num_prototypes: int, dim: int, attrs: dict | None = None) -> None:
        super().__init__()
        self.family = get_family(family)
        unknown = set(attrs or {}) - set(self.family.attrs)
        if unknown:
            from edgeproto.errors import EdgeprotoError

            raise EdgeprotoError(f"family {family!r} has no attribute(s) {sorted(unknown)}")
        self.attrs = {**self.family.attrs, **(attrs or {})}
        for name, value in self.family.torch_module.init_params(num_prototypes, dim).items():
            self.register_parameter(name, nn.Parameter(value))
        self.num_prototypes = num_prototypes
        self.dim = dim

    @property
    def centers(self) -> nn.Parameter:
        """The parameter that push/projection replaces by a training patch (the first one)."""
        return getattr(self, self.family.param_names[0])

    def forward(self, z: Tensor) -> Tensor:
        params = [getattr(self, n) for n in self.family.param_names]
        return self.family.torch_module.op(z, *params, **self.attrs)


class PrototypeNet(nn.Module):
    """ProtoPNet-shaped model; ``forward`` returns ``logits`` (B,C), ``scores`` (B,M), ``maps`` (B,M,H,W)."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        family: str = "l2_log",
        per_class: int = 5,
        dim: int = 64,
        attrs: dict | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        cin = backbone.out_channels
        self.add_on = nn.Sequential(
            nn.Conv2d(cin, dim, 1), nn.ReLU(inplace=True), nn.Conv2d(dim, dim, 1), nn.Sigmoid()
        )
        num_prototypes = num_classes * per_class
        self.prototype_layer = PrototypeLayer(family, num_prototypes, dim, attrs)
        self.last_layer = nn.Linear(num_prototypes, num_classes, bias=False)
        identity = torch.zeros(num_prototypes, num_classes)
        identity[torch.arange(num_prototypes), torch.arange(num_prototypes) // per_class] = 1.0
        self.register_buffer("prototype_class_identity", identity)
        self.num_classes = num_classes
        self.set_last_layer_incorrect_connection(-0.5)

    @property
    def prototype_classes(self) -> Tensor:
        """Class index of each prototype (M,)."""
        return self.prototype_class_identity.argmax(dim=1)

    def set_last_layer_incorrect_connection(self, strength: float) -> None:
        """ProtoPNet's init: weight +1 from a prototype to its own class, ``strength`` to the others."""
        pos = self.prototype_class_identity.t()
        with torch.no_grad():
            self.last_layer.weight.copy_(pos + strength * (1 - pos))

    def features(self, x: Tensor) -> Tensor:
        """Latent patches z (B,D,H,W) that prototypes are compared with."""
        return self.add_on(self.backbone(x))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        maps = self.prototype_layer(self.features(x))
        scores = maps.amax(dim=(2, 3))
        return {"logits": self.last_layer(scores), "scores": scores, "maps": maps}
