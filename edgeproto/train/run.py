"""``train``: a recipe into a checkpoint directory, with the trainer its architecture needs."""

from __future__ import annotations

from pathlib import Path

from edgeproto.errors import EdgeprotoError
from edgeproto.models import SEGMENTATION_ARCHS
from edgeproto.train.checkpoint import RESUME
from edgeproto.train.multilabel import MultilabelTrainer
from edgeproto.train.segmentation import SegmentationTrainer
from edgeproto.train.trainer import Trainer, check_out, resolve_data_root


# architectures whose training is not the classification trainer's
TRAINERS: dict[str, type[Trainer]] = {arch: SegmentationTrainer for arch in SEGMENTATION_ARCHS}
TRAINERS["patchct"] = MultilabelTrainer


def train(recipe: dict, out: str | Path, *, force: bool = False, quiet: bool = False) -> dict:
    """Train ``recipe`` into the checkpoint directory ``out`` and return the checkpoint config.

    An ``out`` holding a finished checkpoint is refused unless ``force``; one holding a killed run's
    ``resume.pt`` is resumed.
    """
    out = Path(out)
    recipe = resolve_data_root(recipe)
    check_out(recipe, out, force)
    trainer_class = TRAINERS.get(recipe["model"]["arch"], Trainer)
    trainer = trainer_class(recipe, out, quiet=quiet)  # data and model are checked before anything is written
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
