"""The multiple-dynamic-masks (MDM) explanation, on the device: a loop over the runtime, no torch.

DProtoNet (Peng et al., arXiv 2210.08336) explains a decision without the prototypes' activation
maps: the image is compared with copies of itself under masks of several sizes, and the pixels whose
presence keeps the activations at the network's *detection nodes* consistent with the original's
are the explanation. Only the paper's abstract is public; how that is realised here:

- **masks**: for each scale s (default 2, 4, 8 cells per side) ``masks`` random binary s×s grids
  (each cell kept with probability ``keep``), upsampled bilinearly to the input plus one cell and
  shifted by a random offset below one cell (smooth masks whose cells do not line up across masks);
  a masked-out pixel is set to the dataset's mean colour (0 after normalisation). The masks are
  drawn from ``seed``: the same for every image, so explanations are reproducible;
- **detection nodes**: the class logits (the decision, not prototype activations), centred over the
  classes so that adding a constant to every logit changes nothing;
- **consistency** of a masked copy: how much of the original's centred logit vector ā it keeps,
  ``c = clip(⟨ā_masked, ā⟩ / ⟨ā, ā⟩, 0, 1)`` (1: the decision pattern kept whole or stronger, 0: none
  of it or the opposite; clipped so that a few masks that happen to amplify the logits cannot
  dominate the average);
- **heatmap of a scale**: each pixel's consistency averaged over the masks that keep it
  (``Σ c·m / Σ m``), min-max normalised to [0, 1] (a range below 0.01 is not stretched: a flat
  scale stays flat); the **MDM heatmap** stacks the scales: their mean.

All masked copies run through the bundle's runtime in batches (``len(scales) × masks`` forward
passes per image).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from edgeproto.errors import EdgeprotoError
from edgeproto.probabilities import softmax

SCALES = (2, 4, 8)
MASKS_PER_SCALE = 64
KEEP = 0.5
SEED = 0
BATCH = 64
MAX_MASKS = 4096
RANGE_FLOOR = 0.01  # a scale's heatmap range below this is not stretched to [0, 1]


def check_settings(scales: Sequence[int], masks: int, keep: float, size: int) -> tuple[int, ...]:
    """The scales as a tuple; one clear error for a bad setting."""
    try:
        scales = tuple(int(s) for s in scales)
    except (TypeError, ValueError):
        raise EdgeprotoError(f"MDM scales must be whole numbers, got {scales!r}") from None
    if not scales or any(s < 1 or s > size for s in scales):
        raise EdgeprotoError(f"MDM scales must be 1..{size} cells per side (the input size), got {list(scales)}")
    if isinstance(masks, bool) or not isinstance(masks, (int, np.integer)) or not 1 <= masks <= MAX_MASKS:
        raise EdgeprotoError(f"MDM masks per scale must be 1..{MAX_MASKS}, got {masks!r}")
    if not 0.0 < float(keep) < 1.0:
        raise EdgeprotoError(f"MDM keep probability must be between 0 and 1 (exclusive), got {keep!r}")
    return scales


@functools.lru_cache(maxsize=16)
def dynamic_masks(size: int, scale: int, count: int, *, keep: float = KEEP, seed: int = SEED) -> np.ndarray:
    """float32 (count, size, size) in [0, 1], read-only (cached: every image uses the same masks):
    ``count`` smooth random masks of ``scale`` cells per side."""
    rng = np.random.default_rng([int(seed), int(scale), int(size)])
    cell = -(-size // scale)  # ceil
    side = (scale + 1) * cell
    grids = (rng.random((count, scale + 1, scale + 1)) < keep).astype(np.float32)
    shifts = rng.integers(0, cell, size=(count, 2))
    out = np.empty((count, size, size), dtype=np.float32)
    for i in range(count):
        up = np.asarray(Image.fromarray(grids[i], mode="F").resize((side, side), Image.Resampling.BILINEAR))
        dy, dx = shifts[i]
        out[i] = up[dy: dy + size, dx: dx + size]
    out = np.clip(out, 0.0, 1.0)
    out.flags.writeable = False
    return out


def consistency(logits: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(N,) share of the reference's centred logit vector kept by each row of ``logits`` (N,C), in [0, 1]."""
    a = np.asarray(logits, dtype=np.float64)
    a = a - a.mean(axis=1, keepdims=True)
    r = np.asarray(reference, dtype=np.float64).ravel()
    r = r - r.mean()
    norm = float(r @ r)
    if norm == 0.0:  # every class equally likely: no decision to keep
        return np.zeros(len(a))
    return np.clip(a @ r / norm, 0.0, 1.0)


def _normalised(m: np.ndarray) -> np.ndarray:
    """``(m − min) / max(max − min, RANGE_FLOOR)``: [0, 1]; a flat map (no mask changed the decision)
    stays near 0 instead of blowing rounding noise up to the full range."""
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / max(hi - lo, RANGE_FLOOR)


def mdm_maps(logits_fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, *, scales: Sequence[int] = SCALES,
             masks: int = MASKS_PER_SCALE, keep: float = KEEP, seed: int = SEED, batch: int = BATCH,
             baseline: float = 0.0) -> dict:
    """MDM for one normalised input ``x`` (3,S,S): ``logits_fn`` maps a (N,3,S,S) float32 batch to
    logits (N,C). Returns ``heatmap`` (S,S) in [0, 1], ``scales`` {s: (S,S)}, ``consistency``
    {s: mean consistency of its masks}, the original ``logits`` (C,) and the ``runs`` (forward passes)."""
    x = np.asarray(x, dtype=np.float32)
    size = x.shape[-1]
    scales = check_settings(scales, masks, keep, size)
    reference = np.asarray(logits_fn(x[None]), dtype=np.float64)[0]
    per_scale, mean_c, runs = {}, {}, 1
    for s in scales:
        m = dynamic_masks(size, s, int(masks), keep=float(keep), seed=int(seed))
        c = np.empty(len(m))
        for i in range(0, len(m), batch):
            mb = m[i: i + batch][:, None]  # (b,1,S,S)
            c[i: i + len(mb)] = consistency(logits_fn((x[None] * mb + baseline * (1 - mb)).astype(np.float32)),
                                            reference)
        runs += len(m)
        cover = m.sum(axis=0)
        heat = np.tensordot(c, m, axes=1) / np.maximum(cover, 1e-6)
        per_scale[s] = _normalised(heat)
        mean_c[s] = float(c.mean())
    heatmap = np.mean([per_scale[s] for s in scales], axis=0)
    return {"heatmap": heatmap, "scales": per_scale, "consistency": mean_c, "logits": reference, "runs": runs}


@dataclass(frozen=True)
class MdmExplanation:
    """An MDM explanation of one frame (pixel positions in model-input pixels)."""

    prediction: int
    class_name: str
    probability: float
    classes: tuple[str, ...]
    probabilities: np.ndarray
    logits: np.ndarray
    heatmap: np.ndarray  # (S,S) in [0, 1]
    scale_maps: dict  # {scale: (S,S) in [0, 1]}
    consistency: dict  # {scale: mean consistency of its masks}
    peak: tuple[int, int]  # (x, y) of the heatmap's maximum
    settings: dict
    runs: int
    image_size: tuple[int, int]
    raw: np.ndarray = field(repr=False)

    def to_dict(self) -> dict:
        """The JSON record (the heatmap rounded to 4 decimals)."""
        return {
            "method": "mdm",
            "image_size": list(self.image_size),
            "input_size": int(self.raw.shape[0]),
            "prediction": {"class": self.prediction, "class_name": self.class_name, "probability": self.probability},
            "classes": list(self.classes),
            "probabilities": [float(p) for p in self.probabilities],
            "logits": [float(v) for v in self.logits],
            "peak": list(self.peak),
            "mdm": {**self.settings, "forward_passes": self.runs,
                    "mean_consistency": {str(s): round(v, 6) for s, v in self.consistency.items()}},
            "heatmap": np.round(self.heatmap, 4).tolist(),
        }


def explain_mdm(explainer, frame, *, scales: Sequence[int] = SCALES, masks: int = MASKS_PER_SCALE,
                keep: float = KEEP, seed: int = SEED, batch: int = BATCH) -> MdmExplanation:
    """The MDM explanation of one frame with an open :class:`~edgeproto.device.explainer.Explainer`."""
    from edgeproto.device.explainer import frame_to_raw

    raw, size, _ = frame_to_raw(frame, explainer.size)
    x = explainer.to_input(raw[None])[0]
    out = mdm_maps(lambda b: explainer.infer(b)["logits"], x, scales=scales, masks=masks, keep=keep, seed=seed,
                   batch=batch)
    logits = out["logits"]
    pred = int(logits.argmax())
    probs = softmax(logits)
    y, x_ = np.unravel_index(int(out["heatmap"].argmax()), out["heatmap"].shape)
    settings = {"scales": list(out["scales"]), "masks_per_scale": int(masks), "keep": float(keep), "seed": int(seed),
                "baseline": "dataset mean colour", "detection_nodes": "logits (centred)"}
    return MdmExplanation(
        prediction=pred, class_name=explainer.classes[pred], probability=float(probs[pred]), classes=explainer.classes,
        probabilities=probs, logits=logits, heatmap=out["heatmap"], scale_maps=out["scales"],
        consistency=out["consistency"], peak=(int(x_), int(y)), settings=settings, runs=out["runs"],
        image_size=(int(size[0]), int(size[1])), raw=raw)
