"""On-device explanations of one image file: "this part of the image looks like *that* prototype".

A thin layer over :class:`edgeproto.device.explainer.Explainer` (which a loop over frames keeps
open): opens the bundle, explains one file, returns the JSON record. numpy + Pillow + a runtime only
-- never torch.
"""

from __future__ import annotations

from pathlib import Path

from edgeproto.bundle import Bundle, open_bundle
from edgeproto.device.explainer import Explainer, Explanation
from edgeproto.errors import EdgeprotoError


def as_bundle(bundle: Bundle | str | Path) -> Bundle:
    """An opened :class:`Bundle` (paths are opened with the integrity check)."""
    return bundle if isinstance(bundle, Bundle) else open_bundle(bundle)


def explanation_record(explainer: Explainer, result: Explanation, image: str | Path | None = None) -> dict:
    """The JSON-able record of ``result``: the explanation plus image, bundle, runtime and ranking rule."""
    protos = explainer.bundle.prototypes
    record = {
        "image": None if image is None else str(image),
        **result.to_dict(),
        "bundle": str(explainer.bundle.root),
        "runtime": explainer.info,
        "rank_by": explainer.bundle.manifest.get("explain", {}).get("rank_by"),
        "merged_prototypes": sum(1 for p in protos if p.get("merged_into") is not None),
    }
    return record


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
    because: bool = False,
) -> dict:
    """Explain the bundle's prediction for one image file on ``target``; a JSON-able dict.

    The image is read as RGB (grey, RGBA, palette… are converted) and resized to the model's input
    size when needed (``resized_from`` then records its original [width, height]). Pixel positions
    (``argmax``, ``box``) are in model-input pixels (``input_size`` × ``input_size``); ``map`` is the
    prototype's raw (H, W) similarity map, from which :func:`upsample_map` rebuilds the heatmap.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise EdgeprotoError(f"k must be a positive integer, got {k!r}")
    with Explainer.open(bundle, target=target, precision=precision, guard=guard, device=device,
                        threads=threads, k=k) as explainer:
        result = explainer.explain(Path(image_path), because=because)
        return explanation_record(explainer, result, image_path)
