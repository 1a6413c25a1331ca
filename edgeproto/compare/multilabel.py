"""``validate`` for a multi-label bundle (``"task": "multilabel"``, arch patchct): the deployed model
against its PyTorch reference on the label sets of a split.

Reported for both sides against the ground truth: mAP, per-label AP and F1 (probability ≥ 0.5) and,
where the dataset has part masks named like the labels, the pointing game per label
(:mod:`edgeproto.data.label_sets`). Target vs reference: per-label decision agreement (same
present/absent call), the logits within ``atol + rtol·|ref|``, and, for every label the reference
predicts in an image or the image truly has, the agreement of that label's transport map: the same
peak pixel (argmax of the bicubically upsampled map) and the IoU of the maps' ≥95th-percentile pixels.
Gates: decision agreement (every label), peak agreement and map IoU at least the thresholds (fp32
1.0 / 1.0 / 0.9; reduced precisions 0.95 / 0.9 / 0.7), logits within tolerance (fp32 only: atol 1e-4,
rtol 1e-3) and all outputs finite.
"""

from __future__ import annotations

import numpy as np

from edgeproto.bundle import Bundle
from edgeproto.data.label_sets import (
    PointingGame,
    label_f1,
    label_maps,
    mean_average_precision,
    part_index,
    predicted,
)
from edgeproto.errors import EdgeprotoError
from edgeproto.compare.fidelity import high_mask, mask_iou
from edgeproto.maps import upsample_map
from edgeproto.outputs import FP32_TOLERANCE, run_outputs, within_tolerance
from edgeproto.progress import progress_bar

THRESHOLDS = {"fp32": {"decision_agreement": 1.0, "peak_agreement": 1.0, "map_iou": 0.9},
              "reduced": {"decision_agreement": 0.95, "peak_agreement": 0.9, "map_iou": 0.7}}


def validate_multilabel(bundle: Bundle, target: str, precision: str = "fp32", guard: str = "prototypes", *,
                        split: str = "test", limit: int | None = None, batch: int = 32, device: str | None = None,
                        threads: int = 0, data_root=None, progress: bool = True, thresholds: dict | None = None
                        ) -> dict:
    """The report (JSON-able) of ``target`` vs the PyTorch reference on the bundle's dataset split."""
    from edgeproto.data import build_dataset
    from edgeproto.runtimes import load_runner
    from edgeproto.runtimes.compile import with_data_root

    if bundle.manifest.get("task") != "multilabel":
        raise EdgeprotoError(f"bundle {bundle.root} is not a multi-label model")
    dataset = build_dataset(with_data_root(bundle.manifest["data"], data_root), split)
    if getattr(dataset, "task", None) != "multilabel":
        raise EdgeprotoError(f"the bundle's dataset is not multi-label (task {getattr(dataset, 'task', None)!r})")
    n = len(dataset) if limit is None else min(int(limit), len(dataset))
    if n < 1:
        raise EdgeprotoError(f"the {split} split is empty")
    labels = list(bundle.classes)
    size = int(bundle.manifest["preprocess"]["image_size"])
    classes = bundle.prototype_classes()
    part_of = part_index(labels, list(getattr(dataset, "part_names", []) or []))
    has_parts = any(p is not None for p in part_of)
    games = {side: PointingGame(len(labels), size, part_of) for side in ("reference", "deployed")}
    reference = load_runner(bundle, "torch", "fp32", "prototypes", None, threads)
    runner = load_runner(bundle, target, precision, guard, device, threads)
    logits = {"reference": [], "deployed": []}
    peaks = 0
    iou_values: list[float] = []
    finite, close = True, True
    max_abs = {"logits": 0.0, "scores": 0.0, "maps": 0.0}
    tol = FP32_TOLERANCE
    with progress_bar(progress, f"validate {target} {precision}", n) as advance:
        for start in range(0, n, batch):
            idx = range(start, min(start + batch, n))
            x = np.stack([np.asarray(dataset[i][0], dtype=np.float32) for i in idx])
            ref, act = run_outputs(reference, x, "torch"), run_outputs(runner, x, target)
            finite = finite and all(bool(np.isfinite(act[k]).all()) for k in ("logits", "scores", "maps"))
            close = close and within_tolerance(ref["logits"], act["logits"], tol["atol"], tol["rtol"])
            for k in max_abs:
                max_abs[k] = max(max_abs[k], float(np.abs(act[k].astype(np.float64) - ref[k]).max(initial=0.0)))
            logits["reference"].append(ref["logits"])
            logits["deployed"].append(act["logits"])
            ref_maps = label_maps(ref["scores"], ref["maps"], classes, len(labels))
            act_maps = label_maps(act["scores"], act["maps"], classes, len(labels))
            shown = predicted(ref["logits"]) | np.asarray(dataset.targets)[start:start + len(idx)].astype(bool)
            for b, i in enumerate(idx):
                if has_parts:
                    masks = dataset.part_masks(i)
                    games["reference"].add(ref_maps[b], masks)
                    games["deployed"].add(act_maps[b], masks)
                for c in np.nonzero(shown[b])[0]:
                    up_r, up_a = upsample_map(ref_maps[b, c], size), upsample_map(act_maps[b, c], size)
                    peaks += int(up_r.argmax() == up_a.argmax())
                    iou_values.append(mask_iou(high_mask(up_r), high_mask(up_a)))
            for _ in idx:
                advance()
    info, ref_info = runner.info(), reference.info()
    runner.close()
    reference.close()
    targets = np.asarray(dataset.targets)[:n]
    sides = {}
    for side, parts in logits.items():
        lg = np.concatenate(parts)
        sides[side] = {**mean_average_precision(targets, lg), **label_f1(targets, lg),
                       **(games[side].result() if has_parts else {})}
    ref_pred = predicted(np.concatenate(logits["reference"]))
    act_pred = predicted(np.concatenate(logits["deployed"]))
    label_agreement = [float(v) for v in (ref_pred == act_pred).mean(axis=0)]
    limits = dict(THRESHOLDS["fp32" if precision == "fp32" else "reduced"], **(thresholds or {}))
    values = {"decision_agreement": float(min(label_agreement)),
              "peak_agreement": peaks / len(iou_values) if iou_values else 1.0,
              "map_iou": float(np.mean(iou_values)) if iou_values else 1.0}
    checks = [{"name": k, "limit": limits[k], "value": values[k], "passed": values[k] >= limits[k]} for k in values]
    checks.append({"name": "finite", "limit": True, "value": finite, "passed": finite})
    if precision == "fp32":
        checks.append({"name": "logits_within_tolerance", "limit": True, "value": close, "passed": close})
    failed = [c["name"] for c in checks if not c["passed"]]
    return {
        "task": "multilabel",
        "bundle": str(bundle.root),
        "target": {"target": target, "precision": precision, "guard": guard, "runtime": info},
        "reference_runtime": ref_info,
        "data": {"split": split, "images": n, "labels": labels},
        "reference": sides["reference"],
        "deployed": sides["deployed"],
        "label_decision_agreement": label_agreement,
        **values,
        "maps_compared": len(iou_values),
        "tolerance": {"atol": tol["atol"], "rtol": tol["rtol"]},
        "max_abs": max_abs,
        "checks": checks,
        "failed": failed,
        "passed": not failed,
    }
