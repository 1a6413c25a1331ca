"""Runtime backends behind one contract (:class:`~edgeproto.runner_contract.Runner`), listed in one
registry (:mod:`edgeproto.runtimes.registry`).

Imports no torch: this is what runs on the device (the host-only PyTorch reference imports torch
only when it is loaded).
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

from edgeproto.bundle import Bundle, sha256_file
from edgeproto.errors import EdgeprotoError
from edgeproto.runner_contract import Runner
from edgeproto.runtimes.registry import (
    ARTIFACT_PRECISIONS,
    AUTO,
    GUARDS,
    PRECISIONS,
    RUNTIMES,
    RuntimeSpec,
    artifact_key,
    check_guard,
    check_precision,
    device_runtimes,
    get_runtime,
)

__all__ = ["ARTIFACT_PRECISIONS", "AUTO", "GUARDS", "PRECISIONS", "RUNTIMES", "Runner", "RuntimeSpec", "artifact_key", "check_guard",
           "check_precision", "device_runtimes",
           "get_runtime", "load_runner", "reference_checkpoint"]


def reference_checkpoint(bundle: Bundle, checkpoint: str | Path | None = None) -> Path:
    """The bundle's source PyTorch checkpoint (or ``checkpoint``), checked to be the one it was exported from."""
    src = bundle.manifest.get("source", {})
    if checkpoint is None and not str(src.get("checkpoint", "")):
        raise EdgeprotoError(f"bundle {bundle.root}: manifest names no source checkpoint: no PyTorch reference")
    path = Path(checkpoint) if checkpoint is not None else Path(src["checkpoint"])
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise EdgeprotoError(
            f"the bundle's PyTorch reference checkpoint {path} is missing or incomplete (moved or deleted?): "
            "the reference runs it; restore it there, give its new location, or run on the training machine"
        )
    digest = src.get("weights_sha256")
    if digest and sha256_file(path / "model.safetensors") != digest:
        raise EdgeprotoError(
            f"checkpoint {path} is not the one this bundle was exported from (model.safetensors sha256 "
            "differs from the manifest's source.weights_sha256): re-export the bundle"
        )
    return path


def load_runner(
    bundle: Bundle,
    target: str,
    precision: str = "fp32",
    guard: str = "prototypes",
    device: str | None = None,
    threads: int = 0,
    checkpoint: str | Path | None = None,
    spinning: bool = True,
) -> Runner:
    """A runner for the bundle's artifact for (target, precision, guard).

    A compiled artifact recorded in the manifest wins; fp32 falls back to ``model.onnx``; the
    host-only PyTorch reference (``torch``) runs the source checkpoint (``checkpoint`` overrides
    where it is). Anything else must be compiled first (``edgeproto compile``), and the error says so.
    ``spinning=False`` reaches runners that take it (ONNX Runtime: no spin-waiting between runs).
    """
    spec = get_runtime(target)
    check_precision(precision, allow_auto=not spec.host_only)
    check_guard(guard)
    if spec.host_only:
        spec.check_precision(precision)
        path = reference_checkpoint(bundle, checkpoint)
        return spec.runner_class()(path, precision="fp32", device=device, threads=threads)
    cls = spec.runner_class()
    if not spinning and "spinning" in inspect.signature(cls).parameters:
        cls = functools.partial(cls, spinning=False)
    source = spec.artifact_target
    entry = bundle.manifest.get("compiled", {}).get(artifact_key(source, precision, guard))
    if entry is not None:
        return cls(bundle.path(entry["model"]), precision=entry.get("inference_precision", precision),
                   device=device, threads=threads)
    if precision == "fp32" and not spec.requires_compile:
        return cls(bundle.path(bundle.manifest["model"]["file"]), precision="fp32", device=device, threads=threads)
    if precision == AUTO:
        raise EdgeprotoError(f"bundle {bundle.root} has no {source} auto artifact: run 'edgeproto compile "
                             f"{bundle.root} --target {source} --precision auto --min-top1 0.98' first")
    raise EdgeprotoError(
        f"bundle {bundle.root} has no {source} {precision} artifact (guard={guard}): run "
        f"'edgeproto compile {bundle.root} --target {source} --precision {precision} --guard {guard}' first"
    )
