"""HyperPg as its public code has it: separation aggregated per wrong class; push by likelihood."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeproto.data import build_dataset
from edgeproto.train.checkpoint import load_checkpoint
from edgeproto.train.losses import _separation, prototype_loss
from edgeproto.train.push import push_prototypes


def test_separation_is_the_mean_over_wrong_classes_of_each_class_best():
    # 1 image of class 0; 3 classes × 2 prototypes; dissimilarities (B=1, M=6)
    dis = torch.tensor([[0.0, 0.0, 1.0, 5.0, 3.0, 4.0]])
    identity = torch.eye(3).repeat_interleave(2, dim=0)  # (M,C)
    own = identity[:, [0]].t().bool()
    labels = torch.tensor([0])
    assert float(_separation(dis, own, identity, labels, "min")) == 1.0  # ProtoPNet: nearest wrong prototype
    # HyperPg's public code: class 1's best 1.0, class 2's best 3.0 → mean 2.0
    assert float(_separation(dis, own, identity, labels, "mean_over_wrong_classes")) == 2.0


@pytest.mark.slow
def test_hyperpg_loss_uses_the_per_class_mean(trained):
    model, config = load_checkpoint(trained("hyperpg"))
    ds = build_dataset(config["recipe"]["data"], "train")
    x = torch.stack([torch.as_tensor(np.asarray(ds[i][0])) for i in range(16)])
    y = torch.tensor([int(ds[i][1]) for i in range(16)])
    with torch.no_grad():
        out = model(x)
    coefs = {"crs_ent": 0.0, "clst": 0.0, "sep": 1.0, "l1": 0.0}
    _, parts = prototype_loss(out, y, model, coefs)
    dis = -out["scores"].double()
    per_class = torch.stack([dis[:, model.prototype_classes == c].amin(dim=1) for c in range(model.num_classes)], 1)
    wrong = torch.ones_like(per_class, dtype=torch.bool)
    wrong[torch.arange(16), y] = False
    expected = float(per_class[wrong].mean())
    np.testing.assert_allclose(parts["sep"], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_hyperpg_push_searches_by_likelihood(trained):
    """With μ = 0.3 the most likely patch is not the one of highest cosine: push must pick the
    most likely (the op's maximum over the images of the prototype's class)."""
    model, config = load_checkpoint(trained("hyperpg"))
    ds = build_dataset(config["recipe"]["data"], "train")
    items = [ds[i] for i in range(len(ds))]
    x = torch.stack([torch.as_tensor(np.asarray(a)) for a, _ in items])
    y = torch.tensor([int(b) for _, b in items])
    layer = model.prototype_layer
    with torch.no_grad():
        layer.mu.fill_(0.3)
        z = model.features(x)
        like = layer(z)  # (N,M,H,W) log-likelihood before projection
    records = push_prototypes(model, x, y)
    for rec in records:
        j = rec["index"]
        own = y == int(model.prototype_classes[j])
        best = float(like[own, j].max())
        h, w = rec["latent_hw"]
        np.testing.assert_allclose(rec["similarity"], best, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(float(like[rec["source_image"], j, h, w]), best, atol=1e-5, rtol=1e-5)
