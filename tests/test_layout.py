"""The layout's floors: every edgeproto module imports only from its own stage, stages upstream of
it, or the ground floor; no import loop (lazy imports counted); the device side imports no torch.

``python tests/test_layout.py`` prints the stage graph (who imports whom, with counts).
"""

from __future__ import annotations

import ast
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "edgeproto"
GROUND = {"__init__", "errors", "atomic_files", "bundle", "outputs", "ranking", "maps", "probabilities", "progress", "environment",
          "runner_contract", "yaml_files"}
# upstream first; a stage may import from any stage before it
FLOORS = ["ground", "layers", "data", "models", "train", "runtimes", "export", "device", "measure", "compare",
          "commands", "cli"]


def stage_of(module: str) -> str:
    parts = module.split(".")
    assert parts[0] == "edgeproto", module
    head = parts[1] if len(parts) > 1 else "__init__"
    return "ground" if head in GROUND else head


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """``(imported edgeproto module, at module level?)`` for every import in the file."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    for node in tree.body:  # imports inside a module-level `if TYPE_CHECKING:` do not run
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            top.update(id(n) for n in node.body)
    out = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]  # resolved to the package when not a module
        for name in names:
            if name.split(".")[0] == "edgeproto":
                out.append((name, id(node) in top))
    return out


def graph() -> dict[str, list[tuple[str, bool]]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    edges: dict[str, list[tuple[str, bool]]] = {}
    for name, path in modules.items():
        resolved = []
        for target, top in imports(path):
            while target not in modules and "." in target:  # `from pkg import name` of a non-module name
                target = target.rsplit(".", 1)[0]
            if target in modules and target != name:
                resolved.append((target, top))
        edges[name] = resolved
    return edges


def test_every_stage_has_a_floor():
    stages = {stage_of(m) for m in graph()}
    assert stages <= set(FLOORS), f"stages without a floor: {sorted(stages - set(FLOORS))}"


def test_no_import_runs_back_up():
    rank = {s: i for i, s in enumerate(FLOORS)}
    upward = [f"{src} -> {dst}" for src, targets in graph().items() for dst, _ in targets
              if rank[stage_of(dst)] > rank[stage_of(src)]]
    assert upward == [], "imports that run back up the pipeline:\n" + "\n".join(sorted(set(upward)))


def test_no_import_loop():
    """No loop, counting every import (lazy ones inside functions too)."""
    edges = {m: {d for d, _ in ts} for m, ts in graph().items()}
    state: dict[str, int] = {}
    loops: list[str] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                loops.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert loops == [], "import loops:\n" + "\n".join(loops)


def test_a_runtime_is_one_folder_and_one_registry_entry():
    from edgeproto.runtimes import RUNTIMES

    folders = {p.name for p in (ROOT / "runtimes").iterdir() if p.is_dir() and (p / "runner.py").is_file()}
    assert folders == {spec.module for spec in RUNTIMES.values() if spec.module}
    for spec in RUNTIMES.values():
        if spec.module is None:  # the host-only PyTorch reference lives with the trainer
            assert spec.host_only and spec.runner.startswith("edgeproto.train.")
            continue
        assert (ROOT / "runtimes" / spec.module / "runner.py").is_file()
        if not spec.host_only:
            assert (ROOT / "runtimes" / spec.module / "compile.py").is_file(), spec.name
    # nothing outside the registry lists runtimes by name
    listing = []
    for path in ROOT.rglob("*.py"):
        text = path.read_text()
        if path.parent.name != "runtimes" and ('("onnxruntime", "openvino")' in text or "TARGETS = " in text):
            listing.append(str(path.relative_to(ROOT)))
    assert listing == [], f"runtime lists outside the registry: {listing}"


def stage_graph() -> Counter:
    counts: Counter = Counter()
    for src, targets in graph().items():
        for dst, _ in targets:
            if stage_of(src) != stage_of(dst):
                counts[(stage_of(src), stage_of(dst))] += 1
    return counts


if __name__ == "__main__":
    by_src: dict[str, list[str]] = defaultdict(list)
    for (src, dst), n in sorted(stage_graph().items(), key=lambda kv: (FLOORS.index(kv[0][0]), FLOORS.index(kv[0][1]))):
        by_src[src].append(f"{dst} ({n})")
    for stage in FLOORS:
        print(f"{stage:9s} -> {', '.join(by_src.get(stage, [])) or '(nothing)'}")


def test_runtimes_and_device_hold_no_torch_import():
    """The device side runs without torch: no module under runtimes/ or device/ imports it, even lazily."""
    offenders = []
    for stage in ("runtimes", "device"):
        for path in (ROOT / stage).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                if any(n == "torch" or n.startswith("torch.") for n in names):
                    offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
