"""Where do prototypes point? Localization against ground-truth parts (numpy only, no torch).

The interpretability metrics of Huang et al., ICCV 2023 ("Evaluation and Improvement of
Interpretability for Self-Explainable Part-Prototype Networks"), as their public code computes them
(hqhQAQ/EvalProtoPNet @ ab33e5d, ``util/eval_interpretability.py`` and ``util/local_parts.py``,
read for this module), for datasets with part masks (``part_masks(i)``: bool (P,S,S) per image; a
part is *visible* in an image when its mask is not empty):

- a prototype's **box** on an image: the pixels within ``half`` of the argmax of its similarity map
  upsampled to the input (bicubic, as :func:`edgeproto.maps.upsample_map`), both ends inclusive
  and clipped at the border: ``max(0, y−half) ≤ py ≤ min(S, y+half)``, the same for x (their
  ``region_pred`` with ``half_size=36`` and the inclusive ``in_bbox``: 73 px wide at 224 px).
  ``half`` is 36 at 224 px, scaled to the input (:func:`box_half`);
- a part is **hit** when its location lies in the box. Their parts are keypoints; here a part is a
  mask and its location is the mask's centroid (for CUB, whose masks are disks around the
  keypoints, that is the keypoint itself);
- **consistency**: for each prototype, over the images of its class, every part's hit rate *among
  the images where that part is visible* (a part never visible: rate 0); the prototype is
  consistent when some part's rate is ≥ ``threshold`` (0.8); the score is the fraction of
  consistent prototypes among those with at least one image of their class (EvalProtoPNet would
  count a prototype whose class has no test image as inconsistent; merged or pruned prototypes,
  class −1 in :func:`edgeproto.ranking.prototype_classes`, are not counted);
- **stability**: for each prototype, over the images of its class, the fraction whose vector of hit
  parts is unchanged when noise N(0, 0.2²) clipped to ±0.25 is added to the (normalized) input
  (:func:`noisy_inputs`, their ``perturb_img(std=0.2, eps=0.25)``); the score is the mean over
  prototypes (a non-finite map, which points nowhere, is a miss for consistency and the pointing
  game and unstable);
- **pointing game** (Zhang et al., ECCV 2016, "Top-down neural attention by excitation backprop";
  not in EvalProtoPNet): the fraction of images whose top-1 prototype's upsampled argmax lies inside
  a ground-truth part mask of the image (images without any part pixel are not counted). Zhang et
  al. count a hit within a 15-px tolerance of the mask; ``pointing_tolerance`` (px, default 0:
  strictly inside) offers that. (The 15 px is as the issue and the paper's text report it; their
  code was not checked here.)

:class:`LocalizationAccumulator` takes batches (so a whole test split never has to be held at once);
:func:`localization` does it for whole arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgeproto.maps import map_peak

BOX_HALF_AT_224 = 36
CONSISTENCY_THRESHOLD = 0.8
STABILITY_NOISE_STD = 0.2
STABILITY_NOISE_CLIP = 0.25
ZHANG_POINTING_TOLERANCE_PX = 15


def box_half(size: int) -> int:
    """Half side in pixels of the part box for ``size``-pixel inputs (36 at 224)."""
    return max(1, int(round(BOX_HALF_AT_224 * int(size) / 224)))


def peak_box(y: int, x: int, size: int, half: int) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)``, all four **inclusive**, of the box of pixels within ``half`` of (y, x),
    clipped as EvalProtoPNet clips it (``max(0, ·)``, ``min(size, ·)``)."""
    return max(0, x - half), max(0, y - half), min(size, x + half), min(size, y + half)


def part_points(masks: np.ndarray) -> np.ndarray:
    """(P, 2) float (y, x): the centroid of each part mask's pixel centres; NaN for absent parts."""
    masks = np.asarray(masks, dtype=bool)
    out = np.full((masks.shape[0], 2), np.nan)
    for p, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if len(ys):
            out[p] = ys.mean(), xs.mean()
    return out


def parts_in_box(points: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
    """bool (P,): which part locations lie in the inclusive box (absent parts, no box: False)."""
    hit = np.zeros(len(points), dtype=bool)
    if box is None:
        return hit
    x0, y0, x1, y1 = box
    ys, xs = points[:, 0], points[:, 1]
    ok = np.isfinite(ys)
    hit[ok] = (ys[ok] >= y0) & (ys[ok] <= y1) & (xs[ok] >= x0) & (xs[ok] <= x1)
    return hit


def points_at(masks: np.ndarray, y: int, x: int, tolerance: float = 0.0) -> bool:
    """Whether pixel (y, x) is in a part mask, or within ``tolerance`` pixels of one."""
    masks = np.asarray(masks, dtype=bool)
    if masks[:, y, x].any():
        return True
    if tolerance <= 0:
        return False
    ys, xs = np.nonzero(masks.any(axis=0))
    return bool(len(ys) and (np.hypot(ys - y, xs - x) <= tolerance).any())


def noisy_inputs(images: np.ndarray, ids: Sequence[int], std: float = STABILITY_NOISE_STD,
                 seed: int = 0, clip: float | None = STABILITY_NOISE_CLIP) -> np.ndarray:
    """``images`` plus N(0, std²) noise clipped to ±``clip`` (None: unclipped) in the normalized
    input space; image ``ids[i]``'s noise depends only on (seed, id), so reference and target (and
    any batching) see the same noisy input."""
    images = np.asarray(images, dtype=np.float32)
    noise = np.stack([np.random.default_rng([int(seed), int(i)]).normal(0.0, std, images.shape[1:])
                      for i in ids]) if len(ids) else np.zeros_like(images)
    if clip is not None:
        noise = np.clip(noise, -clip, clip)
    return (images + noise).astype(np.float32)


class LocalizationAccumulator:
    """Collects part hits batch by batch; :meth:`result` gives pointing game, consistency, stability."""

    def __init__(self, prototype_classes: Sequence[int], size: int, *, half: int | None = None,
                 threshold: float = CONSISTENCY_THRESHOLD, part_names: Sequence[str] | None = None,
                 pointing_tolerance: float = 0.0) -> None:
        self.prototype_classes = np.asarray(prototype_classes, dtype=np.int64)
        self.size = int(size)
        self.half = int(half) if half else box_half(self.size)
        self.threshold = float(threshold)
        self.pointing_tolerance = float(pointing_tolerance)
        self.part_names = list(part_names) if part_names is not None else None
        m = len(self.prototype_classes)
        self.hits: list[list[np.ndarray]] = [[] for _ in range(m)]
        self.visible: list[list[np.ndarray]] = [[] for _ in range(m)]
        self.stable: list[list[bool]] = [[] for _ in range(m)]
        self.pointing: list[bool] = []
        self.pointing_ids: list[int] = []
        self.images = 0

    def _hits(self, map2d: np.ndarray, points: np.ndarray) -> np.ndarray | None:
        """Which parts the map's box holds; None for a non-finite map (it points nowhere)."""
        p = map_peak(map2d, self.size)
        return None if p is None else parts_in_box(points, peak_box(p[0], p[1], self.size, self.half))

    def add(self, maps: np.ndarray, part_masks, labels: Sequence[int], top1: Sequence[int],
            noisy_maps: np.ndarray | None = None, ids: Sequence[int] | None = None) -> None:
        """One batch: ``maps`` (B,M,H,W), ``part_masks`` B arrays (P,S,S) (None: image skipped),
        ground-truth ``labels`` (B,), each image's ``top1`` prototype (B,), optionally the maps of
        the noisy inputs (for stability) and the images' ids."""
        maps = np.asarray(maps)
        for i in range(len(maps)):
            masks = part_masks[i]
            if masks is None:
                continue
            masks = np.asarray(masks, dtype=bool)
            self.images += 1
            if masks.any():
                p = map_peak(maps[i, int(top1[i])], self.size)
                self.pointing.append(bool(p is not None and points_at(masks, p[0], p[1], self.pointing_tolerance)))
                self.pointing_ids.append(int(ids[i]) if ids is not None else len(self.pointing_ids))
            points = part_points(masks)
            visible = np.isfinite(points[:, 0])
            for j in np.nonzero(self.prototype_classes == int(labels[i]))[0]:
                hits = self._hits(maps[i, j], points)
                self.hits[j].append(hits if hits is not None else np.zeros(len(points), dtype=bool))
                self.visible[j].append(visible)
                if noisy_maps is not None:  # a non-finite map on either input is not stable
                    noisy = self._hits(noisy_maps[i, j], points)
                    self.stable[j].append(hits is not None and noisy is not None and bool(np.array_equal(hits, noisy)))

    def result(self) -> dict:
        """Summary figures (None where nothing could be measured) and per-prototype details."""
        protos = []
        for j, rows in enumerate(self.hits):
            rec: dict = {"prototype": j, "class": int(self.prototype_classes[j]), "images": len(rows)}
            if rows:  # hit rate among the images where the part is visible (0 when never visible)
                seen = np.stack(self.visible[j]).sum(axis=0)
                rates = np.stack(rows).sum(axis=0) / np.maximum(seen, 1)
                best = int(rates.argmax())
                rec.update(best_part=best, best_part_name=(self.part_names[best] if self.part_names
                                                           and best < len(self.part_names) else str(best)),
                           best_rate=float(rates[best]), consistent=bool(rates[best] >= self.threshold),
                           part_rates=[float(r) for r in rates])
            if self.stable[j]:
                rec["stability"] = float(np.mean(self.stable[j]))
            protos.append(rec)
        measured = [r for r in protos if r["images"]]
        stab = [r["stability"] for r in protos if "stability" in r]
        return {
            "images": self.images,
            "box_half_px": self.half,
            "box_px": 2 * self.half + 1,
            "pointing_tolerance_px": self.pointing_tolerance,
            "threshold": self.threshold,
            "pointing_game": float(np.mean(self.pointing)) if self.pointing else None,
            "pointing_images": len(self.pointing),
            "consistency": float(np.mean([r["consistent"] for r in measured])) if measured else None,
            "consistent_prototypes": int(sum(r["consistent"] for r in measured)),
            "measured_prototypes": len(measured),
            "stability": float(np.mean(stab)) if stab else None,
            "prototypes": protos,
        }


def localization(maps: np.ndarray, part_masks, prototype_classes: Sequence[int], labels: Sequence[int],
                 top1: Sequence[int], size: int | None = None, *, noisy_maps: np.ndarray | None = None,
                 half: int | None = None, threshold: float = CONSISTENCY_THRESHOLD,
                 part_names: Sequence[str] | None = None, pointing_tolerance: float = 0.0) -> dict:
    """Pointing game, consistency and (with ``noisy_maps``) stability for whole arrays.

    ``size`` defaults to the masks' side. See :class:`LocalizationAccumulator`.
    """
    if size is None:
        first = next((m for m in part_masks if m is not None), None)
        size = int(np.asarray(first).shape[-1]) if first is not None else int(np.asarray(maps).shape[-1])
    acc = LocalizationAccumulator(prototype_classes, size, half=half, threshold=threshold, part_names=part_names,
                                  pointing_tolerance=pointing_tolerance)
    acc.add(maps, part_masks, labels, top1, noisy_maps)
    return acc.result()
