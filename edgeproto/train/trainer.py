"""The bundled trainer: ProtoPNet's schedule (warm-up, joint, push, last layer) on 1..N processes."""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from edgeproto import atomic_files
from edgeproto.errors import EdgeprotoError
from edgeproto.models import PrototypeNet, create_model
from edgeproto.train.augment import random_shift
from edgeproto.train import checkpoint
from edgeproto.train.distributed import Dist, init_distributed, shutdown
from edgeproto.train.losses import accuracy, last_layer_loss, prototype_loss
from edgeproto.train.push import patch_png, push_prototypes

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
    }


def _set_trainable(model: PrototypeNet, stage: str) -> list[dict]:
    """Freeze/unfreeze per stage; returns the optimizer's parameter groups."""
    groups = {
        "backbone": list(model.backbone.parameters()),
        "add_on": list(model.add_on.parameters()),
        "prototypes": list(model.prototype_layer.parameters()),
        "last_layer": list(model.last_layer.parameters()),
    }
    active = {"warm": ("add_on", "prototypes"), "joint": ("backbone", "add_on", "prototypes"),
              "last_layer": ("last_layer",)}[stage]
    for name, params in groups.items():
        for p in params:
            p.requires_grad_(name in active)
    return [{"params": groups[n], "name": n} for n in active]


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
        self.model_cfg = model_config(recipe, self.train_set)
        self.model = create_model(self.model_cfg)
        stride = getattr(self.model.backbone, "stride", 1)
        if self.train_set.image_size < stride:
            raise EdgeprotoError(
                f"image_size {self.train_set.image_size} is smaller than the backbone's stride {stride}: "
                "raise data.image_size or use fewer backbone stages"
            )
        self.epochs = {"warm": self.cfg["warm_epochs"], "joint": self.cfg["joint_epochs"], "push": 1,
                       "last_layer": self.cfg["last_layer_epochs"]}
        self.prototypes: list[dict] = []
        self.metrics: dict[str, float] = {}
        self.elapsed = 0.0

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

    def _run_gradient_stage(self, si: int, stage: str, start_epoch: int, opt_state: dict, bar) -> None:
        groups = _set_trainable(self.model, stage)
        lr, wd = self.cfg["lr"], self.cfg["weight_decay"]
        opt = torch.optim.Adam(
            [{"params": g["params"], "lr": lr[g["name"]],
              "weight_decay": wd if g["name"] in ("backbone", "add_on") else 0.0} for g in groups]
        )
        if opt_state:
            opt.load_state_dict(opt_state)
        if stage == "last_layer":
            return self._run_last_layer(si, start_epoch, opt, bar)
        net = DistributedDataParallel(self.model) if self.dist.enabled else self.model
        for epoch in range(start_epoch, self.epochs[stage]):
            self.model.train()
            shifts = torch.Generator().manual_seed(self.recipe["seed"] * 31 + si * 1009 + epoch * 7 + self.dist.rank)
            for idx in self._epoch_batches(si, epoch):
                x, y = random_shift(self.images[idx], self.cfg["augment_shift"], shifts), self.labels[idx]
                loss, parts = prototype_loss(net(x), y, self.model, self.cfg["coefs"])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bar(stage, epoch, len(idx) * self.dist.world_size, parts)
            self.metrics[f"test_accuracy_{stage}_epoch{epoch + 1}"] = acc = self.evaluate()
            bar(stage, epoch, 0, {"test_acc": acc})
            self._checkpoint_epoch(si, epoch + 1, opt)

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
                bar("last_layer", epoch, len(idx), {"loss": loss.item()})
            self._checkpoint_epoch(si, epoch + 1, opt)

    def _run_push(self, si: int, bar) -> None:
        self.metrics["test_accuracy_before_push"] = self.evaluate()
        self.prototypes = push_prototypes(
            self.model, self.images, self.labels, self.cfg["push_batch_size"],
            progress=lambda n: bar("push", 0, n, {}),
        )
        self.metrics["test_accuracy_after_push"] = self.evaluate()
        self._checkpoint_epoch(si + 1, 0, None)

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
        total = sum(self.epochs[s] * (len(self.images) if s != "push" else len(self.images)) for s in STAGES)
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
        self.metrics["test_accuracy"] = self.evaluate()
        self.metrics["train_accuracy"] = accuracy(predict(self.model, self.images)["logits"], self.labels)
        config = self._write_checkpoint()
        shutdown(self.dist)
        return config

    def _write_checkpoint(self) -> dict:
        classes = list(self.train_set.classes)
        for rec in self.prototypes:
            rec["class_name"] = classes[rec["class"]]
            rec["patch_png"] = f"prototypes/{rec['index']:04d}.png"
        config = {
            "recipe": self.recipe,
            "model": self.model_cfg,
            "classes": classes,
            "image_size": self.train_set.image_size,
            "mean": list(self.train_set.mean),
            "std": list(self.train_set.std),
            "part_names": list(getattr(self.train_set, "part_names", []) or []),
            "prototypes": self.prototypes,
            "metrics": self.metrics,
            "train_seconds": round(self.elapsed + time.monotonic() - self._t0, 2),
            "world_size": self.dist.world_size,
            "torch_version": torch.__version__,
        }
        if self.dist.is_main:
            for rec in self.prototypes:
                raw = self.train_set.raw_image(rec["source_image"])
                atomic_files.write_bytes(self.out / rec["patch_png"], patch_png(raw, rec["patch_box"]))
            checkpoint.save_weights(self.out, self.model)
            checkpoint.save_config(self.out, config)
            (self.out / checkpoint.RESUME).unlink(missing_ok=True)
        self.dist.barrier()
        return config


def train(recipe: dict, out: str | Path, *, force: bool = False, quiet: bool = False) -> dict:
    """Train ``recipe`` into the checkpoint directory ``out`` and return the checkpoint config.

    An ``out`` holding a finished checkpoint is refused unless ``force``; one holding a killed run's
    ``resume.pt`` is resumed.
    """
    out = Path(out)
    if (out / checkpoint.CONFIG).exists() and not force:
        raise EdgeprotoError(f"{out} already holds a trained checkpoint; pass --force to overwrite")
    if force:
        (out / checkpoint.RESUME).unlink(missing_ok=True)
    if out.exists() and not out.is_dir():
        raise EdgeprotoError(f"--out {out} exists and is not a directory")
    trainer = Trainer(recipe, out, quiet=quiet)  # data and model are checked before anything is written
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeprotoError(f"cannot create {out}: {exc.strerror}") from None
    return trainer.run()
