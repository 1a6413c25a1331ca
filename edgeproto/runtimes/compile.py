"""``edgeproto compile``: a bundle's ONNX model → a runtime-specific artifact inside the bundle.

``compile_bundle(bundle, target=..., precision=..., guard=...)`` writes ``compiled/<key>/`` (key =
:func:`edgeproto.runtimes.artifact_key`) and records it in ``manifest["compiled"][key]``; the
manifest's sha256 list is updated so the bundle still passes :func:`edgeproto.bundle.open_bundle`.

Targets and precisions:

- ``onnxruntime``: ``fp32`` (ONNX Runtime's hardware-independent "basic" graph optimisations,
  saved offline: standard ops only, runs on any execution provider), ``fp16`` (float16 weights and
  activations, ``keep_io_types``), ``int8`` (static QDQ quantization, per-channel weights,
  calibrated on the recipe's train split).
- ``openvino``: ``fp32`` / ``bf16`` / ``fp16`` (one fp32 IR, ``compress_to_fp16=False``; the
  precision is OpenVINO's *inference-precision hint* recorded in the manifest and handed to the
  runner), ``int8`` (NNCF post-training quantization, calibrated on the train split).

The explanation guard (``guard="prototypes"``, the default) keeps the prototype subgraph in fp32:
the activation that feeds the prototype layer (the add-on Sigmoid), the prototype layer itself,
the max-pool to scores and the last layer. Only the backbone and add-on convolutions are reduced.
``guard="none"`` reduces everything the runtime's tool is willing to (ONNX Runtime: the prototype
function is inlined first so its body is quantized/converted too). Measured on the procedural
recipes: quantizing the prototype math changes which prototype explains a prediction far more
often than quantizing the backbone alone.

Atomicity: the artifact is built and checked (it must load and run the golden inputs) in a
staging directory beside the bundle, renamed into ``compiled/<key>/``, and the manifest is
rewritten last (atomically); any failure restores the previous artifact and manifest, so an
error never leaves a half-written bundle.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edgeproto import atomic_files
from edgeproto.bundle import MANIFEST, Bundle, open_bundle, sha256_file
from edgeproto.errors import EdgeprotoError
from edgeproto.outputs import OUTPUTS, check_shapes, compare_golden, golden_passed, golden_tolerance, run_outputs
from edgeproto.progress import progress_bar
from edgeproto.runtimes.registry import RUNTIMES, RuntimeSpec, artifact_key, check_guard, get_runtime

__all__ = ["CalibrationImages", "compile_bundle", "golden_check"]

CALIBRATION_SEED = 0


# --------------------------------------------------------------------------- calibration data


class CalibrationImages:
    """``n`` images of the recipe's train split, each a (1,3,S,S) float32 array, read lazily.

    Re-iterable (NNCF walks the data more than once) and sized. The images are a seeded random
    sample (seed 0) of the split, in dataset order, so a split sorted by class is still covered.
    """

    def __init__(self, data_config: dict, n: int, *, progress: bool = True, label: str = "calibration") -> None:
        from edgeproto.data import build_dataset

        try:
            self.dataset = build_dataset(data_config, "train")
        except EdgeprotoError:
            raise
        except Exception as exc:  # a dataset that cannot be opened (files moved, ...)
            raise EdgeprotoError(f"cannot open the recipe's train split for calibration: {exc}") from None
        total = len(self.dataset)
        if total == 0:
            raise EdgeprotoError("the recipe's train split is empty: no calibration images for int8")
        self.requested = int(n)
        n = min(int(n), total)
        rng = np.random.default_rng(CALIBRATION_SEED)
        self.indices = sorted(int(i) for i in rng.choice(total, size=n, replace=False))
        self.progress = progress
        self.label = label

    def __len__(self) -> int:
        return len(self.indices)

    def image(self, index: int) -> np.ndarray:
        x = self.dataset[index][0]
        x = x.numpy() if hasattr(x, "numpy") else np.asarray(x)
        return np.ascontiguousarray(x, dtype=np.float32)[None]

    def __iter__(self):
        with progress_bar(self.progress, self.label, len(self)) as advance:
            for i in self.indices:
                yield self.image(i)
                advance()

    def quiet(self) -> "_Quiet":
        """The same images without a progress bar (for tools that draw their own)."""
        return _Quiet(self)

    note: str | None = None

    def record(self) -> dict:
        rec = {"images": len(self), "requested": self.requested, "split": "train",
               "selection": f"seeded random sample (seed {CALIBRATION_SEED})"}
        if self.note:
            rec["note"] = self.note
        return rec


class _Quiet:
    def __init__(self, images: CalibrationImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self):
        for i in self.images.indices:
            yield self.images.image(i)


# --------------------------------------------------------------------------- checks


def with_data_root(data: dict, data_root: str | Path | None) -> dict:
    """The manifest's dataset config, with ``root`` replaced by ``data_root`` when given."""
    data = dict(data)
    if data_root is not None:
        if "root" not in data:
            raise EdgeprotoError(f"--data-root: the bundle's dataset ({data.get('name')!r}) reads no image folder")
        data["root"] = str(Path(data_root).expanduser().resolve())
    return data


def _check_request(target: str, precision: str, guard: str, calib, ops: str = "inline") -> RuntimeSpec:
    spec = get_runtime(target)
    compilable = [n for n, r in RUNTIMES.items() if not r.host_only and r.artifacts_of is None]
    if spec.artifacts_of is not None:
        raise EdgeprotoError(f"{target!r} runs the artifacts of {spec.artifacts_of!r}: compile with "
                             f"--target {spec.artifacts_of}")
    if spec.host_only:
        raise EdgeprotoError(f"edgeproto cannot compile for {target!r} (compilable: {', '.join(compilable)})")
    spec.check_precision(precision)
    check_guard(guard)
    if ops not in spec.ops:
        with_ops = [n for n, r in RUNTIMES.items() if ops in r.ops]
        raise EdgeprotoError(f"--ops {ops}: {target} writes its prototype ops as {', '.join(spec.ops)} "
                             f"(--ops {ops} is for {', '.join(with_ops) or 'no target'})")
    if isinstance(calib, bool) or not isinstance(calib, (int, np.integer)) or calib < 1:
        raise EdgeprotoError(f"calib must be a whole number of images, at least 1 (got {calib!r})")
    spec.require(precision, compiling=True)
    return spec


def _open(bundle_path) -> Bundle:
    root = Path(bundle_path)
    if root.suffix == ".zip" and root.is_file():
        raise EdgeprotoError(f"{root} is a zipped bundle: extract it and compile the directory")
    bundle = open_bundle(root)  # raises on a missing / corrupt / tampered bundle or manifest
    if "data" not in bundle.manifest:  # the one entry compile needs beyond what open_bundle checks
        raise EdgeprotoError(f"bundle {root}: manifest has no 'data' entry (corrupt or too old)")
    return bundle


def golden_check(bundle: Bundle, runner, precision: str = "fp32") -> dict:
    """The golden inputs through ``runner`` against the stored PyTorch outputs (:func:`compare_golden`)."""
    golden = bundle.golden()
    out = run_outputs(runner, golden["image"])
    check_shapes(golden, out, "the compiled model's", "the golden reference")
    tol = golden_tolerance(precision)
    check = compare_golden({k: golden[k] for k in OUTPUTS}, out, bundle.prototype_classes(), atol=tol["atol"], rtol=tol["rtol"])
    check["min_agreement"] = tol["min_agreement"]
    check["min_class_agreement"] = tol["min_class_agreement"]
    check["elementwise_gated"] = tol["elementwise"]
    check["passed"] = golden_passed(check, tol)
    check["max_abs"] = {n: (d["max_abs"] if np.isfinite(d["max_abs"]) else None) for n, d in check["diffs"].items()}
    return check


# --------------------------------------------------------------------------- install


def _staging_parent(root: Path) -> Path:
    """Where to build: beside the bundle (same filesystem, invisible to its integrity check);
    inside it only when the parent is not writable or is another filesystem."""
    parent = root.resolve().parent
    try:
        if os.access(parent, os.W_OK) and parent.stat().st_dev == root.stat().st_dev:
            return parent
    except OSError:
        pass
    return root


def _install(bundle: Bundle, key: str, built: Path, entry: dict) -> dict:
    """Move ``built`` to ``compiled/<key>`` and rewrite the manifest; restore everything on failure."""
    root = bundle.root
    compiled = root / "compiled"
    dest = compiled / key
    manifest_path = root / MANIFEST
    old_text = manifest_path.read_text()
    # re-read: another compile may have finished since we opened the bundle
    manifest = json.loads(old_text)
    prefix = f"compiled/{key}/"
    files = {k: v for k, v in manifest.get("files", {}).items() if not k.startswith(prefix)}
    new_files = {
        (Path("compiled") / key / p.relative_to(built)).as_posix(): sha256_file(p)
        for p in sorted(built.rglob("*")) if p.is_file()
    }
    entry["files"] = sorted(new_files)
    files.update(new_files)
    manifest["files"] = dict(sorted(files.items()))
    manifest.setdefault("compiled", {})[key] = entry

    made_compiled = not compiled.exists()
    old = built.parent / "previous"
    moved_old = moved_new = False
    try:
        compiled.mkdir(exist_ok=True)
        if dest.exists():
            os.replace(dest, old)
            moved_old = True
        os.replace(built, dest)
        moved_new = True
        atomic_files.write_text(manifest_path, json.dumps(manifest, indent=2))
        open_bundle(root)
    except (OSError, EdgeprotoError) as exc:
        with contextlib.suppress(OSError, EdgeprotoError):
            atomic_files.write_text(manifest_path, old_text)
        if moved_new:
            shutil.rmtree(dest, ignore_errors=True)
        if moved_old:
            with contextlib.suppress(OSError):
                os.replace(old, dest)
        if made_compiled:
            with contextlib.suppress(OSError):
                compiled.rmdir()
        if isinstance(exc, EdgeprotoError):
            raise EdgeprotoError(f"compiled artifact not installed, bundle left as it was: {exc}") from None
        raise EdgeprotoError(f"cannot write {dest}: {exc.strerror or exc}") from None
    return entry


# --------------------------------------------------------------------------- entry point


def compile_bundle(
    bundle_path: str | Path,
    *,
    target: str,
    precision: str = "fp32",
    guard: str = "prototypes",
    calib: int = 64,
    device: str | None = None,
    progress: bool = True,
    force: bool = False,
    data_root: str | Path | None = None,
    ops: str = "inline",
) -> dict:
    """Compile the bundle's model for ``target`` at ``precision``; return the manifest entry.

    ``ops``: how the prototype ops are written, for runtimes that offer a choice (TensorRT:
    ``inline`` standard ops, or ``plugin`` nodes run by edgeproto's TensorRT plugins). One artifact
    per (target, precision, guard): compiling the other form replaces it (``force``).

    An artifact that is already there is refused unless ``force`` (then it is rebuilt and replaced).
    ``data_root``: where the recipe's image folder is now (int8 calibration), when not where the
    manifest says.

    ``guard="prototypes"`` keeps the prototype subgraph fp32 (see the module docstring);
    ``calib``: how many train-split images calibrate int8; ``device``: where the compiled
    artifact is test-run on the golden inputs (the runtime's default when None). Re-compiling
    the same (target, precision, guard) replaces the artifact. Raises ``EdgeprotoError`` (and
    leaves the bundle unchanged) on a bad request, a missing runtime, a corrupt bundle, an
    empty train split, or an artifact that does not run.
    """
    spec = _check_request(target, precision, guard, calib, ops)
    bundle = _open(bundle_path)
    key = artifact_key(target, precision, guard)
    if key in bundle.manifest.get("compiled", {}) and not force:
        raise EdgeprotoError(f"{bundle.root} already holds a compiled {key} artifact; pass --force to rebuild it")
    if not os.access(bundle.root, os.W_OK) or not os.access(bundle.root / MANIFEST, os.W_OK):
        raise EdgeprotoError(f"bundle {bundle.root} is read-only: compiling writes compiled/{key}/ and the "
                             "manifest into it; copy the bundle somewhere writable")
    calibration = None
    if precision == "int8":
        calibration = CalibrationImages(with_data_root(bundle.manifest["data"], data_root), int(calib),
                                        progress=progress)
        if len(calibration) < int(calib):
            calibration.note = (f"--calib {calib} asked for more images than the train split holds: "
                                f"calibrated on all {len(calibration)}")

    backend = spec.compiler()
    try:
        stage = Path(tempfile.mkdtemp(prefix=f".{bundle.root.name}.compile-{key}.",
                                      dir=_staging_parent(bundle.root)))
    except OSError as exc:
        raise EdgeprotoError(f"cannot compile {bundle.root} ({key}): no writable staging place beside or in "
                             f"the bundle ({exc.strerror or exc})") from None
    try:
        built = stage / key
        built.mkdir()
        entry = {"target": target, "precision": precision, "guard": guard}
        options = {"ops": ops} if len(spec.ops) > 1 else {}
        entry.update(backend.build(bundle, built, precision=precision, guard=guard, calibration=calibration,
                                   progress=progress, **options))
        if calibration is not None:
            entry["calibration"] = calibration.record()
        checker = get_runtime(spec.check_with) if spec.check_with else spec
        runner = checker.runner_class()(built / Path(entry["model"]).name,
                                        precision=entry.get("inference_precision", precision), device=device)
        entry["check"] = golden_check(bundle, runner, precision)
        entry["runtime"] = {"name": runner.name, "version": runner.version, "device": runner.device}
        runner.close()
        del runner
        entry["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return _install(bundle, key, built, entry)
    except OSError as exc:
        raise EdgeprotoError(f"cannot compile {bundle.root} ({key}): {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
