"""Prototype segmentation models: prototypes are compared with every latent location and each location
is classified from its prototype similarities (ProtoSeg's patch classification; no max-pool).

- ``latent_seg`` (:class:`LatentGridSegNet`): backbone → 1×1 add-on (Sigmoid) → prototype layer (e.g.
  the Gaussian ``edgeproto::GaussianLikelihood``) → the last layer at every location → bilinear
  upsampling of the class logits to the input size.
- ``scale_seg`` (:class:`ScaleGroupedSegNet`, after ScaleProtoSeg): the add-on is ``scales`` parallel
  3×3 branches of growing dilation, each giving one chunk of ``dim / scales`` channels; each scale's
  prototypes are compared with their own chunk only; per class, a grouping layer
  ``exp(Linear(similarities of the class's prototypes))`` → ``groups`` activations; a linear layer
  on all groups → class logits.

- ``region_seg`` (:class:`RegionSegNet`, the Gaussian Prototype Layer paper's Fast-RCNN-like model):
  the input's 4th channel is a SLIC superpixel label map (:mod:`edgeproto.data.superpixels`); the
  features are average-pooled per superpixel (a matmul of the one-hot region masks, at the feature
  grid, with the features), the prototype layer compares every region's vector, the last layer
  classifies each region, and logits and maps are painted back to the region's pixels.

Every model returns ``logits`` (B,C,S,S) per pixel, ``scores`` (B,M) (each prototype's best
location, as in the classification models) and ``maps`` (B,M,h,w); in training mode also
``grid_logits`` (B,C,h,w) (the loss is taken at the feature grid) and ``features``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgeproto.errors import EdgeprotoError
from edgeproto.models.archs import register_arch
from edgeproto.models.prototype_net import PrototypeClassifier, PrototypeLayer

SEGMENTATION_ARCHS = ("latent_seg", "scale_seg", "region_seg")


class _SegmentationNet(PrototypeClassifier):
    """Shared: outputs at the grid, upsampling, per-location last layer."""

    def _outputs(self, x: Tensor, z: Tensor, maps: Tensor, grid: Tensor) -> dict[str, Tensor]:
        logits = F.interpolate(grid, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        out = {"logits": logits, "scores": maps.amax(dim=(2, 3)), "maps": maps}
        if self.training:
            out["grid_logits"] = grid
            out["features"] = z
        return out

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        z = self.features(x)
        maps = self.prototype_layer(z)
        return self._outputs(x, z, maps, self.grid_logits(maps))


class LatentGridSegNet(_SegmentationNet):
    """Latent-grid prototype segmentation (see the module docstring)."""

    def __init__(self, backbone: nn.Module, num_classes: int, image_size: int, family: str = "gaussian",
                 per_class: int = 5, dim: int = 32, attrs: dict | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.image_size = int(image_size)
        self.add_on = nn.Sequential(nn.Conv2d(backbone.out_channels, dim, 1), nn.ReLU(inplace=True),
                                    nn.Conv2d(dim, dim, 1), nn.Sigmoid())
        self.prototype_layer = PrototypeLayer(family, num_classes * per_class, dim, attrs)
        self.last_layer = nn.Linear(num_classes * per_class, num_classes, bias=False)
        self._init_classes(num_classes, per_class)
        self.set_last_layer_incorrect_connection(-0.5)

    def features(self, x: Tensor) -> Tensor:
        return self.add_on(self.backbone(x))

    def grid_logits(self, maps: Tensor) -> Tensor:
        """The last layer at every location: (B,M,h,w) → (B,C,h,w) (a 1×1 convolution)."""
        return F.conv2d(maps, self.last_layer.weight[:, :, None, None])


class ScaleGroupedSegNet(_SegmentationNet):
    """Multi-scale grouped prototypes (see the module docstring).

    Prototype order is scale-major: scale s holds prototypes ``[s·P/S, (s+1)·P/S)``, class by class
    within a scale, so a prototype's class is ``(j mod P/S) // (per_class/S)``.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, image_size: int, family: str = "gaussian",
                 per_class: int = 8, dim: int = 32, attrs: dict | None = None, scales: int = 4,
                 groups: int = 3) -> None:
        super().__init__()
        if dim % scales or per_class % scales:
            raise EdgeprotoError(f"scale_seg: prototypes.dim ({dim}) and per_class ({per_class}) must be "
                                 f"multiples of scales ({scales})")
        self.backbone = backbone
        self.image_size = int(image_size)
        self.scales, self.groups = scales, groups
        chunk = dim // scales
        self.add_on = nn.ModuleList(
            nn.Sequential(nn.Conv2d(backbone.out_channels, chunk, 3, padding=2**s, dilation=2**s),
                          nn.ReLU(inplace=True), nn.Conv2d(chunk, chunk, 1), nn.Sigmoid())
            for s in range(scales))
        per_scale = num_classes * per_class // scales
        self.per_scale = per_scale
        # one layer of all M prototypes over dim/scales channels: every scale's chunk goes through it
        # as its own "image" (one exported node), and each prototype keeps its own scale's map
        self.prototype_layer = PrototypeLayer(family, num_classes * per_class, chunk, attrs)
        # grouping: one Linear(per_class → groups) per class, as one (C·G, per_class) weight
        self.group_projection = nn.Parameter(torch.empty(num_classes, groups, per_class))
        with torch.no_grad():
            self.group_projection.copy_(project_simplex(torch.rand(num_classes, groups, per_class)))
        self.last_layer = nn.Linear(num_classes * groups, num_classes, bias=False)
        self.num_classes = num_classes
        m = num_classes * per_class
        identity = torch.zeros(m, num_classes)
        j = torch.arange(m)
        identity[j, (j % per_scale) // (per_class // scales)] = 1.0
        self.register_buffer("prototype_class_identity", identity)
        group_identity = torch.zeros(num_classes * groups, num_classes)
        group_identity[torch.arange(num_classes * groups), torch.arange(num_classes * groups) // groups] = 1.0
        self.register_buffer("group_class_identity", group_identity)
        with torch.no_grad():
            self.last_layer.weight.copy_(group_identity.t() - 0.5 * (1 - group_identity.t()))
        # prototype indices of each class, in order (the grouping layer's input order)
        self.register_buffer("class_prototypes", torch.stack([torch.nonzero(identity[:, c]).flatten()
                                                               for c in range(num_classes)]), persistent=False)

    def features(self, x: Tensor) -> Tensor:
        h = self.backbone(x)
        return torch.cat([branch(h) for branch in self.add_on], dim=1)

    def scale_chunks(self, z: Tensor) -> Tensor:
        """(B,D,h,w) → (B,S,D/S,h,w): the features of each scale."""
        b, d, h, w = z.shape
        return z.reshape(b, self.scales, d // self.scales, h, w)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        z = self.features(x)
        chunks = self.scale_chunks(z)
        b, s, d, h, w = chunks.shape
        every = self.prototype_layer(chunks.reshape(b * s, d, h, w)).reshape(b, s, -1, h, w)  # (B,S,M,h,w)
        p = self.per_scale
        maps = torch.cat([every[:, k, k * p : (k + 1) * p] for k in range(s)], dim=1)  # own scale only
        return self._outputs(x, z, maps, self.grid_logits(maps))

    def grid_logits(self, maps: Tensor) -> Tensor:
        """Per location: group activations exp(W_c · s_c) per class, then the last layer."""
        per_class = maps[:, self.class_prototypes]  # (B,C,K,h,w)
        group = torch.exp(torch.einsum("bckhw,cgk->bcghw", per_class, self.group_projection))
        group = group.flatten(1, 2)  # (B,C·G,h,w)
        return F.conv2d(group, self.last_layer.weight[:, :, None, None])

    def class_weights(self) -> Tensor:
        """(C,M): each prototype's total group weight towards its class (explanations show it)."""
        w = torch.zeros(self.num_classes, self.prototype_class_identity.shape[0])
        for c in range(self.num_classes):
            w[c, self.class_prototypes[c]] = self.group_projection.detach()[c].sum(dim=0)
        return w


class RegionSegNet(LatentGridSegNet):
    """Superpixel-region prototype segmentation (see the module docstring): the latent-grid model's
    layers, its features pooled per SLIC region instead of read per grid location."""

    def __init__(self, backbone: nn.Module, num_classes: int, image_size: int, regions: int, family: str = "gaussian",
                 per_class: int = 3, dim: int = 16, attrs: dict | None = None) -> None:
        if regions < 1:
            raise EdgeprotoError("region_seg needs data.superpixels ≥ 1 (the number of SLIC regions)")
        super().__init__(backbone, num_classes, image_size, family, per_class, dim, attrs)
        self.regions = int(regions)
        self.register_buffer("region_ids", torch.arange(self.regions, dtype=torch.float32)[None, :, None, None],
                             persistent=False)

    def region_masks(self, x: Tensor) -> Tensor:
        """One-hot (B,R,S,S) of the label map in channel 3."""
        return (x[:, 3:4] == self.region_ids).to(x.dtype)

    def features(self, x: Tensor) -> Tensor:
        return super().features(x[:, :3])  # channel 3 is the label map

    def region_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B,D,R,1) masked-average features of each region and the one-hot masks (B,R,S,S)."""
        onehot = self.region_masks(x)
        z = self.features(x)
        h, w = z.shape[-2:]
        weights = F.adaptive_avg_pool2d(onehot, (h, w)).flatten(2)  # (B,R,h·w): share of each cell
        pooled = torch.matmul(weights, z.flatten(2).transpose(1, 2))  # (B,R,D)
        pooled = pooled / weights.sum(dim=2, keepdim=True).clamp(min=1e-6)
        return pooled.transpose(1, 2).unsqueeze(3), onehot

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        feats, onehot = self.region_features(x)
        region_maps = self.prototype_layer(feats)  # (B,M,R,1)
        region_logits = self.grid_logits(region_maps)  # (B,C,R,1)
        logits = torch.einsum("bcr,brhw->bchw", region_logits[..., 0], onehot)
        maps = torch.einsum("bmr,brhw->bmhw", region_maps[..., 0], onehot)
        out = {"logits": logits, "scores": maps.amax(dim=(2, 3)), "maps": maps}
        if self.training:
            out["grid_logits"], out["grid_maps"], out["region_onehot"] = region_logits, region_maps, onehot
        return out

    def grid_logits(self, maps: Tensor) -> Tensor:
        return F.conv2d(maps, self.last_layer.weight[:, :, None, None])


def project_simplex(w: Tensor) -> Tensor:
    """Euclidean projection of each last-axis row onto the probability simplex (sort-based, as
    ScaleProtoSeg's ``projection_simplex_sort``)."""
    u, _ = torch.sort(w, dim=-1, descending=True)
    css = u.cumsum(dim=-1) - 1.0
    k = torch.arange(1, w.shape[-1] + 1, dtype=w.dtype)
    cond = u - css / k > 0
    rho = cond.to(w.dtype).cumsum(dim=-1).argmax(dim=-1, keepdim=True)  # last index where cond holds
    theta = css.gather(-1, rho) / (rho + 1).to(w.dtype)
    return (w - theta).clamp(min=0)


def _prototype_kwargs(config: dict) -> dict:
    protos = config["prototypes"]
    return {"num_classes": config["num_classes"], "image_size": config["image_size"], "family": protos["family"],
            "per_class": protos["per_class"], "dim": protos["dim"], "attrs": protos.get("attrs")}


@register_arch("latent_seg")
def _build_latent_seg(config: dict, backbone: nn.Module) -> LatentGridSegNet:
    return LatentGridSegNet(backbone, **_prototype_kwargs(config))


@register_arch("scale_seg")
def _build_scale_seg(config: dict, backbone: nn.Module) -> ScaleGroupedSegNet:
    return ScaleGroupedSegNet(backbone, **_prototype_kwargs(config), scales=config.get("scales", 4),
                              groups=config.get("groups", 3))


@register_arch("region_seg")
def _build_region_seg(config: dict, backbone: nn.Module) -> RegionSegNet:
    return RegionSegNet(backbone, **_prototype_kwargs(config), regions=config.get("regions", 0))
