"""Where do prototypes point? Localization against ground-truth parts (numpy only, no torch).

The interpretability metrics of Huang et al., ICCV 2023 ("Evaluation and Improvement of
Interpretability for Self-Explainable Part-Prototype Networks"), for datasets with part masks
(``part_masks(i)``: bool (P,S,S) per image; a part is absent when its mask is empty):

- a prototype's **box** on an image: a square of side ``72/224·S`` (72 px at the paper's 224-px
  inputs) centred on the argmax of its similarity map upsampled to the input (bicubic, as
  :func:`edgeproto.maps.upsample_map`), clipped at the image border;
- a part is **hit** when its location lies in the box. The paper's parts are keypoints; here a part
  is a mask, and its location is the mask's centroid (for CUB, whose masks are disks around the
  keypoints, that is the keypoint itself);
- **consistency**: for each prototype, over the images of its class, the hit rate of every part
  (absent parts count as misses); the prototype is consistent when some part's rate is
  ≥ ``threshold`` (0.8); the score is the fraction of consistent prototypes;
- **stability**: for each prototype, over the images of its class, the fraction whose set of hit
  parts is unchanged when N(0, 0.2²) noise is added to the (normalized) input
  (:func:`noisy_inputs`); the score is the mean over prototypes (a non-finite map, which points
  nowhere, is a miss for consistency and the pointing game and unstable);
- **pointing game**: the fraction of images whose top-1 prototype's upsampled argmax lies inside a
  ground-truth part mask of the image (images without any part pixel are not counted).

:class:`LocalizationAccumulator` takes batches (so a whole test split never has to be held at once);
:func:`localization` does it for whole arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgeproto.maps import upsample_map

BOX_FRACTION = 72 / 224
CONSISTENCY_THRESHOLD = 0.8
STABILITY_NOISE_STD = 0.2


def box_side(size: int) -> int:
    """Side in pixels of the part box for ``size``-pixel inputs (72 at 224)."""
    return max(1, int(round(BOX_FRACTION * int(size))))


def peak(map2d: np.ndarray, size: int) -> tuple[int, int] | None:
    """(y, x) of the maximum of the map upsampled to ``size``; None for a non-finite map."""
    m = np.asarray(map2d, dtype=np.float64)
    if not np.isfinite(m).all():
        return None
    up = upsample_map(m, size)
    y, x = np.unravel_index(int(up.argmax()), up.shape)
    return int(y), int(x)


def peak_box(y: int, x: int, size: int, side: int) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` (exclusive ends) of the ``side``-pixel square centred on pixel (y, x),
    clipped to the ``size`` × ``size`` image."""
    half = side // 2
    x0, y0 = x - half, y - half
    return max(0, x0), max(0, y0), min(size, x0 + side), min(size, y0 + side)


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
    """bool (P,): which part locations lie in the box (absent parts and a missing box: False)."""
    hit = np.zeros(len(points), dtype=bool)
    if box is None:
        return hit
    x0, y0, x1, y1 = box
    ys, xs = points[:, 0], points[:, 1]
    ok = np.isfinite(ys)
    hit[ok] = (ys[ok] >= y0) & (ys[ok] < y1) & (xs[ok] >= x0) & (xs[ok] < x1)
    return hit


def noisy_inputs(images: np.ndarray, ids: Sequence[int], std: float = STABILITY_NOISE_STD,
                 seed: int = 0) -> np.ndarray:
    """``images`` plus N(0, std²) noise in the normalized input space; image ``ids[i]``'s noise depends
    only on (seed, id), so reference and target (and any batching) see the same noisy input."""
    images = np.asarray(images, dtype=np.float32)
    noise = np.stack([np.random.default_rng([int(seed), int(i)]).normal(0.0, std, images.shape[1:])
                      for i in ids]) if len(ids) else np.zeros_like(images)
    return (images + noise).astype(np.float32)


class LocalizationAccumulator:
    """Collects part hits batch by batch; :meth:`result` gives pointing game, consistency, stability."""

    def __init__(self, prototype_classes: Sequence[int], size: int, *, box: int | None = None,
                 threshold: float = CONSISTENCY_THRESHOLD, part_names: Sequence[str] | None = None) -> None:
        self.prototype_classes = np.asarray(prototype_classes, dtype=np.int64)
        self.size = int(size)
        self.side = int(box) if box else box_side(self.size)
        self.threshold = float(threshold)
        self.part_names = list(part_names) if part_names is not None else None
        m = len(self.prototype_classes)
        self.hits: list[list[np.ndarray]] = [[] for _ in range(m)]
        self.stable: list[list[bool]] = [[] for _ in range(m)]
        self.pointing: list[bool] = []
        self.pointing_ids: list[int] = []
        self.images = 0

    def _hits(self, map2d: np.ndarray, points: np.ndarray) -> np.ndarray | None:
        """Which parts the map's box holds; None for a non-finite map (it points nowhere)."""
        p = peak(map2d, self.size)
        return None if p is None else parts_in_box(points, peak_box(p[0], p[1], self.size, self.side))

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
                p = peak(maps[i, int(top1[i])], self.size)
                self.pointing.append(bool(p is not None and masks[:, p[0], p[1]].any()))
                self.pointing_ids.append(int(ids[i]) if ids is not None else len(self.pointing_ids))
            points = part_points(masks)
            for j in np.nonzero(self.prototype_classes == int(labels[i]))[0]:
                hits = self._hits(maps[i, j], points)
                self.hits[j].append(hits if hits is not None else np.zeros(len(points), dtype=bool))
                if noisy_maps is not None:  # a non-finite map on either input is not stable
                    noisy = self._hits(noisy_maps[i, j], points)
                    self.stable[j].append(hits is not None and noisy is not None and bool(np.array_equal(hits, noisy)))

    def result(self) -> dict:
        """Summary figures (None where nothing could be measured) and per-prototype details."""
        protos = []
        for j, rows in enumerate(self.hits):
            rec: dict = {"prototype": j, "class": int(self.prototype_classes[j]), "images": len(rows)}
            if rows:
                rates = np.mean(np.stack(rows), axis=0)
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
            "box_px": self.side,
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
                 box: int | None = None, threshold: float = CONSISTENCY_THRESHOLD,
                 part_names: Sequence[str] | None = None) -> dict:
    """Pointing game, consistency and (with ``noisy_maps``) stability for whole arrays.

    ``size`` defaults to the masks' side. See :class:`LocalizationAccumulator`.
    """
    if size is None:
        first = next((m for m in part_masks if m is not None), None)
        size = int(np.asarray(first).shape[-1]) if first is not None else int(np.asarray(maps).shape[-1])
    acc = LocalizationAccumulator(prototype_classes, size, box=box, threshold=threshold, part_names=part_names)
    acc.add(maps, part_masks, labels, top1, noisy_maps)
    return acc.result()
