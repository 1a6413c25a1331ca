"""Prototype segmentation: data with masks, the latent-grid and multi-scale grouped models, their loss,
and one tiny latent-grid model through export, compile (ORT/OpenVINO fp32, guarded int8), validate
and explain."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from edgeproto.cli import main
from edgeproto.data import build_dataset
from edgeproto.errors import EdgeprotoError

SEG = {"name": "procedural", "task": "segmentation", "image_size": 32, "train_size": 12, "test_size": 4}


# ---------------------------------------------------------------- data


def test_procedural_segmentation_masks_are_the_part_masks():
    ds = build_dataset(SEG, "train")
    assert ds.task == "segmentation" and ds.classes[0] == "background" and len(ds.classes) == 6
    for i in range(len(ds)):
        mask, parts = ds.mask(i), ds.part_masks(i)
        assert mask.shape == (32, 32) and mask.dtype == np.uint8
        for k in range(parts.shape[0]):
            assert np.array_equal(mask == k + 1, parts[k])
        assert np.array_equal(mask == 0, ~parts.any(axis=0))
        assert ds.labels[i] == np.bincount(mask.ravel(), minlength=6)[1:].argmax() + 1
    with pytest.raises(EdgeprotoError, match="task"):
        build_dataset({**SEG, "task": "detection"}, "train")
    with pytest.raises(EdgeprotoError, match="segmentation"):
        build_dataset({"name": "procedural", "train_size": 2}, "train").mask(0)


def _seg_folder(root, n=5, size=(20, 16), mode="P"):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        mask = np.zeros((size[1], size[0]), np.uint8)
        mask[2:8, 3:9] = 1 + i % 2
        mask[:2, :] = 255
        m = Image.fromarray(mask, "L")
        if mode == "P":  # indices as they are, with a palette that only colours them
            m = Image.new("P", size)
            m.putdata(mask.ravel().tolist())
            m.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (253 * 3))
        m.save(root / "masks" / f"{i}.png")
    return {"name": "seg_folder", "root": str(root), "classes": ["background", "a", "b"], "image_size": 8}


@pytest.mark.parametrize("mode", ["P", "L"])
def test_seg_folder_palette_and_index_masks(tmp_path, mode):
    cfg = _seg_folder(tmp_path / "d", mode=mode)
    train, test = build_dataset(cfg, "train"), build_dataset(cfg, "test")
    assert len(train) == 4 and len(test) == 1 and train.task == "segmentation"
    mask = train.mask(0)
    assert mask.shape == (8, 8) and set(np.unique(mask)) <= {0, 1, 2, 255}
    assert (mask[0] == 255).all() and train[0][0].shape == (3, 8, 8)
    assert np.array_equal(np.unique(build_dataset(cfg, "train").mask(1)), [0, 2, 255])  # image 1 has class 2


def test_seg_folder_bad_inputs(tmp_path):
    cfg = _seg_folder(tmp_path / "size")
    Image.fromarray(np.zeros((5, 5), np.uint8), "L").save(tmp_path / "size" / "masks" / "1.png")
    with pytest.raises(EdgeprotoError, match=r"mask .*1\.png is 5×5 but its image is 20×16"):
        build_dataset(cfg, "train")
    cfg = _seg_folder(tmp_path / "cls")
    Image.fromarray(np.full((16, 20), 7, np.uint8), "L").save(tmp_path / "cls" / "masks" / "2.png")
    with pytest.raises(EdgeprotoError, match=r"2\.png holds class index\(es\) \[7\] but there are 3 classes"):
        build_dataset(cfg, "train")
    cfg = _seg_folder(tmp_path / "lonely")
    (tmp_path / "lonely" / "masks" / "3.png").unlink()
    with pytest.raises(EdgeprotoError, match=r"image .*3\.png has no mask"):
        build_dataset(cfg, "train")
    cfg = _seg_folder(tmp_path / "rgb")
    Image.fromarray(np.zeros((16, 20, 3), np.uint8)).save(tmp_path / "rgb" / "masks" / "0.png")
    with pytest.raises(EdgeprotoError, match="mode RGB"):
        build_dataset(cfg, "train")
    with pytest.raises(EdgeprotoError, match="'classes'"):
        build_dataset({**cfg, "classes": "background"}, "train")


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    """``edgeproto.cli:main`` in-process: (exit code, stdout, stderr)."""
    import sys

    old, sys.argv = sys.argv, ["edgeproto", *argv]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    finally:
        sys.argv = old
    out, err = capsys.readouterr()
    return code, out, err


def test_bad_mask_through_the_cli_is_one_error_line(tmp_path, capsys):
    cfg = _seg_folder(tmp_path / "d")
    Image.fromarray(np.full((16, 20), 9, np.uint8), "L").save(tmp_path / "d" / "masks" / "0.png")
    recipe = {"name": "bad", "data": cfg, "model": {"arch": "latent_seg", "prototypes": {"family": "gaussian"}}}
    (tmp_path / "r.yaml").write_text(json.dumps(recipe))
    code, _, err = run_main(["train", "--recipe", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "class index(es) [9]" in err and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- model and loss


def test_kld_term_equals_protoseg_loop_form():
    from edgeproto.train.segmentation import kld_diversity

    torch.manual_seed(0)
    maps = torch.randn(4, 6, 5, 5, requires_grad=True)
    lab = torch.randint(0, 3, (4, 5, 5))
    lab[0] = 0
    ident = torch.zeros(6, 3)
    ident[torch.arange(6), torch.arange(6) // 2] = 1
    value = kld_diversity(maps, lab, ident)
    value.backward()
    terms = []  # gmum/proto-segmentation segmentation/module.py, written as its loops
    for i in range(4):
        for c in torch.unique(lab[i]).tolist():
            ps, m = torch.nonzero(ident[:, c]).flatten(), lab[i].flatten() == c
            logs = [F.log_softmax(maps[i, j].flatten()[m], 0) for j in ps]
            for a in range(len(ps)):
                for b in range(a + 1, len(ps)):
                    k1 = F.kl_div(logs[a], logs[b], log_target=True, reduction="sum")
                    k2 = F.kl_div(logs[b], logs[a], log_target=True, reduction="sum")
                    terms.append(torch.exp(-(k1 + k2) / 2))
    ref = torch.stack(terms).mean()
    assert torch.allclose(value, ref, rtol=1e-5, atol=1e-7) and torch.isfinite(maps.grad).all()


def test_scale_grouped_model_groups_and_simplex():
    from edgeproto.models import create_model
    from edgeproto.models.segmentation import project_simplex

    w = project_simplex(torch.randn(5, 3, 8) * 3)
    assert (w >= 0).all() and torch.allclose(w.sum(-1), torch.ones(5, 3), atol=1e-6)
    assert torch.allclose(project_simplex(w), w, atol=1e-6)
    cfg = {"num_classes": 3, "image_size": 32, "arch": "scale_seg", "scales": 2, "groups": 2,
           "backbone": {"name": "dilated_cnn", "width": 4, "dilations": [1]},
           "prototypes": {"family": "gaussian", "per_class": 4, "dim": 8}}
    model = create_model(cfg).eval()
    out = model(torch.randn(2, 3, 32, 32))
    assert out["logits"].shape == (2, 3, 32, 32) and out["maps"].shape == (2, 12, 16, 16)
    # scale-major prototype order: 2 scales × 3 classes × 2 prototypes
    assert model.prototype_classes.tolist() == [0, 0, 1, 1, 2, 2] * 2
    maps = out["maps"]
    all_groups = torch.cat([torch.exp(torch.einsum("bkhw,gk->bghw", maps[:, model.class_prototypes[k]],
                                                   model.group_projection[k])) for k in range(3)], dim=1)
    expected = torch.einsum("bghw,cg->bchw", all_groups, model.last_layer.weight)
    assert torch.allclose(model.grid_logits(maps), expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- through the pipeline


@pytest.fixture(scope="module")
def seg_bundle(trained, tmp_path_factory):
    from edgeproto.export.bundle_writer import export_bundle

    ckpt = trained("gaussian", model={"arch": "latent_seg"}, data={"task": "segmentation"}, joint_last_layer=True)
    out = tmp_path_factory.mktemp("segbundle") / "bundle"
    export_bundle(ckpt, out, golden=4)
    return ckpt, out


def test_latent_grid_checkpoint_and_bundle(seg_bundle):
    ckpt, bundle = seg_bundle
    config = json.loads((ckpt / "config.json").read_text())
    assert {"test_miou", "test_pixel_accuracy", "test_miou_after_push"} <= set(config["metrics"])
    assert all(r["projected"] for r in config["prototypes"])  # every class occurs on the training masks
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["task"] == "segmentation"
    shapes = {o["name"]: o["shape"] for o in manifest["outputs"]}
    assert shapes["logits"] == ["batch", 6, 32, 32] and shapes["maps"][1] == 12
    import onnx

    ops = [n.op_type for n in onnx.load(str(bundle / "model.onnx")).graph.node if n.domain == "edgeproto"]
    assert ops == ["GaussianLikelihood"]


def test_pushed_prototype_is_its_source_location(seg_bundle):
    from edgeproto.train.checkpoint import load_checkpoint

    ckpt, _ = seg_bundle
    model, config = load_checkpoint(ckpt)
    ds = build_dataset(config["recipe"]["data"], "train")
    rec = config["prototypes"][3]
    x = ds[rec["source_image"]][0][None]
    h, w = rec["latent_hw"]
    with torch.no_grad():
        z = model.features(x)[0, :, h, w]
    mean = model.prototype_layer.means[3]
    assert torch.allclose(z, mean, rtol=1e-5, atol=1e-6)
    mask = torch.from_numpy(ds.mask(rec["source_image"]).astype(np.int64))
    from edgeproto.train.segmentation import grid_labels

    assert int(grid_labels(mask[None], z.new_zeros(8, 8).shape)[0, h, w]) == rec["class"]


def test_compile_validate_explain(seg_bundle, tmp_path, capsys):
    from edgeproto.bundle import open_bundle
    from edgeproto.compare.segmentation import validate_segmentation
    from edgeproto.runtimes.compile import compile_bundle

    _, bundle = seg_bundle
    entry = compile_bundle(bundle, target="onnxruntime", precision="int8", calib=8, progress=False, force=True)
    assert entry["check"]["finite"]
    opened = open_bundle(bundle)
    for target, precision in (("onnxruntime", "fp32"), ("openvino", "fp32")):
        rep = validate_segmentation(opened, target, precision, split="test", limit=8, progress=False)
        assert rep["pixel_agreement"] == 1.0 and rep["region_top1_agreement"] == 1.0, rep
        assert rep["map_iou"] >= 0.99 and rep["passed"]
        assert rep["reference"]["miou"] == pytest.approx(rep["deployed"]["miou"], abs=1e-9)
    rep = validate_segmentation(opened, "onnxruntime", "int8", split="test", limit=8, progress=False)
    assert 0.0 <= rep["pixel_agreement"] <= 1.0 and rep["regions"] > 0

    image = tmp_path / "img.png"
    Image.fromarray(build_dataset(opened.manifest["data"], "test").raw_image(0)).save(image)
    code, _, err = run_main(["explain", str(bundle), str(image), "-o", str(tmp_path / "ex"), "--json"], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "ex.json").read_text())
    mask = np.asarray(doc["mask"])
    assert mask.shape == (32, 32) and len(doc["regions"]) == len(np.unique(mask))
    for r in doc["regions"]:
        assert opened.prototypes[r["prototype"]]["class"] == r["class"]
        assert r["pixels"] == int((mask == r["class"]).sum())
    with Image.open(tmp_path / "ex.png") as fig:
        assert fig.size[0] > 600 and fig.size[1] > 300


# ---------------------------------------------------------------- region proposals (SLIC)


def test_superpixel_channel_and_region_pooling():
    pytest.importorskip("skimage", reason="the segmentation extra (scikit-image) is not installed")
    from edgeproto.models import create_model
    from edgeproto.train.segmentation import region_labels

    ds = build_dataset({**SEG, "superpixels": 16}, "train")
    x, _ = ds[0]
    labels = x[3].numpy()
    assert x.shape == (4, 32, 32) and labels.min() == 0 and labels.max() <= 15
    assert np.array_equal(labels, np.rint(labels))  # whole region ids
    cfg = {"num_classes": 6, "image_size": 32, "arch": "region_seg", "regions": 16,
           "backbone": {"name": "dilated_cnn", "width": 4, "dilations": [1]},
           "prototypes": {"family": "gaussian", "per_class": 2, "dim": 8}}
    model = create_model(cfg).eval()
    xb = torch.stack([x, ds[1][0]])
    feats, onehot = model.region_features(xb)
    z = model.features(xb)
    # masked average = the features of each cell weighted by the region's share of that cell
    share = F.adaptive_avg_pool2d(onehot, z.shape[-2:])
    r = int(labels[5, 5])
    expected = (z[0] * share[0, r]).sum(dim=(1, 2)) / share[0, r].sum()
    assert torch.allclose(feats[0, :, r, 0], expected, rtol=1e-5, atol=1e-6)
    out = model(xb)
    # every pixel of a superpixel carries that region's logits
    region = torch.from_numpy(labels == r)
    px = out["logits"][0][:, region]
    assert torch.allclose(px, px[:, :1].expand_as(px))
    masks = torch.from_numpy(np.stack([ds.mask(0), ds.mask(1)]).astype(np.int64))
    lab = region_labels(masks, onehot, 6)[0, r, 0]
    assert int(lab) == np.bincount(ds.mask(0)[labels == r], minlength=6).argmax()


def test_region_model_exports_with_the_label_map_input(trained, tmp_path):
    pytest.importorskip("skimage", reason="the segmentation extra (scikit-image) is not installed")
    from edgeproto.bundle import open_bundle
    from edgeproto.compare.segmentation import validate_segmentation
    from edgeproto.export.bundle_writer import export_bundle

    ckpt = trained("gaussian", model={"arch": "region_seg"}, data={"task": "segmentation", "superpixels": 16},
                   joint_last_layer=True)
    manifest = export_bundle(ckpt, tmp_path / "b", golden=4, analysis_images=4)  # the analysis feeds the label map too
    assert manifest["inputs"][0]["shape"][1] == 4 and manifest["export_check"]["passed"]
    rep = validate_segmentation(open_bundle(tmp_path / "b"), "openvino", split="test", limit=4, progress=False)
    assert rep["pixel_agreement"] == 1.0 and rep["region_top1_agreement"] == 1.0 and rep["passed"]


def test_info_shows_a_segmentation_checkpoint(seg_bundle, capsys):
    """The training summary prints list-valued metrics (per-class IoU) instead of failing on them."""
    from tests.test_bad_inputs import run_main

    ckpt, _ = seg_bundle
    code, out, err = run_main(["info", str(ckpt)], capsys)
    assert code == 0, err
    assert "test_class_iou" in out and "test_miou" in out
