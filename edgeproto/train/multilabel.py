"""Training ``arch: patchct``: binary cross-entropy per label + the two-way conditional-transport cost.

Same schedule, resume and checkpoint as the classification trainer (warm-up, joint, push, last layer):

- loss: ``crs_ent`` × BCE of the per-label logits against the 0/1 label sets + ``ct_forward`` ×
  the forward and ``ct_backward`` × the backward conditional-transport cost (:func:`ct_cost`) between
  the patch set and the image's true label set (from joint epoch ``train.ct_from_epoch`` on) +
  ``l1`` × the L1 norm of the last layer's weights from a prototype to the other labels;
- warm-up: add-on, label embeddings and last layer (the backbone waits); joint: everything; last
  layer: the last layer alone on the frozen scores (BCE + L1);
- push: nothing is projected (the label embeddings stay learned vectors, as in PatchCT); each one
  is pictured by the training patch closest to it among the images that carry its label (source
  image, feature-grid cell, cell box), so explanations can show it;
- evaluation: mAP over the labels (the tracked metric), per-label F1 at probability 0.5, and, on a
  dataset with part masks named like the labels (procedural ``task: multilabel``), the pointing game
  per label (:mod:`edgeproto.data.label_sets`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from edgeproto.data.label_sets import PointingGame, label_f1, label_maps, mean_average_precision, part_index
from edgeproto.errors import EdgeprotoError
from edgeproto.models.patchct import PatchCTNet
from edgeproto.train.segmentation import cell_box
from edgeproto.train.trainer import Trainer, model_config, predict


def ct_cost(sim: Tensor, targets: Tensor, identity: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """The forward and backward conditional-transport costs, each the mean over the images with at
    least one true label (the CT cost is their sum).

    ``sim`` (B,M,h,w) cosine of every patch with every label embedding, cost ``1 − sim``;
    ``targets`` (B,C) 0/1; ``identity`` (M,C) prototype → label. The image's patch distribution θ is
    uniform over its h·w patches, its label distribution p uniform over the embeddings of its true
    labels. Forward (patch → label): ``π(y_j|x_i) = p_j e^{s_ij/τ} / Σ_j' p_j' e^{s_ij'/τ}``, cost
    ``Σ_i θ_i Σ_j π(y_j|x_i) c_ij``; backward (label → patch): ``π(x_i|y_j) = θ_i e^{s_ij/τ} /
    Σ_i' θ_i' e^{s_i'j/τ}``, cost ``Σ_j p_j Σ_i π(x_i|y_j) c_ij``.
    """
    present = (targets.to(sim.dtype) @ identity.t()) > 0  # (B,M): embeddings of the true labels
    keep = present.any(dim=1)
    if not bool(keep.any()):
        return sim.new_zeros(()), sim.new_zeros(())
    s = sim[keep].flatten(2) / temperature  # (b,M,N)
    present = present[keep]
    cost = 1.0 - sim[keep].flatten(2)
    p = present.to(sim.dtype) / present.sum(dim=1, keepdim=True)  # (b,M)
    log_p = torch.log(p.clamp_min(1e-30)).masked_fill(~present, -float("inf"))
    forward_plan = torch.softmax(s + log_p[:, :, None], dim=1)  # over labels, per patch
    forward = (forward_plan * cost).sum(dim=1).mean(dim=1)  # θ uniform
    backward_plan = torch.softmax(s, dim=2)  # over patches, per label embedding (θ uniform cancels)
    backward = ((backward_plan * cost).sum(dim=2) * p).sum(dim=1)
    return forward.mean(), backward.mean()


def wrong_label_l1(model: PatchCTNet) -> Tensor:
    """L1 of the last-layer weights from each prototype to the labels it does not belong to."""
    return (model.last_layer.weight * (1 - model.prototype_class_identity.t())).abs().sum()


def multilabel_loss(out: dict[str, Tensor], targets: Tensor, model: PatchCTNet, coefs: dict,
                    with_ct: bool = True) -> tuple[Tensor, dict]:
    """crs_ent·BCE + ct_forward·CT→ + ct_backward·CT← (when ``with_ct``) + l1·L1, and its parts
    (floats, for the progress bar)."""
    bce = F.binary_cross_entropy_with_logits(out["logits"], targets)
    l1 = wrong_label_l1(model)
    total = coefs["crs_ent"] * bce + coefs["l1"] * l1
    parts = {"bce": bce.item()}
    if with_ct and "similarity" in out and (coefs["ct_forward"] or coefs["ct_backward"]):
        forward, backward = ct_cost(out["similarity"], targets, model.prototype_class_identity, model.temperature)
        total = total + coefs["ct_forward"] * forward + coefs["ct_backward"] * backward
        parts["ct_fw"], parts["ct_bw"] = forward.item(), backward.item()
    return total, parts


def dataset_targets(dataset) -> Tensor:
    """(N,C) float 0/1 label sets of a multi-label dataset."""
    return torch.as_tensor(np.asarray(dataset.targets), dtype=torch.float32)


class MultilabelTrainer(Trainer):
    """The classification trainer's schedule and checkpoint with PatchCT's loss, push and metrics."""

    def __init__(self, recipe: dict, out, *, quiet: bool = False) -> None:
        super().__init__(recipe, out, quiet=quiet)
        if getattr(self.train_set, "task", "classification") != "multilabel":
            raise EdgeprotoError(f"model.arch {recipe['model']['arch']} needs a multi-label dataset "
                                 "(procedural with task: multilabel, or multilabel_folder)")
        self.targets = dataset_targets(self.train_set)
        self.test_targets = dataset_targets(self.test_set)

    def _model_config(self, recipe: dict, dataset) -> dict:
        return {**model_config(recipe, dataset), "temperature": recipe["model"]["temperature"]}

    def _active_groups(self, stage: str) -> tuple[str, ...]:
        # the label classifier trains in every stage
        return {"warm": ("add_on", "prototypes", "last_layer"),
                "joint": ("backbone", "add_on", "prototypes", "last_layer"), "last_layer": ("last_layer",)}[stage]

    def _run_gradient_stage(self, si: int, stage: str, start_epoch: int, opt_state: dict, bar) -> None:
        opt = self._optimizer(stage, opt_state)
        frozen = predict(self.model, self.images)["scores"] if stage == "last_layer" else None
        start_ct = self.cfg["ct_from_epoch"]
        for epoch in range(start_epoch, self.epochs[stage]):
            with_ct = stage == "joint" and epoch >= start_ct or stage == "warm" and start_ct == 0
            self.model.train()
            if self.cfg["freeze_backbone"] or stage == "last_layer":
                self.model.backbone.eval()
            for idx in self._epoch_batches(si, epoch, shard=False):
                if frozen is not None:  # features are fixed: the head on the stored scores
                    out = {"logits": self.model.last_layer(frozen[idx])}
                else:
                    out = self.model(self.images[idx])
                loss, parts = multilabel_loss(out, self.targets[idx], self.model, self.cfg["coefs"], with_ct)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bar(stage, epoch, len(idx), parts)
            self.metrics[f"test_map_{stage}_epoch{epoch + 1}"] = score = self.evaluate()
            bar(stage, epoch, 0, {"test_map": score})
            self._checkpoint_epoch(si, epoch + 1, opt)

    @torch.no_grad()
    def _run_push(self, si: int, bar) -> None:
        self.prototypes = picture_label_embeddings(self.model, self.images, self.targets, self.cfg["push_batch_size"])
        bar("push", 0, len(self.images), {})
        self._checkpoint_epoch(si + 1, 0, None)

    def _prune_unused(self) -> None:
        raise EdgeprotoError("train.prune_unused is not available for arch patchct")

    @torch.no_grad()
    def evaluate_all(self) -> dict:
        """mAP, per-label AP and F1, and (with part masks) the pointing game per label, on the test split."""
        out = predict(self.model, self.test_images)
        logits, targets = out["logits"].numpy(), self.test_targets.numpy()
        result = {**mean_average_precision(targets, logits), **label_f1(targets, logits)}
        parts = list(getattr(self.test_set, "part_names", []) or [])
        part_of = part_index(list(self.test_set.classes), parts)
        if parts and any(p is not None for p in part_of):
            game = PointingGame(len(part_of), self.test_set.image_size, part_of)
            maps = label_maps(out["scores"].numpy(), out["maps"].numpy(), self.model.prototype_classes.numpy(),
                              len(part_of))
            for i in range(len(maps)):
                game.add(maps[i], self.test_set.part_masks(i))
            result.update(game.result())
        return result

    def evaluate(self) -> float:
        return mean_average_precision(self.test_targets.numpy(),
                                      predict(self.model, self.test_images)["logits"].numpy())["map"]

    def _final_metrics(self) -> None:
        scores = self.evaluate_all()
        self.metrics["test_map"] = scores["map"]
        self.metrics["test_macro_f1"] = scores["macro_f1"]
        self.metrics["test_label_f1"] = scores["label_f1"]
        self.metrics["test_label_ap"] = scores["label_ap"]
        if "pointing_game" in scores:
            self.metrics["test_pointing_game"] = scores["pointing_game"]
            self.metrics["test_label_pointing_game"] = scores["label_pointing_game"]
        self.metrics["train_map"] = mean_average_precision(self.targets.numpy(),
                                                           predict(self.model, self.images)["logits"].numpy())["map"]


@torch.no_grad()
def picture_label_embeddings(model: PatchCTNet, images: Tensor, targets: Tensor, batch_size: int = 128) -> list[dict]:
    """Push records without projection: each label embedding's closest training patch (highest cosine)
    among the images that carry its label."""
    model.eval()
    proto_cls = model.prototype_classes
    m = len(proto_cls)
    size = images.shape[-1]
    best = torch.full((m,), -float("inf"), dtype=torch.float64)
    source: list[tuple[int, int, int] | None] = [None] * m
    grid = None
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        sim = model.prototype_layer(model.features(x))  # (B,M,h,w)
        grid = sim.shape[-2:]
        carries = targets[start : start + batch_size][:, proto_cls] > 0  # (B,M)
        val, pos = sim.flatten(2).max(dim=2)
        val = val.masked_fill(~carries, -float("inf"))
        bval, bimg = val.max(dim=0)
        for j in torch.nonzero((bval.double() > best) & torch.isfinite(bval)).flatten().tolist():
            b = int(bimg[j])
            h, w = divmod(int(pos[b, j]), sim.shape[3])
            best[j], source[j] = float(bval[j]), (start + b, h, w)
    records = []
    for j, src in enumerate(source):
        idx, h, w = src if src is not None else (None, None, None)
        records.append({"index": j, "class": int(proto_cls[j]), "source_image": idx,
                        "latent_hw": [h, w] if src is not None else None,
                        "patch_box": cell_box(h, w, grid, size) if src is not None else None,
                        "similarity": float(best[j]) if src is not None else None, "projected": False,
                        "no_source": src is None})
    return records
