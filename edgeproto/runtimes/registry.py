"""The runtime registry: one :class:`RuntimeSpec` per runtime; everything that lists runtimes reads it.

A runtime is one folder ``edgeproto/runtimes/<module>/`` with ``runner.py`` (its runner class, the
:class:`~edgeproto.runner_contract.Runner` contract) and, when it compiles, ``compile.py`` (``build()``),
plus one entry in :data:`RUNTIMES`. The host-only PyTorch reference is the one entry without a folder
here: it runs the checkpoint, so it lives with the trainer (:mod:`edgeproto.train.reference`) and the
device side never holds a torch import. ``--target`` choices, compile/sweep configurations, bench
targets and install hints all come from here.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field

from edgeproto.errors import EdgeprotoError

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
GUARDS = ("prototypes", "none")


@dataclass(frozen=True)
class RuntimeSpec:
    """What edgeproto knows about one runtime.

    ``module``: its folder under ``edgeproto/runtimes`` (None for the host-only reference);
    ``runner``: the dotted path of its runner class; ``packages``: Python packages the runner needs, ``extra``: the pip requirement that installs
    them; ``precisions``: what ``compile`` can produce (fp32 runs ``model.onnx`` unless
    ``requires_compile``); ``compile_packages``: the packages compiling needs (``"*"``: every
    precision, default ``packages``; a precision: more for it); ``sweep``: the (precision, guard)
    rows of ``validate --sweep``; ``host_only``: runs the PyTorch checkpoint, never on a device;
    ``artifacts_of``: runs the artifacts another runtime compiles (e.g. ``tensorrt-graph``);
    ``check_with``: the runtime that test-runs a fresh artifact in ``compile`` (the engine of
    ``tensorrt`` is built on the device, so its graph is checked on the CPU);
    ``unsupported``: why a precision is missing, said in the error; ``ops``: how ``compile`` may
    write the prototype ops (``inline``: standard ops; ``plugin``: TensorRT plugin nodes).
    """

    name: str
    module: str | None
    runner: str
    summary: str
    packages: tuple[str, ...]
    extra: str
    precisions: tuple[str, ...] = ("fp32",)
    compile_packages: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sweep: tuple[tuple[str, str], ...] = ()
    devices: str = "CPU"
    host_only: bool = False
    artifacts_of: str | None = None
    check_with: str | None = None
    requires_compile: bool = False
    unsupported: dict[str, str] = field(default_factory=dict)
    ops: tuple[str, ...] = ("inline",)

    @property
    def artifact_target(self) -> str:
        """The runtime whose compiled artifacts this one runs (itself, usually)."""
        return self.artifacts_of or self.name

    def missing(self, precision: str | None = None, compiling: bool = False) -> list[str]:
        """Packages that are needed (to run, or to compile ``precision``) and not installed."""
        needed = list(self.packages)
        if compiling:
            needed = list(self.compile_packages.get("*", self.packages)) + list(
                self.compile_packages.get(precision or "", ()))
        return [p for p in needed if importlib.util.find_spec(p) is None]

    def require(self, precision: str | None = None, compiling: bool = False) -> None:
        """Raise a clear error naming the pip extra when a needed package is not installed."""
        missing = self.missing(precision, compiling)
        if missing:
            what = f"compiling for {self.name} {precision}" if compiling else f"target {self.name!r}"
            raise EdgeprotoError(f"{what} needs {', '.join(missing)}, which is not installed: pip install '{self.extra}'")

    def runner_class(self):
        """The runner class (imports the runtime; call :meth:`require` first for a clear error)."""
        self.require()
        module, _, cls = self.runner.rpartition(".")
        return getattr(importlib.import_module(module), cls)

    def compiler(self):
        """The module whose ``build(bundle, out_dir, precision=, guard=, calibration=, progress=)`` compiles."""
        return importlib.import_module(f"edgeproto.runtimes.{self.module}.compile")

    def check_precision(self, precision: str) -> None:
        """Refuse an unknown precision, or one this runtime cannot produce (saying why when known)."""
        check_precision(precision)
        if precision not in self.precisions:
            raise EdgeprotoError(f"precision {precision!r} is not supported by target {self.name!r}"
                                 f"{self.unsupported.get(precision, '')}; supported: {', '.join(self.precisions)}")


RUNTIMES: dict[str, RuntimeSpec] = {spec.name: spec for spec in (
    RuntimeSpec(
        name="onnxruntime", module="onnxruntime", runner="edgeproto.runtimes.onnxruntime.runner.OnnxRuntimeRunner",
        summary="ONNX Runtime (CPU; CUDA/TensorRT providers when present)",
        packages=("onnxruntime",), extra="onnxruntime", precisions=("fp32", "fp16", "int8"),
        sweep=(("fp32", "prototypes"), ("fp16", "prototypes"), ("int8", "prototypes"), ("int8", "none")),
        devices="CPU, CUDA, TENSORRT",
        unsupported={"bf16": " (ONNX Runtime has no bf16 kernels for these ops on CPU; use fp16, or target "
                             "openvino, whose bf16 is an inference-precision hint)"},
    ),
    RuntimeSpec(
        name="openvino", module="openvino", runner="edgeproto.runtimes.openvino.runner.OpenVinoRunner",
        summary="OpenVINO (CPU, GPU, NPU, AUTO)",
        packages=("openvino",), extra="edgeproto[openvino]", precisions=("fp32", "bf16", "fp16", "int8"),
        compile_packages={"*": ("openvino",), "int8": ("nncf",)},
        sweep=(("fp32", "prototypes"), ("bf16", "prototypes"), ("int8", "prototypes"), ("int8", "none")),
        devices="CPU, GPU, NPU, AUTO",
    ),
    RuntimeSpec(
        name="tensorrt", module="tensorrt", runner="edgeproto.runtimes.tensorrt.runner.TensorRtRunner",
        summary="TensorRT engine of the TensorRT-ready graph, built on the device with Polygraphy (GPU, Jetson)",
        packages=("tensorrt", "polygraphy"), extra="edgeproto[tensorrt]", precisions=("fp32", "fp16", "int8"),
        compile_packages={"*": ("onnxruntime",)}, check_with="tensorrt-graph", requires_compile=True, devices="GPU",
        ops=("inline", "plugin"),
        unsupported={"bf16": " (the TensorRT-ready graphs are fp32, fp16 or int8)"},
    ),
    RuntimeSpec(
        name="tensorrt-graph", module="tensorrt", runner="edgeproto.runtimes.tensorrt.runner.GraphRunner",
        summary="the TensorRT-ready graph executed by ONNX Runtime on the CPU (TensorRT's numerics, on any host)",
        packages=("onnxruntime",), extra="onnxruntime", precisions=("fp32", "fp16", "int8"),
        sweep=(("fp32", "prototypes"), ("fp16", "prototypes"), ("fp16", "none"), ("int8", "prototypes"),
               ("int8", "none")),
        artifacts_of="tensorrt", requires_compile=True,
        unsupported={"bf16": " (the TensorRT-ready graphs are fp32, fp16 or int8)"},
    ),
    RuntimeSpec(
        name="torch", module=None, runner="edgeproto.train.reference.TorchRunner",
        summary="the PyTorch reference (the bundle's source checkpoint; host only)",
        packages=("torch", "safetensors"), extra="edgeproto[train]", host_only=True,
        unsupported={p: " (it is the fp32 PyTorch reference)" for p in PRECISIONS if p != "fp32"},
    ),
)}


def get_runtime(name: str) -> RuntimeSpec:
    """The spec of runtime ``name``, or a clear error listing the known ones."""
    if name not in RUNTIMES:
        raise EdgeprotoError(f"unknown target {name!r}; known: {', '.join(RUNTIMES)}")
    return RUNTIMES[name]


def device_runtimes() -> list[str]:
    """Runtimes that run a bundle's artifact (everything but the host-only PyTorch reference)."""
    return [n for n, s in RUNTIMES.items() if not s.host_only]


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise EdgeprotoError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")


def check_guard(guard: str) -> None:
    if guard not in GUARDS:
        raise EdgeprotoError(f"unknown guard {guard!r}; known: {', '.join(GUARDS)}")


def artifact_key(target: str, precision: str, guard: str = "prototypes") -> str:
    """Key of a compiled artifact in ``manifest["compiled"]``."""
    return f"{target}-{precision}" + ("" if guard == "prototypes" else "-noguard")
