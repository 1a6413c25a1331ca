"""fp32 parity of ONNX Runtime and OpenVINO with PyTorch on a bundle's WHOLE test split.

``edgeproto verify`` checks the bundle's 16 golden images; this runs every test image of the
bundle's recipe through the PyTorch checkpoint (``manifest["source"]["checkpoint"]``), ONNX Runtime
and OpenVINO (the bundle's ``model.onnx``, edgeproto ops through their function bodies / converters)
and reports max |Δ| of scores and logits and the top-1 prototype agreement (score × class weight).

    python benchmarks/family_parity.py runs/hopfield-procedural-bundle runs/tversky-xor-bundle [--json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from edgeproto.bundle import open_bundle
from edgeproto.data import build_dataset
from edgeproto.ranking import top_prototypes
from edgeproto.runtimes.onnxruntime.runner import OnnxRuntimeRunner
from edgeproto.runtimes.openvino.runner import OpenVinoRunner
from edgeproto.train.checkpoint import load_checkpoint


def parity(bundle_path: str) -> dict:
    bundle = open_bundle(bundle_path)
    ds = build_dataset(bundle.manifest["data"], "test")
    images = np.stack([np.asarray(ds[i][0], dtype=np.float32) for i in range(len(ds))])
    model, _ = load_checkpoint(bundle.manifest["source"]["checkpoint"])
    with torch.no_grad():
        ref = {k: v.numpy() for k, v in model(torch.from_numpy(images)).items()}
    last = bundle.prototype_classes()  # what the ranking needs
    top_ref = top_prototypes(ref["logits"], ref["scores"], last, 1)
    row = {"bundle": str(bundle_path), "family": bundle.manifest["model"]["family"],
           "op_type": bundle.manifest["model"]["op_type"], "head_op_type": bundle.manifest["model"].get("head_op_type"),
           "images": len(images)}
    path = bundle.path("model.onnx")
    for name, runner in (("onnxruntime", OnnxRuntimeRunner(path)), ("openvino", OpenVinoRunner(path, precision="fp32"))):
        out = {k: [] for k in ("logits", "scores")}
        for i in range(0, len(images), 64):
            o = runner.run(images[i : i + 64])
            for k in out:
                out[k].append(o[k])
        out = {k: np.concatenate(v) for k, v in out.items()}
        row[name] = {
            "max_abs_scores": float(np.abs(out["scores"] - ref["scores"]).max()),
            "max_abs_logits": float(np.abs(out["logits"] - ref["logits"]).max()),
            "top1_prototype_agreement": float((top_prototypes(out["logits"], out["scores"], last, 1) == top_ref).mean()),
            "class_agreement": float((out["logits"].argmax(1) == ref["logits"].argmax(1)).mean()),
        }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = [parity(b) for b in args.bundles]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'family':10} {'ops':38} {'n':>4}  {'ORT Δscores':>11} {'ORT Δlogits':>11} {'ORT top1':>8}  "
          f"{'OV Δscores':>10} {'OV Δlogits':>10} {'OV top1':>7}")
    for r in rows:
        o, v = r["onnxruntime"], r["openvino"]
        ops = r["op_type"] + (f" + {r['head_op_type']} (head)" if r["head_op_type"] else "")
        print(f"{r['family']:10} {ops:38} {r['images']:>4}  {o['max_abs_scores']:>11.2e} "
              f"{o['max_abs_logits']:>11.2e} {o['top1_prototype_agreement']:>8.3f}  {v['max_abs_scores']:>10.2e} "
              f"{v['max_abs_logits']:>10.2e} {v['top1_prototype_agreement']:>7.3f}")


if __name__ == "__main__":
    main()
