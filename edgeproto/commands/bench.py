"""``edgeproto bench``: options, run (:func:`run_bench`), render. No torch at import.

``run_bench(...)`` benchmarks locally (:func:`edgeproto.measure.bench.bench_bundle`; ``--target jetson`` →
:func:`edgeproto.measure.jetson.bench_local`) or, with ``host``, on a board over SSH
(:func:`edgeproto.measure.jetson.bench_remote`), then prints a rich table (progress on stderr while it
runs) or, with ``as_json``, only the JSON report on stdout. User mistakes raise EdgeprotoError.

"""

from __future__ import annotations

import contextlib
import json
import sys

import click

from edgeproto.commands.options import device_option, guard_option, json_option, precision_option
from edgeproto.errors import EdgeprotoError
from edgeproto.measure.bench import BOARDS, bench_targets
from edgeproto.runtimes import RUNTIMES


def _compare_torch(compare) -> bool:
    if compare in (None, False, "", "none"):
        return False
    if compare is True or compare == "torch":
        return True
    raise EdgeprotoError(f"--compare takes 'torch' (the PyTorch reference), got {compare!r}")


@contextlib.contextmanager
def _progress_display(enabled: bool, min_queries: int, min_seconds: float):
    """A rich progress display on stderr; yields the ``progress(label, queries, seconds)`` callback."""
    from edgeproto.progress import stderr_is_terminal

    if not enabled or not stderr_is_terminal():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    tasks: dict[str, int] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[queries]} queries"),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:

        def tick(label: str, queries: int, seconds: float) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=1.0, queries=0)
            frac = min(queries / min_queries, seconds / min_seconds if min_seconds > 0 else 1.0)
            bar.update(tasks[label], completed=min(1.0, frac), queries=queries)

        yield tick


def run_bench(
    bundle,
    target: str = "onnxruntime",
    precision: str = "fp32",
    guard: str = "prototypes",
    batches: str = "1",
    threads: int = 0,
    min_queries: int = 100,
    min_seconds: float = 2.0,
    compare: str | None = None,
    device: str | None = None,
    host: str | None = None,
    port: int | None = None,
    identity: str | None = None,
    remote_python: str = "python3",
    known_hosts: str | None = None,
    as_json: bool = False,
) -> int:
    """Benchmark ``bundle`` and print the report; returns the exit code (0).

    ``batches``: comma-separated batch sizes ("1,8,32"); ``compare``: None or "torch";
    ``host``: USER@HOST to run on a board over SSH (then ``port``, ``identity``, ``remote_python``,
    ``known_hosts`` apply and ``target`` is what the board runs, normally "jetson").
    """
    from edgeproto.measure.bench import _check_common, parse_batches

    sizes = parse_batches(batches) if isinstance(batches, str) else tuple(batches)
    with_torch = _compare_torch(compare)
    _check_common(target, precision, guard, threads, min_queries, min_seconds)
    if not host:
        from edgeproto.measure.single_stream import check_local_threads

        check_local_threads(threads)

    if host:
        from edgeproto.measure.jetson import bench_remote

        if as_json:
            report = bench_remote(bundle, host=host, port=port, identity=identity, remote_python=remote_python,
                                  known_hosts=known_hosts, target=target, precision=precision, guard=guard,
                                  batches=sizes, threads=threads, min_queries=min_queries, min_seconds=min_seconds,
                                  compare_torch=with_torch, device=device)
        else:
            from rich.console import Console

            with Console(stderr=True).status(f"remote bench on {host}") as spinner:
                report = bench_remote(bundle, host=host, port=port, identity=identity, remote_python=remote_python,
                                      known_hosts=known_hosts, target=target, precision=precision, guard=guard,
                                      batches=sizes, threads=threads, min_queries=min_queries,
                                      min_seconds=min_seconds, compare_torch=with_torch, device=device,
                                      status=lambda msg: spinner.update(msg))
    else:
        if port is not None or identity or known_hosts:
            raise EdgeprotoError("--port, --identity and --known-hosts need --host USER@HOST")
        from edgeproto.measure.bench import bench_bundle

        with _progress_display(not as_json, min_queries, float(min_seconds)) as tick:
            report = bench_bundle(bundle, target=target, precision=precision, guard=guard, batches=sizes,
                                  threads=threads, min_queries=min_queries, min_seconds=min_seconds,
                                  compare_torch=with_torch, device=device, progress=tick)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        render(report)
    return 0


# --------------------------------------------------------------------------- rendering


def _ms(v) -> str:
    return "–" if v is None else (f"{v:.3f}" if v < 10 else f"{v:.1f}")


def _rt(info: dict) -> str:
    threads = info.get("threads")
    return (f"{info.get('name')} {info.get('version')} · {info.get('precision')} · {info.get('device')} · "
            f"threads {threads if threads is not None else 'default'}")


def _mem(mem: dict | None) -> str:
    if not mem:
        return "–"
    scope = "" if mem.get("peak_reset") else " (since process start)"
    return f"peak RSS {mem['peak_rss_mb']:.0f} MiB{scope}, +{mem['peak_increase_mb']:.0f} MiB for this phase"


def render(report: dict, console=None) -> None:
    """The report as a rich table plus the facts that qualify it (runtime, threads, memory, board)."""
    from rich.table import Table

    if console is None:  # piped or captured: 160 columns, the table is not squeezed into 80
        from edgeproto.commands.options import console as make_console

        console = make_console()
    jetson = report.get("jetson")
    remote = report.get("remote")
    where = f" on {remote['host']}" if remote else ""
    rt = report.get("runtime", {})
    title = f"{report.get('target')}{where}: {rt.get('name')} {rt.get('precision')} (single-stream, ms)"
    table = Table(title=title)
    cols = ["batch", "runtime", "p50", "p90", "p99", "mean", "min", "max", "items/s", "queries", "torch/target p50"]
    if jetson:
        cols += ["power W", "mJ/inference"]
    for c in cols:
        table.add_column(c, justify="left" if c == "runtime" else "right")
    for row in report.get("batches", []):
        for key, name in (("latency", rt.get("name")), ("torch", "torch")):
            s = row.get(key)
            if not s:
                continue
            speed = row.get("speedup_vs_torch", {}).get("p50") if key == "latency" else None
            cells = [str(row["batch"]), str(name), _ms(s["p50_ms"]), _ms(s["p90_ms"]), _ms(s["p99_ms"]),
                     _ms(s["mean_ms"]), _ms(s["min_ms"]), _ms(s["max_ms"]), f"{s['throughput']:.1f}",
                     str(s["queries"]), "–" if speed is None else f"{speed:.2f}×"]
            if jetson:
                p = row.get("power" if key == "latency" else "torch_power") or {}
                cells += ["–" if "mean_mw" not in p else f"{p['mean_mw'] / 1000:.2f}",
                          "–" if "energy_per_inference_mj" not in p else f"{p['energy_per_inference_mj']:.2f}"]
            table.add_row(*cells)
    console.print(table)
    lines = [f"runtime: {_rt(rt)}; load {report.get('load_s', 0):.3f} s; {_mem(report.get('memory'))}"]
    torch_info = report.get("torch")
    if torch_info:
        lines.append(f"reference: {_rt(torch_info)}; load {torch_info['load_s']:.3f} s; {_mem(torch_info.get('memory'))}")
    req = report.get("requested", {})
    lines.append(f"requested: precision {req.get('precision')}, guard {req.get('guard')}, "
                 f"threads {req.get('threads') or 'default'}, device {req.get('device') or 'default'}")
    host = report.get("host", {})
    lines.append(f"host: {host.get('cpu')} ({host.get('usable_cpus')} usable CPUs), {host.get('system')} "
                 f"{host.get('machine')}, python {host.get('python')}")
    if jetson:
        nv = jetson.get("nvpmodel") or {}
        ts = jetson.get("tegrastats") or {}
        lines.append(f"board: {jetson.get('model')}, L4T {jetson.get('l4t')}, nvpmodel {nv.get('name')} "
                     f"(id {nv.get('id')})")
        idle = ts.get("idle_power_mw")
        lines.append(f"power: tegrastats every {ts.get('interval_ms')} ms, rail {ts.get('idle_rail') or '?'}, "
                     f"idle {'–' if idle is None else f'{idle / 1000:.2f} W'}, {ts.get('samples')} samples")
    if remote:
        lines.append(f"remote: {remote['host']} via ssh, {remote['remote_python']} (edgeproto "
                     f"{remote.get('remote_edgeproto')}), copy {remote['copy_s']:.1f} s, total {remote['total_s']:.1f} s")
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    for line in lines:
        console.print(line, highlight=False)


@click.command()
@click.argument("bundle", type=click.Path())
@click.option("--target", type=click.Choice(bench_targets()), default="onnxruntime", show_default=True,
              help="; ".join([f"{n}: {s.summary}" for n, s in RUNTIMES.items()]
                             + [f"{b}: on the board (TensorRT when it has it), with power" for b in BOARDS]))
@precision_option
@guard_option
@click.option("--batches", default="1", show_default=True, help="comma-separated batch sizes, e.g. 1,8,32")
@click.option("--threads", type=int, default=0, show_default=True, help="0: the runtime's default")
@click.option("--min-queries", type=int, default=100, show_default=True)
@click.option("--min-seconds", type=float, default=2.0, show_default=True)
@click.option("--compare", type=click.Choice(["torch"]), default=None, help="also time the PyTorch reference")
@device_option
@click.option("--host", default=None, help="USER@HOST: bench on a board over SSH")
@click.option("--port", type=int, default=None, help="SSH port (default: your ssh config)")
@click.option("--identity", type=click.Path(dir_okay=False), default=None, help="SSH private key")
@click.option("--remote-python", default="python3", show_default=True, help="Python with edgeproto on the board")
@click.option("--known-hosts", type=click.Path(dir_okay=False), default=None,
              help="known_hosts file to check the board's host key against")
@json_option("print the report as JSON")
def bench(bundle, target, precision, guard, batches, threads, min_queries, min_seconds, compare, device, host,
          port, identity, remote_python, known_hosts, as_json) -> None:
    """Single-stream latency (p50/p90/p99), throughput, memory (and power on a Jetson) of a bundle."""
    sys.exit(run_bench(bundle, target, precision, guard, batches, threads, min_queries, min_seconds, compare,
                       device, host, port, identity, remote_python, known_hosts, as_json))
