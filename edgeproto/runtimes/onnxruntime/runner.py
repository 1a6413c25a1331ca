"""ONNX Runtime backend: load an ONNX model, run batches of numpy arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeproto.errors import EdgeprotoError
from edgeproto.runner_contract import runner_info


class OnnxRuntimeRunner:
    """Runs an ONNX model (path or serialized bytes) with ONNX Runtime on the best available provider."""

    name = "onnxruntime"

    def __init__(
        self,
        model: str | Path | bytes,
        *,
        precision: str = "fp32",
        device: str | None = None,
        threads: int = 0,
        providers: list[str] | None = None,
        spinning: bool = True,
    ) -> None:
        """``spinning=False``: intra-op threads sleep between runs instead of spin-waiting (for a caller
        that does its own work between runs, e.g. the persistent explainer on few cores)."""
        try:
            import onnxruntime as ort
        except ImportError:
            raise EdgeprotoError("ONNX Runtime is not installed: pip install onnxruntime") from None
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        if not spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = ort.get_available_providers()
        if device is not None and device.upper() not in ("CPU", "CUDA", "TENSORRT"):
            raise EdgeprotoError(f"unknown onnxruntime device {device!r}; use CPU, CUDA or TENSORRT")
        preferred = {"CPU": ["CPUExecutionProvider"], "CUDA": ["CUDAExecutionProvider", "CPUExecutionProvider"],
                     "TENSORRT": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]}
        order = preferred.get((device or "").upper(), ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                                       "CPUExecutionProvider"])
        wanted = providers or [p for p in order if p in available]
        if device and device.upper() != "CPU" and wanted[0] == "CPUExecutionProvider":
            raise EdgeprotoError(f"onnxruntime has no {device} execution provider here (available: {available})")
        self._precision = precision
        source = model if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(source, sess_options=opts, providers=wanted)
        except Exception as exc:  # ORT raises its own exception types for corrupt or invalid models
            where = "the model" if isinstance(model, bytes) else str(model)
            raise EdgeprotoError(f"ONNX Runtime cannot load {where}: {exc}") from None
        self.version = ort.__version__

    @property
    def device(self) -> str:
        return self.session.get_providers()[0]

    @property
    def precision(self) -> str:
        """The artifact's precision (ONNX Runtime runs the graph's own types)."""
        return self._precision

    def describe(self) -> dict:
        """Inputs and outputs: name, shape (symbolic dims as strings), element type."""
        io = lambda args: [{"name": a.name, "shape": list(a.shape), "type": a.type} for a in args]  # noqa: E731
        return {"inputs": io(self.session.get_inputs()), "outputs": io(self.session.get_outputs())}

    def run(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs by name for a batch of preprocessed images (B,3,S,S) float32."""
        names = [o.name for o in self.session.get_outputs()]
        values = self.session.run(names, {self.session.get_inputs()[0].name: np.ascontiguousarray(image, np.float32)})
        return dict(zip(names, values))

    def info(self) -> dict:
        """What ONNX Runtime really uses: provider, the artifact's precision, intra-op threads."""
        n = self.session.get_session_options().intra_op_num_threads
        if n:
            return runner_info(self, n, "intra_op_num_threads")
        return runner_info(self, None, "ONNX Runtime default (one per physical core)")

    def close(self) -> None:
        """Nothing to restore: the session is freed with the runner."""
