"""``validate --localize``: where along the graph does an artifact part from the fp32 model?

Polygraphy-style layer-wise comparison: intermediate tensors are marked as outputs in the reference
(the bundle's fp32 ``model.onnx``, run by ONNX Runtime) and in the target's artifact (the ONNX graph
for ONNX Runtime and the TensorRT-ready graph; the OpenVINO IR through ``Model.add_outputs``), both
run on the same images, and each tensor of the target is compared with the reference's. The tensors
(in graph order): the output of every backbone block and of the add-on convolutions (the layer
groups of :func:`edgeproto.runtimes.onnxruntime.compile.layer_groups`), the feature input of the
prototype layer (the add-on activation), then ``maps`` (the prototype layer's output), ``scores`` and
``logits``.

Per tensor: :func:`edgeproto.outputs.tensor_diff` (max / mean / p99 absolute, relative), the
relative L2 error ``‖t − r‖ / ‖r‖``, the fraction of elements within ``atol + rtol·|r|`` (the golden
tolerance of the precision, like Polygraphy's per-output comparison) and the growth of the relative
error over the previous tensor. A tensor *diverges* when it is not finite or its relative L2 error
exceeds ``limit`` (default by precision, :data:`LIMITS`: quantization noise of a healthy int8
backbone stays below it; a quantized prototype layer does not); the first one that does is
``first_divergence``. Tensors the target's graph does not hold under the same name (fused away)
are listed as ``absent``. ``top1_prototype_agreement`` on the same images says whether the
explanation changed even where no tensor diverged (HyperPg's log-likelihood scores lie close
together: a few per cent of error reorders them).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edgeproto.bundle import Bundle
from edgeproto.errors import EdgeprotoError
from edgeproto.outputs import OUTPUTS, golden_tolerance, tensor_diff
from edgeproto.runtimes import artifact_key, get_runtime

__all__ = ["LIMITS", "localize", "watched_tensors"]

# relative L2 error above which a tensor counts as diverged, per artifact precision
LIMITS = {"fp32": 1e-3, "fp16": 0.1, "bf16": 0.1, "int8": 0.5, "auto": 0.5}


def watched_tensors(model) -> list[tuple[str, str]]:
    """``(tensor, what it is)`` in graph order: block outputs, the prototype layer's input, outputs."""
    from edgeproto.runtimes.onnxruntime.compile import feature_input, layer_groups

    z = feature_input(model)
    producers = {o: i for i, n in enumerate(model.graph.node) for o in n.output}
    by_name = {n.name: n for n in model.graph.node}
    out: list[tuple[str, str]] = []
    for group, nodes in layer_groups(model, z).items():
        if group == "prototypes":
            continue
        last = by_name[nodes[-1]].output[0]
        out.append((last, f"{group} output"))
    out.append((z, "feature input of the prototype layer (add-on output)"))
    out += [("maps", "prototype layer output (similarity maps)"), ("scores", "scores (max-pooled maps)"),
            ("logits", "logits (last layer)")]
    seen, ordered = set(), []
    for name, what in sorted(out, key=lambda t: producers.get(t[0], len(producers))):
        if name not in seen:
            seen.add(name)
            ordered.append((name, what))
    return ordered


def _with_outputs(model, names: list[str]):
    """A copy of an ONNX model with ``names`` (those it holds) as extra graph outputs, and for each
    kept name the tensor really marked: in a QDQ graph the value the next layer sees, the
    ``DequantizeLinear(QuantizeLinear(t))`` of ``t`` (ONNX Runtime's quantizer drops a Relu after a
    quantized Conv and lets the activation's int8 range clip instead, so ``t`` itself is pre-clip)."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    try:
        typed = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 -- types are a best effort (float otherwise)
        typed = model
    types = {v.name: v.type.tensor_type.elem_type for v in typed.graph.value_info}
    produced = {o for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    have = {o.name for o in model.graph.output}
    kept: dict[str, str] = {}
    for name in names:
        marked = name
        q = next((c for c in consumers.get(name, []) if c.op_type == "QuantizeLinear"), None)
        if q is not None:
            dq = next((c for c in consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear"), None)
            marked = dq.output[0] if dq is not None else name
        if marked in have:
            kept[name] = marked
        elif marked in produced:
            model.graph.output.append(onnx.helper.make_tensor_value_info(
                marked, types.get(marked) or onnx.TensorProto.FLOAT, None))
            have.add(marked)
            kept[name] = marked
    return model, kept


def _run_onnx(model, names: list[str], images: np.ndarray, threads: int) -> dict[str, np.ndarray]:
    from edgeproto.runtimes.onnxruntime.runner import OnnxRuntimeRunner

    marked, kept = _with_outputs(model, names)
    runner = OnnxRuntimeRunner(marked.SerializeToString(), threads=threads, providers=["CPUExecutionProvider"])
    out = runner.run(images)
    return {n: np.asarray(out[m], dtype=np.float64) for n, m in kept.items()}


def _run_openvino(path: Path, precision: str, names: list[str], images: np.ndarray, device, threads: int):
    import openvino as ov

    from edgeproto.runtimes.openvino.runner import OpenVinoRunner, read_model

    model = read_model(path)
    known = {n: out for op in model.get_ordered_ops() for out in op.outputs() for n in out.get_names()}
    kept = [n for n in names if n in known]
    model.add_outputs([known[n] for n in kept if n not in OUTPUTS])
    with tempfile.TemporaryDirectory(prefix="edgeproto-localize-") as tmp:
        xml = Path(tmp) / "model.xml"
        ov.save_model(model, xml, compress_to_fp16=False)
        runner = OpenVinoRunner(xml, precision=precision, device=device, threads=threads)
        ports = {p.get_any_name(): p.get_names() for p in runner.compiled.outputs}
        out = runner.run(images)
        runner.close()
    values = {}
    for name in kept:
        port = next((p for p, all_names in ports.items() if name in all_names), None)
        if port is not None and port in out:
            values[name] = np.asarray(out[port], dtype=np.float64)
    return values


def _artifact(bundle: Bundle, target: str, precision: str, guard: str) -> tuple[Path, str, dict | None]:
    spec = get_runtime(target)
    if spec.host_only:
        raise EdgeprotoError("--localize compares a runtime's artifact with the fp32 ONNX model; "
                             f"{target!r} is the PyTorch reference itself")
    entry = bundle.manifest.get("compiled", {}).get(artifact_key(spec.artifact_target, precision, guard))
    if entry is not None:
        return bundle.path(entry["model"]), entry.get("inference_precision", precision), entry
    if precision == "fp32" and not spec.requires_compile:
        return bundle.path(bundle.manifest["model"]["file"]), "fp32", None
    raise EdgeprotoError(f"bundle {bundle.root} has no {spec.artifact_target} {precision} artifact (guard={guard}) "
                         f"to localize: compile it first")


def localize(bundle: Bundle, images: np.ndarray, *, target: str, precision: str = "fp32",
             guard: str = "prototypes", limit: float | None = None, device: str | None = None,
             threads: int = 0, artifact: str | Path | None = None) -> dict:
    """Compare the target artifact's intermediate tensors with the fp32 reference's on ``images``
    (see the module docstring); ``{"tensors": [...], "first_divergence": ... | None, ...}``.
    ``artifact``: an ONNX / IR file to compare instead of the bundle's (target, precision, guard) one."""
    import onnx

    limit = LIMITS.get(precision, 0.5) if limit is None else float(limit)
    if not limit > 0:
        raise EdgeprotoError(f"the localize limit must be a relative error > 0, got {limit!r}")
    if artifact is not None:
        path, inference_precision = Path(artifact), precision
        if not path.is_file():
            raise EdgeprotoError(f"--localize: no artifact file {path}")
    else:
        path, inference_precision, _ = _artifact(bundle, target, precision, guard)
    try:
        reference_model = onnx.load(bundle.path(bundle.manifest["model"]["file"]))
    except Exception as exc:  # noqa: BLE001
        raise EdgeprotoError(f"cannot read the bundle's ONNX model: {exc}") from None
    watched = watched_tensors(reference_model)
    names = [n for n, _ in watched]
    images = np.ascontiguousarray(images, dtype=np.float32)
    ref = _run_onnx(reference_model, names, images, threads)
    spec = get_runtime(target)
    if path.suffix == ".xml" or spec.module == "openvino":
        act = _run_openvino(path, inference_precision, names, images, device, threads)
    else:
        try:
            act = _run_onnx(onnx.load(path), names, images, threads)
        except EdgeprotoError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise EdgeprotoError(f"cannot read the artifact {path}: {exc}") from None
    tol = golden_tolerance(precision)
    rows, first, previous = [], None, None
    for name, what in watched:
        row: dict = {"tensor": name, "what": what}
        if name not in ref or name not in act or np.shape(ref[name]) != np.shape(act[name]):
            row["status"] = "absent"
            rows.append(row)
            continue
        r, a = ref[name], act[name]
        row.update(tensor_diff(r, a))
        norm = float(np.linalg.norm(r))
        finite = bool(np.isfinite(a).all())
        rel = float(np.linalg.norm(a - r) / norm) if finite and norm > 0 else (0.0 if finite else float("inf"))
        row["rel_l2"] = rel
        row["within_tolerance"] = float(np.mean(np.abs(a - r) <= tol["atol"] + tol["rtol"] * np.abs(r))) \
            if finite else 0.0
        row["growth"] = (rel / previous) if previous and np.isfinite(rel) else None
        previous = rel if np.isfinite(rel) and rel > 0 else previous
        row["status"] = "diverged" if (not finite or rel > limit) else "ok"
        if row["status"] == "diverged" and first is None:
            first = {"tensor": name, "what": what, "rel_l2": rel, "finite": finite}
        rows.append(row)
    agreement = None
    if all(k in ref and k in act for k in ("logits", "scores")):
        from edgeproto.ranking import top1_agreement

        agreement = float(top1_agreement({k: ref[k] for k in ("logits", "scores")},
                                         {k: act[k] for k in ("logits", "scores")}, bundle.prototype_classes()))
    return {"target": target, "precision": precision, "guard": guard, "top1_prototype_agreement": agreement,
            "artifact": str(path.resolve().relative_to(bundle.root.resolve()))
            if path.resolve().is_relative_to(bundle.root.resolve()) else str(path),
            "reference": "the bundle's fp32 model.onnx on ONNX Runtime (CPU)", "images": int(len(images)),
            "limit_rel_l2": limit, "tolerance": {"atol": tol["atol"], "rtol": tol["rtol"]},
            "tensors": rows, "first_divergence": first}
