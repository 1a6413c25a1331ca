"""OpenVINO backend: read an ONNX bundle model (or an OpenVINO IR) and run batches of numpy arrays.

OpenVINO's ONNX frontend does not expand model-local functions, so every prototype layer
``edgeproto::<OpType>`` is mapped by a ``ConversionExtension`` built from its family's
``edgeproto/layers/<family>/openvino.py`` converter (loaded lazily). ``--ops inline`` models need
no extension; IR ``.xml`` files were converted already.

OpenVINO on CPUs with bf16 (AMX/AVX512-BF16) runs bf16 by default, which moves ProtoPNet scores by
~1; this runner always sets ``INFERENCE_PRECISION_HINT`` (f32 unless bf16/fp16 is asked for) and
reports the precision OpenVINO really compiled with. Imports no torch.
"""

from __future__ import annotations

import importlib
import weakref
from pathlib import Path

import numpy as np

from edgeproto.errors import EdgeprotoError
from edgeproto.runner_contract import runner_info
from edgeproto.layers import ONNX_DOMAIN, families

# requested precision -> INFERENCE_PRECISION_HINT (int8 IRs carry their own FakeQuantize ops)
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}
_FROM_OV = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}
DEVICES = ("CPU", "GPU", "NPU", "AUTO")
_ONNX_TYPES = {"f32": "tensor(float)", "f16": "tensor(float16)", "bf16": "tensor(bfloat16)", "f64": "tensor(double)",
               "i64": "tensor(int64)", "i32": "tensor(int32)", "i8": "tensor(int8)", "u8": "tensor(uint8)",
               "boolean": "tensor(bool)"}


def _openvino():
    try:
        import openvino
    except ImportError:
        raise EdgeprotoError("OpenVINO is not installed: pip install 'edgeproto[openvino]'") from None
    return openvino


def conversion_extensions() -> list:
    """One ``ConversionExtension`` per prototype family, mapping ``edgeproto::<OpType>`` to OpenVINO ops."""
    _openvino()
    from openvino.frontend.onnx import ConversionExtension

    extensions = []
    for name in sorted(families()):
        module = importlib.import_module(f"edgeproto.layers.{name}.openvino")
        extensions.append(ConversionExtension(module.EXTENSION_OP_TYPE, ONNX_DOMAIN, module.convert))
    return extensions


_EXTENDED: weakref.WeakSet = weakref.WeakSet()  # cores that already carry the conversion extensions


def _ov_message(exc: Exception) -> str:
    """OpenVINO's error without its ``Exception from src/...`` / ``Check '...' failed`` location lines."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from ", "Check '"))]
    return " ".join(useful or lines) or type(exc).__name__


def _unconverted(model) -> list[str]:
    """Framework nodes left in a converted model (ops the frontend could not map)."""
    return sorted({op.get_type_name() for op in model.get_ordered_ops() if "FrameworkNode" in op.get_type_name()})


def read_model(path: str | Path | bytes, core=None):
    """An ``openvino.Model`` from an ``.onnx`` file (edgeproto ops converted), an IR ``.xml`` (with
    its ``.bin`` beside it) or serialized ONNX bytes. Corrupt or unreadable input -> EdgeprotoError."""
    ov = _openvino()
    core = core if core is not None else ov.Core()
    if isinstance(path, (bytes, bytearray)):
        source, where, kind = bytes(path), "the ONNX model bytes", "onnx"
    else:
        source = Path(path)
        where = str(source)
        kind = source.suffix.lower().lstrip(".")
        if kind not in ("onnx", "xml"):
            raise EdgeprotoError(f"OpenVINO reads .onnx or IR .xml models, not {source.name!r}")
        if not source.is_file():
            raise EdgeprotoError(f"OpenVINO cannot read {source}: no such file")
        if kind == "xml" and not source.with_suffix(".bin").is_file():
            raise EdgeprotoError(
                f"OpenVINO cannot read {source}: its weights {source.with_suffix('.bin').name} are missing"
            )
        source = str(source)
    if kind == "onnx" and core not in _EXTENDED:
        for extension in conversion_extensions():
            core.add_extension(extension)
        _EXTENDED.add(core)
    try:
        model = core.read_model(source)
    except Exception as exc:  # OpenVINO raises RuntimeError (and friends) for corrupt or unconvertible models
        raise EdgeprotoError(
            f"OpenVINO cannot read {where} (corrupt or unsupported {kind} model): {_ov_message(exc)}"
        ) from None
    left = _unconverted(model)
    if left:
        raise EdgeprotoError(f"OpenVINO could not convert every op of {where}: {', '.join(left)} left unconverted")
    return model


def _check_device(device: str | None, available: list[str]) -> str:
    name = "CPU" if device is None else str(device).upper()
    if name.split(".")[0] not in DEVICES:
        raise EdgeprotoError(
            f"unknown OpenVINO device {device!r}; use one of {', '.join(DEVICES)} "
            f"(available here: {', '.join(available) or 'none'})"
        )
    if name != "AUTO" and not any(d == name or d.startswith(name + ".") for d in available):
        raise EdgeprotoError(
            f"OpenVINO device {name} is not available here (available: {', '.join(available) or 'none'})"
        )
    return name


class OpenVinoRunner:
    """Runs an ONNX model (path or bytes) or an OpenVINO IR ``.xml`` with OpenVINO on one device.

    ``precision`` ("fp32", "bf16", "fp16", "int8") sets ``INFERENCE_PRECISION_HINT`` (int8 -> f32:
    the IR's FakeQuantize ops carry the quantisation); ``device`` is CPU (default), GPU, NPU or AUTO;
    ``threads`` > 0 sets ``INFERENCE_NUM_THREADS`` on CPU.
    """

    name = "openvino"

    def __init__(
        self,
        model: str | Path | bytes,
        *,
        precision: str = "fp32",
        device: str | None = None,
        threads: int = 0,
    ) -> None:
        ov = _openvino()
        if precision not in PRECISION_HINTS:
            raise EdgeprotoError(f"unknown precision {precision!r}; known: {', '.join(PRECISION_HINTS)}")
        core = ov.Core()
        self._device = _check_device(device, list(core.available_devices))
        self._requested = precision
        self.model = read_model(model, core)
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision]}
        if threads and threads > 0 and self._device == "CPU":
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = core.compile_model(self.model, self._device, config)
        except Exception as exc:
            raise EdgeprotoError(
                f"OpenVINO cannot compile the model for {self._device} ({config}): {_ov_message(exc)}"
            ) from None
        self._core, self._config = core, config
        # OpenVINO runs a dynamic-batch model ~1.7-2.9x slower than the same model reshaped to a
        # static batch (measured here); so each batch size seen gets its own static compilation.
        self._requests: dict[int, object] = {}
        self._dynamic_batch = not self.model.inputs[0].get_partial_shape()[0].is_static
        self._quantized = any(op.get_type_name() == "FakeQuantize" for op in self.model.get_ordered_ops())
        self.version = ov.get_version()

    @property
    def device(self) -> str:
        """The device(s) OpenVINO really executes on (AUTO resolves to the chosen one)."""
        try:
            devices = self.compiled.get_property("EXECUTION_DEVICES")
        except Exception:  # plugins that do not report it
            return self._device
        return ",".join(devices) if devices else self._device

    @property
    def inference_precision(self) -> str:
        """OpenVINO's compiled ``INFERENCE_PRECISION_HINT`` as fp32 / bf16 / fp16 (requested if unreadable)."""
        try:
            hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        except Exception:  # AUTO/NPU may not expose it
            return _FROM_OV[PRECISION_HINTS[self._requested]]
        type_name = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        return _FROM_OV.get(type_name, type_name)

    @property
    def precision(self) -> str:
        """What OpenVINO really uses: "int8" for a quantized (FakeQuantize) IR, else the compiled
        floating-point precision read back from the compiled model (fp32 / bf16 / fp16)."""
        return "int8" if self._quantized else self.inference_precision

    def describe(self) -> dict:
        """Inputs and outputs: name, shape (dynamic dims as "?"), element type (ONNX-style names)."""

        def io(ports):
            return [
                {
                    "name": p.get_any_name(),
                    "shape": [d.get_length() if d.is_static else "?" for d in p.get_partial_shape()],
                    "type": _ONNX_TYPES.get(p.get_element_type().get_type_name(), p.get_element_type().get_type_name()),
                }
                for p in ports
            ]

        return {"inputs": io(self.compiled.inputs), "outputs": io(self.compiled.outputs)}

    def run(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs by name (logits, scores, maps) for a batch of preprocessed images (B,3,S,S) float32."""
        image = np.ascontiguousarray(image, np.float32)
        request = self._request_for(image.shape[0])
        result = request.infer({0: image})
        return {port.get_any_name(): np.array(result[port]) for port in request.model_outputs}

    def info(self) -> dict:
        """What OpenVINO really uses: execution device, compiled precision, INFERENCE_NUM_THREADS."""
        try:
            return runner_info(self, int(self.compiled.get_property("INFERENCE_NUM_THREADS")), "INFERENCE_NUM_THREADS")
        except Exception:  # noqa: BLE001 -- devices without the property
            return runner_info(self, None, "not reported by the device")

    def close(self) -> None:
        """Drop the per-batch compiled requests."""
        self._requests.clear()

    def _request_for(self, batch: int):
        """An infer request compiled for this batch size (static shapes), cached; at most 8 kept."""
        request = self._requests.get(batch)
        if request is not None:
            return request
        compiled = self.compiled
        if self._dynamic_batch:
            model = self.model.clone()
            shape = self.model.inputs[0].get_partial_shape()
            shape[0] = batch
            model.reshape({model.inputs[0]: shape})
            compiled = self._core.compile_model(model, self._device, self._config)
        if len(self._requests) >= 8:
            self._requests.pop(next(iter(self._requests)))
        self._requests[batch] = request = compiled.create_infer_request()
        return request
