"""One PNG per explanation: "this (part of the input) looks like that (prototype), because …".

Header: the prediction, the predicted logit decomposed into the prototypes' terms (score × weight)
plus the rest so the numbers add up, and why the runner-up class lost. Then one row per top-k
prototype: [the input with the prototype's heatmap, its 95th-percentile box and peak] [the
prototype's patch boxed in its source training image (the bare patch when the bundle has no source
image)] [its nearest training patches, from export] [numbers, and the local/global "because"
importances when asked]. Every heatmap uses one colour scale (the model's, from its golden maps),
shown by the colour bar. matplotlib's Agg canvas (object API: no pyplot) + Pillow; never torch.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from edgeproto import atomic_files
from edgeproto.bundle import Bundle
from edgeproto.data.preprocess import check_pixels, load_image, to_raw
from edgeproto.device.explain import as_bundle
from edgeproto.device.explainer import map_range as model_map_range
from edgeproto.errors import EdgeprotoError
from edgeproto.maps import upsample_map

PANEL_PX = 240  # each image panel is drawn at least this many pixels wide
DPI = 100
ALPHA = 0.45  # heatmap opacity over the input
BOX_COLOR = "#00ff66"
SOURCE_BOX = (255, 220, 0)
MAX_PATCH_PIXELS = 4_000_000  # a prototype's source patch is a crop of a training image
GALLERY_SLOTS = 6  # 2 × 3 thumbnails


def display_size(size: int) -> int:
    """Side of an image panel in pixels: the input scaled by an integer factor to >= PANEL_PX."""
    return size * max(1, -(-PANEL_PX // size))


def figure_bytes(fig, **savefig) -> bytes:
    """PNG bytes of a matplotlib figure on white (``savefig``: more ``Figure.savefig`` options); text in a
    script the font lacks is drawn as boxes, without a warning per glyph."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font")
        warnings.filterwarnings("ignore", message=r"Matplotlib currently does not support")
        fig.savefig(buf, format="png", facecolor="white", **savefig)
    return buf.getvalue()


def heatmap_overlay(raw: np.ndarray, map2d: np.ndarray, side: int, alpha: float | None = None,
                    vrange: tuple[float, float] | None = None) -> np.ndarray:
    """uint8 (side, side, 3): the raw (S,S,3) image enlarged, with the map's jet heatmap blended in
    (opacity ``alpha``, :data:`ALPHA` by default). ``vrange`` (lo, hi): a fixed colour scale shared
    by several maps; without it the map is min-max normalised on its own."""
    alpha = ALPHA if alpha is None else alpha
    from matplotlib import colormaps

    img = np.asarray(Image.fromarray(raw).resize((side, side), Image.Resampling.BICUBIC), dtype=np.float64) / 255
    up = upsample_map(map2d, side)
    lo, hi = vrange if vrange is not None else (float(up.min()), float(up.max()))
    norm = np.clip((up - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(up)
    heat = colormaps["jet"](norm)[..., :3]
    return np.clip(np.rint(((1 - alpha) * img + alpha * heat) * 255), 0, 255).astype(np.uint8)


def _read(bundle: Bundle, rel: str | None) -> Image.Image | None:
    """An RGB image of the bundle (a prototype patch, source image or gallery crop); None if absent."""
    if not rel:
        return None
    try:
        with Image.open(bundle.path(rel)) as im:
            check_pixels(im, f"bundle image {rel}", MAX_PATCH_PIXELS)  # from the header: nothing decoded yet
            return im.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise EdgeprotoError(f"image {rel} in bundle {bundle.root} is too large to draw: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError):
        return None


def _fit(im: Image.Image, side: int, resample=Image.Resampling.NEAREST) -> np.ndarray:
    """``im`` scaled (aspect kept) to fit side × side and centred on white."""
    w, h = im.size
    f = side / max(w, h)
    im = im.resize((max(1, round(w * f)), max(1, round(h * f))), resample)
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(im, ((side - im.size[0]) // 2, (side - im.size[1]) // 2))
    return np.asarray(canvas)


def source_panel(bundle: Bundle, rec: dict, side: int) -> tuple[np.ndarray | None, str]:
    """The prototype's patch boxed in its source training image (or the bare patch), and a caption."""
    src = _read(bundle, rec.get("source_png"))
    box = rec.get("patch_box")
    if src is not None and box:
        big = src.resize((side, side), Image.Resampling.NEAREST)
        s = side / src.size[0]
        x0, y0, x1, y1 = box
        ImageDraw.Draw(big).rectangle([x0 * s, y0 * s, x1 * s - 1, y1 * s - 1], outline=SOURCE_BOX, width=3)
        return np.asarray(big), f"train image {rec.get('source_image')}"
    patch = _read(bundle, rec.get("patch_png"))
    if patch is not None:
        return _fit(patch, side), "patch (no source image in bundle)"
    return None, "no source patch"


def gallery_panel(bundle: Bundle, j: int, side: int) -> np.ndarray | None:
    """Up to six nearest training patches of prototype ``j`` (export's gallery) on a 2 × 3 grid."""
    entries = bundle.manifest.get("explain", {}).get("gallery", {}).get("prototypes")
    if not entries or j >= len(entries) or not entries[j]:
        return None
    cell = side // 3
    canvas = np.full((side, side, 3), 255, dtype=np.uint8)
    for n, e in enumerate(entries[j][:GALLERY_SLOTS]):
        im = _read(bundle, e.get("png"))
        if im is None:
            continue
        r, c = divmod(n, 3)
        y = side // 2 - cell + r * cell + (2 if r else -2)
        canvas[y + 2:y + cell - 2, c * cell + 2:(c + 1) * cell - 2] = _fit(im, cell - 4)
    return canvas


def _header(record: dict) -> list[str]:
    pred = record["prediction"]
    lines = []
    terms = record.get("logit_terms")
    top = record["top_prototypes"]
    if terms:
        shown = sum(p["contribution"] for p in top)
        parts = " + ".join(f"{p['contribution']:.3g} (#{p['prototype']})" for p in top)
        lines.append(f"logit {terms['logit']:.4g} = {parts} + {terms['prototypes'] - shown:.3g} (other prototypes)"
                     f" + {terms['rest']:.3g} (rest: bias / head)")
    ru = record.get("runner_up")
    if ru:
        deciding = ", ".join(f"#{d['prototype']} ({d['term']:+.3g})" for d in ru["deciding"])
        own = ru.get("best_own_prototype")
        lines.append(f"runner-up {ru['class_name']}: logit {ru['logit']:.4g}, {ru['gap']:.3g} behind"
                     + (f"; its best own prototype #{own['prototype']} (s = {own['score']:.3g})" if own else ""))
        lines.append(f"  gap = Σ score·(w[{pred['class_name']}] − w[{ru['class_name']}]) = {ru['prototype_terms']:.3g}"
                     f" + rest {ru['rest']:.3g}; largest terms {deciding}")
    return lines


def figure_png(bundle: Bundle, raw: np.ndarray, record: dict, vrange: tuple[float, float] | None = None) -> bytes:
    """PNG bytes of the figure of ``record`` (the JSON of an explanation) for the model view ``raw``."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    vrange = vrange or model_map_range(bundle)
    size = int(record.get("input_size", bundle.manifest["preprocess"]["image_size"]))
    side = display_size(size)
    scale = side / size
    rows = record["top_prototypes"]
    if not rows:
        raise EdgeprotoError("the explanation has no prototypes to draw")
    because = any(p.get("because") for p in rows)
    gallery = bool(bundle.manifest.get("explain", {}).get("gallery"))

    panel_in = side / DPI
    text_in = 3.3
    cols = [panel_in, panel_in] + ([panel_in] if gallery else []) + [text_in] + ([2.6] if because else [])
    header_in = 2.05
    fig = Figure(figsize=(sum(cols) + 1.3, header_in + len(rows) * (panel_in + 0.45)), dpi=DPI)
    FigureCanvasAgg(fig)
    H = fig.get_figheight()
    pred, rt = record["prediction"], record["runtime"]
    fig.text(0.5, 1 - 0.28 / H, f"Prediction: {pred['class_name']} (class {pred['class']}, p = {pred['probability']:.3f})",
             ha="center", va="center", fontsize=15, weight="bold")
    for n, line in enumerate(_header(record)):
        fig.text(0.01, 1 - (0.9 + 0.25 * n) / H, line, ha="left", va="center", fontsize=9, family="monospace")
    sub = (f"{Path(str(record.get('image') or 'frame')).name}"
           + (f" (resized from {record['resized_from'][0]}×{record['resized_from'][1]})"
              if record.get("resized_from") else "")
           + f"  ·  {rt['name']} {rt['version']} · {rt['precision']} · {rt['device']}"
           + (f"  ·  {record['merged_prototypes']} duplicate prototype(s) merged at push"
              if record.get("merged_prototypes") else ""))
    fig.text(0.5, 1 - 0.58 / H, sub, ha="center", va="center", fontsize=9, color="#444444")
    right = 1 - 1.1 / fig.get_figwidth()
    gs = fig.add_gridspec(len(rows), len(cols), width_ratios=cols, left=0.015, right=right, bottom=0.02,
                          top=1 - header_in / H, wspace=0.06, hspace=0.25)

    for r, p in enumerate(rows):
        axes = [fig.add_subplot(gs[r, c]) for c in range(len(cols))]
        ax_in, ax_src = axes[0], axes[1]
        ax_gal = axes[2] if gallery else None
        ax_tx = axes[3 if gallery else 2]
        ax_in.imshow(heatmap_overlay(raw, np.asarray(p["map"], dtype=np.float64), side, vrange=vrange),
                     interpolation="nearest")
        x0, y0, x1, y1 = (v * scale for v in p["box"])
        inset = 1.5
        ax_in.add_patch(Rectangle((x0 - 0.5 + inset, y0 - 0.5 + inset), x1 - x0 - 2 * inset, y1 - y0 - 2 * inset,
                                  fill=False, lw=2.5, ec=BOX_COLOR, clip_on=False))
        ax, ay = (v * scale + scale / 2 - 0.5 for v in p["argmax"])
        ax_in.plot([ax], [ay], marker="+", ms=12, mew=2, color="white", clip_on=False)
        ax_in.set_xlim(-0.5, side - 0.5)
        ax_in.set_ylim(side - 0.5, -0.5)
        rec = bundle.prototypes[p["prototype"]] if p["prototype"] < len(bundle.prototypes) else {}
        panel, caption = source_panel(bundle, {**rec, **{k: p.get(k) for k in ("patch_png", "patch_box")
                                                         if p.get(k) is not None}}, side)
        if panel is None:
            ax_src.set_facecolor("#dddddd")
            ax_src.text(0.5, 0.5, "source patch\nnot in bundle", ha="center", va="center", fontsize=10,
                        transform=ax_src.transAxes)
        else:
            ax_src.imshow(panel, interpolation="nearest")
        ax_src.set_xlabel(caption, fontsize=8.5)
        if ax_gal is not None:
            g = gallery_panel(bundle, p["prototype"], side)
            if g is not None:
                ax_gal.imshow(g, interpolation="nearest")
            ax_gal.axis("off")
        if r == 0:
            ax_in.set_title("this part of the input…", fontsize=11)
            ax_src.set_title("…looks like that prototype", fontsize=11)
            if ax_gal is not None:
                ax_gal.set_title("its nearest training patches", fontsize=11)
        for a in (ax_in, ax_src):
            a.set_xticks([])
            a.set_yticks([])

        ax_tx.axis("off")
        ax_tx.text(0.02, 0.9, f"#{p['rank']}  prototype {p['prototype']}", fontsize=12.5, weight="bold",
                   transform=ax_tx.transAxes, va="center")
        ax_tx.text(0.02, 0.77, f"class {p['class']}: {p['class_name']}", fontsize=11, transform=ax_tx.transAxes,
                   va="center")
        lines = [f"similarity     {p['score']:.4g}", f"× weight       {p['weight']:.4g}",
                 f"= contribution {p['contribution']:+.4g}", f"peak at        x={p['argmax'][0]}, y={p['argmax'][1]}",
                 f"95% box        {p['box']}"]
        if p.get("merged"):
            lines.append(f"merged dups    {', '.join(map(str, p['merged']))}")
        if p["contribution"] < 0:
            lines.append(f"(evidence against {pred['class_name']})")
        ax_tx.text(0.02, 0.64, "\n".join(lines), fontsize=9.5, family="monospace", linespacing=1.45,
                   transform=ax_tx.transAxes, va="top")
        if because:
            ax_b = axes[-1]
            b = p.get("because") or {}
            local, glob = b.get("local") or {}, b.get("global") or {}
            names = list(local or glob)
            y = np.arange(len(names))
            ax_b.barh(y, [local.get(n, 0) for n in names], color="#4c72b0", height=0.6, label="this image (Δ)")
            if glob:
                ax_b.plot([glob[n] for n in names], y, "D", color="#dd8452", ms=5, label="global (train)")
            ax_b.axvline(0, color="#333333", lw=0.8)
            ax_b.set_yticks(y, names, fontsize=8.5)
            ax_b.invert_yaxis()
            ax_b.tick_params(axis="x", labelsize=8)
            if r == 0:
                ax_b.set_title("…because (similarity lost when changed)", fontsize=10)
                ax_b.legend(fontsize=7, loc="lower right")

    cax = fig.add_axes([right + 0.15 / fig.get_figwidth(), 0.1, 0.22 / fig.get_figwidth(),
                        0.8 - header_in / H])
    bar = fig.colorbar(ScalarMappable(Normalize(*vrange), colormaps["jet"]), cax=cax)
    bar.set_label("similarity (one scale for all rows)", fontsize=9)
    bar.ax.tick_params(labelsize=8)
    return figure_bytes(fig, dpi=DPI, pil_kwargs={"compress_level": 3})


def render_explanation(bundle: Bundle | str | Path, image: str | Path | np.ndarray, explanation: dict,
                       out_png: str | Path, vrange: tuple[float, float] | None = None) -> Path:
    """Draw ``explanation`` (the JSON of :func:`edgeproto.device.explain.explain_image`) for ``image``
    (a file, or the uint8 (S,S,3) model view) into ``out_png`` (written atomically); returns the path."""
    bundle = as_bundle(bundle)
    size = int(explanation.get("input_size", bundle.manifest["preprocess"]["image_size"]))
    raw = image if isinstance(image, np.ndarray) else to_raw(load_image(image), size)  # exactly what the model saw
    atomic_files.write_bytes(out_png, figure_png(bundle, raw, explanation, vrange))
    return Path(out_png)
