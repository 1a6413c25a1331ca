"""``compile --precision auto`` on each bundle and target: the chosen artifact next to plain guarded int8.

For every bundle and target (default: onnxruntime, openvino, tensorrt — the TensorRT-ready graph,
run by ONNX Runtime on the CPU here) this runs :func:`edgeproto.compare.precision_search.compile_auto`
(``--force``: the ``<target>-auto`` artifact is rebuilt) and prints one line per target: the chosen
candidate, its top-1 prototype agreement / map IoU / accuracy drop on the validation images and its
batch-1 speed as a ratio to the same target's fp32 (every candidate re-timed in 5 interleaved rounds
in the same run, median of the rounds' p50s), then the same for plain guarded int8 (``compile
--precision int8``'s settings), then every candidate (``--all``).

    python benchmarks/precision_auto.py runs/protopnet-bundle runs/hyperpg-bundle [--min-top1 0.98]
        [--targets onnxruntime,openvino,tensorrt] [--threads 1] [--val-split train|test] [--all] [--json FILE]

Latency on a shared machine is noisy: read the ratios, not the milliseconds. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import time

from edgeproto.compare.precision_search import SearchThresholds, compile_auto


def _fmt(row: dict) -> str:
    return (f"{row['name']:<60s} {row.get('effective_precision', row['precision']):>5s}  top-1 {row['top1']:.4f}  "
            f"IoU {row['map_iou']:.4f}  acc drop {row['accuracy_drop']:+.4f}  {row['latency_ms']:7.3f} ms  "
            f"{row['speedup_vs_fp32']:.2f}x fp32 speed  {'PASS' if row['passed'] else 'fail'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--targets", default="onnxruntime,openvino,tensorrt")
    ap.add_argument("--min-top1", type=float, default=0.98)
    ap.add_argument("--val-images", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="runtime threads for the timings (0: default)")
    ap.add_argument("--val-split", default="train", choices=("train", "test"))
    ap.add_argument("--all", action="store_true", help="print every candidate")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    results = []
    for bundle in args.bundles:
        for target in args.targets.split(","):
            t0 = time.perf_counter()
            entry = compile_auto(bundle, target=target, thresholds=SearchThresholds(args.min_top1),
                                 val_images=args.val_images, val_split=args.val_split, threads=args.threads,
                                 progress=False, force=True)
            seconds = time.perf_counter() - t0
            search = entry["search"]
            rows = {r["name"]: r for r in search["candidates"]}
            print(f"\n{bundle} · {target} · search {seconds:.0f} s · {len(rows)} candidates · "
                  f"{search['validation']['images']} validation images")
            print("  chosen " + _fmt(rows[search["winner"]]))
            if search.get("plain_guarded_int8"):
                print("  plain  " + _fmt(rows[search["plain_guarded_int8"]]))
            print("  fp32   " + _fmt(rows["fp32"]))
            if args.all:
                for row in search["candidates"]:
                    print("    " + (_fmt(row) if "error" not in row else f"{row['name']}: {row['error']}"))
            results.append({"bundle": bundle, "target": target, "seconds": seconds, "winner": search["winner"],
                            "threads": args.threads, "val_split": args.val_split,
                            "why": search["why"], "candidates": search["candidates"],
                            "sensitivity": search.get("ranking")})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
