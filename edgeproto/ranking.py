"""The explanation contract: which prototypes explain a prediction, in which order.

Rule (``explain.rank_by`` = :data:`RANK_BY` in the manifest): the prototypes of the predicted
class come first, by similarity score (highest first); then every other prototype, by score. This
is how ProtoPNet's local analysis lists "the most activated prototypes of the predicted class", and
it is shift-invariant: adding a constant to all scores (log-densities of HyperPg / Gaussian
prototypes, cosine, −d²) never reorders it, whereas ``score × class weight`` does and, with
negative scores, puts a wrong class's prototype first.

A prototype's class comes from the bundle (``manifest.prototypes[j]["class"]``); a prototype merged
into another one (``merged_into``) or pruned (``pruned``) has no class here (−1) and ranks after all
active ones. NaN scores rank last.

Per-pixel logits (B,C,H,W) of a segmentation model rank by their image mean (B,C); a segmentation
explains each predicted region with its own ranking (``edgeproto.device.segmentation``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RANK_BY = "predicted-class prototypes by similarity, then the others by similarity"


def prototype_classes(prototypes: Sequence[dict]) -> np.ndarray:
    """(M,) class of each prototype record of a bundle or checkpoint; −1 for one that takes no part
    in explanations (merged into another prototype, pruned, or without a class)."""
    out = np.full(len(prototypes), -1, dtype=np.int64)
    for j, rec in enumerate(prototypes):
        if rec.get("merged_into") is None and not rec.get("pruned"):
            out[j] = int(rec.get("class", -1))
    return out


def image_logits(logits: np.ndarray) -> np.ndarray:
    """(B,C) logits: as given, or the mean over the locations of per-pixel logits (B,C,H,W)."""
    logits = np.asarray(logits, dtype=np.float64)
    return logits.reshape(*logits.shape[:2], -1).mean(axis=2) if logits.ndim > 2 else logits


def ranking(logits: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """All prototype indices (B,M), best first (see the module docstring)."""
    logits = image_logits(logits)
    scores = np.asarray(scores, dtype=np.float64)
    classes = np.asarray(classes, dtype=np.int64)
    if scores.ndim != 2 or classes.shape != (scores.shape[1],):
        raise ValueError(f"scores {scores.shape} and prototype classes {classes.shape} do not match")
    predicted = np.where(np.isnan(logits), -np.inf, logits).argmax(axis=1) if len(logits) else np.zeros(0, int)
    own = classes[None, :] == predicted[:, None]  # (B,M)
    nan = np.isnan(scores)
    key = np.where(nan, np.inf, -scores)
    inactive = classes < 0
    order = np.empty(scores.shape, dtype=np.int64)
    for i in range(len(scores)):  # lexsort: the last key is the primary one
        order[i] = np.lexsort((key[i], inactive, ~own[i], nan[i]))
    return order


def top_prototypes(logits: np.ndarray, scores: np.ndarray, classes: np.ndarray, k: int = 5) -> np.ndarray:
    """Indices (B,k) of the k prototypes that explain each prediction, best first."""
    order = ranking(logits, scores, classes)
    return order[:, : min(int(k), order.shape[1])]


def contributions(logits: np.ndarray, scores: np.ndarray, last_layer: np.ndarray) -> np.ndarray:
    """score × class weight of every prototype for the predicted class, (B,M): the prototype's term
    in the predicted logit for a linear head. Reported beside the ranking, never used for it."""
    predicted = image_logits(logits).argmax(axis=1)
    return np.asarray(scores) * np.asarray(last_layer)[predicted]


def top1_agreement(reference: dict, actual: dict, classes: np.ndarray) -> float:
    """Fraction of images whose top-1 explaining prototype is the same on both sides."""
    ref = top_prototypes(reference["logits"], reference["scores"], classes, 1)[:, 0]
    act = top_prototypes(actual["logits"], actual["scores"], classes, 1)[:, 0]
    return float((ref == act).mean()) if len(ref) else 1.0
