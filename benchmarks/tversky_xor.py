"""Linear head vs Tversky head on the XOR rule of the procedural data.

The recipe ``models/tversky_xor.yaml`` (class = exactly one of circle and square, see
``edgeproto.data.procedural``) is trained with everything equal except ``model.head``: ``tversky``
(as written) and ``linear`` (ProtoPNet's last layer). Both start from the ProtoPNet checkpoint the
recipe names in ``train.init_from`` (trained first, from ``models/protopnet_procedural.yaml``, when
missing) and train only the head on the same frozen prototype scores, which say which parts are
present. No linear function of them separates "exactly one" from "none or both"; a Tversky head
can (common features reward, distinctive features penalise). ``--mlp`` adds a two-layer MLP head
fitted the same way, as the ceiling of those frozen features.

    python benchmarks/tversky_xor.py [--recipe models/tversky_xor.yaml] [--out runs] [--seeds 0 1] [--mlp] [--json]

Writes the checkpoints to ``OUT/<recipe name>-<head>-s<seed>`` and prints test accuracy before
push, after push and final (after last-layer fine-tuning) for each head and seed.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

from edgeproto.train import load_recipe, train, validate_recipe


def variant(recipe: dict, head: str, seed: int) -> dict:
    raw = copy.deepcopy(recipe)
    raw["model"]["head"] = head
    if head != "tversky":
        raw["model"]["head_features"], raw["model"]["head_attrs"] = 0, {}
    raw["seed"] = seed
    raw["name"] = f"{recipe['name']}-{head}-s{seed}"
    return validate_recipe(raw)


def ensure_source(recipe: dict) -> None:
    source = Path(recipe["train"]["init_from"])
    if source and not (source / "config.json").exists():
        print(f"training the source checkpoint {source} (models/protopnet_procedural.yaml) first")
        train(load_recipe("models/protopnet_procedural.yaml"), source, force=True, quiet=True)


def mlp_ceiling(recipe: dict, epochs: int = 100) -> tuple[float, float]:
    """Train/test accuracy of a 2-layer MLP (64 hidden) on the frozen source's prototype scores."""
    import torch

    from edgeproto.data import build_dataset
    from edgeproto.train.checkpoint import load_checkpoint
    from edgeproto.train.trainer import materialize, predict

    torch.manual_seed(recipe["seed"])
    model, _ = load_checkpoint(recipe["train"]["init_from"])
    split = {}
    for name in ("train", "test"):
        x, y = materialize(build_dataset(recipe["data"], name))
        split[name] = (predict(model, x)["scores"], y)
    s, y = split["train"]
    head = torch.nn.Sequential(torch.nn.Linear(s.shape[1], 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))
    opt = torch.optim.Adam(head.parameters(), lr=recipe["train"]["lr"]["last_layer"])
    g = torch.Generator().manual_seed(recipe["seed"])
    for _ in range(epochs):
        perm = torch.randperm(len(s), generator=g)
        for i in range(0, len(perm), recipe["train"]["batch_size"]):
            idx = perm[i : i + recipe["train"]["batch_size"]]
            loss = torch.nn.functional.cross_entropy(head(s[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return tuple((head(split[n][0]).argmax(1) == split[n][1]).float().mean().item() for n in ("train", "test"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="models/tversky_xor.yaml")
    parser.add_argument("--out", default="runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--heads", nargs="+", default=["linear", "tversky"])
    parser.add_argument("--mlp", action="store_true", help="also fit a 2-layer MLP head (the features' ceiling)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    base = load_recipe(args.recipe)
    ensure_source(base)
    rows = []
    for seed in args.seeds:
        for head in args.heads:
            recipe = variant(base, head, seed)
            t0 = time.monotonic()
            config = train(recipe, Path(args.out) / recipe["name"], force=True, quiet=True)
            m = config["metrics"]
            rows.append({"head": head, "seed": seed, "before_push": m["test_accuracy_before_push"],
                         "after_push": m["test_accuracy_after_push"], "test_accuracy": m["test_accuracy"],
                         "train_accuracy": m["train_accuracy"], "seconds": round(time.monotonic() - t0, 1)})
    if args.mlp:
        for seed in args.seeds:
            t0 = time.monotonic()
            tr, te = mlp_ceiling({**base, "seed": seed})
            rows.append({"head": "mlp", "seed": seed, "before_push": float("nan"), "after_push": float("nan"),
                         "test_accuracy": te, "train_accuracy": tr, "seconds": round(time.monotonic() - t0, 1)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'head':8} {'seed':>4} {'before push':>11} {'after push':>10} {'test acc':>8} {'train acc':>9} {'s':>6}")
    for r in rows:
        print(f"{r['head']:8} {r['seed']:>4} {r['before_push']:>11.3f} {r['after_push']:>10.3f} "
              f"{r['test_accuracy']:>8.3f} {r['train_accuracy']:>9.3f} {r['seconds']:>6.0f}")
    for head in args.heads + (["mlp"] if args.mlp else []):
        accs = [r["test_accuracy"] for r in rows if r["head"] == head]
        print(f"{head}: mean test accuracy {statistics.mean(accs):.3f} over {len(accs)} seed(s)")


if __name__ == "__main__":
    main()
