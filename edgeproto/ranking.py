"""The explanation contract: which prototypes explain a prediction, and how strongly."""

from __future__ import annotations

import numpy as np


def contributions(logits: np.ndarray, scores: np.ndarray, last_layer: np.ndarray) -> np.ndarray:
    """score × class weight of every prototype for the predicted class, (B,M)."""
    predicted = np.asarray(logits).argmax(axis=1)
    return np.asarray(scores) * np.asarray(last_layer)[predicted]


def top_prototypes(logits: np.ndarray, scores: np.ndarray, last_layer: np.ndarray, k: int = 5) -> np.ndarray:
    """Indices (B,k) of the k prototypes that contribute most to each predicted class, best first."""
    contrib = contributions(logits, scores, last_layer)
    k = min(k, contrib.shape[1])
    return np.argsort(-contrib, axis=1, kind="stable")[:, :k]


def top1_agreement(reference: dict, actual: dict, last_layer: np.ndarray) -> float:
    """Fraction of images whose most-contributing prototype is the same on both sides."""
    ref = top_prototypes(reference["logits"], reference["scores"], last_layer, 1)[:, 0]
    act = top_prototypes(actual["logits"], actual["scores"], last_layer, 1)[:, 0]
    return float((ref == act).mean()) if len(ref) else 1.0
