"""The figure of an MDM explanation: the input, the stacked MDM heatmap (with its peak), and the
heatmap of each mask scale, on one [0, 1] colour scale. matplotlib's Agg canvas + Pillow; never torch."""

from __future__ import annotations

import numpy as np

from edgeproto.device.figure import DPI, display_size, figure_bytes, heatmap_overlay
from edgeproto.device.mdm import MdmExplanation


def mdm_figure_png(result: MdmExplanation) -> bytes:
    """PNG bytes: [input] [MDM heatmap + peak] [one panel per scale], a title and a colour bar."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    raw = result.raw
    side = display_size(raw.shape[0])
    scales = list(result.scale_maps)
    panels = [("input", np.asarray(raw)), ("MDM heatmap (scales stacked)", heatmap_overlay(raw, result.heatmap, side,
                                                                                            vrange=(0.0, 1.0)))]
    panels += [(f"{s}×{s} masks (consistency {result.consistency[s]:.2f})",
                heatmap_overlay(raw, result.scale_maps[s], side, vrange=(0.0, 1.0))) for s in scales]
    n = len(panels)
    fig = Figure(figsize=(2.6 * n + 0.8, 3.4), dpi=DPI)
    FigureCanvasAgg(fig)
    settings = result.settings
    fig.suptitle(f"{result.class_name} (p = {result.probability:.3f}) · MDM: consistency of the class logits under "
                 f"{settings['masks_per_scale']} masks per scale, {result.runs} forward passes", fontsize=9)
    scale = side / raw.shape[0]
    for i, (title, img) in enumerate(panels):
        ax = fig.add_axes([0.01 + i * (0.98 - 0.06) / n, 0.05, (0.98 - 0.06) / n - 0.01, 0.78])
        ax.imshow(img if i else np.asarray(raw), interpolation="nearest" if i == 0 else "antialiased")
        ax.set_title(title, fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
        if i == 1:
            px, py = result.peak
            ax.plot([(px + 0.5) * scale - 0.5], [(py + 0.5) * scale - 0.5], marker="+", color="white",
                    markersize=14, mew=2)
    cax = fig.add_axes([0.955, 0.1, 0.012, 0.68])
    fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), colormaps["jet"]), cax=cax)
    return figure_bytes(fig, dpi=DPI)
