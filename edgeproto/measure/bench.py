"""``edgeproto bench``: single-stream latency of a bundle on a runtime, against PyTorch in the same run.

:func:`bench_bundle` loads the bundle's artifact for (target, precision, guard) with
:func:`edgeproto.runtimes.load_runner`, times it per batch size with
:func:`edgeproto.measure.latency.measure` (warm-up, then ≥ ``min_queries`` queries and ≥ ``min_seconds``)
on the bundle's golden images (tiled to the batch size), and records the load time, the peak RSS of
the phase and what the runtime really used (version, device, precision, threads).

With ``compare_torch=True`` the PyTorch reference (the checkpoint in
``manifest["source"]["checkpoint"]``, ``eval()``, ``torch.no_grad()``, ``torch.set_num_threads`` =
``threads`` when > 0) is timed the same way in the same process, after the target, and each batch
gets ``speedup_vs_torch`` = torch p50 / target p50 (and the same for p90): > 1 means the target is
faster. Absolute numbers from different runs or machines are not comparable; the ratio is.

Targets: the runtimes of the registry (:data:`edgeproto.runtimes.RUNTIMES`, ``"torch"`` being the
reference alone) and the boards of :data:`BOARDS` (``"jetson"``, see :mod:`edgeproto.measure.jetson`:
TensorRT or ONNX Runtime plus tegrastats power, on a Jetson). ONNX Runtime's TensorRT execution
provider is ``--target onnxruntime --device TENSORRT``.

This module imports torch only for the reference, so the device side can use it without torch.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from edgeproto.bundle import Bundle, open_bundle
from edgeproto.environment import host_info, usable_cpus
from edgeproto.errors import EdgeprotoError
from edgeproto.measure.latency import MemoryWindow, measure
from edgeproto.runtimes import RUNTIMES, check_guard, check_precision, load_runner

BOARDS = ("jetson",)  # bench targets that are a board (its runtime chosen there), not a runtime
Progress = Callable[[str, int, float], None]  # (label, queries done, measured seconds)


def bench_targets() -> list[str]:
    """Every ``--target`` bench takes: the registry's runtimes, then the boards."""
    return [*RUNTIMES, *BOARDS]


# --------------------------------------------------------------------------- argument checks


MAX_BATCH = 4096  # images in one query (a 224 px float32 batch of 4096 is 2.4 GB)
MAX_TOTAL_IMAGES = 16384  # over all batch sizes of one run


def check_batches(batches: Iterable[int]) -> tuple[int, ...]:
    """The batch sizes as a tuple of whole numbers ≥ 1, or a clear error."""
    if isinstance(batches, (int, np.integer)) and not isinstance(batches, bool):
        batches = (int(batches),)
    try:
        values = tuple(batches)
    except TypeError:
        raise EdgeprotoError(f"batches must be a list of whole numbers ≥ 1 (got {batches!r})") from None
    if not values:
        raise EdgeprotoError("batches is empty: give at least one batch size, e.g. 1")
    for b in values:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
            raise EdgeprotoError(f"batch size must be a whole number ≥ 1 (got {b!r})")
        if b > MAX_BATCH:
            raise EdgeprotoError(f"batch size {b} is more than the {MAX_BATCH} images one query may hold")
    if len(values) > 64 or sum(int(b) for b in values) > MAX_TOTAL_IMAGES:
        raise EdgeprotoError(f"batches {','.join(str(b) for b in values)}: at most 64 sizes and "
                             f"{MAX_TOTAL_IMAGES} images in all")
    return tuple(int(b) for b in values)


def parse_batches(text: str) -> tuple[int, ...]:
    """``"1,8,32"`` → ``(1, 8, 32)``; anything else is a clear error."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    values = []
    for p in parts:
        try:
            values.append(int(p))
        except ValueError:
            raise EdgeprotoError(f"batch sizes are comma-separated whole numbers like 1,8,32 (got {text!r})") from None
    return check_batches(values)


def _check_common(target: str, precision: str, guard: str, threads, min_queries, min_seconds) -> None:
    if target not in bench_targets():
        raise EdgeprotoError(f"unknown target {target!r}; known: {', '.join(bench_targets())}")
    check_precision(precision)
    check_guard(guard)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise EdgeprotoError(f"threads must be a whole number ≥ 0 (0: the runtime's default) (got {threads!r})")
    if isinstance(min_queries, bool) or not isinstance(min_queries, int) or not 1 <= min_queries <= 1_000_000:
        raise EdgeprotoError(f"min_queries must be a whole number from 1 to 1000000 (got {min_queries!r})")
    if (isinstance(min_seconds, bool) or not isinstance(min_seconds, (int, float))
            or not 0 <= min_seconds <= 3600):
        raise EdgeprotoError(f"min_seconds must be a number from 0 to 3600 (got {min_seconds!r})")


def check_local_threads(threads: int) -> None:
    """Threads for a run on this machine: at most the CPUs this process may use."""
    cpus = usable_cpus()
    if threads > cpus:
        raise EdgeprotoError(f"--threads {threads} is more than the {cpus} usable CPU(s) of this machine")


# --------------------------------------------------------------------------- inputs and runners


def bench_inputs(bundle: Bundle, batch: int) -> np.ndarray:
    """A (batch,3,S,S) float32 batch of the bundle's golden images, repeated as needed."""
    images = bundle.golden()["image"]
    if images.ndim != 4 or len(images) == 0:
        raise EdgeprotoError(f"bundle {bundle.root}: golden images missing or malformed (shape {images.shape})")
    return np.ascontiguousarray(images[np.arange(batch) % len(images)], dtype=np.float32)


# --------------------------------------------------------------------------- timing


def _time_batches(label: str, fn_for: Callable[[int], Callable[[], object]], batches, *, warmup, min_queries,
                  min_seconds, progress: Progress | None) -> list[dict]:
    results = []
    for b in batches:
        fn = fn_for(b)
        tick = (lambda q, s, _l=f"{label} ×{b}": progress(_l, q, s)) if progress else None
        results.append(measure(fn, warmup=warmup, min_queries=min_queries, min_seconds=min_seconds, batch=b,
                               progress=tick))
    return results


def _runtime_record(runner, load_total_s: float) -> dict:
    """``runner.info()`` plus the load times (the PyTorch reference also reports import and load)."""
    record = runner.info()
    if hasattr(runner, "import_s"):
        record.update(import_s=runner.import_s, load_s=runner.load_s, load_total_s=load_total_s)
    return record


def bench_bundle(
    bundle,
    *,
    target: str,
    precision: str = "fp32",
    guard: str = "prototypes",
    batches=(1,),
    threads: int = 0,
    min_queries: int = 100,
    min_seconds: float = 2.0,
    compare_torch: bool = False,
    device: str | None = None,
    warmup: int = 10,
    progress: Progress | None = None,
    keep_windows: bool = False,
) -> dict:
    """Benchmark ``bundle`` (a path or an opened :class:`Bundle`) on ``target``; see the module docstring.

    Returns a JSON-able report: ``target``, ``runtime`` (name, version, device, precision, threads
    really used), ``load_s``, ``memory`` (peak RSS of the target phase), ``batches`` (per batch size:
    ``latency`` stats in ms and items/s, and with ``compare_torch`` also ``torch`` stats,
    ``speedup_vs_torch`` and ``max_abs_logits_vs_torch``), ``torch`` (the reference's runtime, load
    time and memory) and ``host``. Raises EdgeprotoError for a bad batch size, an unknown target,
    precision or guard, a missing artifact, a runtime that is not installed.
    """
    _check_common(target, precision, guard, threads, min_queries, min_seconds)
    sizes = check_batches(batches)
    check_local_threads(threads)
    if target == "jetson":
        from edgeproto.measure.jetson import bench_local

        return bench_local(bundle, precision=precision, guard=guard, batches=sizes, threads=threads,
                           min_queries=min_queries, min_seconds=min_seconds, compare_torch=compare_torch,
                           device=device, warmup=warmup, progress=progress)
    if target == "torch" and precision != "fp32":
        raise EdgeprotoError(f"target torch is the fp32 PyTorch reference; precision {precision!r} is not available")
    opened = bundle if isinstance(bundle, Bundle) else open_bundle(bundle)
    if target == "torch" or compare_torch:  # fail before timing anything
        if importlib.util.find_spec("torch") is None:
            raise EdgeprotoError("the PyTorch reference needs torch, which is not installed here: "
                                 "pip install 'edgeproto[train]' (or bench without --compare torch)")
        checkpoint = opened.manifest.get("source", {}).get("checkpoint")
        if not checkpoint or not Path(checkpoint).is_dir():
            raise EdgeprotoError(f"the PyTorch reference of {opened.root} is its source checkpoint {checkpoint!r}, "
                                 "which is not here (bench without --compare torch, or on the training machine)")
    if target != "torch":
        RUNTIMES[target].require()
    inputs = {b: bench_inputs(opened, b) for b in sizes}
    common = dict(warmup=warmup, min_queries=min_queries, min_seconds=min_seconds, progress=progress)

    report: dict = {
        "bundle": str(opened.root),
        "model": {"family": opened.manifest.get("model", {}).get("family"),
                  "input": opened.manifest.get("inputs", [{}])[0].get("shape"),
                  "classes": len(opened.classes), "prototypes": len(opened.prototypes)},
        "target": target,
        "requested": {"precision": precision, "guard": guard, "threads": threads, "device": device},
        "methodology": {"scenario": "single-stream", "warmup": warmup, "min_queries": min_queries,
                        "min_seconds": float(min_seconds), "percentiles": "nearest-rank",
                        "inputs": "golden images of the bundle, repeated to the batch size"},
        "notes": [],
    }

    runner = None
    reference = None
    try:
        with MemoryWindow() as mem:
            t0 = time.perf_counter()
            runner = load_runner(opened, target, precision, guard, device, threads)
            load_s = time.perf_counter() - t0
            stats = _time_batches(target, lambda b: (lambda x=inputs[b]: runner.run(x)), sizes, **common)
        report.update(runtime=_runtime_record(runner, load_s), load_s=load_s, memory=mem.result())
        report["batches"] = [{"batch": b, "latency": s} for b, s in zip(sizes, stats)]

        if compare_torch and target != "torch":
            with MemoryWindow() as tmem:
                t0 = time.perf_counter()
                reference = load_runner(opened, "torch", threads=threads)
                t_load = time.perf_counter() - t0
                tstats = _time_batches("torch", lambda b: (lambda x=inputs[b]: reference.run(x)), sizes, **common)
            report["torch"] = {**_runtime_record(reference, t_load), "memory": tmem.result()}
            for row, ts in zip(report["batches"], tstats):
                lat = row["latency"]
                row["torch"] = ts
                row["speedup_vs_torch"] = {"p50": ts["p50_ms"] / lat["p50_ms"], "p90": ts["p90_ms"] / lat["p90_ms"]}
                x = inputs[row["batch"]]
                row["max_abs_logits_vs_torch"] = float(
                    np.abs(runner.run(x)["logits"].astype(np.float64) - reference.run(x)["logits"]).max()
                )
    finally:
        for r in (runner, reference):
            if r is not None:
                r.close()

    if not keep_windows:
        for row in report["batches"]:
            for key in ("latency", "torch"):
                if key in row:
                    row[key].pop("window", None)
    report["host"] = host_info()
    report["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    report["command"] = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else None
    return report
