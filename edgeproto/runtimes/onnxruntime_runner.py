"""ONNX Runtime backend: load an ONNX model, run batches of numpy arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeproto.errors import EdgeprotoError


class OnnxRuntimeRunner:
    """Runs an ONNX model (path or serialized bytes) with ONNX Runtime on the best available provider."""

    name = "onnxruntime"

    def __init__(self, model: str | Path | bytes, providers: list[str] | None = None, threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise EdgeprotoError("ONNX Runtime is not installed: pip install onnxruntime") from None
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        available = ort.get_available_providers()
        wanted = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
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
        return "fp32"

    def describe(self) -> dict:
        """Inputs and outputs: name, shape (symbolic dims as strings), element type."""
        io = lambda args: [{"name": a.name, "shape": list(a.shape), "type": a.type} for a in args]  # noqa: E731
        return {"inputs": io(self.session.get_inputs()), "outputs": io(self.session.get_outputs())}

    def run(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs by name for a batch of preprocessed images (B,3,S,S) float32."""
        names = [o.name for o in self.session.get_outputs()]
        values = self.session.run(names, {self.session.get_inputs()[0].name: np.ascontiguousarray(image, np.float32)})
        return dict(zip(names, values))
