"""Push / projection: replace each prototype by its nearest training patch of its own class."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from edgeproto.models import PrototypeNet


def high_activation_box(act_map: Tensor, size: int, percentile: float = 95.0) -> list[int]:
    """ProtoPNet's patch box: bicubic-upsample a (H,W) map to size×size, box the ≥ percentile pixels.

    Returns ``[x0, y0, x1, y1]`` in input pixels (x1, y1 exclusive).
    """
    up = F.interpolate(act_map[None, None].double(), size=(size, size), mode="bicubic", align_corners=False)[0, 0]
    thresh = torch.quantile(up.flatten(), percentile / 100.0)
    ys, xs = torch.nonzero(up >= thresh, as_tuple=True)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


@torch.no_grad()
def push_prototypes(
    model: PrototypeNet,
    images: Tensor,
    labels: Tensor,
    batch_size: int = 128,
    progress: Callable[[int], None] | None = None,
    project: bool = True,
) -> list[dict]:
    """Project every prototype onto the closest latent patch of an image of its class.

    Closeness is the family's ``push_similarity`` (its op by default). Returns, per prototype, the
    source image index, the latent cell ``(h, w)``, the high-activation patch box and the similarity.
    ``project=False`` (recipe ``train.push: visualize``) finds the same patches but leaves the
    prototypes as learned: the patch then shows what the prototype responds to most, rather than
    what it is.
    """
    model.eval()
    layer = model.prototype_layer
    closeness = getattr(layer.family.torch_module, "push_similarity", None)
    params = lambda: [getattr(layer, n) for n in layer.family.param_names]  # noqa: E731
    proto_cls = model.prototype_classes
    m, d = layer.centers.shape
    best = torch.full((m,), -float("inf"), dtype=torch.float64)
    best_vec = torch.zeros(m, d)
    source = [(-1, 0, 0)] * m
    for start in range(0, len(images), batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        z = model.features(x)
        sim = closeness(z, *params(), **layer.attrs) if closeness else layer(z)
        own = proto_cls[None, :] == y[:, None]  # (B,M)
        sim = sim.masked_fill(~own[:, :, None, None], -float("inf"))
        val, pos = sim.flatten(2).max(dim=2)  # (B,M)
        bval, bimg = val.max(dim=0)  # (M,)
        for j in torch.nonzero(bval.double() > best).flatten().tolist():
            b, p = int(bimg[j]), int(pos[bimg[j], j])
            h, w = divmod(p, z.shape[3])
            best[j] = float(bval[j])
            best_vec[j] = z[b, :, h, w]
            source[j] = (start + b, h, w)
        if progress:
            progress(len(x))
    if project:
        layer.centers.data.copy_(best_vec)

    records = []
    size = images.shape[-1]
    for j, (idx, h, w) in enumerate(source):
        act = layer(model.features(images[idx : idx + 1]))[0, j]
        records.append(
            {
                "index": j,
                "class": int(proto_cls[j]),
                "source_image": idx,
                "latent_hw": [h, w],
                "patch_box": high_activation_box(act, size),
                "similarity": float(best[j]),
                "projected": bool(project),
            }
        )
    return records


def patch_png(raw_image: np.ndarray, box: list[int]) -> bytes:
    """The source patch cropped from the raw (S,S,3) uint8 image, as PNG bytes."""
    import io

    from PIL import Image

    x0, y0, x1, y1 = box
    buf = io.BytesIO()
    Image.fromarray(raw_image[y0:y1, x0:x1]).save(buf, format="PNG")
    return buf.getvalue()
