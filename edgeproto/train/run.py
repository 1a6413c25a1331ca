"""``train``: a recipe into a checkpoint directory, with the trainer its architecture needs."""

from __future__ import annotations

from pathlib import Path

from edgeproto.errors import EdgeprotoError
from edgeproto.models import SEGMENTATION_ARCHS
from edgeproto.models.proc_kd import ARCH as PROC_KD_ARCH
from edgeproto.train.checkpoint import RESUME
from edgeproto.train.distill import DistillTrainer
from edgeproto.train.multilabel import MultilabelTrainer
from edgeproto.train.segmentation import SegmentationTrainer
from edgeproto.train.trainer import Trainer, check_out, resolve_data_root


# architectures whose training is not the classification trainer's
TRAINERS: dict[str, type[Trainer]] = {arch: SegmentationTrainer for arch in SEGMENTATION_ARCHS}
TRAINERS[PROC_KD_ARCH] = DistillTrainer  # edgeproto distill: needs teacher=
TRAINERS["patchct"] = MultilabelTrainer


def train(recipe: dict, out: str | Path, *, force: bool = False, quiet: bool = False, **trainer_args) -> dict:
    """Train ``recipe`` into the checkpoint directory ``out`` and return the checkpoint config.

    An ``out`` holding a finished checkpoint is refused unless ``force``; one holding a killed run's
    ``resume.pt`` is resumed. ``trainer_args`` go to the trainer (``teacher=`` for ``edgeproto distill``).
    """
    out = Path(out)
    recipe = resolve_data_root(recipe)
    check_out(recipe, out, force)
    trainer_class = TRAINERS.get(recipe["model"]["arch"], Trainer)
    # data and model are checked before anything is written
    trainer = trainer_class(recipe, out, quiet=quiet, **trainer_args)
    if force:
        (out / RESUME).unlink(missing_ok=True)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeprotoError(f"cannot create {out}: {exc.strerror}") from None
    try:
        return trainer.run()
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # nothing was written: leave no empty folder behind
        raise


def distill(recipe: dict, teacher: str | Path, out: str | Path, *, force: bool = False, quiet: bool = False) -> dict:
    """ProC-KD: train the student ``recipe`` (``model.arch: proc_kd``) guided by the ``teacher``
    checkpoint's prototypes (:mod:`edgeproto.train.distill`); return the student checkpoint config."""
    from edgeproto import atomic_files

    if recipe["model"]["arch"] != PROC_KD_ARCH:
        raise EdgeprotoError(f"edgeproto distill trains model.arch {PROC_KD_ARCH}; the recipe says "
                             f"{recipe['model']['arch']!r}")
    atomic_files.check_output(out, {"teacher checkpoint": teacher})
    return train(recipe, out, force=force, quiet=quiet, teacher=teacher)
