"""Two runners of the TensorRT-ready graph (no torch):

- :class:`TensorRtRunner` (target ``tensorrt``): a strongly typed engine built with Polygraphy
  (``NetworkFromOnnxPath(strongly_typed=True)`` → ``CreateConfig`` with one optimization profile
  for batch 1..``max_batch`` and no precision flags — the graph carries the precision, which is what
  TensorRT 11 requires and 10.x accepts) → cached per GPU / TensorRT version / precision
  (:mod:`.engine_cache`) → ``TrtRunner``. Needs TensorRT and a CUDA GPU (a Jetson or a desktop GPU).
- :class:`GraphRunner` (target ``tensorrt-graph``): the same graph executed by ONNX Runtime on the
  CPU, so a host without TensorRT reports the fidelity of exactly the numerics TensorRT is given.
  It says so in its ``device``. A plugin graph (``--ops plugin``) runs its prototype nodes by their
  ONNX bodies (``functions.onnx`` beside the graph): the reference numerics of the plugin kernel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeproto.errors import EdgeprotoError
from edgeproto.runner_contract import runner_info
from edgeproto.runtimes.onnxruntime.runner import OnnxRuntimeRunner
from edgeproto.runtimes.tensorrt import engine_cache
from edgeproto.runtimes.tensorrt.plugins.graph import FUNCTIONS_FILE, attach_functions, is_plugin_graph, plugin_nodes

DEFAULT_MAX_BATCH = 32


class GraphRunner(OnnxRuntimeRunner):
    """The TensorRT-ready graph on ONNX Runtime's CPU provider (a CPU execution of the TensorRT graph)."""

    name = "tensorrt-graph"

    def __init__(self, model: str | Path, *, precision: str = "fp32", device: str | None = None,
                 threads: int = 0) -> None:
        if device is not None and str(device).upper() != "CPU":
            raise EdgeprotoError(f"tensorrt-graph runs the TensorRT graph on the CPU (asked for device {device!r}); "
                                 "use --target tensorrt on a machine with TensorRT")
        super().__init__(_cpu_graph(Path(model)), precision=precision, device="CPU", threads=threads)

    @property
    def device(self) -> str:
        return "CPU (ONNX Runtime executing the TensorRT-ready graph)"


def _cpu_graph(path: Path) -> Path | bytes:
    """``path``, or — for a plugin graph — the graph with its prototype bodies attached (bytes)."""
    model = _read_graph(path, weights=True)
    if not is_plugin_graph(model):
        return path
    bodies = path.parent / FUNCTIONS_FILE
    if not bodies.is_file():
        raise EdgeprotoError(f"{path} is a plugin graph but {bodies.name} (its prototype bodies) is missing beside "
                             "it: recompile with --force")
    return attach_functions(model, bodies).SerializeToString()


class TensorRtRunner:
    """A TensorRT engine of the TensorRT-ready graph, built (or reused) at load time."""

    name = "tensorrt"

    def __init__(self, model: str | Path, *, precision: str = "fp32", device: str | None = None, threads: int = 0,
                 max_batch: int = DEFAULT_MAX_BATCH) -> None:
        if device is not None and str(device).upper() not in ("GPU", "CUDA", "CUDA:0"):
            raise EdgeprotoError(f"tensorrt runs on the GPU (asked for device {device!r})")
        trt, polygraphy = _import_tensorrt()
        from polygraphy.backend.trt import (
            CreateConfig,
            EngineFromBytes,
            EngineFromNetwork,
            NetworkFromOnnxPath,
            Profile,
            TrtRunner,
        )

        self._path = Path(model)
        self._precision = precision
        graph = _read_graph(self._path)  # read once: its input size and the plugins it needs
        self._size = int(graph.graph.input[0].type.tensor_type.shape.dim[2].dim_value)
        self.plugins = _register_plugins(graph)
        self.max_batch = int(max_batch)
        self.version = trt.__version__
        size = self._size

        def build() -> bytes:
            profile = Profile().add("image", min=(1, 3, size, size), opt=(1, 3, size, size),
                                    max=(self.max_batch, 3, size, size))
            network = NetworkFromOnnxPath(str(self._path), strongly_typed=True)
            try:
                engine = EngineFromNetwork(network, config=CreateConfig(profiles=[profile]))()
            except Exception as exc:  # noqa: BLE001 -- Polygraphy / TensorRT errors
                raise EdgeprotoError(f"TensorRT could not build an engine from {self._path}: {exc}") from None
            return bytes(engine.serialize())

        wanted = engine_cache.identity(self._path, self.version, engine_cache.gpu_identity(), precision,
                                       self.max_batch)
        self._identity = wanted
        engine, self.cache_note = engine_cache.load_or_build(self._path, wanted, build,
                                                             lambda data: EngineFromBytes(data)())
        self._runner = TrtRunner(engine)
        self._runner.activate()
        self._polygraphy_version = polygraphy.__version__

    @property
    def precision(self) -> str:
        """The graph's precision (the engine is strongly typed: it runs the types the graph says)."""
        return self._precision

    @property
    def device(self) -> str:
        return f"{self._identity['gpu']} (compute {self._identity['compute_capability']})"

    def describe(self) -> dict:
        size = self._size
        outs = [{"name": n, "shape": ["batch", "?"], "type": "tensor(float)"} for n in ("logits", "scores", "maps")]
        return {"inputs": [{"name": "image", "shape": ["batch", 3, size, size], "type": "tensor(float)"}],
                "outputs": outs}

    def run(self, image: np.ndarray) -> dict[str, np.ndarray]:
        check_batch(len(image), self.max_batch)
        out = self._runner.infer({"image": np.ascontiguousarray(image, dtype=np.float32)})
        return {k: np.asarray(v) for k, v in out.items()}

    def info(self) -> dict:
        return runner_info(self, None, "TensorRT (GPU)", polygraphy=self._polygraphy_version,
                           engine=self.cache_note, max_batch=self.max_batch, plugins=self.plugins)

    def close(self) -> None:
        runner = getattr(self, "_runner", None)
        if runner is not None and runner.is_active:
            runner.deactivate()


def check_batch(batch: int, max_batch: int) -> None:
    """Refuse a batch the engine's optimization profile does not cover."""
    if not 1 <= batch <= max_batch:
        raise EdgeprotoError(f"the TensorRT engine's optimization profile covers batch 1..{max_batch}, not {batch}: "
                             f"run in batches of at most {max_batch}")


def _read_graph(path: Path, weights: bool = False):
    """The graph at ``path`` (its external weights too when ``weights``); a clear error if unreadable."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=weights)
    except Exception as exc:  # noqa: BLE001 -- protobuf / IO errors
        raise EdgeprotoError(f"cannot read the TensorRT graph {path}: {exc}") from None


def _register_plugins(graph) -> list[str]:
    """Register the plugins a plugin graph needs before it is parsed (none for an inlined graph)."""
    from edgeproto.runtimes.tensorrt.plugins import register_plugins

    nodes = plugin_nodes(graph)
    return register_plugins({n.op_type for n in nodes}) if nodes else []


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise EdgeprotoError("target 'tensorrt' needs TensorRT, which is not installed (it comes with JetPack on a "
                             "Jetson, or `pip install tensorrt` with a CUDA GPU); on this machine use "
                             "--target tensorrt-graph to run the same graph on the CPU") from None
    try:
        import polygraphy
    except ImportError:
        raise EdgeprotoError("target 'tensorrt' needs Polygraphy: pip install 'edgeproto[tensorrt]'") from None
    return trt, polygraphy
