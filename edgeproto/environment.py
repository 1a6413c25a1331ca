"""What produced a set of numbers: host, CPU, Python and package versions (one description for
``bench``'s ``host`` and ``validate``'s ``environment``)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path

PACKAGES = ("edgeproto", "numpy", "torch", "onnx", "onnxruntime", "openvino", "nncf", "tensorrt", "polygraphy")


def package_version(package: str) -> str | None:
    """The installed version of ``package``, or None (never imports it)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> int:
    """CPUs this process may run on (affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def host_info() -> dict:
    """Machine, OS, CPU (model, logical and usable CPUs), Python and the versions of the packages that matter."""
    versions = {p: package_version(p) for p in PACKAGES}
    return {
        "machine": platform.machine(),
        "system": platform.system(),
        "release": platform.release(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "python": platform.python_version(),
        "numpy": versions["numpy"],
        "edgeproto": versions["edgeproto"],
        "versions": {k: v for k, v in versions.items() if v},
    }
