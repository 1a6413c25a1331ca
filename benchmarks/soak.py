"""Soak test: N ONNX Runtime inferences of a bundle, resident memory every 1000 — is it flat?

    python benchmarks/soak.py runs/protopnet-bundle [--n 10000] [--every 1000] [--batch 1] [--threads 1]

Prints RSS (MiB) at start, after the session is loaded and every ``--every`` inferences, then the
growth after the first checkpoint (warm-up allocations done) and a verdict: flat when the growth is
below ``--tolerance-mb`` (default 5). Exit code 1 when it is not flat. Not run in CI. No torch.
"""

from __future__ import annotations

import argparse
import sys
import time

from edgeproto.bundle import open_bundle
from edgeproto.errors import EdgeprotoError
from edgeproto.measure.single_stream import bench_inputs
from edgeproto.measure.latency import current_rss_mb, peak_rss_mb
from edgeproto.runtimes import load_runner


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("--n", type=int, default=10_000, help="inferences")
    parser.add_argument("--every", type=int, default=1000, help="report RSS every this many inferences")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--tolerance-mb", type=float, default=5.0, help="allowed growth after the first report")
    args = parser.parse_args(argv)
    try:
        bundle = open_bundle(args.bundle)
        start = current_rss_mb()
        runner = load_runner(bundle, "onnxruntime", args.precision, threads=args.threads)
        loaded = current_rss_mb()
        x = bench_inputs(bundle, args.batch)
    except EdgeprotoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"onnxruntime {runner.version} {runner.precision} {runner.device}, {args.threads} thread(s), batch {args.batch}")
    print(f"rss at start {start:.1f} MiB, after load {loaded:.1f} MiB")
    marks = []
    t0 = time.perf_counter()
    for i in range(1, args.n + 1):
        runner.run(x)
        if i % args.every == 0:
            rss = current_rss_mb()
            marks.append(rss)
            print(f"{i:>8} inferences  rss {rss:8.1f} MiB  ({time.perf_counter() - t0:6.1f} s)", flush=True)
    if not marks:
        print("no checkpoint reached: raise --n or lower --every")
        return 2
    growth = marks[-1] - marks[0]
    flat = growth < args.tolerance_mb
    print(f"growth after the first checkpoint: {growth:+.1f} MiB over {args.n - args.every} inferences "
          f"({1024 * growth / max(1, args.n - args.every):+.3f} KiB/inference); peak RSS {peak_rss_mb():.1f} MiB; "
          f"{'flat' if flat else 'NOT flat'} (tolerance {args.tolerance_mb} MiB)")
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
