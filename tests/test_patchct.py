"""PatchCT multi-label prototypes: the multi-label data (procedural task, labels.csv folder), the
conditional-transport cost and the label-set metrics against hand-computed cases, and one tiny
model trained for real through export, ONNX Runtime / OpenVINO validate and explain."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from edgeproto.data import build_dataset
from edgeproto.errors import EdgeprotoError
from tests.test_bad_inputs import run_main

ML = {"name": "procedural", "task": "multilabel", "image_size": 32, "train_size": 30, "test_size": 6}


# ---------------------------------------------------------------- data


def test_procedural_multilabel_label_sets_are_the_parts_present():
    ds = build_dataset(ML, "train")
    assert ds.task == "multilabel" and ds.classes == ["circle", "square", "triangle", "cross", "stripes"]
    assert ds.targets.shape == (30, 5)
    for i in range(len(ds)):
        present = ds.part_masks(i).any(axis=(1, 2))
        assert np.array_equal(present, ds.targets[i].astype(bool))  # the distractor is no label
        assert ds.targets[i, ds.labels[i]] == 1
    sizes = set(ds.targets.sum(axis=1).tolist())
    assert sizes == {1, 2, 3}  # label sets vary in size
    again = build_dataset(ML, "train")
    assert np.array_equal(again.targets, ds.targets) and np.array_equal(again.raw_image(3), ds.raw_image(3))
    assert not np.array_equal(build_dataset(ML, "test").targets, ds.targets[:6])
    with pytest.raises(EdgeprotoError, match="multilabel"):
        build_dataset({**ML, "rule": "xor"}, "train")


def _folder(root, rows: list[str], files=("a.png", "b.png", "c.png", "d.png", "e.png")):
    (root / "images").mkdir(parents=True)
    for k, name in enumerate(files):
        Image.fromarray(np.full((10, 12, 3), 40 * k, np.uint8)).save(root / "images" / name)
    (root / "labels.csv").write_text("\n".join(["file,labels", *rows]) + "\n")
    return {"name": "multilabel_folder", "root": str(root), "image_size": 8}


def test_multilabel_folder_reads_labels_csv(tmp_path):
    cfg = _folder(tmp_path / "d", ["a.png,sky;sea", "b.png,car", "c.png,", "d.png,sea", "e.png,car;sky"])
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    assert train.classes == ["car", "sea", "sky"] and train.task == "multilabel"
    assert len(train) == 4 and len(test) == 1
    by_file = {f.name: t.tolist() for ds in (train, test) for f, t in zip(ds.files, ds.targets)}
    assert by_file == {"a.png": [0, 1, 1], "b.png": [1, 0, 0], "c.png": [0, 0, 0], "d.png": [0, 1, 0],
                       "e.png": [1, 0, 1]}
    assert train[0][0].shape == (3, 8, 8)
    named = build_dataset({**cfg, "classes": ["sky", "sea", "car", "tree"]}, "train")
    assert named.classes == ["sky", "sea", "car", "tree"] and named.targets.shape == (4, 4)


@pytest.mark.parametrize("rows, classes, message", [
    (["a.png,x", "b.png,x", "c.png,x", "d.png,x", "e.png,x", "zz.png,x"], None, r"line 7: unknown file 'zz\.png'"),
    (["a.png,x", "b.png,x", "c.png,x", "d.png,x"], None, r"image .*e\.png has no row"),
    (["a.png,x", "b.png,x", "c.png,x", "d.png,x", "e.png,dog"], ["x"], r"file 'e\.png' has unknown label 'dog'"),
    (["a.png,x", "a.png,x", "c.png,x", "d.png,x", "e.png,x"], None, r"line 3: file 'a\.png' is listed twice"),
    (["a.png,", "b.png,", "c.png,", "d.png,", "e.png,"], None, "gives no image a label"),
    (["a.png,x;x", "b.png,x", "c.png,x", "d.png,x", "e.png,x"], None, "names a label twice"),
])
def test_multilabel_folder_bad_inputs(tmp_path, rows, classes, message):
    cfg = _folder(tmp_path / "d", rows)
    if classes:
        cfg["classes"] = classes
    with pytest.raises(EdgeprotoError, match=message):
        build_dataset(cfg, "train")


def test_multilabel_folder_needs_labels_csv_with_header(tmp_path):
    cfg = _folder(tmp_path / "d", ["a.png,x"])
    (tmp_path / "d" / "labels.csv").write_text("name,tags\na.png,x\n")
    with pytest.raises(EdgeprotoError, match="header 'file,labels'"):
        build_dataset(cfg, "train")
    (tmp_path / "d" / "labels.csv").unlink()
    with pytest.raises(EdgeprotoError, match="no labels.csv"):
        build_dataset(cfg, "train")


# ---------------------------------------------------------------- the CT cost and the model


def test_ct_cost_against_a_hand_computed_case():
    from edgeproto.train.multilabel import ct_cost

    # one image, 2 patches, 3 labels (one embedding each); labels 0 and 2 present; τ = 0.5
    s = [[0.9, 0.1], [0.5, 0.5], [0.2, 0.7]]  # s[j][i]: label j, patch i
    sim = torch.tensor(s)[None, :, None, :]  # (1,3,1,2)
    targets = torch.tensor([[1.0, 0.0, 1.0]])
    tau = 0.5
    present = [0, 2]
    forward = 0.0
    for i in range(2):  # θ_i = 1/2; p_j = 1/2 on the present labels
        z = sum(0.5 * math.exp(s[j][i] / tau) for j in present)
        forward += 0.5 * sum(0.5 * math.exp(s[j][i] / tau) / z * (1 - s[j][i]) for j in present)
    backward = 0.0
    for j in present:
        z = sum(0.5 * math.exp(s[j][i] / tau) for i in range(2))
        backward += 0.5 * sum(0.5 * math.exp(s[j][i] / tau) / z * (1 - s[j][i]) for i in range(2))
    fw, bw = ct_cost(sim, targets, torch.eye(3), tau)
    assert float(fw) == pytest.approx(forward, rel=1e-6, abs=1e-7)
    assert float(bw) == pytest.approx(backward, rel=1e-6, abs=1e-7)
    # an image without labels takes no part
    fw2, bw2 = ct_cost(torch.cat([sim, sim]), torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]), torch.eye(3), tau)
    assert (float(fw2), float(bw2)) == pytest.approx((forward, backward), rel=1e-6)
    # with one true label, every patch goes to it: the forward cost is the mean patch cost
    fw1, _ = ct_cost(sim, torch.tensor([[0.0, 1.0, 0.0]]), torch.eye(3), tau)
    assert float(fw1) == pytest.approx(0.5, rel=1e-6)


def test_patchct_outputs_are_transport_plans():
    from edgeproto.models import create_model

    cfg = {"num_classes": 3, "arch": "patchct", "temperature": 0.2, "backbone": {"name": "small_cnn", "width": 4,
           "stages": 2}, "prototypes": {"family": "cosine", "per_class": 2, "dim": 8}}
    model = create_model(cfg).eval()
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out["logits"].shape == (2, 3) and out["scores"].shape == (2, 6) and out["maps"].shape == (2, 6, 8, 8)
    assert torch.allclose(out["maps"].sum(dim=(2, 3)), torch.ones(2, 6), rtol=1e-5, atol=1e-6)
    sim = model.prototype_layer(model.features(x))
    plan = torch.softmax(sim.flatten(2) / 0.2, dim=2).reshape_as(sim)
    assert torch.allclose(out["maps"], plan, rtol=1e-5, atol=1e-7)
    assert torch.allclose(out["scores"], (plan * sim).sum(dim=(2, 3)), rtol=1e-5, atol=1e-6)
    assert model.prototype_classes.tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(EdgeprotoError, match="family: cosine"):
        create_model({**cfg, "prototypes": {"family": "l2_log", "per_class": 1, "dim": 8}})


# ---------------------------------------------------------------- metrics


def test_label_set_metrics_against_hand_computed_values():
    from edgeproto.data.label_sets import PointingGame, label_f1, label_maps, mean_average_precision

    targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    logits = np.array([[2.0, -1.0], [1.0, 3.0], [-0.5, 0.5], [-2.0, 0.2]])
    # label 0: ranking 2.0 (pos), 1.0 (neg), -0.5 (pos), -2 (neg) → AP = (1/1 + 2/3) / 2
    # label 1: ranking 3.0 (pos), 0.5 (pos), 0.2 (neg), -1 (neg) → AP = 1
    m = mean_average_precision(targets, logits)
    assert m["label_ap"] == pytest.approx([5 / 6, 1.0]) and m["map"] == pytest.approx(11 / 12)
    # at p ≥ 0.5 (logit ≥ 0): label 0 predicts images 0, 1 (tp 1, fp 1, fn 1) → F1 = 0.5;
    # label 1 predicts 1, 2, 3 (tp 2, fp 1) → F1 = 0.8
    f = label_f1(targets, logits)
    assert f["label_f1"] == pytest.approx([0.5, 0.8]) and f["macro_f1"] == pytest.approx(0.65)

    scores = np.array([[0.1, 0.9, 0.3]])  # label 0 has prototypes 0 and 1 (1 wins), label 1 prototype 2
    maps = np.zeros((1, 3, 4, 4))
    maps[0, 1, 0, 0] = 1.0  # label 0's map peaks top-left
    maps[0, 2, 3, 3] = 1.0  # label 1's map peaks bottom-right
    lm = label_maps(scores, maps, np.array([0, 0, 1]), 2)
    assert np.array_equal(lm[0, 0], maps[0, 1]) and np.array_equal(lm[0, 1], maps[0, 2])
    masks = np.zeros((2, 16, 16), bool)
    masks[0, :5, :5] = True  # label 0's part: top-left, where its map peaks → hit
    masks[1, :5, 10:] = True  # label 1's part: top-right, its map peaks bottom-right → miss
    game = PointingGame(2, 16, [0, 1])
    game.add(lm[0], masks)
    game.add(lm[0], np.zeros_like(masks))  # no part visible: not counted
    r = game.result()
    assert r["label_pointing_game"] == [1.0, 0.0] and r["label_images"] == [1, 1] and r["pointing_game"] == 0.5


# ---------------------------------------------------------------- through the pipeline


@pytest.fixture(scope="module")
def patchct_bundle(trained, tmp_path_factory):
    from edgeproto.export.bundle_writer import export_bundle

    ckpt = trained("cosine", model={"arch": "patchct"}, data={"task": "multilabel", "num_classes": 5},
                   coefs={"crs_ent": 1.0, "ct_forward": 1.0, "ct_backward": 1.0, "l1": 1e-4}, ct_from_epoch=1)
    out = tmp_path_factory.mktemp("patchct") / "bundle"
    export_bundle(ckpt, out, golden=4)
    return ckpt, out


def test_patchct_checkpoint_and_bundle(patchct_bundle):
    ckpt, bundle = patchct_bundle
    config = json.loads((ckpt / "config.json").read_text())
    m = config["metrics"]
    assert 0.0 <= m["test_map"] <= 1.0 and len(m["test_label_f1"]) == 5 and len(m["test_label_pointing_game"]) == 5
    assert config["model"]["temperature"] == 0.1
    recs = config["prototypes"]
    assert [r["class"] for r in recs] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4] and not any(r["projected"] for r in recs)
    ds = build_dataset(config["recipe"]["data"], "train")
    for r in recs:  # each label embedding is pictured by a training image that carries its label
        assert ds.targets[r["source_image"], r["class"]] == 1
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["task"] == "multilabel" and manifest["classes"] == ds.classes
    import onnx

    ops = [n.op_type for n in onnx.load(str(bundle / "model.onnx")).graph.node if n.domain == "edgeproto"]
    assert ops == ["CosineSimilarity"]


def test_patchct_validate_on_onnxruntime_and_openvino(patchct_bundle, tmp_path, capsys):
    from edgeproto.bundle import open_bundle
    from edgeproto.compare.multilabel import validate_multilabel

    _, bundle = patchct_bundle
    opened = open_bundle(bundle)
    for target in ("onnxruntime", "openvino"):
        rep = validate_multilabel(opened, target, "fp32", split="test", limit=16, progress=False)
        assert rep["passed"], rep["failed"]
        assert rep["label_decision_agreement"] == [1.0] * 5 and rep["peak_agreement"] == 1.0
        assert rep["map_iou"] >= 0.99 and rep["maps_compared"] > 0
        assert all(v < 1e-3 for v in rep["max_abs"].values()), rep["max_abs"]  # besides atol + rtol·|ref| above
        assert rep["reference"]["map"] == pytest.approx(rep["deployed"]["map"], rel=1e-6, abs=1e-9)
    code, out, err = run_main(["validate", str(bundle), "--target", "onnxruntime", "--limit", "8", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["task"] == "multilabel"
    code, _, err = run_main(["validate", str(bundle), "--sweep"], capsys)
    assert code == 2 and "multi-label bundle takes one --target" in err


def test_patchct_explain_on_the_device(patchct_bundle, tmp_path, capsys):
    from edgeproto.maps import map_peak

    _, bundle = patchct_bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    image = tmp_path / "img.png"
    Image.fromarray(build_dataset(manifest["data"], "test").raw_image(0)).save(image)
    code, _, err = run_main(["explain", str(bundle), str(image), "-o", str(tmp_path / "ex"), "--json"], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "ex.json").read_text())
    probs = doc["probabilities"]
    assert set(probs) == set(manifest["classes"])
    assert doc["predicted_labels"] == [n for n in manifest["classes"] if probs[n] >= 0.5]
    assert doc["labels"], "at least the most probable label is explained"
    for r in doc["labels"]:
        assert manifest["prototypes"][r["prototype"]]["class"] == r["label"]
        plan = np.asarray(r["map"])
        assert plan.sum() == pytest.approx(1.0, abs=1e-5)  # a transport plan over the patch grid
        y, x = map_peak(plan, 32)
        assert r["peak"] == [x, y]
    with Image.open(tmp_path / "ex.png") as fig:
        assert fig.size[0] > 600 and fig.size[1] > 500


def test_patchct_recipe_errors(tmp_path):
    from edgeproto.train import train
    from tests.conftest import tiny_recipe

    with pytest.raises(EdgeprotoError, match="needs a multi-label dataset"):
        train(tiny_recipe("cosine", model={"arch": "patchct"}), tmp_path / "a", quiet=True)
    assert not (tmp_path / "a").exists()
    with pytest.raises(EdgeprotoError, match="model.temperature"):
        tiny_recipe("cosine", model={"arch": "patchct", "temperature": 0})
