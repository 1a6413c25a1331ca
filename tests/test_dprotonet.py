"""DProtoNet (arch dprotonet), its MDM explanation on the device, and the heatmap quality metrics."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgeproto.compare.heatmap_quality import auc, deletion_insertion, perturbation_curve, pointing_hit
from edgeproto.probabilities import softmax
from edgeproto.device.mdm import consistency, dynamic_masks, mdm_maps
from edgeproto.errors import EdgeprotoError

ATOL, RTOL = 1e-5, 1e-4


# ------------------------------------------------------------------ metrics, by hand
def _mean_prob(batch: np.ndarray) -> np.ndarray:
    """A 'model' whose class-0 probability is the mean input value (class 1: the rest)."""
    m = batch.reshape(len(batch), -1).mean(axis=1)
    return np.stack([m, 1 - m], axis=1)


def test_deletion_and_insertion_auc_by_hand():
    # 2×2 image, one channel; the heatmap orders the pixels 0, 1, 2, 3 (row-major); baseline 0
    x = np.array([[[1.0, 0.5], [0.25, 0.0]]], np.float32)
    heat = np.array([[4.0, 3.0], [2.0, 1.0]])
    dele = perturbation_curve(_mean_prob, x, heat, 0, "deletion", steps=4)
    ins = perturbation_curve(_mean_prob, x, heat, 0, "insertion", steps=4)
    # deletion: mean of the pixels left: (1+.5+.25)/4, (.5+.25)/4, .25/4, 0, 0
    np.testing.assert_allclose(dele, [0.4375, 0.1875, 0.0625, 0.0, 0.0])
    np.testing.assert_allclose(ins, [0.0, 0.25, 0.375, 0.4375, 0.4375])
    # trapezoid over x = 0, .25, .5, .75, 1
    assert auc(dele) == pytest.approx(0.25 * (0.4375 / 2 + 0.1875 + 0.0625 + 0.0 + 0.0 / 2))  # 0.1171875
    assert auc(ins) == pytest.approx(0.3203125)
    both = deletion_insertion(_mean_prob, x, heat, 0, steps=4)
    assert both["deletion"] == pytest.approx(0.1171875) and both["insertion"] == pytest.approx(0.3203125)
    # the reversed heatmap deletes the empty pixels first: a worse (higher) deletion AUC
    assert deletion_insertion(_mean_prob, x, -heat, 0, steps=4)["deletion"] > both["deletion"]
    # ties go in row-major order; a non-zero baseline fills what is removed
    flat = perturbation_curve(_mean_prob, x, np.zeros((2, 2)), 0, "deletion", steps=4, baseline=1.0)
    np.testing.assert_allclose(flat, [0.4375, 0.4375, 0.5625, 0.75, 1.0])


def test_pointing_game_by_hand():
    masks = np.zeros((2, 4, 4), bool)
    masks[0, 1, 2] = True  # part 0 is pixel (y=1, x=2)
    heat = np.zeros((4, 4))
    heat[1, 2] = 1.0
    assert pointing_hit(heat, masks) is True
    heat2 = np.zeros((4, 4))
    heat2[3, 0] = 1.0
    assert pointing_hit(heat2, masks) is False
    assert pointing_hit(heat2, masks, tolerance=2.8) is False  # (3,0) to (1,2): √(4+4) ≈ 2.83 px
    assert pointing_hit(heat2, masks, tolerance=2.9) is True
    assert pointing_hit(heat, np.zeros((2, 4, 4), bool)) is None  # no part pixel: not counted


def test_metric_bad_inputs():
    x = np.zeros((1, 2, 2), np.float32)
    with pytest.raises(EdgeprotoError, match="heatmap"):
        perturbation_curve(_mean_prob, x, np.zeros((3, 3)), 0, "deletion")
    with pytest.raises(EdgeprotoError, match="mode"):
        perturbation_curve(_mean_prob, x, np.zeros((2, 2)), 0, "sideways")
    with pytest.raises(EdgeprotoError, match="finite"):
        perturbation_curve(_mean_prob, x, np.full((2, 2), np.nan), 0, "deletion")
    with pytest.raises(EdgeprotoError, match="part masks"):
        pointing_hit(np.zeros((2, 2)), np.zeros((1, 3, 3), bool))


# ------------------------------------------------------------------ MDM, torch-free
def test_consistency_by_hand():
    ref = np.array([2.0, 0.0, -2.0])
    got = consistency(np.array([[1.0, 0.0, -1.0], [-2.0, 0.0, 2.0], [4.0, 0.0, -4.0], [12.0, 10.0, 8.0],
                                [1.0, 1.0, 1.0]]), ref)
    # half the pattern; the opposite (clipped to 0); stronger (clipped to 1); the same pattern shifted
    # by +10 (centred: identical); no decision at all
    np.testing.assert_allclose(got, [0.5, 0.0, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(consistency(np.ones((2, 3)), np.ones(3)), [0.0, 0.0])  # reference without a decision


def test_dynamic_masks_are_seeded_and_smooth():
    a = dynamic_masks(32, 4, 8, seed=3)
    assert a.shape == (8, 32, 32) and a.dtype == np.float32 and 0.0 <= a.min() and a.max() <= 1.0
    assert not a.flags.writeable  # cached and shared between images
    np.testing.assert_array_equal(a, dynamic_masks(32, 4, 8, seed=3))
    assert not np.array_equal(a, dynamic_masks(32, 4, 8, seed=4))
    assert 0.2 < a.mean() < 0.8  # about half of every mask is kept
    assert len(np.unique(np.round(a, 3))) > 3  # bilinear: soft edges, not only 0/1


def test_mdm_finds_the_evidence():
    """A model whose class-0 logit is the evidence inside one square: MDM's peak lands in the square,
    and its deletion AUC beats (is below) the reversed heatmap's."""
    size = 32
    region = np.zeros((size, size), bool)
    region[4:12, 18:28] = True

    def logits_fn(batch):
        ev = batch[:, 0][:, region].mean(axis=1) * 4
        return np.stack([ev, -ev, np.zeros_like(ev)], axis=1)

    x = np.ones((3, size, size), np.float32)
    out = mdm_maps(logits_fn, x, scales=(2, 4, 8), masks=96)
    heat = out["heatmap"]
    assert heat.shape == (size, size) and 0.0 <= heat.min() and heat.max() <= 1.0
    assert out["runs"] == 1 + 3 * 96
    y, x_ = np.unravel_index(heat.argmax(), heat.shape)
    assert region[y, x_]
    assert heat[region].mean() > heat[~region].mean() + 0.2
    prob = lambda b: softmax(logits_fn(b))  # noqa: E731
    good = deletion_insertion(prob, x, heat, 0, steps=16)
    bad = deletion_insertion(prob, x, -heat, 0, steps=16)
    assert good["deletion"] < bad["deletion"] and good["insertion"] > bad["insertion"]


@pytest.mark.parametrize("kwargs, match", [({"scales": (0,)}, "scales"), ({"scales": (64,)}, "scales"),
                                           ({"masks": 0}, "masks"), ({"keep": 1.0}, "keep")])
def test_mdm_bad_settings(kwargs, match):
    with pytest.raises(EdgeprotoError, match=match):
        mdm_maps(lambda b: np.zeros((len(b), 2)), np.zeros((3, 32, 32), np.float32), **kwargs)


# ------------------------------------------------------------------ the model
def test_multi_image_update_by_hand():
    """One prototype per class; the update moves each toward the mean of its nearest patch in the
    batch's images of its class (cosine family: nearest = most aligned)."""
    from edgeproto.models import create_model

    model = create_model({"arch": "dprotonet", "num_classes": 2, "in_channels": 3,
                          "backbone": {"name": "small_cnn", "width": 4, "stages": 1},
                          "prototypes": {"family": "cosine", "per_class": 1, "dim": 2, "attrs": {}}})
    with torch.no_grad():
        model.prototype_layer.centers.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    # two images of class 0, one of class 1; 1×2 latent grids
    z = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]],     # image 0: (2,0) aligned with p0, (0,1) with p1
                      [[[4.0, 1.0]], [[0.0, 4.0]]],     # image 1: (4,0) vs (1,4): p0 picks (4,0)
                      [[[1.0, 1.0]], [[1.0, 3.0]]]])    # image 2 (class 1): (1,1) vs (1,3): p1 picks (1,3)
    labels = torch.tensor([0, 0, 1])
    model.update_prototypes(z, labels, momentum=0.5)
    expected = torch.tensor([[0.5 * 1 + 0.5 * 3.0, 0.5 * 0 + 0.5 * 0.0],  # mean of (2,0), (4,0) = (3,0)
                             [0.5 * 0 + 0.5 * 1.0, 0.5 * 1 + 0.5 * 3.0]])  # (1,3)
    torch.testing.assert_close(model.prototype_layer.centers.detach(), expected)
    model.update_prototypes(z[:1], labels[:1], momentum=0.5)  # class 1 absent: its prototype stays
    torch.testing.assert_close(model.prototype_layer.centers.detach()[1], expected[1])


def test_multi_image_update_competes_within_a_class():
    """Two prototypes of one class whose nearest patch is the same: the one that wins the location
    takes it; the other wins no location and stays (they never collapse onto one mean)."""
    from edgeproto.models import create_model

    model = create_model({"arch": "dprotonet", "num_classes": 1, "in_channels": 3,
                          "backbone": {"name": "small_cnn", "width": 4, "stages": 1},
                          "prototypes": {"family": "cosine", "per_class": 2, "dim": 2, "attrs": {}}})
    with torch.no_grad():
        model.prototype_layer.centers.copy_(torch.tensor([[1.0, 0.0], [1.0, 0.5]]))
    # patches a = (3,1), b = (0,1): cos(p0,a) = .949, cos(p1,a) = .990, cos(p0,b) = 0, cos(p1,b) = .447
    z = torch.tensor([[[[3.0, 0.0]], [[1.0, 1.0]]]])
    patches, best = model.nearest_patches(z, torch.tensor([0]))
    assert torch.isinf(best[0, 0]) and best[0, 1] == pytest.approx(3.5 / (5 ** 0.5 / 2 * 10 ** 0.5), rel=1e-5)
    model.update_prototypes(z, torch.tensor([0]), momentum=1.0)
    torch.testing.assert_close(model.prototype_layer.centers.detach(), torch.tensor([[1.0, 0.0], [3.0, 1.0]]))


@pytest.mark.parametrize("model, train, match", [
    ({"arch": "dprotonet", "head": "tversky"}, {}, "dprotonet"),
    ({"arch": "dprotonet", "add_on": "bottleneck"}, {}, "dprotonet"),
    ({"arch": "dprotonet"}, {"proto_momentum": 1.5}, "proto_momentum"),
    ({"arch": "dprotonet"}, {"proto_images": 0}, "proto_images"),
])
def test_bad_recipes(model, train, match):
    from conftest import tiny_recipe

    with pytest.raises(EdgeprotoError, match=match):
        tiny_recipe("cosine", model=model, **train)


@pytest.fixture(scope="module")
def dproto_bundle(trained, tmp_path_factory):
    from edgeproto.export.bundle_writer import export_bundle

    ckpt = trained("cosine", model={"arch": "dprotonet"})
    out = tmp_path_factory.mktemp("dproto") / "bundle"
    export_bundle(ckpt, out)
    return ckpt, out


def test_dprotonet_trains_with_multi_image_prototypes(dproto_bundle):
    from edgeproto.train.checkpoint import load_checkpoint

    ckpt, _ = dproto_bundle
    model, config = load_checkpoint(ckpt)
    assert config["model"]["arch"] == "dprotonet" and type(model).__name__ == "DProtoNet"
    recs = config["prototypes"]
    # a prototype that wins no location of any image of its class keeps its vector (no sources)
    assert all(not r["projected"] and len(r["multi_image_sources"]) <= 5 for r in recs)
    # each prototype is the mean of patches of several images of its class, not one training patch
    from edgeproto.data import build_dataset

    data = build_dataset(config["recipe"]["data"], "train")
    labels = np.asarray(data.labels)
    assert all((labels[r["multi_image_sources"]] == r["class"]).all() for r in recs)
    assert all(len(set(r["multi_image_sources"])) == len(r["multi_image_sources"]) for r in recs)
    assert sum(len(r["multi_image_sources"]) == 5 for r in recs) >= len(recs) // 2  # most average 5 images
    # the push stage's projection, re-run from the trained prototypes: each becomes the mean of its
    # nearest patch in its k most similar images of its class (the similarity to the old prototype)
    from edgeproto.train.dprotonet import multi_image_projection
    from edgeproto.train.trainer import materialize

    images, ys = materialize(data)
    images, ys = images[:40], ys[:40]
    with torch.no_grad():
        model.eval()
        old = model.prototype_layer.centers.detach().clone()
        patches, sim = model.nearest_patches(model.features(images), ys)  # (N,M,D), (N,M) w.r.t. the old ones
    sources = multi_image_projection(model, images, ys, k=3, batch_size=16)  # batches: the running top-k
    for j, src in enumerate(sources):
        own = torch.nonzero(torch.isfinite(sim[:, j])).flatten()  # its class's images where it wins somewhere
        assert (ys[own] == model.prototype_classes[j]).all()
        expected = own[sim[own, j].argsort(descending=True)[:3]].tolist()
        assert src == expected
        want = patches[src, j].mean(dim=0) if src else old[j]  # winning nowhere: the vector stays
        torch.testing.assert_close(model.prototype_layer.centers[j].detach(), want)
    assert not torch.equal(model.prototype_layer.centers.detach(), old)


def test_dprotonet_parity_on_onnxruntime_and_openvino(dproto_bundle):
    """fp32 outputs of ORT and OpenVINO vs the PyTorch golden outputs (atol + rtol·|ref|), same top-1
    class and prototype; the MDM heatmap from each runtime vs the PyTorch reference's."""
    pytest.importorskip("openvino")
    from edgeproto.bundle import open_bundle
    from edgeproto.device.explainer import Explainer
    from edgeproto.ranking import ranking

    _, path = dproto_bundle
    bundle = open_bundle(path)
    golden = bundle.golden()
    ref_rank = ranking(golden["logits"], golden["scores"], bundle.prototype_classes())[:, 0]
    heat = {}
    for target in ("torch", "onnxruntime", "openvino"):
        with Explainer.open(bundle, target=target) as ex:
            out = ex.infer(golden["image"])
            for name in ("logits", "scores", "maps"):
                ref = np.asarray(golden[name], np.float64)
                assert (np.abs(out[name] - ref) <= ATOL + RTOL * np.abs(ref)).all(), (target, name)
            np.testing.assert_array_equal(out["logits"].argmax(1), golden["logits"].argmax(1))
            np.testing.assert_array_equal(ranking(out["logits"], out["scores"], bundle.prototype_classes())[:, 0],
                                          ref_rank)
            heat[target] = [mdm_maps(lambda b: ex.infer(b)["logits"], golden["image"][i], masks=16)["heatmap"]
                            for i in range(2)]
    for target in ("onnxruntime", "openvino"):
        for a, b in zip(heat[target], heat["torch"]):
            assert np.abs(a - b).max() <= 1e-3, target
            assert a.argmax() == b.argmax(), target


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "edgeproto.cli", *map(str, args)], capture_output=True, text=True)


def test_explain_mdm_cli(dproto_bundle, tmp_path):
    from PIL import Image

    from edgeproto.bundle import open_bundle
    from edgeproto.data import build_dataset

    _, path = dproto_bundle
    data = build_dataset(open_bundle(path).manifest["data"], "test")
    img = tmp_path / "img.png"
    Image.fromarray(data.raw_image(0)).save(img)
    res = _cli("explain", path, img, "--method", "mdm", "--masks", "8", "-o", tmp_path / "out", "--json")
    assert res.returncode == 0, res.stderr
    printed = json.loads(res.stdout)
    record = json.loads((tmp_path / "out.json").read_text())
    assert record["method"] == "mdm" and printed["mdm"]["forward_passes"] == 1 + 3 * 8
    assert np.asarray(record["heatmap"]).shape == (32, 32)
    assert Image.open(tmp_path / "out.png").size[0] > 600  # input + stacked + 3 scales
    # user mistakes: one error line, exit 2, nothing written
    res = _cli("explain", path, img, "--method", "mdm", "-o", tmp_path / "bad", "--scales", "a,b")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "--scales" in res.stderr, res.stderr
    from edgeproto.commands.explain import run_explain

    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(data.raw_image(1)).save(folder / "a.png")
    for args, kwargs, match in (((img,), {"mdm": {"scales": (0,)}}, "scales"),
                                ((img,), {"mdm": {"masks": 0}}, "masks"),
                                ((img,), {"because": True}, "--method mdm"),
                                ((folder,), {}, "one image")):
        with pytest.raises(EdgeprotoError, match=match):
            run_explain(path, *args, out_prefix=tmp_path / "bad", method="mdm", **kwargs)
        assert not (tmp_path / "bad.json").exists() and not (tmp_path / "bad.png").exists()
