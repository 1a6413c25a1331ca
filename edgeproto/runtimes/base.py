"""The contract every runtime backend keeps (Polygraphy-style runner), and artifact lookup."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Runner(Protocol):
    """A loaded model on one runtime.

    ``name`` is the runtime ("onnxruntime", "openvino", ...); ``version`` its version;
    ``precision`` and ``device`` say what the runtime really uses (not what was asked for).
    """

    name: str
    version: str

    @property
    def precision(self) -> str: ...

    @property
    def device(self) -> str: ...

    def describe(self) -> dict:
        """``{"inputs": [...], "outputs": [...]}``, each ``{"name", "shape", "type"}``."""
        ...

    def run(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs by name (``logits``, ``scores``, ``maps``) for a (B,3,S,S) float32 batch."""
        ...
