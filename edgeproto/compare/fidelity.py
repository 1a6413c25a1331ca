"""Explanation fidelity: does the deployed model explain each image the way the PyTorch reference does?

numpy + scipy only (no torch). Both sides are output dicts ``{"logits" (N,C), "scores" (N,M),
"maps" (N,M,H,W)}`` for the same N inputs; ``classes`` (M,), each prototype's class from the
bundle, is what the ranking needs (:mod:`edgeproto.ranking`: the predicted class's prototypes by
similarity, then the others). Per image:

- ``prediction``: same predicted class;
- ``top1``: same most-contributing prototype (top-1 prototype agreement);
- ``topk_overlap``: |top-k(ref) ∩ top-k(actual)| / k, and ``topk_set``: the two top-k sets are equal;
- ``kendall_tau``: Kendall τ-b between the two score vectors (all M prototypes);
- for each of the reference's top-k prototypes (the same prototype index on both sides):
  ``map_pearson`` (Pearson of the raw (H,W) maps), ``map_iou`` (IoU of the ≥95th-percentile masks of
  the maps upsampled to the input size, ProtoPNet's "high activation" region), ``box_iou`` (IoU of
  the two :func:`~edgeproto.maps.high_activation_box` boxes), ``argmax`` (the maps peak in the
  same latent cell: the location the prototype points at), ``argmax_pixel`` (the upsampled maps peak
  at the very same input pixel, a stricter figure that moves with tiny value changes) and
  ``argmax_distance`` (pixels between the upsampled peaks); per image the mean over the k
  prototypes (``*_top1``: the reference's top-1 prototype alone).

Non-finite outputs (a broken quantized artifact) never raise: the affected values count as
disagreement (Pearson/IoU 0, argmax different). :func:`summarize` turns the per-image arrays into
means; :func:`worst_images` lists the images that disagree most.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import kendalltau

from edgeproto.maps import high_activation_box, upsample_map
from edgeproto.ranking import ranking

PERCENTILE = 95.0
DEFAULT_K = 5

# per-image arrays whose mean is the summary figure (in this order in reports)
SUMMARY_KEYS = ("prediction", "top1", "topk_overlap", "topk_set", "kendall_tau", "map_pearson", "map_iou",
                "box_iou", "argmax", "argmax_pixel", "map_pearson_top1", "map_iou_top1", "argmax_top1")


def _ranking(logits: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Prototype indices (N,M), best first (:func:`edgeproto.ranking.ranking`); NaN ranks last."""
    return ranking(logits, scores, classes)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equally shaped arrays; 1.0 for two constant arrays (e.g. 1×1 maps:
    no spatial pattern to disagree on; their values are judged by the parity figures), 0.0 for a
    constant vs a varying one or for non-finite input."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return 0.0
    da, db = a - a.mean(), b - b.mean()
    na, nb = float(np.sqrt((da * da).sum())), float(np.sqrt((db * db).sum()))
    if na == 0.0 or nb == 0.0:
        return 1.0 if (na == 0.0 and nb == 0.0) else 0.0
    return float(np.clip((da * db).sum() / (na * nb), -1.0, 1.0))


def kendall(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall τ-b of two score vectors; 1.0 when identical (also when constant), 0.0 when undefined."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if np.array_equal(a, b):
        return 1.0
    if len(a) < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return 0.0
    tau = kendalltau(a, b).statistic
    return float(tau) if np.isfinite(tau) else 0.0


def high_mask(up: np.ndarray, percentile: float = PERCENTILE) -> np.ndarray:
    """bool mask of the pixels of an upsampled map at or above its ``percentile``."""
    return up >= np.percentile(up, percentile)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def box_iou(a, b) -> float:
    """IoU of two ``[x0, y0, x1, y1]`` boxes (x1, y1 exclusive)."""
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 1.0


def compare_maps(ref_map: np.ndarray, act_map: np.ndarray, size: int,
                 percentile: float = PERCENTILE) -> dict[str, float]:
    """Pearson, high-activation mask IoU, box IoU and argmax agreement (latent cell and upsampled
    pixel) of one prototype's two maps.

    ``size``: the input side the maps are upsampled to (bicubic, as ProtoPNet draws heatmaps).
    """
    if not (np.isfinite(ref_map).all() and np.isfinite(act_map).all()):
        return {"pearson": 0.0, "iou": 0.0, "box_iou": 0.0, "argmax": False, "argmax_pixel": False,
                "argmax_distance": float("nan")}
    up_r, up_a = upsample_map(ref_map, size), upsample_map(act_map, size)
    pr = np.unravel_index(int(up_r.argmax()), up_r.shape)
    pa = np.unravel_index(int(up_a.argmax()), up_a.shape)
    return {
        "pearson": pearson(ref_map, act_map),
        "iou": mask_iou(high_mask(up_r, percentile), high_mask(up_a, percentile)),
        "box_iou": box_iou(high_activation_box(up_r, percentile), high_activation_box(up_a, percentile)),
        "argmax": bool(int(np.argmax(ref_map)) == int(np.argmax(act_map))),
        "argmax_pixel": bool(pr == pa),
        "argmax_distance": float(np.hypot(pr[0] - pa[0], pr[1] - pa[1])),
    }


def per_image(reference: dict, actual: dict, classes: np.ndarray, *, k: int = DEFAULT_K,
              size: int | None = None, percentile: float = PERCENTILE) -> dict[str, np.ndarray]:
    """Fidelity of every image: a dict of (N,) arrays (see the module docstring), plus the
    reference's and the actual top-1 prototypes and predicted classes (``ref_top1``, ``act_top1``,
    ``ref_pred``, ``act_pred``). ``size`` defaults to the maps' own height (no upsampling)."""
    ref_logits, act_logits = np.asarray(reference["logits"]), np.asarray(actual["logits"])
    ref_scores, act_scores = np.asarray(reference["scores"]), np.asarray(actual["scores"])
    ref_maps, act_maps = np.asarray(reference["maps"]), np.asarray(actual["maps"])
    for name, r, a in (("logits", ref_logits, act_logits), ("scores", ref_scores, act_scores),
                       ("maps", ref_maps, act_maps)):
        if r.shape != a.shape:
            raise ValueError(f"{name}: reference {r.shape} vs actual {a.shape}")
    n, m = ref_scores.shape
    k = max(1, min(int(k), m))
    size = int(size) if size else int(ref_maps.shape[2])
    rank_r = _ranking(ref_logits, ref_scores, classes)
    rank_a = _ranking(act_logits, act_scores, classes)
    act_logits_clean = np.where(np.isnan(act_logits), -np.inf, act_logits)
    out = {
        "ref_pred": ref_logits.argmax(axis=1).astype(np.int64),
        "act_pred": act_logits_clean.argmax(axis=1).astype(np.int64) if n else np.zeros(0, np.int64),
        "ref_top1": rank_r[:, 0].astype(np.int64) if n else np.zeros(0, np.int64),
        "act_top1": rank_a[:, 0].astype(np.int64) if n else np.zeros(0, np.int64),
    }
    out["prediction"] = out["ref_pred"] == out["act_pred"]
    out["top1"] = out["ref_top1"] == out["act_top1"]
    names = ("topk_overlap", "topk_set", "kendall_tau", "map_pearson", "map_iou", "box_iou", "argmax",
             "argmax_pixel", "argmax_distance", "map_pearson_top1", "map_iou_top1", "argmax_top1")
    vals = {name: np.zeros(n, dtype=np.float64) for name in names}
    for i in range(n):
        top_r, top_a = rank_r[i, :k], rank_a[i, :k]
        common = len(set(top_r.tolist()) & set(top_a.tolist()))
        vals["topk_overlap"][i] = common / k
        vals["topk_set"][i] = float(common == k)
        vals["kendall_tau"][i] = kendall(ref_scores[i], act_scores[i])
        per_proto = [compare_maps(ref_maps[i, j], act_maps[i, j], size, percentile) for j in top_r]
        vals["map_pearson"][i] = np.mean([c["pearson"] for c in per_proto])
        vals["map_iou"][i] = np.mean([c["iou"] for c in per_proto])
        vals["box_iou"][i] = np.mean([c["box_iou"] for c in per_proto])
        vals["argmax"][i] = np.mean([c["argmax"] for c in per_proto])
        vals["argmax_pixel"][i] = np.mean([c["argmax_pixel"] for c in per_proto])
        vals["argmax_distance"][i] = np.mean([c["argmax_distance"] for c in per_proto])
        vals["map_pearson_top1"][i] = per_proto[0]["pearson"]
        vals["map_iou_top1"][i] = per_proto[0]["iou"]
        vals["argmax_top1"][i] = float(per_proto[0]["argmax"])
    out.update(vals)
    out["topk_set"] = out["topk_set"].astype(bool)
    out["argmax_top1"] = out["argmax_top1"].astype(bool)
    return out


def concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join the per-image dicts of several batches."""
    if not parts:
        return {}
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def summarize(values: dict[str, np.ndarray], k: int = DEFAULT_K) -> dict:
    """Mean of each per-image figure (fractions for the booleans), with the image count and k."""
    n = len(values.get("top1", ()))
    summary: dict = {"images": int(n), "k": int(k)}
    for key in SUMMARY_KEYS:
        arr = values.get(key)
        summary[key] = float(np.mean(arr)) if arr is not None and len(arr) else None
    dist = values.get("argmax_distance")
    summary["argmax_distance_px"] = float(np.nanmean(dist)) if dist is not None and np.isfinite(dist).any() else None
    return summary


def fidelity(reference: dict, actual: dict, classes: np.ndarray, *, k: int = DEFAULT_K,
             size: int | None = None, percentile: float = PERCENTILE) -> dict:
    """``{"summary": {...}, "per_image": {...}}`` for two whole output dicts."""
    values = per_image(reference, actual, classes, k=k, size=size, percentile=percentile)
    return {"summary": summarize(values, k), "per_image": values}


def badness(values: dict[str, np.ndarray]) -> np.ndarray:
    """One number per image, larger = the explanation changed more (a changed top-1 prototype or
    prediction dominates, then the map and ranking differences)."""
    return (2.0 * (~values["top1"]) + 2.0 * (~values["prediction"]) + (1 - values["map_iou"])
            + (1 - values["map_pearson"]) + (1 - values["topk_overlap"]) + 0.5 * (1 - values["kendall_tau"]))


def worst_images(values: dict[str, np.ndarray], ids, n: int = 5) -> list[dict]:
    """The ``n`` images whose explanations differ most, worst first, each by its dataset id."""
    ids = np.asarray(ids)
    if not len(ids):
        return []
    bad = badness(values)
    order = np.argsort(-bad, kind="stable")[: max(0, int(n))]
    rows = []
    for i in order.tolist():
        rows.append({
            "position": int(i),
            "id": int(ids[i]),
            "badness": float(bad[i]),
            "ref_pred": int(values["ref_pred"][i]),
            "act_pred": int(values["act_pred"][i]),
            "ref_top1": int(values["ref_top1"][i]),
            "act_top1": int(values["act_top1"][i]),
            "top1": bool(values["top1"][i]),
            "prediction": bool(values["prediction"][i]),
            "topk_overlap": float(values["topk_overlap"][i]),
            "kendall_tau": float(values["kendall_tau"][i]),
            "map_pearson": float(values["map_pearson"][i]),
            "map_iou": float(values["map_iou"][i]),
            "argmax": float(values["argmax"][i]),
        })
    return rows
