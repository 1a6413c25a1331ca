"""TensorRT target: everything but the engine build is checked here (no GPU, no TensorRT on CI).

The TensorRT-ready graphs are built for real, checked with onnx.checker and against TensorRT's ONNX
parser op list, and run in ONNX Runtime (target tensorrt-graph); the engine cache's decisions are
checked with a stand-in builder; the engine build itself runs only where TensorRT and a GPU are.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import pytest

from edgeproto.bundle import open_bundle
from edgeproto.compare.options import ValidateOptions
from edgeproto.compare.validate import validate_bundle
from edgeproto.errors import EdgeprotoError
from edgeproto.export.bundle_writer import export_bundle
from edgeproto.layers import prototype_nodes
from edgeproto.runtimes import load_runner
from edgeproto.runtimes.compile import compile_bundle
from edgeproto.runtimes.tensorrt import engine_cache
from edgeproto.runtimes.tensorrt.compile import prototype_math_is_fp32
from edgeproto.runtimes.tensorrt.parser_ops import PARSER_OPS, graph_problems
from edgeproto.runtimes.tensorrt.runner import check_batch

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None
VARIANTS = [("fp32", "prototypes"), ("fp16", "prototypes"), ("fp16", "none"), ("int8", "prototypes"),
            ("int8", "none")]


@pytest.fixture(scope="module", params=["l2_log", "hyperpg"])
def compiled(request, trained, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"trt-{request.param}") / "b"
    export_bundle(trained(request.param), root, golden=8)
    for precision, guard in VARIANTS:
        compile_bundle(root, target="tensorrt", precision=precision, guard=guard, calib=16, progress=False)
    return root


def _graph(root, key):
    bundle = open_bundle(root)
    return bundle, onnx.load(bundle.path(bundle.manifest["compiled"][key]["model"]))


@pytest.mark.parametrize("precision,guard", VARIANTS)
def test_tensorrt_ready_graph(compiled, precision, guard):
    key = f"tensorrt-{precision}" + ("" if guard == "prototypes" else "-noguard")
    bundle, model = _graph(compiled, key)
    entry = bundle.manifest["compiled"][key]
    onnx.checker.check_model(model, full_check=True)
    assert graph_problems(model) == [] and not model.functions and prototype_nodes(model) == []
    assert {n.op_type for n in model.graph.node} <= PARSER_OPS
    ops = [n.op_type for n in model.graph.node]
    if precision == "fp16":
        assert "Cast" in ops and any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    if precision == "int8":
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops and entry["quantization"]["symmetric"]
    # the guard: the prototype math stays float32 without Q/DQ; unguarded reduced graphs reduce it
    assert prototype_math_is_fp32(model) == (guard == "prototypes" or precision == "fp32")
    assert entry["prototype_math_fp32"] == prototype_math_is_fp32(model)
    # the golden check ran on the CPU execution of this very graph, with verify's tolerances
    assert entry["runtime"]["name"] == "tensorrt-graph" and entry["check"]["finite"]
    if precision == "fp32":
        assert entry["check"]["passed"] and entry["check"]["top1_prototype_agreement"] == 1.0


def test_tensorrt_graph_validates_against_pytorch(compiled):
    report = validate_bundle(compiled, target="tensorrt-graph", precision="fp32",
                             options=ValidateOptions(limit=16, progress=False))
    assert report["passed"], report["failed"]
    assert report["target"]["runtime"]["device"].startswith("CPU (ONNX Runtime executing the TensorRT")
    assert report["target"]["artifact"] == "compiled/tensorrt-fp32/model.onnx"
    half = validate_bundle(compiled, target="tensorrt-graph", precision="fp16",
                           options=ValidateOptions(limit=16, progress=False))
    assert half["fidelity"]["top1"] >= 0.9 and half["parity"]["scores"]["finite"]


def test_registry_rules(compiled, tmp_path):
    with pytest.raises(EdgeprotoError, match="runs the artifacts of 'tensorrt': compile with --target tensorrt"):
        compile_bundle(compiled, target="tensorrt-graph", precision="fp32")
    with pytest.raises(EdgeprotoError, match="bf16.*not supported by target 'tensorrt'"):
        compile_bundle(compiled, target="tensorrt", precision="bf16")
    fresh = tmp_path / "fresh"
    export_bundle(open_bundle(compiled).manifest["source"]["checkpoint"], fresh, golden=2)
    with pytest.raises(EdgeprotoError, match="no tensorrt fp32 artifact.*edgeproto compile .* --target tensorrt"):
        load_runner(open_bundle(fresh), "tensorrt-graph")


@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed here")
def test_tensorrt_absent_is_one_clear_error(compiled):
    with pytest.raises(EdgeprotoError, match="target 'tensorrt' needs tensorrt.*pip install 'edgeproto\\[tensorrt\\]'"):
        load_runner(open_bundle(compiled), "tensorrt")


@pytest.mark.skipif(not HAVE_TENSORRT, reason="TensorRT is not installed (no CUDA GPU on this machine)")
def test_engine_runs_like_the_graph(compiled):  # pragma: no cover - needs a GPU with TensorRT
    bundle = open_bundle(compiled)
    golden = bundle.golden()
    for precision in ("fp32", "fp16"):
        engine = load_runner(bundle, "tensorrt", precision)
        graph = load_runner(bundle, "tensorrt-graph", precision)
        try:
            a, b = engine.run(golden["image"]), graph.run(golden["image"])
            np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-2, rtol=1e-2)
        finally:
            engine.close()
            graph.close()


def test_plugin_nodes_are_checked():
    z = onnx.helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [1, 4, 2, 2])
    maps = onnx.helper.make_tensor_value_info("maps", onnx.TensorProto.FLOAT, [1, 3, 2, 2])

    def model(op_type, **attrs):
        node = onnx.helper.make_node(op_type, ["z"], ["maps"], domain="edgeproto.tensorrt", **attrs)
        return onnx.helper.make_model(onnx.helper.make_graph([node], "g", [z], [maps]))

    good = model("L2LogSimilarity", plugin_namespace="edgeproto", plugin_version="1")
    assert graph_problems(good, allow_plugins=True) == []
    assert graph_problems(good) and "not a standard op" in graph_problems(good)[0]
    assert any("plugin_namespace" in p for p in graph_problems(model("L2LogSimilarity"), allow_plugins=True))
    clash = model("Relu", plugin_namespace="edgeproto")  # the parser would import it as a standard Relu
    assert any("must not be a standard ONNX op name" in p for p in graph_problems(clash, allow_plugins=True))


def test_parser_restrictions_are_checked():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])
    scale = onnx.numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zp = onnx.numpy_helper.from_array(np.array(3, np.int8), "zp")
    nodes = [onnx.helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
             onnx.helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["d"]),
             onnx.helper.make_node("Unique", ["d"], ["y"])]
    m = onnx.helper.make_model(onnx.helper.make_graph(nodes, "g", [x], [y], [scale, zp]))
    problems = graph_problems(m)
    assert sum("zero point" in p for p in problems) == 2 and any("Unique" in p for p in problems)


# --------------------------------------------------------------------------- the engine cache


def test_engine_cache_reuses_rebuilds_and_says_why(tmp_path):
    artifact = tmp_path / "bundle" / "compiled" / "tensorrt-fp16" / "model.onnx"
    artifact.parent.mkdir(parents=True)
    artifact.write_bytes(b"graph")
    built = []

    def build():
        built.append(1)
        return b"plan-%d" % len(built)

    def load(data):
        if not data.startswith(b"plan-"):
            raise RuntimeError("bad plan")
        return data

    gpu = {"gpu": "Orin", "compute_capability": "8.7"}
    wanted = engine_cache.identity(artifact, "10.3.0", gpu, "fp16", 8)
    engine, note = engine_cache.load_or_build(artifact, wanted, build, load)
    assert engine == b"plan-1" and "no cached engine" in note
    folder = tmp_path / "bundle.engines" / "tensorrt-fp16"  # beside the bundle, not inside it
    assert (folder / "engine.plan").is_file() and json.loads((folder / "engine.json").read_text())["gpu"] == "Orin"

    engine, note = engine_cache.load_or_build(artifact, wanted, build, load)
    assert engine == b"plan-1" and note.startswith("cached engine reused") and len(built) == 1

    other = engine_cache.identity(artifact, "11.4.0", {"gpu": "H200", "compute_capability": "9.0"}, "fp16", 8)
    engine, note = engine_cache.load_or_build(artifact, other, build, load)
    assert engine == b"plan-2" and "another setup" in note and "tensorrt '10.3.0' → '11.4.0'" in note

    (folder / "engine.plan").write_bytes(b"plan-X-tampered")
    engine, note = engine_cache.load_or_build(artifact, other, build, load)
    assert engine == b"plan-3" and "corrupt (sha256 mismatch)" in note

    meta = json.loads((folder / "engine.json").read_text())
    (folder / "engine.plan").write_bytes(b"junk")
    import hashlib

    meta["plan_sha256"] = hashlib.sha256(b"junk").hexdigest()
    (folder / "engine.json").write_text(json.dumps(meta))
    engine, note = engine_cache.load_or_build(artifact, other, build, load)
    assert engine == b"plan-4" and "does not load (bad plan)" in note

    artifact.write_bytes(b"another graph")  # re-compiled artifact: a new engine
    h200 = {"gpu": "H200", "compute_capability": "9.0"}
    engine, note = engine_cache.load_or_build(artifact, engine_cache.identity(artifact, "11.4.0", h200, "fp16", 8),
                                              build, load)
    assert engine == b"plan-5" and "onnx_sha256" in note


def test_profile_must_cover_the_batch():
    check_batch(8, 8)
    with pytest.raises(EdgeprotoError, match="optimization profile covers batch 1..8, not 9"):
        check_batch(9, 8)
