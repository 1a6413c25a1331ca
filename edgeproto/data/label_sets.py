"""Multi-label predictions against label sets: mAP, per-label F1, each label's transport map and the
pointing game per label. numpy only (scikit-learn for the average precision, imported when used),
so the trainer, the device side and ``validate`` share one definition.

A multi-label bundle's outputs (:mod:`edgeproto.models.patchct`): ``logits`` (B,C) one independent
logit per label (probability = sigmoid), ``scores`` (B,M) and ``maps`` (B,M,h,w) per label
embedding (prototype); a label's map is the transport plan of its best-scoring prototype
(:func:`label_maps`).
"""

from __future__ import annotations

import numpy as np

from edgeproto.maps import map_peak

THRESHOLD = 0.5  # a label is predicted when its probability is at least this


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Label probabilities of (B,C) logits (float64, overflow-free)."""
    x = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))


def predicted(logits: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """bool (B,C): the predicted label sets."""
    return sigmoid(logits) >= threshold


def mean_average_precision(targets: np.ndarray, logits: np.ndarray) -> dict:
    """mAP over the labels with at least one positive image (VOC/COCO multi-label practice), and each
    label's AP (None where the label has no positive)."""
    from sklearn.metrics import average_precision_score

    t = np.asarray(targets).astype(bool)
    s = np.asarray(logits, dtype=np.float64)
    ap = [float(average_precision_score(t[:, c], s[:, c])) if t[:, c].any() else None for c in range(t.shape[1])]
    known = [v for v in ap if v is not None]
    return {"map": float(np.mean(known)) if known else float("nan"), "label_ap": ap}


def label_f1(targets: np.ndarray, logits: np.ndarray, threshold: float = THRESHOLD) -> dict:
    """F1 of each label at ``threshold`` (0 where a label is never true nor predicted is reported as
    1.0: nothing to find, nothing claimed) and their mean (macro F1)."""
    t = np.asarray(targets).astype(bool)
    p = predicted(logits, threshold)
    tp = (t & p).sum(axis=0)
    denom = t.sum(axis=0) + p.sum(axis=0)
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 1.0)
    return {"label_f1": [float(v) for v in f1], "macro_f1": float(f1.mean())}


def label_prototypes(scores: np.ndarray, prototype_classes: np.ndarray, num_labels: int) -> np.ndarray:
    """(B,C): for each image and label, its prototype with the highest score (−1: a label without
    prototypes)."""
    scores = np.asarray(scores, dtype=np.float64)
    classes = np.asarray(prototype_classes)
    out = np.full((scores.shape[0], num_labels), -1, dtype=np.int64)
    for c in range(num_labels):
        own = np.nonzero(classes == c)[0]
        if len(own):
            out[:, c] = own[np.argmax(scores[:, own], axis=1)]
    return out


def label_maps(scores: np.ndarray, maps: np.ndarray, prototype_classes: np.ndarray, num_labels: int) -> np.ndarray:
    """(B,C,h,w): each label's transport map (its best prototype's plan; zeros without prototypes)."""
    maps = np.asarray(maps)
    best = label_prototypes(scores, prototype_classes, num_labels)
    out = np.zeros((maps.shape[0], num_labels) + maps.shape[2:], dtype=maps.dtype)
    for b in range(maps.shape[0]):
        for c in range(num_labels):
            if best[b, c] >= 0:
                out[b, c] = maps[b, best[b, c]]
    return out


class PointingGame:
    """Pointing game per label: over the images where a label is present (its part mask is not empty),
    the fraction whose label map peaks inside that label's ground-truth mask. ``part_of[c]``: the part
    index of label c in the part masks (None: the label has no part mask, not counted)."""

    def __init__(self, num_labels: int, size: int, part_of: list[int | None]) -> None:
        self.size, self.part_of = int(size), list(part_of)
        self.hits = np.zeros(num_labels, dtype=np.int64)
        self.counts = np.zeros(num_labels, dtype=np.int64)

    def add(self, label_map: np.ndarray, part_masks: np.ndarray) -> None:
        """One image: ``label_map`` (C,h,w), ``part_masks`` bool (P,S,S)."""
        for c, part in enumerate(self.part_of):
            if part is None or not part_masks[part].any():
                continue
            self.counts[c] += 1
            yx = map_peak(label_map[c], self.size)
            self.hits[c] += int(yx is not None and bool(part_masks[part][yx]))

    def result(self) -> dict:
        rate = [float(h / n) if n else None for h, n in zip(self.hits, self.counts)]
        known = [r for r in rate if r is not None]
        return {"pointing_game": float(sum(self.hits) / max(int(sum(self.counts)), 1)) if known else None,
                "label_pointing_game": rate, "label_images": [int(n) for n in self.counts]}


def part_index(classes: list[str], part_names: list[str]) -> list[int | None]:
    """For each label, the index of the part of the same name (None when there is none)."""
    return [part_names.index(c) if c in part_names else None for c in classes]
