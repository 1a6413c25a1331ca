"""The explanation contract's ranking: shift-invariant, predicted class first, classes from the bundle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeproto.ranking import RANK_BY, prototype_classes, ranking, top_prototypes
from edgeproto.train.checkpoint import load_checkpoint


def test_negative_scores_keep_the_predicted_class_on_top():
    # log-densities: all negative; class 1 is predicted, but score × weight would pick prototype 0
    # (−10 × −0.5 = 5 beats −1 × 1 = −1)
    logits = np.array([[0.0, 3.0]])
    scores = np.array([[-10.0, -12.0, -1.0, -2.0]])
    classes = np.array([0, 0, 1, 1])
    assert top_prototypes(logits, scores, classes, 4).tolist() == [[2, 3, 0, 1]]


def test_adding_a_constant_never_reorders():
    rng = np.random.default_rng(0)
    logits, scores = rng.normal(size=(20, 3)), rng.normal(size=(20, 6))
    classes = np.array([0, 0, 1, 1, 2, 2])
    base = ranking(logits, scores, classes)
    for shift in (-100.0, -3.0, 7.5, 1e3):
        assert (ranking(logits, scores + shift, classes) == base).all()


def test_merged_pruned_and_nan_rank_last():
    records = [{"class": 0}, {"class": 0, "merged_into": 0}, {"class": 1}, {"class": 0, "pruned": True}]
    classes = prototype_classes(records)
    assert classes.tolist() == [0, -1, 1, -1]
    logits = np.array([[1.0, 0.0]])
    scores = np.array([[1.0, 5.0, 9.0, 6.0]])
    assert ranking(logits, scores, classes)[0].tolist() == [0, 2, 3, 1]
    scores = np.array([[np.nan, 5.0, 9.0, 6.0]])
    assert ranking(logits, scores, classes)[0, -1] == 0
    with pytest.raises(ValueError):
        ranking(logits, scores, classes[:3])


def test_rank_by_is_written_in_the_manifest(trained, tmp_path):
    from edgeproto.bundle import open_bundle
    from edgeproto.export.bundle_writer import export_bundle

    export_bundle(trained("l2_log"), tmp_path / "b", golden=4)
    assert open_bundle(tmp_path / "b").manifest["explain"]["rank_by"] == RANK_BY


@pytest.mark.slow
@pytest.mark.parametrize("family", ["hyperpg", "gaussian", "cosine"])
def test_trained_top1_belongs_to_predicted_class(trained, family):
    """Families with negative scores: the top-1 explaining prototype is always of the predicted class."""
    from edgeproto.data import build_dataset

    model, config = load_checkpoint(trained(family))
    ds = build_dataset(config["recipe"]["data"], "test")
    x = torch.stack([torch.as_tensor(np.asarray(ds[i][0], dtype=np.float32)) for i in range(len(ds))])
    with torch.no_grad():
        out = {k: v.numpy().astype(np.float64) for k, v in model(x).items()}  # exact shifts
    classes = prototype_classes(config["prototypes"])
    top1 = top_prototypes(out["logits"], out["scores"], classes, 1)[:, 0]
    assert (classes[top1] == out["logits"].argmax(1)).all()
    shifted = top_prototypes(out["logits"], out["scores"] - 50.0, classes, 1)[:, 0]
    assert (shifted == top1).all()
