"""The TensorRT-ready graphs of bundles, run by ONNX Runtime on the CPU (target ``tensorrt-graph``)
against the PyTorch reference on the whole test split: fp32, fp16 and int8, guard on and off.

    python benchmarks/tensorrt_graph_table.py runs/protopnet-bundle runs/hyperpg-bundle [--calib 128]

Compiles what is missing (``edgeproto compile --target tensorrt``), then validates each variant and
prints one Markdown table: accuracy, top-1 prototype agreement, top-5 overlap, map IoU, finite
outputs, and whether the graph's prototype math is float32.
"""

from __future__ import annotations

import argparse

from edgeproto.bundle import open_bundle
from edgeproto.compare.options import ValidateOptions
from edgeproto.compare.validate import validate_bundle
from edgeproto.runtimes import RUNTIMES, artifact_key
from edgeproto.runtimes.compile import compile_bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+")
    parser.add_argument("--calib", type=int, default=128)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    print("| bundle | precision | guard | accuracy (ref → graph) | top-1 prototype | top-5 overlap | map IoU | "
          "finite | prototype math fp32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for root in args.bundles:
        for precision, guard in RUNTIMES["tensorrt-graph"].sweep:
            key = artifact_key("tensorrt", precision, guard)
            if key not in open_bundle(root).manifest.get("compiled", {}):
                compile_bundle(root, target="tensorrt", precision=precision, guard=guard, calib=args.calib,
                               progress=False)
            entry = open_bundle(root).manifest["compiled"][key]
            r = validate_bundle(root, target="tensorrt-graph", precision=precision, guard=guard,
                                options=ValidateOptions(limit=args.limit, progress=False, samples=0))
            a, f = r["accuracy"], r["fidelity"]
            finite = all(r["parity"][n]["finite"] for n in ("logits", "scores", "maps"))
            print(f"| {root} | {precision} | {guard} | {a['reference']:.4f} → {a['target']:.4f} | {f['top1']:.4f} | "
                  f"{f['topk_overlap']:.4f} | {f['map_iou']:.4f} | {'yes' if finite else 'NO'} | "
                  f"{'yes' if entry['prototype_math_fp32'] else 'no'} |", flush=True)


if __name__ == "__main__":
    main()
