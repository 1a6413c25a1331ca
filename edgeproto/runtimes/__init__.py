"""Runtime backends behind one small contract (:class:`~edgeproto.runtimes.base.Runner`).

Imports no torch: this is what runs on the device.
"""

from __future__ import annotations

import importlib
import importlib.util

from edgeproto.bundle import Bundle
from edgeproto.errors import EdgeprotoError

# target -> (module, class, python package it needs, pip extra that installs it)
TARGETS: dict[str, tuple[str, str, str, str]] = {
    "onnxruntime": ("edgeproto.runtimes.onnxruntime_runner", "OnnxRuntimeRunner", "onnxruntime", "onnxruntime"),
    "openvino": ("edgeproto.runtimes.openvino_runner", "OpenVinoRunner", "openvino", "edgeproto[openvino]"),
}


def runner_class(target: str):
    """The runner class for ``target``, or a clear error (unknown target / runtime not installed)."""
    if target not in TARGETS:
        raise EdgeprotoError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
    module, cls, package, extra = TARGETS[target]
    if importlib.util.find_spec(package) is None:
        raise EdgeprotoError(f"target {target!r} needs {package}, which is not installed: pip install '{extra}'")
    return getattr(importlib.import_module(module), cls)


PRECISIONS = ("fp32", "fp16", "bf16", "int8")
GUARDS = ("prototypes", "none")


def artifact_key(target: str, precision: str, guard: str = "prototypes") -> str:
    """Key of a compiled artifact in ``manifest["compiled"]``."""
    return f"{target}-{precision}" + ("" if guard == "prototypes" else "-noguard")


def load_runner(
    bundle: Bundle,
    target: str,
    precision: str = "fp32",
    guard: str = "prototypes",
    device: str | None = None,
    threads: int = 0,
):
    """A runner for the bundle's artifact for (target, precision, guard).

    A compiled artifact recorded in the manifest wins; fp32 falls back to ``model.onnx``. Anything
    else must be compiled first (``edgeproto compile``), and the error says so.
    """
    cls = runner_class(target)
    if precision not in PRECISIONS:
        raise EdgeprotoError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    if guard not in GUARDS:
        raise EdgeprotoError(f"unknown guard {guard!r}; known: {', '.join(GUARDS)}")
    entry = bundle.manifest.get("compiled", {}).get(artifact_key(target, precision, guard))
    if entry is not None:
        return cls(bundle.path(entry["model"]), precision=entry.get("inference_precision", precision),
                   device=device, threads=threads)
    if precision == "fp32":
        return cls(bundle.path(bundle.manifest["model"]["file"]), precision="fp32", device=device, threads=threads)
    raise EdgeprotoError(
        f"bundle {bundle.root} has no {target} {precision} artifact (guard={guard}): run "
        f"'edgeproto compile {bundle.root} --target {target} --precision {precision} --guard {guard}' first"
    )
