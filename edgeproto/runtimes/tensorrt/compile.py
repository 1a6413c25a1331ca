"""The TensorRT-ready ONNX graph (no TensorRT needed): precision is explicit in the graph.

TensorRT 11 removed the FP16/INT8 builder flags and per-layer precision (10.12 deprecated them), so
the engine is built *strongly typed* from a graph that already says which tensor is which type:

- ``fp32``: the bundle's model with the prototype function inlined (standard ops only: TensorRT
  8.x parses no model-local functions, 10.x would take the body anyway);
- ``fp16``: float16 conversion with explicit ``Cast`` nodes (``onnxruntime.transformers.float16``),
  the prototype subgraph — the add-on activation feeding the prototype layer, the layer, pooling
  and the last layer — kept float32 when guarded (``--guard prototypes``); then inlined;
- ``int8``: explicit Q/DQ (``onnxruntime.quantization``, QDQ format, per-channel weights,
  **symmetric** — TensorRT's parser requires zero points of 0 — calibrated on the train split),
  the prototype subgraph excluded when guarded; then inlined.

``ops="plugin"`` keeps the prototype node instead of inlining it: a bare plugin node
(:mod:`.plugins`) without function body, so TensorRT runs edgeproto's plugin kernel. Its body goes to
``functions.onnx`` beside the graph, from which the CPU runner (``tensorrt-graph``) executes the node.

The graph is checked with ``onnx.checker`` (full check) and against TensorRT's ONNX parser op list
and restrictions (:mod:`.parser_ops`). Engines are not built here: they are built on the device at
first load (:mod:`.runner`) and cached beside the bundle. Because the precision is in the graph,
ONNX Runtime on the CPU runs the same numerics (target ``tensorrt-graph``).
"""

from __future__ import annotations

from pathlib import Path

import onnx

from edgeproto.bundle import Bundle
from edgeproto.errors import EdgeprotoError
from edgeproto.layers import prototype_nodes
from edgeproto.outputs import OUTPUTS
from edgeproto.runtimes.onnxruntime.compile import (
    feature_input,
    half_graph,
    inline_prototypes,
    int8_graph,
    load_model,
    prototype_subgraph,
)
from edgeproto.runtimes.tensorrt.parser_ops import graph_problems
from edgeproto.runtimes.tensorrt.plugins import NAMESPACE
from edgeproto.runtimes.tensorrt.plugins.graph import FUNCTIONS_FILE, plugin_graph, plugin_nodes

__all__ = ["OPS", "build", "prototype_math_is_fp32"]

OPS = ("inline", "plugin")


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    types.update({i.name: i.data_type for i in model.graph.initializer})
    return types


def build(bundle: Bundle, out_dir: Path, *, precision: str, guard: str, calibration=None,
          progress: bool = True, ops: str = "inline") -> dict:
    """Write ``out_dir/model.onnx`` (the TensorRT-ready graph) for ``precision``; return the entry's fields."""
    out = out_dir / "model.onnx"
    model = load_model(bundle)
    z = feature_input(model)
    guarded = prototype_subgraph(model, z) if guard == "prototypes" else None
    if ops not in OPS:
        raise EdgeprotoError(f"unknown --ops {ops!r}; known: {', '.join(OPS)}")
    if ops == "plugin" and precision != "fp32" and guarded is None:
        raise EdgeprotoError("--ops plugin runs the prototype op as a float32 plugin: it needs the explanation "
                             "guard (--guard prototypes) at fp16 and int8")
    finish = inline_prototypes if ops == "inline" else (lambda m: plugin_graph(m, out_dir / FUNCTIONS_FILE))
    entry: dict = {"model": f"compiled/{out_dir.name}/model.onnx", "ops": ops,
                   "engine": "built on the device at first load (Polygraphy), cached beside the bundle"}
    if precision == "fp32":
        result = finish(model)
        kept = prototype_subgraph(model, z)
    elif precision == "fp16":
        result = finish(half_graph(model, guarded))
        kept = guarded or []
    elif precision == "int8":
        staged = out_dir / "qdq.onnx"
        entry["quantization"] = int8_graph(model, staged, guarded, calibration, symmetric=True)
        result = finish(onnx.load(staged))
        staged.unlink()
        kept = guarded or []
    else:  # compile.py checks first
        raise EdgeprotoError(f"tensorrt cannot compile precision {precision!r}")
    if ops == "inline" and (prototype_nodes(result) or result.functions):
        raise EdgeprotoError("the TensorRT graph still holds edgeproto nodes or functions after inlining")
    if ops == "plugin":
        entry["plugins"] = sorted({f"{NAMESPACE}::{n.op_type}" for n in plugin_nodes(result)})
    try:
        onnx.checker.check_model(result, full_check=True)
    except Exception as exc:  # noqa: BLE001 -- the checker raises several types
        raise EdgeprotoError(f"the TensorRT-ready graph fails onnx.checker: {exc}") from None
    problems = graph_problems(result, allow_plugins=ops == "plugin")
    if problems:
        raise EdgeprotoError("TensorRT's ONNX parser would refuse the graph: " + "; ".join(problems[:5]))
    missing = [n for n in OUTPUTS if n not in {o.name for o in result.graph.output}]
    if missing:
        raise EdgeprotoError(f"the TensorRT graph lost outputs {missing}")
    onnx.save(result, out)
    # the guard, checked on the graph TensorRT will parse: the prototype math is float32, no Q/DQ
    fp32_inside = prototype_math_is_fp32(result)
    if guarded is not None and not fp32_inside:
        raise EdgeprotoError("the explanation guard did not hold: the prototype math is not float32")
    entry["prototype_nodes_fp32"] = kept
    entry["prototype_math_fp32"] = fp32_inside
    entry["parser_check"] = "onnx.checker full_check; TensorRT ONNX parser ops (onnx-tensorrt 10.1 list): ok"
    return entry


def prototype_math_is_fp32(model: onnx.ModelProto) -> bool:
    """Whether everything between the prototype layer's input (the add-on activation) and the
    ``scores`` / ``maps`` outputs is computed in float32, without Q/DQ (what the guard promises)."""
    types = _tensor_types(model)
    producers = {o: n for n in model.graph.node for o in n.output}
    z = feature_input(model)
    allowed = (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.BOOL)
    seen, stack = set(), ["scores", "maps"]
    while stack:
        name = stack.pop()
        if name in seen or name == z or name not in producers:
            continue
        seen.add(name)
        node = producers[name]
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            return False
        if types.get(name, onnx.TensorProto.FLOAT) not in allowed:
            return False
        stack.extend(i for i in node.input if i)
    return True
