"""How good is a heatmap? Deletion / insertion AUC and the pointing game (numpy only, no torch).

- **deletion** and **insertion** (Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for
  Explanation of Black-box Models", BMVC 2018): the pixels are ranked by heatmap value (highest
  first; ties in row-major order) and removed from the image (deletion) or inserted into a blank
  canvas (insertion) in ``steps`` equal steps (pixel counts ``round(k·P/steps)``, k = 0..steps, all
  channels of a pixel at once); the model's probability of the explained class is recorded at every
  step, and the score is the area under that curve over the fraction of pixels, x ∈ [0, 1]
  (trapezoid rule). Good heatmaps have a **low** deletion AUC (the evidence goes first) and a **high**
  insertion AUC. The removed / not yet inserted pixels take ``baseline`` in the *normalised* input
  space -- 0 by default, i.e. the dataset's mean colour, for both curves (RISE deletes to black and
  inserts into a blurred copy; one flat baseline keeps the two curves comparable and adds no
  information of its own);
- **pointing game** (Zhang et al., ECCV 2016): a hit when the heatmap's maximum (the first in
  row-major order) lies inside a ground-truth part mask, or within ``tolerance`` pixels of one
  (:func:`edgeproto.compare.localization.points_at`); images without any part pixel are not counted.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgeproto.compare.localization import points_at
from edgeproto.errors import EdgeprotoError

STEPS = 32
MODES = ("deletion", "insertion")


def pixel_order(heatmap: np.ndarray) -> np.ndarray:
    """Flat pixel indices, highest heatmap value first (ties: row-major order)."""
    h = np.asarray(heatmap, dtype=np.float64)
    if h.ndim != 2 or not np.isfinite(h).all():
        raise EdgeprotoError(f"a heatmap must be a finite 2-D array, got shape {h.shape}")
    return np.argsort(-h.ravel(), kind="stable")


def perturbation_curve(prob_fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, heatmap: np.ndarray,
                       class_index: int, mode: str, *, steps: int = STEPS, baseline: float = 0.0,
                       batch: int = 64) -> np.ndarray:
    """(steps + 1,) probabilities of ``class_index`` as pixels are deleted / inserted (see module doc).

    ``x``: the normalised input (C,S,S); ``prob_fn``: (N,C,S,S) float32 → class probabilities (N,K);
    ``heatmap``: (S,S) at the input's resolution."""
    if mode not in MODES:
        raise EdgeprotoError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 3 or np.asarray(heatmap).shape != x.shape[1:]:
        raise EdgeprotoError(f"heatmap {np.asarray(heatmap).shape} must match the input's pixels {x.shape[1:]}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise EdgeprotoError(f"steps must be a positive integer, got {steps!r}")
    order = pixel_order(heatmap)
    pixels = len(order)
    counts = np.rint(np.arange(steps + 1) * pixels / steps).astype(np.int64)
    rank = np.empty(pixels, dtype=np.int64)
    rank[order] = np.arange(pixels)  # a pixel's position in the order
    probs = np.empty(steps + 1)
    for start in range(0, steps + 1, batch):
        ks = counts[start: start + batch]
        first = (rank[None, :] < ks[:, None]).reshape(len(ks), 1, *x.shape[1:])  # the first k pixels
        keep = ~first if mode == "deletion" else first
        images = np.where(keep, x[None], np.float32(baseline)).astype(np.float32)
        probs[start: start + len(ks)] = np.asarray(prob_fn(images), dtype=np.float64)[:, int(class_index)]
    return probs


def auc(curve: np.ndarray) -> float:
    """Area under a curve sampled at equal steps over x ∈ [0, 1] (trapezoid rule)."""
    y = np.asarray(curve, dtype=np.float64)
    if len(y) < 2:
        raise EdgeprotoError("a curve needs at least two points")
    return float(((y[:-1] + y[1:]) / 2).sum() / (len(y) - 1))


def deletion_insertion(prob_fn, x: np.ndarray, heatmap: np.ndarray, class_index: int, *, steps: int = STEPS,
                       baseline: float = 0.0) -> dict:
    """``{"deletion": AUC, "insertion": AUC, "deletion_curve": [...], "insertion_curve": [...]}``."""
    out = {}
    for mode in MODES:
        curve = perturbation_curve(prob_fn, x, heatmap, class_index, mode, steps=steps, baseline=baseline)
        out[mode] = auc(curve)
        out[f"{mode}_curve"] = [float(v) for v in curve]
    return out


def pointing_hit(heatmap: np.ndarray, part_masks: np.ndarray, tolerance: float = 0.0) -> bool | None:
    """Whether the heatmap's maximum is in (or within ``tolerance`` px of) a part; None: no part pixel."""
    masks = np.asarray(part_masks, dtype=bool)
    h = np.asarray(heatmap, dtype=np.float64)
    if masks.ndim != 3 or masks.shape[1:] != h.shape:
        raise EdgeprotoError(f"part masks {masks.shape} must be (P, {h.shape[0]}, {h.shape[1]})")
    if not masks.any():
        return None
    y, x = np.unravel_index(int(pixel_order(h)[0]), h.shape)
    return points_at(masks, int(y), int(x), tolerance)
