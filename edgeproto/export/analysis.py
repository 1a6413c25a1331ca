"""What export precomputes over the training split for on-device explanations (no training data
travels to the device):

- each prototype's **source image** (the training picture its patch comes from, for the figure's
  "prototype in its source image");
- each prototype's **nearest training patches** (a global gallery: the k images whose best patch is
  most similar, cropped to ProtoPNet's ≥95th-percentile box of the upsampled map);
- each prototype's **global "because" importances** (Nauta et al., 2020): over the analysed images,
  Σ(Δ·s_orig)/Σ s_orig with Δ = s_orig − s_mod at the same patch, for the six modifications of
  :mod:`edgeproto.data.modifications`.

All through the exported ONNX model in ONNX Runtime (the numbers the device reproduces).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from edgeproto.data.modifications import MODIFICATIONS, PARAMETERS, modified_batch
from edgeproto.data.preprocess import normalize
from edgeproto.data.superpixels import with_superpixels
from edgeproto.errors import EdgeprotoError
from edgeproto.maps import high_activation_box, peak_index, similarity_at, upsample_map, weighted_importance

GALLERY_K = 5
CHUNK = 32  # training images per batch (each with its six modified copies)


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def pick_images(total: int, count: int | None) -> np.ndarray:
    """Indices of the analysed training images: all of them, or ``count`` spread evenly over the split."""
    if count is None or count >= total:
        return np.arange(total)
    return np.unique(np.linspace(0, total - 1, count).round().astype(np.int64))


def analyse(stage: Path, config: dict, run, *, images: int | None, status=None,
            k: int = GALLERY_K) -> dict:
    """Write ``explain/because.npy``, ``gallery/*.png`` and ``sources/*.png`` into ``stage``; return the
    manifest's ``explain`` additions and each prototype's ``source_png`` (``{"sources": {j: path}}``).

    ``run(x)`` runs the exported model on a float32 batch (outputs by name); ``images``: how many
    training images to analyse (None: the whole split).
    """
    from edgeproto.data import build_dataset

    status = status or (lambda text: None)
    dataset = build_dataset(config["recipe"]["data"], "train")
    if len(dataset) == 0:
        raise EdgeprotoError("the recipe's train split is empty: nothing to analyse")
    mean, std = config["mean"], config["std"]
    regions = int(getattr(dataset, "superpixels", 0) or 0)

    def model_input(raw: np.ndarray) -> np.ndarray:
        """The normalised image (region_seg: with the SLIC label map of that very image as channel 4)."""
        x = normalize(raw, mean, std)
        return with_superpixels(x, raw, regions) if regions else x

    chosen = pick_images(len(dataset), images)
    size = int(config["image_size"])
    n_mod = len(MODIFICATIONS)
    s_orig_all, delta_all, scores_all = [], [], []
    for start in range(0, len(chosen), CHUNK):
        status(f"because/gallery analysis: training images {start}/{len(chosen)}")
        idx = chosen[start:start + CHUNK]
        raws = np.stack([dataset.raw_image(int(i)) for i in idx])
        mods = np.concatenate([modified_batch(r) for r in raws])  # (n·6, S, S, 3)
        out = run(np.stack([model_input(r) for r in np.concatenate([raws, mods])]))
        maps = np.asarray(out["maps"])
        orig, modded = maps[: len(idx)], maps[len(idx):].reshape(len(idx), n_mod, *maps.shape[1:])
        peak = peak_index(orig)  # (n, M)
        for i in range(len(idx)):
            s0 = similarity_at(orig[i:i + 1], peak[i])[0]
            s_orig_all.append(s0)
            delta_all.append(s0[None, :] - similarity_at(modded[i], peak[i]))  # (6, M)
        scores_all.append(np.asarray(out["scores"])[: len(idx)])
    s_orig = np.stack(s_orig_all)  # (N, M)
    importance = weighted_importance(np.stack(delta_all), s_orig).T.astype(np.float32)  # (M, 6)
    (stage / "explain").mkdir(exist_ok=True)
    np.save(stage / "explain" / "because.npy", importance)

    status("because/gallery analysis: nearest training patches")
    scores = np.concatenate(scores_all)  # (N, M)
    kk = min(k, len(chosen))
    top = np.argsort(-scores, axis=0, kind="stable")[:kk]  # (k, M) rows into `chosen`
    needed = sorted({int(r) for r in top.ravel()})
    raw_of = {r: dataset.raw_image(int(chosen[r])) for r in needed}
    maps_of = {}
    for start in range(0, len(needed), CHUNK):
        rows = needed[start:start + CHUNK]
        out = run(np.stack([model_input(raw_of[r]) for r in rows]))
        maps_of.update({r: np.asarray(out["maps"])[i] for i, r in enumerate(rows)})
    (stage / "gallery").mkdir()
    gallery = []
    for j in range(scores.shape[1]):
        entries = []
        for rank in range(kk):
            r = int(top[rank, j])
            box = high_activation_box(upsample_map(maps_of[r][j], size), 95.0)
            rel = f"gallery/{j:04d}_{rank}.png"
            (stage / rel).write_bytes(_png(raw_of[r][box[1]:box[3], box[0]:box[2]]))
            entries.append({"image": int(chosen[r]), "score": float(scores[r, j]), "box": box, "png": rel})
        gallery.append(entries)

    (stage / "sources").mkdir()
    sources = {}
    for j, rec in enumerate(config["prototypes"]):
        src = rec.get("source_image")
        if src is None:
            continue
        rel = f"sources/{int(src):06d}.png"
        if not (stage / rel).exists():
            (stage / rel).write_bytes(_png(dataset.raw_image(int(src))))
        sources[j] = rel
    note = ("similarities are non-negative: the weighting is Nauta et al.'s" if float(s_orig.min()) >= 0 else
            "some similarities are negative (log-densities / distances): Σ(Δ·s)/Σ s is not a weighted mean here")
    return {
        "because": {"file": "explain/because.npy", "modifications": list(MODIFICATIONS), "parameters": PARAMETERS,
                    "split": "train", "images": int(len(chosen)), "formula": "sum(delta * s_orig) / sum(s_orig), "
                    "delta = s_orig - s_mod at the original's most similar patch", "note": note},
        "gallery": {"split": "train", "images": int(len(chosen)), "k": kk, "prototypes": gallery},
        "sources": sources,
    }
