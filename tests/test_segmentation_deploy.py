"""A segmentation bundle through the rest of the pipeline: the TensorRT-ready graph, bench against
PyTorch, ``validate --sweep`` and ``validate --data`` (a seg folder), and the bad inputs of a mask
folder through the CLI; the poly learning-rate decay of the segmentation trainer."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from edgeproto.data import build_dataset
from edgeproto.errors import EdgeprotoError
from tests.test_segmentation import _seg_folder, run_main


@pytest.fixture(scope="module")
def bundle(trained, tmp_path_factory):
    """The tiny latent-grid bundle of tests/test_segmentation.py (same recipe: trained once per session)."""
    from edgeproto.export.bundle_writer import export_bundle

    ckpt = trained("gaussian", model={"arch": "latent_seg"}, data={"task": "segmentation"}, joint_last_layer=True)
    out = tmp_path_factory.mktemp("segdeploy") / "bundle"
    export_bundle(ckpt, out, golden=4)
    return out


def test_tensorrt_ready_graph_of_a_segmentation_bundle(bundle, capsys):
    from edgeproto.bundle import open_bundle
    from edgeproto.compare.segmentation import validate_segmentation

    for precision in ("fp32", "fp16"):
        code, _, err = run_main(["compile", str(bundle), "--target", "tensorrt", "--precision", precision], capsys)
        assert code == 0, err
    opened = open_bundle(bundle)
    assert {"tensorrt-fp32", "tensorrt-fp16"} <= set(opened.manifest["compiled"])
    full = validate_segmentation(opened, "tensorrt-graph", "fp32", split="test", limit=4, progress=False)
    assert full["pixel_agreement"] == 1.0 and full["region_top1_agreement"] == 1.0 and full["passed"], full
    assert full["target"]["runtime"]["name"] == "tensorrt-graph"
    half = validate_segmentation(opened, "tensorrt-graph", "fp16", split="test", limit=4, progress=False)
    assert half["pixel_agreement"] >= 0.98 and half["passed"], half
    code, out, err = run_main(["validate", str(bundle), "--target", "tensorrt-graph", "--precision", "fp16",
                               "--limit", "4", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["target"]["precision"] == "fp16"


def test_bench_a_segmentation_bundle_against_torch(bundle, capsys):
    code, out, err = run_main(["bench", str(bundle), "--target", "onnxruntime", "--compare", "torch", "--threads", "1",
                               "--min-queries", "5", "--min-seconds", "0.05", "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["model"]["input"][1:] == [3, 32, 32]
    row = report["batches"][0]
    assert row["speedup_vs_torch"]["p50"] == pytest.approx(row["torch"]["p50_ms"] / row["latency"]["p50_ms"])
    assert row["max_abs_logits_vs_torch"] < 1e-3  # per-pixel logits of the same model


def test_validate_sweep_of_a_segmentation_bundle(bundle, tmp_path, capsys):
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    code, out, err = run_main(["validate", str(copy), "--sweep", "--targets", "onnxruntime", "--limit", "4",
                               "--json"], capsys)
    result = json.loads(out)
    assert [(r["precision"], r["guard"]) for r in result["rows"]] == [
        ("fp32", "prototypes"), ("fp16", "prototypes"), ("int8", "prototypes"), ("int8", "none")]
    fp32 = result["rows"][0]
    assert fp32["pixel_agreement"] == 1.0 and fp32["miou"] == pytest.approx(result["reference"]["miou"], abs=1e-12)
    assert code == (0 if result["passed"] else 1) and result["task"] == "segmentation"
    assert result["passed"] == all(r["passed"] for r in result["rows"] if r["guard"] == "prototypes")
    code, out, _ = run_main(["validate", str(copy), "--sweep", "--targets", "onnxruntime", "--limit", "4"], capsys)
    assert "mIoU" in out and "region top-1" in out and "not gated" in out


def _procedural_seg_folder(root, n=5):
    """Test images of the procedural segmentation data written as a seg folder (images/ + masks/)."""
    ds = build_dataset({"name": "procedural", "task": "segmentation", "image_size": 32, "train_size": 2,
                        "test_size": n, "seed": 7}, "test")
    for split, ids in (("train", range(n, n + 2)), ("test", range(n))):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir()
        for i in ids:
            Image.fromarray(ds.raw_image(i % n)).save(root / split / "images" / f"{i}.png")
            Image.fromarray(ds.mask(i % n), "L").save(root / split / "masks" / f"{i}.png")
    return ds, {"name": "seg_folder", "root": str(root), "classes": list(ds.classes)}


def test_validate_on_a_seg_folder(bundle, tmp_path, capsys):
    from edgeproto.bundle import open_bundle
    from edgeproto.compare.segmentation import confusion, iou_scores, validate_segmentation
    from edgeproto.outputs import run_outputs
    from edgeproto.runtimes import load_runner

    ds, cfg = _procedural_seg_folder(tmp_path / "d")
    (tmp_path / "data.yaml").write_text(json.dumps(cfg))
    code, out, err = run_main(["validate", str(bundle), "--target", "onnxruntime",
                               "--data", str(tmp_path / "data.yaml"), "--json"], capsys)
    assert code == 0, err
    rep = json.loads(out)
    assert rep["data"]["config"]["name"] == "seg_folder" and rep["data"]["images"] == 5
    # the reference mIoU is the PyTorch model's on exactly these images and masks
    opened = open_bundle(bundle)
    runner = load_runner(opened, "torch")
    x = np.stack([np.asarray(ds[i][0], dtype=np.float32) for i in range(5)])
    pred = run_outputs(runner, x, "torch")["logits"].argmax(axis=1)
    runner.close()
    expected = iou_scores(confusion(pred, np.stack([ds.mask(i) for i in range(5)]), 6))
    assert rep["reference"]["miou"] == pytest.approx(expected["miou"], rel=1e-9, abs=1e-12)

    (tmp_path / "cls.yaml").write_text(json.dumps({"name": "procedural", "image_size": 32}))
    code, _, err = run_main(["validate", str(bundle), "--target", "onnxruntime", "--data", str(tmp_path / "cls.yaml")],
                            capsys)
    assert code == 2 and "has no masks" in err and err.count("\n") == 1
    (tmp_path / "few.yaml").write_text(json.dumps({**cfg, "classes": cfg["classes"] + ["extra"]}))
    with pytest.raises(EdgeprotoError, match="has 7 classes but the bundle predicts 6"):
        validate_segmentation(opened, "onnxruntime", data=tmp_path / "few.yaml", progress=False)
    with pytest.raises(EdgeprotoError, match="image_size is 16 but the bundle was trained with 32"):
        validate_segmentation(opened, "onnxruntime", data={**cfg, "image_size": 16}, progress=False)


@pytest.mark.parametrize("case,message", [
    ("size", r"is 5×5 but its image is 20×16"),
    ("classes", r"holds class index\(es\) \[7\] but there are 3 classes"),
    ("orphan", r"has no mask"),
])
def test_bad_mask_folder_is_one_error_line(tmp_path, capsys, case, message):
    """The issue's bad inputs (a mask of another size, unknown class indices, an image without a
    mask), each through ``edgeproto train``: one ``error:`` line, exit 2, nothing written."""
    import re

    cfg = _seg_folder(tmp_path / "d")
    masks = tmp_path / "d" / "masks"
    if case == "size":
        Image.fromarray(np.zeros((5, 5), np.uint8), "L").save(masks / "1.png")
    elif case == "classes":
        Image.fromarray(np.full((16, 20), 7, np.uint8), "L").save(masks / "2.png")
    else:
        (masks / "3.png").unlink()
    recipe = {"name": "bad", "data": cfg, "model": {"arch": "latent_seg", "prototypes": {"family": "gaussian"}}}
    (tmp_path / "r.yaml").write_text(json.dumps(recipe))
    code, _, err = run_main(["train", "--recipe", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and re.search(message, err) and "Traceback" not in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_poly_learning_rate_decay():
    from edgeproto.train.segmentation import poly_factor
    from tests.conftest import tiny_recipe

    factors = [poly_factor(t, 10) for t in range(11)]
    assert factors[0] == 1.0 and factors[-1] == 0.0 and all(a > b for a, b in zip(factors, factors[1:]))
    assert poly_factor(5, 10) == pytest.approx(0.5**0.9)
    assert tiny_recipe("gaussian", lr_decay="poly")["train"]["lr_decay"] == "poly"
    with pytest.raises(EdgeprotoError, match="lr_decay"):
        tiny_recipe("gaussian", lr_decay="cosine")
