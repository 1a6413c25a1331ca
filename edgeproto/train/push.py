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
    The box is taken, as ProtoPNet's ``push.py`` does, from the prototype's activation map on its
    source image *during the search*, i.e. before projection. A prototype whose class has no
    training image keeps its vector and is recorded with ``source_image``, ``latent_hw``,
    ``patch_box`` and ``similarity`` None (``no_source`` True). ``project=False`` (recipe
    ``train.push: visualize``) finds the same patches but leaves the prototypes as learned: the
    patch then shows what the prototype responds to most, rather than what it is.
    """
    model.eval()
    layer = model.prototype_layer
    closeness = getattr(layer.family.torch_module, "push_similarity", None)
    params = lambda: [getattr(layer, n) for n in layer.family.param_names]  # noqa: E731
    proto_cls = model.prototype_classes
    m = layer.centers.shape[0]
    size = images.shape[-1]
    best = torch.full((m,), -float("inf"), dtype=torch.float64)
    best_vec = layer.centers.detach().clone()
    source: list[tuple[int, int, int] | None] = [None] * m
    boxes: list[list[int] | None] = [None] * m
    for start in range(0, len(images), batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        z = model.features(x)
        act = layer(z)  # (B,M,H,W): the maps of the prototypes as they are during the search
        sim = closeness(z, *params(), **layer.attrs) if closeness else act
        own = proto_cls[None, :] == y[:, None]  # (B,M)
        sim = sim.masked_fill(~own[:, :, None, None], -float("inf"))
        val, pos = sim.flatten(2).max(dim=2)  # (B,M)
        bval, bimg = val.max(dim=0)  # (M,)
        for j in torch.nonzero((bval.double() > best) & torch.isfinite(bval)).flatten().tolist():
            b, p = int(bimg[j]), int(pos[bimg[j], j])
            h, w = divmod(p, z.shape[3])
            best[j] = float(bval[j])
            best_vec[j] = z[b, :, h, w]
            source[j] = (start + b, h, w)
            boxes[j] = high_activation_box(act[b, j], size)
        if progress:
            progress(len(x))
    if project:
        layer.centers.data.copy_(best_vec)

    records = []
    for j, src in enumerate(source):
        idx, h, w = src if src is not None else (None, None, None)
        records.append(
            {
                "index": j,
                "class": int(proto_cls[j]),
                "source_image": idx,
                "latent_hw": [h, w] if src is not None else None,
                "patch_box": boxes[j],
                "similarity": float(best[j]) if src is not None else None,
                "projected": bool(project and src is not None),
                "no_source": src is None,
            }
        )
    return records


def find_duplicates(records: list[dict]) -> dict[int, int]:
    """``{duplicate: kept}`` for prototypes projected onto the same latent cell of the same source
    image as a lower-numbered one (the kept one is the lowest index of each group)."""
    first: dict[tuple, int] = {}
    out: dict[int, int] = {}
    for rec in records:
        if not rec.get("projected") or rec.get("source_image") is None:
            continue
        key = (int(rec["source_image"]), *map(int, rec["latent_hw"]))
        if key in first:
            out[int(rec["index"])] = first[key]
        else:
            first[key] = int(rec["index"])
    return out


@torch.no_grad()
def merge_duplicates(model: PrototypeNet, records: list[dict]) -> dict[int, int]:
    """Merge prototypes that push projected onto the same patch, as ProtoPShare joins prototypes
    (gmum/ProtoPShare@57ec642 ``proto_join.py``: the joined columns of the last layer are summed
    into the kept one, the others removed): the duplicate's column is added to the kept one's and zeroed,
    so for identical prototypes every logit is unchanged and the duplicate no longer contributes
    (families with more per-prototype parameters than the vector -- HyperPg's μ, σ -- keep the kept
    one's, so there the merge is approximate).
    Records get ``merged_into`` (duplicate) / ``merged`` (kept: the list of duplicates). Returns
    ``{duplicate: kept}``. A Tversky head has no class-weight columns: nothing is merged there.
    """
    if getattr(model, "head", "linear") == "tversky":
        return {}
    dups = find_duplicates(records)
    weight = model.last_layer.weight
    for dup, kept in dups.items():
        if getattr(model, "head", "linear") == "nonneg":  # the forward ReLUs each column: add what it uses
            weight[:, kept] = weight[:, kept].clamp(min=0) + weight[:, dup].clamp(min=0)
        else:
            weight[:, kept] += weight[:, dup]
        weight[:, dup] = 0.0
        records[dup]["merged_into"] = kept
        records[kept].setdefault("merged", []).append(dup)
    return dups


def patch_png(raw_image: np.ndarray, box: list[int]) -> bytes:
    """The source patch cropped from the raw (S,S,3) uint8 image, as PNG bytes."""
    import io

    from PIL import Image

    x0, y0, x1, y1 = box
    buf = io.BytesIO()
    Image.fromarray(raw_image[y0:y1, x0:x1]).save(buf, format="PNG")
    return buf.getvalue()
