"""``validate`` for a segmentation bundle: the deployed model against its PyTorch reference on the
masks of a split.

Reported: mIoU and pixel accuracy of the reference and of the target against the ground truth;
per-pixel argmax agreement (target vs reference); per-region top-prototype agreement (for every
class the reference predicts in an image, whether both sides name the same explaining prototype
for that region, :func:`edgeproto.device.segmentation.region_prototypes`); map IoU (for each such
prototype, the IoU of the ≥95th-percentile pixels of its upsampled map on the two sides).
Gates: per-pixel agreement, region top-prototype agreement and map IoU at least the thresholds
(fp32 1.0 / 1.0 / 0.9 by default; reduced precisions 0.98 / 0.9 / 0.7), all outputs finite.
"""

from __future__ import annotations

import numpy as np

from edgeproto.bundle import Bundle
from edgeproto.device.segmentation import region_prototypes
from edgeproto.errors import EdgeprotoError
from edgeproto.maps import upsample_map
from edgeproto.outputs import run_outputs
from edgeproto.progress import progress_bar

IGNORE_INDEX = 255
THRESHOLDS = {"fp32": {"pixel_agreement": 1.0, "region_top1_agreement": 1.0, "map_iou": 0.9},
              "reduced": {"pixel_agreement": 0.98, "region_top1_agreement": 0.9, "map_iou": 0.7}}


def confusion(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """(C,C) counts over labelled pixels (rows: truth)."""
    keep = truth != IGNORE_INDEX
    return np.bincount(truth[keep].astype(np.int64) * num_classes + pred[keep], minlength=num_classes**2
                       ).reshape(num_classes, num_classes)


def iou_scores(conf: np.ndarray) -> dict:
    """mIoU over the classes present in truth or prediction, per-class IoU and pixel accuracy."""
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return {"miou": float(np.nanmean(iou)) if (union > 0).any() else 1.0,
            "pixel_accuracy": float(inter.sum() / max(int(conf.sum()), 1)),
            "class_iou": [None if np.isnan(v) else float(v) for v in iou]}


def _top_mask(map2d: np.ndarray, size: int) -> np.ndarray:
    up = upsample_map(map2d, size)
    return up >= np.percentile(up, 95.0)


def validate_segmentation(bundle: Bundle, target: str, precision: str = "fp32", guard: str = "prototypes", *,
                          split: str = "test", limit: int | None = None, batch: int = 32, device: str | None = None,
                          threads: int = 0, data_root=None, progress: bool = True, thresholds: dict | None = None
                          ) -> dict:
    """The report (JSON-able) of ``target`` vs the PyTorch reference on the bundle's dataset split."""
    from edgeproto.data import build_dataset
    from edgeproto.runtimes import load_runner
    from edgeproto.runtimes.compile import with_data_root

    if bundle.manifest.get("task") != "segmentation":
        raise EdgeprotoError(f"bundle {bundle.root} is not a segmentation model")
    dataset = build_dataset(with_data_root(bundle.manifest["data"], data_root), split)
    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    if n < 1:
        raise EdgeprotoError(f"the {split} split is empty")
    reference = load_runner(bundle, "torch", "fp32", "prototypes", None, threads)
    runner = load_runner(bundle, target, precision, guard, device, threads)
    classes = bundle.prototype_classes()
    num_classes = len(bundle.classes)
    size = int(bundle.manifest["preprocess"]["image_size"])
    conf_ref = np.zeros((num_classes, num_classes), np.int64)
    conf_act = np.zeros_like(conf_ref)
    agree = pixels = regions = region_agree = 0
    ious: list[float] = []
    finite = True
    with progress_bar(progress, f"validate {target} {precision}", n) as advance:
        for start in range(0, n, batch):
            idx = range(start, min(start + batch, n))
            x = np.stack([np.asarray(dataset[i][0], dtype=np.float32) for i in idx])
            truth = np.stack([dataset.mask(i) for i in idx])
            ref, act = run_outputs(reference, x, "torch"), run_outputs(runner, x, target)
            finite = finite and all(np.isfinite(act[k]).all() for k in ("logits", "maps"))
            ref_pred, act_pred = ref["logits"].argmax(axis=1), act["logits"].argmax(axis=1)
            conf_ref += confusion(ref_pred, truth, num_classes)
            conf_act += confusion(act_pred, truth, num_classes)
            agree += int((ref_pred == act_pred).sum())
            pixels += ref_pred.size
            for b in range(len(x)):
                ref_top = region_prototypes(ref_pred[b], ref["maps"][b], classes)
                act_top = region_prototypes(ref_pred[b], act["maps"][b], classes)  # same regions on both sides
                for c, (j, _) in ref_top.items():
                    regions += 1
                    region_agree += int(act_top.get(c, (-1, 0.0))[0] == j)
                    a, r = _top_mask(act["maps"][b, j], size), _top_mask(ref["maps"][b, j], size)
                    ious.append(float((a & r).sum() / max(int((a | r).sum()), 1)))
            for _ in idx:
                advance()
    info, ref_info = runner.info(), reference.info()
    runner.close()
    reference.close()
    limits = dict(THRESHOLDS["fp32" if precision == "fp32" else "reduced"], **(thresholds or {}))
    values = {"pixel_agreement": agree / max(pixels, 1),
              "region_top1_agreement": region_agree / regions if regions else 1.0,
              "map_iou": float(np.mean(ious)) if ious else 1.0}
    checks = [{"name": k, "limit": limits[k], "value": values[k], "passed": values[k] >= limits[k]} for k in values]
    checks.append({"name": "finite", "limit": True, "value": finite, "passed": finite})
    failed = [c["name"] for c in checks if not c["passed"]]
    return {
        "task": "segmentation",
        "bundle": str(bundle.root),
        "target": {"target": target, "precision": precision, "guard": guard, "runtime": info},
        "reference_runtime": ref_info,
        "data": {"split": split, "images": n, "classes": list(bundle.classes)},
        "reference": iou_scores(conf_ref),
        "deployed": iou_scores(conf_act),
        **values,
        "regions": regions,
        "checks": checks,
        "failed": failed,
        "passed": not failed,
    }
