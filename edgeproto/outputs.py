"""The explanation contract's outputs: their names, running a runner on a batch, and comparing two
sets of outputs (tensor parity the way Polygraphy reports it, plus prototype agreement).

Ground floor (numpy only): export, compile, verify and validate all compare through here.
"""

from __future__ import annotations

import numpy as np

from edgeproto.errors import EdgeprotoError
from edgeproto.ranking import top_prototypes

OUTPUTS = ("logits", "scores", "maps")

# The golden check's tolerances (``atol + rtol·|ref|`` and the least top-1 prototype agreement):
# strict for fp32, loose for reduced precision; compile records its check with them, verify gates on them.
FP32_TOLERANCE = {"atol": 1e-4, "rtol": 1e-3, "min_agreement": 1.0, "min_class_agreement": 0.0,
                  "elementwise": True}
REDUCED_TOLERANCE = {"atol": 5e-2, "rtol": 5e-2, "min_agreement": 0.9, "min_class_agreement": 0.0,
                     "elementwise": True}
# int8 moves every activation of the backbone by a quantization step: element-wise limits say little
# (they are recorded, not gated), so int8 is judged like ``validate`` judges it
# (edgeproto.compare.thresholds, int8: top-1 prototype agreement ≥ 0.85, prediction agreement ≥ 0.95,
# no max-abs limits) -- one verdict for compile, verify and validate.
INT8_TOLERANCE = {"atol": 5e-2, "rtol": 5e-2, "min_agreement": 0.85, "min_class_agreement": 0.95,
                  "elementwise": False}


def golden_tolerance(precision: str) -> dict:
    """``atol``, ``rtol``, ``min_agreement`` (top-1 prototype), ``min_class_agreement`` and whether the
    element-wise tolerance gates (``elementwise``) for the golden check of an artifact of ``precision``
    (``auto``, the artifact ``compile --precision auto`` chose, is judged like int8: it may be int8 or
    a bf16 hint, and its search already gated it on explanation fidelity)."""
    if precision == "fp32":
        return dict(FP32_TOLERANCE)
    return dict(INT8_TOLERANCE if precision in ("int8", "auto") else REDUCED_TOLERANCE)


def golden_passed(check: dict, tol: dict) -> bool:
    """The golden check's verdict under ``tol`` (:func:`golden_tolerance`): finite outputs, element-wise
    tolerance where it gates, and the least top-1 prototype and class agreement."""
    diffs = check["diffs"].values()
    finite = all(d.get("finite", True) for d in diffs)
    within = all(d["within_tolerance"] for d in diffs) if tol.get("elementwise", True) else True
    return bool(finite and within and check["top1_prototype_agreement"] >= tol["min_agreement"]
                and check.get("class_agreement", 1.0) >= tol.get("min_class_agreement", 0.0))


def tensor_diff(reference: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """Max / mean / p99 absolute and max / p99 relative error of ``actual`` against ``reference``."""
    ref = np.asarray(reference, dtype=np.float64)
    act = np.asarray(actual, dtype=np.float64)
    if ref.shape != act.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs actual {act.shape}")
    abs_err = np.abs(act - ref)
    rel_err = abs_err / np.maximum(np.abs(ref), 1e-12)
    finite = bool(np.isfinite(act).all())
    return {
        "max_abs": float(abs_err.max(initial=0.0)) if finite else float("inf"),
        "mean_abs": float(abs_err.mean()) if abs_err.size and finite else (0.0 if finite else float("inf")),
        "p99_abs": float(np.percentile(abs_err, 99)) if abs_err.size and finite else 0.0,
        "max_rel": float(rel_err.max(initial=0.0)) if finite else float("inf"),
        "p99_rel": float(np.percentile(rel_err, 99)) if rel_err.size and finite else 0.0,
        "finite": finite,
    }


def within_tolerance(reference: np.ndarray, actual: np.ndarray, atol: float, rtol: float) -> bool:
    """``|actual − reference| ≤ atol + rtol·|reference|`` everywhere, and all finite."""
    act = np.asarray(actual)
    return bool(np.isfinite(act).all() and np.allclose(act, reference, atol=atol, rtol=rtol))


def compare_outputs(
    reference: dict[str, np.ndarray], actual: dict[str, np.ndarray], names=OUTPUTS
) -> dict[str, dict[str, float]]:
    """:func:`tensor_diff` for each named output."""
    return {name: tensor_diff(reference[name], actual[name]) for name in names}


def static_batch(runner) -> int | None:
    """The input's fixed batch size when the artifact has one (some compiled engines do)."""
    try:
        dim = runner.describe()["inputs"][0]["shape"][0]
    except Exception:  # noqa: BLE001 -- describe() is informative only
        return None
    return int(dim) if isinstance(dim, (int, np.integer)) and int(dim) > 0 else None


def run_outputs(runner, images: np.ndarray, target: str | None = None) -> dict[str, np.ndarray]:
    """All outputs of ``runner`` for ``images`` (B,3,S,S), in chunks of the artifact's fixed batch
    when it has one (the last chunk padded, the padding dropped); the runtime's own exceptions and
    a missing output become one clear EdgeprotoError."""
    name = target or getattr(runner, "name", "runtime")
    images = np.ascontiguousarray(images, dtype=np.float32)
    batch = static_batch(runner) or len(images)
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, len(images), batch):
        chunk = images[start: start + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, axis=0)])
        try:
            out = runner.run(chunk)
        except EdgeprotoError:
            raise
        except Exception as exc:  # each runtime raises its own exception types
            raise EdgeprotoError(f"{name} failed to run the model: {exc}") from None
        missing = [o for o in OUTPUTS if o not in out]
        if missing:
            raise EdgeprotoError(f"the {name} model has no output(s) {', '.join(missing)} (explanation contract)")
        parts.append({k: np.asarray(v)[:n] for k, v in out.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def check_shapes(reference: dict[str, np.ndarray], actual: dict[str, np.ndarray], what: str, against: str) -> None:
    """Refuse outputs whose shapes differ from the reference's (an artifact of another model)."""
    for name in OUTPUTS:
        if name not in actual or np.shape(actual[name]) != np.shape(reference[name]):
            got = list(np.shape(actual[name])) if name in actual else "nothing"
            raise EdgeprotoError(f"{what} output {name} has shape {got}, {against} {list(np.shape(reference[name]))}: "
                                 "the artifact does not belong to this model")


def compare_golden(reference: dict[str, np.ndarray], actual: dict[str, np.ndarray], classes: np.ndarray, *,
                   atol: float, rtol: float, k: int = 5) -> dict:
    """One comparison of two output sets on the same images (export, compile and verify use it).

    ``diffs`` per output (:func:`tensor_diff` + ``within_tolerance`` of ``atol + rtol·|ref|``),
    whether all outputs are finite, top-1 prototype agreement, top-k overlap and class agreement;
    ``classes``: each prototype's class (:meth:`edgeproto.bundle.Bundle.prototype_classes`), which the
    ranking (:func:`edgeproto.ranking.top_prototypes`) needs.
    """
    diffs = compare_outputs(reference, actual)
    for name in OUTPUTS:
        diffs[name]["within_tolerance"] = within_tolerance(reference[name], actual[name], atol, rtol)
    ref_top = top_prototypes(reference["logits"], reference["scores"], classes, k)
    act_top = top_prototypes(actual["logits"], actual["scores"], classes, k)
    kk = ref_top.shape[1]
    n = len(ref_top)
    return {
        "images": int(n),
        "atol": float(atol),
        "rtol": float(rtol),
        "diffs": diffs,
        "finite": bool(all(np.isfinite(actual[o]).all() for o in OUTPUTS)),
        "top1_prototype_agreement": float((ref_top[:, 0] == act_top[:, 0]).mean()) if n else 1.0,
        "top5_prototype_overlap": float(np.mean([len(set(a) & set(b)) / kk for a, b in zip(ref_top, act_top)]))
        if n else 1.0,
        "class_agreement": float((reference["logits"].argmax(1) == actual["logits"].argmax(1)).mean()) if n else 1.0,
    }
