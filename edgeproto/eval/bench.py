"""``edgeproto bench``: single-stream latency of a bundle on a runtime, against PyTorch in the same run.

:func:`bench_bundle` loads the bundle's artifact for (target, precision, guard) with
:func:`edgeproto.runtimes.load_runner`, times it per batch size with
:func:`edgeproto.eval.latency.measure` (warm-up, then ≥ ``min_queries`` queries and ≥ ``min_seconds``)
on the bundle's golden images (tiled to the batch size), and records the load time, the peak RSS of
the phase and what the runtime really used (version, device, precision, threads).

With ``compare_torch=True`` the PyTorch reference (the checkpoint in
``manifest["source"]["checkpoint"]``, ``eval()``, ``torch.no_grad()``, ``torch.set_num_threads`` =
``threads`` when > 0) is timed the same way in the same process, after the target, and each batch
gets ``speedup_vs_torch`` = torch p50 / target p50 (and the same for p90): > 1 means the target is
faster. Absolute numbers from different runs or machines are not comparable; the ratio is.

Targets: the runtimes in :data:`edgeproto.runtimes.TARGETS`, ``"torch"`` (the reference alone),
``"tensorrt"`` (a TensorRT runtime when one is installed, else ONNX Runtime's
TensorrtExecutionProvider, else a clear error) and ``"jetson"`` (see
:mod:`edgeproto.runtimes.jetson`: TensorRT or ONNX Runtime plus tegrastats power, on a Jetson).

This module imports torch only for the reference, so the device side can use it without torch.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from edgeproto import __version__
from edgeproto.bundle import Bundle, open_bundle
from edgeproto.errors import EdgeprotoError
from edgeproto.eval.latency import MemoryWindow, measure
from edgeproto.runtimes import GUARDS, PRECISIONS, TARGETS, load_runner

EXTRA_TARGETS = ("torch", "tensorrt", "jetson")
Progress = Callable[[str, int, float], None]  # (label, queries done, measured seconds)


def known_targets() -> list[str]:
    return [*TARGETS, *EXTRA_TARGETS]


# --------------------------------------------------------------------------- argument checks


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
    if target not in known_targets():
        raise EdgeprotoError(f"unknown target {target!r}; known: {', '.join(known_targets())}")
    if precision not in PRECISIONS:
        raise EdgeprotoError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    if guard not in GUARDS:
        raise EdgeprotoError(f"unknown guard {guard!r}; known: {', '.join(GUARDS)}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise EdgeprotoError(f"threads must be a whole number ≥ 0 (0: the runtime's default) (got {threads!r})")
    if isinstance(min_queries, bool) or not isinstance(min_queries, int) or min_queries < 1:
        raise EdgeprotoError(f"min_queries must be a whole number ≥ 1 (got {min_queries!r})")
    if isinstance(min_seconds, bool) or not isinstance(min_seconds, (int, float)) or not min_seconds >= 0:
        raise EdgeprotoError(f"min_seconds must be a number ≥ 0 (got {min_seconds!r})")


# --------------------------------------------------------------------------- inputs and runners


def bench_inputs(bundle: Bundle, batch: int) -> np.ndarray:
    """A (batch,3,S,S) float32 batch of the bundle's golden images, repeated as needed."""
    images = bundle.golden()["image"]
    if images.ndim != 4 or len(images) == 0:
        raise EdgeprotoError(f"bundle {bundle.root}: golden images missing or malformed (shape {images.shape})")
    return np.ascontiguousarray(images[np.arange(batch) % len(images)], dtype=np.float32)


def tensorrt_runner(bundle: Bundle, precision: str, guard: str, device: str | None, threads: int):
    """``(runner, how)`` for target tensorrt: an edgeproto TensorRT runtime if one is registered and
    installed, else ONNX Runtime's TensorrtExecutionProvider, else a clear EdgeprotoError."""
    if "tensorrt" in TARGETS:
        module, _, package, _ = TARGETS["tensorrt"]
        if importlib.util.find_spec(package) is not None:
            return load_runner(bundle, "tensorrt", precision, guard, device, threads), f"{module}"
    providers: list[str] = []
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        providers = list(onnxruntime.get_available_providers())
    if "TensorrtExecutionProvider" in providers:
        runner = load_runner(bundle, "onnxruntime", precision, guard, "TENSORRT", threads)
        return runner, "ONNX Runtime TensorrtExecutionProvider"
    raise EdgeprotoError(
        "target 'tensorrt' is not available here: TensorRT is not installed (no TensorRT runtime in edgeproto "
        f"and ONNX Runtime has no TensorrtExecutionProvider; its providers: {', '.join(providers) or 'none'}). "
        "Use --target onnxruntime or openvino, or --target jetson on a Jetson"
    )


def runner_threads(runner) -> tuple[int | None, str]:
    """(threads the runtime uses, how that was found) — None where the runtime picks its own."""
    session = getattr(runner, "session", None)
    if session is not None:  # ONNX Runtime
        n = session.get_session_options().intra_op_num_threads
        return (n, "intra_op_num_threads") if n else (None, "ONNX Runtime default (one per physical core)")
    compiled = getattr(runner, "compiled", None)
    if compiled is not None:  # OpenVINO
        try:
            return int(compiled.get_property("INFERENCE_NUM_THREADS")), "INFERENCE_NUM_THREADS"
        except Exception:  # devices without the property
            return None, "not reported by the device"
    return None, "not reported"


def runtime_info(runner) -> dict:
    threads, how = runner_threads(runner)
    return {"name": runner.name, "version": str(runner.version), "device": runner.device,
            "precision": runner.precision, "threads": threads, "threads_source": how}


def host_info() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or None
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {"machine": platform.machine(), "system": platform.system(), "release": platform.release(),
            "cpu": cpu, "logical_cpus": os.cpu_count(), "usable_cpus": usable,
            "python": platform.python_version(), "numpy": np.__version__, "edgeproto": __version__}


# --------------------------------------------------------------------------- torch reference


class TorchReference:
    """The bundle's PyTorch checkpoint, ready to time: ``run(x)`` is one eager no-grad forward."""

    name = "torch"
    precision = "fp32"
    device = "cpu"

    def __init__(self, bundle: Bundle, threads: int = 0) -> None:
        checkpoint = bundle.manifest.get("source", {}).get("checkpoint")
        if not checkpoint:
            raise EdgeprotoError(f"bundle {bundle.root} does not name its source checkpoint: no PyTorch reference")
        if importlib.util.find_spec("torch") is None:
            raise EdgeprotoError("the PyTorch reference needs torch, which is not installed: pip install 'edgeproto[train]'")
        t0 = time.perf_counter()
        import torch

        from edgeproto.train.checkpoint import load_checkpoint

        self.import_s = time.perf_counter() - t0
        self.torch = torch
        self.previous_threads = torch.get_num_threads()
        if threads:
            torch.set_num_threads(int(threads))
        t0 = time.perf_counter()
        try:
            self.model, _ = load_checkpoint(checkpoint)
        except EdgeprotoError as exc:
            self.restore()
            raise EdgeprotoError(f"PyTorch reference for {bundle.root}: {exc}") from None
        self.model.eval()
        self.load_s = time.perf_counter() - t0
        self.checkpoint = str(checkpoint)
        self.version = torch.__version__
        self.threads = torch.get_num_threads()

    def prepare(self, x: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(x))

    def run(self, x) -> dict:
        with self.torch.no_grad():
            return self.model(x)

    def restore(self) -> None:
        self.torch.set_num_threads(self.previous_threads)

    def info(self) -> dict:
        return {"name": "torch", "version": self.version, "device": "cpu", "precision": "fp32",
                "threads": self.threads, "threads_source": "torch.get_num_threads", "mode": "eager, eval, no_grad",
                "checkpoint": self.checkpoint}


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


def _logits(out) -> np.ndarray:
    value = out["logits"]
    return value.detach().numpy() if hasattr(value, "detach") else np.asarray(value)


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
    if target == "jetson":
        from edgeproto.runtimes.jetson import bench_local

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
        if target != "torch":
            with MemoryWindow() as mem:
                t0 = time.perf_counter()
                if target == "tensorrt":
                    runner, how = tensorrt_runner(opened, precision, guard, device, threads)
                    report["notes"].append(f"tensorrt via {how}")
                else:
                    runner = load_runner(opened, target, precision, guard, device, threads)
                load_s = time.perf_counter() - t0
                stats = _time_batches(target, lambda b: (lambda x=inputs[b]: runner.run(x)), sizes, **common)
            report.update(runtime=runtime_info(runner), load_s=load_s, memory=mem.result())
            report["batches"] = [{"batch": b, "latency": s} for b, s in zip(sizes, stats)]

        if target == "torch" or compare_torch:
            with MemoryWindow() as tmem:
                t0 = time.perf_counter()
                reference = TorchReference(opened, threads)
                t_load = time.perf_counter() - t0
                tensors = {b: reference.prepare(x) for b, x in inputs.items()}
                tstats = _time_batches("torch", lambda b: (lambda x=tensors[b]: reference.run(x)), sizes, **common)
            tinfo = {**reference.info(), "import_s": reference.import_s, "load_s": reference.load_s,
                     "load_total_s": t_load, "memory": tmem.result()}
            if target == "torch":
                report.update(runtime=tinfo, load_s=reference.load_s, memory=tmem.result())
                report["batches"] = [{"batch": b, "latency": s} for b, s in zip(sizes, tstats)]
            else:
                report["torch"] = tinfo
                for row, ts in zip(report["batches"], tstats):
                    lat = row["latency"]
                    row["torch"] = ts
                    row["speedup_vs_torch"] = {"p50": ts["p50_ms"] / lat["p50_ms"], "p90": ts["p90_ms"] / lat["p90_ms"]}
                    x = inputs[row["batch"]]
                    row["max_abs_logits_vs_torch"] = float(
                        np.abs(_logits(runner.run(x)).astype(np.float64) - _logits(reference.run(tensors[row["batch"]]))).max()
                    )
    finally:
        if reference is not None:
            reference.restore()

    if not keep_windows:
        for row in report["batches"]:
            for key in ("latency", "torch"):
                if key in row:
                    row[key].pop("window", None)
    report["host"] = host_info()
    report["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    report["command"] = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else None
    return report
