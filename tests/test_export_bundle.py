"""``edgeproto export`` on trained checkpoints: bundle contents, ORT parity, integrity, bad input."""

from __future__ import annotations

import errno
import json
import shutil

import numpy as np
import onnx
import pytest

from edgeproto import atomic_files
from edgeproto.bundle import open_bundle
from edgeproto.errors import EdgeprotoError
from edgeproto.ranking import top_prototypes
from edgeproto.export.bundle_writer import export_bundle
from edgeproto.layers import prototype_nodes
from edgeproto.layers import families, get_family
from edgeproto.runtimes.onnxruntime.runner import OnnxRuntimeRunner

FAMILIES = sorted(families())


def _reference(checkpoint, images):
    import torch

    from edgeproto.train.checkpoint import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    with torch.no_grad():
        return {k: v.numpy() for k, v in model(torch.from_numpy(images)).items()}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("ops", ["function", "inline"])
def test_trained_model_exports_and_matches_pytorch(trained, tmp_path, family, ops):
    ckpt = trained(family)
    manifest = export_bundle(ckpt, tmp_path / "b", ops=ops)
    bundle = open_bundle(tmp_path / "b")
    model = onnx.load(bundle.path("model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    nodes = prototype_nodes(model)
    fam = get_family(family)
    if ops == "function":
        assert [n.op_type for n in nodes] == [fam.op_type]
        assert [(f.domain, f.name) for f in model.functions] == [("edgeproto", fam.op_type)]
        assert list(nodes[0].input[1:]) == [f"prototype_layer.{p}" for p in fam.param_names]
    else:
        assert nodes == [] and len(model.functions) == 0
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["classes"]) == manifest["classes"]
    assert json.loads(props["normalization"])["mean"] == manifest["preprocess"]["mean"]

    runner = OnnxRuntimeRunner(bundle.path("model.onnx"))
    golden = bundle.golden()
    classes = bundle.prototype_classes()
    rng = np.random.default_rng(0)
    for batch in (1, 7, 64):
        images = golden["image"][rng.integers(0, len(golden["image"]), batch)]
        images = images + rng.normal(0, 0.1, images.shape).astype(np.float32)
        ref, out = _reference(ckpt, images), runner.run(images)
        assert out["maps"].shape == ref["maps"].shape
        for name in ("logits", "scores"):
            # atol + rtol·|ref| (the export check's own tolerances): fp32 conv accumulation order
            # differs between ORT's and torch's kernels (and between CPUs), relative to the logit size
            np.testing.assert_allclose(out[name], ref[name], atol=1e-5, rtol=1e-4, err_msg=f"{name} batch {batch}")
        assert (top_prototypes(out["logits"], out["scores"], classes, 1) == top_prototypes(ref["logits"], ref["scores"], classes, 1)).all()


def test_bundle_layout_and_manifest(trained, tmp_path):
    ckpt = trained("l2_log")
    manifest = export_bundle(ckpt, tmp_path / "b", golden=5)
    root = tmp_path / "b"
    assert manifest["export_check"]["passed"] and manifest["export_check"]["top1_prototype_agreement"] == 1.0
    assert len(manifest["prototypes"]) == 6
    for proto in manifest["prototypes"]:
        assert (root / proto["patch_png"]).is_file() and len(proto["patch_box"]) == 4
        assert manifest["classes"][proto["class"]] == proto["class_name"]
    assert np.load(root / "golden/image.npy").shape == (5, 3, 32, 32)
    assert np.load(root / "explain/last_layer.npy").shape == (3, 6)
    assert set(manifest["files"]) >= {"model.onnx", "golden/maps.npy", "prototypes/0000.png"}
    assert manifest["preprocess"]["image_size"] == 32 and manifest["model"]["opset"] == 18


def test_plugin_mode_has_plugin_attributes(trained, tmp_path):
    export_bundle(trained("l2_log"), tmp_path / "b", ops="plugin")
    model = onnx.load(tmp_path / "b" / "model.onnx")
    (node,) = prototype_nodes(model)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["plugin_namespace"] == b"edgeproto" and attrs["plugin_version"] == b"1"
    assert len(model.functions) == 0


def test_zip_bundle_opens(trained, tmp_path):
    export_bundle(trained("l2_log"), tmp_path / "b", as_zip=True)
    assert (tmp_path / "b.zip").is_file() and not (tmp_path / "b").exists()
    assert open_bundle(tmp_path / "b.zip").manifest["model"]["ops"] == "function"


@pytest.mark.parametrize("victim", ["model.onnx", "golden/scores.npy", "prototypes/0001.png"])
def test_tampered_bundle_is_rejected(trained, tmp_path, victim):
    export_bundle(trained("l2_log"), tmp_path / "b")
    open_bundle(tmp_path / "b")
    path = tmp_path / "b" / victim
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(EdgeprotoError, match="integrity.*sha256 mismatch"):
        open_bundle(tmp_path / "b")


def test_extra_file_is_rejected(trained, tmp_path):
    export_bundle(trained("l2_log"), tmp_path / "b")
    (tmp_path / "b" / "golden" / "extra.npy").write_bytes(b"x")
    with pytest.raises(EdgeprotoError, match="not listed"):
        open_bundle(tmp_path / "b")


def test_existing_output_refused_unless_force(trained, tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("mine")
    with pytest.raises(EdgeprotoError, match="exists; pass --force"):
        export_bundle(trained("l2_log"), tmp_path / "b")
    assert (tmp_path / "b" / "keep.txt").read_text() == "mine"
    # --force replaces only a previous export, never a folder of the user's (issue 12: data loss)
    with pytest.raises(EdgeprotoError, match="not an edgeproto bundle"):
        export_bundle(trained("l2_log"), tmp_path / "b", force=True)
    assert (tmp_path / "b" / "keep.txt").read_text() == "mine"
    export_bundle(trained("l2_log"), tmp_path / "c", golden=2)
    export_bundle(trained("l2_log"), tmp_path / "c", force=True, golden=3)
    assert len(json.loads((tmp_path / "c" / "manifest.json").read_text())["golden"]["labels"]) == 3


def test_unsupported_opset_and_unknown_architecture(trained, tmp_path):
    with pytest.raises(EdgeprotoError, match="opset 9 is not supported"):
        export_bundle(trained("l2_log"), tmp_path / "b", opset=9)
    ckpt = tmp_path / "ckpt"
    shutil.copytree(trained("l2_log"), ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["model"]["prototypes"]["family"] = "protonope"
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EdgeprotoError, match="unknown prototype family 'protonope'"):
        export_bundle(ckpt, tmp_path / "b")
    cfg["model"]["prototypes"]["family"] = "l2_log"
    cfg["model"]["backbone"] = {"name": "vit_huge"}
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EdgeprotoError, match="unknown backbone 'vit_huge'"):
        export_bundle(ckpt, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_parity_failure_leaves_nothing(trained, tmp_path):
    with pytest.raises(EdgeprotoError, match="does not reproduce PyTorch"):
        export_bundle(trained("l2_log"), tmp_path / "b", atol=0.0, rtol=0.0)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_destination_and_disk_full(trained, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(EdgeprotoError, match="cannot write"):
        export_bundle(trained("l2_log"), tmp_path / "file" / "b")

    real = atomic_files.write_bytes

    def full(path, data):
        if str(path).endswith("model.onnx"):
            raise EdgeprotoError(f"cannot write {path}: {errno.errorcode[errno.ENOSPC]} No space left on device")
        return real(path, data)

    monkeypatch.setattr(atomic_files, "write_bytes", full)
    with pytest.raises(EdgeprotoError, match="No space left"):
        export_bundle(trained("l2_log"), tmp_path / "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
