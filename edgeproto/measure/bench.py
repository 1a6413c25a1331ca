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

from edgeproto.errors import EdgeprotoError
from edgeproto.measure.jetson import bench_local
from edgeproto.measure.single_stream import Progress, bench_runtime, check_batches, check_local_threads
from edgeproto.runtimes import RUNTIMES, check_guard, check_precision

BOARDS = ("jetson",)  # bench targets that are a board (its runtime chosen there), not a runtime


def bench_targets() -> list[str]:
    """Every ``--target`` bench takes: the registry's runtimes, then the boards."""
    return [*RUNTIMES, *BOARDS]


# --------------------------------------------------------------------------- argument checks


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
    check_precision(precision, allow_auto=True)
    check_guard(guard)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise EdgeprotoError(f"threads must be a whole number ≥ 0 (0: the runtime's default) (got {threads!r})")
    if isinstance(min_queries, bool) or not isinstance(min_queries, int) or not 1 <= min_queries <= 1_000_000:
        raise EdgeprotoError(f"min_queries must be a whole number from 1 to 1000000 (got {min_queries!r})")
    if (isinstance(min_seconds, bool) or not isinstance(min_seconds, (int, float))
            or not 0 <= min_seconds <= 3600):
        raise EdgeprotoError(f"min_seconds must be a number from 0 to 3600 (got {min_seconds!r})")


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
        return bench_local(bundle, precision=precision, guard=guard, batches=sizes, threads=threads,
                           min_queries=min_queries, min_seconds=min_seconds, compare_torch=compare_torch,
                           device=device, warmup=warmup, progress=progress)
    return bench_runtime(bundle, target=target, precision=precision, guard=guard, sizes=sizes, threads=threads,
                         min_queries=min_queries, min_seconds=min_seconds, compare_torch=compare_torch,
                         device=device, warmup=warmup, progress=progress, keep_windows=keep_windows)
