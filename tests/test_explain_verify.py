"""On-device explanations (``explain_image`` + figure) and the bundle self-check (``verify_bundle``)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeproto.bundle import MANIFEST, open_bundle
from edgeproto.errors import EdgeprotoError
from edgeproto.device.explain import explain_image
from edgeproto.maps import high_activation_box, upsample_map
from edgeproto.commands.explain import run_explain
from edgeproto.commands.verify import run_verify
from edgeproto.ranking import top_prototypes
from edgeproto.device.verify import verify_bundle
from edgeproto.export.bundle_writer import export_bundle


@pytest.fixture(scope="module")
def bundle_dir(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("explain") / "b"
    export_bundle(trained("l2_log"), out, golden=8)
    return out


@pytest.fixture(scope="module")
def golden_png(bundle_dir):
    """Golden input 0 written back as the PNG it was made from (lossless: the same model input)."""
    from edgeproto.data import build_dataset

    manifest = open_bundle(bundle_dir).manifest
    dataset = build_dataset(manifest["data"], "test")
    path = bundle_dir.parent / "golden0.png"
    Image.fromarray(dataset.raw_image(manifest["golden"]["dataset_indices"][0])).save(path)
    return path


def _copy(bundle_dir, tmp_path):
    dest = tmp_path / "b"
    shutil.copytree(bundle_dir, dest)
    return dest


def _jet_fraction(png, gray: float, alpha: float = 0.45) -> float:
    """Fraction of the figure's pixels that are a flat grey input blended with a jet colour."""
    from matplotlib import colormaps

    jet = colormaps["jet"](np.linspace(0, 1, 256))[:, :3] * 255
    px = np.asarray(Image.open(png).convert("RGB"), dtype=np.float64).reshape(-1, 3)[::5]
    heat = (px - (1 - alpha) * gray) / alpha
    near = np.full(len(px), np.inf)
    for c in jet[::4]:
        near = np.minimum(near, np.abs(heat - c).max(axis=1))
    return float((near < 12).mean())


def test_upsampling_and_box_match_pytorch_push():
    import torch
    import torch.nn.functional as F

    from edgeproto.train.push import high_activation_box as torch_box

    rng = np.random.default_rng(0)
    for (h, w), size in (((8, 8), 32), ((2, 2), 32), ((7, 7), 224), ((5, 3), 17)):
        m = rng.normal(size=(h, w))
        ref = F.interpolate(torch.from_numpy(m)[None, None], size=(size, size), mode="bicubic", align_corners=False)
        assert np.abs(upsample_map(m, size) - ref[0, 0].numpy()).max() < 1e-12
        assert high_activation_box(upsample_map(m, size)) == torch_box(torch.from_numpy(m), size)


def test_explain_golden_image_reproduces_reference(bundle_dir, golden_png, tmp_path, capsys):
    bundle = open_bundle(bundle_dir)
    golden, last = bundle.golden(), bundle.last_layer()
    result = explain_image(bundle_dir, golden_png, k=3)
    json.dumps(result)  # JSON-able
    ref_top = top_prototypes(golden["logits"][:1], golden["scores"][:1], bundle.prototype_classes(), 3)[0].tolist()
    assert [p["prototype"] for p in result["top_prototypes"]][0] == ref_top[0]
    assert result["prediction"]["class"] == int(golden["logits"][0].argmax())
    assert result["prediction"]["class_name"] == bundle.classes[result["prediction"]["class"]]
    assert abs(sum(result["probabilities"]) - 1) < 1e-9 and "resized_from" not in result
    assert result["runtime"]["name"] == "onnxruntime" and result["runtime"]["precision"] == "fp32"
    top = result["top_prototypes"][0]
    j = top["prototype"]
    np.testing.assert_allclose(top["score"], golden["scores"][0, j], atol=1e-4, rtol=1e-3)
    np.testing.assert_allclose(top["contribution"], golden["scores"][0, j] * last[result["prediction"]["class"], j],
                               atol=1e-3, rtol=1e-3)
    np.testing.assert_allclose(np.asarray(top["map"]), golden["maps"][0, j], atol=1e-4, rtol=1e-3)
    size = bundle.manifest["preprocess"]["image_size"]
    assert top["box"] == high_activation_box(upsample_map(golden["maps"][0, j], size))
    assert top["patch_png"] == bundle.prototypes[j]["patch_png"] and top["class"] == bundle.prototypes[j]["class"]
    for key in ("class_name", "score", "contribution", "argmax", "box", "patch_png"):
        assert key in top
    pred = result["prediction"]["class"]  # the predicted class's prototypes first, by similarity
    own = [p["score"] for p in result["top_prototypes"] if p["class"] == pred]
    assert own == sorted(own, reverse=True) and result["top_prototypes"][0]["class"] == pred

    code = run_explain(bundle_dir, golden_png, "onnxruntime", "fp32", "prototypes", None, 3, tmp_path / "ex", False)
    assert code == 0
    assert "figure:" in capsys.readouterr().out
    saved = json.loads((tmp_path / "ex.json").read_text())
    assert saved["top_prototypes"][0]["prototype"] == ref_top[0]
    with Image.open(tmp_path / "ex.png") as im:
        im.load()
        assert im.format == "PNG" and im.width >= 400 and im.height >= 3 * 200
        px = np.asarray(im.convert("RGB"))
    assert len(np.unique(px.reshape(-1, 3), axis=0)) > 1000  # images, not a blank page


def test_grayscale_rgba_and_non_image_inputs(bundle_dir, tmp_path, capsys):
    gray = tmp_path / "gray.png"
    Image.new("L", (50, 40), 128).save(gray)
    result = explain_image(bundle_dir, gray, k=2)
    assert result["resized_from"] == [50, 40] and len(result["top_prototypes"]) == 2
    assert run_explain(bundle_dir, gray, "onnxruntime", "fp32", "prototypes", None, 3, tmp_path / "g", True) == 0
    assert json.loads(capsys.readouterr().out)["resized_from"] == [50, 40]
    assert _jet_fraction(tmp_path / "g.png", 128) > 0.08  # the three heatmap panels are drawn

    rgba = tmp_path / "rgba.png"
    arr = np.random.default_rng(1).integers(0, 256, (48, 48, 4), dtype=np.uint8)
    Image.fromarray(arr, "RGBA").save(rgba)
    assert explain_image(bundle_dir, rgba)["resized_from"] == [48, 48]

    fake = tmp_path / "notes.png"
    fake.write_text("not an image\n")
    with pytest.raises(EdgeprotoError, match="cannot read image"):
        explain_image(bundle_dir, fake)
    with pytest.raises(EdgeprotoError, match="not found"):
        explain_image(bundle_dir, tmp_path / "missing.png")


def test_explain_and_verify_run_without_torch(bundle_dir, golden_png, tmp_path):
    script = f"""
import json, sys
sys.modules["torch"] = None
from edgeproto.device.explain import explain_image
from edgeproto.device.figure import render_explanation
from edgeproto.device.verify import verify_bundle
from edgeproto.commands.verify import run_verify
r = explain_image({str(bundle_dir)!r}, {str(golden_png)!r})
render_explanation({str(bundle_dir)!r}, {str(golden_png)!r}, r, {str(tmp_path / "fig.png")!r})
v = verify_bundle({str(bundle_dir)!r})
torch_like = [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
print(json.dumps({{"top": r["top_prototypes"][0]["prototype"], "passed": v["passed"], "torch": torch_like,
                  "torch_value": sys.modules["torch"] is None}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["passed"] and out["torch"] == ["torch"] and out["torch_value"]
    assert (tmp_path / "fig.png").stat().st_size > 10_000


def test_verify_passes_on_fresh_bundle(bundle_dir, capsys):
    report = verify_bundle(bundle_dir)
    assert report["passed"] and report["top1_prototype_agreement"] == 1.0 and report["images"] == 8
    assert set(report["diffs"]) == {"logits", "scores", "maps"}
    assert all(d["within_tolerance"] for d in report["diffs"].values())  # atol 1e-4 + rtol 1e-3·|ref|
    assert (report["atol"], report["rtol"]) == (1e-4, 1e-3) and report["integrity_checked"]
    assert run_verify(bundle_dir, "onnxruntime", "fp32", "prototypes", None, None, None, True) == 0
    assert json.loads(capsys.readouterr().out)["passed"] is True
    # tolerances no runtime can meet: the same check fails, exit code 1
    assert run_verify(bundle_dir, "onnxruntime", "fp32", "prototypes", None, 0.0, 0.0, False) == 1
    assert "FAILED" in capsys.readouterr().out


def test_tampered_golden_output_fails(bundle_dir, tmp_path, capsys):
    b = _copy(bundle_dir, tmp_path)
    scores = b / "golden" / "scores.npy"
    data = bytearray(scores.read_bytes())
    data[-1] ^= 0xFF
    scores.write_bytes(bytes(data))
    with pytest.raises(EdgeprotoError, match="integrity.*golden/scores.npy: sha256 mismatch"):
        verify_bundle(b)

    np.save(scores, np.load(bundle_dir / "golden" / "scores.npy") + 1.0)
    report = verify_bundle(b, check_integrity=False)
    assert not report["passed"] and not report["diffs"]["scores"]["within_tolerance"]
    assert report["diffs"]["logits"]["within_tolerance"] and report["diffs"]["scores"]["max_abs"] > 0.99

    # even re-hashed into the manifest (integrity passes), the wrong reference fails numerically
    manifest = json.loads((b / MANIFEST).read_text())
    manifest["files"]["golden/scores.npy"] = hashlib.sha256(scores.read_bytes()).hexdigest()
    (b / MANIFEST).write_text(json.dumps(manifest))
    assert run_verify(b, "onnxruntime", "fp32", "prototypes", None, None, None, False) == 1
    assert "FAILED" in capsys.readouterr().out


def test_unknown_target_and_uncompiled_precision(bundle_dir, golden_png):
    with pytest.raises(EdgeprotoError, match="unknown target 'tensorflow'"):
        explain_image(bundle_dir, golden_png, target="tensorflow")
    with pytest.raises(EdgeprotoError, match="unknown target"):
        verify_bundle(bundle_dir, target="tensorflow")
    with pytest.raises(EdgeprotoError, match="edgeproto compile"):
        verify_bundle(bundle_dir, precision="int8")
    with pytest.raises(EdgeprotoError, match="edgeproto compile"):
        explain_image(bundle_dir, golden_png, precision="int8")
    with pytest.raises(EdgeprotoError, match="k must be"):
        explain_image(bundle_dir, golden_png, k=0)


@pytest.mark.skipif(importlib.util.find_spec("edgeproto.runtimes.openvino.runner") is None
                    or importlib.util.find_spec("openvino") is None,
                    reason="edgeproto.runtimes.openvino.runner (or openvino) is not available")
def test_openvino_target(bundle_dir, golden_png):
    report = verify_bundle(bundle_dir, target="openvino")
    assert report["passed"], report["diffs"]
    ref = explain_image(bundle_dir, golden_png)
    ov = explain_image(bundle_dir, golden_png, target="openvino")
    assert ov["runtime"]["name"] == "openvino"
    assert [p["prototype"] for p in ov["top_prototypes"]] == [p["prototype"] for p in ref["top_prototypes"]]


def test_missing_runtime_names_the_extra(tmp_path):
    """A target whose runtime is not installed: one clear error naming what to install."""
    script = (
        "import sys; sys.modules['openvino'] = None\n"
        "import importlib.util; real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'openvino' else real(n, *a)\n"
        "from edgeproto.runtimes import get_runtime\n"
        "get_runtime('openvino').runner_class()\n"
    )
    import subprocess
    import sys as _sys

    done = subprocess.run([_sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "needs openvino, which is not installed: pip install 'edgeproto[openvino]'" in done.stderr
    result = subprocess.run([str(__import__("pathlib").Path(_sys.executable).parent / "edgeproto"), "verify",
                             str(tmp_path), "--target", "tensorflow"], capture_output=True, text=True, timeout=60)
    # --target is a choice of the registry's runtimes: click refuses it with a usage error (exit 2)
    assert result.returncode == 2 and "Invalid value for '--target'" in result.stderr
    assert "onnxruntime" in result.stderr and "Traceback" not in result.stderr
