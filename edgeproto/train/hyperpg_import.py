"""``edgeproto import hyperpg``: a checkpoint of the public HyperPg code → an edgeproto checkpoint.

The public code (github nips25-12267/12267-hyperpg @ba8c122, ``src/prob_proto/models/protopnet.py``,
``prototype_modules/sphere_prototypes.py``, ``backbones/resnet50.py``, ``pl_training.py``) trains a
``ProtoPNet``: ``backbone.net`` (the children of a torchvision ResNet up to ``layer4``), ``neck.convs``
(1×1 conv, ReLU, 1×1 conv, sigmoid), ``prototype_module`` and ``clf`` (global max-pool, flatten,
``Linear``), saved by Lightning (``.ckpt``: the weights under ``state_dict``, prefixed ``model.``).

Conversion (state-dict keys and values):

- ``backbone.net.{0,1,4,5,6,7}`` → ``backbone.{conv1,bn1,layer1..4}`` (ResNet backbones only: the
  public DenseNet/ConvNeXt/ViT backbones are not these networks);
- ``neck.convs.{0,2}`` → ``add_on.{0,2}`` (the ``regular`` add-on);
- ``prototype_module.prototypes`` (C,P,D,1,1) → (C·P, D), prototype j of class j // P (the public
  ``view(C·P, …)`` order); ``mus`` (C,P,1) → μ (C·P,); ``sigmas`` σ → **log σ** (σ must be > 0);
  a module without ``mus``/``sigmas`` is the public ``cosine`` module → family ``cosine``;
- ``clf.2.weight`` (C, C·P) → ``last_layer.weight`` (a non-zero ``clf.2.bias`` is refused).

Differences that remain, by design of edgeproto's ``hyperpg`` op (see ``models/hyperpg_procedural.md``):

- the public log-density is −(cos−μ)²/(2σ²+1e-6) − log(2πσ); edgeproto's is −(cos−μ)²/(2σ²) −
  log(√(2π)σ): every score is higher here by log √(2π) ≈ 0.919, so each logit is higher by
  0.919·Σ_j w_cj (a per-class constant; the explanation ranking is unchanged), and the 1e-6 is a
  relative difference of 1e-6/(2σ²) in the quadratic term;
- the public backbone applies torchvision's ``weights.transforms()`` inside its forward (resize to
  232, centre crop 224, ImageNet normalisation); edgeproto's preprocessing resizes the image to
  ``image_size`` and normalises, so feed it images framed as that crop.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
from torch import Tensor

from edgeproto.bundle import sha256_file
from edgeproto.errors import EdgeprotoError
from edgeproto.models import create_model
from edgeproto.train.pickled_modules import Stubs, load_pickled
from edgeproto.train.protopnet_import import (
    DEFAULT_IMAGE_SIZE, state_dict_of, check_out, infer_arch, load_converted, write_imported,
)

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_RESNET_CHILDREN = {0: "conv1", 1: "bn1", 4: "layer1", 5: "layer2", 6: "layer3", 7: "layer4"}


def convert_hyperpg(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], str, int, int]:
    """(edgeproto state dict, family, classes, prototypes per class) from the public model's state dict."""
    state = {k[len("model."):] if k.startswith("model.") else k: v for k, v in state.items()}
    protos = state.get("prototype_module.prototypes")
    if protos is None or protos.dim() != 5 or tuple(protos.shape[3:]) != (1, 1) or "clf.2.weight" not in state:
        raise EdgeprotoError("no prototype_module.prototypes (C, P, D, 1, 1) / clf.2.weight: not a HyperPg "
                             "ProtoPNet checkpoint")
    classes, per_class, dim = protos.shape[:3]
    family = "hyperpg" if "prototype_module.mus" in state else "cosine"
    out: dict[str, Tensor] = {"prototype_layer.prototypes": protos.reshape(classes * per_class, dim)}
    for key, value in state.items():
        m = re.fullmatch(r"backbone\.net\.(\d+)\.(.+)", key)
        if m:
            child = _RESNET_CHILDREN.get(int(m.group(1)))
            if child is None:
                raise EdgeprotoError(f"unexpected backbone key {key!r}: only ResNet backbones are supported")
            out[f"backbone.{child}.{m.group(2)}"] = value
        elif key.startswith("neck.convs."):
            out["add_on." + key[len("neck.convs."):]] = value
        elif key == "prototype_module.mus":
            out["prototype_layer.mu"] = value.reshape(-1)
        elif key == "prototype_module.sigmas":
            if not bool((value > 0).all()):
                raise EdgeprotoError("prototype_module.sigmas has values ≤ 0: log σ is undefined")
            out["prototype_layer.log_sigma"] = value.reshape(-1).log()
        elif key == "clf.2.weight":
            out["last_layer.weight"] = value
        elif key == "clf.2.bias":
            if bool((value != 0).any()):
                raise EdgeprotoError("clf.2.bias is not zero: edgeproto's last layer has no bias")
        elif key != "prototype_module.prototypes":
            raise EdgeprotoError(f"unexpected key {key!r} in the HyperPg checkpoint")
    if family == "cosine" and "prototype_module.sigmas" in state:
        raise EdgeprotoError("a prototype module with sigmas but no mus (the public 'vmf' one) is not supported")
    return {k: v.detach().float().contiguous() for k, v in out.items()}, family, classes, per_class


def import_hyperpg(
    path: str | Path,
    out: str | Path,
    *,
    classes: str | Path | None = None,
    data: str | Path | None = None,
    image_size: int | None = None,
    force: bool = False,
) -> dict:
    """Convert a public-HyperPg ProtoPNet checkpoint (Lightning ``.ckpt`` or state dict) into ``out``."""
    path, out = Path(path), Path(out)
    check_out(out, force, {"checkpoint file": path, "data folder": data, "classes file": classes})
    obj, fmt = load_pickled(path, Stubs({}))
    state = state_dict_of(obj)
    if state is None:
        raise EdgeprotoError(f"{path} holds no state dict (a Lightning checkpoint keeps it under 'state_dict')")
    converted, family, num_classes, per_class = convert_hyperpg(state)
    features = {k[len("backbone."):]: v for k, v in converted.items() if k.startswith("backbone.")}
    arch = infer_arch(features)
    if arch is None or not arch.startswith("resnet"):
        raise EdgeprotoError(f"{path}: the backbone is not a ResNet edgeproto knows (resnet18…152)")
    size = int(image_size or DEFAULT_IMAGE_SIZE)
    dim = converted["prototype_layer.prototypes"].shape[1]
    model_cfg = {
        "num_classes": num_classes, "in_channels": 3, "image_size": size, "backbone": {"name": arch},
        "prototypes": {"family": family, "per_class": per_class, "dim": dim, "attrs": {}},
        "arch": "protopnet", "head": "linear", "head_features": 0, "head_attrs": {}, "add_on": "regular",
    }
    model = create_model(model_cfg)
    identity = torch.arange(num_classes * per_class) // per_class
    converted["prototype_class_identity"] = torch.nn.functional.one_hot(identity, num_classes).float()
    load_converted(model, converted, f"a {arch} HyperPg ProtoPNet ({path})")
    imported = {"from": "hyperpg", "file": str(path.resolve()), "sha256": sha256_file(path), "format": fmt,
                "kind": "state_dict", "arch": arch, "add_on": "regular", "family": family,
                "logit_shift_per_class": ((LOG_SQRT_2PI * model.last_layer.weight.detach().sum(dim=1)).tolist()
                                          if family == "hyperpg" else None)}
    return write_imported(out, model, model_cfg, identity, classes=classes, data=data, imported=imported)
