""""This looks like that, *because* …" on the device (Nauta et al., 2020): which visual
characteristic -- hue, shape, texture, contrast, saturation, brightness -- a prototype's similarity
depends on.

Local (this frame): the frame is modified six ways (:mod:`edgeproto.data.modifications`), and for
each explaining prototype the similarity of the modified frame is read at the **same patch** where
the original peaks; Δ = s_orig − s_mod (large Δ: the characteristic matters). Global (the
prototype, over the training split): Σ(Δ·s_orig)/Σ s_orig, computed at export
(:mod:`edgeproto.export.analysis`) and read from the bundle. numpy + Pillow + OpenCV -- never torch.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edgeproto.data.modifications import MODIFICATIONS, modified_batch
from edgeproto.errors import EdgeprotoError
from edgeproto.maps import peak_index, similarity_at


def global_importance(bundle) -> dict[int, dict[str, float]] | None:
    """``{prototype: {modification: importance}}`` stored at export, or None (exported without it)."""
    entry = bundle.manifest.get("explain", {}).get("because")
    if not entry:
        return None
    table = bundle.array(entry["file"])
    names = entry["modifications"]
    if table.ndim != 2 or table.shape[1] != len(names):
        raise EdgeprotoError(f"bundle {bundle.root}: {entry['file']} has shape {table.shape}, "
                             f"expected (prototypes, {len(names)})")
    return {j: {n: float(table[j, c]) for c, n in enumerate(names)} for j in range(table.shape[0])}


def local_importance(explainer, raw: np.ndarray, maps: dict[int, np.ndarray]) -> dict[int, dict[str, float]]:
    """``{prototype: {modification: Δ}}`` for the model view ``raw`` (S,S,3), given the original (H,W)
    similarity map of each prototype to explain (``maps``): six modified frames, one batch."""
    protos = list(maps)
    out = explainer.infer(explainer.to_input(modified_batch(raw)))
    orig = np.stack([np.asarray(maps[j]) for j in protos])[None]  # (1, P, H, W)
    idx = peak_index(orig)[0]
    s_orig = similarity_at(orig, idx)[0]
    s_mod = similarity_at(out["maps"][:, protos], idx)  # (6, P)
    delta = s_orig[None, :] - s_mod
    return {int(j): {n: float(delta[c, i]) for c, n in enumerate(MODIFICATIONS)} for i, j in enumerate(protos)}


def add_because(explainer, result):
    """``result`` (an :class:`~edgeproto.device.explainer.Explanation`) with ``because`` on each top prototype."""
    local = local_importance(explainer, result.raw, {p.prototype: p.map for p in result.top})
    glob = explainer.global_because()
    top = tuple(dataclasses.replace(p, because={"local": local[p.prototype], "global": glob.get(p.prototype)})
                for p in result.top)
    return dataclasses.replace(result, top=top)
