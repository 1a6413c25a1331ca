"""Explanation agreement between two models whose prototypes share indices (a ProC-KD student and
its teacher): on the same images, is the most activated prototype the same? numpy only, so it runs
on PyTorch outputs and on a runtime's outputs alike."""

from __future__ import annotations

import numpy as np


def top_prototype_agreement(teacher_scores: np.ndarray, student_scores: np.ndarray, k: int = 5) -> dict[str, float]:
    """``top1``: share of images whose highest-scoring prototype (argmax of ``scores`` (N,M), the
    lowest index among ties) is the same in both; ``topk_overlap``: mean |top-k ∩ top-k| / k.

    Both arrays must have the same shape (the same images, the same prototypes)."""
    t, s = np.asarray(teacher_scores, dtype=np.float64), np.asarray(student_scores, dtype=np.float64)
    if t.shape != s.shape or t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f"scores must be two non-empty (N,M) arrays of one shape, got {t.shape} and {s.shape}")
    k = max(1, min(int(k), t.shape[1]))
    top1 = float(np.mean(t.argmax(axis=1) == s.argmax(axis=1)))
    # stable sort of the negated scores: ties keep the lower index first, as argmax does
    tk = np.argsort(-t, axis=1, kind="stable")[:, :k]
    sk = np.argsort(-s, axis=1, kind="stable")[:, :k]
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(tk.tolist(), sk.tolist())])
    return {"top1": top1, "topk_overlap": float(overlap), "k": k, "images": int(t.shape[0])}
