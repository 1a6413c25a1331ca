"""``edgeproto export``: checkpoint → self-contained deployment bundle, checked in ONNX Runtime."""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
import torch

from edgeproto import __version__, atomic_files
from edgeproto.bundle import FORMAT, FORMAT_VERSION, MANIFEST, file_hashes, open_bundle, sha256_file
from edgeproto.errors import EdgeprotoError
from edgeproto.export.onnx_graph import INPUT_NAME, OPS_MODES, SUPPORTED_OPSETS, export_onnx, function_proto
from edgeproto.layers import ONNX_DOMAIN, family_for_op_type, get_family, prototype_nodes
from edgeproto.outputs import OUTPUTS, compare_golden
from edgeproto.ranking import RANK_BY, prototype_classes
from edgeproto.runtimes.onnxruntime.runner import OnnxRuntimeRunner
from edgeproto.train.checkpoint import WEIGHTS, load_checkpoint


def golden_inputs(config: dict, count: int) -> tuple[np.ndarray, list[int], list[int]]:
    """The first ``count`` images of the recipe's test split: inputs, dataset indices, labels."""
    from edgeproto.data import build_dataset

    dataset = build_dataset(config["recipe"]["data"], "test")
    n = min(count, len(dataset))
    if n == 0:
        raise EdgeprotoError("the recipe's test split is empty: no golden inputs")
    items = [dataset[i] for i in range(n)]
    return np.stack([np.asarray(x, dtype=np.float32) for x, _ in items]), list(range(n)), [int(y) for _, y in items]


def _metadata(config: dict, model: onnx.ModelProto) -> None:
    identity = [p["class"] for p in config["prototypes"]] or [
        i // config["model"]["prototypes"]["per_class"]
        for i in range(config["model"]["prototypes"]["per_class"] * config["model"]["num_classes"])
    ]
    props = {
        "edgeproto_version": __version__,
        "classes": json.dumps(config["classes"]),
        "prototype_classes": json.dumps(identity),
        "input_size": json.dumps([3, config["image_size"], config["image_size"]]),
        "normalization": json.dumps({"mean": config["mean"], "std": config["std"]}),
        "prototype_family": config["model"]["prototypes"]["family"],
    }
    onnx.helper.set_model_props(model, props)
    model.producer_name, model.producer_version = "edgeproto", __version__


def _runnable(model: onnx.ModelProto, ops: str, opset: int) -> bytes:
    """Bytes ONNX Runtime can run: plugin graphs get their function bodies back for the check."""
    if ops != "plugin":
        return model.SerializeToString()
    check = onnx.ModelProto()
    check.CopyFrom(model)
    for op_type in sorted({n.op_type for n in prototype_nodes(check)}):
        check.functions.append(function_proto(family_for_op_type(op_type), opset))
    for node in prototype_nodes(check):
        keep = [a for a in node.attribute if a.name not in ("plugin_namespace", "plugin_version")]
        del node.attribute[:]
        node.attribute.extend(keep)
    return check.SerializeToString()


def check_tolerances(atol, rtol) -> None:
    """--atol / --rtol: finite and non-negative (checked before the checkpoint is loaded)."""
    for name, value in (("atol", atol), ("rtol", rtol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
            raise EdgeprotoError(f"--{name} must be a finite number ≥ 0, got {value!r}")


def _is_bundle(path: Path) -> bool:
    """A directory or zip that holds an edgeproto bundle manifest (what --force may replace)."""
    if path.is_symlink():
        return False
    try:
        if path.is_dir():
            manifest = json.loads((path / MANIFEST).read_text())
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                if zf.getinfo(MANIFEST).file_size > (64 << 20):
                    return False
                manifest = json.loads(zf.read(MANIFEST))
        else:
            return False
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


def export_bundle(
    checkpoint: str | Path,
    out: str | Path,
    *,
    ops: str = "function",
    opset: int = 18,
    golden: int = 16,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    force: bool = False,
    as_zip: bool = False,
    analysis_images: int | None = 0,
    status=None,
) -> dict:
    """Write the bundle for ``checkpoint`` at ``out`` (or ``out`` as one ``.zip``); return the manifest.

    The bundle is assembled under a temporary name and renamed only after ONNX Runtime reproduced
    the PyTorch outputs on the golden inputs within ``atol + rtol·|ref|`` with the same top-1
    prototype; otherwise nothing is left behind and an ``EdgeprotoError`` gives the differences.
    ``status(text)``, when given, is told each step (the CLI shows it on stderr).
    ``analysis_images``: training images analysed for the on-device extras
    (:mod:`edgeproto.export.analysis`: prototype source images, nearest-patch gallery, global
    "because" importances); 0 skips them, None analyses the whole train split.
    """
    status = status or (lambda text: None)
    out = Path(out)
    target = out.with_name(out.name + ".zip") if as_zip and out.suffix != ".zip" else out
    check_tolerances(atol, rtol)
    atomic_files.check_output(target, {"checkpoint": checkpoint}, "-o/--out")
    if target.exists() or target.is_symlink():
        if not force:
            raise EdgeprotoError(f"{target} exists; pass --force to replace it")
        if not _is_bundle(target):
            raise EdgeprotoError(f"{target} exists and is not an edgeproto bundle; --force only replaces a "
                                 "previous export: remove it yourself or choose another -o")
    if ops not in OPS_MODES:
        raise EdgeprotoError(f"--ops must be one of {', '.join(OPS_MODES)}")
    if opset not in SUPPORTED_OPSETS:
        raise EdgeprotoError(f"opset {opset} is not supported (supported: {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1})")
    if golden < 1:
        raise EdgeprotoError("--golden must be at least 1")
    if analysis_images is not None and (isinstance(analysis_images, bool) or not isinstance(analysis_images, int)
                                        or analysis_images < 0):
        raise EdgeprotoError(f"--analysis-images must be an integer >= 0 or 'all', got {analysis_images!r}")
    checkpoint = Path(checkpoint)
    status("loading the checkpoint")
    model, config = load_checkpoint(checkpoint)
    family = get_family(config["model"]["prototypes"]["family"])
    status(f"PyTorch reference outputs on {golden} golden images")
    inputs, ids, labels = golden_inputs(config, golden)
    with torch.no_grad():
        reference = {k: v.numpy() for k, v in model(torch.from_numpy(inputs)).items()}
    last_layer = model.class_weights().numpy().astype(np.float32)

    args = (checkpoint, config, model, family, inputs, ids, labels, reference, last_layer, ops, opset, atol, rtol,
            analysis_images, status)
    if not as_zip:
        with atomic_files.staged_path(out) as stage:
            return _assemble(stage, *args)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = _assemble(Path(tmp) / "bundle", *args)
        with atomic_files.staged_path(target) as zpath:
            with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
                for p in sorted((Path(tmp) / "bundle").rglob("*")):
                    if p.is_file():
                        zf.write(p, p.relative_to(Path(tmp) / "bundle").as_posix())
    return manifest


def _assemble(stage, checkpoint, config, model, family, inputs, ids, labels, reference, last_layer,
              ops, opset, atol, rtol, analysis_images, status) -> dict:
    """Write every bundle file into the empty directory ``stage`` and return the manifest."""
    stage.mkdir()
    status(f"exporting to ONNX (opset {opset}, ops={ops})")
    onnx_model = export_onnx(model, torch.from_numpy(inputs[:2]), stage / "model.onnx", ops=ops, opset=opset)
    _metadata(config, onnx_model)
    atomic_files.write_bytes(stage / "model.onnx", onnx_model.SerializeToString())

    status("checking the ONNX model in ONNX Runtime against PyTorch")
    check_runner = OnnxRuntimeRunner(_runnable(onnx_model, ops, opset))
    actual = check_runner.run(inputs)
    compared = compare_golden(reference, actual, prototype_classes(config["prototypes"]), atol=atol, rtol=rtol)
    diffs, agreement = compared["diffs"], compared["top1_prototype_agreement"]
    ok = all(d["within_tolerance"] for d in diffs.values())
    check = {"runtime": "onnxruntime", **compared, "passed": ok and agreement == 1.0}
    if not check["passed"]:
        worst = ", ".join(f"{n}: max_abs={d['max_abs']:.3g} max_rel={d['max_rel']:.3g}" for n, d in diffs.items())
        raise EdgeprotoError(
            f"exported model does not reproduce PyTorch within atol={atol} rtol={rtol} "
            f"({worst}; top-1 prototype agreement {agreement:.3f}); no bundle written"
        )

    status("writing the bundle")
    (stage / "prototypes").mkdir()
    for rec in config["prototypes"]:
        if not rec.get("patch_png"):  # a prototype whose class had no training image has no patch
            continue
        shutil.copyfile(checkpoint / rec["patch_png"], stage / rec["patch_png"])
    (stage / "explain").mkdir()
    (stage / "golden").mkdir()
    np.save(stage / "explain" / "last_layer.npy", last_layer)
    golden_files = {"image": "golden/image.npy", **{n: f"golden/{n}.npy" for n in OUTPUTS}}
    np.save(stage / golden_files["image"], inputs)
    for n in OUTPUTS:
        np.save(stage / golden_files[n], reference[n])

    extras = {}
    if analysis_images != 0:
        from edgeproto.export.analysis import analyse

        extras = analyse(stage, config, check_runner.run, images=analysis_images, status=status)
    prototypes = [dict(rec, **({"source_png": extras["sources"][j]} if j in extras.get("sources", {}) else {}))
                  for j, rec in enumerate(config["prototypes"])]

    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "edgeproto_version": __version__,
        "source": {"checkpoint": str(checkpoint.resolve()), "recipe": config["recipe"]["name"],
                   "weights_sha256": sha256_file(checkpoint / WEIGHTS)},
        "model": {"file": "model.onnx", "ops": ops, "opset": opset, "domain": ONNX_DOMAIN,
                  "family": family.name, "op_type": family.op_type, "formula": family.summary,
                  "head": getattr(model, "head", "linear"),
                  "head_op_type": "TverskySimilarity" if getattr(model, "head", "linear") == "tversky" else None},
        "inputs": [{"name": INPUT_NAME, "shape": ["batch", int(inputs.shape[1]), config["image_size"], config["image_size"]],
                    "dtype": "float32"}],
        "outputs": [{"name": n, "shape": list(("batch",) + reference[n].shape[1:]), "dtype": "float32"}
                    for n in OUTPUTS],
        "preprocess": {"image_size": config["image_size"], "mode": "RGB", "resize": "bilinear",
                       "scale": 1 / 255, "mean": config["mean"], "std": config["std"]},
        "classes": config["classes"],
        # segmentation: logits are per pixel (B,C,S,S) and the classes are pixel classes;
        # multilabel (arch patchct): one independent sigmoid logit per label, maps = transport plans
        "task": getattr(model, "task", None)
        or ("segmentation" if reference["logits"].ndim == 4 else "classification"),
        "data": config["recipe"]["data"],
        "part_names": config.get("part_names", []),
        "prototypes": prototypes,
        "explain": {"last_layer": "explain/last_layer.npy", "rank_by": RANK_BY,
                    **{key: extras[key] for key in ("because", "gallery") if key in extras}},
        "golden": {"files": golden_files, "dataset_split": "test", "dataset_indices": ids, "labels": labels},
        "export_check": check,
        "compiled": {},
    }
    manifest["files"] = file_hashes(stage)
    atomic_files.write_text(stage / MANIFEST, json.dumps(manifest, indent=2))
    open_bundle(stage)  # the bundle verifies before it is published
    return manifest
