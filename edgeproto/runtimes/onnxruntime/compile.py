"""ONNX Runtime artifacts for :func:`edgeproto.runtimes.compile.compile_bundle` (no torch).

- ``fp32``: the model after ONNX Runtime's *basic* graph optimisations, saved offline
  (``SessionOptions.optimized_model_filepath``). Basic rewrites are hardware independent and use
  standard ops only (the prototype function comes out inlined), so the file runs on any execution
  provider; the extended level would add CPU-only ``com.microsoft`` fused ops.
- ``fp16``: ``onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)``.
  Guarded: the prototype subgraph is the ``node_block_list`` (the ``edgeproto`` function node is
  kept as it is: the converter does not look into functions, and a blocked node keeps fp32 inputs
  and initializers). The converter casts every blocked node's outputs back to fp16 (it treats graph
  outputs as fp16 inside the graph), which would round maps, scores and logits to fp16; those
  fp32→fp16→fp32 round trips are folded away afterwards. Unguarded: the function is inlined first so
  its body is converted too.
- ``int8``: ``onnxruntime.quantization.quantize_static`` (QDQ, per-channel int8 weights, int8
  activations, MinMax calibration). Guarded: the prototype subgraph is ``nodes_to_exclude``;
  the ``edgeproto`` node is kept (ONNX Runtime's quantizer has no rule for it either way).
  Unguarded: the function is inlined first, so ONNX Runtime's default QDQ op set (Mul, Add,
  Unsqueeze, MatMul, Transpose, Gemm, ...) reaches the prototype math.

The prototype subgraph is the activation that produces the prototype layer's input (the add-on
Sigmoid) plus everything downstream of that input (prototype layer, ReduceMax, last layer).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections import deque
from pathlib import Path

import onnx
import onnx.inliner
import onnx.shape_inference

from edgeproto.bundle import Bundle
from edgeproto.errors import EdgeprotoError
from edgeproto.layers import prototype_nodes
from edgeproto.outputs import OUTPUTS

__all__ = ["CALIBRATION_METHODS", "build", "guard_violations", "half_graph", "inline_prototypes", "int8_graph",
           "layer_groups", "load_model", "prototype_subgraph"]

_QDQ = ("QuantizeLinear", "DequantizeLinear")
_NOT_BOUNDARY = ("Conv", "ConvTranspose", "Gemm", "MatMul") + _QDQ
_LOW_FLOATS = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


# --------------------------------------------------------------------------- graph helpers


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output if o}


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            if i:
                out.setdefault(i, []).append(n)
    return out


def feature_input(model: onnx.ModelProto) -> str:
    """Name of the tensor the prototype layer compares with its prototypes (its ``z`` input).

    The ``edgeproto`` node's first input when there is one; otherwise (``--ops inline`` bundles,
    graphs ONNX Runtime rewrote) the output of the nearest Sigmoid/Conv upstream of ``maps``.
    """
    nodes = prototype_nodes(model)
    if nodes:
        return nodes[0].input[0]
    prod = _producers(model.graph)
    seen, queue = set(), deque(["maps"])
    while queue:
        t = queue.popleft()
        node = prod.get(t)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in ("Sigmoid", "Conv"):
            return node.output[0]
        queue.extend(node.input)
    raise EdgeprotoError("cannot find the prototype layer's input in the ONNX graph")


def prototype_subgraph(model: onnx.ModelProto, z: str | None = None) -> list[str]:
    """Names of the nodes to keep fp32: ``z``'s producing activation and everything after ``z``."""
    graph = model.graph
    z = z or feature_input(model)
    prod, cons = _producers(graph), _consumers(graph)
    names: list[str] = []
    boundary = prod.get(z)
    if boundary is not None and boundary.op_type not in _NOT_BOUNDARY:
        names.append(boundary.name)
    seen, queue = set(names), deque([z])
    while queue:
        for node in cons.get(queue.popleft(), []):
            if node.name not in seen:
                seen.add(node.name)
                names.append(node.name)
                queue.extend(node.output)
    if any(not n.name for n in graph.node):
        raise EdgeprotoError("the ONNX graph has unnamed nodes: cannot name the prototype subgraph")
    return names


def guard_violations(model: onnx.ModelProto, names: list[str]) -> list[str]:
    """Guarded nodes that do not compute in fp32: fed by a DequantizeLinear (except the first,
    boundary node, whose input comes from the quantized backbone) or by a float16/bfloat16 tensor."""
    try:
        typed = onnx.shape_inference.infer_shapes(model)
    except Exception:  # types are a best effort; the DQ rule needs none
        typed = model
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(typed.graph.value_info) + list(typed.graph.input) + list(typed.graph.output)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    prod = _producers(model.graph)
    by_name = {n.name: n for n in model.graph.node}
    problems = []
    for i, name in enumerate(names):
        node = by_name.get(name)
        if node is None:
            problems.append(f"{name}: missing")
            continue
        if node.op_type in _QDQ:
            problems.append(f"{name}: is a {node.op_type}")
        for inp in node.input:
            src = prod.get(inp)
            if i > 0 and src is not None and src.op_type == "DequantizeLinear":
                problems.append(f"{name}: input {inp} is dequantized int8")
            if types.get(inp) in _LOW_FLOATS:
                problems.append(f"{name}: input {inp} is {onnx.TensorProto.DataType.Name(types[inp]).lower()}")
    return problems


def _toposort(graph: onnx.GraphProto) -> None:
    """Put the nodes in topological order (the float16 converter appends its casts at the end)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise EdgeprotoError("the converted graph has a cycle or an undefined input")
        for n in ready:
            available.update(n.output)
        done = {id(n) for n in ready}
        ordered.extend(ready)
        pending = [n for n in pending if id(n) not in done]
    copies = [onnx.NodeProto() for _ in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def _fold_casts(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove Cast round trips fp32→fp16→fp32 and no-op casts, then dead nodes and stale value_info."""
    del model.graph.value_info[:]
    _toposort(model.graph)
    typed = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(typed.graph.value_info) + list(typed.graph.input) + list(typed.graph.output)}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    graph = model.graph
    outputs = {o.name for o in graph.output}
    prod = _producers(graph)

    def cast_to(node):
        return next((a.i for a in node.attribute if a.name == "to"), None)

    alias: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "Cast" or node.domain not in ("", "ai.onnx"):
            continue
        src, to = node.input[0], cast_to(node)
        first = prod.get(src)
        if types.get(src) == to:
            alias[node.output[0]] = src  # no-op cast
        elif (first is not None and first.op_type == "Cast" and first.domain in ("", "ai.onnx")
              and types.get(first.input[0]) == to == onnx.TensorProto.FLOAT
              and cast_to(first) in _LOW_FLOATS):
            alias[node.output[0]] = first.input[0]  # fp32 -> fp16 -> fp32
    if not alias:
        return model

    def resolve(name):
        while name in alias:
            name = alias[name]
        return name

    for node in graph.node:
        if node.op_type == "Cast" and node.output[0] in alias and node.output[0] in outputs:
            # a graph output keeps its name: the cast becomes an Identity of the fp32 source
            src = resolve(node.output[0])
            del node.input[:]
            node.input.append(src)
            del node.attribute[:]
            node.op_type = "Identity"
            continue
        for i, name in enumerate(node.input):
            node.input[i] = resolve(name)
    # dead-node elimination
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        keep = [n for n in graph.node if any(o in used for o in n.output)]
        if len(keep) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(keep)
    used = {i for n in graph.node for i in n.input}
    dead_init = [t for t in graph.initializer if t.name not in used]
    for t in dead_init:
        graph.initializer.remove(t)
    _restore_names(graph)
    return model


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new


def _restore_names(graph: onnx.GraphProto) -> None:
    """Give fp32 tensors back their original names after cast folding: an ``Identity`` that only
    renames a node's result to a graph output disappears, and ``<name>_cast_to_fp16`` (an fp32
    result the converter renamed) becomes ``<name>`` again when that name is free."""
    outputs = {o.name for o in graph.output}
    inputs = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    for node in list(graph.node):
        if node.op_type == "Identity" and node.output[0] in outputs and node.input[0] not in inputs | outputs:
            src, dst = node.input[0], node.output[0]
            graph.node.remove(node)
            _rename(graph, src, dst)
    names = {t for n in graph.node for t in list(n.input) + list(n.output)} | inputs | outputs
    suffix = "_cast_to_fp16"
    for name in sorted(names):
        if name.endswith(suffix) and name[: -len(suffix)] not in names:
            _rename(graph, name, name[: -len(suffix)])


@contextlib.contextmanager
def _quiet_quantizer():
    """ONNX Runtime's quantizer logs advice at WARNING on the root logger for every call, and its
    entropy / percentile calibrators print to stdout (which must stay clean for ``--json``)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


# --------------------------------------------------------------------------- precisions


def load_model(bundle: Bundle) -> onnx.ModelProto:
    if bundle.manifest.get("model", {}).get("ops") == "plugin":
        raise EdgeprotoError(
            "this bundle was exported with --ops plugin (no function body): ONNX Runtime cannot run it; "
            "export with --ops function to compile for onnxruntime"
        )
    try:
        return onnx.load(bundle.path(bundle.manifest["model"]["file"]))
    except Exception as exc:
        raise EdgeprotoError(f"cannot read the bundle's ONNX model: {exc}") from None


def inline_prototypes(model: onnx.ModelProto) -> onnx.ModelProto:
    inlined = onnx.inliner.inline_local_functions(model)
    if prototype_nodes(inlined):
        raise EdgeprotoError("inlining the prototype function left edgeproto nodes in the graph")
    return inlined


def _fp32(bundle: Bundle, out: Path) -> onnx.ModelProto:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(out)
    try:
        ort.InferenceSession(str(bundle.path(bundle.manifest["model"]["file"])), opts,
                             providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise EdgeprotoError(f"ONNX Runtime cannot optimise the bundle's model: {exc}") from None
    model = onnx.load(out)
    # ONNX Runtime declares every domain it knows (com.microsoft.nchwc, ...); keep the used ones
    used = {n.domain for n in model.graph.node} | {f.domain for f in model.functions} | {""}
    used |= {n.domain for f in model.functions for n in f.node}
    keep = [i for i in model.opset_import if i.domain in used or (i.domain == "ai.onnx" and "" in used)]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    onnx.save(model, out)
    return model


def half_graph(model: onnx.ModelProto, guarded: list[str] | None) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    if guarded is None:
        model = inline_prototypes(model)
    try:
        half = convert_float_to_float16(model, keep_io_types=True, node_block_list=guarded or [])
    except Exception as exc:
        raise EdgeprotoError(f"float16 conversion failed: {exc}") from None
    return _fold_casts(half)


class _Reader:
    """An ``onnxruntime.quantization.CalibrationDataReader`` (it has ``get_next``) over
    :class:`~edgeproto.runtimes.compile.CalibrationImages`."""

    def __init__(self, images, input_name: str) -> None:
        self.images, self.input_name = images, input_name
        self._it = iter(images)

    def get_next(self):
        x = next(self._it, None)
        return None if x is None else {self.input_name: x}

    def rewind(self):
        self._it = iter(self.images)

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item

    def __len__(self):
        return len(self.images)


CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
_WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _module_path(node: onnx.NodeProto) -> list[str]:
    """The PyTorch module names a dynamo-exported node came from (``namespace`` metadata), outermost first."""
    value = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
    parts = [c.split(":")[0].strip() for c in value.split("/")[1:]]
    return parts[:-1]  # the last entry is the aten op, not a module


def layer_groups(model: onnx.ModelProto, z: str | None = None) -> dict[str, list[str]]:
    """The quantization search's layer groups, in graph order: node names by group.

    A backbone node belongs to its block (``backbone.<container>.<index>``, from the exporter's
    module path), any other module's node to that module (``add_on``); nodes without a module path
    join the group of the weighted op (Conv/Gemm/MatMul) before them, and so does a block without a
    weighted op (a pooling). The prototype subgraph
    (:func:`prototype_subgraph`: the add-on activation, the prototype layer, pooling, last layer)
    is the one group ``prototypes``, last.
    """
    protos = prototype_subgraph(model, z)
    skip = set(protos)
    groups: dict[str, list[str]] = {}
    current = None
    for node in model.graph.node:
        if node.name in skip:
            continue
        path = _module_path(node)
        if path:
            current = path[min(2, len(path) - 1)] if path[0] == "backbone" else path[0]
        elif node.op_type in _WEIGHTED or current is None:
            current = node.name
        groups.setdefault(current, []).append(node.name)
    by_name = {n.name: n for n in model.graph.node}
    merged: dict[str, list[str]] = {}
    for name, nodes in groups.items():  # a block without a weighted op (a pooling) joins the one before
        if merged and not any(by_name[n].op_type in _WEIGHTED for n in nodes):
            merged[next(reversed(merged))].extend(nodes)
        else:
            merged[name] = list(nodes)
    merged["prototypes"] = protos
    return merged


def int8_graph(model: onnx.ModelProto, out: Path, guarded: list[str] | None, calibration, *,
               symmetric: bool = False, method: str = "minmax", exclude: list[str] | None = None,
               only: list[str] | None = None) -> dict:
    """Static QDQ int8 of ``model`` into ``out`` (per-channel weights), the ``guarded`` nodes excluded;
    ``symmetric``: zero points all 0 (what TensorRT requires); ``method``: the activation calibration
    (:data:`CALIBRATION_METHODS`); ``exclude``: more nodes kept fp32; ``only``: quantize just these
    nodes (the per-layer sensitivity search). ``guarded=None`` inlines the prototype function first."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise EdgeprotoError(f"unknown calibration method {method!r}; known: {', '.join(CALIBRATION_METHODS)}")
    if guarded is None:
        model = inline_prototypes(model)
    excluded = list(guarded or []) + list(exclude or [])
    options = {"format": "QDQ", "per_channel": True, "activation_type": "int8", "weight_type": "int8",
               "calibrate_method": CALIBRATION_METHODS[method], "symmetric": symmetric}
    if exclude:
        options["fp32_nodes"] = list(exclude)
    if only is not None:
        options["quantized_nodes"] = list(only)
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True} if symmetric else {}
    if method == "percentile":
        extra["CalibPercentile"] = 99.99
        options["percentile"] = 99.99
    try:
        with _quiet_quantizer(), tempfile.TemporaryDirectory(prefix="edgeproto-calib-") as tmp:
            cache = None
            if method == "entropy":
                cache = _entropy_ranges(model, calibration, Path(tmp))
                options["entropy_bins"] = {"histogram": ENTROPY_BINS, "quantized": ENTROPY_QUANTIZED_BINS}
            quantize_static(
                model, out, _Reader(calibration, model.graph.input[0].name) if cache is None else None,
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[method]),
                nodes_to_exclude=excluded, nodes_to_quantize=list(only) if only is not None else None,
                extra_options=extra or None, calibration_cache_path=cache,
            )
    except EdgeprotoError:
        raise
    except Exception as exc:
        raise EdgeprotoError(f"ONNX Runtime int8 quantization failed: {exc}") from None
    return options


ENTROPY_BINS, ENTROPY_QUANTIZED_BINS = 2048, 128


def _entropy_ranges(model: onnx.ModelProto, calibration, tmp: Path) -> Path:
    """Entropy (KL) calibration ranges with a 2048-bin histogram, saved as ONNX Runtime's calibration
    cache. ``quantize_static`` passes no bin count to its entropy calibrator, whose default of 128
    bins equals the 128 quantized bins: the search then has nothing to clip, and the ranges are
    MinMax's (measured here: byte-identical artifacts)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data

    source = tmp / "model.onnx"
    onnx.save_model(onnx.ModelProto.FromString(model.SerializeToString()), source, save_as_external_data=True)
    calibrator = create_calibrator(source, None, augmented_model_path=str(tmp / "augmented.onnx"),
                                   calibrate_method=CalibrationMethod.Entropy,
                                   extra_options={"num_bins": ENTROPY_BINS,
                                                  "num_quantized_bins": ENTROPY_QUANTIZED_BINS})
    calibrator.collect_data(_Reader(calibration, model.graph.input[0].name))
    cache = tmp / "ranges.json"
    save_tensors_data(calibrator.compute_data(), cache)
    del calibrator
    return cache


def build(bundle: Bundle, out_dir: Path, *, precision: str, guard: str, calibration=None,
          progress: bool = True, options: dict | None = None) -> dict:
    """Write ``out_dir/model.onnx`` for ``precision``; return the manifest entry's fields.

    ``options`` (int8, from ``compile --precision auto``): ``method`` (calibration), ``exclude``
    (more nodes kept fp32), ``only`` (quantize just these nodes)."""
    out = out_dir / "model.onnx"
    key = out_dir.name
    model = load_model(bundle)
    z = feature_input(model)
    guarded = prototype_subgraph(model, z) if guard == "prototypes" else None
    entry: dict = {"model": f"compiled/{key}/model.onnx"}
    if precision == "fp32":
        result = _fp32(bundle, out)
        kept = prototype_subgraph(result, z)
        entry["optimization"] = "onnxruntime basic (hardware independent, standard ops)"
    elif precision == "fp16":
        result = half_graph(model, guarded)
        onnx.save(result, out)
        kept = guarded or []
    elif precision == "int8":
        entry["quantization"] = int8_graph(model, out, guarded, calibration, **(options or {}))
        result = onnx.load(out)
        kept = guarded or []
    else:  # compile.py checks first
        raise EdgeprotoError(f"onnxruntime cannot compile precision {precision!r}")
    problems = guard_violations(result, kept)
    if problems:
        raise EdgeprotoError("the explanation guard did not hold: " + "; ".join(problems))
    missing = [n for n in OUTPUTS if n not in {o.name for o in result.graph.output}]
    if missing:
        raise EdgeprotoError(f"the compiled model lost outputs {missing}")
    entry["prototype_nodes_fp32"] = kept
    return entry
