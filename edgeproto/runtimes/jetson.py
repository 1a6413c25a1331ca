"""Benchmark on an NVIDIA Jetson: locally on the board, or from a workstation over SSH. No torch.

**Local mode** (:func:`bench_local`, ``edgeproto bench BUNDLE --target jetson`` run on the board): the
board is recognised by ``/etc/nv_tegra_release``; its model (``/proc/device-tree/model``), L4T release
and ``nvpmodel -q`` power mode are recorded; ``tegrastats --interval 100`` runs as a child process
for the whole benchmark (an idle second first, as the baseline) and its samples are matched to each
batch size's measured window to give mean power and energy per inference
(:mod:`edgeproto.eval.tegrastats`). The runtime is TensorRT when available (an edgeproto TensorRT
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

Test hook: ``EDGEPROTO_FAKE_TEGRA=<dir>`` makes local mode read ``<dir>/etc/nv_tegra_release`` and
``<dir>/proc/device-tree/model`` and run ``<dir>/usr/bin/tegrastats`` and ``<dir>/usr/sbin/nvpmodel``
(or ``<dir>/usr/bin/nvpmodel``) instead of the real ones, so a non-Jetson machine can play one.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

from edgeproto.errors import EdgeprotoError

FAKE_ENV = "EDGEPROTO_FAKE_TEGRA"
RELEASE_FILE = "etc/nv_tegra_release"
MODEL_FILE = "proc/device-tree/model"
TEGRASTATS_INTERVAL_MS = 100


# --------------------------------------------------------------------------- the board


def tegra_root() -> Path:
    """``/``, or the fake board root named by ``EDGEPROTO_FAKE_TEGRA``."""
    return Path(os.environ.get(FAKE_ENV) or "/")


def _faked() -> bool:
    return bool(os.environ.get(FAKE_ENV))


def is_jetson(root: Path | None = None) -> bool:
    return ((root or tegra_root()) / RELEASE_FILE).is_file()


def parse_l4t(text: str) -> str | None:
    """``# R36 (release), REVISION: 3.0, ...`` → ``"36.3.0"``."""
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"{m.group(1)}.{m.group(2)}" if m else None


def _tool(name: str, root: Path) -> str | None:
    if _faked():
        for sub in ("usr/bin", "usr/sbin", "bin", "sbin"):
            p = root / sub / name
            if p.is_file() and os.access(p, os.X_OK):
                return str(p)
        return None
    found = shutil.which(name)
    if found:
        return found
    for sub in ("/usr/bin", "/usr/sbin"):
        p = Path(sub) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def nvpmodel_mode(root: Path | None = None) -> dict:
    """``nvpmodel -q`` → ``{"name": "MAXN", "id": 0}`` (``error`` instead where it cannot be read)."""
    root = root or tegra_root()
    tool = _tool("nvpmodel", root)
    if tool is None:
        return {"name": None, "id": None, "error": "nvpmodel not found"}
    try:
        done = subprocess.run([tool, "-q"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"name": None, "id": None, "error": f"nvpmodel -q failed: {exc}"}
    name, mode_id = None, None
    lines = [ln.strip() for ln in done.stdout.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if line.startswith("NV Power Mode"):
            name = line.split(":", 1)[1].strip() if ":" in line else None
            if i + 1 < len(lines) and lines[i + 1].isdigit():
                mode_id = int(lines[i + 1])
    out = {"name": name, "id": mode_id, "raw": done.stdout.strip()}
    if name is None:
        out["error"] = (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}")[:300]
    return out


def board_info(root: Path | None = None) -> dict:
    """Board model, L4T release (and the raw ``nv_tegra_release`` line), nvpmodel mode."""
    root = root or tegra_root()
    try:
        release = (root / RELEASE_FILE).read_text(errors="replace").strip()
    except OSError as exc:
        raise EdgeprotoError(f"cannot read {root / RELEASE_FILE}: {exc.strerror or exc}") from None
    try:
        model = (root / MODEL_FILE).read_bytes().decode(errors="replace").strip("\x00 \n")
    except OSError:
        model = None
    first = release.splitlines()[0] if release else ""
    info = {"model": model, "l4t": parse_l4t(release), "nv_tegra_release": first, "nvpmodel": nvpmodel_mode(root)}
    if _faked():
        info["fake_root"] = str(root)
    return info


# --------------------------------------------------------------------------- tegrastats


class Tegrastats:
    """``tegrastats --interval MS`` as a child process; ``samples`` are ``(time.monotonic(), line)``."""

    def __init__(self, executable: str, interval_ms: int = TEGRASTATS_INTERVAL_MS) -> None:
        self.executable = executable
        self.interval_ms = interval_ms
        self.samples: list[tuple[float, str]] = []
        self.error: str | None = None
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Tegrastats":
        argv = [self.executable, "--interval", str(self.interval_ms)]
        stdbuf = shutil.which("stdbuf")
        if stdbuf:  # line-buffered even into a pipe, so each sample's arrival time is its own
            argv = [stdbuf, "-oL", *argv]
        try:
            self._proc = subprocess.Popen(argv,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        except OSError as exc:
            self.error = f"cannot start {self.executable}: {exc.strerror or exc}"
            return self
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.strip():
                self.samples.append((time.monotonic(), line.rstrip("\n")))

    def __exit__(self, *exc) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=3)
        elif proc.returncode and not self.samples:
            err = proc.stderr.read().strip() if proc.stderr else ""
            self.error = f"tegrastats exited with {proc.returncode}: {err[:300]}"
        if self._thread is not None:
            self._thread.join(timeout=3)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()

    def between(self, start: float, end: float) -> list[str]:
        """Lines sampled in [start, end]; when the window is shorter than one interval, the first
        sample after ``start``."""
        inside = [ln for t, ln in self.samples if start <= t <= end]
        if inside:
            return inside
        after = [ln for t, ln in self.samples if t >= start]
        return after[:1]


def _power(tegra: Tegrastats, window, throughput: float, idle_mw: float | None, rail=None) -> dict | None:
    from edgeproto.eval.tegrastats import energy_per_inference_mj, load_summary, power_summary

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


def tensorrt_status() -> tuple[bool, str]:
    """(available, how or why not) for TensorRT on this machine."""
    import importlib.util

    from edgeproto.runtimes import TARGETS

    if "tensorrt" in TARGETS and importlib.util.find_spec(TARGETS["tensorrt"][2]) is not None:
        return True, "edgeproto TensorRT runtime"
    providers: list[str] = []
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        providers = list(onnxruntime.get_available_providers())
    if "TensorrtExecutionProvider" in providers:
        return True, "ONNX Runtime TensorrtExecutionProvider"
    return False, ("no TensorRT runtime in edgeproto and ONNX Runtime has no TensorrtExecutionProvider "
                   f"(providers: {', '.join(providers) or 'none'})")


def bench_local(bundle, *, precision: str = "fp32", guard: str = "prototypes", batches=(1,), threads: int = 0,
                min_queries: int = 100, min_seconds: float = 2.0, compare_torch: bool = False,
                device: str | None = None, warmup: int = 10, progress=None, idle_seconds: float = 1.0,
                interval_ms: int = TEGRASTATS_INTERVAL_MS, rail=None) -> dict:
    """Benchmark on this Jetson with tegrastats running; see the module docstring."""
    from edgeproto.eval.bench import bench_bundle
    from edgeproto.eval.tegrastats import parse_line, power_summary

    root = tegra_root()
    if not is_jetson(root):
        raise EdgeprotoError(
            f"target jetson: this machine is not a Jetson ({root / RELEASE_FILE} does not exist); "
            "bench a board over SSH with --host USER@BOARD"
        )
    board = board_info(root)
    trt, how = tensorrt_status()
    target = "tensorrt" if trt else "onnxruntime"
    note = (f"TensorRT via {how}" if trt else
            f"TensorRT is not available on this board ({how}): benched ONNX Runtime instead; these are not "
            "TensorRT numbers")
    tool = _tool("tegrastats", root)
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
        report = bench_bundle(bundle, target=target, precision=precision, guard=guard, batches=batches,
                              threads=threads, min_queries=min_queries, min_seconds=min_seconds,
                              compare_torch=compare_torch, device=device, warmup=warmup, progress=progress,
                              keep_windows=True)
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

_HOST = re.compile(r"^(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9._-]+$")


def _ssh_option(key: str, value) -> list[str]:
    text = str(value)
    if any(c.isspace() for c in text) or '"' in text:
        if '"' in text:
            raise EdgeprotoError(f"ssh option {key}: a path with a double quote is not supported: {text!r}")
        text = f'"{text}"'
    return ["-o", f"{key}={text}"]


class SshTarget:
    """How to reach the board with the OpenSSH client (``ssh``/``scp``), never prompting."""

    def __init__(self, host: str, port: int | None = None, identity: str | None = None,
                 known_hosts: str | None = None, connect_timeout: int = 10) -> None:
        if not host or not _HOST.match(host):
            raise EdgeprotoError(f"--host must be USER@HOST or HOST (letters, digits, '.', '-', '_'); got {host!r}")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
            raise EdgeprotoError(f"--port must be 1..65535 (got {port!r})")
        for name, path in (("--identity", identity), ("--known-hosts", known_hosts)):
            if path is not None and not Path(path).is_file():
                raise EdgeprotoError(f"{name} {path}: no such file")
        for tool in ("ssh", "scp"):
            if shutil.which(tool) is None:
                raise EdgeprotoError(f"remote bench needs the OpenSSH client ({tool}), which is not installed")
        self.host, self.port, self.identity, self.known_hosts = host, port, identity, known_hosts
        self.connect_timeout = int(connect_timeout)

    def options(self) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
        if self.port is not None:
            opts += ["-o", f"Port={self.port}"]
        if self.identity is not None:
            opts += ["-i", str(self.identity), "-o", "IdentitiesOnly=yes"]
        if self.known_hosts is not None:
            opts += _ssh_option("UserKnownHostsFile", Path(self.known_hosts).resolve())
        return opts

    @property
    def where(self) -> str:
        return self.host + (f" (port {self.port})" if self.port else "")

    def _fail(self, stderr: str, what: str) -> EdgeprotoError:
        text = stderr.strip()
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("Warning: Permanently added")]
        last = lines[-1] if lines else "no message"
        if "Permission denied" in text:
            return EdgeprotoError(
                f"SSH refused the key for {self.where} ({last.strip()}): check --identity and the board's "
                "authorized_keys (BatchMode: no password prompt)")
        if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
            return EdgeprotoError(
                f"the host key of {self.where} is unknown or changed (Host key verification failed): connect "
                "once with ssh to check and accept it, or pass --known-hosts FILE")
        for pattern in ("Connection refused", "Connection timed out", "No route to host", "Could not resolve",
                        "Network is unreachable", "Connection closed", "Connection reset", "timed out"):
            if pattern in text:
                return EdgeprotoError(f"cannot reach {self.where} over SSH while {what}: {last.strip()}")
        return EdgeprotoError(f"ssh to {self.where} failed while {what}: {last.strip()}")

    def run(self, remote_argv: list[str], *, timeout: float, what: str) -> subprocess.CompletedProcess:
        """Run a command on the board (every argument quoted); ssh's own failures raise."""
        command = " ".join(shlex.quote(str(a)) for a in remote_argv)
        argv = ["ssh", *self.options(), "--", self.host, command]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise EdgeprotoError(f"{self.where} did not finish {what} within {timeout:.0f} s") from None
        if done.returncode == 255:
            raise self._fail(done.stderr, what)
        return done

    def copy(self, local: Path, remote: str, *, timeout: float) -> None:
        argv = ["scp", "-q", "-r", *self.options(), "--", str(local), f"{self.host}:{remote}"]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise EdgeprotoError(f"copying the bundle to {self.where} did not finish within {timeout:.0f} s") from None
        if done.returncode != 0:
            if done.returncode == 255 or "Permission denied" in done.stderr or "Connection" in done.stderr:
                raise self._fail(done.stderr, "copying the bundle")
            raise EdgeprotoError(f"scp of the bundle to {self.where} failed: {done.stderr.strip()[-400:]}")


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
    from edgeproto.eval.bench import check_batches

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
