"""``compile --precision auto``: the fastest artifact whose explanations stay those of the fp32 model.

:func:`compile_auto` builds candidate artifacts of one target, runs each on *validation* images (a
seeded sample of the train split disjoint from the calibration images, or the test split), compares
them with the fp32 reference (the bundle's ``model.onnx`` on ONNX Runtime, which the export check
ties to PyTorch) through :mod:`edgeproto.compare.fidelity`, times each at batch 1
(:func:`edgeproto.measure.latency.measure`), and installs the fastest one that meets the thresholds
(top-1 prototype agreement, optionally map IoU and accuracy drop) as ``compiled/<target>-auto/``.

Candidates (fp32 is timed as the baseline, never chosen: "auto" is a reduced-precision search):

- ``onnxruntime`` and ``tensorrt`` (the TensorRT-ready graph, checked as ``tensorrt-graph``): fp16
  (guarded); int8 with the prototype guard for each calibration method (minmax / entropy /
  percentile); int8 of everything; then the **per-layer sensitivity** search: one layer group
  (:func:`edgeproto.runtimes.onnxruntime.compile.layer_groups`: backbone blocks, the add-on, the
  prototype subgraph) quantized at a time, ranked by the fidelity damage it does alone, and the most
  damaging groups kept fp32, one more at a time, until the thresholds hold.
- ``openvino``: the bf16 and fp16 inference-precision hints; NNCF int8 with and without the guard;
  ``nncf.quantize_with_accuracy_control`` with a validation function that returns the top-1
  prototype agreement with the fp32 reference (max drop 1 − ``min_top1``), with and without the guard.

The manifest entry records every candidate (latency, fidelity, accuracy, verdict), the sensitivity
ranking and why the winner won. When no candidate meets the thresholds nothing is written and the
error names the best candidate found.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeproto.bundle import Bundle
from edgeproto.compare import fidelity as fid
from edgeproto.errors import EdgeprotoError
from edgeproto.measure.latency import measure
from edgeproto.outputs import OUTPUTS, run_outputs
from edgeproto.progress import progress_bar
from edgeproto.ranking import ranking
from edgeproto.runtimes import AUTO, get_runtime
from edgeproto.runtimes.compile import (
    CALIBRATION_SEED,
    calibration_images,
    check_request,
    install_checked,
    open_for_compile,
    staging,
    with_data_root,
)

__all__ = ["METHODS", "SearchThresholds", "compile_auto"]

METHODS = ("minmax", "entropy", "percentile")
VALIDATION_SEED = 1
TIMING_ROUNDS = 5


@dataclass(frozen=True)
class SearchThresholds:
    """What a candidate must keep, on the validation images, against the fp32 reference."""

    min_top1: float = 0.98
    min_map_iou: float | None = None
    max_accuracy_drop: float | None = None

    def check(self) -> None:
        for name in ("min_top1", "min_map_iou"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0):
                raise EdgeprotoError(f"--{name.replace('_', '-')} is a fraction in [0, 1], got {v!r}")
        v = self.max_accuracy_drop
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not -1.0 <= v <= 1.0):
            raise EdgeprotoError(f"--max-accuracy-drop is a fraction in [-1, 1], got {v!r}")

    def failed(self, row: dict) -> list[str]:
        out = []
        if not row["top1"] >= self.min_top1:
            out.append(f"top-1 agreement {row['top1']:.4f} < {self.min_top1:g}")
        if self.min_map_iou is not None and not row["map_iou"] >= self.min_map_iou:
            out.append(f"map IoU {row['map_iou']:.4f} < {self.min_map_iou:g}")
        if self.max_accuracy_drop is not None and not row["accuracy_drop"] <= self.max_accuracy_drop:
            out.append(f"accuracy drop {row['accuracy_drop']:.4f} > {self.max_accuracy_drop:g}")
        return out

    def describe(self) -> str:
        parts = [f"top-1 prototype agreement ≥ {self.min_top1:g}"]
        if self.min_map_iou is not None:
            parts.append(f"map IoU ≥ {self.min_map_iou:g}")
        if self.max_accuracy_drop is not None:
            parts.append(f"accuracy drop ≤ {self.max_accuracy_drop:g}")
        return ", ".join(parts)

    def record(self) -> dict:
        return {"min_top1": self.min_top1, "min_map_iou": self.min_map_iou,
                "max_accuracy_drop": self.max_accuracy_drop}


# --------------------------------------------------------------------------- validation images


@dataclass
class _Validation:
    images: np.ndarray  # (N,3,S,S)
    labels: np.ndarray
    reference: dict
    classes: np.ndarray
    size: int
    record: dict
    ref_accuracy: float = field(init=False)

    def __post_init__(self) -> None:
        self.ref_accuracy = float((self.reference["logits"].argmax(1) == self.labels).mean())

    def evaluate(self, runner) -> dict:
        out = run_outputs(runner, self.images)
        values = fid.per_image(self.reference, {k: out[k] for k in OUTPUTS}, self.classes, size=self.size)
        s = fid.summarize(values)
        acc = float((values["act_pred"] == self.labels).mean())
        finite = all(bool(np.isfinite(out[k]).all()) for k in OUTPUTS)
        return {"top1": s["top1"], "map_iou": s["map_iou"], "topk_overlap": s["topk_overlap"],
                "prediction_agreement": s["prediction"], "accuracy": acc,
                "accuracy_drop": self.ref_accuracy - acc, "finite": finite,
                "damage": float(np.mean(fid.badness(values)))}


def _validation(bundle: Bundle, calibration, split: str, n: int, data_root, progress: bool) -> _Validation:
    """``n`` images not used for calibration: a seeded sample of the train split's other images
    (``split="train"``), or the test split evenly spaced (``split="test"``); and the fp32 reference."""
    from edgeproto.data import build_dataset
    from edgeproto.runtimes.onnxruntime.runner import OnnxRuntimeRunner

    config = with_data_root(bundle.manifest["data"], data_root)
    if split == "train":
        ds = calibration.dataset
        rest = np.setdiff1d(np.arange(len(ds)), np.asarray(calibration.indices, dtype=np.int64))
        if len(rest) == 0:
            raise EdgeprotoError("the calibration images use the whole train split: no validation images left "
                                 "(lower --calib or use --val-split test)")
        rng = np.random.default_rng(VALIDATION_SEED)
        ids = np.sort(rng.choice(rest, size=min(n, len(rest)), replace=False))
        how = f"seeded random sample (seed {VALIDATION_SEED}) of the train images not used for calibration"
    elif split == "test":
        try:
            ds = build_dataset(config, "test")
        except EdgeprotoError:
            raise
        except Exception as exc:  # noqa: BLE001 -- a dataset that cannot be opened
            raise EdgeprotoError(f"cannot open the recipe's test split for validation: {exc}") from None
        if len(ds) == 0:
            raise EdgeprotoError("the recipe's test split is empty: no validation images")
        ids = np.unique(np.linspace(0, len(ds) - 1, min(n, len(ds))).round().astype(np.int64))
        how = "evenly spaced over the test split"
    else:
        raise EdgeprotoError(f"--val-split must be train or test, got {split!r}")
    images, labels = [], []
    with progress_bar(progress, "validation images", len(ids)) as advance:
        for i in ids.tolist():
            x, y = ds[i]
            x = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
            images.append(np.asarray(x, dtype=np.float32))
            labels.append(int(y))
            advance()
    images = np.stack(images)
    runner = OnnxRuntimeRunner(bundle.path(bundle.manifest["model"]["file"]))
    reference = {k: v for k, v in run_outputs(runner, images).items() if k in OUTPUTS}
    record = {"split": split, "images": int(len(ids)), "selection": how, "ids": [int(i) for i in ids],
              "disjoint_from_calibration": True,
              "reference": "the bundle's fp32 model.onnx on ONNX Runtime (CPU)"}
    return _Validation(images=images, labels=np.asarray(labels), reference=reference,
                       classes=bundle.prototype_classes(), size=int(bundle.manifest["preprocess"]["image_size"]),
                       record=record)


# --------------------------------------------------------------------------- candidates


@dataclass
class _Candidate:
    name: str
    precision: str
    guard: str
    options: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)  # what the manifest shows of it
    baseline: bool = False  # fp32: the ratio's denominator; chosen only when nothing reduced is faster


class _Search:
    """Builds, evaluates and times candidates of one target inside a staging directory."""

    def __init__(self, bundle: Bundle, target: str, stage: Path, calibration, val: _Validation,
                 thresholds: SearchThresholds, *, queries: int, threads: int, device: str | None,
                 progress: bool, reduced_only: bool) -> None:
        self.bundle, self.target, self.stage = bundle, target, stage
        self.spec = get_runtime(target)
        self.backend = self.spec.compiler()
        checker = get_runtime(self.spec.check_with) if self.spec.check_with else self.spec
        self.runner_class = checker.runner_class()
        self.calibration, self.val, self.thresholds = calibration, val, thresholds
        self.queries, self.threads, self.device, self.progress = queries, threads, device, progress
        self.reduced_only = reduced_only
        self.rows: list[dict] = []
        self.built: dict[str, tuple[Path, dict]] = {}
        self._count = 0
        self.fingerprints: dict[tuple[str, str], str] = {}

    def _build(self, cand: _Candidate) -> tuple[Path, dict]:
        self._count += 1
        out = self.stage / f"candidate-{self._count}"
        out.mkdir()
        kwargs = {"options": cand.options} if cand.options else {}
        entry = self.backend.build(self.bundle, out, precision=cand.precision, guard=cand.guard,
                                   calibration=self.calibration if cand.precision == "int8" else None,
                                   progress=False, **kwargs)
        return out, entry

    def _runner(self, out: Path, entry: dict, precision: str):
        return self.runner_class(out / Path(entry["model"]).name,
                                 precision=entry.get("inference_precision", precision),
                                 device=self.device, threads=self.threads)

    def probe(self, cand: _Candidate) -> dict:
        """Fidelity only (the sensitivity probes): build, run, compare; the artifact is discarded."""
        out, entry = self._build(cand)
        runner = self._runner(out, entry, cand.precision)
        try:
            return self.val.evaluate(runner)
        finally:
            runner.close()
            del runner
            shutil.rmtree(out, ignore_errors=True)

    def run(self, cand: _Candidate, same_as: str | None = None) -> dict:
        """Build, evaluate and time one candidate; its row is kept in :attr:`rows` (a candidate that
        builds the very artifact of an earlier one, ``same_as``, is not built twice)."""
        if same_as is not None:
            return next(r for r in self.rows if r["name"] == same_as)
        try:
            out, entry = self._build(cand)
            runner = self._runner(out, entry, cand.precision)
        except EdgeprotoError as exc:
            row = {"name": cand.name, "precision": cand.precision, "guard": cand.guard, **cand.settings,
                   "error": str(exc), "passed": False, "failed": ["build failed"]}
            self.rows.append(row)
            return row
        try:
            row = {"name": cand.name, "precision": cand.precision, "guard": cand.guard, **cand.settings,
                   "effective_precision": runner.precision, **self.val.evaluate(runner)}
            row["latency_ms"] = _p50(runner, self.val.images[:1], self.queries)
        finally:
            runner.close()
            del runner
        row["failed"] = self.thresholds.failed(row)
        if cand.baseline and self.reduced_only:
            row["failed"].append("fp32 is the baseline (--reduced-only)")
        fingerprint = (_digest(out), row["effective_precision"])
        same = self.fingerprints.get(fingerprint)
        if same is not None:  # e.g. an f16 hint that runs bf16, accuracy control that reverted nothing
            row["same_as"] = same
            row["failed"].append(f"the same artifact, run at the same precision, as {same!r}")
        else:
            self.fingerprints[fingerprint] = cand.name
        row["passed"] = not row["failed"]
        row["baseline"] = cand.baseline
        self.rows.append(row)
        self.built[cand.name] = (out, {**entry, "precision_built": cand.precision})
        return row

    def retime(self, names: Sequence[str]) -> None:
        """Time the named candidates again, interleaved, ``TIMING_ROUNDS`` times, and keep the median of
        the rounds' p50s: load on a shared machine then moves every candidate alike, which one timing
        per candidate, taken minutes apart during the search, does not."""
        runners = {}
        try:
            for name in names:
                out, entry = self.built[name]
                runners[name] = self._runner(out, entry, entry["precision_built"])
            x = self.val.images[:1]
            rounds: dict[str, list[float]] = {n: [] for n in names}
            for _ in range(TIMING_ROUNDS):
                for name, runner in runners.items():
                    rounds[name].append(_p50(runner, x, self.queries))
            for row in self.rows:
                if row["name"] in rounds:
                    row["latency_first_ms"] = row["latency_ms"]
                    row["latency_rounds_ms"] = rounds[row["name"]]
                    row["latency_ms"] = float(np.median(rounds[row["name"]]))
        finally:
            for runner in runners.values():
                runner.close()


def _digest(folder: Path) -> str:
    """sha256 over a built artifact's files (names and bytes); of an OpenVINO IR ``.xml`` only the
    sorted op types count (its auto-generated op names carry a per-process counter)."""
    import hashlib
    import re

    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode())
        data = path.read_bytes()
        if path.suffix == ".xml":
            types = re.findall(r'<layer [^>]*type="([^"]+)"', data.decode("utf-8", "replace"))
            data = "\n".join(sorted(types)).encode()
        h.update(data)
    return h.hexdigest()


def _p50(runner, x: np.ndarray, queries: int) -> float:
    stats = measure(lambda: runner.run(x), warmup=5, min_queries=queries, min_seconds=0.0)
    return float(stats["p50_ms"])


def _onnx_candidates(search: _Search, methods: Sequence[str], fp16: bool, sensitivity: bool,
                     max_steps: int | None, report: Callable[[str], None]) -> dict:
    """fp32 baseline, fp16, guarded int8 per method, int8 of everything, then the sensitivity search."""
    from edgeproto.runtimes.onnxruntime.compile import feature_input, inline_prototypes, layer_groups, load_model

    search.run(_Candidate("fp32", "fp32", "prototypes", baseline=True))
    if fp16:
        search.run(_Candidate("fp16 (prototypes fp32)", "fp16", "prototypes", settings={"fp32_groups": ["prototypes"]}))
    guarded = {}
    for m in methods:
        row = search.run(_Candidate(f"int8 {m} (prototypes fp32)", "int8", "prototypes", {"method": m},
                                    {"method": m, "fp32_groups": ["prototypes"]}))
        guarded[m] = row
        report(f"int8 {m} guarded: top-1 {row.get('top1', float('nan')):.4f}")
    scored = [m for m in methods if "top1" in guarded[m]]
    best = max(scored, key=lambda m: (guarded[m]["top1"], guarded[m]["map_iou"])) if scored else methods[0]
    search.run(_Candidate(f"int8 {best} (everything)", "int8", "none", {"method": best},
                          {"method": best, "fp32_groups": []}))
    if not sensitivity:
        return {}
    model = load_model(search.bundle)
    z = feature_input(model)
    groups = layer_groups(inline_prototypes(model), z)
    damage = []
    for name, nodes in groups.items():
        guard = "none" if name == "prototypes" else "prototypes"
        probe = search.probe(_Candidate(f"probe {name}", "int8", guard, {"method": best, "only": nodes}))
        damage.append({"group": name, "nodes": len(nodes), "top1": probe["top1"], "map_iou": probe["map_iou"],
                       "damage": 1.0 - probe["top1"], "badness": probe["damage"]})
        report(f"sensitivity {name}: top-1 {probe['top1']:.4f}")
    ranked = sorted(damage, key=lambda d: (-d["damage"], -d["badness"]))
    steps = len(ranked) - 1 if max_steps is None else min(int(max_steps), len(ranked) - 1)
    for k in range(1, steps + 1):
        keep = [d["group"] for d in ranked[:k]]
        guard = "prototypes" if "prototypes" in keep else "none"
        exclude = [n for g in keep if g != "prototypes" for n in groups[g]]
        same = f"int8 {best} (prototypes fp32)" if keep == ["prototypes"] else None
        row = search.run(_Candidate(f"int8 {best}, fp32: {', '.join(keep)}", "int8", guard,
                                    {"method": best, "exclude": exclude}, {"method": best, "fp32_groups": keep}),
                         same_as=same)
        report(f"keep {keep} fp32: top-1 {row.get('top1', float('nan')):.4f}")
        if row["passed"]:
            break
    return {"method": best, "groups": {g: len(n) for g, n in groups.items()},
            "ranking": ranked, "rule": "one group quantized at a time (the rest fp32); damage = 1 − top-1 "
                                       "prototype agreement, ties by mean explanation badness"}


def _openvino_candidates(search: _Search, accuracy_control: bool, report: Callable[[str], None]) -> dict:
    """fp32 baseline, bf16/fp16 hints, NNCF int8 with and without the guard, accuracy control."""
    search.run(_Candidate("fp32", "fp32", "prototypes", baseline=True))
    for p in ("bf16", "fp16"):
        search.run(_Candidate(f"{p} hint", p, "prototypes", settings={"hint": p}))
    search.run(_Candidate("int8 nncf (prototypes fp32)", "int8", "prototypes",
                          settings={"fp32_groups": ["prototypes"]}))
    search.run(_Candidate("int8 nncf (everything)", "int8", "none", settings={"fp32_groups": []}))
    if not accuracy_control:
        return {}
    val = search.val
    ref_top1 = ranking(val.reference["logits"], val.reference["scores"], val.classes)[:, 0]
    items = [{"image": val.images[i: i + 1], "top1": int(ref_top1[i])} for i in range(len(val.images))]

    def top1_agreement(compiled_model, data) -> tuple[float, list[float]]:
        hits = []
        for item in data:
            result = compiled_model(item["image"])
            out = {port.get_any_name(): np.asarray(result[port]) for port in compiled_model.outputs}
            rank = ranking(out["logits"], out["scores"], val.classes)
            hits.append(float(rank[0, 0] == item["top1"]))
        return float(np.mean(hits)) if hits else 1.0, hits

    control = {"items": items, "transform": lambda item: item["image"], "validation_fn": top1_agreement,
               "max_drop": 1.0 - search.thresholds.min_top1,
               "metric": "top-1 prototype agreement with the fp32 reference"}
    for guard in ("none", "prototypes"):
        label = "prototypes fp32" if guard == "prototypes" else "NNCF chooses what to revert"
        row = search.run(_Candidate(f"int8 nncf accuracy control ({label})", "int8", guard,
                                    {"accuracy_control": control},
                                    {"accuracy_control": {"max_drop": control["max_drop"], "metric": control["metric"]},
                                     "fp32_groups": ["prototypes"] if guard == "prototypes" else []}))
        report(f"nncf accuracy control ({guard}): top-1 {row.get('top1', float('nan')):.4f}")
    return {"accuracy_control": {"tool": "nncf.quantize_with_accuracy_control", "metric": control["metric"],
                                 "max_drop": control["max_drop"], "drop_type": "absolute"}}


# --------------------------------------------------------------------------- entry point


def compile_auto(
    bundle_path,
    *,
    target: str,
    thresholds: SearchThresholds,
    calib: int = 128,
    val_split: str = "train",
    val_images: int = 256,
    methods: Sequence[str] = METHODS,
    fp16: bool = True,
    sensitivity: bool = True,
    max_steps: int | None = None,
    accuracy_control: bool = True,
    latency_queries: int = 50,
    reduced_only: bool = False,
    threads: int = 0,
    device: str | None = None,
    progress: bool = True,
    force: bool = False,
    data_root=None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Search ``target``'s precisions and install the fastest candidate that meets ``thresholds`` as
    ``compiled/<target>-auto/``; return its manifest entry (``entry["search"]`` holds every candidate).

    ``methods`` / ``fp16`` / ``sensitivity`` / ``max_steps`` / ``accuracy_control`` bound the search
    space (tests keep it small). fp32 is a candidate too (when nothing reduced is faster, it is the
    honest answer) unless ``reduced_only``. Raises EdgeprotoError -- and writes nothing -- on a bad request or
    when no candidate meets the thresholds (the message names the best one found).
    """
    thresholds.check()
    for name, value, least in (("val_images", val_images, 1), ("latency_queries", latency_queries, 1),
                               ("calib", calib, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise EdgeprotoError(f"{name} must be a whole number of at least {least}, got {value!r}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise EdgeprotoError(f"calibration methods must be among {', '.join(METHODS)}, got {list(methods)}")
    spec = check_request(target, "fp32", "prototypes", calib)
    spec.require("int8", compiling=True)
    if "int8" not in spec.precisions:
        raise EdgeprotoError(f"{target} has no int8: nothing to search")
    key = f"{target}-{AUTO}"
    bundle = open_for_compile(bundle_path, key, force)
    report = log or (lambda _msg: None)
    calibration = calibration_images(bundle, "int8", calib, data_root, progress)
    val = _validation(bundle, calibration, val_split, int(val_images), data_root, progress)
    with staging(bundle, key) as stage:
        search = _Search(bundle, target, stage, calibration, val, thresholds, queries=int(latency_queries),
                         threads=threads, device=device, progress=progress, reduced_only=reduced_only)
        if spec.module == "openvino":
            details = _openvino_candidates(search, accuracy_control, report)
        else:
            details = _onnx_candidates(search, list(methods), fp16, sensitivity, max_steps, report)
        rows = search.rows
        passing = [r for r in rows if r["passed"]]
        fp32 = rows[0]
        if "error" in fp32:
            raise EdgeprotoError(f"the fp32 baseline of {target} did not build: {fp32['error']}")
        if not passing:
            scored = [r for r in rows if "top1" in r and not (r.get("baseline") and reduced_only)]
            scored = [r for r in scored if "error" not in r]
            best = max(scored, key=lambda r: (r["top1"], r["map_iou"], -r["accuracy_drop"])) if scored else None
            what = (f"the best candidate was {best['name']!r}: top-1 agreement {best['top1']:.4f}, map IoU "
                    f"{best['map_iou']:.4f}, accuracy drop {best['accuracy_drop']:+.4f}, "
                    f"{best['latency_ms']:.3f} ms vs fp32 {fp32['latency_ms']:.3f} ms") \
                if best else "no candidate built"
            raise EdgeprotoError(
                f"no {target} candidate meets {thresholds.describe()} on {val.record['images']} validation images "
                f"({len(scored)} tried; nothing written): {what}. Loosen the thresholds"
                + (", or compile --precision fp32" if reduced_only else ""))
        plain = next((r["name"] for r in rows if r["name"] in ("int8 minmax (prototypes fp32)",
                                                               "int8 nncf (prototypes fp32)")), None)
        search.retime([r["name"] for r in rows if r["name"] in search.built])
        by_name = {r["name"]: r for r in rows}
        for r in rows:  # the same artifact timed twice: one latency, from all its rounds
            if r.get("same_as") and "latency_rounds_ms" in r and "latency_rounds_ms" in by_name[r["same_as"]]:
                first = by_name[r["same_as"]]
                pooled = first["latency_rounds_ms"] + r["latency_rounds_ms"]
                first["latency_ms"] = r["latency_ms"] = float(np.median(pooled))
        for r in rows:
            if "latency_ms" in r:
                r["speedup_vs_fp32"] = fp32["latency_ms"] / r["latency_ms"]
        passing = [r for r in rows if r["passed"]]
        winner = min(passing, key=lambda r: r["latency_ms"])
        why = (f"fastest of {len(passing)} candidate(s) meeting {thresholds.describe()} (of {len(rows)} tried) "
               f"on {val.record['images']} validation images: {winner['latency_ms']:.3f} ms at batch 1 vs fp32 "
               f"{fp32['latency_ms']:.3f} ms ({winner['speedup_vs_fp32']:.2f}× the fp32 speed); top-1 agreement "
               f"{winner['top1']:.4f}")
        if winner.get("baseline"):
            why += "; no reduced-precision candidate that meets the thresholds was faster than fp32"
        out, entry = search.built[winner["name"]]
        built = stage / key
        out.rename(built)
        precision = entry.pop("precision_built")
        entry["model"] = f"compiled/{key}/{Path(entry['model']).name}"
        entry.setdefault("inference_precision", precision)
        full = {"target": target, "precision": AUTO, "guard": winner["guard"], **entry,
                "chosen": {k: winner[k] for k in ("name", "precision", "guard") if k in winner},
                "calibration": calibration.record() if precision == "int8" else None,
                "search": {"thresholds": thresholds.record(), "validation": val.record,
                           "reference_accuracy": val.ref_accuracy,
                           "calibration": {**calibration.record(), "seed": CALIBRATION_SEED},
                           "latency": {"batch": 1, "statistic": "p50 (nearest rank) of each round, median over "
                                       f"{TIMING_ROUNDS} interleaved rounds of every candidate",
                                       "queries": int(latency_queries),
                                       "threads": int(threads) if threads else "runtime default",
                                       "measured_with": search.runner_class.__name__},
                           "candidates": rows, "winner": winner["name"], "why": why,
                           "plain_guarded_int8": plain, **details}}
        if full["calibration"] is None:
            full.pop("calibration")
        return install_checked(bundle, spec, key, built, full, precision=AUTO, device=device)
