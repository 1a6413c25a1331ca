"""Training recipes (YAML): defaults, validation with clear errors, and loading."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from edgeproto.errors import EdgeprotoError

# Every key a recipe may set, with its default. ``None`` marks a required key.
# ``data`` and ``model.backbone`` are open: their keys are checked by the dataset/backbone.
DEFAULTS: dict[str, Any] = {
    "name": None,
    "description": "",
    "seed": 0,
    "data": None,
    "model": {
        # protopnet: backbone → add-on → prototype layer → max-pool → head; cbr_ae: Li et al.'s
        # case-based reasoning autoencoder (backbone cbr_encoder, latent vector, decoder, 4-term loss)
        "arch": "protopnet",
        "backbone": {"name": "small_cnn"},
        "prototypes": {"family": None, "per_class": 5, "dim": 64, "attrs": {}},
        # classification head on the pooled scores: linear (ProtoPNet) | nonneg (ReLU'd weights)
        # | tversky (Tversky similarity to class prototypes; head_features: feature-bank size,
        # 0 = as many as prototypes; head_attrs: the tversky op's attributes, e.g. tau)
        "head": "linear",
        "head_features": 0,
        "head_attrs": {},
    },
    "train": {
        "batch_size": 64,
        "warm_epochs": 2,
        "joint_epochs": 10,
        "last_layer_epochs": 5,
        "lr": {"backbone": 2e-3, "add_on": 3e-3, "prototypes": 3e-3, "last_layer": 1e-3, "decoder": 2e-3},
        # ProtoPNet's coefficients; cluster/separation use -score (see edgeproto.train.losses).
        # commit: weight of a family's auxiliary loss (codebook: VQ codebook + commitment loss)
        # recon, r1, r2: arch cbr_ae's reconstruction, prototype→encoding and encoding→prototype terms
        "coefs": {"crs_ent": 1.0, "clst": 0.8, "sep": -0.08, "l1": 1e-4, "commit": 0.25,
                  "recon": 1.0, "r1": 1.0, "r2": 1.0},
        "weight_decay": 1e-3,
        "push_batch_size": 128,
        # project: replace each prototype by its closest own-class training patch (ProtoPNet);
        # visualize: record that patch (source, box, PNG) but keep the learned prototype
        "push": "project",
        # also train the last layer in the joint stage (ProtoPNet keeps it fixed there); always on
        # for the tversky head, whose random init would otherwise steer the features
        "joint_last_layer": False,
        # a checkpoint directory to start from ("" = none): its backbone and add-on weights, and
        # its prototype-layer parameters where name and shape match (never its head)
        "init_from": "",
        # keep the backbone fixed (no gradient, BatchNorm statistics frozen) in every stage
        "freeze_backbone": False,
        # after training, zero the class weights of prototypes that never win a location (are
        # never the argmax over prototypes anywhere on the training split); listed in the config
        "prune_unused": False,
        "augment_shift": 0,  # random translation of training images by up to N pixels
    },
}
_OPEN = {("data",), ("model", "backbone"), ("model", "prototypes", "attrs"), ("model", "head_attrs")}


def _merge(defaults: Any, given: Any, path: tuple[str, ...]) -> Any:
    where = ".".join(path) or "recipe"
    if path in _OPEN:
        if not isinstance(given, dict):
            raise EdgeprotoError(f"recipe key {where!r} must be a mapping")
        return {**(defaults or {}), **given}
    if not isinstance(defaults, dict):
        return given
    if not isinstance(given, dict):
        raise EdgeprotoError(f"recipe key {where!r} must be a mapping, got {given!r}")
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise EdgeprotoError(
            f"unknown recipe key(s) {', '.join('.'.join(path + (k,)) for k in unknown)}; "
            f"allowed in {where}: {', '.join(sorted(defaults))}"
        )
    out = {}
    for key, default in defaults.items():
        sub = path + (key,)
        if key in given:
            out[key] = _merge(default, given[key], sub)
        elif default is None or (isinstance(default, dict) and _has_required(default)):
            if default is None:
                raise EdgeprotoError(f"recipe is missing required key {'.'.join(sub)!r}")
            out[key] = _merge(default, {}, sub)
        else:
            out[key] = copy.deepcopy(default)
    return out


def _has_required(d: dict) -> bool:
    return any(v is None or (isinstance(v, dict) and _has_required(v)) for v in d.values())


def validate_recipe(raw: Any) -> dict:
    """Fill defaults and check every key; raises ``EdgeprotoError`` naming the bad key."""
    recipe = _merge(DEFAULTS, raw, ())
    if "name" not in recipe["data"]:
        raise EdgeprotoError("recipe is missing required key 'data.name'")
    t = recipe["train"]
    for key in ("batch_size", "warm_epochs", "joint_epochs", "last_layer_epochs"):
        if not isinstance(t[key], int) or t[key] < 0 or (key == "batch_size" and t[key] == 0):
            raise EdgeprotoError(f"recipe key 'train.{key}' must be a non-negative integer")
    for key in ("joint_last_layer", "freeze_backbone", "prune_unused"):
        if not isinstance(t[key], bool):
            raise EdgeprotoError(f"recipe key 'train.{key}' must be true or false")
    if not isinstance(t["init_from"], str):
        raise EdgeprotoError("recipe key 'train.init_from' must be a checkpoint directory (a string)")
    if t["push"] not in ("project", "visualize"):
        raise EdgeprotoError(f"recipe key 'train.push' must be project or visualize, got {t['push']!r}")
    m = recipe["model"]
    if m["arch"] not in ("protopnet", "cbr_ae"):
        raise EdgeprotoError(f"recipe key 'model.arch' must be protopnet or cbr_ae, got {m['arch']!r}")
    if m["arch"] == "cbr_ae" and (m["head"] != "linear" or m["backbone"].get("name") != "cbr_encoder"):
        raise EdgeprotoError("model.arch cbr_ae needs model.head: linear and model.backbone.name: cbr_encoder")
    heads = ("linear", "nonneg", "tversky")
    if m["head"] not in heads:
        raise EdgeprotoError(f"recipe key 'model.head' must be one of {', '.join(heads)}, got {m['head']!r}")
    if not isinstance(m["head_features"], int) or isinstance(m["head_features"], bool) or m["head_features"] < 0:
        raise EdgeprotoError("recipe key 'model.head_features' must be a non-negative integer")
    if m["head"] != "tversky" and (m["head_attrs"] or m["head_features"]):
        raise EdgeprotoError("recipe keys 'model.head_features' and 'model.head_attrs' need model.head: tversky")
    p = recipe["model"]["prototypes"]
    for key in ("per_class", "dim"):
        if not isinstance(p[key], int) or p[key] < 1:
            raise EdgeprotoError(f"recipe key 'model.prototypes.{key}' must be a positive integer")
    return recipe


def load_recipe(path: str | Path) -> dict:
    """Read and validate a recipe file."""
    path = Path(path)
    if not path.is_file():
        raise EdgeprotoError(f"recipe not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise EdgeprotoError(f"recipe {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise EdgeprotoError(f"recipe {path} must be a YAML mapping")
    return validate_recipe(raw)
