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

from collections.abc import Mapping

import numpy as np

from edgeproto.bundle import Bundle
from edgeproto.compare.fidelity import high_mask, mask_iou
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


def segmentation_dataset(bundle: Bundle, split: str, data=None, data_root=None):
    """The split to validate on: the bundle's own dataset, or ``data`` (a dataset config or recipe,
    file or mapping, e.g. a ``seg_folder`` of images/ + masks/) checked against the bundle: masks, the
    bundle's number of classes, and its image size and superpixel count (taken from the bundle when
    the config leaves them out)."""
    from edgeproto.compare.validate import load_data_config
    from edgeproto.data import build_dataset
    from edgeproto.runtimes.compile import with_data_root

    own = dict(bundle.manifest["data"])
    config = own if data is None else load_data_config(data, bundle)
    where = ("the bundle's dataset" if data is None else
             "the data config" if isinstance(data, Mapping) else f"data config {data}")
    for key in ("image_size", "superpixels"):
        if key in own:
            config.setdefault(key, own[key])
        if config.get(key) != own.get(key):
            raise EdgeprotoError(f"{where}: {key} is {config.get(key)} but the bundle was trained with {own.get(key)}")
    dataset = build_dataset(with_data_root(config, data_root), split)
    if getattr(dataset, "task", "classification") != "segmentation":
        raise EdgeprotoError(f"{where} has no masks: a segmentation bundle is validated on a segmentation "
                             "dataset (procedural with task: segmentation, or seg_folder: images/ + masks/)")
    if len(dataset.classes) != len(bundle.classes):
        raise EdgeprotoError(f"{where} has {len(dataset.classes)} classes but the bundle predicts "
                             f"{len(bundle.classes)} ({', '.join(bundle.classes)})")
    return dataset, config


def validate_segmentation(bundle: Bundle, target: str, precision: str = "fp32", guard: str = "prototypes", *,
                          split: str = "test", limit: int | None = None, batch: int = 32, device: str | None = None,
                          threads: int = 0, data=None, data_root=None, progress: bool = True,
                          thresholds: dict | None = None) -> dict:
    """The report (JSON-able) of ``target`` vs the PyTorch reference on a dataset split (the bundle's,
    or ``data``: see :func:`segmentation_dataset`)."""
    from edgeproto.runtimes import load_runner

    if bundle.manifest.get("task") != "segmentation":
        raise EdgeprotoError(f"bundle {bundle.root} is not a segmentation model")
    dataset, config = segmentation_dataset(bundle, split, data, data_root)
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
                    ious.append(mask_iou(high_mask(upsample_map(ref["maps"][b, j], size)),
                                         high_mask(upsample_map(act["maps"][b, j], size))))
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
        "data": {"config": config, "split": split, "images": n, "classes": list(bundle.classes)},
        "reference": iou_scores(conf_ref),
        "deployed": iou_scores(conf_act),
        **values,
        "regions": regions,
        "checks": checks,
        "failed": failed,
        "passed": not failed,
    }


def sweep_segmentation(bundle: Bundle, targets: list[str], *, calib: int = 64, **kwargs) -> dict:
    """:func:`validate_segmentation` for every (precision, guard) row of each target's ``sweep`` in
    the runtime registry, compiling the artifacts the bundle lacks (``calib`` int8 calibration images);
    ``kwargs`` go to :func:`validate_segmentation`. ``passed`` gates on the guarded rows; a row
    whose compile or run fails records its ``error``."""
    from edgeproto.bundle import open_bundle
    from edgeproto.compare.validate import check_sweep
    from edgeproto.runtimes import RUNTIMES, artifact_key
    from edgeproto.runtimes.compile import compile_bundle

    check_sweep(bundle, targets)
    rows, reports = [], []
    for target in targets:
        spec = RUNTIMES[target]
        for precision, guard in spec.sweep:
            key = artifact_key(spec.artifact_target, precision, guard)
            try:
                if (precision != "fp32" or spec.requires_compile) and key not in bundle.manifest.get("compiled", {}):
                    compile_bundle(bundle.root, target=spec.artifact_target, precision=precision, guard=guard,
                                   calib=calib, device=kwargs.get("device"), progress=kwargs.get("progress", True),
                                   data_root=kwargs.get("data_root"))
                    bundle = open_bundle(bundle.root)
                rep = validate_segmentation(bundle, target, precision, guard, **kwargs)
            except EdgeprotoError as exc:
                rows.append({"target": target, "precision": precision, "guard": guard, "artifact": key,
                             "passed": False, "failed": ["error"], "error": str(exc)})
                continue
            reports.append(rep)
            rows.append({"target": target, "precision": precision, "guard": guard, "artifact": key,
                         "miou": rep["deployed"]["miou"], "pixel_accuracy": rep["deployed"]["pixel_accuracy"],
                         **{k: rep[k] for k in ("pixel_agreement", "region_top1_agreement", "map_iou", "passed",
                                                "failed")}})
    gating = [r for r in rows if r["guard"] == "prototypes"]
    return {"kind": "sweep", "task": "segmentation", "bundle": str(bundle.root),
            "data": reports[0]["data"] if reports else None,
            "reference": reports[0]["reference"] if reports else None,
            "rows": rows, "reports": reports, "passed": all(r["passed"] for r in gating),
            "failed": [f"{r['target']}-{r['precision']}" for r in gating if not r["passed"]]}
