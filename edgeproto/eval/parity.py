"""Numerical parity of output tensors, reported the way Polygraphy compares tensors."""

from __future__ import annotations

import numpy as np


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
    reference: dict[str, np.ndarray], actual: dict[str, np.ndarray], names=("logits", "scores", "maps")
) -> dict[str, dict[str, float]]:
    """:func:`tensor_diff` for each named output."""
    return {name: tensor_diff(reference[name], actual[name]) for name in names}
