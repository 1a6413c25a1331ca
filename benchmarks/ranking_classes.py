"""Does the top-1 explaining prototype belong to the predicted class? Old rule vs the contract's.

For each prototype family, trains the tiny recipe of ``tests/conftest.py`` (32-px procedural data,
3 classes, 2 prototypes per class; the CBR autoencoder with the encoder of
``tests/test_families_extra.py``) and prints, over its test split, the share of images whose top-1
prototype has the predicted class under

- ``score × weight``: the former rule (argmax of score × the predicted class's weight);
- ``contract``: :func:`edgeproto.ranking.top_prototypes` (the predicted class's prototypes by
  similarity first);

and, as a check of shift-invariance, the share of images whose top-1 changes when 100 is added to
every score, for both rules.

    PYTHONPATH=. python benchmarks/ranking_classes.py [--families l2_log hyperpg ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import tiny_recipe  # noqa: E402

from edgeproto.data import build_dataset  # noqa: E402
from edgeproto.ranking import prototype_classes, top_prototypes  # noqa: E402
from edgeproto.train import train  # noqa: E402
from edgeproto.train.checkpoint import load_checkpoint  # noqa: E402

FAMILIES = {
    "l2_log": {},
    "cosine": {},
    "gaussian": {},
    "hyperpg": {},
    "hopfield": {},
    "tversky": {},
    "cbr_ae": {"model": {"arch": "cbr_ae", "backbone": {"name": "cbr_encoder", "width": 8,
                                                       "latent_channels": 4, "stages": 4}}},
}


def old_top1(logits: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The former rule: argmax over prototypes of score × the predicted class's weight."""
    return (scores * weights[logits.argmax(1)]).argmax(1)


def row(family: str, overrides: dict, workdir: Path) -> dict:
    out = workdir / family
    train(tiny_recipe(family, **overrides), out, force=True, quiet=True)
    model, config = load_checkpoint(out)
    ds = build_dataset(config["recipe"]["data"], "test")
    x = torch.stack([torch.as_tensor(np.asarray(ds[i][0], dtype=np.float32)) for i in range(len(ds))])
    with torch.no_grad():
        o = {k: v.numpy().astype(np.float64) for k, v in model(x).items()}
    weights = model.class_weights().numpy()
    classes = prototype_classes(config["prototypes"])
    pred = o["logits"].argmax(1)
    old = old_top1(o["logits"], o["scores"], weights)
    new = top_prototypes(o["logits"], o["scores"], classes, 1)[:, 0]
    old_shift = old_top1(o["logits"], o["scores"] + 100.0, weights)
    new_shift = top_prototypes(o["logits"], o["scores"] + 100.0, classes, 1)[:, 0]
    return {"family": family, "images": len(pred), "scores_min": float(o["scores"].min()),
            "old": float((classes[old] == pred).mean()), "new": float((classes[new] == pred).mean()),
            "old_shift_changed": float((old != old_shift).mean()), "new_shift_changed": float((new != new_shift).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    args = parser.parse_args()
    torch.set_num_threads(2)
    print("| family | images | min score | top-1 of predicted class: score × weight | contract "
          "| top-1 moved by +100: score × weight | contract |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            r = row(family, FAMILIES[family], Path(tmp))
            print(f"| {r['family']} | {r['images']} | {r['scores_min']:.3g} | {r['old']:.3f} | {r['new']:.3f} "
                  f"| {r['old_shift_changed']:.3f} | {r['new_shift_changed']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
