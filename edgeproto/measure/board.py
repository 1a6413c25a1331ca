"""The Jetson board probe: is this a Jetson, which model, L4T release, nvpmodel mode, and a
``tegrastats`` sampler running beside a benchmark. No torch.

Test hook: ``EDGEPROTO_FAKE_TEGRA=<dir>`` makes the probe read ``<dir>/etc/nv_tegra_release`` and
``<dir>/proc/device-tree/model`` and run ``<dir>/usr/bin/tegrastats`` and ``<dir>/usr/sbin/nvpmodel``
(or ``<dir>/usr/bin/nvpmodel``) instead of the real ones, so a non-Jetson machine can play one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

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


def find_tool(name: str, root: Path) -> str | None:
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
    tool = find_tool("nvpmodel", root)
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
