"""Benchmark on an NVIDIA Jetson: locally on the board, or from a workstation over SSH. No torch.

**Local mode** (:func:`bench_local`, ``edgeproto bench BUNDLE --target jetson`` run on the board): the
board is recognised by ``/etc/nv_tegra_release``; its model (``/proc/device-tree/model``), L4T release
and ``nvpmodel -q`` power mode are recorded; ``tegrastats --interval 100`` runs as a child process
for the whole benchmark (an idle second first, as the baseline) and its samples are matched to each
batch size's measured window to give mean power and energy per inference
(:mod:`edgeproto.measure.tegrastats`). The runtime is TensorRT when available (an edgeproto TensorRT
runtime, else ONNX Runtime's TensorrtExecutionProvider); otherwise ONNX Runtime on what it has,
and the report says so in ``jetson.runtime_note`` — those are then not TensorRT numbers.
``jetson_clocks`` (not run here: it needs root and changes the board) gives steadier clocks.

**Remote mode** (:func:`bench_remote`, ``--host USER@HOST``): uses the OpenSSH client only
(``ssh``/``scp`` with ``BatchMode=yes`` so nothing ever prompts, and ``ConnectTimeout``). Host keys
are checked exactly as the user's ssh configuration says; ``known_hosts`` only points
``UserKnownHostsFile`` at another file (for tests or a lab's shared file) and never disables the
check. Steps: a preflight (``<remote-python> -c 'import edgeproto'`` and a fresh temporary folder),
``scp -r`` of the bundle, ``<remote-python> -m edgeproto.cli bench <copy> --target jetson --json ...``
on the board, the JSON report back, and the temporary folder removed. Every argument sent over SSH is
``shlex.quote``-d. Unreachable host, refused key, unknown host key, missing Python or a Python without
edgeproto → one clear EdgeprotoError, within the timeouts.

The board probe and tegrastats sampler are :mod:`edgeproto.measure.board`, the SSH transport
:mod:`edgeproto.measure.ssh`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from edgeproto.errors import EdgeprotoError
from edgeproto.measure.board import (
    RELEASE_FILE,
    TEGRASTATS_INTERVAL_MS,
    Tegrastats,
    find_tool,
    board_info,
    is_jetson,
    tegra_root,
)
from edgeproto.measure.single_stream import bench_runtime, check_batches
from edgeproto.measure.ssh import SshTarget

def _power(tegra: Tegrastats, window, throughput: float, idle_mw: float | None, rail=None) -> dict | None:
    from edgeproto.measure.tegrastats import energy_per_inference_mj, load_summary, power_summary

    lines = tegra.between(*window)
    if not lines:
        return None
    try:
        power = power_summary(lines, rail)
    except EdgeprotoError as exc:
        return {"error": str(exc), **load_summary(lines)}
    out = {**power, "energy_per_inference_mj": energy_per_inference_mj(power["mean_mw"], throughput),
           **{k: v for k, v in load_summary(lines).items() if k != "samples"}}
    if idle_mw is not None:
        out["idle_mw"] = idle_mw
        out["energy_above_idle_mj"] = max(0.0, power["mean_mw"] - idle_mw) / throughput
    return out


# --------------------------------------------------------------------------- local mode


def tensorrt_status(device: str | None = None) -> tuple[str, str | None, bool, str]:
    """How to reach TensorRT here: ``(runtime, device, is_tensorrt, note)``.

    A registered and installed ``tensorrt`` runtime first, then ONNX Runtime's
    TensorrtExecutionProvider (``device="TENSORRT"``), else ONNX Runtime on ``device`` — and the
    note says that those are not TensorRT numbers.
    """
    import importlib.util

    from edgeproto.runtimes import RUNTIMES

    spec = RUNTIMES.get("tensorrt")
    if spec is not None and not spec.missing():
        return "tensorrt", device, True, "TensorRT via the edgeproto tensorrt runtime"
    providers: list[str] = []
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        providers = list(onnxruntime.get_available_providers())
    if "TensorrtExecutionProvider" in providers:
        return "onnxruntime", "TENSORRT", True, "TensorRT via ONNX Runtime's TensorrtExecutionProvider"
    why = ("no tensorrt runtime installed and ONNX Runtime has no TensorrtExecutionProvider "
           f"(providers: {', '.join(providers) or 'none'})")
    return "onnxruntime", device, False, (f"TensorRT is not available on this board ({why}): benched ONNX Runtime "
                                          "instead; these are not TensorRT numbers")


def bench_local(bundle, *, precision: str = "fp32", guard: str = "prototypes", batches=(1,), threads: int = 0,
                min_queries: int = 100, min_seconds: float = 2.0, compare_torch: bool = False,
                device: str | None = None, warmup: int = 10, progress=None, idle_seconds: float = 1.0,
                interval_ms: int = TEGRASTATS_INTERVAL_MS, rail=None) -> dict:
    """Benchmark on this Jetson with tegrastats running; see the module docstring."""
    from edgeproto.measure.tegrastats import parse_line, power_summary

    root = tegra_root()
    if not is_jetson(root):
        raise EdgeprotoError(
            f"target jetson: this machine is not a Jetson ({root / RELEASE_FILE} does not exist); "
            "bench a board over SSH with --host USER@BOARD"
        )
    board = board_info(root)
    target, device, trt, note = tensorrt_status(device)
    tool = find_tool("tegrastats", root)
    power_notes = []
    if tool is None:
        power_notes.append("tegrastats not found: no power or energy figures")

    tegra = Tegrastats(tool or "tegrastats", interval_ms)
    idle_window = None
    if tool is not None:
        tegra.__enter__()
    try:
        if tool is not None and idle_seconds > 0 and tegra.error is None:
            t0 = time.monotonic()
            time.sleep(idle_seconds)
            idle_window = (t0, time.monotonic())
        report = bench_runtime(bundle, target=target, precision=precision, guard=guard,
                               sizes=check_batches(batches), threads=threads, min_queries=min_queries,
                               min_seconds=min_seconds, compare_torch=compare_torch, device=device, warmup=warmup,
                               progress=progress, keep_windows=True)
    finally:
        if tool is not None:
            tegra.__exit__(None, None, None)
    if tegra.error:
        power_notes.append(tegra.error)

    idle = None
    if tool is not None and idle_window is not None and tegra.samples:
        lines = [ln for t, ln in tegra.samples if idle_window[0] <= t <= idle_window[1]]
        try:
            idle = power_summary(lines, rail) if lines else None
        except EdgeprotoError as exc:
            power_notes.append(str(exc))
    for row in report["batches"]:
        for key, power_key in (("latency", "power"), ("torch", "torch_power")):
            stats = row.get(key)
            if not stats:
                continue
            window = stats.pop("window", None)
            if tool is not None and tegra.samples and window:
                row[power_key] = _power(tegra, window, stats["throughput"], idle["mean_mw"] if idle else None, rail)
    rails = sorted(parse_line(tegra.samples[0][1])["rails"]) if tegra.samples else []
    report["runtime_target"] = target
    report["target"] = "jetson"
    report["notes"].insert(0, note)
    report["jetson"] = {
        **board,
        "runtime_note": note,
        "tensorrt": trt,
        "tegrastats": {"path": tool, "interval_ms": interval_ms, "samples": len(tegra.samples), "rails": rails,
                       "idle_power_mw": idle["mean_mw"] if idle else None,
                       "idle_rail": idle["rail"] if idle else None, "notes": power_notes},
    }
    return report


# --------------------------------------------------------------------------- remote mode

_PREFLIGHT = ("import json, tempfile, edgeproto; "
              "print(json.dumps({'edgeproto': edgeproto.__version__, "
              "'dir': tempfile.mkdtemp(prefix='edgeproto-bench-')}))")


def _remote_error(stderr: str) -> str | None:
    """The ``error: ...`` line edgeproto's CLI prints for a user mistake."""
    for line in reversed(stderr.splitlines()):
        if line.startswith("error: "):
            return line[len("error: "):].strip()
    return None


def _json_from(stdout: str) -> dict:
    text = stdout.strip()
    try:
        return json.loads(text)
    except ValueError:
        start = text.find("\n{")
        start = 0 if text.startswith("{") else (start + 1 if start >= 0 else -1)
        if start >= 0:
            try:
                return json.loads(text[start:])
            except ValueError:
                pass
    raise EdgeprotoError(f"the board's bench printed no JSON report: {text[-300:] or '(nothing)'}")


def bench_remote(bundle, *, host: str, port: int | None = None, identity: str | None = None,
                 remote_python: str = "python3", known_hosts: str | None = None, target: str = "jetson",
                 precision: str = "fp32", guard: str = "prototypes", batches=(1,), threads: int = 0,
                 min_queries: int = 100, min_seconds: float = 2.0, compare_torch: bool = False,
                 device: str | None = None, connect_timeout: int = 10, timeout: float | None = None,
                 status: Callable[[str], None] | None = None) -> dict:
    """Copy ``bundle`` to ``host``, bench it there (``--target jetson`` by default), return its report.

    Adds ``remote`` (host, port, remote python, the board's edgeproto version, copy and total
    seconds). ``timeout`` bounds the remote benchmark (default: generous, from the run's size).
    """
    from edgeproto.bundle import open_bundle

    sizes = check_batches(batches)
    local = Path(bundle)
    opened = open_bundle(local)  # refuse a corrupt bundle before copying it anywhere
    source = local if (local.suffix == ".zip" and local.is_file()) else opened.root
    ssh = SshTarget(host, port, identity, known_hosts, connect_timeout)
    say = status or (lambda msg: None)
    started = time.perf_counter()
    quick = connect_timeout + 60

    say(f"connecting to {ssh.where}")
    pre = ssh.run([remote_python, "-c", _PREFLIGHT], timeout=quick, what="checking the remote Python")
    if pre.returncode != 0:
        err = pre.stderr.strip()
        if "No module named" in err and "edgeproto" in err:
            raise EdgeprotoError(
                f"{remote_python} on {ssh.where} has no edgeproto (No module named edgeproto): install it on the "
                "board (pip install edgeproto) or point --remote-python at a Python that has it")
        if pre.returncode == 127 or "not found" in err or "No such file" in err:
            raise EdgeprotoError(f"{remote_python} not found on {ssh.where}: pass --remote-python PATH ({err[-200:]})")
        raise EdgeprotoError(f"{remote_python} on {ssh.where} failed the preflight (exit {pre.returncode}): {err[-300:]}")
    info = _json_from(pre.stdout)
    workdir = str(info.get("dir", ""))
    if "edgeproto-bench-" not in workdir or not workdir.startswith("/"):
        raise EdgeprotoError(f"unexpected remote temporary folder {workdir!r} on {ssh.where}")

    try:
        say(f"copying {source.name} to {ssh.where}")
        remote_bundle = f"{workdir}/{'bundle.zip' if source.suffix == '.zip' else 'bundle'}"
        t0 = time.perf_counter()
        ssh.copy(source, remote_bundle, timeout=max(600.0, quick))
        copy_s = time.perf_counter() - t0

        args = [remote_bundle, "--target", target, "--json", "--precision", precision, "--guard", guard,
                "--batches", ",".join(str(b) for b in sizes), "--threads", str(int(threads)),
                "--min-queries", str(int(min_queries)), "--min-seconds", repr(float(min_seconds))]
        if device:
            args += ["--device", device]
        if compare_torch:
            args += ["--compare", "torch"]
        if timeout is None:  # warm-up, loading and compiling dominate small runs; be generous
            timeout = 300 + len(sizes) * (2 if compare_torch else 1) * (float(min_seconds) * 3 + 60)
        say(f"benchmarking on {ssh.where}")
        done = ssh.run([remote_python, "-m", "edgeproto.cli", "bench", *args], timeout=timeout,
                       what="the benchmark")
        if done.returncode != 0:
            msg = _remote_error(done.stderr)
            if msg:
                raise EdgeprotoError(f"on {ssh.where}: {msg}")
            raise EdgeprotoError(
                f"the benchmark on {ssh.where} failed (exit {done.returncode}): {done.stderr.strip()[-400:]}")
        report = _json_from(done.stdout)
    finally:
        try:
            ssh.run(["rm", "-rf", "--", workdir], timeout=quick, what="removing the temporary copy")
        except EdgeprotoError:
            pass
    report["remote"] = {"host": host, "port": port, "remote_python": remote_python,
                        "remote_edgeproto": info.get("edgeproto"), "bundle": str(source), "copy_s": copy_s,
                        "total_s": time.perf_counter() - started}
    return report
