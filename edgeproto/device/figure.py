"""One PNG per explanation: "this (part of the input) looks like that (prototype)".

Layout: a header (prediction, probability, runtime), then one row per top-k prototype:
[input with the prototype's heatmap and its 95th-percentile box] [the prototype's source patch,
enlarged] [prototype number, class, score, class weight, contribution]. matplotlib's Agg canvas
(object API: no pyplot, no global backend switch) + Pillow; never torch.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from edgeproto import atomic_files
from edgeproto.bundle import Bundle
from edgeproto.data.preprocess import check_pixels, load_image, to_raw
from edgeproto.errors import EdgeprotoError
from edgeproto.device.explain import as_bundle
from edgeproto.maps import upsample_map

PANEL_PX = 280  # each image panel is drawn at least this many pixels wide
DPI = 100
ALPHA = 0.45  # heatmap opacity over the input
BOX_COLOR = "#00ff66"
MAX_PATCH_PIXELS = 4_000_000  # a prototype's source patch is a crop of a training image


def _display_size(size: int) -> int:
    """Side of an image panel in pixels: the input scaled by an integer factor to >= PANEL_PX."""
    return size * max(1, -(-PANEL_PX // size))


def heatmap_overlay(raw: np.ndarray, map2d: np.ndarray, side: int, alpha: float | None = None) -> np.ndarray:
    """uint8 (side, side, 3): the raw (S,S,3) image enlarged, with the map's jet heatmap blended in
    (opacity ``alpha``, :data:`ALPHA` by default; the map is min-max normalised)."""
    alpha = ALPHA if alpha is None else alpha
    from matplotlib import colormaps

    img = np.asarray(Image.fromarray(raw).resize((side, side), Image.Resampling.BICUBIC), dtype=np.float64) / 255
    up = upsample_map(map2d, side)
    lo, hi = float(up.min()), float(up.max())
    norm = (up - lo) / (hi - lo) if hi > lo else np.zeros_like(up)
    heat = colormaps["jet"](norm)[..., :3]
    return np.clip(np.rint(((1 - alpha) * img + alpha * heat) * 255), 0, 255).astype(np.uint8)


def _patch(bundle: Bundle, rel: str | None, side: int) -> np.ndarray | None:
    """The prototype's source patch enlarged (nearest, aspect kept) to fit side × side; None if absent."""
    if not rel:
        return None
    path = bundle.path(rel)
    try:
        with Image.open(path) as im:
            check_pixels(im, f"prototype patch {rel}", MAX_PATCH_PIXELS)  # from the header: nothing decoded yet
            im.draft("RGB", (side, side))
            im = im.convert("RGB")
            w, h = im.size
            f = side / max(w, h)
            return np.asarray(im.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.NEAREST))
    except Image.DecompressionBombError as exc:
        raise EdgeprotoError(f"prototype patch {rel} in bundle {bundle.root} is too large to draw: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError):
        return None


def render_explanation(bundle: Bundle | str | Path, image_path: str | Path, explanation: dict,
                       out_png: str | Path) -> Path:
    """Draw ``explanation`` (from :func:`edgeproto.device.explain.explain_image`) for ``image_path``
    into ``out_png`` (written atomically); returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    bundle = as_bundle(bundle)
    size = int(explanation.get("input_size", bundle.manifest["preprocess"]["image_size"]))
    raw = to_raw(load_image(image_path), size)  # exactly what the model saw
    side = _display_size(size)
    scale = side / size
    rows = explanation["top_prototypes"]
    if not rows:
        raise EdgeprotoError("the explanation has no prototypes to draw")

    panel_in = side / DPI
    text_in = 3.4
    header_in = 1.25
    fig = Figure(figsize=(2 * panel_in + text_in + 0.6, header_in + len(rows) * (panel_in + 0.45)), dpi=DPI)
    FigureCanvasAgg(fig)
    pred, rt = explanation["prediction"], explanation["runtime"]
    title = f"Prediction: {pred['class_name']} (class {pred['class']}, p = {pred['probability']:.3f})"
    sub = (f"{Path(str(explanation.get('image', image_path))).name}"
           + (f" (resized from {explanation['resized_from'][0]}×{explanation['resized_from'][1]})"
              if explanation.get("resized_from") else "")
           + f"  ·  {rt['name']} {rt['version']} · {rt['precision']} · {rt['device']}"
           + (f"  ·  {explanation['merged_prototypes']} duplicate prototype(s) merged at push"
              if explanation.get("merged_prototypes") else ""))
    fig.text(0.5, 1 - 0.32 / fig.get_figheight(), title, ha="center", va="center", fontsize=15, weight="bold")
    fig.text(0.5, 1 - 0.68 / fig.get_figheight(), sub, ha="center", va="center", fontsize=9.5, color="#444444")
    gs = fig.add_gridspec(len(rows), 3, width_ratios=[panel_in, panel_in, text_in],
                          left=0.02, right=0.98, bottom=0.02, top=1 - header_in / fig.get_figheight(),
                          wspace=0.08, hspace=0.22)

    for r, p in enumerate(rows):
        ax_in, ax_pt, ax_tx = (fig.add_subplot(gs[r, c]) for c in range(3))
        ax_in.imshow(heatmap_overlay(raw, np.asarray(p["map"], dtype=np.float64), side), interpolation="nearest")
        x0, y0, x1, y1 = (v * scale for v in p["box"])
        inset = 1.5  # keep the whole line inside the box (and visible at the image border)
        ax_in.add_patch(Rectangle((x0 - 0.5 + inset, y0 - 0.5 + inset), x1 - x0 - 2 * inset, y1 - y0 - 2 * inset,
                                  fill=False, lw=2.5, ec=BOX_COLOR, clip_on=False))
        ax, ay = (v * scale + scale / 2 - 0.5 for v in p["argmax"])
        ax_in.plot([ax], [ay], marker="+", ms=12, mew=2, color="white", clip_on=False)
        ax_in.set_xlim(-0.5, side - 0.5)
        ax_in.set_ylim(side - 0.5, -0.5)

        patch = _patch(bundle, p.get("patch_png"), side)
        if patch is None:
            ax_pt.set_facecolor("#dddddd")
            ax_pt.text(0.5, 0.5, "source patch\nnot in bundle", ha="center", va="center", fontsize=10,
                       transform=ax_pt.transAxes)
        else:
            canvas = np.full((side, side, 3), 255, dtype=np.uint8)
            h, w = patch.shape[:2]
            oy, ox = (side - h) // 2, (side - w) // 2
            canvas[oy:oy + h, ox:ox + w] = patch
            ax_pt.imshow(canvas, interpolation="nearest")
            ax_pt.add_patch(Rectangle((ox - 0.5, oy - 0.5), w, h, fill=False, lw=1.5, ec="#333333"))
        if r == 0:
            ax_in.set_title("this part of the input…", fontsize=11)
            ax_pt.set_title("…looks like that prototype", fontsize=11)
        for a in (ax_in, ax_pt):
            a.set_xticks([])
            a.set_yticks([])

        ax_tx.axis("off")
        ax_tx.text(0.02, 0.86, f"#{p['rank']}  prototype {p['prototype']}", fontsize=13, weight="bold",
                   transform=ax_tx.transAxes, va="center")
        ax_tx.text(0.02, 0.72, f"class {p['class']}: {p['class_name']}", fontsize=11.5,
                   transform=ax_tx.transAxes, va="center")
        lines = [
            f"similarity score   {p['score']:.4g}",
            f"class weight       {p['weight']:.4g}",
            f"contribution       {p['contribution']:.4g}",
            f"most active at     x={p['argmax'][0]}, y={p['argmax'][1]}",
            f"95% box            {p['box']}",
        ]
        if p.get("source_image") is not None:
            lines.append(f"source             train image {p['source_image']}")
        else:
            lines.append("source             none (no training image of its class)")
        if p.get("merged"):
            lines.append(f"merged duplicates  {', '.join(map(str, p['merged']))}")
        if p["contribution"] < 0:
            lines.append(f"(evidence against {pred['class_name']})")
        ax_tx.text(0.02, 0.55, "\n".join(lines), fontsize=10, family="monospace", linespacing=1.5,
                   transform=ax_tx.transAxes, va="top")

    buf = io.BytesIO()
    with warnings.catch_warnings():  # a file name in a script the font lacks: boxes, not a warning per glyph
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font")
        warnings.filterwarnings("ignore", message=r"Matplotlib currently does not support")
        fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    atomic_files.write_bytes(out_png, buf.getvalue())
    return Path(out_png)
