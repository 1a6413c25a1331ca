"""Training recipes (YAML): defaults, validation with clear errors, and loading.

Validation has two steps: :func:`_merge` fills the defaults and names unknown or missing keys;
then the pydantic schema (:class:`RecipeSchema`) checks every value's type and range, so a bad
recipe is refused with one line naming the key before any file is written.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from edgeproto.errors import EdgeprotoError
from edgeproto.yaml_files import load_yaml

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
        # ProtoPNet's add-on between backbone and prototypes: regular (conv-ReLU-conv-sigmoid) or
        # bottleneck (1×1 conv pairs halving the channels down to prototypes.dim)
        "add_on": "regular",
        # arch scale_seg (ScaleProtoSeg): feature chunks / prototype scales, and groups per class
        "scales": 4,
        "groups": 3,
        # arch proc_kd (edgeproto distill): temperature τ of the feature augmentation's attention
        # (codebook soft assignment) over the teacher's prototypes
        "augment_tau": 0.1,
        # arch patchct: temperature τ of the transport plans' softmax over cosine similarities
        "temperature": 0.1,
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
        # kld: ProtoSeg's diversity term, group_entropy: ScaleProtoSeg's entropy of group weights
        # (segmentation archs only); crs_ent_pixel: cross-entropy of the upsampled logits at the
        # input resolution (not in ProtoSeg, which takes it at the feature grid only);
        # ct_forward / ct_backward: arch patchct's conditional-transport cost between the patches and
        # the true label set, patch → label and label → patch
        "coefs": {"crs_ent": 1.0, "clst": 0.8, "sep": -0.08, "l1": 1e-4, "commit": 0.25,
                  "recon": 1.0, "r1": 1.0, "r2": 1.0, "kld": 0.25, "group_entropy": 0.05,
                  "crs_ent_pixel": 0.0, "ct_forward": 1.0, "ct_backward": 1.0},
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
        # segmentation archs: weight the cross-entropy per class by 1/sqrt(pixel frequency) on the
        # training masks (normalised to mean 1), so a small part class is not drowned by background
        "balance_classes": False,
        # segmentation archs: learning-rate decay of the joint stage, constant or poly (ProtoSeg:
        # lr · (1 − step/steps)^0.9 after every optimizer step)
        "lr_decay": "constant",
        # edgeproto distill (arch proc_kd): weights of the distillation terms and their softmax
        # temperature: scores = KL of the teacher's vs the student's prototype-score distribution,
        # maps = per-location KL of the prototype assignment (teacher maps resized to the student's
        # grid), features = MSE of the student's projection and the teacher's latent patches (resized
        # likewise), logits = Hinton's logit KD (only when teacher and student have the same classes)
        "distill": {"temperature": 1.0, "scores": 1.0, "maps": 1.0, "features": 0.0, "logits": 0.0},
        # arch patchct: the CT cost joins the loss from this joint-stage epoch on (0: from the start);
        # before, the per-label BCE alone shapes the embeddings (see models/patchct_procedural.md)
        "ct_from_epoch": 0,
        # arch dprotonet: momentum of the multi-image prototype update after each step, and how many
        # training images each prototype averages at the end (its nearest patch in each)
        "proto_momentum": 0.1,
        "proto_images": 5,
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


# --------------------------------------------------------------------------- the schema

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _number(value: Any) -> Any:
    """A real number: ints and floats; also "1e-4", which YAML 1.1 reads as a string. Never a bool."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return float(value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return float(value)
    raise ValueError("must be a number")


Real = Annotated[float, BeforeValidator(_number)]
Rate = Annotated[float, BeforeValidator(_number), Field(ge=0)]
Count = Annotated[StrictInt, Field(ge=0, le=1_000_000)]
Positive = Annotated[StrictInt, Field(ge=1, le=1_000_000)]
Size = Annotated[StrictInt, Field(ge=1, le=4096)]  # widths, channels, batch sizes


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class LrSchema(_Section):
    backbone: Rate
    add_on: Rate
    prototypes: Rate
    last_layer: Rate
    decoder: Rate


class CoefsSchema(_Section):  # loss weights: any sign (ProtoPNet's separation weight is negative)
    crs_ent: Real
    clst: Real
    sep: Real
    l1: Real
    commit: Real
    recon: Real
    r1: Real
    r2: Real
    kld: Real
    group_entropy: Real
    crs_ent_pixel: Real
    ct_forward: Real
    ct_backward: Real


class DistillSchema(_Section):
    temperature: Annotated[float, BeforeValidator(_number), Field(gt=0)]
    scores: Rate
    maps: Rate
    features: Rate
    logits: Rate


class TrainSchema(_Section):
    batch_size: Size
    warm_epochs: Count
    joint_epochs: Count
    last_layer_epochs: Count
    lr: LrSchema
    coefs: CoefsSchema
    weight_decay: Rate
    push_batch_size: Size
    push: Literal["project", "visualize"]
    joint_last_layer: StrictBool
    init_from: StrictStr
    freeze_backbone: StrictBool
    prune_unused: StrictBool
    augment_shift: Annotated[StrictInt, Field(ge=0, le=1024)]
    balance_classes: StrictBool
    lr_decay: Literal["constant", "poly"]
    distill: DistillSchema
    ct_from_epoch: Count
    proto_momentum: Annotated[float, BeforeValidator(_number), Field(ge=0, le=1)]
    proto_images: Annotated[StrictInt, Field(ge=1, le=10_000)]


class BackboneSchema(BaseModel):
    """The backbone's name and the options every registered backbone shares (others: the backbone checks)."""

    model_config = ConfigDict(extra="allow", strict=True)
    name: StrictStr
    width: Size | None = None
    stages: Annotated[StrictInt, Field(ge=1, le=8)] | None = None
    latent_channels: Size | None = None
    blocks: Annotated[StrictInt, Field(ge=1, le=64)] | None = None
    stem_stride: Annotated[StrictInt, Field(ge=1, le=64)] | None = None
    widths: Annotated[list[Size], Field(min_length=1, max_length=16)] | None = None
    activation: StrictStr | None = None
    downsample: Annotated[StrictInt, Field(ge=1, le=6)] | None = None
    dilations: Annotated[list[Annotated[StrictInt, Field(ge=1, le=64)]], Field(min_length=1, max_length=16)] | None = None


# family / head attribute → (lower bound, bound included?)
_ATTR_BOUNDS = {"epsilon": (0.0, False), "tau": (0.0, False), "beta": (0.0, True), "steps": (1.0, True)}


class PrototypesSchema(_Section):
    family: StrictStr
    per_class: Annotated[StrictInt, Field(ge=1, le=10_000)]
    dim: Annotated[StrictInt, Field(ge=1, le=65_536)]
    attrs: dict[StrictStr, Real]


class ModelSchema(_Section):
    arch: StrictStr  # a registered architecture (edgeproto.models.archs)
    backbone: BackboneSchema
    prototypes: PrototypesSchema
    head: Literal["linear", "nonneg", "tversky"]
    head_features: Count
    head_attrs: dict[StrictStr, Real]
    add_on: Literal["regular", "bottleneck"]
    scales: Annotated[StrictInt, Field(ge=1, le=16)]
    groups: Annotated[StrictInt, Field(ge=1, le=64)]
    augment_tau: Annotated[float, BeforeValidator(_number), Field(gt=0)]
    temperature: Annotated[float, BeforeValidator(_number), Field(gt=0)]


class DataSchema(BaseModel):
    """The dataset's name; its other keys are checked by :func:`edgeproto.data.options.check_config`
    and the dataset itself (before anything is written)."""

    model_config = ConfigDict(extra="allow", strict=True)
    name: StrictStr
    image_size: Annotated[StrictInt, Field(ge=8, le=2048)] | None = None
    seed: Annotated[StrictInt, Field(ge=0, le=2**32 - 1)] | None = None
    root: StrictStr | None = None


class RecipeSchema(_Section):
    name: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    description: StrictStr
    seed: Annotated[StrictInt, Field(ge=0, le=2**32 - 1)]
    data: DataSchema
    model: ModelSchema
    train: TrainSchema


def _schema_error(exc: ValidationError) -> EdgeprotoError:
    err = exc.errors(include_url=False)[0]
    key = ".".join(str(p) for p in err["loc"]) or "recipe"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    value = err.get("input")
    shown = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
    return EdgeprotoError(f"recipe key {key!r}: {msg[0].lower() + msg[1:]}, got {shown}{more}")


def _check_attrs(attrs: dict, where: str) -> None:
    for name, value in attrs.items():
        if name in _ATTR_BOUNDS:
            low, inclusive = _ATTR_BOUNDS[name]
            if value < low or (value == low and not inclusive):
                raise EdgeprotoError(f"recipe key '{where}.{name}' must be {'≥' if inclusive else '>'} {low:g}, "
                                     f"got {value:g}")


def validate_recipe(raw: Any) -> dict:
    """Fill defaults and check every key; raises ``EdgeprotoError`` naming the bad key."""
    recipe = _merge(DEFAULTS, raw, ())
    if "name" not in recipe["data"]:
        raise EdgeprotoError("recipe is missing required key 'data.name'")
    try:
        RecipeSchema.model_validate(recipe)
    except ValidationError as exc:
        raise _schema_error(exc) from None
    # "1e-4" (a string to YAML 1.1) → the number it means
    t, m = recipe["train"], recipe["model"]
    for section in (t["lr"], t["coefs"], m["prototypes"]["attrs"], m["head_attrs"], t["distill"]):
        section.update({k: _number(v) for k, v in section.items() if isinstance(v, str)})
    for key in ("weight_decay", "proto_momentum"):
        if isinstance(t[key], str):
            t[key] = _number(t[key])
    if isinstance(m["augment_tau"], str):
        m["augment_tau"] = _number(m["augment_tau"])
    if isinstance(m["temperature"], str):
        m["temperature"] = _number(m["temperature"])
    _check_attrs(recipe["model"]["prototypes"]["attrs"], "model.prototypes.attrs")
    _check_attrs(recipe["model"]["head_attrs"], "model.head_attrs")
    from edgeproto.data.options import check_config

    check_config(recipe["data"], "train")
    from edgeproto.models import ARCHS

    if m["arch"] not in ARCHS:
        raise EdgeprotoError(f"recipe key 'model.arch': unknown architecture {m['arch']!r}; known: {', '.join(ARCHS)}")
    if m["arch"] == "cbr_ae" and (m["head"] != "linear" or m["backbone"].get("name") != "cbr_encoder"):
        raise EdgeprotoError("model.arch cbr_ae needs model.head: linear and model.backbone.name: cbr_encoder")
    if m["arch"] == "dprotonet" and (m["head"] != "linear" or m["add_on"] != "regular"):
        raise EdgeprotoError("model.arch dprotonet has its own add-on and a linear head: leave model.head and "
                             "model.add_on out")
    if m["head"] != "tversky" and (m["head_attrs"] or m["head_features"]):
        raise EdgeprotoError("recipe keys 'model.head_features' and 'model.head_attrs' need model.head: tversky")
    return recipe


def load_recipe(path: str | Path) -> dict:
    """Read and validate a recipe file."""
    path = Path(path)
    raw = load_yaml(path, "recipe")
    if not isinstance(raw, dict):
        raise EdgeprotoError(f"recipe {path} must be a YAML mapping")
    return validate_recipe(raw)
