"""OpenVINO runner: custom-op conversion per family, fp32 parity with PyTorch and ONNX Runtime,
real bf16, device/corruption errors, and running without torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

ov = pytest.importorskip("openvino", reason="openvino is not installed: pip install 'edgeproto[openvino]'")

from edgeproto.bundle import open_bundle  # noqa: E402
from edgeproto.data import build_dataset  # noqa: E402
from edgeproto.errors import EdgeprotoError  # noqa: E402
from edgeproto.ranking import top_prototypes  # noqa: E402
from edgeproto.export.bundle_writer import export_bundle  # noqa: E402
from edgeproto.layers import prototype_nodes  # noqa: E402
from edgeproto.layers import families  # noqa: E402
from edgeproto.runtimes import load_runner  # noqa: E402
from edgeproto.runtimes.onnxruntime.runner import OnnxRuntimeRunner  # noqa: E402
from edgeproto.runtimes.openvino.runner import OpenVinoRunner, read_model  # noqa: E402

FAMILIES = sorted(families())
# ops each family's converter emits that nothing else in these models produces
CONVERTER_OPS = {
    "l2_log": {"ReduceSum", "Log"},
    "hyperpg": {"ReduceL2", "Exp", "Negative"},
    "gaussian": {"ReduceSum", "Exp"},
    "cosine": {"ReduceL2", "Maximum", "Transpose"},
    "hopfield": {"Softmax", "Broadcast"},
    "tversky": {"Sigmoid", "MatMul"},
    "codebook": {"ReduceL2", "Softmax"},
    "cbr_ae": {"ReduceSum", "Negative"},
}
ATOL = 1e-4


@pytest.fixture(scope="module")
def bundle_dir(trained, tmp_path_factory):
    """``bundle_dir(family, ops)`` → a bundle exported from ``trained(family)`` (cached per module)."""
    cache = {}

    def get(family: str, ops: str = "function"):
        if (family, ops) not in cache:
            out = tmp_path_factory.mktemp(f"ovb-{family}-{ops}") / "b"
            export_bundle(trained(family), out, ops=ops)
            cache[family, ops] = out
        return cache[family, ops]

    return get


def _test_split(bundle) -> np.ndarray:
    ds = build_dataset(bundle.manifest["data"], "test")
    return np.stack([ds[i][0].numpy() for i in range(len(ds))]).astype(np.float32)


def _op_types(model) -> set[str]:
    return {op.get_type_name() for op in model.get_ordered_ops()}


@pytest.mark.parametrize("family", FAMILIES)
def test_fp32_matches_pytorch_and_onnxruntime(bundle_dir, family):
    bundle = open_bundle(bundle_dir(family))
    path = bundle.path("model.onnx")
    assert len(prototype_nodes(onnx.load(path))) == 1  # function mode: one edgeproto node to convert

    # the converter really built the layer: no framework node left, its ops are in the graph
    ops = _op_types(read_model(path))
    assert not any("FrameworkNode" in t for t in ops), ops
    assert CONVERTER_OPS[family] <= ops, (family, sorted(ops))

    runner = OpenVinoRunner(path, precision="fp32")
    assert runner.precision == "fp32" and runner.device == "CPU" and runner.name == "openvino"
    classes = bundle.prototype_classes()

    golden = bundle.golden()
    out = runner.run(golden["image"])
    diff_torch = float(np.abs(out["scores"] - golden["scores"]).max())
    assert diff_torch <= ATOL, f"{family}: OpenVINO vs PyTorch scores max abs diff {diff_torch:.3g}"
    assert np.abs(out["logits"] - golden["logits"]).max() <= ATOL
    assert out["maps"].shape == golden["maps"].shape
    assert (top_prototypes(out["logits"], out["scores"], classes, 1)
            == top_prototypes(golden["logits"], golden["scores"], classes, 1)).all()

    images = _test_split(bundle)
    ov_out, ort_out = runner.run(images), OnnxRuntimeRunner(path).run(images)
    diff_ort = float(np.abs(ov_out["scores"] - ort_out["scores"]).max())
    print(f"\n{family}: fp32 scores max|OV-PyTorch| {diff_torch:.3g} (golden, n={len(golden['image'])}), "
          f"max|OV-ORT| {diff_ort:.3g} (test split, n={len(images)})")
    assert diff_ort <= ATOL, f"{family}: OpenVINO vs ONNX Runtime scores max abs diff {diff_ort:.3g}"
    assert np.abs(ov_out["logits"] - ort_out["logits"]).max() <= ATOL
    top_ov = top_prototypes(ov_out["logits"], ov_out["scores"], classes, 1)
    top_ort = top_prototypes(ort_out["logits"], ort_out["scores"], classes, 1)
    assert (top_ov == top_ort).all(), f"{family}: top-1 prototype differs on {(top_ov != top_ort).sum()} images"

    # --ops inline: standard ops only, no extension needed; same results
    inline = open_bundle(bundle_dir(family, "inline"))
    inline_out = OpenVinoRunner(inline.path("model.onnx")).run(images)
    assert np.abs(inline_out["scores"] - ov_out["scores"]).max() <= ATOL


def test_l2_log_epsilon_attribute_is_read(bundle_dir, tmp_path):
    bundle = open_bundle(bundle_dir("l2_log"))
    model = onnx.load(bundle.path("model.onnx"))
    (node,) = prototype_nodes(model)
    (attr,) = [a for a in node.attribute if a.name == "epsilon"]
    attr.f = 0.5
    onnx.save(model, tmp_path / "eps.onnx")
    images = bundle.golden()["image"]
    ov_out = OpenVinoRunner(tmp_path / "eps.onnx").run(images)
    ort_out = OnnxRuntimeRunner(tmp_path / "eps.onnx").run(images)
    assert np.abs(ov_out["scores"] - ort_out["scores"]).max() <= ATOL
    assert np.abs(ov_out["scores"] - bundle.golden()["scores"]).max() > 0.1  # epsilon really changed


def test_bf16_is_reported_and_used(bundle_dir):
    bundle = open_bundle(bundle_dir("l2_log"))
    path = bundle.path("model.onnx")
    images = _test_split(bundle)
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    fp32 = OpenVinoRunner(path, precision="fp32").run(images)
    runner = OpenVinoRunner(path, precision="bf16")
    if "BF16" not in caps:
        assert runner.precision == "fp32", f"CPU has no BF16 ({caps}): OpenVINO should fall back to f32"
        return
    assert runner.precision == "bf16", f"CPU supports BF16 ({caps}) but OpenVINO compiled {runner.precision}"
    diff = float(np.abs(runner.run(images)["scores"] - fp32["scores"]).max())
    print(f"\nl2_log bf16 vs fp32 scores max abs diff {diff:.3g}")
    assert diff > 1e-3, f"bf16 requested and reported, but scores moved only {diff:.3g} from fp32"


def test_errors_load_runner_and_ir(bundle_dir, tmp_path):
    bundle = open_bundle(bundle_dir("l2_log"))
    path = bundle.path("model.onnx")
    with pytest.raises(EdgeprotoError, match="unknown OpenVINO device 'TPU'.*available here: .*CPU"):
        OpenVinoRunner(path, device="TPU")
    data = path.read_bytes()
    (tmp_path / "trunc.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(EdgeprotoError, match="OpenVINO cannot read .*trunc.onnx.*corrupt"):
        OpenVinoRunner(tmp_path / "trunc.onnx")

    runner = load_runner(bundle, "openvino", threads=1)
    assert isinstance(runner, OpenVinoRunner) and runner.precision == "fp32"
    desc = runner.describe()
    assert [o["name"] for o in desc["outputs"]] == ["logits", "scores", "maps"]
    golden = bundle.golden()
    ref = runner.run(golden["image"])

    # an OpenVINO IR (uncompressed) reads back and runs the same; a corrupt .xml is refused
    ov.save_model(read_model(path), tmp_path / "ir" / "model.xml", compress_to_fp16=False)
    ir = OpenVinoRunner(tmp_path / "ir" / "model.xml")
    assert np.abs(ir.run(golden["image"])["scores"] - ref["scores"]).max() <= 1e-6
    xml = (tmp_path / "ir" / "model.xml").read_text()
    (tmp_path / "ir" / "model.xml").write_text(xml[: len(xml) // 2])
    with pytest.raises(EdgeprotoError, match="OpenVINO cannot read .*model.xml"):
        OpenVinoRunner(tmp_path / "ir" / "model.xml")


def test_runs_without_torch(bundle_dir):
    root = bundle_dir("l2_log")
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any torch import now raises ImportError
        import json
        import numpy as np
        from edgeproto.bundle import open_bundle
        from edgeproto.runtimes.openvino.runner import OpenVinoRunner
        bundle = open_bundle({str(root)!r})
        golden = bundle.golden()
        out = OpenVinoRunner(bundle.path("model.onnx")).run(golden["image"])
        print(json.dumps({{"diff": float(np.abs(out["scores"] - golden["scores"]).max()),
                          "torch": sys.modules["torch"] is not None}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"diff": result["diff"], "torch": False} and result["diff"] <= ATOL
