"""Case-based reasoning autoencoder (Li, Liu, Chen & Rudin, "Deep Learning for Case-Based Reasoning
through Prototypes: A Neural Network that Explains Its Predictions", AAAI 2018).

encoder f: image → latent vector z (D); prototype layer: (negated) squared distances of z to M
prototypes in latent space (``edgeproto::cbr_ae`` on z seen as (B,D,1,1), so maps are (B,M,1,1));
a linear layer turns them into logits; decoder g: z → image, trained to reconstruct the input and
used to *render every prototype as an image* (its picture in the checkpoint and the bundle).

The model keeps ``PrototypeNet``'s interface (``backbone``, ``add_on``, ``prototype_layer``,
``last_layer``, ``prototype_class_identity``, ``features``, ``class_weights``; forward →
``logits``/``scores``/``maps``), so export, bundles and runtimes treat it like any other.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgeproto.errors import EdgeprotoError
from edgeproto.models.backbones import register_backbone
from edgeproto.models.archs import register_arch
from edgeproto.models.prototype_net import PrototypeClassifier, PrototypeLayer

_ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}


def _activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise EdgeprotoError(f"cbr_encoder activation must be one of {', '.join(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]()


@register_backbone("cbr_encoder")
class CbrEncoder(nn.Module):
    """Li et al.'s encoder: ``stages`` 3×3 convolutions of stride 2, ``width`` filters each but the
    last (``latent_channels``); hidden activations ``activation`` (default ReLU, as in their public
    code, OscarcarLi/PrototypeDL @ 3ae7f47 ``CAE_MNIST.py``, ``conv_layer``'s default). The last
    one here is a sigmoid (a bounded code space): a deliberate deviation -- their code's last
    encoder layer is a ReLU too."""

    def __init__(self, in_channels: int = 3, width: int = 32, latent_channels: int = 10, stages: int = 4,
                 activation: str = "relu") -> None:
        super().__init__()
        layers, cin = [], in_channels
        for i in range(stages):
            cout = latent_channels if i == stages - 1 else width
            layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1),
                       nn.Sigmoid() if i == stages - 1 else _activation(activation)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.out_channels = latent_channels
        self.stride = 2**stages
        self.config = {"in_channels": in_channels, "width": width, "latent_channels": latent_channels,
                       "stages": stages, "activation": activation}

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


class CbrDecoder(nn.Module):
    """The encoder mirrored with transposed convolutions; ends in a sigmoid: pixels in [0, 1]."""

    def __init__(self, out_channels: int = 3, width: int = 32, latent_channels: int = 10, stages: int = 4,
                 activation: str = "relu", grid: int = 2) -> None:
        super().__init__()
        self.latent_channels, self.grid = latent_channels, grid
        layers, cin = [], latent_channels
        for i in range(stages):
            last = i == stages - 1
            cout = out_channels if last else width
            layers += [nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1),
                       nn.Sigmoid() if last else _activation(activation)]
            cin = cout
        self.layers = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        """z (B,D) with D = latent_channels·grid² -> images (B,C,S,S) in [0, 1]."""
        return self.layers(z.reshape(z.shape[0], self.latent_channels, self.grid, self.grid))


class CbrAutoencoderNet(PrototypeClassifier):
    """Encoder → latent vector → prototype layer (maps (B,M,1,1)) → linear → logits; and a decoder.

    ``forward`` returns ``logits`` (B,C), ``scores`` (B,M) (= −squared distances for ``cbr_ae``)
    and ``maps`` (B,M,1,1); in training mode also ``features`` (B,D,1,1) and ``reconstruction``
    (B,C,S,S) in [0, 1].
    """

    def __init__(self, backbone: CbrEncoder, num_classes: int, image_size: int, family: str = "cbr_ae",
                 per_class: int = 1, attrs: dict | None = None, dim: int | None = None) -> None:
        super().__init__()
        if not isinstance(backbone, CbrEncoder):
            raise EdgeprotoError("model.arch cbr_ae needs model.backbone.name: cbr_encoder")
        if image_size % backbone.stride:
            raise EdgeprotoError(
                f"model.arch cbr_ae: image_size {image_size} must be a multiple of the encoder's "
                f"stride {backbone.stride}"
            )
        grid = image_size // backbone.stride
        self.backbone = backbone
        self.add_on = nn.Identity()  # the encoder's sigmoid already bounds the latent space
        latent = backbone.out_channels * grid * grid
        if dim is not None and dim != latent:
            raise EdgeprotoError(
                f"model.prototypes.dim {dim} must equal the encoding size latent_channels × "
                f"(image_size / 2^stages)² = {latent}"
            )
        dim = latent
        cfg = backbone.config
        self.decoder = CbrDecoder(cfg["in_channels"], cfg["width"], cfg["latent_channels"], cfg["stages"],
                                  cfg["activation"], grid)
        num_prototypes = num_classes * per_class
        self.prototype_layer = PrototypeLayer(family, num_prototypes, dim, attrs)
        self.last_layer = nn.Linear(num_prototypes, num_classes, bias=False)
        self._init_classes(num_classes, per_class)
        self.set_last_layer_incorrect_connection(-0.5)
        self.image_size = image_size
        self.latent_dim = dim

    def features(self, x: Tensor) -> Tensor:
        """The encoding as a 1×1 latent map (B,D,1,1)."""
        return self.backbone(x).flatten(1)[:, :, None, None]

    def decode(self, z: Tensor) -> Tensor:
        """Latent vectors (B,D) (or maps (B,D,1,1)) -> images in [0, 1], (B,C,S,S)."""
        return self.decoder(z.flatten(1))

    @torch.no_grad()
    def render_prototypes(self) -> Tensor:
        """Every prototype decoded to an image, (M,C,S,S) in [0, 1]."""
        return self.decode(self.prototype_layer.centers.detach())

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        z = self.features(x)
        out = self.classify(z)
        if self.training:
            out["reconstruction"] = self.decode(z)
        return out


@register_arch("cbr_ae")
def _build_cbr_ae(config: dict, backbone: nn.Module) -> CbrAutoencoderNet:
    """``arch: cbr_ae``: the case-based reasoning autoencoder (a ``cbr_encoder`` backbone, ``image_size``)."""
    protos = config["prototypes"]
    return CbrAutoencoderNet(backbone, num_classes=config["num_classes"], image_size=config["image_size"],
                             family=protos["family"], per_class=protos["per_class"], attrs=protos.get("attrs"),
                             dim=protos["dim"])
