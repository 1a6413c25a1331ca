"""The PyTorch reference as a runner (``--target torch``): the bundle's source checkpoint, eager, eval
mode, no grad. Host only, so it lives with the trainer, not under the device-side ``runtimes``;
torch is imported when a runner is built, never when this module is imported.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgeproto.errors import EdgeprotoError
from edgeproto.outputs import OUTPUTS
from edgeproto.runner_contract import runner_info


class TorchRunner:
    """Runs an edgeproto checkpoint directory in PyTorch on the CPU (``device`` must be None or CPU).

    ``threads`` > 0 sets ``torch.set_num_threads`` until :meth:`close`, so the reference is timed
    with the same thread count as the runtimes it is compared with.
    """

    name = "torch"

    def __init__(self, checkpoint: str | Path, *, precision: str = "fp32", device: str | None = None,
                 threads: int = 0) -> None:
        if precision != "fp32":
            raise EdgeprotoError(f"the PyTorch reference runs fp32 only (asked for {precision!r})")
        if device is not None and str(device).upper() != "CPU":
            raise EdgeprotoError(f"the PyTorch reference runs on the CPU (asked for device {device!r})")
        t0 = time.perf_counter()
        import torch

        from edgeproto.train.checkpoint import load_checkpoint

        self.import_s = time.perf_counter() - t0
        self._torch = torch
        self._previous_threads = torch.get_num_threads()
        if threads:
            torch.set_num_threads(int(threads))
        t0 = time.perf_counter()
        try:
            self.model, self.config = load_checkpoint(checkpoint)
        except EdgeprotoError as exc:
            self.close()
            raise EdgeprotoError(f"PyTorch reference: {exc}") from None
        self.model.eval()
        self.load_s = time.perf_counter() - t0
        self.checkpoint = Path(checkpoint)
        self.version = torch.__version__
        self._threads = torch.get_num_threads()

    @property
    def precision(self) -> str:
        return "fp32"

    @property
    def device(self) -> str:
        return "cpu"

    def describe(self) -> dict:
        size = int(self.config["image_size"])
        out = [{"name": n, "shape": ["batch", "?"], "type": "tensor(float)"} for n in OUTPUTS]
        return {"inputs": [{"name": "image", "shape": ["batch", 3, size, size], "type": "tensor(float)"}],
                "outputs": out}

    def run(self, image: np.ndarray) -> dict[str, np.ndarray]:
        with self._torch.no_grad():
            out = self.model(self._torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)))
        return {k: out[k].numpy() for k in OUTPUTS}

    def info(self) -> dict:
        return runner_info(self, self._threads, "torch.get_num_threads", mode="eager, eval, no_grad",
                           checkpoint=str(self.checkpoint), import_s=self.import_s, load_s=self.load_s)

    def close(self) -> None:
        """Give PyTorch back the thread count it had."""
        self._torch.set_num_threads(self._previous_threads)
