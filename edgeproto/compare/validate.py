"""``edgeproto validate``: does the deployed artifact predict *and explain* like the PyTorch reference?

Host-side (this module imports torch lazily, for the reference). :func:`validate_bundle` runs the
bundle's source checkpoint in PyTorch and the artifact for (target, precision, guard) on the same
dataset images, in batches, and reports:

- accuracy of both sides and their prediction agreement;
- numerical parity of ``logits``, ``scores``, ``maps`` (:func:`edgeproto.outputs.tensor_diff` over
  all images);
- explanation fidelity (:mod:`edgeproto.compare.fidelity`: top-1 prototype agreement, top-k overlap,
  Kendall τ, map Pearson / IoU / argmax agreement) and the images whose explanations differ most;
- where the data has part masks, localization (:mod:`edgeproto.compare.localization`: pointing game,
  consistency, stability under N(0, 0.2²) input noise) of both sides, side by side;
- a verdict per threshold (:mod:`edgeproto.compare.thresholds`), versions, CPU and threads.

:func:`sweep` does this for every precision of every target (compiling missing artifacts with
:func:`edgeproto.runtimes.compile.compile_bundle`) plus batch-1 latency, in one table. The PyTorch
reference is computed once and shared by all rows.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgeproto.bundle import Bundle, open_bundle
from edgeproto.compare import fidelity as fid
from edgeproto.compare.localization import LocalizationAccumulator, noisy_inputs
from edgeproto.compare.options import ValidateOptions
from edgeproto.compare.thresholds import evaluate, resolve_thresholds
from edgeproto.data.preprocess import to_input
from edgeproto.device.explain import as_bundle
from edgeproto.environment import host_info
from edgeproto.errors import EdgeprotoError
from edgeproto.maps import high_activation_box, upsample_map
from edgeproto.measure.latency import measure
from edgeproto.outputs import OUTPUTS, check_shapes, compare_outputs, run_outputs, static_batch
from edgeproto.progress import progress_bar
from edgeproto.ranking import contributions, top_prototypes
from edgeproto.runtimes import RUNTIMES, Runner, artifact_key, get_runtime, load_runner

FIGURE_NAMES = {  # threshold name -> fidelity summary key
    "prediction_agreement": "prediction",
    "top1_prototype_agreement": "top1",
    "topk_overlap": "topk_overlap",
    "kendall_tau": "kendall_tau",
    "map_pearson": "map_pearson",
    "map_iou": "map_iou",
    "argmax_agreement": "argmax",
}


# --------------------------------------------------------------------------- inputs


def load_data_config(data, bundle: Bundle) -> dict:
    """The dataset config: the bundle's own (``data=None``), a mapping, or a YAML/JSON file holding
    either a dataset config (``name: ...``) or a whole recipe (its ``data:`` section)."""
    if data is None:
        cfg = bundle.manifest.get("data")
        if not isinstance(cfg, Mapping):
            raise EdgeprotoError(f"bundle {bundle.root}: manifest has no dataset config; pass a data config file")
        return dict(cfg)
    if isinstance(data, Mapping):
        raw, where = data, "data config"
    else:
        from edgeproto.yaml_files import load_yaml

        path = Path(data)
        raw = load_yaml(path, "data config file")
        where = str(path)
    if isinstance(raw, Mapping) and isinstance(raw.get("data"), Mapping):
        raw = raw["data"]  # a recipe (dataset configs have no 'data' key): use its data section
    if not isinstance(raw, Mapping):
        raise EdgeprotoError(f"{where} must be a mapping with a dataset 'name' (or a recipe with a 'data' section)")
    return dict(raw)


def _open_split(config: dict, split: str, bundle: Bundle):
    from edgeproto.data import build_dataset

    try:
        ds = build_dataset(config, split)
    except EdgeprotoError:
        raise
    except Exception as exc:  # noqa: BLE001 -- a dataset that cannot be opened (files moved, ...)
        raise EdgeprotoError(f"cannot open the {split} split of dataset {config.get('name')!r}: {exc}") from None
    if len(ds) == 0:
        raise EdgeprotoError(f"the {split} split of dataset {config.get('name')!r} is empty: nothing to validate")
    classes = list(bundle.classes)
    if ds.num_classes != len(classes):
        raise EdgeprotoError(
            f"the dataset has {ds.num_classes} classes but the bundle's model has {len(classes)} "
            f"({', '.join(classes)}): this {split} split belongs to another model; pass the matching data config"
        )
    if list(ds.classes) != classes:
        raise EdgeprotoError(
            f"the dataset's classes {list(ds.classes)} differ from the bundle's {classes}: labels would be "
            "compared with the wrong classes"
        )
    size = int(bundle.manifest["preprocess"]["image_size"])
    if int(ds.image_size) != size:
        raise EdgeprotoError(f"the dataset's image_size is {ds.image_size} but the model takes {size}×{size} "
                             f"inputs: set image_size: {size} in the data config")
    return ds


def select_indices(n: int, limit: int | None) -> np.ndarray:
    """All ``n`` images, or ``limit`` of them evenly spaced over the split (every class is covered
    even when the split is sorted by class)."""
    if limit is None or limit >= n:
        return np.arange(n, dtype=np.int64)
    return np.unique(np.linspace(0, n - 1, int(limit)).round().astype(np.int64))


def localize_images(bundle, options: ValidateOptions, n: int = 32) -> np.ndarray:
    """Up to ``n`` of the images ``validate`` would use (evenly spaced over them) for ``--localize``."""
    bundle = as_bundle(bundle)
    config = load_data_config(options.data, bundle)
    if options.data_root is not None:
        from edgeproto.runtimes.compile import with_data_root

        config = with_data_root(config, options.data_root)
    ds = _open_split(config, options.split, bundle)
    ids = select_indices(len(ds), options.limit)
    ids = ids[select_indices(len(ids), n)]
    pre = bundle.manifest["preprocess"]
    size = int(pre["image_size"])
    return np.stack([to_input(ds.source_image(int(i)), size, pre["mean"], pre["std"]) for i in ids])


# --------------------------------------------------------------------------- the reference


@dataclass
class _Context:
    bundle: Bundle
    data_config: dict
    split: str
    ds: object
    ids: np.ndarray
    labels: np.ndarray
    size: int
    batch: int
    k: int
    seed: int
    noise_std: float
    pointing_tolerance: float
    has_parts: bool
    reference: Runner
    progress: bool
    limit: int | None
    ref_out: dict = field(default_factory=dict)
    ref_loc: dict | None = None
    ref_seconds: float = 0.0

    def inputs(self, ids: Sequence[int]) -> np.ndarray:
        pre = self.bundle.manifest["preprocess"]
        return np.stack([to_input(self.ds.source_image(int(i)), self.size, pre["mean"], pre["std"]) for i in ids])

    def batches(self):
        for start in range(0, len(self.ids), self.batch):
            yield start, self.ids[start: start + self.batch]

    def masks(self, ids: Sequence[int]) -> list:
        return [self.ds.part_masks(int(i)) for i in ids]

    def prototype_classes(self) -> np.ndarray:
        return self.bundle.prototype_classes()


def _prepare(bundle, options: ValidateOptions) -> _Context:
    options.check()
    bundle = as_bundle(bundle)
    config = load_data_config(options.data, bundle)
    if options.data_root is not None:
        from edgeproto.runtimes.compile import with_data_root

        config = with_data_root(config, options.data_root)
    ds = _open_split(config, options.split, bundle)
    reference = load_runner(bundle, "torch", threads=options.threads, checkpoint=options.checkpoint)
    ids = select_indices(len(ds), options.limit)
    size = int(bundle.manifest["preprocess"]["image_size"])
    has_parts = ds.part_masks(int(ids[0])) is not None
    return _Context(bundle=bundle, data_config=config, split=options.split, ds=ds, ids=ids,
                    labels=np.asarray(ds.labels)[ids].astype(np.int64), size=size, batch=options.batch,
                    k=options.k, seed=options.seed, noise_std=options.noise_std,
                    pointing_tolerance=float(options.pointing_tolerance), has_parts=has_parts,
                    reference=reference, progress=options.progress, limit=options.limit)


def _reference_pass(ctx: _Context) -> None:
    """Run the reference on every selected image (and its noisy copy when there are parts)."""
    t0 = time.perf_counter()
    proto_cls = ctx.prototype_classes()
    acc = LocalizationAccumulator(proto_cls, ctx.size, part_names=ctx.ds.part_names,
                                  pointing_tolerance=ctx.pointing_tolerance) \
        if ctx.has_parts else None
    parts: list[dict] = []
    with progress_bar(ctx.progress, "reference (PyTorch)", len(ctx.ids)) as advance:
        for start, ids in ctx.batches():
            x = ctx.inputs(ids)
            out = run_outputs(ctx.reference, x)
            parts.append(out)
            if acc is not None:
                noisy = run_outputs(ctx.reference, noisy_inputs(x, ids, ctx.noise_std, ctx.seed))["maps"]
                top1 = top_prototypes(out["logits"], out["scores"], proto_cls, 1)[:, 0]
                acc.add(out["maps"], ctx.masks(ids), ctx.labels[start: start + len(ids)], top1, noisy, ids)
            advance(len(ids))
    ctx.ref_out = {k: np.concatenate([p[k] for p in parts]) for k in OUTPUTS}
    ctx.ref_loc = acc.result() if acc is not None else None
    ctx.ref_seconds = time.perf_counter() - t0


# --------------------------------------------------------------------------- environment


def environment(runner: Runner | None, reference: Runner, threads: int = 0) -> dict:
    """Host, versions and threads (:func:`edgeproto.environment.host_info`), so a report says what
    produced its numbers; with the target runner's ``info()`` under ``runtime``."""
    env = host_info()
    env["threads"] = {"torch": reference.info()["threads"], "runtime": int(threads) if threads else "runtime default"}
    if runner is not None:
        env["runtime"] = runner.info()
    return env


# --------------------------------------------------------------------------- one target


def _artifact(bundle: Bundle, target: str, precision: str, guard: str) -> str:
    key = artifact_key(RUNTIMES[target].artifact_target, precision, guard)
    entry = bundle.manifest.get("compiled", {}).get(key)
    return entry["model"] if entry else bundle.manifest["model"]["file"]


def _side(out: dict, pos: int, last: np.ndarray, proto_cls: np.ndarray, size: int, classes: list[str],
          protos: list[dict]) -> dict:
    """One side (reference or target) of an example: prediction and its top prototypes."""
    logits, scores, maps = out["logits"][pos: pos + 1], out["scores"][pos: pos + 1], out["maps"][pos]
    clean = np.where(np.isnan(logits), -np.inf, logits)
    pred = int(clean[0].argmax())
    contrib = contributions(clean, scores, last)[0]
    top = []
    for rank, j in enumerate(top_prototypes(clean, scores, proto_cls, 3)[0].tolist(), 1):
        m = np.asarray(maps[j], dtype=np.float64)
        finite = bool(np.isfinite(m).all())
        rec = {"rank": rank, "prototype": int(j), "class": int(protos[j]["class"]) if j < len(protos) else -1,
               "score": float(scores[0, j]), "contribution": float(contrib[j]), "finite": finite,
               "patch_png": protos[j].get("patch_png") if j < len(protos) else None}
        if finite:
            up = upsample_map(m, size)
            y, x = np.unravel_index(int(up.argmax()), up.shape)
            rec.update(map=m.round(6).tolist(), argmax=[int(x), int(y)], box=high_activation_box(up))
        top.append(rec)
    return {"pred": pred, "pred_name": classes[pred] if 0 <= pred < len(classes) else str(pred), "top": top}


MISCLASSIFIED_SHOWN = 4


def _examples(ctx: _Context, act_out: dict, values: dict, worst: list[dict], samples: int) -> list[dict]:
    last, proto_cls = ctx.bundle.last_layer(), ctx.prototype_classes()
    classes, protos = list(ctx.bundle.classes), ctx.bundle.prototypes
    n = len(ctx.ids)
    chosen: dict[int, list[str]] = {}
    if samples > 0:
        for pos in np.unique(np.linspace(0, n - 1, min(samples, n)).round().astype(int)).tolist():
            chosen.setdefault(pos, []).append("sample")
    for w in worst:
        chosen.setdefault(w["position"], []).append("worst")
    for pos in np.flatnonzero(values["act_pred"] != ctx.labels)[:MISCLASSIFIED_SHOWN].tolist():
        chosen.setdefault(pos, []).append("misclassified")  # wrong answers are shown with their explanation
    out = []
    for pos, kinds in chosen.items():
        img_id = int(ctx.ids[pos])
        label = int(ctx.labels[pos])
        out.append({
            "id": img_id, "position": pos, "kind": kinds, "label": label, "label_name": classes[label],
            "reference": _side(ctx.ref_out, pos, last, proto_cls, ctx.size, classes, protos),
            "target": _side(act_out, pos, last, proto_cls, ctx.size, classes, protos),
            "fidelity": {key: (bool(values[key][pos]) if values[key].dtype == bool else float(values[key][pos]))
                         for key in ("prediction", "top1", "topk_overlap", "kendall_tau", "map_pearson",
                                     "map_iou", "argmax")},
            "_raw": ctx.ds.raw_image(img_id),
        })
    return out


def confusion(labels: np.ndarray, predicted: np.ndarray, classes: int) -> list[list[int]]:
    """Confusion matrix (rows: true label, columns: prediction) as nested lists of counts."""
    m = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(m, (np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return m.tolist()


def _evaluate(ctx: _Context, runner: Runner, *, target: str, precision: str, guard: str, limits: dict,
              options: ValidateOptions, samples: int) -> dict:
    """Run ``runner`` on the context's images and compare with the (already computed) reference."""
    t0 = time.perf_counter()
    proto_cls = ctx.prototype_classes()
    acc = LocalizationAccumulator(proto_cls, ctx.size, part_names=ctx.ds.part_names,
                                  pointing_tolerance=ctx.pointing_tolerance) \
        if ctx.has_parts else None
    parts, fid_parts = [], []
    label = f"{target} {precision}" + ("" if guard == "prototypes" else " (no guard)")
    with progress_bar(ctx.progress, label, len(ctx.ids)) as advance:
        for start, ids in ctx.batches():
            x = ctx.inputs(ids)
            out = run_outputs(runner, x, target)
            ref = {k: v[start: start + len(ids)] for k, v in ctx.ref_out.items()}
            check_shapes(ref, out, target, "the PyTorch reference")
            out = {k: out[k] for k in OUTPUTS}
            parts.append(out)
            fid_parts.append(fid.per_image(ref, out, proto_cls, k=ctx.k, size=ctx.size))
            if acc is not None:
                noisy = run_outputs(runner, noisy_inputs(x, ids, ctx.noise_std, ctx.seed), target)["maps"]
                acc.add(out["maps"], ctx.masks(ids), ctx.labels[start: start + len(ids)],
                        fid_parts[-1]["act_top1"], noisy, ids)
            advance(len(ids))
    act_out = {k: np.concatenate([p[k] for p in parts]) for k in OUTPUTS}
    values = fid.concat(fid_parts)
    summary = fid.summarize(values, ctx.k)
    parity = compare_outputs(ctx.ref_out, act_out, OUTPUTS)

    ref_acc = float((values["ref_pred"] == ctx.labels).mean())
    act_acc = float((values["act_pred"] == ctx.labels).mean())
    figures: dict[str, float | None] = {name: summary[key] for name, key in FIGURE_NAMES.items()}
    figures.update({f"{n}_max_abs": parity[n]["max_abs"] for n in OUTPUTS})
    figures["accuracy_drop"] = ref_acc - act_acc
    loc = None
    if acc is not None:
        loc = {"reference": ctx.ref_loc, "target": acc.result(), "noise_std": ctx.noise_std, "seed": ctx.seed}
        for metric in ("pointing_game", "consistency", "stability"):
            r, a = loc["reference"][metric], loc["target"][metric]
            figures[f"{metric}_drop"] = (r - a) if r is not None and a is not None else None
    checks = evaluate(limits, figures)
    failed = [c["name"] for c in checks if c["status"] == "fail"]
    worst = fid.worst_images(values, ctx.ids, options.worst)
    classes = list(ctx.bundle.classes)
    for w in worst:
        w["label"] = int(ctx.labels[w["position"]])
        w["label_name"] = classes[w["label"]]
    target_seconds = time.perf_counter() - t0
    manifest = ctx.bundle.manifest
    return {
        "kind": "validate",
        "passed": not failed,
        "failed": failed,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "bundle": str(ctx.bundle.root),
        "checkpoint": str(ctx.reference.checkpoint),
        "model": {"recipe": manifest.get("source", {}).get("recipe"), "family": manifest["model"].get("family"),
                  "classes": classes, "prototypes": len(ctx.bundle.prototypes), "input_size": ctx.size,
                  "part_names": list(ctx.ds.part_names)},
        "target": {"target": target, "precision": precision, "guard": guard, "device": options.device,
                   "artifact": _artifact(ctx.bundle, target, precision, guard),
                   "runtime": {"target": target, **runner.info()}},
        "data": {"config": ctx.data_config, "split": ctx.split, "images": int(len(ctx.ids)),
                 "split_size": int(len(ctx.ds)), "limit": ctx.limit, "batch": ctx.batch},
        "thresholds": dict(limits),
        "checks": checks,
        "figures": figures,
        "accuracy": {"reference": ref_acc, "target": act_acc, "prediction_agreement": summary["prediction"],
                     "drop": ref_acc - act_acc,
                     "confusion": {"reference": confusion(ctx.labels, values["ref_pred"], len(classes)),
                                   "target": confusion(ctx.labels, values["act_pred"], len(classes))}},
        "parity": parity,
        "fidelity": summary,
        "localization": loc,
        "worst": worst,
        "examples": _examples(ctx, act_out, values, worst, samples),
        "environment": environment(runner, ctx.reference, options.threads),
        "timing_s": {"reference": round(ctx.ref_seconds, 3), "target": round(target_seconds, 3)},
    }


def validate_bundle(
    bundle,
    *,
    target: str,
    precision: str = "fp32",
    guard: str = "prototypes",
    options: ValidateOptions | None = None,
) -> dict:
    """Compare ``target``'s artifact for (precision, guard) with the PyTorch reference; a JSON-able
    report (plus each example's raw image under ``_raw``, which :mod:`report_html` draws and drops).

    :class:`ValidateOptions` say which images (data config, split, limit), thresholds, device,
    threads, where the reference checkpoint is if not where the manifest says, and how much to
    show. ``report["passed"]`` is False when a threshold fails (``report["failed"]`` names them).
    User mistakes raise EdgeprotoError: a missing or different checkpoint, a split of another model
    (class count/names/size), an empty split, ``limit`` < 1, an unknown threshold, a missing artifact.
    """
    options = options or ValidateOptions()
    limits = resolve_thresholds(precision, options.thresholds)  # fail fast on a bad thresholds file
    ctx = _prepare(bundle, options)
    runner = load_runner(ctx.bundle, target, precision, guard, options.device, options.threads)
    try:
        _reference_pass(ctx)
        return _evaluate(ctx, runner, target=target, precision=precision, guard=guard, limits=limits,
                         options=options, samples=options.samples)
    finally:
        runner.close()
        ctx.reference.close()


# --------------------------------------------------------------------------- latency and sweep


def batch1_latency(runner: Runner, image: np.ndarray, options: ValidateOptions) -> dict:
    """Single-stream batch-1 latency (:func:`edgeproto.measure.latency.measure`: nearest-rank
    percentiles) of ``runner`` on ``image``, tiled to the artifact's fixed batch when it has one."""
    batch = static_batch(runner)
    x = np.repeat(image, batch, axis=0) if batch and batch > 1 else image
    stats = measure(lambda: runner.run(x), warmup=5, min_queries=options.latency_queries, min_seconds=0.0)
    stats.pop("window", None)
    return stats


def _row(report: dict, latency: dict | None) -> dict:
    """The sweep table's line for one validated configuration."""
    t, f, a = report["target"], report["fidelity"], report["accuracy"]
    loc = report.get("localization") or {}
    row = {
        "target": t["target"], "precision": t["precision"], "guard": t["guard"], "artifact": t["artifact"],
        "effective_precision": t["runtime"]["precision"],
        "accuracy": a["target"], "reference_accuracy": a["reference"], "prediction_agreement": f["prediction"],
        "top1_prototype_agreement": f["top1"], "topk_overlap": f["topk_overlap"], "kendall_tau": f["kendall_tau"],
        "map_pearson": f["map_pearson"], "map_iou": f["map_iou"], "argmax_agreement": f["argmax"],
        "scores_max_abs": report["parity"]["scores"]["max_abs"], "finite": all(
            report["parity"][n]["finite"] for n in OUTPUTS),
        "passed": report["passed"], "failed": report["failed"],
        "latency_ms": latency["p50_ms"] if latency else None, "latency": latency,
    }
    for metric in ("pointing_game", "consistency", "stability"):
        row[metric] = (loc.get("target") or {}).get(metric)
    return row


def check_sweep(bundle, targets: Sequence[str]) -> None:
    """Before a sweep does any work: at least one target, each with sweep rows in the registry and
    installed, and a writable bundle when the sweep has to compile artifacts into it."""
    import os

    if not targets:
        raise EdgeprotoError("sweep needs at least one target")
    for t in targets:
        spec = get_runtime(t)
        if not spec.sweep:
            known = [n for n, r in RUNTIMES.items() if r.sweep]
            raise EdgeprotoError(f"no sweep configurations for target {t!r}; known: {', '.join(known)}")
        spec.require()  # runtime not installed: say so before any work
    opened = as_bundle(bundle)
    compiled = opened.manifest.get("compiled", {})
    missing = [artifact_key(t, p, g) for t in targets for p, g in RUNTIMES[t].sweep
               if p != "fp32" and artifact_key(t, p, g) not in compiled]
    if missing and not (os.access(opened.root, os.W_OK) and os.access(opened.root / "manifest.json", os.W_OK)):
        raise EdgeprotoError(f"bundle {opened.root} is read-only and lacks {', '.join(missing)}: the sweep "
                             "compiles them into it; copy the bundle somewhere writable (or compile them first)")


def sweep_targets() -> list[str]:
    """The installed runtimes that have sweep rows in the registry (the default of ``--sweep``)."""
    return [n for n, spec in RUNTIMES.items() if spec.sweep and not spec.missing()]


def sweep(bundle, targets: Sequence[str] | None = None, options: ValidateOptions | None = None) -> dict:
    """Validate every precision of every target (default :func:`sweep_targets`; each runtime's ``sweep`` rows in the registry:
    fp32, fp16/bf16, int8 with and without the explanation guard), compiling missing artifacts
    into the bundle, and time batch-1 inference (p50 of ``options.latency_queries`` after 5 warm-up
    runs; ratio vs the target's fp32 and vs PyTorch). ``options.threads`` > 0 runs every runtime
    *and* the PyTorch reference on that many threads.

    Returns ``{"kind": "sweep", "rows": [...], "reports": [...], "passed": ...}``: ``passed`` gates on
    the deployable rows (guard ``prototypes``); the unguarded int8 rows are there for comparison and
    never fail the sweep. A row whose compile or run fails records its ``error`` (and fails if guarded).
    """
    from edgeproto.runtimes.compile import compile_bundle

    options = options or ValidateOptions()
    targets = list(targets) if targets is not None else sweep_targets()
    check_sweep(bundle, targets)
    for precision in {p for t in targets for p, _ in RUNTIMES[t].sweep}:
        resolve_thresholds(precision, options.thresholds)
    ctx = _prepare(bundle, options)
    try:
        return _sweep(ctx, targets, options, compile_bundle)
    finally:
        ctx.reference.close()


def _sweep(ctx: _Context, targets: list[str], options: ValidateOptions, compile_bundle) -> dict:
    _reference_pass(ctx)
    image = ctx.inputs(ctx.ids[:1]).astype(np.float32)
    ref_latency = batch1_latency(ctx.reference, image, options)

    rows, reports = [], []
    for target in targets:
        fp32_ms = None
        spec = RUNTIMES[target]
        for precision, guard in spec.sweep:
            key = artifact_key(spec.artifact_target, precision, guard)
            runner = None
            try:
                needs = precision != "fp32" or spec.requires_compile
                if needs and key not in ctx.bundle.manifest.get("compiled", {}):
                    compile_bundle(ctx.bundle.root, target=spec.artifact_target, precision=precision, guard=guard,
                                   calib=options.calib, device=options.device, progress=options.progress,
                                   data_root=options.data_root)
                    ctx.bundle = open_bundle(ctx.bundle.root)
                runner = load_runner(ctx.bundle, target, precision, guard, options.device, options.threads)
                report = _evaluate(ctx, runner, target=target, precision=precision, guard=guard,
                                   limits=resolve_thresholds(precision, options.thresholds), options=options,
                                   samples=0)
                latency = batch1_latency(runner, image, options)
            except EdgeprotoError as exc:
                rows.append({"target": target, "precision": precision, "guard": guard, "artifact": key,
                             "passed": False, "failed": ["error"], "error": str(exc), "latency_ms": None})
                reports.append(None)
                continue
            finally:
                if runner is not None:
                    runner.close()
            row = _row(report, latency)
            if precision == "fp32":
                fp32_ms = row["latency_ms"]
            row["latency_vs_fp32"] = (row["latency_ms"] / fp32_ms) if fp32_ms else None
            row["latency_vs_pytorch"] = row["latency_ms"] / ref_latency["p50_ms"]
            rows.append(row)
            reports.append(report)
    gating = [r for r in rows if r["guard"] == "prototypes"]
    env = environment(None, ctx.reference, options.threads)
    env["threads"]["latency (PyTorch and runtimes)"] = int(options.threads) if options.threads else "each one's default"
    return {
        "kind": "sweep",
        "passed": all(r["passed"] for r in gating),
        "failed": [f"{r['target']}-{r['precision']}" for r in gating if not r["passed"]],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "bundle": str(ctx.bundle.root),
        "checkpoint": str(ctx.reference.checkpoint),
        "data": {"config": ctx.data_config, "split": ctx.split, "images": int(len(ctx.ids)),
                 "split_size": int(len(ctx.ds)), "limit": ctx.limit},
        "reference": {"accuracy": float((ctx.ref_out["logits"].argmax(1) == ctx.labels).mean()),
                      "latency": ref_latency, "latency_ms": ref_latency["p50_ms"],
                      "localization": ctx.ref_loc},
        "rows": rows,
        "reports": reports,
        "environment": env,
        "latency": {"batch": 1, "queries": int(options.latency_queries), "warmup": 5, "statistic": "p50 (nearest rank)",
                    "threads": int(options.threads) if options.threads else "runtime default"},
    }
