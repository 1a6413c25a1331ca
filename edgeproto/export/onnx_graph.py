"""PyTorch prototype model -> ONNX graph, keeping each prototype layer as one named node.

How it works (torch 2.13 dynamo exporter, onnxscript 0.7, onnx 1.23):

- Every family's ONNX op ``edgeproto::<op_type>`` gets an ``onnx.defs.OpSchema`` (inputs and float
  attributes read off the family's onnxscript function, plus the optional string attributes
  ``plugin_namespace`` / ``plugin_version``, and a shape-inference function
  (B,D,H,W) + (M,...) -> (B,M,H,W)), registered once per process.
- ``torch.onnx.export(..., dynamo=True, custom_translation_table=...)`` translates each
  ``torch.ops.edgeproto.<name>`` call into that *opaque* node. Handing the exporter the onnxscript
  function itself does not work: its version-conversion step (always run, since the compat API
  always passes an opset) inlines every model-local function, and in torch 2.13 that inlining
  even fails on the function call node.
- The op's float arguments become node attributes; the parameters stay initializers named by
  their state-dict key (``prototype_layer.prototypes``). The exporter's optimizer
  (``optimize=True``) cannot see through the opaque node, so nothing is folded into it.
- Then, by ``ops``:
  ``"function"``: the family's FunctionProto (body opset rewritten to the model's) is added to
  ``model.functions``; checkers, ONNX Runtime and ``onnx.inliner`` understand it.
  ``"inline"``: the functions are expanded with ``onnx.inliner.inline_local_functions``; standard
  ops only. ``"plugin"``: the bare node, tagged ``plugin_namespace="edgeproto"`` and
  ``plugin_version="1"`` (what TensorRT's ONNX parser uses to look up a plugin) and no body; it
  passes ``onnx.checker.check_model(full_check=True)``: with the schema registered (this process,
  or any that calls :func:`register_schemas`) shape inference goes through the node via the
  schema's inference function; without it the checker skips the unknown domain and keeps the
  declared output shapes. Plain ONNX Runtime cannot run this variant (no kernel, no body).
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import onnx
import onnx.defs
import onnx.helper
import onnx.inliner
import onnx.numpy_helper

from edgeproto.errors import EdgeprotoError
from edgeproto.layers import ONNX_DOMAIN, ONNX_DOMAIN_VERSION, PrototypeFamily, families, prototype_nodes
from edgeproto.outputs import OUTPUTS

__all__ = [
    "INPUT_NAME",
    "OPS_MODES",
    "PLUGIN_NAMESPACE",
    "PLUGIN_VERSION",
    "SUPPORTED_OPSETS",
    "export_onnx",
    "function_proto",
    "register_schemas",
]

INPUT_NAME = "image"
BATCH_DIM = "batch"
OPS_MODES = ("function", "inline", "plugin")
PLUGIN_NAMESPACE = ONNX_DOMAIN
PLUGIN_VERSION = str(ONNX_DOMAIN_VERSION)
# Verified with all four families (exporter, checker full_check, ONNX Runtime 1.32 numerics).
# The exporter builds opset 18 and converts; going down it relies on onnx's C version converter,
# which fails below 17 on common graphs (e.g. no Identity adapter 16 -> 15), and a graph it cannot
# convert makes export_onnx raise. 17 is TensorRT 8.x's ceiling; 26+ is past ORT 1.32.
SUPPORTED_OPSETS = range(17, 26)
_FLOAT_TYPES = ["tensor(float)", "tensor(float16)", "tensor(double)", "tensor(bfloat16)"]


# --------------------------------------------------------------------------- schemas / functions


def function_proto(family: PrototypeFamily, opset: int = 18) -> onnx.FunctionProto:
    """The family's ONNX function (domain ``edgeproto``, name ``op_type``), body at ``opset``."""
    fp = onnx.FunctionProto()
    fp.CopyFrom(family.onnx_function.to_function_proto())
    if fp.domain != ONNX_DOMAIN or fp.name != family.op_type:
        raise EdgeprotoError(
            f"family {family.name!r}: ONNX function is {fp.domain}::{fp.name}, "
            f"expected {ONNX_DOMAIN}::{family.op_type}"
        )
    authored = {imp.domain: imp.version for imp in fp.opset_import}.get("", opset)
    _adapt_body(family, fp, authored, opset)
    del fp.opset_import[:]
    fp.opset_import.append(onnx.helper.make_opsetid("", opset))
    if any(n.domain == ONNX_DOMAIN for n in fp.node):
        fp.opset_import.append(onnx.helper.make_opsetid(ONNX_DOMAIN, ONNX_DOMAIN_VERSION))
    return fp


def _io_signature(schema: onnx.defs.OpSchema):
    return (
        [(p.name, p.option) for p in schema.inputs],
        [(p.name, p.option) for p in schema.outputs],
    )


def _opset_error(family: PrototypeFamily, opset: int, why: str) -> EdgeprotoError:
    return EdgeprotoError(
        f"opset {opset} not supported: {family.op_type}'s ONNX body {why} "
        f"(supported opsets: {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1})"
    )


def _constant_ints(fp: onnx.FunctionProto, name: str) -> list[int] | None:
    """The int list a body ``Constant`` node produces as ``name`` (None if not such a node)."""
    for node in fp.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and name in node.output:
            for attr in node.attribute:
                if attr.name == "value_ints":
                    return list(attr.ints)
                if attr.name == "value" and not attr.ref_attr_name:
                    return [int(v) for v in onnx.numpy_helper.to_array(attr.t).reshape(-1)]
    return None


def _adapt_body(family: PrototypeFamily, fp: onnx.FunctionProto, authored: int, opset: int):
    """Make the body valid at ``opset`` in place. Every standard op must exist there with the
    inputs it was written for (revisions that only add types or optional attributes are fine).
    The one rewrite: going below 18, Reduce* ops take ``axes`` as an attribute again, so a
    constant ``axes`` input is turned back into the attribute."""
    for node in fp.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            target = onnx.defs.get_schema(node.op_type, opset, "")
            source = onnx.defs.get_schema(node.op_type, authored, "")
        except Exception:  # onnx's SchemaError: op not defined at that version
            raise _opset_error(family, opset, f"uses {node.op_type}, undefined there") from None
        if _io_signature(target) != _io_signature(source):
            axes_moved = (
                [p.name for p in source.inputs][1:2] == ["axes"]
                and [p.name for p in target.inputs] == ["data"]
                and "axes" in target.attributes
            )
            if not axes_moved:
                raise _opset_error(family, opset, f"uses {node.op_type}, whose inputs differ there")
            if len(node.input) > 1 and node.input[1]:
                axes = _constant_ints(fp, node.input[1])
                if axes is None:
                    raise _opset_error(family, opset, f"has {node.op_type} with non-constant axes")
                node.attribute.append(onnx.helper.make_attribute("axes", axes))
            del node.input[1:]
        unknown = [a.name for a in node.attribute if a.name not in target.attributes]
        if unknown:
            raise _opset_error(family, opset, f"sets {node.op_type} attributes {unknown}, absent there")
    # drop body nodes left without consumers by the rewrite (the axes constants)
    used = {i for n in fp.node for i in n.input} | set(fp.output)
    keep = [n for n in fp.node if any(o in used for o in n.output)]
    if len(keep) != len(fp.node):
        del fp.node[:]
        fp.node.extend(keep)


def _infer_similarity_shape(ctx) -> None:
    """(B,D,H,W) features + parameters whose first dim is M -> (B,M,H,W), dtype of z."""
    z_type = ctx.get_input_type(0)
    out = onnx.TypeProto()
    out.tensor_type.elem_type = z_type.tensor_type.elem_type
    z_shape = z_type.tensor_type.shape if z_type.tensor_type.HasField("shape") else None
    if z_shape is not None and len(z_shape.dim) == 4:
        m_dim = onnx.TensorShapeProto.Dimension()
        if ctx.get_num_inputs() > 1 and ctx.has_input(1):
            p_type = ctx.get_input_type(1)
            if p_type.tensor_type.HasField("shape") and len(p_type.tensor_type.shape.dim) >= 1:
                m_dim.CopyFrom(p_type.tensor_type.shape.dim[0])
        shape = out.tensor_type.shape
        for dim in (z_shape.dim[0], m_dim, z_shape.dim[2], z_shape.dim[3]):
            shape.dim.add().CopyFrom(dim)
    ctx.set_output_type(0, out)


def _build_schema(family: PrototypeFamily) -> onnx.defs.OpSchema:
    fp = family.onnx_function.to_function_proto()
    formal = onnx.defs.OpSchema.FormalParameter
    attrs = []
    defaults = {a.name: a for a in fp.attribute_proto}
    for name in list(fp.attribute) + [a.name for a in fp.attribute_proto]:
        if name in family.attrs:
            default = onnx.helper.make_attribute(name, float(family.attrs[name]))
        elif name in defaults:
            default = defaults[name]
        else:
            attrs.append(onnx.defs.OpSchema.Attribute(name, onnx.defs.OpSchema.AttrType.FLOAT))
            continue
        attrs.append(onnx.defs.OpSchema.Attribute(name, default, f"{family.op_type} {name}"))
    for name in ("plugin_namespace", "plugin_version"):
        attrs.append(
            onnx.defs.OpSchema.Attribute(
                name, onnx.defs.OpSchema.AttrType.STRING, "TensorRT plugin lookup", required=False
            )
        )
    schema = onnx.defs.OpSchema(
        family.op_type,
        ONNX_DOMAIN,
        ONNX_DOMAIN_VERSION,
        family.summary or family.op_type,
        inputs=[formal(name, "T") for name in fp.input],
        outputs=[formal(name, "T") for name in fp.output],
        type_constraints=[("T", _FLOAT_TYPES, "floating-point tensors")],
        attributes=attrs,
    )
    schema.set_type_and_shape_inference_function(_infer_similarity_shape)
    return schema


_SCHEMAS: dict[str, onnx.defs.OpSchema] = {}


def register_schemas() -> dict[str, onnx.defs.OpSchema]:
    """Register an ``OpSchema`` for every family's ``edgeproto`` op (idempotent). Returns them by
    op type. Needed so onnxscript can emit the op and the ONNX checker accepts it."""
    for family in families().values():
        if family.op_type in _SCHEMAS:
            continue
        if onnx.defs.has(family.op_type, ONNX_DOMAIN):
            existing = onnx.defs.get_schema(family.op_type, ONNX_DOMAIN_VERSION, ONNX_DOMAIN)
            if {"plugin_namespace", "plugin_version"} <= set(existing.attributes):
                _SCHEMAS[family.op_type] = existing
                continue
            # someone registered a narrower schema: replace it with ours (a superset)
            onnx.defs.deregister_schema(family.op_type, existing.since_version, ONNX_DOMAIN)
        schema = _build_schema(family)
        onnx.defs.register_schema(schema)
        _SCHEMAS[family.op_type] = schema
    return dict(_SCHEMAS)


# --------------------------------------------------------------------------- torch side


def _translation(family: PrototypeFamily, schema: onnx.defs.OpSchema):
    """(torch op overload, onnxscript translation emitting the opaque edgeproto node)."""
    import torch
    from onnxscript.values import Op, Opset

    family.torch_module  # noqa: B018  (importing it registers torch.ops.edgeproto.<name>)
    overload = getattr(torch.ops.edgeproto, family.name).default
    arg_names = [a.name for a in overload._schema.arguments]
    n_tensors = 1 + len(family.param_names)
    tensor_names, attr_names = arg_names[:n_tensors], arg_names[n_tensors:]
    unknown = [n for n in attr_names if n not in family.attrs]
    if unknown:
        raise EdgeprotoError(
            f"torch op edgeproto::{family.name} has arguments {unknown} that family "
            f"{family.name!r} does not declare as ONNX attributes"
        )
    onnx_op = Op(Opset(ONNX_DOMAIN, ONNX_DOMAIN_VERSION), family.op_type, schema)

    def translate(*args, **kwargs):
        bound = dict(zip(arg_names, args))
        bound.update(kwargs)
        tensors = [bound[n] for n in tensor_names]
        attrs = {n: float(bound.get(n, family.attrs[n])) for n in attr_names}
        return onnx_op(*tensors, **attrs)

    translate.__name__ = f"edgeproto_{family.name}"
    return overload, translate


def _tuple_outputs(model):
    """A module that shares ``model``'s parameters (same names) but returns
    (logits, scores, maps), so output order never depends on the dict's insertion order."""
    import torch

    class _Outputs(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self._modules = inner._modules
            self._parameters = inner._parameters
            self._buffers = inner._buffers
            self._non_persistent_buffers_set = inner._non_persistent_buffers_set
            object.__setattr__(self, "_inner", inner)

        def forward(self, image):
            out = self._inner(image)
            if not isinstance(out, dict) or any(k not in out for k in OUTPUTS):
                raise EdgeprotoError(
                    f"model must return a dict with keys {list(OUTPUTS)}, got "
                    f"{sorted(out) if isinstance(out, dict) else type(out).__name__}"
                )
            return tuple(out[k] for k in OUTPUTS)

    return _Outputs(model)


def _torch_export(model, example, opset: int) -> onnx.ModelProto:
    import torch

    schemas = register_schemas()
    table = dict(_translation(f, schemas[f.op_type]) for f in families().values())
    if example.dim() < 1:
        raise EdgeprotoError("example must be a batch of images (B,C,H,W)")
    if example.shape[0] < 2:  # torch.export specialises a size-1 dim; 2 keeps batch symbolic
        example = example.expand(2, *example.shape[1:]).contiguous()
    modes = {m: m.training for m in model.modules()}
    model.eval()
    wrapper = _tuple_outputs(model).eval()
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # e.g. "torchvision is not installed" notices
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch-internal pytree deprecation
            program = torch.onnx.export(
                wrapper,
                (example,),
                dynamo=True,
                custom_translation_table=table,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUTS),
                dynamic_shapes=({0: torch.export.Dim(BATCH_DIM)},),
                opset_version=opset,
                optimize=True,
                verbose=False,
                report=False,
            )
    except Exception as exc:  # surface our own error (e.g. wrong outputs) from torch's wrapping
        cause = exc
        while cause is not None and not isinstance(cause, EdgeprotoError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise EdgeprotoError(str(cause)) from exc
        raise
    finally:
        exporter_log.setLevel(level)
        for module, training in modes.items():
            module.training = training
    return program.model_proto


# --------------------------------------------------------------------------- graph surgery


def _set_opset_imports(model: onnx.ModelProto, opset: int, with_domain: bool) -> None:
    keep = [i for i in model.opset_import if i.domain not in ("", "ai.onnx", ONNX_DOMAIN)]
    del model.opset_import[:]
    model.opset_import.append(onnx.helper.make_opsetid("", opset))
    if with_domain:
        model.opset_import.append(onnx.helper.make_opsetid(ONNX_DOMAIN, ONNX_DOMAIN_VERSION))
    model.opset_import.extend(keep)


def _finish(model: onnx.ModelProto, ops: str, opset: int) -> onnx.ModelProto:
    by_type = {f.op_type: f for f in families().values()}
    used = []
    for node in prototype_nodes(model):
        if node.op_type not in by_type:
            raise EdgeprotoError(f"unknown edgeproto op {node.op_type!r} in exported graph")
        if node.op_type not in used:
            used.append(node.op_type)
    if not used:
        raise EdgeprotoError(
            "the exported graph has no prototype layer (no torch.ops.edgeproto.* call reached)"
        )
    # drop any function the exporter may have attached for our domain; we add ours below
    kept = [f for f in model.functions if f.domain != ONNX_DOMAIN]
    del model.functions[:]
    model.functions.extend(kept)

    if ops == "plugin":
        for node in prototype_nodes(model):
            for attr in [a for a in node.attribute if a.name.startswith("plugin_")]:
                node.attribute.remove(attr)
            node.attribute.extend(
                [
                    onnx.helper.make_attribute("plugin_namespace", PLUGIN_NAMESPACE),
                    onnx.helper.make_attribute("plugin_version", PLUGIN_VERSION),
                ]
            )
        _set_opset_imports(model, opset, with_domain=True)
        return model

    model.functions.extend(function_proto(by_type[t], opset) for t in used)
    _set_opset_imports(model, opset, with_domain=True)
    if ops == "inline":
        model = onnx.inliner.inline_local_functions(model)
        if prototype_nodes(model):
            raise EdgeprotoError("inlining left edgeproto nodes in the graph")
        _set_opset_imports(model, opset, with_domain=False)
    return model


def _warn_unnamed_params(model, onnx_model: onnx.ModelProto) -> None:
    """Warn when a prototype node's parameter input is not a model parameter/buffer: the model
    transformed it before the op and the exporter's optimizer folded that into a new constant."""
    names = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    for node in prototype_nodes(onnx_model):
        odd = [i for i in node.input[1:] if i not in names]
        if odd:
            warnings.warn(
                f"{node.op_type} inputs {odd} are not model parameters (computed from them "
                "before the op and folded); pass the nn.Parameters to the op directly to keep "
                "readable initializer names",
                stacklevel=3,
            )


def _save_atomic(model: onnx.ModelProto, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)  # mkstemp makes it 0600
        with os.fdopen(fd, "wb") as fh:
            fh.write(model.SerializeToString())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# --------------------------------------------------------------------------- public entry point


def export_onnx(model, example, path: str | Path, *, ops: str = "function", opset: int = 18):
    """Export a prototype model to ONNX at ``path`` (written atomically) and return the model.

    ``model(image)`` must return ``{"logits": (B,C), "scores": (B,M), "maps": (B,M,H,W)}`` and call
    ``torch.ops.edgeproto.<family>`` once per prototype layer. The graph has input ``image``
    (dynamic batch dim ``batch``) and outputs ``logits``, ``scores``, ``maps``.

    ``ops``: ``"function"`` -- one ``edgeproto::<op_type>`` node per prototype layer plus its
    FunctionProto (standard-op body), runs in plain ONNX Runtime; ``"inline"`` -- standard ops
    only; ``"plugin"`` -- the bare custom node with TensorRT ``plugin_namespace`` /
    ``plugin_version`` attributes and no function (needs a plugin to run).
    ``opset``: default-domain opset, one of ``SUPPORTED_OPSETS`` (17..25).
    """
    if ops not in OPS_MODES:
        raise EdgeprotoError(f"ops must be one of {', '.join(OPS_MODES)}; got {ops!r}")
    if not isinstance(opset, int) or opset not in SUPPORTED_OPSETS:
        raise EdgeprotoError(
            f"opset {opset!r} not supported: the exporter and the prototype ONNX functions are "
            f"verified for opsets {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}"
        )
    for family in families().values():  # reject before the (slow) export
        function_proto(family, opset)

    onnx_model = _torch_export(model, example, opset)
    got = {i.domain: i.version for i in onnx_model.opset_import}.get("", None)
    if got != opset:  # the exporter keeps its own opset when version conversion fails
        raise EdgeprotoError(f"could not convert the exported graph to opset {opset} (got {got})")
    _warn_unnamed_params(model, onnx_model)
    onnx_model = _finish(onnx_model, ops, opset)
    onnx.checker.check_model(onnx_model, full_check=True)
    _save_atomic(onnx_model, Path(path))
    return onnx_model
