"""What the explanation guard buys: fp32 vs int8 + guard vs int8 without guard, per runtime.

For each bundle and each runtime (ONNX Runtime, OpenVINO) the three artifacts are compiled into the
bundle when missing (``edgeproto.runtimes.compile.compile_bundle``; ``--recompile`` forces it) and
run on the WHOLE test split of the bundle's recipe (``manifest["data"]``). Each is compared with
the fp32 PyTorch model (the checkpoint in ``manifest["source"]["checkpoint"]``; when torch or the
checkpoint is unavailable, with the bundle's fp32 ONNX model in ONNX Runtime instead):

- top-1 prototype agreement: the most-contributing prototype (score × class weight of the
  predicted class) is the same;
- top-5 overlap: mean |A ∩ B| / 5 of the five most-contributing prototypes;
- class agreement: same predicted class; accuracy against the labels as well;
- median batch-1 latency (ms) and its ratio to the same runtime's fp32 artifact.

    python benchmarks/int8_guard_table.py /tmp/protopnet-bundle /tmp/hyperpg-bundle [--json]

Note: compiling adds ``compiled/*`` artifacts to the bundles (their manifests are updated).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from edgeproto.bundle import open_bundle
from edgeproto.errors import EdgeprotoError
from edgeproto.ranking import top_prototypes
from edgeproto.runtimes.compile import compile_bundle
from edgeproto.runtimes import artifact_key, load_runner

VARIANTS = [("fp32", "fp32", "prototypes"), ("int8+guard", "int8", "prototypes"), ("int8 no-guard", "int8", "none")]
TARGETS = ("onnxruntime", "openvino")


def test_split(manifest: dict, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    from edgeproto.data import build_dataset

    dataset = build_dataset(manifest["data"], "test")
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise EdgeprotoError("the recipe's test split is empty")
    items = [dataset[i] for i in range(n)]
    images = np.stack([np.asarray(x.numpy() if hasattr(x, "numpy") else x, dtype=np.float32) for x, _ in items])
    return images, np.array([int(y) for _, y in items])


def run_batched(fn, images: np.ndarray, batch: int = 64) -> dict[str, np.ndarray]:
    parts = [fn(images[i : i + batch]) for i in range(0, len(images), batch)]
    return {k: np.concatenate([p[k] for p in parts]) for k in ("logits", "scores", "maps") if k in parts[0]}


def reference(bundle, images: np.ndarray) -> tuple[dict, str]:
    """fp32 PyTorch outputs (or fp32 ONNX Runtime when torch / the checkpoint is unavailable)."""
    checkpoint = bundle.manifest.get("source", {}).get("checkpoint")
    try:
        import torch

        from edgeproto.train.checkpoint import load_checkpoint

        if not checkpoint or not Path(checkpoint).is_dir():
            raise FileNotFoundError(checkpoint)
        model, _ = load_checkpoint(checkpoint)
        model.eval()

        def fn(x):
            with torch.no_grad():
                return {k: v.numpy() for k, v in model(torch.from_numpy(x)).items()}

        return run_batched(fn, images), "pytorch fp32"
    except (ImportError, FileNotFoundError, EdgeprotoError) as exc:
        from edgeproto.runtimes.onnxruntime.runner import OnnxRuntimeRunner

        print(f"note: reference = fp32 ONNX Runtime ({type(exc).__name__}: {exc})", file=sys.stderr)
        runner = OnnxRuntimeRunner(bundle.path(bundle.manifest["model"]["file"]))
        return run_batched(runner.run, images), "onnxruntime fp32 (bundle model.onnx)"


def latency_ms(runner, image: np.ndarray, repeat: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        runner.run(image)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        runner.run(image)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def agreement(ref: dict, out: dict, classes: np.ndarray, labels: np.ndarray) -> dict:
    a = top_prototypes(ref["logits"], ref["scores"], classes, 5)
    b = top_prototypes(out["logits"], out["scores"], classes, 5)
    k = a.shape[1]
    return {
        "top1_prototype": float((a[:, 0] == b[:, 0]).mean()),
        "top5_overlap": float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b)])),
        "class": float((ref["logits"].argmax(1) == out["logits"].argmax(1)).mean()),
        "accuracy": float((out["logits"].argmax(1) == labels).mean()),
        "finite": bool(np.isfinite(out["scores"]).all() and np.isfinite(out["maps"]).all()),
    }


def evaluate(path: str, args) -> list[dict]:
    root = Path(path)
    bundle = open_bundle(root)
    images, labels = test_split(bundle.manifest, args.limit)
    ref, ref_name = reference(bundle, images)
    last = bundle.prototype_classes()  # what the ranking needs
    rows = []
    for target in args.targets:
        fp32_ms = None
        for label, precision, guard in VARIANTS:
            key = artifact_key(target, precision, guard)
            if args.recompile or key not in bundle.manifest.get("compiled", {}):
                compile_bundle(root, target=target, precision=precision, guard=guard, calib=args.calib,
                               progress=not args.quiet)
                bundle = open_bundle(root)
            runner = load_runner(bundle, target, precision, guard, threads=args.threads)
            out = run_batched(runner.run, images)
            ms = latency_ms(runner, images[:1], args.repeat)
            fp32_ms = ms if precision == "fp32" else fp32_ms
            entry = bundle.manifest["compiled"][key]
            rows.append({
                "bundle": root.name, "family": bundle.manifest["model"]["family"], "runtime": target,
                "variant": label, "key": key, "reference": ref_name, "test_images": int(len(images)),
                "calibration_images": entry.get("calibration", {}).get("images"),
                **agreement(ref, out, last, labels),
                "latency_ms": ms, "latency_vs_fp32": ms / fp32_ms if fp32_ms else None,
            })
            del runner
    return rows


def markdown(rows: list[dict]) -> str:
    head = ("| bundle | runtime | variant | top-1 proto | top-5 overlap | class agree | accuracy | finite "
            "| median ms (b=1) | × fp32 |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['bundle']} ({r['family']}) | {r['runtime']} | {r['variant']} | {r['top1_prototype']:.3f} "
            f"| {r['top5_overlap']:.3f} | {r['class']:.3f} | {r['accuracy']:.3f} | {'yes' if r['finite'] else 'NO'} "
            f"| {r['latency_ms']:.3f} | {r['latency_vs_fp32']:.2f} |"
        )
    refs = sorted({f"{r['bundle']}: {r['reference']}, {r['test_images']} test images" for r in rows})
    return "\n".join(lines) + "\n\nreference: " + "; ".join(refs)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundles", nargs="+", help="bundle directories")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--calib", type=int, default=64, help="calibration images for int8 (train split)")
    parser.add_argument("--recompile", action="store_true", help="compile even when the artifact exists")
    parser.add_argument("--repeat", type=int, default=200, help="timed batch-1 runs per artifact")
    parser.add_argument("--threads", type=int, default=1, help="runtime threads (0: runtime default)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N test images")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of markdown")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        rows = [row for path in args.bundles for row in evaluate(path, args)]
    except EdgeprotoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(rows, indent=2) if args.json else markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
