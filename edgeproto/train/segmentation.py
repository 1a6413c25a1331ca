"""Training the segmentation archs (``latent_seg``, ``scale_seg``): ProtoSeg's objective and push.

Same schedule and checkpoint as the classification trainer (warm-up, joint, push, last layer), with:

- loss (ProtoSeg, gmum/proto-segmentation ``segmentation/module.py``): cross-entropy of the
  per-location logits against the labels downsampled (nearest) to the feature grid, ignore index
  skipped; ``kld`` × the diversity term (per image and class present: each of the class's
  prototypes' log-softmax over the class's locations, symmetric KL for every pair, loss =
  mean(exp(−KL))); ``l1`` × the L1 norm of the wrong-class last-layer weights, in every stage.
  ``scale_seg`` adds ScaleProtoSeg's ``group_entropy`` × the mean normalised entropy of each group's
  weight row, and its group weights are projected back onto the simplex after each step;
- push: each prototype becomes the latent vector of the closest feature-grid location labelled
  with its class, over the training split;
- evaluation: mean IoU over the classes (and pixel accuracy) at full resolution on the test split.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from edgeproto.data.options import IGNORE_INDEX
from edgeproto.errors import EdgeprotoError
from edgeproto.models.segmentation import ScaleGroupedSegNet, project_simplex
from edgeproto.train.push import high_activation_box
from edgeproto.train.trainer import Trainer, predict


def materialize_masks(dataset) -> Tensor:
    """All masks of a segmentation dataset as one (N,S,S) long tensor."""
    return torch.stack([torch.from_numpy(dataset.mask(i).astype(np.int64)) for i in range(len(dataset))])


def grid_labels(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Labels at the feature grid: each cell takes the label of its centre pixel, (B,S,S) → (B,h,w)
    (nearest-neighbour downsampling as PIL's ``NEAREST`` resize that ProtoSeg uses; the cell centres
    are where the bilinear upsampling of the logits puts each cell, and where explanations look)."""
    s_h, s_w = masks.shape[-2:]
    rows = ((torch.arange(size[0]) + 0.5) * s_h / size[0]).long().clamp(max=s_h - 1)
    cols = ((torch.arange(size[1]) + 0.5) * s_w / size[1]).long().clamp(max=s_w - 1)
    return masks[:, rows][:, :, cols]


def region_labels(masks: Tensor, onehot: Tensor, num_classes: int) -> Tensor:
    """(B,R,1) majority class of each region's labelled pixels; ``IGNORE_INDEX`` for a region with
    none (absent, or all ignored)."""
    keep = masks != IGNORE_INDEX
    cls = F.one_hot(torch.where(keep, masks, 0), num_classes).to(onehot.dtype) * keep[..., None]  # (B,S,S,C)
    counts = torch.einsum("brhw,bhwc->brc", onehot, cls)
    labels = counts.argmax(dim=2)
    return torch.where(counts.sum(dim=2) > 0, labels, torch.full_like(labels, IGNORE_INDEX))[..., None]


def cell_box(h: int, w: int, grid: tuple[int, int], size: int) -> list[int]:
    """``[x0, y0, x1, y1]``: the input pixels around feature-grid cell (h, w), twice the cell wide
    (at least 8 px), clipped to the image -- the patch a pushed prototype was taken from."""
    cy, cx = (h + 0.5) * size / grid[0], (w + 0.5) * size / grid[1]
    half = max(4.0, size / grid[0])
    return [max(0, int(cx - half)), max(0, int(cy - half)), min(size, int(np.ceil(cx + half))),
            min(size, int(np.ceil(cy + half)))]


def kld_diversity(maps: Tensor, labels: Tensor, identity: Tensor) -> Tensor:
    """ProtoSeg's KLD term: mean over (image, class, prototype pair) of exp(−symmetric KL) between the
    log-softmax distributions of two same-class prototypes' activations over the class's locations
    (images where the class covers fewer than two locations are skipped, as in ProtoSeg)."""
    flat, lab = maps.flatten(2), labels.flatten(1)  # (B,M,L), (B,L)
    terms = []
    for c in range(identity.shape[1]):
        protos = torch.nonzero(identity[:, c]).flatten()
        where = lab == c  # (B,L)
        keep = where.sum(dim=1) >= 2
        if len(protos) < 2 or not bool(keep.any()):
            continue
        where = where[keep][:, None]  # (b,1,L)
        act = flat[keep][:, protos].masked_fill(~where, -float("inf"))  # (b,K,L)
        logp = F.log_softmax(act, dim=2).masked_fill(~where, 0.0)
        p = logp.exp() * where
        cross = torch.einsum("bkl,bjl->bkj", p, logp)  # Σ p_k log p_j
        kl = (p * logp).sum(dim=2)[:, :, None] - cross  # KL(k‖j)
        sym = (kl + kl.transpose(1, 2)) / 2
        a, b = torch.triu_indices(len(protos), len(protos), offset=1)
        terms.append(torch.exp(-sym[:, a, b]).flatten())
    if not terms:
        return maps.new_zeros(())
    return torch.cat(terms).mean()


def poly_factor(step: int, steps: int, power: float = 0.9) -> float:
    """ProtoSeg's poly decay (DeepLab's ``PolynomialLR``, power 0.9): (1 − step/steps)^power."""
    return max(0.0, 1.0 - step / steps) ** power


def wrong_class_l1(model) -> Tensor:
    """L1 of the last layer's weights from prototypes (or groups) to other classes."""
    identity = model.group_class_identity if isinstance(model, ScaleGroupedSegNet) else model.prototype_class_identity
    return (model.last_layer.weight * (1 - identity.t())).abs().sum()


def group_entropy(model: ScaleGroupedSegNet, eps: float = 1e-5) -> Tensor:
    """ScaleProtoSeg's EntropyGroup: −Σ w log(w + ε) / log K of every group's weight row, averaged."""
    w = model.group_projection
    return (-(w * torch.log(w + eps)).sum(dim=-1) / math.log(w.shape[-1])).mean()


def class_weights(masks: Tensor, num_classes: int) -> Tensor:
    """1/sqrt(pixel frequency) of each class on ``masks`` (ignored pixels skipped), mean 1; a class
    that never occurs gets the largest weight of the others."""
    freq = torch.bincount(masks[masks != IGNORE_INDEX].flatten(), minlength=num_classes).double()
    w = torch.where(freq > 0, freq.clamp(min=1).rsqrt(), torch.zeros_like(freq))
    w = torch.where(freq > 0, w, w.max())
    return (w / w.mean()).float()


def segmentation_loss(out: dict[str, Tensor], masks: Tensor, model, coefs: dict,
                      weight: Tensor | None = None) -> tuple[Tensor, dict]:
    """crs_ent·CE at the grid (+ crs_ent_pixel·CE at the input resolution) + kld·KLD + l1·L1
    (+ group_entropy·entropy for scale_seg); ``weight``: per-class CE weights or None."""
    grid = out["grid_logits"]
    if "region_onehot" in out:  # region_seg: one label per superpixel
        labels = region_labels(masks, out["region_onehot"], grid.shape[1])
    else:
        labels = grid_labels(masks, grid.shape[-2:])
    ce = F.cross_entropy(grid, labels, weight=weight, ignore_index=IGNORE_INDEX)
    maps = out.get("grid_maps", out["maps"])
    kld = kld_diversity(maps, labels, model.prototype_class_identity) if coefs["kld"] else grid.new_zeros(())
    l1 = wrong_class_l1(model)
    total = coefs["crs_ent"] * ce + coefs["kld"] * kld + coefs["l1"] * l1
    parts = {"ce": ce.item(), "kld": kld.item(), "l1": l1.item()}
    if coefs.get("crs_ent_pixel", 0.0):
        pixel = F.cross_entropy(out["logits"], masks, weight=weight, ignore_index=IGNORE_INDEX)
        total = total + coefs["crs_ent_pixel"] * pixel
        parts["ce_px"] = pixel.item()
    if isinstance(model, ScaleGroupedSegNet):
        ent = group_entropy(model)
        total = total + coefs["group_entropy"] * ent
        parts["ent"] = ent.item()
    return total, parts


def confusion(pred: Tensor, masks: Tensor, num_classes: int) -> np.ndarray:
    """(C,C) confusion counts (rows: truth) over the labelled pixels."""
    keep = masks != IGNORE_INDEX
    idx = masks[keep] * num_classes + pred[keep]
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes).numpy()


def iou_scores(conf: np.ndarray) -> dict:
    """mIoU over the classes that occur (in truth or prediction), per-class IoU, pixel accuracy."""
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - inter
    present = union > 0
    iou = np.where(present, inter / np.maximum(union, 1), np.nan)
    return {"miou": float(np.nanmean(iou)) if present.any() else 1.0,
            "pixel_accuracy": float(inter.sum() / max(conf.sum(), 1)),
            "class_iou": [None if np.isnan(v) else float(v) for v in iou]}


class SegmentationTrainer(Trainer):
    """The classification trainer's schedule, resume and checkpoint, with the segmentation pieces."""

    def __init__(self, recipe: dict, out, *, quiet: bool = False) -> None:
        super().__init__(recipe, out, quiet=quiet)
        if getattr(self.train_set, "task", "classification") != "segmentation":
            raise EdgeprotoError(f"model.arch {recipe['model']['arch']} needs a segmentation dataset "
                                 "(procedural with task: segmentation, or seg_folder)")
        self.masks = materialize_masks(self.train_set)
        self.test_masks = materialize_masks(self.test_set)
        self.class_weight = class_weights(self.masks, self.model.num_classes) if self.cfg["balance_classes"] else None

    def _parameter_groups(self) -> dict[str, list]:
        groups = super()._parameter_groups()
        if hasattr(self.model, "group_projection"):  # scale_seg: the grouping layer trains with the head
            groups["last_layer"].append(self.model.group_projection)
        return groups

    def _active_groups(self, stage: str) -> tuple[str, ...]:
        active = {"warm": ("add_on", "prototypes"), "joint": ("backbone", "add_on", "prototypes"),
                  "last_layer": ("last_layer",)}[stage]
        if stage != "last_layer" and self.cfg["joint_last_layer"]:
            active = active + ("last_layer",)
        return active

    def _run_gradient_stage(self, si: int, stage: str, start_epoch: int, opt_state: dict, bar) -> None:
        opt = self._optimizer(stage, opt_state)
        names = self._trained_groups(stage, self._parameter_groups())  # opt.param_groups' order
        steps = len(self._epoch_batches(si, 0, shard=False))
        decay = stage == "joint" and self.cfg["lr_decay"] == "poly"
        for epoch in range(start_epoch, self.epochs[stage]):
            self.model.train()
            if self.cfg["freeze_backbone"] or stage == "last_layer":
                self.model.backbone.eval()
            for step, idx in enumerate(self._epoch_batches(si, epoch, shard=False)):
                if decay:
                    factor = poly_factor(epoch * steps + step, self.epochs[stage] * steps)
                    for g, name in zip(opt.param_groups, names):
                        g["lr"] = self._group_options(name)["lr"] * factor
                loss, parts = segmentation_loss(self.model(self.images[idx]), self.masks[idx], self.model,
                                                self.cfg["coefs"], self.class_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                self._project_groups()
                bar(stage, epoch, len(idx), parts)
            scores = self.evaluate_all()
            self.metrics[f"test_miou_{stage}_epoch{epoch + 1}"] = scores["miou"]
            bar(stage, epoch, 0, {"test_miou": scores["miou"]})
            self._checkpoint_epoch(si, epoch + 1, opt)

    @torch.no_grad()
    def _project_groups(self) -> None:
        if hasattr(self.model, "group_projection"):
            self.model.group_projection.copy_(project_simplex(self.model.group_projection))

    @torch.no_grad()
    def _run_push(self, si: int, bar) -> None:
        self.metrics["test_miou_before_push"] = self.evaluate()
        self.prototypes = push_segmentation(self.model, self.images, self.masks, self.cfg["push_batch_size"],
                                            progress=lambda n: bar("push", 0, n, {}),
                                            project=self.cfg["push"] == "project")
        self.metrics["test_miou_after_push"] = self.evaluate()
        self._checkpoint_epoch(si + 1, 0, None)

    def _prune_unused(self) -> None:
        raise EdgeprotoError("train.prune_unused is not available for the segmentation archs")

    @torch.no_grad()
    def evaluate_all(self) -> dict:
        """mIoU, pixel accuracy and per-class IoU on the test split."""
        conf = np.zeros((self.model.num_classes,) * 2, dtype=np.int64)
        self.model.eval()
        for i in range(0, len(self.test_images), 64):
            pred = self.model(self.test_images[i : i + 64])["logits"].argmax(dim=1)
            conf += confusion(pred, self.test_masks[i : i + 64], self.model.num_classes)
        return iou_scores(conf)

    def evaluate(self) -> float:
        return self.evaluate_all()["miou"]

    def _final_metrics(self) -> None:
        scores = self.evaluate_all()
        self.metrics["test_miou"] = scores["miou"]
        self.metrics["test_pixel_accuracy"] = scores["pixel_accuracy"]
        self.metrics["test_class_iou"] = scores["class_iou"]


@torch.no_grad()
def push_segmentation(model, images: Tensor, masks: Tensor, batch_size: int = 128, progress=None,
                      project: bool = True) -> list[dict]:
    """Project every prototype onto the closest feature-grid location labelled with its class
    (``scale_seg``: onto that location's chunk of the prototype's scale).

    Records as the classification push (source image, latent cell, the ≥95th-percentile box of the
    prototype's map on its source image, similarity)."""
    model.eval()
    layer = model.prototype_layer
    proto_cls = model.prototype_classes
    m = int(layer.num_prototypes)
    scale_of = torch.arange(m) // model.per_scale if hasattr(model, "scale_chunks") else None
    size = images.shape[-1]
    best = torch.full((m,), -float("inf"), dtype=torch.float64)
    vectors: list[Tensor | None] = [None] * m
    source: list[tuple[int, int, int] | None] = [None] * m
    boxes: list[list[int] | None] = [None] * m
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        chunks = None
        if hasattr(model, "region_features"):  # region_seg: the locations are the superpixels
            z, onehot = model.region_features(x)  # (B,D,R,1)
            maps = layer(z)
            labels = region_labels(masks[start : start + batch_size], onehot, model.num_classes)
            painted = torch.einsum("bmr,brhw->bmhw", maps[..., 0], onehot)
        else:
            z = model.features(x)
            maps = painted = model(x)["maps"]  # (B,M,h,w)
            chunks = model.scale_chunks(z) if scale_of is not None else None
            labels = grid_labels(masks[start : start + batch_size], maps.shape[-2:])  # (B,h,w)
        own = labels[:, None] == proto_cls[None, :, None, None]  # (B,M,h,w)
        sim = maps.masked_fill(~own, -float("inf"))
        val, pos = sim.flatten(2).max(dim=2)  # (B,M)
        bval, bimg = val.max(dim=0)
        for j in torch.nonzero((bval.double() > best) & torch.isfinite(bval)).flatten().tolist():
            b, p = int(bimg[j]), int(pos[bimg[j], j])
            h, w = divmod(p, maps.shape[3])
            best[j] = float(bval[j])
            vectors[j] = (chunks[b, int(scale_of[j]), :, h, w] if chunks is not None else z[b, :, h, w]).clone()
            source[j] = (start + b, h, w)
            boxes[j] = cell_box(h, w, maps.shape[-2:], size) if painted is maps \
                else high_activation_box(painted[b, j], size)
        if progress:
            progress(len(x))
    if project:
        for j, vec in enumerate(vectors):
            if vec is not None:
                layer.centers.data[j] = vec
    records = []
    for j, src in enumerate(source):
        idx, h, w = src if src is not None else (None, None, None)
        records.append({"index": j, "class": int(proto_cls[j]), "source_image": idx,
                        "latent_hw": [h, w] if src is not None else None, "patch_box": boxes[j],
                        "similarity": float(best[j]) if src is not None else None,
                        "projected": bool(project and src is not None), "no_source": src is None})
    return records


__all__ = ["SegmentationTrainer", "kld_diversity", "push_segmentation", "segmentation_loss", "iou_scores",
           "confusion", "predict"]
