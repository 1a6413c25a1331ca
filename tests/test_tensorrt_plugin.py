"""``compile --target tensorrt --ops plugin``: the prototype op as a TensorRT plugin node.

Checked here: the plugin graph (bare node, plugin attributes, no function body, parser and checker
clean), its CPU execution by the op's ONNX body against the inlined graph, the Triton kernel's
numerics (Triton's CPU interpreter) against that body, its ahead-of-time compilation to PTX for a
Jetson Orin (sm_87) and a Hopper GPU (sm_90) — all without a GPU — and the clear errors. The engine
build with the plugin runs only where TensorRT and a GPU are.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest

from edgeproto.bundle import open_bundle
from edgeproto.errors import EdgeprotoError
from edgeproto.export.bundle_writer import export_bundle
from edgeproto.layers import prototype_nodes
from edgeproto.runtimes import load_runner
from edgeproto.runtimes.compile import compile_bundle
from edgeproto.runtimes.tensorrt.parser_ops import graph_problems
from edgeproto.runtimes.tensorrt.plugins import missing_packages, register_plugins
from edgeproto.runtimes.tensorrt.plugins.graph import FUNCTIONS_FILE, plugin_nodes

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def bundles(trained, tmp_path_factory):
    """The same ProtoPNet bundle compiled inline (fp32) and as plugin graphs (fp32, int8)."""
    inline = tmp_path_factory.mktemp("trt-inline") / "b"
    export_bundle(trained("l2_log"), inline, golden=8)
    compile_bundle(inline, target="tensorrt", precision="fp32", progress=False)
    plugin = tmp_path_factory.mktemp("trt-plugin") / "b"
    export_bundle(trained("l2_log"), plugin, golden=8)
    for precision in ("fp32", "int8"):
        compile_bundle(plugin, target="tensorrt", precision=precision, ops="plugin", calib=16, progress=False)
    return inline, plugin


def test_plugin_graph_is_a_bare_plugin_node(bundles):
    _, root = bundles
    bundle = open_bundle(root)
    for precision in ("fp32", "int8"):
        entry = bundle.manifest["compiled"][f"tensorrt-{precision}"]
        assert entry["ops"] == "plugin" and entry["plugins"] == ["edgeproto::L2LogSimilarity"]
        assert entry["prototype_math_fp32"] is True
        model = onnx.load(bundle.path(entry["model"]))
        onnx.checker.check_model(model, full_check=True)
        assert prototype_nodes(model) == []
        (node,) = plugin_nodes(model)
        assert node.domain == "edgeproto.tensorrt"
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert node.op_type == "L2LogSimilarity"
        assert attrs["plugin_namespace"] == b"edgeproto" and attrs["plugin_version"] == b"1" and attrs["aot"] == 1
        assert not model.functions, "a function body would make the parser take the body, not the plugin"
        assert graph_problems(model, allow_plugins=True) == []
        assert graph_problems(model) != []  # without plugins allowed the node is refused
        bodies = onnx.load(bundle.path(entry["model"]).parent / FUNCTIONS_FILE)
        assert [f.name for f in bodies.functions] == ["L2LogSimilarity"]


def test_plugin_graph_runs_like_the_inlined_graph(bundles):
    inline, plugin = bundles
    a, b = open_bundle(inline), open_bundle(plugin)
    images = a.golden()["image"]
    ref = load_runner(a, "tensorrt-graph").run(images)
    runner = load_runner(b, "tensorrt-graph")
    out = runner.run(images)
    for name in ("logits", "scores", "maps"):
        np.testing.assert_allclose(out[name], ref[name], atol=1e-5, rtol=1e-5)
    runner.close()


def _l2_log_reference(z: np.ndarray, p: np.ndarray, eps: float) -> np.ndarray:
    d = ((z[:, None] - p[None, :, :, None, None]) ** 2).sum(axis=2)
    return np.log((d + 1) / (d + eps))


def test_triton_kernel_matches_the_onnx_body(tmp_path):
    """The plugin's Triton kernel, run by Triton's CPU interpreter, against the op's ONNX body."""
    pytest.importorskip("triton")
    script = tmp_path / "run_kernel.py"
    script.write_text(textwrap.dedent("""
        import sys, numpy as np, torch
        from edgeproto.runtimes.tensorrt.plugins import l2_log_kernel as k
        rng = np.random.default_rng(0)
        B, C, H, W, M, eps = 2, 5, 7, 9, 6, 1e-4
        z = rng.random((B, C, H, W), dtype=np.float32)
        p = rng.random((M, C), dtype=np.float32)
        p[0] = z[1, :, 3, 4]  # an exact match: d = 0, the largest similarity
        out = torch.empty((B, M, H, W), dtype=torch.float32)
        k.l2_log_similarity_kernel[k.grid(B, M, H * W)](torch.from_numpy(z), torch.from_numpy(p), C, M, H * W, out,
                                                       EPS=eps, BLOCK_HW=k.BLOCK)
        np.savez(sys.argv[1], z=z, p=p, out=out.numpy())
    """))
    env = dict(os.environ, TRITON_INTERPRET="1", TRITON_DEFAULT_FP_FUSION="1")
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "out.npz")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    data = np.load(tmp_path / "out.npz")
    ref = _l2_log_reference(data["z"], data["p"], 1e-4)
    np.testing.assert_allclose(data["out"], ref, atol=1e-4, rtol=1e-5)
    assert data["out"][1, 0, 3, 4] == pytest.approx(np.log(1 / 1e-4), rel=1e-5)


@pytest.mark.parametrize("arch", [87, 90])
def test_triton_kernel_compiles_ahead_of_time(arch, tmp_path):
    """The AOT path TensorRT takes: PTX for a Jetson Orin (sm_87) and a Hopper GPU (sm_90), no GPU needed."""
    pytest.importorskip("triton")
    script = tmp_path / "aot.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        from triton.backends.compiler import GPUTarget
        from edgeproto.runtimes.tensorrt.plugins import l2_log_kernel as k
        c = k.compile_ptx(1e-4, GPUTarget("cuda", {arch}, 32))
        json.dump({{"name": c.metadata.name, "ptx": c.asm["ptx"], "warps": c.metadata.num_warps}}, open(sys.argv[1], "w"))
    """))
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "aot.json")], capture_output=True,
                            text=True, timeout=300, env=dict(os.environ, TRITON_DEFAULT_FP_FUSION="1"))
    assert result.returncode == 0, result.stderr[-2000:]
    aot = json.loads((tmp_path / "aot.json").read_text())
    assert aot["name"] == "l2_log_similarity_kernel" and aot["warps"] >= 1
    ptx = aot["ptx"]
    assert f".target sm_{arch}" in ptx and ".entry l2_log_similarity_kernel(" in ptx
    entry = ptx[ptx.index(".entry"):ptx.index(")", ptx.index(".entry"))]
    # z, prototypes, then C, M, HW (int32), then the output: TensorRT's AOT argument order
    params = [line.split()[1] for line in entry.splitlines()[1:7]]
    assert params == [".u64", ".u64", ".u32", ".u32", ".u32", ".u64"]


def test_plugin_requests_that_cannot_work_are_clear_errors(trained, bundles, tmp_path):
    _, plugin = bundles
    with pytest.raises(EdgeprotoError, match="--ops plugin: openvino writes its prototype ops as inline"):
        compile_bundle(plugin, target="openvino", precision="fp32", ops="plugin", progress=False)
    with pytest.raises(EdgeprotoError, match="needs the explanation guard"):
        compile_bundle(plugin, target="tensorrt", precision="fp16", guard="none", ops="plugin", progress=False)
    other = tmp_path / "hyperpg"
    export_bundle(trained("hyperpg"), other, golden=4)
    with pytest.raises(EdgeprotoError, match=r"no TensorRT plugin for \['HyperPgLikelihood'\]|no TensorRT plugin for"):
        compile_bundle(other, target="tensorrt", precision="fp32", ops="plugin", progress=False)
    assert "compiled" not in open_bundle(other).manifest or not open_bundle(other).manifest["compiled"]
    # the CPU runner needs the bodies beside a plugin graph
    entry = open_bundle(plugin).manifest["compiled"]["tensorrt-fp32"]
    copy = tmp_path / "lonely.onnx"
    copy.write_bytes(open_bundle(plugin).path(entry["model"]).read_bytes())
    from edgeproto.runtimes.tensorrt.runner import GraphRunner
    with pytest.raises(EdgeprotoError, match="functions.onnx"):
        GraphRunner(copy)


@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed here")
def test_plugins_without_tensorrt_say_what_is_missing():
    assert "TensorRT >= 10.9" in missing_packages()
    with pytest.raises(EdgeprotoError, match="TensorRT >= 10.9.*--ops inline"):
        register_plugins({"L2LogSimilarity"})
    with pytest.raises(EdgeprotoError, match="no TensorRT plugin for"):
        register_plugins({"HyperPgLikelihood"})


@pytest.mark.skipif(not HAVE_TENSORRT, reason="TensorRT is not installed (no CUDA GPU on this machine)")
def test_plugin_engine_runs_like_the_graph(bundles):  # pragma: no cover - needs a GPU with TensorRT >= 10.9
    _, plugin = bundles
    bundle = open_bundle(plugin)
    images = bundle.golden()["image"]
    ref = load_runner(bundle, "tensorrt-graph").run(images)
    out = load_runner(bundle, "tensorrt").run(images)
    for name in ("logits", "scores", "maps"):
        np.testing.assert_allclose(out[name], ref[name], atol=1e-3, rtol=1e-3)
