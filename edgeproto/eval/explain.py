"""On-device explanations: "this part of the image looks like *that* prototype".

numpy + Pillow + a runtime only -- never torch -- because this runs on the device. An explanation is
the predicted class and the top-k prototypes by ``score × class weight`` for that class
(:mod:`edgeproto.eval.explanations`), each with its similarity map upsampled to the input size the way
ProtoPNet does it (bicubic, then the ≥95th-percentile box) and its source patch from the bundle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeproto.bundle import Bundle, open_bundle
from edgeproto.data.preprocess import load_image, to_input
from edgeproto.errors import EdgeprotoError
from edgeproto.eval.explanations import contributions, top_prototypes

_CUBIC_A = -0.75  # PyTorch's bicubic kernel (F.interpolate mode="bicubic"), which push uses


def _cubic_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of 1-D bicubic interpolation, align_corners=False, border replicated.

    The same arithmetic as PyTorch's ``upsample_bicubic2d`` (A = -0.75; source index
    ``(dst + 0.5)·in/out − 0.5``; the four taps clamped to the edge), so boxes match push's.
    """
    a = _CUBIC_A
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    base = np.floor(src)
    t = src - base
    cc1 = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1  # noqa: E731  |x| <= 1
    cc2 = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a  # noqa: E731  1 < |x| < 2
    coeffs = np.stack([cc2(t + 1), cc1(t), cc1(1 - t), cc2(2 - t)], axis=1)  # (n_out, 4)
    w = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    for tap in range(4):
        cols = np.clip(base.astype(np.int64) - 1 + tap, 0, n_in - 1)
        np.add.at(w, (rows, cols), coeffs[:, tap])
    return w


def upsample_map(map2d: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bicubic upsampling of one (H, W) similarity map to ``size`` (an int, or (width, height)).

    float64 (height, width); matches ``F.interpolate(mode="bicubic", align_corners=False)``.
    """
    m = np.asarray(map2d, dtype=np.float64)
    if m.ndim != 2 or m.size == 0:
        raise EdgeprotoError(f"expected a non-empty (H, W) map, got shape {m.shape}")
    width, height = (size, size) if np.isscalar(size) else size
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise EdgeprotoError(f"upsample size must be positive, got {size!r}")
    return _cubic_weights(m.shape[0], height) @ m @ _cubic_weights(m.shape[1], width).T


def high_activation_box(up: np.ndarray, percentile: float = 95.0) -> list[int]:
    """ProtoPNet's high-activation box: ``[x0, y0, x1, y1]`` (x1, y1 exclusive) around the pixels of
    the upsampled map ``up`` (H, W) at or above its ``percentile``."""
    up = np.asarray(up, dtype=np.float64)
    if up.ndim != 2 or up.size == 0 or not np.isfinite(up).all():
        raise EdgeprotoError(f"expected a finite, non-empty (H, W) map, got shape {up.shape}")
    ys, xs = np.nonzero(up >= np.percentile(up, percentile))
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max())
    return z / z.sum()


def as_bundle(bundle: Bundle | str | Path) -> Bundle:
    """An opened :class:`Bundle` (paths are opened with the integrity check)."""
    return bundle if isinstance(bundle, Bundle) else open_bundle(bundle)


def runtime_info(runner, target: str) -> dict:
    """What the runner reports about itself (name, version, precision, device)."""
    return {"target": target, "name": getattr(runner, "name", target), "version": str(getattr(runner, "version", "")),
            "precision": str(runner.precision), "device": str(runner.device)}


def run_model(runner, images: np.ndarray, target: str) -> dict[str, np.ndarray]:
    """``runner.run`` with the runtime's own exceptions turned into one clear EdgeprotoError."""
    try:
        out = runner.run(np.ascontiguousarray(images, dtype=np.float32))
    except EdgeprotoError:
        raise
    except Exception as exc:  # each runtime raises its own exception types
        raise EdgeprotoError(f"{target} failed to run the model: {exc}") from None
    missing = [n for n in ("logits", "scores", "maps") if n not in out]
    if missing:
        raise EdgeprotoError(f"the {target} model has no output(s) {', '.join(missing)} (explanation contract)")
    return {k: np.asarray(v) for k, v in out.items()}


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
    out = run_model(runner, x, target)
    logits, scores, maps = out["logits"], out["scores"], out["maps"]
    if not all(np.isfinite(a).all() for a in (logits, scores, maps)):
        raise EdgeprotoError(
            f"{target} ({runner.precision}) produced non-finite outputs: this artifact cannot explain "
            "(a quantized prototype layer does this; keep it in fp32)"
        )
    last = bundle.last_layer()
    pred = int(logits[0].argmax())
    probs = _softmax(logits[0])
    contrib = contributions(logits, scores, last)[0]
    classes = bundle.classes
    protos = bundle.prototypes

    top = []
    for rank, j in enumerate(top_prototypes(logits, scores, last, int(k))[0].tolist(), start=1):
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
            "patch_box": rec.get("patch_box"),
            "map": np.asarray(maps[0, j], dtype=np.float64).round(6).tolist(),
        })

    result = {
        "image": str(image_path),
        "image_size": list(img.size),
        "input_size": size,
        "bundle": str(bundle.root),
        "runtime": runtime_info(runner, target),
        "prediction": {"class": pred, "class_name": classes[pred], "probability": float(probs[pred])},
        "classes": list(classes),
        "probabilities": [float(p) for p in probs],
        "logits": [float(v) for v in logits[0]],
        "k": len(top),
        "top_prototypes": top,
    }
    if tuple(img.size) != (size, size):
        result["resized_from"] = list(img.size)
    return result
