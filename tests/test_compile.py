"""``compile_bundle``: ONNX Runtime / OpenVINO artifacts inside a bundle, the explanation guard,
manifest bookkeeping and refusal of bad requests (bundle left byte-for-byte unchanged)."""

from __future__ import annotations

import json
import shutil
from collections import deque

import numpy as np
import onnx
import pytest

from edgeproto import atomic_files
from edgeproto.bundle import MANIFEST, file_hashes, open_bundle
from edgeproto.errors import EdgeprotoError
from edgeproto.ranking import top1_agreement
from edgeproto.export.bundle_writer import export_bundle
from edgeproto.runtimes.compile import compile_bundle
from edgeproto.layers import prototype_nodes
from edgeproto.runtimes import artifact_key, load_runner

CALIB = 32


@pytest.fixture(scope="module")
def bundle_of(trained, tmp_path_factory):
    """``bundle_of(family)`` → a bundle exported once per module from the trained checkpoint."""
    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = tmp_path_factory.mktemp(f"bundle-{family}") / "b"
            export_bundle(trained(family), cache[family])
        return cache[family]

    return get


def _snapshot(root):
    return file_hashes(root), (root / MANIFEST).read_bytes(), sorted(p.name for p in root.parent.iterdir())


def _golden_agreement(bundle, target, precision, guard):
    runner = load_runner(bundle, target, precision, guard)
    golden = bundle.golden()
    out = runner.run(golden["image"])
    assert set(out) >= {"logits", "scores", "maps"}
    assert out["scores"].shape == golden["scores"].shape
    return out, top1_agreement(golden, out, bundle.prototype_classes())


def _downstream(graph, tensor):
    """Nodes of an ONNX graph computed from ``tensor``."""
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found, queue = [], deque([tensor])
    while queue:
        for node in consumers.get(queue.popleft(), []):
            if node not in found:
                found.append(node)
                queue.extend(node.output)
    return found


@pytest.mark.parametrize("family", ["l2_log", "hyperpg"])
def test_compile_targets_and_guard(bundle_of, family):
    root = bundle_of(family)
    z = prototype_nodes(onnx.load(root / "model.onnx"))[0].input[0]
    agreement = {}
    for target, precision, guard in [
        ("onnxruntime", "int8", "prototypes"), ("onnxruntime", "int8", "none"), ("onnxruntime", "fp16", "prototypes"),
        ("openvino", "fp32", "prototypes"), ("openvino", "int8", "prototypes"), ("openvino", "int8", "none"),
    ]:
        entry = compile_bundle(root, target=target, precision=precision, guard=guard, calib=CALIB, progress=False, force=True)
        key = artifact_key(target, precision, guard)
        bundle = open_bundle(root)  # integrity holds after every compile
        assert bundle.manifest["compiled"][key] == entry
        assert entry["model"] == f"compiled/{key}/" + ("model.onnx" if target == "onnxruntime" else "model.xml")
        assert (target, precision, guard) == (entry["target"], entry["precision"], entry["guard"])
        assert all(f in bundle.manifest["files"] for f in entry["files"]) and entry["model"] in entry["files"]
        if precision == "int8":
            assert entry["calibration"] == {**entry["calibration"], "images": CALIB, "split": "train"}
        assert bool(entry["prototype_nodes_fp32"]) == (guard == "prototypes" or precision == "fp32")
        out, agreement[key] = _golden_agreement(bundle, target, precision, guard)
        assert agreement[key] == entry["check"]["top1_prototype_agreement"]

        if target == "openvino":
            assert entry["inference_precision"] == "fp32"
            assert (root / entry["model"]).with_suffix(".bin").is_file()
        if (target, precision) == ("openvino", "fp32"):
            np.testing.assert_allclose(out["scores"], bundle.golden()["scores"], atol=1e-4, rtol=1e-3)
        if (target, precision) == ("onnxruntime", "int8"):
            model = onnx.load(root / entry["model"])
            producers = {o: n for n in model.graph.node for o in n.output}
            after_z = _downstream(model.graph, z)
            if guard == "prototypes":
                (node,) = prototype_nodes(model)  # the edgeproto node survives, fed fp32
                assert node.input[0] == z and producers[z].op_type == "Sigmoid"
                fp32_init = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
                assert set(node.input[1:]) <= fp32_init
                assert not [n.name for n in after_z if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
                assert not [i for n in after_z for i in n.input
                            if i in producers and producers[i].op_type == "DequantizeLinear"]
            else:  # inlined and quantized inside the prototype math
                assert prototype_nodes(model) == [] and len(model.functions) == 0
                assert any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in after_z)
        if (target, precision) == ("onnxruntime", "fp16"):
            model = onnx.load(root / entry["model"])
            types = {t.name: t.data_type for t in model.graph.initializer}
            (node,) = prototype_nodes(model)
            assert all(types[i] == onnx.TensorProto.FLOAT for i in node.input[1:])
            assert onnx.TensorProto.FLOAT16 in types.values()
            assert out["scores"].dtype == np.float32 and np.isfinite(out["scores"]).all()
        if (target, precision) == ("openvino", "int8"):
            import openvino as ov

            ir = ov.Core().read_model(str(root / entry["model"]))
            fq = [op for op in ir.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
            assert fq  # the backbone is quantized
            fed = {t.get_node().get_friendly_name() for op in fq for t in op.output(0).get_target_inputs()}
            sigmoid = next(op for op in ir.get_ordered_ops() if z in op.output(0).get_names())
            after = set()
            queue = deque([sigmoid])
            while queue:
                for t in queue.popleft().output(0).get_target_inputs():
                    node = t.get_node()
                    if node.get_friendly_name() not in after and node.get_type_name() != "Result":
                        after.add(node.get_friendly_name())
                        queue.append(node)
            if guard == "prototypes":
                assert entry["prototype_nodes_fp32"][0] == sigmoid.get_friendly_name()
                assert after <= set(entry["prototype_nodes_fp32"])
                assert not fed & set(entry["prototype_nodes_fp32"][1:])
            else:
                assert fed & after  # NNCF reached into the prototype math

    for target in ("onnxruntime", "openvino"):
        guarded, unguarded = agreement[f"{target}-int8"], agreement[f"{target}-int8-noguard"]
        assert guarded >= unguarded, (target, guarded, unguarded)


def test_bad_requests_leave_bundle_unchanged(bundle_of, monkeypatch):
    root = bundle_of("l2_log")
    compile_bundle(root, target="onnxruntime", precision="fp16", progress=False, force=True)
    before = _snapshot(root)
    cases = [
        (dict(target="tensorrt-x"), "unknown target"),
        (dict(target="onnxruntime", precision="int4"), "unknown precision"),
        (dict(target="onnxruntime", precision="bf16"), "'bf16' is not supported by target 'onnxruntime'"),
        (dict(target="onnxruntime", guard="explanations"), "unknown guard"),
        (dict(target="onnxruntime", precision="int8", calib=0), "calib must be"),
        (dict(target="openvino", precision="int8", calib=-3), "calib must be"),
    ]
    for kwargs, message in cases:
        with pytest.raises(EdgeprotoError, match=message):
            compile_bundle(root, progress=False, **kwargs)
        assert _snapshot(root) == before, kwargs

    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real_find_spec(name, *a))
    with pytest.raises(EdgeprotoError, match=r"needs nncf.*pip install 'edgeproto\[openvino\]'"):
        compile_bundle(root, target="openvino", precision="int8", progress=False, force=True)
    monkeypatch.undo()

    import edgeproto.data

    monkeypatch.setattr(edgeproto.data, "build_dataset", lambda config, split: [])
    with pytest.raises(EdgeprotoError, match="train split is empty"):
        compile_bundle(root, target="onnxruntime", precision="int8", progress=False, force=True)
    monkeypatch.undo()
    assert _snapshot(root) == before

    # a failure while installing (manifest write) restores the previous artifact and manifest
    real_write = atomic_files.write_text

    def full_disk(path, text):
        if str(path).endswith(MANIFEST) and "onnxruntime-fp16" in text and '"created"' in text:
            raise EdgeprotoError(f"cannot write {path}: No space left on device")
        return real_write(path, text)

    monkeypatch.setattr(atomic_files, "write_text", full_disk)
    with pytest.raises(EdgeprotoError, match="No space left"):
        compile_bundle(root, target="onnxruntime", precision="fp16", progress=False, force=True)
    monkeypatch.undo()
    assert _snapshot(root) == before
    open_bundle(root)

    # a corrupt bundle is refused
    bad = root.parent / "corrupt"
    shutil.copytree(root, bad)
    path = bad / "golden" / "scores.npy"
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    corrupt = _snapshot(bad)
    with pytest.raises(EdgeprotoError, match="integrity"):
        compile_bundle(bad, target="onnxruntime", precision="fp16", progress=False)
    assert _snapshot(bad) == corrupt


def test_recompile_replaces_artifact(bundle_of):
    root = bundle_of("l2_log")
    first = compile_bundle(root, target="openvino", precision="bf16", progress=False, force=True)
    second = compile_bundle(root, target="openvino", precision="bf16", progress=False, force=True)
    manifest = json.loads((root / MANIFEST).read_text())
    assert manifest["compiled"]["openvino-bf16"] == second and first["files"] == second["files"]
    assert second["inference_precision"] == "bf16" and second["inference_precision_hint"] == "bf16"
    assert sorted(p.name for p in (root / "compiled" / "openvino-bf16").iterdir()) == ["model.bin", "model.xml"]
    assert [p.name for p in root.parent.iterdir() if p.name.startswith(".")] == []  # no staging left
    open_bundle(root)
    runner = load_runner(open_bundle(root), "openvino", "bf16")
    assert runner.run(open_bundle(root).golden()["image"])["logits"].shape[0] == 16
