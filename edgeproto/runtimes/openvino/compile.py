"""OpenVINO artifacts for :func:`edgeproto.runtimes.compile.compile_bundle` (no torch).

The bundle's ONNX model is read with :func:`edgeproto.runtimes.openvino.runner.read_model` (its
``ConversionExtension`` maps each ``edgeproto::<OpType>`` node to OpenVINO ops, since OpenVINO's ONNX
frontend does not expand model-local functions) and saved as IR ``model.xml`` + ``model.bin`` with
``compress_to_fp16=False`` (``ov.save_model`` would otherwise store fp16 weights).

- ``fp32`` / ``bf16`` / ``fp16``: the same fp32 IR; the precision is OpenVINO's
  ``INFERENCE_PRECISION_HINT`` (f32 / bf16 / f16), recorded in the manifest and applied by the
  runner. The hint covers the whole model, so at bf16/fp16 the explanation guard cannot keep the
  prototype ops fp32 (``prototype_nodes_fp32`` is empty and the entry says why).
- ``int8``: ``nncf.quantize`` (post-training, default preset, ``subset_size`` = the calibration
  images). Guarded: ``nncf.IgnoredScope(names=...)`` lists the prototype subgraph's OpenVINO ops --
  the activation that produces the prototype layer's input (its ONNX tensor name survives
  conversion), every op from there to the ``logits``/``scores``/``maps`` results, and the constant
  branches that only feed them (e.g. HyperPG's prototype normalisation). The saved IR is read
  back and checked: no FakeQuantize among or feeding those ops.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections import deque
from pathlib import Path

import onnx

from edgeproto.bundle import Bundle
from edgeproto.errors import EdgeprotoError

__all__ = ["build", "guard_violations", "prototype_ops"]

HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_SKIP = ("Constant", "Parameter", "Result")
_QUANT = ("FakeQuantize", "FakeConvert")
_NOT_BOUNDARY = ("Convolution", "GroupConvolution", "MatMul")


def _boundary(model, z: str):
    """The op producing the prototype layer's input tensor ``z`` (by name; else the nearest
    Sigmoid/Convolution upstream of the ``maps`` result)."""
    for op in model.get_ordered_ops():
        if any(z in out.get_names() for out in op.outputs()):
            return op
    maps = [r for r in model.get_results() if "maps" in r.input(0).get_source_output().get_names()]
    queue, seen = deque(maps), set()
    while queue:
        op = queue.popleft()
        if op.get_friendly_name() in seen:
            continue
        seen.add(op.get_friendly_name())
        if op.get_type_name() in ("Sigmoid", "Convolution"):
            return op
        queue.extend(i.get_source_output().get_node() for i in op.inputs())
    raise EdgeprotoError("cannot find the prototype layer's input in the OpenVINO model")


def prototype_ops(model, z: str) -> list:
    """The OpenVINO ops of the prototype subgraph (no Constants/Parameters/Results), boundary first.

    Everything reachable backwards from the results without passing through the boundary op, and
    nothing the boundary itself depends on (the backbone)."""
    boundary = _boundary(model, z)
    backbone, queue = set(), deque([boundary])
    while queue:
        for inp in queue.popleft().inputs():
            src = inp.get_source_output().get_node()
            if src.get_friendly_name() not in backbone:
                backbone.add(src.get_friendly_name())
                queue.append(src)
    ops, seen, queue = [], set(), deque(model.get_results())
    while queue:
        op = queue.popleft()
        name = op.get_friendly_name()
        if name in seen or name in backbone:
            continue
        seen.add(name)
        ops.append(op)
        if op is boundary or name == boundary.get_friendly_name():
            continue
        queue.extend(i.get_source_output().get_node() for i in op.inputs())
    b = boundary.get_friendly_name()
    keep = [op for op in ops if op.get_type_name() not in _SKIP]
    if boundary.get_type_name() in _NOT_BOUNDARY:
        keep = [op for op in keep if op.get_friendly_name() != b]
    order = {op.get_friendly_name(): i for i, op in enumerate(model.get_ordered_ops())}
    keep.sort(key=lambda op: (op.get_friendly_name() != b, order.get(op.get_friendly_name(), 0)))
    return keep


def guard_violations(model, names: list[str]) -> list[str]:
    """Guarded ops that are quantized: a FakeQuantize/FakeConvert among them, or feeding one of
    them (the first, boundary op may take the quantized backbone's output)."""
    by_name = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    problems = []
    for i, name in enumerate(names):
        op = by_name.get(name)
        if op is None:
            problems.append(f"{name}: missing from the IR")
            continue
        if op.get_type_name() in _QUANT:
            problems.append(f"{name}: is a {op.get_type_name()}")
        for inp in op.inputs():
            src = inp.get_source_output().get_node()
            if src.get_type_name() in _QUANT and (i > 0 or _constant_fed(src)):
                problems.append(f"{name}: input from {src.get_type_name()} {src.get_friendly_name()}")
    return problems


def _constant_fed(op) -> bool:
    """A FakeQuantize on a weight (its data input is a Constant, possibly through a Convert)."""
    src = op.input(0).get_source_output().get_node()
    while src.get_type_name() == "Convert":
        src = src.input(0).get_source_output().get_node()
    return src.get_type_name() == "Constant"


@contextlib.contextmanager
def _quiet_nncf(progress: bool):
    """NNCF logs one INFO line per op it decides not to quantize: keep its warnings only. Its
    progress bar (rich, on stdout) is moved to stderr, like every progress bar of edgeproto, and shown only
    when ``progress``."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(contextlib.redirect_stdout(sys.stderr if progress else io.StringIO()))
            yield
    finally:
        logger.setLevel(level)


def _feature_input(bundle: Bundle) -> str:
    from edgeproto.runtimes.onnxruntime.compile import feature_input

    try:
        model = onnx.load(bundle.path(bundle.manifest["model"]["file"]), load_external_data=False)
    except Exception as exc:
        raise EdgeprotoError(f"cannot read the bundle's ONNX model: {exc}") from None
    return feature_input(model)


def build(bundle: Bundle, out_dir: Path, *, precision: str, guard: str, calibration=None,
          progress: bool = True, options: dict | None = None) -> dict:
    """Write ``out_dir/model.xml`` (+ ``.bin``) for ``precision``; return the manifest entry's fields.

    ``options`` (int8, from ``compile --precision auto``): ``accuracy_control`` = ``{"items": [...],
    "validation_fn": f, "max_drop": d, "metric": "..."}`` runs ``nncf.quantize_with_accuracy_control``
    (NNCF reverts the ops that cost most of the metric to fp32 until the drop is at most ``d``)."""
    import openvino as ov

    from edgeproto.runtimes.openvino.runner import read_model

    z = _feature_input(bundle)
    model = read_model(bundle.path(bundle.manifest["model"]["file"]))
    guarded = [op.get_friendly_name() for op in prototype_ops(model, z)]
    key = out_dir.name
    out = out_dir / "model.xml"
    entry: dict = {"model": f"compiled/{key}/model.xml"}
    if precision in HINTS:
        entry["inference_precision"] = precision  # the runner's vocabulary (fp32 / bf16 / fp16)
        entry["inference_precision_hint"] = HINTS[precision]  # OpenVINO's name for it
        kept = guarded if precision == "fp32" else []
        if precision != "fp32" and guard == "prototypes":
            entry["guard_note"] = (f"OpenVINO's {HINTS[precision]} inference-precision hint applies to the whole "
                                   "model: the prototype ops run at that precision too")
        result = model
    elif precision == "int8":
        import nncf

        scope = nncf.IgnoredScope(names=guarded) if guard == "prototypes" else None
        control = (options or {}).get("accuracy_control")
        try:
            with _quiet_nncf(progress):
                if control:
                    result = nncf.quantize_with_accuracy_control(
                        model, nncf.Dataset(calibration.quiet()), nncf.Dataset(control["items"], control.get("transform")),
                        control["validation_fn"], max_drop=float(control["max_drop"]),
                        drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calibration), ignored_scope=scope)
                else:
                    result = nncf.quantize(model, nncf.Dataset(calibration.quiet()), subset_size=len(calibration),
                                           ignored_scope=scope)
        except EdgeprotoError:
            raise
        except Exception as exc:
            raise EdgeprotoError(f"NNCF int8 quantization failed: {exc}") from None
        entry["inference_precision"] = "fp32"  # FakeQuantize ops carry the int8; the rest runs f32
        entry["inference_precision_hint"] = "f32"
        entry["quantization"] = {"tool": "nncf", "version": nncf.__version__, "preset": "performance",
                                 "ignored_scope": "prototype subgraph" if scope else None}
        if control:
            entry["quantization"]["accuracy_control"] = {"metric": control.get("metric"),
                                                         "max_drop": float(control["max_drop"]),
                                                         "drop_type": "absolute",
                                                         "validation_images": len(control["items"])}
        entry["quantization"]["fake_quantize_ops"] = sum(
            op.get_type_name() == "FakeQuantize" for op in result.get_ordered_ops())
        kept = guarded if guard == "prototypes" else []
    else:  # compile.py checks first
        raise EdgeprotoError(f"openvino cannot compile precision {precision!r}")
    try:
        ov.save_model(result, out, compress_to_fp16=False)
        saved = ov.Core().read_model(str(out))
    except Exception as exc:
        raise EdgeprotoError(f"cannot save the OpenVINO IR: {exc}") from None
    problems = guard_violations(saved, kept)
    if problems:
        raise EdgeprotoError("the explanation guard did not hold: " + "; ".join(problems))
    entry["prototype_nodes_fp32"] = kept
    return entry
