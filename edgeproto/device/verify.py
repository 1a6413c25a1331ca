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
from edgeproto.outputs import OUTPUTS, check_shapes, compare_golden, golden_passed, golden_tolerance, run_outputs

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

    Tolerances default to :data:`edgeproto.outputs.FP32_TOLERANCE` for fp32 (atol 1e-4, rtol 1e-3, every top-1
    prototype the same) and :data:`edgeproto.outputs.REDUCED_TOLERANCE` otherwise. ``check_integrity=False`` skips the
    sha256 check (only to show that a modified golden file also fails numerically). Returns a
    JSON-able report whose ``passed`` says whether every output is within tolerance and the top-1
    prototype agreement reaches ``min_agreement``. A damaged bundle raises EdgeprotoError.
    """
    from edgeproto.runtimes import load_runner

    tol = golden_tolerance(precision)
    if atol is not None or rtol is not None:
        tol["elementwise"] = True  # tolerances given explicitly always gate
    atol = tol["atol"] if atol is None else float(atol)
    rtol = tol["rtol"] if rtol is None else float(rtol)
    min_agreement = tol["min_agreement"] if min_agreement is None else float(min_agreement)
    if not (np.isfinite(atol) and np.isfinite(rtol) and atol >= 0 and rtol >= 0 and 0.0 <= min_agreement <= 1.0):
        raise EdgeprotoError("atol and rtol must be finite numbers >= 0 and min_agreement within [0, 1] "
                             f"(got atol={atol}, rtol={rtol}, min_agreement={min_agreement})")

    bundle = open_bundle(bundle_path, verify=check_integrity)
    golden = bundle.golden()
    missing = [n for n in ("image", *OUTPUTS) if n not in golden]
    if missing:
        raise EdgeprotoError(f"bundle {bundle.root} has no golden {', '.join(missing)}")
    runner = load_runner(bundle, target, precision, guard, device, threads)
    actual = run_outputs(runner, golden["image"], target)
    info = runner.info()
    runner.close()
    check_shapes(golden, actual, target, "the golden reference")
    check = compare_golden({k: golden[k] for k in OUTPUTS}, actual, bundle.prototype_classes(), atol=atol, rtol=rtol)
    diffs = check["diffs"]
    agreement = check["top1_prototype_agreement"]
    class_agreement = check["class_agreement"]
    passed = golden_passed(check, {**tol, "min_agreement": min_agreement})
    return {
        "bundle": str(bundle.root),
        "integrity_checked": bool(check_integrity),
        "runtime": {"target": target, **info},
        "requested": {"target": target, "precision": precision, "guard": guard, "device": device},
        "images": int(len(golden["image"])),
        "atol": atol,
        "rtol": rtol,
        "min_agreement": min_agreement,
        "min_class_agreement": tol["min_class_agreement"],
        "elementwise_gated": tol["elementwise"],
        "diffs": diffs,
        "top1_prototype_agreement": agreement,
        "top1_class_agreement": class_agreement,
        "passed": bool(passed),
    }
