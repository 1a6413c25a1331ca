"""The bundled trainer: ProtoPNet's schedule (warm-up, joint, push, last layer) on 1..N processes."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from edgeproto import atomic_files
from edgeproto.environment import cpu_model
from edgeproto.errors import EdgeprotoError
from edgeproto.models import create_model
from edgeproto.train.augment import random_shift
from edgeproto.train import checkpoint
from edgeproto.train.distributed import Dist, init_distributed, shutdown
from edgeproto.train.losses import accuracy, cbr_loss, last_layer_loss, prototype_loss
from edgeproto.train.push import merge_duplicates, patch_png, push_prototypes

STAGES = ("warm", "joint", "push", "last_layer")
_MAX_CACHED_BYTES = 2 << 30  # datasets up to 2 GiB are held as one tensor


def materialize(dataset) -> tuple[Tensor, Tensor]:
    """All images of a dataset as one (N,3,S,S) tensor and labels (N,): epochs then cost no decoding."""
    n = len(dataset)
    if n == 0:
        raise EdgeprotoError("the dataset split is empty")
    s = dataset.image_size
    if n * 3 * s * s * 4 > _MAX_CACHED_BYTES:
        raise EdgeprotoError(f"dataset of {n} images at {s}px is too large to hold in memory")
    first, _ = dataset[0]
    images = torch.empty((n, *first.shape), dtype=torch.float32)
    labels = torch.empty(n, dtype=torch.long)
    for i in range(n):
        x, y = dataset[i]
        images[i] = torch.as_tensor(x)
        labels[i] = int(y)
    return images, labels


def model_config(recipe: dict, dataset) -> dict:
    """The architecture part of a checkpoint config."""
    return {
        "num_classes": len(dataset.classes),
        "in_channels": 3,
        "image_size": dataset.image_size,
        "backbone": dict(recipe["model"]["backbone"]),
        "prototypes": dict(recipe["model"]["prototypes"]),
        "arch": recipe["model"]["arch"],
        "head": recipe["model"]["head"],
        "head_features": recipe["model"]["head_features"],
        "head_attrs": dict(recipe["model"]["head_attrs"]),
        "add_on": recipe["model"].get("add_on", "regular"),
        "scales": recipe["model"]["scales"],
        "groups": recipe["model"]["groups"],
        "regions": recipe["data"].get("superpixels", 0),  # arch region_seg: SLIC regions per image
    }


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, batch_size: int = 256) -> dict[str, Tensor]:
    """Model outputs over many images, in eval mode and batches."""
    model.eval()
    outs = [model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}


class Trainer:
    """Runs a validated recipe into a checkpoint directory, resuming a killed run in the same place."""

    def __init__(self, recipe: dict, out: Path, *, quiet: bool = False) -> None:
        from edgeproto.data import build_dataset

        self.recipe, self.out = recipe, Path(out)
        self.cfg = recipe["train"]
        self.dist: Dist = init_distributed()
        self.console = Console(stderr=True, quiet=quiet or not self.dist.is_main)
        torch.manual_seed(recipe["seed"])
        self.train_set = build_dataset(recipe["data"], "train")
        self.test_set = build_dataset(recipe["data"], "test")
        self.images, self.labels = materialize(self.train_set)
        self.test_images, self.test_labels = materialize(self.test_set)
        self.model_cfg = self._model_config(recipe, self.train_set)
        self.model = create_model(self.model_cfg)
        self.is_cbr = hasattr(self.model, "decoder")  # arch cbr_ae
        stride = getattr(self.model.backbone, "stride", 1)
        if self.train_set.image_size < stride:
            raise EdgeprotoError(
                f"image_size {self.train_set.image_size} is smaller than the backbone's stride {stride}: "
                "raise data.image_size or use fewer backbone stages"
            )
        if self.cfg["init_from"]:
            self._init_from(Path(self.cfg["init_from"]))
        self.epochs = {"warm": self.cfg["warm_epochs"], "joint": self.cfg["joint_epochs"], "push": 1,
                       "last_layer": self.cfg["last_layer_epochs"]}
        self.prototypes: list[dict] = []
        self.metrics: dict[str, float] = {}
        self.elapsed = 0.0

    def _model_config(self, recipe: dict, dataset) -> dict:
        """The architecture part of the checkpoint config (a subclass adds what its arch reads)."""
        return model_config(recipe, dataset)

    def _init_from(self, source: Path) -> None:
        """Start from another checkpoint (e.g. a ProtoPNet run): every weight whose name and shape
        match is copied -- the backbone and add-on always (an error otherwise), prototype-layer
        parameters of the same name and shape (e.g. ProtoPNet prototypes as a codebook's initial
        codes) -- except the head (``last_layer``) and the class identity. The copied modules are listed in the config as ``init_from_copied``."""
        from safetensors.torch import load_file

        checkpoint.read_config(source)  # a clear error when it is not a checkpoint
        state = load_file(str(source / checkpoint.WEIGHTS))
        own = self.model.state_dict()
        required = [k for k in own if k.startswith(("backbone.", "add_on."))]
        bad = [k for k in required if k not in state or state[k].shape != own[k].shape]
        if bad:
            raise EdgeprotoError(
                f"train.init_from {source}: its backbone/add-on do not match this model's ({bad[:3]})"
            )
        copied = [k for k in own if k in state and state[k].shape == own[k].shape
                  and not k.startswith("last_layer.") and k != "prototype_class_identity"]
        self.model.load_state_dict({**own, **{k: state[k] for k in copied}})
        self.init_from_copied = sorted({k.split(".")[0] for k in copied})

    # -- resume ----------------------------------------------------------------------------
    def _state(self, stage: int, epoch: int, opt: torch.optim.Optimizer | None) -> dict:
        return {
            "recipe_name": self.recipe["name"],
            "stage": stage,
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": opt.state_dict() if opt is not None else {},
            "prototypes": self.prototypes,
            "metrics": self.metrics,
            "elapsed": self.elapsed + time.monotonic() - self._t0,
            "rng": torch.get_rng_state(),
        }

    def _checkpoint_epoch(self, stage: int, epoch: int, opt) -> None:
        if self.dist.is_main:
            checkpoint.save_resume(self.out, self._state(stage, epoch, opt))
        self.dist.barrier()

    # -- stages ----------------------------------------------------------------------------
    def _epoch_batches(self, stage: int, epoch: int, shard: bool = True) -> list[Tensor]:
        """This rank's mini-batches: a seeded permutation, split across ranks when ``shard``."""
        g = torch.Generator().manual_seed(self.recipe["seed"] * 7919 + stage * 101 + epoch)
        perm = torch.randperm(len(self.images), generator=g)
        world = self.dist.world_size if shard else 1
        perm = perm[self.dist.rank :: world] if shard else perm
        bs = max(1, self.cfg["batch_size"] // world)
        return [perm[i : i + bs] for i in range(0, len(perm), bs)]

    def _parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The model's parameters by optimizer group (a subclass adds or regroups its own)."""
        m = self.model
        groups = {"backbone": list(m.backbone.parameters()), "add_on": list(m.add_on.parameters()),
                  "prototypes": list(m.prototype_layer.parameters()), "last_layer": list(m.last_layer.parameters())}
        if self.is_cbr:
            groups["decoder"] = list(m.decoder.parameters())
        return groups

    def _active_groups(self, stage: str) -> tuple[str, ...]:
        """The groups ``stage`` (``warm``, ``joint`` or ``last_layer``) trains."""
        if stage == "last_layer":
            return ("last_layer",)
        if self.is_cbr:  # arch cbr_ae: Li et al. train everything together
            return ("backbone", "prototypes", "last_layer", "decoder")
        active = ("add_on", "prototypes") if stage == "warm" else ("backbone", "add_on", "prototypes")
        if stage == "joint" and (self.cfg["joint_last_layer"] or getattr(self.model, "head", None) == "tversky"):
            # a nonlinear head at its random init would steer the features anywhere: train it along
            active = active + ("last_layer",)
        return active

    def _group_options(self, name: str) -> dict:
        """Adam options of group ``name``: ``train.lr.<name>``, weight decay on backbone and add-on."""
        return {"lr": self.cfg["lr"][name],
                "weight_decay": self.cfg["weight_decay"] if name in ("backbone", "add_on") else 0.0}

    def _trained_groups(self, stage: str, groups: dict[str, list]) -> list[str]:
        """The non-empty active groups of ``stage``, in the optimizer's order (no backbone when frozen)."""
        return [n for n in self._active_groups(stage) if groups[n] and not (self.cfg["freeze_backbone"] and n == "backbone")]

    def _optimizer(self, stage: str, opt_state: dict) -> torch.optim.Adam:
        """Freeze all but ``stage``'s groups (and the backbone with ``freeze_backbone``); Adam over
        them, resumed from ``opt_state`` when given."""
        groups = self._parameter_groups()
        active = self._trained_groups(stage, groups)
        for name, params in groups.items():
            for p in params:
                p.requires_grad_(name in active)
        opt = torch.optim.Adam([{"params": groups[n], **self._group_options(n)} for n in active])
        if opt_state:
            opt.load_state_dict(opt_state)
        return opt

    def _run_gradient_stage(self, si: int, stage: str, start_epoch: int, opt_state: dict, bar) -> None:
        opt = self._optimizer(stage, opt_state)
        if stage == "last_layer":
            return self._run_last_layer(si, start_epoch, opt, bar)
        net = DistributedDataParallel(self.model) if self.dist.enabled else self.model
        for epoch in range(start_epoch, self.epochs[stage]):
            self.model.train()
            if self.cfg["freeze_backbone"]:
                self.model.backbone.eval()  # frozen: BatchNorm keeps its statistics too
            shifts = torch.Generator().manual_seed(self.recipe["seed"] * 31 + si * 1009 + epoch * 7 + self.dist.rank)
            for idx in self._epoch_batches(si, epoch):
                x, y = random_shift(self.images[idx], self.cfg["augment_shift"], shifts), self.labels[idx]
                out = net(x)
                if self.is_cbr:
                    loss, parts = cbr_loss(out, self._pixels(x), y, self.model, self.cfg["coefs"])
                else:
                    loss, parts = prototype_loss(out, y, self.model, self.cfg["coefs"])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                self._after_step(out, y)
                bar(stage, epoch, len(idx) * self.dist.world_size, parts)
            self.metrics[f"test_accuracy_{stage}_epoch{epoch + 1}"] = acc = self.evaluate()
            bar(stage, epoch, 0, {"test_acc": acc})
            self._checkpoint_epoch(si, epoch + 1, opt)

    def _after_step(self, out: dict[str, Tensor], y: Tensor) -> None:
        """Called after every optimizer step of the warm and joint stages with that step's model
        outputs (``features`` included) and labels: a subclass's extra update."""

    def _run_last_layer(self, si: int, start_epoch: int, opt, bar) -> None:
        # Features are frozen here, so the scores are computed once and the last layer trained on them.
        scores = predict(self.model, self.images)["scores"]
        for epoch in range(start_epoch, self.epochs["last_layer"]):
            for idx in self._epoch_batches(si, epoch, shard=False):  # same updates on every rank
                logits = self.model.last_layer(scores[idx])
                loss = last_layer_loss({"logits": logits}, self.labels[idx], self.model, self.cfg["coefs"])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                self._zero_merged()
                bar("last_layer", epoch, len(idx), {"loss": loss.item()})
            self._checkpoint_epoch(si, epoch + 1, opt)

    @torch.no_grad()
    def _zero_merged(self) -> None:
        """Prototypes merged into another at push stay out of the logits (their columns stay 0)."""
        merged = [r["index"] for r in self.prototypes if r.get("merged_into") is not None]
        if merged:
            self.model.last_layer.weight[:, merged] = 0.0

    def _pixels(self, x: Tensor) -> Tensor:
        """Normalised inputs back to [0, 1] pixels (the decoder's target)."""
        mean = torch.tensor(self.train_set.mean, dtype=x.dtype)[None, :, None, None]
        std = torch.tensor(self.train_set.std, dtype=x.dtype)[None, :, None, None]
        return x * std + mean

    @torch.no_grad()
    def _render_records(self) -> list[dict]:
        """arch cbr_ae: no projection; each prototype is pictured by decoding it. Li et al.'s
        prototypes belong to no class: a record's ``class`` is the one its last-layer weight favours
        most (``init_class``: the one it was initialised for); ``source_image`` is the training
        image whose encoding is nearest (the closest real case), with its label."""
        scores = predict(self.model, self.images)["scores"]  # (N,M)
        best, source = scores.max(dim=0)
        favoured = self.model.last_layer.weight.detach().argmax(dim=0)
        size = self.images.shape[-1]
        return [{"index": j, "class": int(favoured[j]), "init_class": int(self.model.prototype_classes[j]),
                 "source_image": int(source[j]), "source_label": int(self.labels[source[j]]),
                 "latent_hw": [0, 0], "patch_box": [0, 0, size, size], "similarity": float(best[j]),
                 "projected": False, "picture": "decoder"} for j in range(len(best))]

    def _run_push(self, si: int, bar) -> None:
        self.metrics["test_accuracy_before_push"] = self.evaluate()
        if self.is_cbr:
            self.prototypes = self._render_records()
            bar("push", 0, len(self.images), {})
            self.metrics["test_accuracy_after_push"] = self.evaluate()
            self._checkpoint_epoch(si + 1, 0, None)
            return
        self.prototypes = push_prototypes(
            self.model, self.images, self.labels, self.cfg["push_batch_size"],
            progress=lambda n: bar("push", 0, n, {}), project=self.cfg["push"] == "project",
        )
        self.metrics["test_accuracy_after_push"] = self.evaluate()
        merged = merge_duplicates(self.model, self.prototypes)
        self.metrics["duplicates_merged"] = len(merged)
        if merged:
            self.metrics["test_accuracy_after_merge"] = self.evaluate()
        self._checkpoint_epoch(si + 1, 0, None)

    @torch.no_grad()
    def _prune_unused(self) -> None:
        """Zero the class weights of prototypes that are never the argmax over prototypes at any
        location of any training image (ProtoQuant's pruning of codes that never win)."""
        self.metrics["test_accuracy_before_prune"] = self.evaluate()
        wins = torch.zeros(self.model.prototype_layer.num_prototypes, dtype=torch.long)
        self.model.eval()
        for i in range(0, len(self.images), 256):
            maps = self.model(self.images[i : i + 256])["maps"]
            wins += torch.bincount(maps.argmax(dim=1).flatten(), minlength=len(wins))
        pruned = torch.nonzero(wins == 0).flatten().tolist()
        self.model.last_layer.weight[:, pruned] = 0.0
        self.pruned = pruned
        for rec in self.prototypes:
            rec["wins"] = int(wins[rec["index"]])
            rec["pruned"] = rec["index"] in pruned

    def evaluate(self) -> float:
        """Top-1 accuracy on the test split."""
        return accuracy(predict(self.model, self.test_images)["logits"], self.test_labels)

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> dict:
        """Train, push and fine-tune; write the checkpoint; return its config."""
        self._t0 = time.monotonic()
        start_stage, start_epoch, opt_state = 0, 0, {}
        state = checkpoint.load_resume(self.out)
        if state is not None:
            if state.get("recipe_name") != self.recipe["name"]:
                raise EdgeprotoError(
                    f"{self.out} holds an unfinished run of recipe {state.get('recipe_name')!r}; "
                    "use another --out or --force"
                )
            self.model.load_state_dict(state["model"])
            start_stage, start_epoch = state["stage"], state["epoch"]
            opt_state, self.prototypes = state["optimizer"], state["prototypes"]
            self.metrics, self.elapsed = state["metrics"], state["elapsed"]
            torch.set_rng_state(state["rng"])
            if self.dist.is_main:  # said even with --quiet: the user should know the run was continued
                print(f"resuming {self.out} at stage {STAGES[min(start_stage, 3)]}, epoch {start_epoch}",
                      file=sys.stderr)
        total = sum(self.epochs[s] for s in STAGES) * len(self.images)
        done = sum(self.epochs[s] * len(self.images) for s in STAGES[:start_stage]) + start_epoch * len(self.images)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=False) as progress:
            task = progress.add_task("train", total=total, completed=done)

            def bar(stage: str, epoch: int, n: int, parts: dict) -> None:
                shown = " ".join(f"{k}={v:.3g}" for k, v in parts.items())
                progress.update(task, advance=n, description=f"{stage} ep{epoch + 1} {shown}")

            for si, stage in enumerate(STAGES):
                if si < start_stage:
                    continue
                if stage == "push":
                    self._run_push(si, bar)
                else:
                    self._run_gradient_stage(si, stage, start_epoch, opt_state, bar)
                start_epoch, opt_state = 0, {}
        if self.cfg["prune_unused"]:
            self._prune_unused()
        self._final_metrics()
        config = self._write_checkpoint()
        shutdown(self.dist)
        return config

    def _final_metrics(self) -> None:
        self.metrics["test_accuracy"] = self.evaluate()
        self.metrics["train_accuracy"] = accuracy(predict(self.model, self.images)["logits"], self.labels)

    def _patch_png(self, rec: dict, rendered: Tensor | None) -> bytes:
        """PNG bytes of a prototype's source patch: cropped from its training image, or the
        decoder's picture of it (arch cbr_ae, ``rendered``)."""
        if rendered is not None:  # the decoder's picture of the prototype
            img = (rendered[rec["index"]].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8)
            raw = img.expand(-1, -1, 3).numpy() if img.shape[2] == 1 else img.numpy()
        else:
            raw = self.train_set.raw_image(rec["source_image"])
        return patch_png(raw, rec["patch_box"])

    def _write_checkpoint(self) -> dict:
        classes = list(self.train_set.classes)
        for rec in self.prototypes:
            rec["class_name"] = classes[rec["class"]]
            rec["patch_png"] = f"prototypes/{rec['index']:04d}.png" if rec.get("patch_box") else None
        config = {
            "recipe": self.recipe,
            "model": self.model_cfg,
            "classes": classes,
            "image_size": self.train_set.image_size,
            "mean": list(self.train_set.mean),
            "std": list(self.train_set.std),
            "part_names": list(getattr(self.train_set, "part_names", []) or []),
            "prototypes": self.prototypes,
            "pruned_prototypes": getattr(self, "pruned", []),
            "merged_prototypes": {str(r["index"]): r["merged_into"] for r in self.prototypes
                                  if r.get("merged_into") is not None},
            "init_from_copied": getattr(self, "init_from_copied", []),
            "metrics": self.metrics,
            "train_seconds": round(self.elapsed + time.monotonic() - self._t0, 2),
            "world_size": self.dist.world_size,
            "torch_version": torch.__version__,
            # training is bit-reproducible for a fixed thread count and CPU kernel set, not across them
            "torch_threads": torch.get_num_threads(),
            "cpu": cpu_model(),
        }
        if self.dist.is_main:
            rendered = self.model.render_prototypes() if self.is_cbr else None  # (M,C,S,S) in [0, 1]
            for rec in self.prototypes:
                if rec["patch_png"] is None:  # no training image of its class: no source patch
                    continue
                atomic_files.write_bytes(self.out / rec["patch_png"], self._patch_png(rec, rendered))
            checkpoint.save_weights(self.out, self.model)
            checkpoint.save_config(self.out, config)
            (self.out / checkpoint.RESUME).unlink(missing_ok=True)
            # --force over an older checkpoint: drop its patches that this one does not list (never stale)
            listed = {rec["patch_png"] for rec in self.prototypes}
            for png in sorted((self.out / "prototypes").glob("*.png")):
                if f"prototypes/{png.name}" not in listed:
                    png.unlink(missing_ok=True)
        self.dist.barrier()
        return config


def resolve_data_root(recipe: dict) -> dict:
    """The recipe with ``data.root`` made absolute (relative to the working directory, as the dataset
    reads it), so the checkpoint and its bundles find the images from any folder."""
    root = recipe["data"].get("root")
    if isinstance(root, str) and root and not Path(root).expanduser().is_absolute():
        recipe = {**recipe, "data": {**recipe["data"], "root": str(Path(root).expanduser().resolve())}}
    return recipe


def check_out(recipe: dict, out: Path, force: bool) -> None:
    """Refuse an --out that would overwrite an input or a directory that is not a checkpoint."""
    inputs = {"data root": recipe["data"].get("root"), "init_from checkpoint": recipe["train"].get("init_from")}
    atomic_files.check_output(out, inputs)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise EdgeprotoError(f"--out {out} exists and is not a directory")
    if not out.is_dir():
        return
    is_checkpoint = (out / checkpoint.CONFIG).is_file()
    if is_checkpoint:
        checkpoint.read_config(out)  # a config.json of something else is not ours to overwrite
        if not force:
            raise EdgeprotoError(f"{out} already holds a trained checkpoint; pass --force to overwrite")
    elif not (out / checkpoint.RESUME).is_file() and any(out.iterdir()):
        raise EdgeprotoError(f"--out {out} is a non-empty directory that is not an edgeproto checkpoint; "
                             "refusing to write into it (choose a new or empty directory)")
