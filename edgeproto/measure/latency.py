"""Single-stream latency statistics (MLPerf-style) and process memory figures. No torch.

:func:`measure` calls ``fn()`` ``warmup`` times (not recorded; the first call's time is kept as
``first_ms`` because it includes lazy initialisation), then keeps calling it, one query at a time,
until it has at least ``min_queries`` queries **and** ``min_seconds`` of measured time. Percentiles
are nearest-rank (the smallest observed latency with at least p % of the queries at or below it:
always a latency that really happened, the conservative choice for a tail).

Memory: :func:`reset_peak_rss` clears the kernel's high-water mark of this process
(``/proc/self/clear_refs`` ← 5, Linux ≥ 4.0), so :func:`peak_rss_mb` afterwards is the peak of
what ran since, not of everything the process ever did. Where that is not possible (macOS, a
read-only /proc) the peak is ``getrusage``'s ``ru_maxrss`` since process start, and
``peak_reset`` says so.
"""

from __future__ import annotations

import math
import os
import resource
import sys
import time
from typing import Callable

from edgeproto.errors import EdgeprotoError

PERCENTILES = (50, 90, 99)
_now_ns = time.perf_counter_ns  # the clock of :func:`measure` (a module attribute so tests can fake it)


def percentile(sorted_ms: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (p in (0, 100])."""
    if not sorted_ms:
        raise ValueError("no latencies")
    rank = max(1, math.ceil(p / 100.0 * len(sorted_ms)))
    return sorted_ms[min(rank, len(sorted_ms)) - 1]


def summarize(latencies_ms: list[float], *, batch: int = 1, duration_s: float | None = None) -> dict:
    """p50/p90/p99/mean/min/max (ms), std, throughput (items/s) of per-query latencies."""
    ordered = sorted(latencies_ms)
    n = len(ordered)
    total_s = duration_s if duration_s is not None else sum(ordered) / 1000.0
    mean = sum(ordered) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in ordered) / n)
    out = {f"p{p}_ms": percentile(ordered, p) for p in PERCENTILES}
    out.update(
        mean_ms=mean,
        std_ms=std,
        min_ms=ordered[0],
        max_ms=ordered[-1],
        queries=n,
        batch=batch,
        duration_s=total_s,
        throughput=(batch * n / total_s) if total_s > 0 else float("inf"),  # items (images) per second
        qps=(n / total_s) if total_s > 0 else float("inf"),
    )
    return out


def measure(
    fn: Callable[[], object],
    *,
    warmup: int = 10,
    min_queries: int = 100,
    min_seconds: float = 2.0,
    batch: int = 1,
    progress: Callable[[int, float], None] | None = None,
    max_seconds: float | None = None,
) -> dict:
    """Time ``fn()`` single-stream; see the module docstring.

    Returns :func:`summarize`'s dict plus ``warmup``, ``first_ms``, ``min_queries``,
    ``min_seconds``, ``stopped_early`` (True only when ``max_seconds`` cut the run short) and
    ``window`` (start and end, ``time.monotonic()``, of the measured queries, for matching power
    samples). ``progress(queries_done, measured_seconds)`` is called at most ~10 times a second
    (and once at the end). ``batch`` only scales the throughput (items/s).
    """
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise EdgeprotoError(f"warmup must be a whole number ≥ 0 (got {warmup!r})")
    if isinstance(min_queries, bool) or not isinstance(min_queries, int) or min_queries < 1:
        raise EdgeprotoError(f"min_queries must be a whole number ≥ 1 (got {min_queries!r})")
    if not isinstance(min_seconds, (int, float)) or isinstance(min_seconds, bool) or not min_seconds >= 0:
        raise EdgeprotoError(f"min_seconds must be ≥ 0 (got {min_seconds!r})")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise EdgeprotoError(f"batch must be a whole number ≥ 1 (got {batch!r})")

    clock = _now_ns
    first_ms = None
    for i in range(warmup):
        t0 = clock()
        fn()
        if i == 0:
            first_ms = (clock() - t0) / 1e6

    latencies: list[float] = []
    append = latencies.append
    min_ns = int(min_seconds * 1e9)
    cap_ns = int(max_seconds * 1e9) if max_seconds else None
    next_report = 0
    stopped_early = False
    mono_start = time.monotonic()
    start = clock()
    while True:
        t0 = clock()
        fn()
        t1 = clock()
        append((t1 - t0) / 1e6)
        elapsed = t1 - start
        if len(latencies) >= min_queries and elapsed >= min_ns:
            break
        if cap_ns is not None and elapsed >= cap_ns:
            stopped_early = True
            break
        if progress is not None and t1 >= next_report:
            progress(len(latencies), elapsed / 1e9)
            next_report = t1 + 100_000_000
    duration_s = (clock() - start) / 1e9
    mono_end = time.monotonic()
    if progress is not None:
        progress(len(latencies), duration_s)
    stats = summarize(latencies, batch=batch, duration_s=duration_s)
    stats.update(
        warmup=warmup,
        first_ms=first_ms,
        min_queries=min_queries,
        min_seconds=float(min_seconds),
        stopped_early=stopped_early,
        window=[mono_start, mono_end],
    )
    return stats


# --------------------------------------------------------------------------- memory


def _status_kb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_mb() -> float | None:
    """Resident set size of this process now (MiB), or None where /proc is unavailable."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024.0


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS; False where the OS does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident set size (MiB): since the last successful :func:`reset_peak_rss`, else since start."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024.0
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024.0 * 1024.0) if sys.platform == "darwin" else maxrss / 1024.0


class MemoryWindow:
    """Peak RSS of whatever runs inside ``with MemoryWindow() as mem:`` (see the module docstring).

    After the block: ``mem.result()`` → ``{"rss_before_mb", "rss_after_mb", "peak_rss_mb",
    "peak_increase_mb", "peak_reset"}``. ``peak_increase_mb`` (peak − RSS before) is what the
    block itself added; ``peak_rss_mb`` includes everything already resident (e.g. torch).
    """

    def __enter__(self) -> "MemoryWindow":
        self.reset = reset_peak_rss()
        self.before = current_rss_mb()
        if self.before is None:  # no /proc: best effort from getrusage
            self.before = peak_rss_mb()
        return self

    def __exit__(self, *exc) -> None:
        self.peak = peak_rss_mb()
        self.after = current_rss_mb()

    def result(self) -> dict:
        return {
            "rss_before_mb": round(self.before, 1),
            "rss_after_mb": None if self.after is None else round(self.after, 1),
            "peak_rss_mb": round(self.peak, 1),
            "peak_increase_mb": round(max(0.0, self.peak - self.before), 1),
            "peak_reset": self.reset,
            "pid": os.getpid(),
        }
