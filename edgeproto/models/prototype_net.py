"""The prototype network: backbone → 1×1 add-on → prototype layer → max-pool → head (last layer).

The head (``last_layer``) maps the pooled prototype scores (B,M) to class logits (B,C):

- ``linear`` (ProtoPNet): ``nn.Linear`` without bias;
- ``nonneg`` (ProtoQuant): the same with ReLU on the weights in the forward, so every class weight
  is ≥ 0 (a prototype can only add evidence);
- ``tversky``: :class:`TverskyHead`, Tversky similarity of the score vector to C learned class
  prototypes over a learned feature bank -- one ``edgeproto::TverskySimilarity`` node on export.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgeproto.errors import EdgeprotoError
from edgeproto.layers import get_family
from edgeproto.models.archs import register_arch

HEADS = ("linear", "nonneg", "tversky")
ADD_ONS = ("regular", "bottleneck")


def add_on_layers(cin: int, dim: int, kind: str = "regular") -> nn.Sequential:
    """ProtoPNet's add-on between backbone and prototypes (``model.py``, ``add_on_layers_type``).

    ``regular``: 1×1 conv (cin→D), ReLU, 1×1 conv (D→D), sigmoid. ``bottleneck``: pairs of 1×1
    convs halving the channels (never below D) with ReLUs between, the last pair ending in a sigmoid
    at D channels. Either way the layers sit at indices 0, 2, 4, … as in the official ``add_on_layers``.
    """
    if kind == "regular":
        return nn.Sequential(nn.Conv2d(cin, dim, 1), nn.ReLU(inplace=True), nn.Conv2d(dim, dim, 1), nn.Sigmoid())
    if kind != "bottleneck":
        raise EdgeprotoError(f"unknown add-on {kind!r}; known: {', '.join(ADD_ONS)}")
    layers: list[nn.Module] = []
    c = cin
    while c > dim or not layers:
        out = max(dim, c // 2)
        layers += [nn.Conv2d(c, out, 1), nn.ReLU(inplace=True), nn.Conv2d(out, out, 1),
                   nn.ReLU(inplace=True) if out > dim else nn.Sigmoid()]
        c //= 2
    return nn.Sequential(*layers)


class PrototypeLayer(nn.Module):
    """Holds one family's parameters and calls its ``edgeproto::<family>`` op."""

    def __init__(self, family: str, num_prototypes: int, dim: int, attrs: dict | None = None) -> None:
        super().__init__()
        self.family = get_family(family)
        unknown = set(attrs or {}) - set(self.family.attrs)
        if unknown:
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

    def params(self) -> list[Tensor]:
        """The op's tensor parameters, in the family's order."""
        return [getattr(self, n) for n in self.family.param_names]

    def forward(self, z: Tensor) -> Tensor:
        return self.family.torch_module.op(z, *self.params(), **self.attrs)


class NonNegLinear(nn.Linear):
    """``x @ relu(W)ᵀ``: class weights kept non-negative in the forward (ProtoQuant)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, F.relu(self.weight))


class TverskyHead(nn.Module):
    """Tversky similarity of the pooled scores (B,M) to C class prototypes (C,M) over a feature bank
    (F,M): ``edgeproto::tversky`` on the scores seen as (B,M,1,1); logits (B,C).

    ``weight`` is the class prototypes (C,M): each class's expected prototype-score profile. It is
    what ProtoPNet's identity init writes into and what the bundle ships as the explanation weights.
    """

    def __init__(self, num_inputs: int, num_classes: int, num_features: int = 0, attrs: dict | None = None) -> None:
        super().__init__()
        self.family = get_family("tversky")
        unknown = set(attrs or {}) - set(self.family.attrs)
        if unknown:
            raise EdgeprotoError(f"head 'tversky' has no attribute(s) {sorted(unknown)}")
        self.attrs = {**self.family.attrs, **(attrs or {})}
        if self.attrs["tau"] <= 0:
            raise EdgeprotoError("head attribute tau must be > 0")
        params = self.family.torch_module.init_params(num_classes, num_inputs, num_features=num_features or num_inputs)
        for name, value in params.items():
            self.register_parameter(name, nn.Parameter(value))

    @property
    def weight(self) -> nn.Parameter:
        return self.prototypes

    def forward(self, scores: Tensor) -> Tensor:
        params = [getattr(self, n) for n in self.family.param_names]
        return self.family.torch_module.op(scores[:, :, None, None], *params, **self.attrs)[:, :, 0, 0]


class PrototypeClassifier(nn.Module):
    """What every prototype model shares: the prototype → class identity, ProtoPNet's last-layer
    init, the class weights, and latent patches → logits/scores/maps.

    Subclasses set ``prototype_layer`` and ``last_layer``, call :meth:`_init_classes`, and define
    ``features(x)``.
    """

    head = "linear"

    def _init_classes(self, num_classes: int, per_class: int) -> None:
        num_prototypes = num_classes * per_class
        identity = torch.zeros(num_prototypes, num_classes)
        identity[torch.arange(num_prototypes), torch.arange(num_prototypes) // per_class] = 1.0
        self.register_buffer("prototype_class_identity", identity)
        self.num_classes = num_classes

    @property
    def prototype_classes(self) -> Tensor:
        """Class index of each prototype (M,)."""
        return self.prototype_class_identity.argmax(dim=1)

    def set_last_layer_incorrect_connection(self, strength: float) -> None:
        """ProtoPNet's init: weight +1 from a prototype to its own class, ``strength`` to the others."""
        pos = self.prototype_class_identity.t()
        with torch.no_grad():
            self.last_layer.weight.copy_(pos + strength * (1 - pos))

    def class_weights(self) -> Tensor:
        """(C,M) class weights (shown beside an explanation, not used to rank it): the
        linear weights, ReLU'd for ``nonneg``, the class prototypes for ``tversky``."""
        w = self.last_layer.weight.detach()
        return F.relu(w) if self.head == "nonneg" else w

    def classify(self, z: Tensor) -> dict[str, Tensor]:
        """Latent patches z → ``logits``, ``scores`` (max over locations), ``maps`` (+ ``features``
        in training mode, for auxiliary losses)."""
        maps = self.prototype_layer(z)
        scores = maps.amax(dim=(2, 3))
        out = {"logits": self.last_layer(scores), "scores": scores, "maps": maps}
        if self.training:
            out["features"] = z
        return out


class PrototypeNet(PrototypeClassifier):
    """ProtoPNet-shaped model; ``forward`` returns ``logits`` (B,C), ``scores`` (B,M), ``maps`` (B,M,H,W)
    (and, in training mode, the latent ``features`` z for auxiliary losses)."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        family: str = "l2_log",
        per_class: int = 5,
        dim: int = 64,
        attrs: dict | None = None,
        head: str = "linear",
        head_features: int = 0,
        head_attrs: dict | None = None,
        add_on: str = "regular",
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise EdgeprotoError(f"unknown head {head!r}; known: {', '.join(HEADS)}")
        self.backbone = backbone
        cin = backbone.out_channels
        self.add_on = add_on_layers(cin, dim, add_on)
        num_prototypes = num_classes * per_class
        self.prototype_layer = PrototypeLayer(family, num_prototypes, dim, attrs)
        self.head = head
        if head == "tversky":
            self.last_layer = TverskyHead(num_prototypes, num_classes, head_features, head_attrs)
        elif head_attrs:
            raise EdgeprotoError(f"head {head!r} takes no attributes")
        else:
            cls = NonNegLinear if head == "nonneg" else nn.Linear
            self.last_layer = cls(num_prototypes, num_classes, bias=False)
        self._init_classes(num_classes, per_class)
        self.set_last_layer_incorrect_connection(0.0 if head == "nonneg" else -0.5)

    def features(self, x: Tensor) -> Tensor:
        """Latent patches z (B,D,H,W) that prototypes are compared with."""
        return self.add_on(self.backbone(x))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.classify(self.features(x))


@register_arch("protopnet")
def _build_protopnet(config: dict, backbone: nn.Module) -> PrototypeNet:
    """``arch: protopnet``: reads ``head`` (``linear``), ``head_features``, ``head_attrs`` and ``add_on``
    (``regular``; or ``bottleneck``, ProtoPNet's two add-on types)."""
    protos = config["prototypes"]
    return PrototypeNet(backbone, num_classes=config["num_classes"], family=protos["family"],
                        per_class=protos["per_class"], dim=protos["dim"], attrs=protos.get("attrs"),
                        head=config.get("head", "linear"), head_features=config.get("head_features", 0),
                        head_attrs=config.get("head_attrs") or None, add_on=config.get("add_on", "regular"))
