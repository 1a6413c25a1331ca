"""Every installed CPU target and precision of the default recipes' bundles, against PyTorch eager.

For each bundle: ONNX Runtime fp32 and int8 (explanation guard on), OpenVINO fp32 and int8 (guard on),
and OpenVINO bf16 where the CPU has bf16 (``--all`` adds ONNX Runtime fp16); missing artifacts are
compiled into the bundle first (``--no-compile`` skips them instead). Each is timed single-stream
at batch 1 with :func:`edgeproto.measure.bench.bench_bundle`; the PyTorch reference (eager, eval, no_grad)
is timed in the same process before and after the targets, and the ratio is torch p50 / target p50
(> 1: faster than torch), using the mean of the two torch p50s (their drift is printed).

Cross-checks of the harness:

- OpenVINO's own ``benchmark_app`` on the same fp32 IR (``-nstreams 1 -nthreads T -infer_precision f32
  -shape [1,3,S,S]``, one synchronous request; its UI refuses ``-nthreads`` with ``-hint latency``, so
  ``-hint none`` with the latency hint's settings spelled out): our p50 vs its median (target: within 10 %);
- ``onnxruntime_perf_test`` when present (the pip wheel does not ship it: says so).

Then a CUB-scale model (ResNet-18-sized ``small_resnet``: widths 64-128-256-512, 2 blocks, stem
stride 4, 224×224; 2000 L2 prototypes of 128 dims, 200 classes; untrained weights) is exported and
timed the same way, and its achieved GFLOP/s (FLOPs counted analytically: convolutions, the linear
layer and the prototype layer's 3·M·D·H·W) is compared with this machine's fp32 matmul peak
(2048² ``torch.matmul`` at the same thread count, best of 5; numpy's for reference).

    python benchmarks/bench_targets.py runs/protopnet-bundle [more bundles] [--threads 1] [--json FILE]

Not run in CI. Note: compiling adds ``compiled/*`` artifacts to the bundles (manifests updated).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgeproto.bundle import open_bundle
from edgeproto.errors import EdgeprotoError
from edgeproto.environment import host_info
from edgeproto.measure.bench import bench_bundle
from edgeproto.measure.latency import measure
from edgeproto.runtimes import RUNTIMES, artifact_key

CUB_CONFIG = {
    "num_classes": 200,
    "in_channels": 3,
    "backbone": {"name": "small_resnet", "widths": [64, 128, 256, 512], "blocks": 2, "stem_stride": 4},
    "prototypes": {"family": "l2_log", "per_class": 10, "dim": 128},
}
CUB_SIZE = 224


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def variants(args) -> list[tuple[str, str, str]]:
    out = []
    if not RUNTIMES["onnxruntime"].missing():
        out += [("onnxruntime", "fp32", "prototypes"), ("onnxruntime", "int8", "prototypes")]
        if args.all:
            out.append(("onnxruntime", "fp16", "prototypes"))
    import importlib.util

    if importlib.util.find_spec("openvino") is not None:
        out += [("openvino", "fp32", "prototypes"), ("openvino", "int8", "prototypes")]
        if cpu_has_bf16() or args.all:
            out.append(("openvino", "bf16", "prototypes"))
    return out


def ensure_compiled(root: Path, target: str, precision: str, guard: str, args) -> bool:
    """Compile the artifact if the bundle lacks it; False when it is missing and must be skipped."""
    key = artifact_key(target, precision, guard)
    if key in open_bundle(root).manifest.get("compiled", {}):
        return True
    if args.no_compile:
        return precision == "fp32"  # fp32 falls back to model.onnx
    from edgeproto.runtimes.compile import compile_bundle

    t0 = time.perf_counter()
    print(f"  compiling {key} ...", file=sys.stderr, flush=True)
    compile_bundle(root, target=target, precision=precision, guard=guard, calib=args.calib, progress=False)
    print(f"  compiled {key} in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return True


# --------------------------------------------------------------------------- external tools


def find_tool(name: str) -> str | None:
    here = Path(sys.executable).parent / name
    return str(here) if here.is_file() else shutil.which(name)


def benchmark_app(xml: Path, size: int, threads: int, niter: int, *, static: bool, precision: str = "f32") -> dict:
    """Run OpenVINO's benchmark_app on an IR and parse its latency section (ms).

    ``static``: ``-shape [1,3,S,S]`` (benchmark_app reshapes the model to a static batch of 1) or
    ``-data_shape [1,3,S,S]`` (the model keeps its dynamic batch dimension, as edgeproto's runner
    compiles it, and is fed batch-1 data)."""
    tool = find_tool("benchmark_app")
    if tool is None:
        return {"error": "benchmark_app not found (it comes with the openvino pip package)"}
    # benchmark_app refuses -nstreams/-nthreads together with -hint latency ("fine tune options ... set -hint
    # none"), so the latency hint's settings are spelled out: one stream, one synchronous request.
    argv = [tool, "-m", str(xml), "-d", "CPU", "-hint", "none", "-api", "sync", "-nireq", "1", "-nstreams", "1",
            "-nthreads", str(threads), "-niter", str(niter), "-infer_precision", precision,
            "-shape" if static else "-data_shape", f"[1,3,{size},{size}]"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    text = done.stdout + done.stderr
    if done.returncode != 0:
        return {"error": f"benchmark_app exit {done.returncode}: {text.strip()[-600:]}", "command": argv}
    stats = {}
    section = text.split("Latency:", 1)[1] if "Latency:" in text else ""
    for key in ("Median", "Average", "Min", "Max"):
        m = re.search(rf"{key}:\s*([\d.]+)\s*(ms|us)", section)
        if m:
            stats[key.lower() + "_ms"] = float(m.group(1)) / (1000.0 if m.group(2) == "us" else 1.0)
    m = re.search(r"Throughput:\s*([\d.]+)\s*FPS", text)
    if m:
        stats["throughput_fps"] = float(m.group(1))
    m = re.search(r"Count:\s*(\d+)\s*iterations", text)
    if m:
        stats["iterations"] = int(m.group(1))
    if "median_ms" not in stats:
        return {"error": f"could not parse benchmark_app's latency: {text.strip()[-600:]}", "command": argv}
    stats["command"] = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(argv))
    return stats


def openvino_cross_check(xml: Path, size: int, threads: int, niter: int, runner_fn, timing: dict) -> list[dict]:
    """Our timings vs benchmark_app on the same IR, twice:

    - ``harness``: benchmark_app ``-shape`` (static batch 1) vs our :func:`measure` of ``InferRequest.infer()``
      on a once-filled input tensor (what benchmark_app's sync mode does) of the same IR reshaped to static
      batch 1 with the same settings: checks the timing method itself;
    - ``runner``: benchmark_app ``-data_shape`` (dynamic batch, batch-1 data) vs edgeproto's OpenVINO runner
      (which compiles the dynamic-batch IR) — the number ``edgeproto bench`` reports.
    """
    import openvino as ov

    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    core = ov.Core()
    model = core.read_model(str(xml))
    model.reshape([1, 3, size, size])
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads,
                                                 "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    request.set_input_tensor(ov.Tensor(x))  # benchmark_app fills its input tensors once, then calls infer()
    checks = []
    for kind, static, fn in (("harness (static batch 1, infer() on a filled tensor)", True, lambda: request.infer()),
                             ("edgeproto runner (dynamic batch)", False, runner_fn)):
        before = measure(fn, **timing)
        ba = benchmark_app(xml, size, threads, niter, static=static)
        check = {"kind": kind, "threads": threads, "benchmark_app": ba}
        if "median_ms" in ba:
            after = measure(fn, **timing)  # ours before and after benchmark_app: the same machine state on average
            check["ours_p50_ms_before_after"] = [before["p50_ms"], after["p50_ms"]]
            check["ours_p50_ms"] = (before["p50_ms"] + after["p50_ms"]) / 2
            check["ratio_ours_over_benchmark_app"] = check["ours_p50_ms"] / ba["median_ms"]
            check["within_10_percent"] = abs(check["ratio_ours_over_benchmark_app"] - 1) <= 0.10
            after.pop("window", None)
            check["ours_stats_after"] = after
        checks.append(check)
    del request, compiled
    return checks


def ort_perf_test_note() -> str:
    tool = find_tool("onnxruntime_perf_test")
    if tool is None:
        return ("onnxruntime_perf_test: not run — not found; the onnxruntime pip wheel does not ship it (it is "
                "built from source with --build_shared_lib / the perf_test target)")
    return f"onnxruntime_perf_test found at {tool} (not wired: compare by hand with -I -r N -x T)"


# --------------------------------------------------------------------------- bundles


def torch_p50(root: Path, args) -> dict:
    report = bench_bundle(root, target="torch", batches=(1,), threads=args.threads, min_queries=args.min_queries,
                          min_seconds=args.min_seconds)
    return {"p50_ms": report["batches"][0]["latency"]["p50_ms"], "p90_ms": report["batches"][0]["latency"]["p90_ms"],
            "threads": report["runtime"]["threads"], "version": report["runtime"]["version"],
            "memory": report["memory"]}


def bench_one_bundle(path: str, args) -> dict:
    root = Path(path)
    bundle = open_bundle(root)
    size = int(bundle.manifest["preprocess"]["image_size"])
    print(f"bundle {root} ({bundle.manifest['model']['family']}, {size}×{size}, {len(bundle.prototypes)} "
          f"prototypes)", file=sys.stderr, flush=True)
    rows = []
    todo = [v for v in variants(args) if ensure_compiled(root, *v, args)]
    torch_before = torch_p50(root, args)
    for target, precision, guard in todo:
        rep = bench_bundle(root, target=target, precision=precision, guard=guard, batches=(1,), threads=args.threads,
                           min_queries=args.min_queries, min_seconds=args.min_seconds)
        lat = rep["batches"][0]["latency"]
        rows.append({"target": target, "precision": precision, "guard": guard, "runtime": rep["runtime"],
                     "load_s": rep["load_s"], "memory": rep["memory"], "latency": lat})
        print(f"  {target} {precision}: p50 {lat['p50_ms']:.3f} ms", file=sys.stderr, flush=True)
    torch_after = torch_p50(root, args)
    torch_ms = (torch_before["p50_ms"] + torch_after["p50_ms"]) / 2
    for row in rows:
        row["speedup_vs_torch_p50"] = torch_ms / row["latency"]["p50_ms"]
        row["speedup_vs_torch_p90"] = ((torch_before["p90_ms"] + torch_after["p90_ms"]) / 2) / row["latency"]["p90_ms"]

    checks = []
    opened = open_bundle(root)
    entry = opened.manifest.get("compiled", {}).get(artifact_key("openvino", "fp32", "prototypes"))
    ours = next((r for r in rows if r["target"] == "openvino" and r["precision"] == "fp32"), None)
    if entry is None or ours is None:
        checks.append({"kind": "openvino-fp32", "benchmark_app": {"error": "no OpenVINO fp32 IR in this bundle"}})
    else:
        from edgeproto.measure.single_stream import bench_inputs
        from edgeproto.runtimes import load_runner

        runner = load_runner(opened, "openvino", "fp32", threads=args.threads)
        threads = runner.compiled.get_property("INFERENCE_NUM_THREADS") or os.cpu_count()
        x = bench_inputs(opened, 1)
        checks = openvino_cross_check(root / entry["model"], size, int(threads),
                                      max(args.min_queries, ours["latency"]["queries"]), lambda: runner.run(x),
                                      dict(min_queries=args.min_queries, min_seconds=args.min_seconds))
        del runner
    return {"bundle": str(root), "family": bundle.manifest["model"]["family"], "input": size,
            "prototypes": len(bundle.prototypes), "torch_before": torch_before, "torch_after": torch_after,
            "torch_p50_ms": torch_ms, "rows": rows, "benchmark_app": checks}


# --------------------------------------------------------------------------- CUB scale


def count_flops(model, size: int) -> dict:
    """FLOPs of one image (multiply and add counted separately), from module shapes in a forward pass."""
    import torch
    from torch import nn

    from edgeproto.models import PrototypeLayer

    counts = {"conv": 0, "linear": 0, "prototypes": 0}

    def conv_hook(mod, inp, out):
        k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
        counts["conv"] += 2 * out.numel() * k + (out.numel() if mod.bias is not None else 0)

    def linear_hook(mod, inp, out):
        counts["linear"] += 2 * out.numel() * mod.in_features

    def proto_hook(mod, inp, out):
        b, m, h, w = out.shape
        d = inp[0].shape[1]
        counts["prototypes"] += 3 * m * d * h * w  # (z - p), square, sum over d

    handles = []
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            handles.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.Linear):
            handles.append(mod.register_forward_hook(linear_hook))
        elif isinstance(mod, PrototypeLayer):
            handles.append(mod.register_forward_hook(proto_hook))
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    counts["total"] = sum(counts.values())
    return counts


def matmul_peak(threads: int, n: int = 2048, repeat: int = 5) -> dict:
    """Best fp32 GFLOP/s of an n×n matmul: torch at ``threads`` threads, numpy at its default."""
    import torch

    flops = 2.0 * n ** 3
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    torch.matmul(ta, tb)
    best = min(_timed(lambda: torch.matmul(ta, tb)) for _ in range(repeat))
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(old)
    np.matmul(a, b)
    best_np = min(_timed(lambda: np.matmul(a, b)) for _ in range(repeat))
    return {"n": n, "torch_gflops": flops / best / 1e9, "torch_threads": torch_threads,
            "numpy_gflops": flops / best_np / 1e9, "numpy_threads": "numpy BLAS default"}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_cub(args) -> dict:
    import torch

    from edgeproto.export.onnx_graph import export_onnx
    from edgeproto.models import create_model
    from edgeproto.runtimes.onnxruntime.runner import OnnxRuntimeRunner

    torch.manual_seed(0)
    model = create_model(CUB_CONFIG).eval()
    flops = count_flops(model, CUB_SIZE)
    work = Path(tempfile.mkdtemp(prefix="edgeproto-cub-"))
    try:
        onnx_path = work / "cub.onnx"
        t0 = time.perf_counter()
        print("CUB-scale: exporting ...", file=sys.stderr, flush=True)
        export_onnx(model, torch.randn(1, 3, CUB_SIZE, CUB_SIZE), onnx_path)
        export_s = time.perf_counter() - t0
        x = np.random.default_rng(0).standard_normal((1, 3, CUB_SIZE, CUB_SIZE)).astype(np.float32)
        timing = dict(min_queries=args.cub_queries, min_seconds=args.min_seconds, warmup=5)
        rows = []

        def add(name, runner_or_fn, info):
            fn = runner_or_fn
            stats = measure(fn, **timing)
            stats.pop("window", None)
            rows.append({"runtime": name, **info, "latency": stats,
                         "gflops": flops["total"] / (stats["p50_ms"] / 1e3) / 1e9})
            print(f"  {name}: p50 {stats['p50_ms']:.2f} ms", file=sys.stderr, flush=True)

        old = torch.get_num_threads()
        if args.threads:
            torch.set_num_threads(args.threads)
        tx = torch.from_numpy(x)

        def torch_fn():
            with torch.no_grad():
                return model(tx)

        add("torch eager (before)", torch_fn, {"threads": torch.get_num_threads(), "precision": "fp32"})
        ort = OnnxRuntimeRunner(onnx_path, threads=args.threads)
        add("onnxruntime", lambda: ort.run(x), {"threads": args.threads or "default", "precision": "fp32",
                                                 "version": ort.version})
        del ort
        checks = []
        import importlib.util

        if importlib.util.find_spec("openvino") is not None:
            import openvino as ov

            from edgeproto.runtimes.openvino.runner import OpenVinoRunner, read_model

            xml = work / "cub.xml"
            ov.save_model(read_model(onnx_path), str(xml), compress_to_fp16=False)
            ovr = OpenVinoRunner(xml, threads=args.threads)
            threads = int(ovr.compiled.get_property("INFERENCE_NUM_THREADS"))
            add("openvino", lambda: ovr.run(x), {"threads": threads, "precision": ovr.precision,
                                                  "version": ovr.version})
            checks = openvino_cross_check(xml, CUB_SIZE, threads, args.cub_queries, lambda: ovr.run(x), timing)
            harness = checks[0].get("ours_stats_after")
            if harness:  # the same IR compiled for a static batch of 1 (what benchmark_app -shape runs)
                rows.append({"runtime": "openvino static b1", "threads": threads, "precision": "fp32",
                             "latency": harness, "gflops": flops["total"] / (harness["p50_ms"] / 1e3) / 1e9})
            del ovr
        add("torch eager (after)", torch_fn, {"threads": torch.get_num_threads(), "precision": "fp32"})
        torch_ms = (rows[0]["latency"]["p50_ms"] + rows[-1]["latency"]["p50_ms"]) / 2  # before/after mean
        for row in rows:
            row["speedup_vs_torch_p50"] = torch_ms / row["latency"]["p50_ms"]
        peak = matmul_peak(args.threads)
        torch.set_num_threads(old)
        for row in rows:
            row["fraction_of_peak"] = row["gflops"] / peak["torch_gflops"]
        return {"config": CUB_CONFIG, "input": CUB_SIZE, "flops": flops, "export_s": export_s, "rows": rows,
                "torch_p50_ms": torch_ms,
                "peak": peak, "benchmark_app": checks}
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- printing


def _fmt_ba(check: dict) -> str:
    ba = check["benchmark_app"]
    if "median_ms" not in ba:
        return f"  benchmark_app [{check['kind']}]: {ba.get('error')}"
    verdict = "within 10 %" if check["within_10_percent"] else "NOT within 10 %"
    return (f"  benchmark_app [{check['kind']}, {check['threads']} thread(s), {ba.get('iterations')} iterations]: "
            f"median {ba['median_ms']:.3f} ms vs ours p50 {check['ours_p50_ms']:.3f} ms (mean of "
            f"{check['ours_p50_ms_before_after'][0]:.3f} before, {check['ours_p50_ms_before_after'][1]:.3f} after) → ours/theirs "
            f"{check['ratio_ours_over_benchmark_app']:.3f} ({verdict})\n      $ {ba['command']}")


def print_report(result: dict) -> None:
    host = result["host"]
    print(f"host: {host['cpu']}, {host['usable_cpus']} usable CPUs, {host['system']} {host['machine']}, python "
          f"{host['python']}; threads per runtime: {result['threads'] or 'runtime default'}; single-stream, "
          f"batch 1, ≥{result['min_queries']} queries and ≥{result['min_seconds']} s per row; percentiles nearest-rank")
    for b in result["bundles"]:
        tb, ta = b["torch_before"], b["torch_after"]
        print(f"\n== {b['bundle']} ({b['family']}, {b['input']}×{b['input']}, {b['prototypes']} prototypes)")
        print(f"torch {tb['version']} eager fp32, {tb['threads']} threads: p50 {tb['p50_ms']:.3f} ms before, "
              f"{ta['p50_ms']:.3f} ms after the targets (drift {100 * (ta['p50_ms'] / tb['p50_ms'] - 1):+.1f} %); "
              f"ratios use the mean {b['torch_p50_ms']:.3f} ms")
        head = (f"{'target':<12} {'precision':<9} {'guard':<10} {'device':<20} {'thr':>4} {'p50 ms':>8} "
                f"{'p90 ms':>8} {'p99 ms':>8} {'mean':>8} {'min':>8} {'max':>8} {'items/s':>9} {'queries':>7} "
                f"{'load s':>7} {'+RSS MiB':>8} {'torch/x p50':>11} {'p90':>6}")
        print(head)
        for r in b["rows"]:
            s, rt = r["latency"], r["runtime"]
            print(f"{r['target']:<12} {rt['precision']:<9} {r['guard']:<10} {str(rt['device'])[:20]:<20} "
                  f"{str(rt['threads'] or '-'):>4} {s['p50_ms']:8.3f} {s['p90_ms']:8.3f} {s['p99_ms']:8.3f} "
                  f"{s['mean_ms']:8.3f} {s['min_ms']:8.3f} {s['max_ms']:8.3f} {s['throughput']:9.1f} "
                  f"{s['queries']:7d} {r['load_s']:7.3f} {r['memory']['peak_increase_mb']:8.1f} "
                  f"{r['speedup_vs_torch_p50']:10.2f}× {r['speedup_vs_torch_p90']:5.2f}×")
        for check in b["benchmark_app"]:
            print(_fmt_ba(check))
    print("\n" + result["ort_perf_test"])
    cub = result.get("cub")
    if cub:
        f, peak = cub["flops"], cub["peak"]
        print(f"\n== CUB-scale: small_resnet 64-128-256-512 ×2 blocks, stem stride 4, {cub['input']}×{cub['input']}, "
              f"2000 prototypes × 128 dims, 200 classes (untrained)")
        print(f"FLOPs per image: {f['total'] / 1e9:.3f} GFLOP (conv {f['conv'] / 1e9:.3f}, prototypes "
              f"{f['prototypes'] / 1e9:.4f}, linear {f['linear'] / 1e9:.5f}); export {cub['export_s']:.1f} s")
        print(f"fp32 matmul peak (2048², best of 5): torch {peak['torch_gflops']:.1f} GFLOP/s at "
              f"{peak['torch_threads']} thread(s); numpy {peak['numpy_gflops']:.1f} GFLOP/s ({peak['numpy_threads']})")
        print(f"torch/x uses the mean torch p50 of before and after ({cub['torch_p50_ms']:.2f} ms)")
        print(f"{'runtime':<20} {'thr':>4} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'mean':>8} {'min':>8} {'max':>8} "
              f"{'items/s':>8} {'queries':>7} {'GFLOP/s':>8} {'of peak':>8} {'torch/x p50':>11}")
        for r in cub["rows"]:
            s = r["latency"]
            print(f"{r['runtime']:<20} {str(r['threads']):>4} {s['p50_ms']:8.2f} {s['p90_ms']:8.2f} {s['p99_ms']:8.2f} "
                  f"{s['mean_ms']:8.2f} {s['min_ms']:8.2f} {s['max_ms']:8.2f} {s['throughput']:8.2f} {s['queries']:7d} "
                  f"{r['gflops']:8.1f} {100 * r['fraction_of_peak']:7.1f}% {r['speedup_vs_torch_p50']:10.2f}×")
        for check in cub["benchmark_app"]:
            print(_fmt_ba(check))
        by = {r["runtime"]: r["latency"]["p50_ms"] for r in cub["rows"]}
        if "openvino" in by and "openvino static b1" in by:
            print(f"  note: OpenVINO compiled for the dynamic batch dimension (as edgeproto's runner does) takes "
                  f"{by['openvino']:.1f} ms; the same IR reshaped to a static batch of 1 takes "
                  f"{by['openvino static b1']:.1f} ms ({by['openvino'] / by['openvino static b1']:.2f}×)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundles", nargs="*", default=["runs/protopnet-bundle"], help="bundle directories")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for every runtime and torch (default 1: steadier on a shared machine; "
                             "0 = each runtime's default)")
    parser.add_argument("--min-queries", type=int, default=300)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--cub-queries", type=int, default=60, help="min queries per CUB-scale row")
    parser.add_argument("--calib", type=int, default=64, help="int8 calibration images when compiling")
    parser.add_argument("--no-compile", action="store_true", help="skip variants whose artifact is missing")
    parser.add_argument("--no-cub", action="store_true", help="skip the CUB-scale model")
    parser.add_argument("--all", action="store_true", help="also ONNX Runtime fp16 (and bf16 without CPU support)")
    parser.add_argument("--json", metavar="FILE", help="also write the full results as JSON")
    args = parser.parse_args(argv)
    try:
        result = {"host": host_info(), "threads": args.threads, "min_queries": args.min_queries,
                  "min_seconds": args.min_seconds, "bundles": [bench_one_bundle(p, args) for p in args.bundles],
                  "ort_perf_test": ort_perf_test_note()}
        if not args.no_cub:
            result["cub"] = bench_cub(args)
    except EdgeprotoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
