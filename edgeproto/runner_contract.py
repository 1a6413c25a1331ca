"""The contract every runner keeps (Polygraphy-style): ground floor, so the runtimes and the host-only
PyTorch reference (:mod:`edgeproto.train.reference`) keep the same one.

A runner is built from one artifact (``Runner(path, precision=..., device=..., threads=...)``),
describes its inputs and outputs, runs a numpy batch and says what it really used. The
conformance test (``tests/test_runner_contract.py``) runs every registered runner through it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

INFO_KEYS = ("name", "version", "precision", "device", "threads", "threads_source")


@runtime_checkable
class Runner(Protocol):
    """A loaded model on one runtime.

    ``name`` is the runtime ("onnxruntime", "openvino", "torch", ...); ``version`` its version;
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

    def info(self) -> dict:
        """:data:`INFO_KEYS`: name, version, precision and device really used, threads (None where
        the runtime picks its own) and how the thread count was found."""
        ...

    def close(self) -> None:
        """Release what the runner changed or holds (thread settings, sessions)."""
        ...


def runner_info(runner, threads: int | None, threads_source: str, **extra) -> dict:
    """The :meth:`Runner.info` record of ``runner`` (every runner builds it here, so the keys agree)."""
    return {"name": runner.name, "version": str(runner.version), "precision": str(runner.precision),
            "device": str(runner.device), "threads": threads, "threads_source": threads_source, **extra}
