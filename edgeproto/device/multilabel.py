"""On-device explanations of a multi-label prediction (arch patchct): the predicted label set with
each label's probability and, per predicted label, its transport map over the image -- where the
label embedding sends its mass (:mod:`edgeproto.models.patchct`) -- with the map's peak (the pixel
the pointing game checks) and the training patch that pictures the label embedding.

A label is predicted when its probability (sigmoid of its logit) is ≥ 0.5; when none is, the most
probable label is shown, marked as not predicted. numpy + Pillow + matplotlib + a runtime only --
never torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from edgeproto import atomic_files
from edgeproto.bundle import Bundle
from edgeproto.data.label_sets import THRESHOLD, label_prototypes, sigmoid
from edgeproto.data.preprocess import load_image, to_input, to_raw
from edgeproto.device.explain import as_bundle
from edgeproto.errors import EdgeprotoError
from edgeproto.maps import high_activation_box, map_peak, upsample_map
from edgeproto.outputs import run_outputs


def explain_multilabel(bundle: Bundle | str | Path, image_path: str | Path, *, target: str = "onnxruntime",
                       precision: str = "fp32", guard: str = "prototypes", device: str | None = None,
                       threads: int = 0) -> dict:
    """Classify one image file on ``target`` and explain every predicted label; a JSON-able dict.
    Pixel positions (``peak`` (x, y), ``box``) are in model-input pixels; ``map`` is the label's raw
    (h, w) transport plan."""
    from edgeproto.runtimes import load_runner

    bundle = as_bundle(bundle)
    if bundle.manifest.get("task") != "multilabel":
        raise EdgeprotoError(f"bundle {bundle.root} is not a multi-label model")
    pre = bundle.manifest["preprocess"]
    size = int(pre["image_size"])
    img = load_image(image_path)
    x = to_input(img, size, pre["mean"], pre["std"])[None]
    runner = load_runner(bundle, target, precision, guard, device, threads)
    out = run_outputs(runner, x, target)
    info = runner.info()
    runner.close()
    if not all(np.isfinite(out[k]).all() for k in ("logits", "scores", "maps")):
        raise EdgeprotoError(f"{target} ({info['precision']}) produced non-finite outputs: this artifact cannot explain")
    labels, protos = list(bundle.classes), bundle.prototypes
    prob = sigmoid(out["logits"][0])
    chosen = label_prototypes(out["scores"], bundle.prototype_classes(), len(labels))[0]
    shown = [c for c in np.argsort(-prob) if prob[c] >= THRESHOLD] or [int(np.argmax(prob))]
    explained = []
    for c in shown:
        j = int(chosen[c])
        if j < 0:
            continue
        plan = out["maps"][0, j]
        y, x_ = map_peak(plan, size)
        rec = protos[j] if j < len(protos) else {}
        explained.append({"label": int(c), "label_name": labels[c], "probability": float(prob[c]),
                          "predicted": bool(prob[c] >= THRESHOLD), "prototype": j,
                          "score": float(out["scores"][0, j]), "peak": [x_, y],
                          "box": high_activation_box(upsample_map(plan, size), 95.0),
                          "patch_png": rec.get("patch_png"), "source_png": rec.get("source_png"),
                          "source_image": rec.get("source_image"), "patch_box": rec.get("patch_box"),
                          "map": np.round(plan, 8).tolist()})
    result = {"image": str(image_path), "image_size": list(img.size), "input_size": size, "bundle": str(bundle.root),
              "runtime": {"target": target, **info}, "threshold": THRESHOLD,
              "predicted_labels": [labels[c] for c in range(len(labels)) if prob[c] >= THRESHOLD],
              "probabilities": {labels[c]: float(prob[c]) for c in range(len(labels))},
              "labels": explained}
    if tuple(img.size) != (size, size):
        result["resized_from"] = list(img.size)
    return result


def render_multilabel(bundle: Bundle | str | Path, image_path: str | Path, explanation: dict,
                      out_png: str | Path) -> Path:
    """The figure: [input] [label probabilities, the threshold marked] on top, then one row per shown
    label: [its transport map over the image, the peak marked with a cross] [the label embedding's
    closest training patch] [text]. Written atomically."""
    from matplotlib.figure import Figure

    from edgeproto.device.figure import display_size, figure_bytes, heatmap_overlay, source_panel

    bundle = as_bundle(bundle)
    size = int(explanation["input_size"])
    side = display_size(size)
    raw = to_raw(load_image(image_path), size)
    big = np.asarray(Image.fromarray(raw).resize((side, side), Image.Resampling.BICUBIC))
    rows = explanation["labels"]
    fig = Figure(figsize=(11.0, 3.4 * (1 + len(rows))), dpi=100)
    axes = fig.subplots(1 + len(rows), 3, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    rt = explanation["runtime"]
    predicted = explanation["predicted_labels"]
    fig.suptitle(f"Multi-label by {rt.get('target')} ({rt.get('precision')}): "
                 f"{', '.join(predicted) if predicted else 'no label'}", fontsize=13)
    axes[0, 0].imshow(big)
    axes[0, 0].set_title("input")
    ax = axes[0, 1]
    ax.set_axis_on()
    names = list(explanation["probabilities"])
    probs = [explanation["probabilities"][n] for n in names]
    ax.barh(names[::-1], probs[::-1], color=["#2ca02c" if p >= explanation["threshold"] else "#999999"
                                              for p in probs[::-1]])
    ax.axvline(explanation["threshold"], color="k", ls="--", lw=1)
    ax.set_xlim(0, 1)
    ax.set_title("label probabilities")
    for i, r in enumerate(rows, start=1):
        axes[i, 0].imshow(heatmap_overlay(raw, np.asarray(r["map"]), side))
        px, py = ((v + 0.5) * side / size for v in r["peak"])
        axes[i, 0].plot([px], [py], marker="x", color="white", markersize=16, mew=4)
        axes[i, 0].plot([px], [py], marker="x", color="black", markersize=13, mew=2)
        axes[i, 0].set_title(f"{r['label_name']}: transport map, peak ×", fontsize=10)
        patch, caption = source_panel(bundle, r, side)
        if patch is not None:
            axes[i, 1].imshow(patch)
        axes[i, 1].set_title(f"label embedding ≈ {caption}", fontsize=10)
        axes[i, 2].text(0.02, 0.5, f"{r['label_name']}: p = {r['probability']:.3f}"
                                   f"{'' if r['predicted'] else ' (below threshold)'}\nlabel embedding "
                                   f"{r['prototype']}, score {r['score']:.3f}\npeak at (x, y) = "
                                   f"({r['peak'][0]}, {r['peak'][1]}) px", fontsize=10.5, va="center")
    atomic_files.write_bytes(out_png, figure_bytes(fig))
    return Path(out_png)
