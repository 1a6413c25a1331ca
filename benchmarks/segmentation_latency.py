"""Latency of segmentation bundles on the CPU targets, against PyTorch eager, in one run.

For each bundle (``latent_seg``, ``region_seg``, ``scale_seg``): ONNX Runtime and OpenVINO at fp32 and
at int8 with the explanation guard (``--unguarded`` adds int8 without it); missing int8 artifacts are
compiled into the bundle first (64 calibration images). Each is timed single-stream with
:func:`edgeproto.measure.bench.bench_bundle` (``compare_torch``: the PyTorch reference, eager, eval,
no_grad, timed in the same process right after the target), and the ratio printed is torch p50 /
target p50 (> 1: faster than PyTorch). The timed inputs are the bundle's golden images (region_seg:
with their SLIC label map channel; SLIC itself is preprocessing and not timed here).

    python benchmarks/segmentation_latency.py runs/gseg-bundle [more bundles] [--threads 1] [--batches 1,8]
        [--json FILE]

Not run in CI. Note: compiling adds ``compiled/*`` artifacts to the bundles (manifests updated).
"""

from __future__ import annotations

import argparse
import json
import sys

from edgeproto.bundle import open_bundle
from edgeproto.errors import EdgeprotoError
from edgeproto.measure.bench import bench_bundle, parse_batches
from edgeproto.runtimes import RUNTIMES, artifact_key


def variants(unguarded: bool) -> list[tuple[str, str, str]]:
    rows = []
    for target in ("onnxruntime", "openvino"):
        if RUNTIMES[target].missing():
            continue
        rows += [(target, "fp32", "prototypes"), (target, "int8", "prototypes")]
        if unguarded:
            rows.append((target, "int8", "none"))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--threads", type=int, default=1, help="runtime and PyTorch threads (0: each one's default)")
    ap.add_argument("--batches", default="1", help="comma-separated batch sizes")
    ap.add_argument("--min-queries", type=int, default=200)
    ap.add_argument("--min-seconds", type=float, default=3.0)
    ap.add_argument("--unguarded", action="store_true", help="also int8 without the explanation guard")
    ap.add_argument("--json", default=None, help="write every report to this file")
    args = ap.parse_args(argv)
    from edgeproto.runtimes.compile import compile_bundle

    batches = parse_batches(args.batches)
    reports = []
    print(f"{'bundle':<28} {'target':<12} {'prec':<5} {'guard':<10} {'batch':>5} {'p50 ms':>8} {'p90 ms':>8} "
          f"{'torch p50':>9} {'torch/target':>12}")
    for path in args.bundles:
        bundle = open_bundle(path)
        if bundle.manifest.get("task") != "segmentation":
            raise EdgeprotoError(f"{path} is not a segmentation bundle")
        name = bundle.manifest.get("source", {}).get("recipe") or path
        for target, precision, guard in variants(args.unguarded):
            compiled = bundle.manifest.get("compiled", {})
            if precision != "fp32" and artifact_key(target, precision, guard) not in compiled:
                compile_bundle(bundle.root, target=target, precision=precision, guard=guard, calib=64, progress=False)
                bundle = open_bundle(bundle.root)
            rep = bench_bundle(bundle, target=target, precision=precision, guard=guard, batches=batches,
                               threads=args.threads, min_queries=args.min_queries, min_seconds=args.min_seconds,
                               compare_torch=True)
            rep["bundle_name"] = name
            reports.append(rep)
            for row in rep["batches"]:
                lat, ref = row["latency"], row["torch"]
                print(f"{str(name)[:28]:<28} {target:<12} {precision:<5} {guard:<10} {row['batch']:>5} "
                      f"{lat['p50_ms']:>8.3f} {lat['p90_ms']:>8.3f} {ref['p50_ms']:>9.3f} "
                      f"{row['speedup_vs_torch']['p50']:>11.2f}×", flush=True)
    host = reports[0]["host"] if reports else {}
    print(f"threads {args.threads or 'default'}; host {host.get('cpu')} ({host.get('usable_cpus')} usable CPUs)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(reports, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
