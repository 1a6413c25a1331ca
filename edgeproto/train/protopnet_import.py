"""``edgeproto import protopnet``: a checkpoint of the official ProtoPNet code → an edgeproto checkpoint.

The official code (github cfchen-duke/ProtoPNet, ``save.py``) does ``torch.save(model)`` of a whole
``model.PPNet``; it is read without running pickled code (:mod:`edgeproto.train.pickled_modules`).
A plain state dict (``model.state_dict()``) works too, with ``--arch``; so does a CaBRNet ProtoPNet
state dict (``model_state.pth``, :func:`from_cabrnet`), whose legacy-compatible model is the same network.

Conversion (state-dict keys; the network is the same, so the outputs are the same):

- ``features.*`` → ``backbone.*`` (ResNet/VGG/DenseNet in torchvision's key layout, see
  :mod:`edgeproto.models.resnet` etc.; the backbone is told from the keys and shapes);
- ``add_on_layers.N.*`` → ``add_on.N.*`` (``regular``: 2 convolutions; ``bottleneck``: more);
- ``prototype_vectors`` (P,D,1,1) → ``prototype_layer.prototypes`` (P,D); ``ones`` (all ones,
  the unweighted L2 convolution) is dropped; ``last_layer.weight`` (C,P) as is, no bias;
- ``prototype_class_identity`` (an attribute of PPNet) → the class of each prototype; ``epsilon``
  (1e-4) → the ``l2_log`` family's ε; ``img_size`` → the image size; ImageNet mean/std (the
  official ``preprocess.py``).

PPNet's forward (``_l2_convolution``: ‖z‖² − 2z·p + ‖p‖², ReLU'd; min over locations;
log((d+1)/(d+ε)); last layer) equals edgeproto's ``l2_log`` op (direct form Σ(z−p)², max of
the log-similarity over locations, same last layer) up to float rounding. The imported prototypes
have no source patches: each record says ``no_source``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from edgeproto import atomic_files
from edgeproto.bundle import sha256_file
from edgeproto.data.base import IMAGENET_MEAN, IMAGENET_STD
from edgeproto.errors import EdgeprotoError
from edgeproto.models import create_model
from edgeproto.models.densenet import DENSENETS
from edgeproto.models.resnet import RESNETS, ResNetBottleneck
from edgeproto.models.vgg import VGG_CONFIGS
from edgeproto.train import checkpoint
from edgeproto.train.pickled_modules import Stubs, is_module, load_pickled, state_of

# the official code's classes (module file → class names), all read as inert stubs
PROTOPNET_CLASSES = {
    "model": ("PPNet",),
    "resnet_features": ("ResNet_features", "BasicBlock", "Bottleneck"),
    "vgg_features": ("VGG_features",),
    "densenet_features": ("DenseNet_features", "_DenseBlock", "_DenseLayer", "_Transition"),
}
PROTOPNET_ARCHS = tuple(sorted([*RESNETS, *VGG_CONFIGS, *(f"{v}_bn" for v in VGG_CONFIGS), *DENSENETS]))
DEFAULT_IMAGE_SIZE = 224  # the official settings.py


def _numbered(keys, pattern: str) -> dict[int, set[int]]:
    """{outer: {inner}} for the keys matching ``pattern`` with two number groups."""
    out: dict[int, set[int]] = {}
    for k in keys:
        m = re.fullmatch(pattern, k)
        if m:
            out.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    return out


def infer_arch(features: dict[str, Tensor]) -> str | None:
    """The backbone name that the ``features.*`` keys (prefix removed) and shapes belong to."""
    keys = set(features)
    if "conv1.weight" in keys and "layer1.0.conv1.weight" in keys:
        blocks = _numbered(keys, r"layer(\d)\.(\d+)\.conv1\.weight")
        layers = tuple(len(blocks.get(i, ())) for i in range(1, 5))
        bottleneck = "layer1.0.conv3.weight" in keys
        for name, (block, n) in RESNETS.items():
            if n == layers and (block is ResNetBottleneck) == bottleneck:
                return name
        return None
    if "features.conv0.weight" in keys:
        per_block = _numbered(keys, r"features\.denseblock(\d)\.denselayer(\d+)\.conv2\.weight")
        blocks = tuple(len(per_block[b]) for b in sorted(per_block))
        growth = features["features.denseblock1.denselayer1.conv2.weight"].shape[0] if blocks else 0
        init = features["features.conv0.weight"].shape[0]
        for name, spec in DENSENETS.items():
            if spec == (growth, blocks, init):
                return name
        return None
    convs = [k for k in keys if re.fullmatch(r"features\.\d+\.weight", k) and features[k].dim() == 4]
    if convs:
        bn = any(re.fullmatch(r"features\.\d+\.running_mean", k) for k in keys)
        for name, cfg in VGG_CONFIGS.items():
            if sum(v != "M" for v in cfg) == len(convs):
                return name + ("_bn" if bn else "")
    return None


def state_dict_of(obj: Any) -> dict[str, Tensor] | None:
    """``obj`` as a state dict (or the state dict under ``state_dict``/``model``), else None."""
    if isinstance(obj, dict):
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            return dict(obj)
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                return dict(inner)
    return None


def from_cabrnet(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A CaBRNet ProtoPNet state dict (``model_state.pth``) in the official key names.

    The inverse of CaBRNet's ``ProtoPNet._load_legacy_state_dict`` (github aiser-team/cabrnet,
    ``src/cabrnet/archs/protopnet/model.py``): ``extractor.convnet.*`` → ``features.*``, the add-on's
    convolutions in order → ``add_on_layers.0, 2, 4, …`` (CaBRNet names them from its YAML, e.g.
    ``conv1``/``conv2``, and matches them by size), ``classifier.prototypes`` → ``prototype_vectors``,
    ``classifier.last_layer.weight`` → ``last_layer.weight``, ``classifier.similarity_layer._summation_kernel``
    → ``ones``; ``classifier.proto_class_map`` is checked like PPNet's class identity. The add-on's
    activations are not in a state dict: ReLU between the convolutions and a final sigmoid, as every
    shipped CaBRNet ProtoPNet config (``configs/protopnet/*/model_arch.yml``) has them.
    """
    out: dict[str, Tensor] = {}
    convs = [k[len("extractor.add_on."):-len(".weight")] for k, v in state.items()
             if k.startswith("extractor.add_on.") and k.endswith(".weight") and v.dim() == 4]
    names = {"classifier.prototypes": "prototype_vectors", "classifier.last_layer.weight": "last_layer.weight",
             "classifier.similarity_layer._summation_kernel": "ones"}
    for key, value in state.items():
        if key.startswith("extractor.convnet."):
            out["features." + key[len("extractor.convnet."):]] = value
        elif key.startswith("extractor.add_on."):
            layer, _, param = key[len("extractor.add_on."):].rpartition(".")
            if layer not in convs:
                raise EdgeprotoError(f"CaBRNet add-on key {key!r} is not a convolution's: not supported")
            out[f"add_on_layers.{2 * convs.index(layer)}.{param}"] = value
        elif key in names:
            out[names[key]] = value
        elif key != "classifier.proto_class_map":
            raise EdgeprotoError(f"unexpected key {key!r} in the CaBRNet ProtoPNet state dict")
    return out


def read_protopnet(path: str | Path, arch: str | None = None) -> dict:
    """The official checkpoint's parts: state dict (official keys), backbone, attributes, format."""
    path = Path(path)
    obj, fmt = load_pickled(path, Stubs(PROTOPNET_CLASSES))
    attrs: dict[str, Any] = {}
    if is_module(obj):
        if obj.pickled_name.endswith(".DataParallel"):
            obj = obj.__dict__["_modules"].get("module")
        if not is_module(obj) or not obj.pickled_name.endswith(".PPNet"):
            raise EdgeprotoError(f"{path}: the pickled module is {getattr(obj, 'pickled_name', type(obj).__name__)}, "
                                 "not a ProtoPNet model.PPNet")
        attrs = {k: v for k, v in obj.__dict__.items() if not k.startswith("_")}
        state, kind = state_of(obj), "module"
    else:
        state, kind = state_dict_of(obj), "state_dict"
        if state is None:
            raise EdgeprotoError(f"{path} holds neither a pickled ProtoPNet (model.PPNet) nor a state dict")
        if arch is None:
            raise EdgeprotoError(f"{path} is a plain state dict: pass --arch (one of {', '.join(PROTOPNET_ARCHS)})")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    source = "protopnet"
    if any(k.startswith("extractor.convnet.") for k in state):
        source = "cabrnet"
        identity = state.get("classifier.proto_class_map")
        if isinstance(identity, Tensor):
            attrs["prototype_class_identity"] = identity
        state = from_cabrnet(state)
    if "prototype_vectors" not in state or "last_layer.weight" not in state:
        raise EdgeprotoError(f"{path}: no prototype_vectors / last_layer.weight: not a ProtoPNet checkpoint")
    features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    found = infer_arch(features)
    if arch is not None and arch not in PROTOPNET_ARCHS:
        raise EdgeprotoError(f"unknown --arch {arch!r}; known: {', '.join(PROTOPNET_ARCHS)}")
    if arch is None and found is None:
        raise EdgeprotoError(f"{path}: cannot tell the backbone from its features.* keys; pass --arch "
                             f"(one of {', '.join(PROTOPNET_ARCHS)})")
    if arch is not None and found is not None and arch != found:
        raise EdgeprotoError(f"--arch {arch} does not match the checkpoint, whose features are a {found}")
    if source == "cabrnet" and (arch or found).startswith("densenet"):
        raise EdgeprotoError("CaBRNet DenseNet extractors (torchvision's features, ending at norm5 without the "
                             "final ReLU of ProtoPNet's densenet_features) are not supported")
    return {"state": state, "arch": arch or found, "attrs": attrs, "format": fmt, "kind": kind, "source": source}


def _add_on_kind(state: dict[str, Tensor]) -> str:
    convs = [k for k in state if re.fullmatch(r"add_on_layers\.\d+\.weight", k)]
    if len(convs) < 2:
        raise EdgeprotoError("the checkpoint has no add_on_layers (1×1 convolutions): not a ProtoPNet checkpoint")
    return "regular" if len(convs) == 2 else "bottleneck"  # a one-pair bottleneck is the regular add-on


def _class_identity(attrs: dict, num_prototypes: int, num_classes: int) -> Tensor:
    """(P,) class of each prototype; the official assignment j // (P/C) must hold (no pruning)."""
    if num_prototypes % num_classes:
        raise EdgeprotoError(f"{num_prototypes} prototypes do not split evenly over {num_classes} classes "
                             "(a pruned checkpoint?): not supported")
    regular = torch.arange(num_prototypes) // (num_prototypes // num_classes)
    identity = attrs.get("prototype_class_identity")
    if isinstance(identity, Tensor):
        if tuple(identity.shape) != (num_prototypes, num_classes):
            raise EdgeprotoError(f"prototype_class_identity has shape {tuple(identity.shape)}, expected "
                                 f"({num_prototypes}, {num_classes})")
        if not torch.equal(identity.argmax(dim=1), regular):
            raise EdgeprotoError("the prototypes are not assigned to classes in order (j // per_class), as a pruned "
                                 "checkpoint's: not supported")
    return regular


def convert_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Official PPNet keys → edgeproto PrototypeNet keys (see the module docstring)."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("features."):
            out["backbone." + key[len("features."):]] = value
        elif key.startswith("add_on_layers."):
            out["add_on." + key[len("add_on_layers."):]] = value
        elif key == "prototype_vectors":
            if value.dim() != 4 or tuple(value.shape[2:]) != (1, 1):
                raise EdgeprotoError(f"prototype_vectors has shape {tuple(value.shape)}: only 1×1 prototypes "
                                     "(P, D, 1, 1) are supported")
            out["prototype_layer.prototypes"] = value[:, :, 0, 0]
        elif key == "ones":
            if not bool((value == 1).all()):
                raise EdgeprotoError("the checkpoint's 'ones' (L2 convolution weights) are not all 1: not supported")
        elif key == "last_layer.weight":
            out[key] = value
        else:
            raise EdgeprotoError(f"unexpected key {key!r} in the ProtoPNet checkpoint")
    return {k: v.detach().float().contiguous() if v.is_floating_point() else v for k, v in out.items()}


def read_classes(path: str | Path | None, num_classes: int) -> list[str] | None:
    """Class names, one a line (blank lines skipped), exactly ``num_classes`` of them."""
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EdgeprotoError(f"cannot read --classes {path}: {exc}") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != num_classes:
        raise EdgeprotoError(f"--classes {path} has {len(names)} names; the checkpoint has {num_classes} classes")
    return names


def data_config(root: str | Path | None, image_size: int) -> dict | None:
    """``--data DIR``: the CUB layout when DIR has images.txt, else an image folder."""
    if root is None:
        return None
    root = Path(root).resolve()
    name = "cub" if (root / "images.txt").is_file() else "folder"
    return {"name": name, "root": str(root), "image_size": image_size}


def check_out(out: Path, force: bool, inputs: dict) -> None:
    """-o/--out: not an input, and a new or empty directory or (with ``force``) an edgeproto checkpoint."""
    atomic_files.check_output(out, inputs, "-o/--out")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise EdgeprotoError(f"-o/--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not (out / checkpoint.CONFIG).is_file():
            raise EdgeprotoError(f"-o/--out {out} is a non-empty directory that is not an edgeproto checkpoint")
        checkpoint.read_config(out)
        if not force:
            raise EdgeprotoError(f"{out} already holds a checkpoint; pass --force to replace it")


def load_converted(model, converted: dict[str, Tensor], what: str) -> None:
    """Strict ``load_state_dict``; a mismatch is one clear error naming the first keys/shapes."""
    try:
        model.load_state_dict(converted, strict=True)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()]
        raise EdgeprotoError(f"the weights do not fit {what}: " + "; ".join(lines[:3])) from None


def write_imported(out: Path, model, model_cfg: dict, identity: Tensor, *, classes, data, imported: dict) -> dict:
    """Write the imported ``model`` as a checkpoint directory (atomically) and return its config.

    Class names: ``classes`` (a file), else the ``data`` folder's, else ``class_0…``; every prototype
    is recorded without a source patch (``no_source``).
    """
    num_classes, size = model_cfg["num_classes"], model_cfg["image_size"]
    names = read_classes(classes, num_classes)
    data_cfg = data_config(data, size)
    if data_cfg is not None:
        from edgeproto.data import build_dataset

        found = list(build_dataset(data_cfg, "test").classes)
        if len(found) != num_classes:
            raise EdgeprotoError(f"--data {data} has {len(found)} classes; the checkpoint has {num_classes}")
        names = names or found
    names = names or [f"class_{k}" for k in range(num_classes)]
    records = [{"index": j, "class": int(c), "class_name": names[int(c)], "source_image": None, "latent_hw": None,
                "patch_box": None, "similarity": None, "projected": False, "no_source": True, "patch_png": None}
               for j, c in enumerate(identity.tolist())]
    config = {
        "recipe": {"name": f"imported-{imported['from']}-{imported['arch']}",
                   "description": f"imported from {Path(imported['file']).name}", "data": data_cfg, "model": model_cfg},
        "model": model_cfg,
        "classes": names,
        "image_size": size,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "part_names": [],
        "prototypes": records,
        "pruned_prototypes": [],
        "merged_prototypes": {},
        "metrics": {},
        "imported": json.loads(json.dumps({**imported, "prototypes_without_source": len(records)}, default=list)),
        "torch_version": torch.__version__,
    }
    with atomic_files.staged_path(out) as stage:
        stage.mkdir()
        (stage / "prototypes").mkdir()
        checkpoint.save_weights(stage, model)
        checkpoint.save_config(stage, config)
    return config


def import_protopnet(
    path: str | Path,
    out: str | Path,
    *,
    arch: str | None = None,
    classes: str | Path | None = None,
    data: str | Path | None = None,
    image_size: int | None = None,
    force: bool = False,
) -> dict:
    """Convert an official ProtoPNet (or CaBRNet ProtoPNet) checkpoint at ``path`` into the checkpoint
    directory ``out``."""
    path, out = Path(path), Path(out)
    check_out(out, force, {"checkpoint file": path, "data folder": data, "classes file": classes})
    read = read_protopnet(path, arch)
    state, attrs = read["state"], read["attrs"]
    num_prototypes, dim = state["prototype_vectors"].shape[:2]
    num_classes = state["last_layer.weight"].shape[0]
    if state["last_layer.weight"].shape[1] != num_prototypes:
        raise EdgeprotoError(f"last_layer.weight has shape {tuple(state['last_layer.weight'].shape)}, "
                             f"expected ({num_classes}, {num_prototypes})")
    activation = attrs.get("prototype_activation_function", "log")
    if activation != "log":
        raise EdgeprotoError(f"prototype_activation_function {activation!r} is not supported (only 'log')")
    identity = _class_identity(attrs, num_prototypes, num_classes)
    size = int(image_size or attrs.get("img_size") or DEFAULT_IMAGE_SIZE)
    epsilon = float(attrs.get("epsilon", 1e-4))
    add_on = _add_on_kind(state)
    model_cfg = {
        "num_classes": num_classes, "in_channels": 3, "image_size": size, "backbone": {"name": read["arch"]},
        "prototypes": {"family": "l2_log", "per_class": num_prototypes // num_classes, "dim": dim,
                       "attrs": {"epsilon": epsilon}},
        "arch": "protopnet", "head": "linear", "head_features": 0, "head_attrs": {}, "add_on": add_on,
    }
    model = create_model(model_cfg)
    converted = convert_state(state)
    converted["prototype_class_identity"] = torch.nn.functional.one_hot(identity, num_classes).float()
    load_converted(model, converted, f"a {read['arch']} ProtoPNet with {add_on} add-on ({path})")
    imported = {"from": read["source"], "file": str(path.resolve()), "sha256": sha256_file(path),
                "format": read["format"], "kind": read["kind"], "arch": read["arch"], "add_on": add_on,
                "attributes": {k: attrs[k] for k in ("img_size", "prototype_shape", "num_classes", "epsilon",
                                                     "prototype_activation_function") if k in attrs}}
    return write_imported(out, model, model_cfg, identity, classes=classes, data=data, imported=imported)


__all__ = ["PROTOPNET_ARCHS", "import_protopnet", "infer_arch", "read_protopnet"]
