"""Single-stream timing of one runtime on a bundle (the core of ``edgeproto bench``): warm-up, then
at least ``min_queries`` queries and ``min_seconds`` per batch size, on the bundle's golden images,
with the PyTorch reference timed the same way in the same run when asked. No torch at import.

:mod:`edgeproto.measure.bench` checks the request and picks this or a board
(:mod:`edgeproto.measure.jetson`, which calls this with tegrastats running).
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
from edgeproto.runtimes import RUNTIMES, load_runner

Progress = Callable[[str, int, float], None]  # (label, queries done, measured seconds)

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
    """``runner.info()`` (the PyTorch reference's includes its import and load seconds) and the
    wall time :func:`load_runner` took."""
    return {**runner.info(), "load_total_s": load_total_s}


def bench_runtime(
    bundle,
    *,
    target: str,
    precision: str = "fp32",
    guard: str = "prototypes",
    sizes: tuple[int, ...] = (1,),
    threads: int = 0,
    min_queries: int = 100,
    min_seconds: float = 2.0,
    compare_torch: bool = False,
    device: str | None = None,
    warmup: int = 10,
    progress: Progress | None = None,
    keep_windows: bool = False,
) -> dict:
    """Time runtime ``target`` (a registry name) on ``bundle`` for the batch ``sizes`` (already
    checked); the report :func:`edgeproto.measure.bench.bench_bundle` describes. ``keep_windows``
    keeps each measurement's time window (for matching power samples)."""
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
