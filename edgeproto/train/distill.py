"""``edgeproto distill``: ProC-KD -- a small student (``arch: proc_kd``) trained with a teacher's prototypes.

The teacher is a trained classification prototype checkpoint (``arch: protopnet``). Its prototypes
(after push: real latent patches of its training images -- its local features summarised) become
the student's prototype layer, frozen; the student learns a projection of its own features into
the teacher's prototype space, augments them with the prototypes it attends to
(:class:`~edgeproto.models.proc_kd.ProcKdStudent`) and a head over *its own* classes, which may
differ from the teacher's. Prototypes are matched to student classes by feature similarity, not by
label: each teacher prototype belongs to the student class whose training images it is most
similar to on average (teacher scores).

Loss per batch: ProtoPNet's CE + cluster + separation on the student's classes (``train.coefs``)
+ ``distill.scores`` × KL(softmax(s_T/T) ‖ softmax(s_S/T))·T² of the prototype scores
+ ``distill.maps`` × the same per location of the prototype maps (the teacher's resized to the
student's grid) + ``distill.features`` × MSE of the student's projection (before augmentation) and
the teacher's latent patches (resized likewise) + ``distill.logits`` × Hinton's logit KD (same label
space only).
Schedule: warm-up (add-on, augmentation gate), joint (+ backbone; + head when
``train.joint_last_layer``), no push (the prototypes are the teacher's), last layer.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from edgeproto.bundle import sha256_file
from edgeproto.errors import EdgeprotoError
from edgeproto.models import PrototypeNet
from edgeproto.models.proc_kd import ARCH, ProcKdStudent
from edgeproto.train import checkpoint
from edgeproto.train.agreement import top_prototype_agreement
from edgeproto.train.augment import random_shift
from edgeproto.train.losses import accuracy, prototype_loss
from edgeproto.train.trainer import Trainer, model_config, predict

TEACHER_ARCHS = ("protopnet",)
TEACHER_FAMILY = "teacher"  # recipe value of model.prototypes.family: take the teacher's


def load_teacher(path: str | Path) -> tuple[PrototypeNet, dict]:
    """The teacher model (eval mode, frozen) and its config; one clear error when ``path`` is not a
    checkpoint or not a classification prototype model."""
    path = Path(path)
    config = checkpoint.read_config(path)
    spec = config.get("model")
    if not isinstance(spec, dict) or not isinstance(spec.get("prototypes"), dict) or not config.get("prototypes"):
        raise EdgeprotoError(f"teacher {path} has no prototypes: distill needs a trained prototype checkpoint")
    arch = spec.get("arch", "protopnet")
    if arch not in TEACHER_ARCHS:
        raise EdgeprotoError(f"teacher {path} is a {arch!r} model; distill needs a classification prototype "
                             f"model ({', '.join(TEACHER_ARCHS)}) trained by edgeproto train")
    if spec.get("in_channels", 3) != 3:
        raise EdgeprotoError(f"teacher {path} reads {spec.get('in_channels')}-channel images; the student's "
                             "data are RGB (3 channels)")
    model, config = checkpoint.load_checkpoint(path)
    for p in model.parameters():
        p.requires_grad_(False)
    return model, config


def match_prototypes(teacher_scores: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Each prototype's student class: the class whose images have the highest mean teacher score
    for it. Returns (class per prototype (M,), the (C,M) class-mean scores; -inf for an absent class)."""
    onehot = F.one_hot(labels, num_classes).to(teacher_scores.dtype)  # (N,C)
    counts = onehot.sum(dim=0)
    means = onehot.t() @ teacher_scores / counts.clamp(min=1)[:, None]
    means = means.masked_fill((counts == 0)[:, None], -float("inf"))
    return means.argmax(dim=0), means


def kl_softmax(student: Tensor, teacher: Tensor, temperature: float, dim: int = 1) -> Tensor:
    """KL(softmax(teacher/T) ‖ softmax(student/T))·T², mean over everything but ``dim``."""
    s = F.log_softmax(student / temperature, dim=dim)
    t = F.log_softmax(teacher / temperature, dim=dim)
    kl = (t.exp() * (t - s)).sum(dim=dim)
    return kl.mean() * temperature**2


def distill_terms(out: dict[str, Tensor], teacher_out: dict[str, Tensor], kd: dict,
                  same_classes: bool) -> dict[str, Tensor]:
    """The distillation terms that have a non-zero weight (unweighted)."""
    temp, terms = kd["temperature"], {}
    if kd["scores"]:
        terms["kd_scores"] = kl_softmax(out["scores"], teacher_out["scores"], temp)
    if kd["maps"]:
        t_maps = teacher_out["maps"]
        if t_maps.shape[-2:] != out["maps"].shape[-2:]:
            t_maps = F.interpolate(t_maps, size=out["maps"].shape[-2:], mode="bilinear", align_corners=False)
        terms["kd_maps"] = kl_softmax(out["maps"], t_maps, temp)
    if kd["features"]:
        t_z = teacher_out["features"]
        if t_z.shape[-2:] != out["projected"].shape[-2:]:
            t_z = F.interpolate(t_z, size=out["projected"].shape[-2:], mode="bilinear", align_corners=False)
        terms["kd_features"] = F.mse_loss(out["projected"], t_z)
    if kd["logits"] and same_classes:
        terms["kd_logits"] = kl_softmax(out["logits"], teacher_out["logits"], temp)
    return terms


class DistillTrainer(Trainer):
    """Trains ``arch: proc_kd`` from a teacher checkpoint (``teacher=``); see the module docstring."""

    def __init__(self, recipe: dict, out: Path, *, teacher: str | Path | None = None, quiet: bool = False) -> None:
        if teacher is None:
            raise EdgeprotoError(f"model.arch {ARCH} learns from a teacher: "
                                 "edgeproto distill --teacher CKPT --recipe RECIPE --out DIR")
        self.teacher_path = Path(teacher)
        self.teacher, self.teacher_config = load_teacher(self.teacher_path)
        _check_recipe(recipe, self.teacher_config)
        super().__init__(recipe, out, quiet=quiet)
        _check_data(self.teacher_config, self.train_set, self.teacher_path)
        self.renormalise = self._renormalisation()
        self.same_classes = list(self.teacher_config["classes"]) == list(self.train_set.classes)
        if self.cfg["distill"]["logits"] and not self.same_classes:
            raise EdgeprotoError("train.distill.logits needs the teacher's classes; teacher and student label "
                                 "spaces differ here (set it to 0: scores and maps distil across label spaces)")
        if self.dist.enabled:
            raise EdgeprotoError("edgeproto distill runs on one process (no torchrun)")
        self._take_teacher_prototypes()
        if not self.prototypes:  # a resumed run restores its records in run()
            self.prototypes = self._match()

    # -- setup ------------------------------------------------------------------------------
    def _model_config(self, recipe: dict, dataset) -> dict:
        cfg = model_config(recipe, dataset)
        t = self.teacher_config["model"]["prototypes"]
        cfg["prototypes"] = {"family": t["family"], "per_class": t["per_class"], "dim": t["dim"],
                             "attrs": dict(t.get("attrs") or {})}
        cfg["teacher_prototypes"] = int(self.teacher.prototype_layer.num_prototypes)
        cfg["augment_tau"] = recipe["model"]["augment_tau"]
        cfg["teacher"] = {"checkpoint": str(self.teacher_path.resolve()),
                          "recipe": self.teacher_config["recipe"]["name"],
                          "classes": list(self.teacher_config["classes"]),
                          "backbone": dict(self.teacher_config["model"]["backbone"]),
                          "test_accuracy": self.teacher_config.get("metrics", {}).get("test_accuracy"),
                          "weights_sha256": sha256_file(self.teacher_path / checkpoint.WEIGHTS)}
        return cfg

    @torch.no_grad()
    def _take_teacher_prototypes(self) -> None:
        """The student's prototype layer := the teacher's (every parameter), frozen."""
        own, theirs = self.model.prototype_layer, self.teacher.prototype_layer
        for name in own.family.param_names:
            getattr(own, name).copy_(getattr(theirs, name))
            getattr(own, name).requires_grad_(False)

    def _renormalisation(self) -> tuple[Tensor, Tensor] | None:
        """(scale, shift) taking the student's normalised images to the teacher's normalisation, or
        None when both use the same statistics."""
        def stats(mean, std) -> tuple[Tensor, Tensor]:
            return (torch.tensor(mean, dtype=torch.float32)[None, :, None, None],
                    torch.tensor(std, dtype=torch.float32)[None, :, None, None])

        mean_s, std_s = stats(self.train_set.mean, self.train_set.std)
        mean_t, std_t = stats(self.teacher_config["mean"], self.teacher_config["std"])
        if torch.equal(mean_s, mean_t) and torch.equal(std_s, std_t):
            return None
        return std_s / std_t, (mean_s - mean_t) / std_t

    def teacher_outputs(self, x: Tensor) -> dict[str, Tensor]:
        """The teacher on the student's (normalised) images, renormalised to the teacher's statistics."""
        if self.renormalise is not None:
            scale, shift = self.renormalise
            x = x * scale + shift
        self.teacher.eval()
        with torch.no_grad():
            z = self.teacher.features(x)
            return {**self.teacher.classify(z), "features": z}

    def _teacher_on(self, images: Tensor, keys: tuple[str, ...]) -> dict[str, Tensor]:
        """The teacher's ``keys`` outputs over many images, in batches."""
        outs = [self.teacher_outputs(images[i : i + 256]) for i in range(0, len(images), 256)]
        return {k: torch.cat([o[k] for o in outs]) for k in keys}

    @torch.no_grad()
    def _match(self) -> list[dict]:
        """Prototype records: student class by feature similarity (teacher scores on the student's
        training images), source patch and class from the teacher."""
        scores = self._teacher_on(self.images, ("scores",))["scores"]
        classes, means = match_prototypes(scores, self.labels, len(self.train_set.classes))
        identity = torch.zeros_like(self.model.prototype_class_identity)
        identity[torch.arange(len(classes)), classes] = 1.0
        self.model.prototype_class_identity.copy_(identity)
        self.model.set_last_layer_incorrect_connection(-0.5)
        t_names = self.teacher_config["classes"]
        records = []
        for j, t_rec in enumerate(self.teacher_config["prototypes"]):
            rec = {"index": j, "class": int(classes[j]), "match_score": float(means[classes[j], j]),
                   "teacher_prototype": j, "teacher_class": t_rec.get("class"),
                   "teacher_class_name": t_names[t_rec["class"]] if t_rec.get("class") is not None else None,
                   "teacher_source_image": t_rec.get("source_image"), "source_image": None, "latent_hw": None,
                   "patch_box": t_rec.get("patch_box") if t_rec.get("patch_png") else None,
                   "teacher_patch_png": t_rec.get("patch_png"), "similarity": None, "projected": False,
                   "no_source": bool(t_rec.get("no_source", False)), "source": "teacher"}
            if t_rec.get("merged_into") is not None:  # a duplicate in the teacher stays one in the student
                rec["merged_into"] = int(t_rec["merged_into"])
            records.append(rec)
        return records

    # -- stages -----------------------------------------------------------------------------
    def _parameter_groups(self) -> dict[str, list]:
        m: ProcKdStudent = self.model
        return {"backbone": list(m.backbone.parameters()), "add_on": list(m.add_on.parameters()),
                "augment": [m.augment_gate], "last_layer": list(m.last_layer.parameters())}

    def _active_groups(self, stage: str) -> tuple[str, ...]:
        # the teacher's prototypes stay frozen; the augmentation gate trains with the add-on
        if stage == "last_layer":
            return ("last_layer",)
        active = ("add_on", "augment") if stage == "warm" else ("backbone", "add_on", "augment")
        return active + ("last_layer",) if stage == "joint" and self.cfg["joint_last_layer"] else active

    def _group_options(self, name: str) -> dict:
        if name == "augment":  # the gate: the add-on's learning rate, no weight decay
            return {"lr": self.cfg["lr"]["add_on"], "weight_decay": 0.0}
        return super()._group_options(name)

    def _run_gradient_stage(self, si: int, stage: str, start_epoch: int, opt_state: dict, bar) -> None:
        if stage == "last_layer":  # ProtoPNet's last-layer fine-tuning on the frozen scores
            return super()._run_gradient_stage(si, stage, start_epoch, opt_state, bar)
        opt = self._optimizer(stage, opt_state)
        kd, coefs = self.cfg["distill"], self.cfg["coefs"]
        net = DistributedDataParallel(self.model) if self.dist.enabled else self.model
        for epoch in range(start_epoch, self.epochs[stage]):
            self.model.train()
            if self.cfg["freeze_backbone"]:
                self.model.backbone.eval()
            shifts = torch.Generator().manual_seed(self.recipe["seed"] * 31 + si * 1009 + epoch * 7)
            for idx in self._epoch_batches(si, epoch):
                x, y = random_shift(self.images[idx], self.cfg["augment_shift"], shifts), self.labels[idx]
                out = net(x)
                loss, parts = prototype_loss(out, y, self.model, coefs)
                for name, term in distill_terms(out, self.teacher_outputs(x), kd, self.same_classes).items():
                    loss = loss + kd[name[3:]] * term
                    parts[name] = term.item()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                self._zero_merged()
                bar(stage, epoch, len(idx), parts)
            self.metrics[f"test_accuracy_{stage}_epoch{epoch + 1}"] = acc = self.evaluate()
            bar(stage, epoch, 0, {"test_acc": acc})
            self._checkpoint_epoch(si, epoch + 1, opt)

    def _run_push(self, si: int, bar) -> None:
        """No projection: the prototypes are the teacher's, already projected onto its training patches."""
        bar("push", 0, len(self.images), {})
        self.metrics["test_accuracy_before_last_layer"] = self.evaluate()
        self._checkpoint_epoch(si + 1, 0, None)

    def _final_metrics(self) -> None:
        super()._final_metrics()
        student = predict(self.model, self.test_images)
        teacher = self._teacher_on(self.test_images, ("logits", "scores"))
        agree = top_prototype_agreement(teacher["scores"].numpy(), student["scores"].numpy())
        self.metrics["explanation_agreement_top1"] = agree["top1"]
        self.metrics[f"explanation_agreement_top{agree['k']}_overlap"] = agree["topk_overlap"]
        if self.same_classes:
            self.metrics["teacher_test_accuracy_here"] = accuracy(teacher["logits"], self.test_labels)
        per_class = self.model.prototype_class_identity.sum(dim=0)
        self.metrics["prototypes_per_class_min"] = int(per_class.min())
        self.metrics["prototypes_per_class_max"] = int(per_class.max())

    def _patch_png(self, rec: dict, rendered: Tensor | None) -> bytes:
        """The teacher's patch of this prototype (copied: the student has no source image of it)."""
        return (self.teacher_path / rec["teacher_patch_png"]).read_bytes()


def _check_recipe(recipe: dict, teacher_config: dict) -> None:
    m = recipe["model"]
    if m["arch"] != ARCH:
        raise EdgeprotoError(f"edgeproto distill trains model.arch {ARCH}; the recipe says {m['arch']!r}")
    family = teacher_config["model"]["prototypes"]["family"]
    if m["prototypes"]["family"] not in (TEACHER_FAMILY, family):
        raise EdgeprotoError(f"model.prototypes.family {m['prototypes']['family']!r}: the student takes the "
                             f"teacher's prototypes ({family!r}); set family: {TEACHER_FAMILY}")
    if m["head"] != "linear":
        raise EdgeprotoError(f"model.arch {ARCH} has a linear head; model.head {m['head']!r} is not supported")


def _check_data(teacher_config: dict, dataset, teacher_path: Path) -> None:
    """The teacher must be able to read the student's images as they are: same size, RGB."""
    if int(teacher_config["image_size"]) != int(dataset.image_size):
        raise EdgeprotoError(f"the student's images are {dataset.image_size} px but teacher {teacher_path} was "
                             f"trained on {teacher_config['image_size']} px: set data.image_size: "
                             f"{teacher_config['image_size']} in the student recipe")
    if len(dataset.mean) != 3 or len(teacher_config["mean"]) != 3:
        raise EdgeprotoError("distill needs RGB images (3 channels) for teacher and student")
