"""The on-device self-check: does this runtime reproduce the bundle's golden PyTorch outputs?

numpy + a runtime only -- never torch. The bundle carries golden inputs and the PyTorch reference
outputs; :func:`verify_bundle` runs the inputs on the target and compares every output
(``|actual − ref| ≤ atol + rtol·|ref|``) and the top-1 prototype of every image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeproto.bundle import open_bundle
from edgeproto.errors import EdgeprotoError
from edgeproto.eval.explain import run_model, runtime_info
from edgeproto.eval.explanations import top1_agreement
from edgeproto.eval.parity import compare_outputs, within_tolerance

OUTPUTS = ("logits", "scores", "maps")

# Default tolerances: strict for fp32, loose for reduced precision (fp16 / bf16 / int8 artifacts).
FP32_TOLERANCE = {"atol": 1e-4, "rtol": 1e-3, "min_agreement": 1.0}
REDUCED_TOLERANCE = {"atol": 5e-2, "rtol": 5e-2, "min_agreement": 0.9}


def default_tolerance(precision: str) -> dict:
    """``atol``, ``rtol`` and the minimum top-1 prototype agreement used when none are given."""
    return dict(FP32_TOLERANCE if precision == "fp32" else REDUCED_TOLERANCE)


def _static_batch(runner) -> int | None:
    """The input's fixed batch size when the artifact has one (some compiled engines do)."""
    try:
        dim = runner.describe()["inputs"][0]["shape"][0]
    except Exception:  # noqa: BLE001 -- describe() is informative only
        return None
    return int(dim) if isinstance(dim, (int, np.integer)) and int(dim) > 0 else None


def _run_batches(runner, images: np.ndarray, target: str) -> dict[str, np.ndarray]:
    batch = _static_batch(runner) or len(images)
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        n = len(chunk)
        if n < batch:  # pad the last chunk of a fixed-batch artifact, then drop the padding
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
        out = run_model(runner, chunk, target)
        parts.append({k: v[:n] for k, v in out.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def verify_bundle(
    bundle_path: str | Path,
    *,
    target: str = "onnxruntime",
    precision: str = "fp32",
    guard: str = "prototypes",
    device: str | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    min_agreement: float | None = None,
    threads: int = 0,
    check_integrity: bool = True,
) -> dict:
    """Run the golden inputs on ``target`` and compare with the stored reference outputs.

    Tolerances default to :data:`FP32_TOLERANCE` for fp32 (atol 1e-4, rtol 1e-3, every top-1
    prototype the same) and :data:`REDUCED_TOLERANCE` otherwise. ``check_integrity=False`` skips the
    sha256 check (only to show that a modified golden file also fails numerically). Returns a
    JSON-able report whose ``passed`` says whether every output is within tolerance and the top-1
    prototype agreement reaches ``min_agreement``. A damaged bundle raises EdgeprotoError.
    """
    from edgeproto.runtimes import load_runner

    tol = default_tolerance(precision)
    atol = tol["atol"] if atol is None else float(atol)
    rtol = tol["rtol"] if rtol is None else float(rtol)
    min_agreement = tol["min_agreement"] if min_agreement is None else float(min_agreement)
    if atol < 0 or rtol < 0 or not 0.0 <= min_agreement <= 1.0:
        raise EdgeprotoError("atol and rtol must be >= 0 and min_agreement within [0, 1]")

    bundle = open_bundle(bundle_path, verify=check_integrity)
    golden = bundle.golden()
    missing = [n for n in ("image", *OUTPUTS) if n not in golden]
    if missing:
        raise EdgeprotoError(f"bundle {bundle.root} has no golden {', '.join(missing)}")
    runner = load_runner(bundle, target, precision, guard, device, threads)
    actual = _run_batches(runner, golden["image"], target)
    for n in OUTPUTS:
        if actual[n].shape != golden[n].shape:
            raise EdgeprotoError(
                f"{target} output {n} has shape {list(actual[n].shape)}, the golden reference "
                f"{list(golden[n].shape)}: the artifact does not belong to this bundle"
            )

    diffs = compare_outputs(golden, actual, OUTPUTS)
    for n in OUTPUTS:
        diffs[n]["within_tolerance"] = within_tolerance(golden[n], actual[n], atol, rtol)
    last = bundle.last_layer()
    agreement = top1_agreement(golden, actual, last)
    class_agreement = float((golden["logits"].argmax(1) == actual["logits"].argmax(1)).mean())
    passed = all(d["within_tolerance"] for d in diffs.values()) and agreement >= min_agreement
    return {
        "bundle": str(bundle.root),
        "integrity_checked": bool(check_integrity),
        "runtime": runtime_info(runner, target),
        "requested": {"target": target, "precision": precision, "guard": guard, "device": device},
        "images": int(len(golden["image"])),
        "atol": atol,
        "rtol": rtol,
        "min_agreement": min_agreement,
        "diffs": diffs,
        "top1_prototype_agreement": agreement,
        "top1_class_agreement": class_agreement,
        "passed": bool(passed),
    }
