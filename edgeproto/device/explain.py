"""On-device explanations: "this part of the image looks like *that* prototype".

numpy + Pillow + a runtime only -- never torch -- because this runs on the device. An explanation is
the predicted class and its top-k prototypes: the predicted class's own prototypes by similarity,
then the others (:mod:`edgeproto.ranking`, shift-invariant), each with its similarity map upsampled to the input size the way
ProtoPNet does it (bicubic, then the ≥95th-percentile box) and its source patch from the bundle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeproto.bundle import Bundle, open_bundle
from edgeproto.data.preprocess import load_image, to_input
from edgeproto.errors import EdgeprotoError
from edgeproto.maps import high_activation_box, upsample_map
from edgeproto.outputs import run_outputs
from edgeproto.ranking import contributions, top_prototypes

def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max())
    return z / z.sum()


def as_bundle(bundle: Bundle | str | Path) -> Bundle:
    """An opened :class:`Bundle` (paths are opened with the integrity check)."""
    return bundle if isinstance(bundle, Bundle) else open_bundle(bundle)


def explain_image(
    bundle: Bundle | str | Path,
    image_path: str | Path,
    *,
    target: str = "onnxruntime",
    precision: str = "fp32",
    guard: str = "prototypes",
    device: str | None = None,
    k: int = 3,
    threads: int = 0,
) -> dict:
    """Explain the bundle's prediction for one image file on ``target``; a JSON-able dict.

    The image is read as RGB (grey, RGBA, palette… are converted) and resized to the model's input
    size when needed (``resized_from`` then records its original [width, height]). Pixel positions
    (``argmax``, ``box``) are in model-input pixels (``input_size`` × ``input_size``); ``map`` is the
    prototype's raw (H, W) similarity map, from which :func:`upsample_map` rebuilds the heatmap.
    """
    from edgeproto.runtimes import load_runner

    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise EdgeprotoError(f"k must be a positive integer, got {k!r}")
    bundle = as_bundle(bundle)
    pre = bundle.manifest["preprocess"]
    size = int(pre["image_size"])
    img = load_image(image_path)
    x = to_input(img, size, pre["mean"], pre["std"])[None]

    runner = load_runner(bundle, target, precision, guard, device, threads)
    out = run_outputs(runner, x, target)
    info = runner.info()
    runner.close()
    logits, scores, maps = out["logits"], out["scores"], out["maps"]
    if not all(np.isfinite(a).all() for a in (logits, scores, maps)):
        raise EdgeprotoError(
            f"{target} ({info['precision']}) produced non-finite outputs: this artifact cannot explain "
            "(a quantized prototype layer does this; keep it in fp32)"
        )
    last = bundle.last_layer()
    pred = int(logits[0].argmax())
    probs = _softmax(logits[0])
    contrib = contributions(logits, scores, last)[0]
    classes = bundle.classes
    protos = bundle.prototypes

    top = []
    for rank, j in enumerate(top_prototypes(logits, scores, bundle.prototype_classes(), int(k))[0].tolist(), start=1):
        up = upsample_map(maps[0, j], size)
        ay, ax = np.unravel_index(int(up.argmax()), up.shape)
        ly, lx = np.unravel_index(int(maps[0, j].argmax()), maps[0, j].shape)
        rec = protos[j] if j < len(protos) else {}
        cls = int(rec.get("class", -1))
        top.append({
            "rank": rank,
            "prototype": int(j),
            "class": cls,
            "class_name": rec.get("class_name", classes[cls] if 0 <= cls < len(classes) else str(cls)),
            "score": float(scores[0, j]),
            "weight": float(last[pred, j]),
            "contribution": float(contrib[j]),
            "argmax": [int(ax), int(ay)],
            "latent_argmax": [int(ly), int(lx)],
            "box": high_activation_box(up, 95.0),
            "patch_png": rec.get("patch_png"),
            "source_image": rec.get("source_image"),
            "merged": list(rec.get("merged", [])),
            "patch_box": rec.get("patch_box"),
            "map": np.asarray(maps[0, j], dtype=np.float64).round(6).tolist(),
        })

    result = {
        "image": str(image_path),
        "image_size": list(img.size),
        "input_size": size,
        "bundle": str(bundle.root),
        "runtime": {"target": target, **info},
        "prediction": {"class": pred, "class_name": classes[pred], "probability": float(probs[pred])},
        "classes": list(classes),
        "probabilities": [float(p) for p in probs],
        "logits": [float(v) for v in logits[0]],
        "k": len(top),
        "top_prototypes": top,
        "rank_by": bundle.manifest.get("explain", {}).get("rank_by"),
        "merged_prototypes": sum(1 for p in protos if p.get("merged_into") is not None),
    }
    if tuple(img.size) != (size, size):
        result["resized_from"] = list(img.size)
    if img.info.get("edgeproto_scaled"):
        result["input_note"] = img.info["edgeproto_scaled"]
    return result
