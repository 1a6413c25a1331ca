"""Engines are not portable: one is built per (graph, TensorRT version, GPU, precision, batch range)
and cached beside the bundle. No TensorRT here: the builder and loader are passed in, so every
decision (reuse, rebuild for another GPU or TensorRT version, rebuild a corrupt file) is testable
on a machine without a GPU.

Layout: ``<bundle parent>/<bundle name>.engines/<artifact key>/engine.plan`` + ``engine.json``
(the identity it was built for and the plan's sha256), written atomically.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from edgeproto import atomic_files
from edgeproto.bundle import sha256_file


def gpu_identity() -> dict:
    """The GPU's name and compute capability (``nvidia-smi``; on a Jetson, the board model)."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
        if done.returncode == 0 and done.stdout.strip():
            name, cap = (p.strip() for p in done.stdout.strip().splitlines()[0].split(",", 1))
            return {"gpu": name, "compute_capability": cap}
    except (OSError, subprocess.TimeoutExpired, ValueError):
        pass
    model = Path("/proc/device-tree/model")
    if model.is_file():
        return {"gpu": model.read_text(errors="replace").strip("\x00 \n"), "compute_capability": "tegra"}
    return {"gpu": "unknown", "compute_capability": "unknown"}


def engine_dir(artifact: Path) -> Path:
    """Where the engines of ``artifact`` (``<bundle>/compiled/<key>/model.onnx``) are cached."""
    artifact = Path(artifact).resolve()
    if artifact.parent.parent.name == "compiled":
        bundle, key = artifact.parents[2], artifact.parent.name
        return bundle.parent / f"{bundle.name}.engines" / key
    return artifact.parent / f"{artifact.stem}.engines"


def identity(artifact: Path, tensorrt_version: str, gpu: dict, precision: str, max_batch: int) -> dict:
    """What an engine is valid for."""
    return {"onnx_sha256": sha256_file(artifact), "tensorrt": tensorrt_version, **gpu, "precision": precision,
            "batch": [1, int(max_batch)]}


def load_or_build(artifact: Path, wanted: dict, build: Callable[[], bytes], load: Callable[[bytes], object]):
    """``(engine, note)``: the cached engine when it was built for ``wanted``; otherwise (none yet,
    built for another GPU / TensorRT / graph / batch range, or a corrupt file) a new one from
    ``build()``, cached; ``note`` says which and why."""
    folder = engine_dir(artifact)
    plan, meta = folder / "engine.plan", folder / "engine.json"
    why = "no cached engine"
    if plan.is_file() and meta.is_file():
        try:
            recorded = json.loads(meta.read_text())
        except (OSError, ValueError):
            recorded = None
        if not isinstance(recorded, dict):
            why = "the cached engine's record is unreadable"
        elif {k: recorded.get(k) for k in wanted} != wanted:
            diff = [f"{k} {recorded.get(k)!r} → {wanted[k]!r}" for k in wanted if recorded.get(k) != wanted[k]]
            why = "the cached engine was built for another setup (" + "; ".join(diff) + ")"
        else:
            data = plan.read_bytes()
            if hashlib.sha256(data).hexdigest() != recorded.get("plan_sha256"):
                why = "the cached engine file is corrupt (sha256 mismatch)"
            else:
                try:
                    return load(data), f"cached engine reused ({plan})"
                except Exception as exc:  # noqa: BLE001 -- the runtime refuses a plan in its own way
                    why = f"the cached engine does not load ({exc})"
    data = build()
    folder.mkdir(parents=True, exist_ok=True)
    atomic_files.write_bytes(plan, data)
    atomic_files.write_text(meta, json.dumps({**wanted, "plan_sha256": hashlib.sha256(data).hexdigest()}, indent=2))
    return load(data), f"engine built and cached at {plan}: {why}"
