"""`pip install edgeproto` (no extras) is enough for the device side: explain (with its figure),
verify and bench run in a process where every package outside the core dependencies is blocked."""

from __future__ import annotations

import importlib.metadata as md
import json
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from edgeproto.export.bundle_writer import export_bundle

pytestmark = pytest.mark.slow


def core_distributions() -> set[str]:
    """edgeproto and the closure of its requirements without extras (markers evaluated here)."""
    seen: set[str] = set()
    todo = ["edgeproto"]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.distribution(name).requires or []
        except md.PackageNotFoundError:
            continue
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def blocked_modules() -> list[str]:
    """Top-level import names that only non-core installed distributions provide."""
    core = core_distributions()
    return sorted(name for name, dists in md.packages_distributions().items()
                  if name not in sys.stdlib_module_names and not any(canonicalize_name(d) in core for d in dists))


def test_core_closure_is_what_pyproject_says():
    core = core_distributions()
    assert {"numpy", "onnxruntime", "matplotlib", "pillow", "click", "rich"} <= core
    blocked = blocked_modules()
    assert {"torch", "openvino", "onnxscript", "safetensors", "sklearn", "pytest"} <= set(blocked)


def test_explain_verify_bench_with_core_dependencies_only(trained, tmp_path):
    bundle = tmp_path / "bundle"
    export_bundle(trained("l2_log"), bundle, golden=4)
    image = tmp_path / "input.png"
    from PIL import Image
    import numpy as np

    Image.fromarray((np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)).save(image)
    script = f"""
import json, sys
BLOCKED = set(json.loads({json.dumps(json.dumps(blocked_modules()))}))

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not a core dependency)")
        return None

STARTUP = set(sys.modules)  # what site/.pth files loaded before us (e.g. setuptools' _distutils_hack)
sys.meta_path.insert(0, Blocker())
from edgeproto.cli import main
runs = [["explain", {str(bundle)!r}, {str(image)!r}, "-o", {str(tmp_path / "ex")!r}, "--json"],
        ["explain", {str(bundle)!r}, {str(image)!r}, "--method", "mdm", "--masks", "4", "-o", {str(tmp_path / "mdm")!r},
         "--json"],
        ["verify", {str(bundle)!r}, "--json"],
        ["bench", {str(bundle)!r}, "--min-queries", "3", "--min-seconds", "0", "--json"]]
codes = []
for argv in runs:
    sys.argv = ["edgeproto", *argv]
    try:
        main()
        codes.append(0)
    except SystemExit as exc:
        codes.append(exc.code or 0)
print(json.dumps({{"codes": codes, "loaded": sorted({{m.split(".")[0] for m in set(sys.modules) - STARTUP}} & BLOCKED)}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"codes": [0, 0, 0, 0], "loaded": []}, proc.stderr[-2000:]
    assert (tmp_path / "mdm.png").stat().st_size > 10_000 and (tmp_path / "mdm.json").is_file()
    assert (tmp_path / "ex.png").stat().st_size > 10_000 and (tmp_path / "ex.json").is_file()
