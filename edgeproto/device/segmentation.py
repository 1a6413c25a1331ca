"""On-device explanations of a segmentation: the predicted mask and, per predicted region, the
prototype that explains it ("this region looks like *that* prototype"), with its source patch.

A region is every pixel predicted as one class. Its explaining prototype is the prototype of that
class with the highest similarity over the region's feature-grid cells (a cell belongs to a
region when its centre pixel does); the shift-invariant rule of :mod:`edgeproto.ranking`
(own-class prototypes by similarity), applied per region. numpy + Pillow + matplotlib + a runtime
only -- never torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from edgeproto import atomic_files
from edgeproto.bundle import Bundle
from edgeproto.data.preprocess import load_image, to_input, to_raw
from edgeproto.device.explain import as_bundle
from edgeproto.errors import EdgeprotoError
from edgeproto.maps import high_activation_box, upsample_map
from edgeproto.outputs import run_outputs

# class colours of a predicted mask (class 0 -- usually background -- dark grey)
PALETTE = np.array([[40, 40, 40], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212],
                    [0, 128, 128]], dtype=np.uint8)


def colour_mask(mask: np.ndarray) -> np.ndarray:
    """uint8 (H,W,3) colours of a class-index mask (the palette repeats after 12 classes)."""
    return PALETTE[np.asarray(mask) % len(PALETTE)]


def grid_cells(region: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """bool (h,w): the feature-grid cells whose centre pixel lies in the (S,S) ``region``; when none
    does (a region thinner than a cell), the cell under the region's centroid."""
    s_h, s_w = region.shape
    h, w = grid
    rows = np.minimum(((np.arange(h) + 0.5) * s_h / h).astype(int), s_h - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * s_w / w).astype(int), s_w - 1)
    cells = region[rows][:, cols]
    if not cells.any() and region.any():
        ys, xs = np.nonzero(region)
        cells = np.zeros((h, w), dtype=bool)
        cells[min(int(ys.mean() * h / s_h), h - 1), min(int(xs.mean() * w / s_w), w - 1)] = True
    return cells


def region_prototypes(pred: np.ndarray, maps: np.ndarray, proto_classes: np.ndarray) -> dict[int, tuple[int, float]]:
    """For one image: predicted class → (explaining prototype, its best similarity in the region).

    ``pred`` (S,S) predicted classes, ``maps`` (M,h,w). A class without prototypes is left out."""
    out: dict[int, tuple[int, float]] = {}
    for c in np.unique(pred).tolist():
        own = np.nonzero(proto_classes == c)[0]
        if len(own) == 0:
            continue
        cells = grid_cells(pred == c, maps.shape[1:])
        best = maps[own][:, cells].max(axis=1)  # (K,)
        k = int(np.argmax(best))
        out[int(c)] = (int(own[k]), float(best[k]))
    return out


def explain_segmentation(bundle: Bundle | str | Path, image_path: str | Path, *, target: str = "onnxruntime",
                         precision: str = "fp32", guard: str = "prototypes", device: str | None = None,
                         threads: int = 0) -> dict:
    """Segment one image file on ``target`` and explain every predicted region; a JSON-able dict
    (``mask``: the predicted classes as nested lists, model-input pixels)."""
    from edgeproto.runtimes import load_runner

    bundle = as_bundle(bundle)
    if bundle.manifest.get("task") != "segmentation":
        raise EdgeprotoError(f"bundle {bundle.root} is not a segmentation model")
    pre = bundle.manifest["preprocess"]
    size = int(pre["image_size"])
    img = load_image(image_path)
    x = to_input(img, size, pre["mean"], pre["std"])
    regions_n = int(bundle.manifest.get("data", {}).get("superpixels", 0) or 0)
    if regions_n:  # region_seg: SLIC on the device, the label map as the 4th input channel
        from edgeproto.data.superpixels import with_superpixels

        x = with_superpixels(x, to_raw(img, size), regions_n)
    x = x[None]
    runner = load_runner(bundle, target, precision, guard, device, threads)
    out = run_outputs(runner, x, target)
    info = runner.info()
    runner.close()
    if not all(np.isfinite(out[k]).all() for k in ("logits", "maps")):
        raise EdgeprotoError(f"{target} ({info['precision']}) produced non-finite outputs: this artifact cannot explain")
    pred = out["logits"][0].argmax(axis=0)
    maps = out["maps"][0]
    classes, protos = bundle.classes, bundle.prototypes
    regions = []
    for c, (j, score) in sorted(region_prototypes(pred, maps, bundle.prototype_classes()).items()):
        up = upsample_map(maps[j], size)
        rec = protos[j] if j < len(protos) else {}
        regions.append({"class": c, "class_name": classes[c], "pixels": int((pred == c).sum()),
                        "prototype": j, "score": score, "box": high_activation_box(up, 95.0),
                        "patch_png": rec.get("patch_png"), "source_image": rec.get("source_image"),
                        "patch_box": rec.get("patch_box"), "map": np.round(maps[j], 6).tolist()})
    result = {"image": str(image_path), "image_size": list(img.size), "input_size": size,
              "bundle": str(bundle.root), "runtime": {"target": target, **info}, "classes": list(classes),
              "class_pixels": {classes[c]: int(n) for c, n in enumerate(np.bincount(pred.ravel(), minlength=len(classes)))
                               if n},
              "regions": regions, "mask": pred.astype(int).tolist()}
    if tuple(img.size) != (size, size):
        result["resized_from"] = list(img.size)
    return result


def render_segmentation(bundle: Bundle | str | Path, image_path: str | Path, explanation: dict,
                        out_png: str | Path) -> Path:
    """The figure: [input] [predicted mask] [mask over the input] on top, then one row per region:
    [the region outlined on the input] [the prototype's similarity heatmap with its 95th-percentile
    box] [the prototype's source patch] [text]. Written atomically."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    from edgeproto.device.figure import display_size, figure_bytes, heatmap_overlay, source_panel

    bundle = as_bundle(bundle)
    size = int(explanation["input_size"])
    side = display_size(size)
    raw = to_raw(load_image(image_path), size)
    big = np.asarray(Image.fromarray(raw).resize((side, side), Image.Resampling.BICUBIC))
    pred = np.asarray(explanation["mask"], dtype=np.int64)
    coloured = np.asarray(Image.fromarray(colour_mask(pred)).resize((side, side), Image.Resampling.NEAREST))
    regions = explanation["regions"]
    rows = 1 + len(regions)
    fig = Figure(figsize=(12.8, 3.3 * rows), dpi=100)
    axes = fig.subplots(rows, 4, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    rt = explanation["runtime"]
    fig.suptitle(f"Segmentation by {rt.get('target')} ({rt.get('precision')}) — "
                 f"{len(regions)} predicted region(s)", fontsize=13)
    axes[0, 0].imshow(big)
    axes[0, 0].set_title("input")
    axes[0, 1].imshow(coloured)
    axes[0, 1].set_title("predicted mask")
    axes[0, 2].imshow((0.5 * big + 0.5 * coloured).astype(np.uint8))
    axes[0, 2].set_title("mask over input")
    classes = explanation["classes"]
    present = sorted({r["class"] for r in regions})
    axes[0, 3].legend(handles=[Patch(color=PALETTE[c % len(PALETTE)] / 255, label=classes[c]) for c in present],
                      loc="center", fontsize=10, frameon=False)
    for i, r in enumerate(regions, start=1):
        region = np.asarray(Image.fromarray((pred == r["class"]).astype(np.uint8) * 255).resize(
            (side, side), Image.Resampling.NEAREST)) > 0
        shown = big.copy()
        shown[~region] = (shown[~region] * 0.3).astype(np.uint8)
        axes[i, 0].imshow(shown)
        axes[i, 0].set_title(f"region: {r['class_name']}", fontsize=10)
        axes[i, 1].imshow(heatmap_overlay(raw, np.asarray(r["map"]), side))
        x0, y0, x1, y1 = (v * side / size for v in r["box"])
        axes[i, 1].add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="#00ff66", lw=2))
        axes[i, 1].set_title(f"prototype {r['prototype']} similarity", fontsize=10)
        patch, caption = source_panel(bundle, r, side)
        if patch is not None:
            axes[i, 2].imshow(patch)
        axes[i, 2].set_title("source patch" if caption.startswith("patch") else caption, fontsize=10)
        axes[i, 3].text(0.02, 0.5, f"region {r['class_name']} ({r['pixels']} px)\nlooks like prototype {r['prototype']}"
                                   f"\n(class {classes[r['class']]})\nsimilarity {r['score']:.4g}"
                                   f"\nsource: training image {r.get('source_image')}", fontsize=10.5, va="center")
    atomic_files.write_bytes(out_png, figure_bytes(fig))
    return Path(out_png)
