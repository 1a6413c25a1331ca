"""Push on trained models: boxes from the search, classes without images, duplicates merged, pruning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgeproto.data import build_dataset
from edgeproto.errors import EdgeprotoError
from edgeproto.train import prune
from edgeproto.train.checkpoint import load_checkpoint
from edgeproto.train.push import find_duplicates, high_activation_box, merge_duplicates, push_prototypes
from edgeproto.train.summary import summarize

pytestmark = pytest.mark.slow


def _train_tensors(config: dict) -> tuple[torch.Tensor, torch.Tensor]:
    ds = build_dataset(config["recipe"]["data"], "train")
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([torch.as_tensor(np.asarray(x)) for x, _ in items]), torch.tensor([int(y) for _, y in items])


def _moved(trained, family: str = "l2_log", seed: int = 0):
    """A trained model whose prototypes moved off their patches (as during joint training)."""
    model, config = load_checkpoint(trained(family))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        c = model.prototype_layer.centers
        c.add_(0.5 * c.abs().mean() * torch.randn(c.shape, generator=g))
    return model, config


def test_patch_box_comes_from_the_search_map(trained):
    """ProtoPNet's push records the box from the activation map of the search, before projection."""
    model, config = _moved(trained)
    images, labels = _train_tensors(config)
    layer = model.prototype_layer
    before = {n: getattr(layer, n).detach().clone() for n in layer.family.param_names}
    records = push_prototypes(model, images, labels)
    differ = 0
    for rec in records:
        j, idx = rec["index"], rec["source_image"]
        with torch.no_grad():
            z = model.features(images[idx: idx + 1])
            search = layer.family.torch_module.op(z, *before.values(), **layer.attrs)[0, j]
            after = layer(z)[0, j]
        expected = high_activation_box(search, images.shape[-1])
        assert rec["patch_box"] == expected, j
        differ += expected != high_activation_box(after, images.shape[-1])
    assert differ > 0  # the two maps give different boxes here: the test tells the rules apart


def test_class_without_training_images_keeps_its_prototypes(trained, tmp_path):
    model, config = _moved(trained)
    images, labels = _train_tensors(config)
    keep = labels != 2
    cls = model.prototype_classes
    old = model.prototype_layer.centers.detach().clone()
    records = push_prototypes(model, images[keep], labels[keep])
    new = model.prototype_layer.centers.detach()
    for rec in records:
        j = rec["index"]
        if int(cls[j]) == 2:
            assert rec["no_source"] and rec["source_image"] is None and rec["patch_box"] is None
            assert rec["similarity"] is None and not rec["projected"]
            torch.testing.assert_close(new[j], old[j], rtol=0, atol=0)
        else:
            assert not rec["no_source"] and rec["source_image"] is not None
    config = {**config, "prototypes": [{**r, "class_name": "c", "patch_png": None} for r in records]}
    info = summarize(config, tmp_path)
    assert info["prototypes_without_source"] == [j for j in range(len(records)) if int(cls[j]) == 2]


def test_duplicates_are_merged_and_logits_unchanged(trained):
    """Two same-class prototypes that push onto the same patch: the duplicate's column is added to
    the kept one and zeroed (ProtoPShare's join); logits are the same before and after."""
    model, config = load_checkpoint(trained("l2_log"))
    images, labels = _train_tensors(config)
    cls = model.prototype_classes
    a, b = [int(j) for j in torch.nonzero(cls == 0).flatten()[:2]]
    with torch.no_grad():
        model.prototype_layer.centers[b] = model.prototype_layer.centers[a]
    records = push_prototypes(model, images, labels)
    assert find_duplicates(records) == {b: a}
    w = model.last_layer.weight.detach().clone()
    with torch.no_grad():
        before = model(images[:32])["logits"].numpy()
    assert merge_duplicates(model, records) == {b: a}
    with torch.no_grad():
        after = model(images[:32])["logits"].numpy()
    np.testing.assert_allclose(after, before, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.last_layer.weight[:, a], w[:, a] + w[:, b])
    assert float(model.last_layer.weight.detach()[:, b].abs().max()) == 0.0
    assert records[b]["merged_into"] == a and records[a]["merged"] == [b]


def test_trainer_records_merges_in_the_checkpoint(trained):
    """The trained checkpoint says how many duplicates were merged (0 is a valid answer)."""
    _, config = load_checkpoint(trained("l2_log"))
    merged = config["merged_prototypes"]
    assert config["metrics"]["duplicates_merged"] == len(merged)
    assert summarize(config, "x")["duplicates_merged"] == len(merged)
    json.dumps(config)


def test_protopnet_pruning_by_nearest_patch_class_purity(trained):
    """A prototype moved onto a patch of another class is pruned (its 6 nearest images are of that
    class); the others of a trained model keep ≥ 3 of their own class among their 6 nearest."""
    model, config = load_checkpoint(trained("l2_log"))
    images, labels = _train_tensors(config)
    records = [dict(r) for r in config["prototypes"]]
    cls = model.prototype_classes
    victim = int(torch.nonzero(cls == 0).flatten()[0])
    donor = next(r for r in records if r["class"] == 1)
    with torch.no_grad():
        z = model.features(images[donor["source_image"]][None])[0]
        model.prototype_layer.centers[victim] = z[:, donor["latent_hw"][0], donor["latent_hw"][1]]
    pruned = prune(model, images, labels, records)
    assert victim in pruned and records[victim]["pruned"] and records[victim]["nearest_own_class"] < 3
    assert float(model.last_layer.weight.detach()[:, victim].abs().max()) == 0.0
    for j in pruned:
        assert records[j]["nearest_own_class"] < 3
    for r in records:
        assert r["pruned"] == (r["index"] in pruned)
    with pytest.raises(EdgeprotoError, match="threshold"):
        prune(model, images, labels, threshold=7)
    with pytest.raises(EdgeprotoError, match="k must be"):
        prune(model, images, labels, k=0)


def test_unsourced_and_merged_prototypes_export_and_explain(trained, tmp_path):
    """A checkpoint with a prototype without source (its class had no training image) and one merged
    into another exports, explains (the merged one never ranks first; the JSON counts it) and
    renders its figure."""
    import shutil

    from PIL import Image

    from edgeproto.device.explain import explain_image
    from edgeproto.device.figure import render_explanation
    from edgeproto.export.bundle_writer import export_bundle

    ckpt = tmp_path / "ckpt"
    shutil.copytree(trained("l2_log"), ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    recs = config["prototypes"]
    recs[0].update(source_image=None, latent_hw=None, patch_box=None, similarity=None, projected=False,
                   no_source=True, patch_png=None)
    (ckpt / "prototypes" / "0000.png").unlink()
    recs[3]["merged_into"] = 2
    recs[2]["merged"] = [3]
    config["merged_prototypes"] = {"3": 2}
    (ckpt / "config.json").write_text(json.dumps(config))
    assert summarize(config, ckpt)["prototypes_without_source"] == [0]
    export_bundle(ckpt, tmp_path / "b", golden=4)
    ds = build_dataset(config["recipe"]["data"], "test")
    img = tmp_path / "x.png"
    Image.fromarray(ds.raw_image(0)).save(img)
    result = explain_image(tmp_path / "b", img, k=6)
    assert result["merged_prototypes"] == 1
    ranked = [p["prototype"] for p in result["top_prototypes"]]
    assert sorted(ranked) == list(range(6)) and ranked[-1] == 3  # the merged one ranks last
    no_src = next(p for p in result["top_prototypes"] if p["prototype"] == 0)
    assert no_src["patch_png"] is None and no_src["source_image"] is None
    render_explanation(tmp_path / "b", img, result, tmp_path / "fig.png")
    assert (tmp_path / "fig.png").stat().st_size > 0
