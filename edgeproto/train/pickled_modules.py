"""Read a ``torch.save`` file of a whole module (or a state dict) without running pickled code.

A pickled ``nn.Module`` names its classes (``model.PPNet``, ``torch.nn.modules.conv.Conv2d``, …);
unpickling normally imports and runs them. Here every allowed class name is mapped to an inert
:class:`PickledObject` that only keeps the pickled attributes, and everything else is refused:

- zip files (torch ≥ 1.6): :func:`torch.serialization.get_unsafe_globals_in_checkpoint` lists the
  names the pickle needs (statically); any that is not allowed is refused before loading, then
  ``torch.load(weights_only=True)`` runs inside :class:`torch.serialization.safe_globals` with the
  stubs: torch's weights-only unpickler allows only its tensor/storage rebuild functions,
  ``collections.OrderedDict`` and the stubs.
- legacy (non-zip) files: torch's weights-only unpickler refuses their module records, so they are
  read by ``torch.load(pickle_module=...)`` with :class:`RestrictedUnpickler`, whose ``find_class``
  returns only torch's tensor/parameter rebuild functions, ``OrderedDict``, ``set`` and the stubs
  (storage types are resolved by torch before it is asked) and raises for any other name.

:func:`state_of` flattens a stub tree back into a state dict (parameters, persistent buffers).
"""

from __future__ import annotations

import collections
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from edgeproto.errors import EdgeprotoError

# torch.nn classes a ProtoPNet-style module tree may hold (their pickled state is plain data)
TORCH_MODULES = {
    "torch.nn.modules.conv": ("Conv2d",),
    "torch.nn.modules.batchnorm": ("BatchNorm2d",),
    "torch.nn.modules.activation": ("ReLU", "ReLU6", "Sigmoid"),
    "torch.nn.modules.pooling": ("MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"),
    "torch.nn.modules.container": ("Sequential", "ModuleList", "ModuleDict"),
    "torch.nn.modules.linear": ("Linear", "Identity"),
    "torch.nn.modules.dropout": ("Dropout",),
    "torch.nn.parallel.data_parallel": ("DataParallel",),
}
# functions the legacy reader may call: they rebuild tensors and containers, nothing else
_LEGACY_CALLABLES = {
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
    ("torch", "Size"): torch.Size,
}


class PickledObject:
    """An inert stand-in for a pickled class instance: its pickled attributes, no behaviour."""

    pickled_name = "?"

    def __init__(self, *args, **kwargs) -> None:  # NEWOBJ may pass constructor arguments: ignored
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"<pickled {self.pickled_name}>"


class Stubs:
    """The allowed class names (``module.Class``) and their stub classes, made on first use."""

    def __init__(self, project_classes: dict[str, tuple[str, ...]]) -> None:
        # project classes match on the last module component (``model.PPNet`` or ``pkg.model.PPNet``)
        self.project = {(mod, name) for mod, names in project_classes.items() for name in names}
        self.torch = {(mod, name) for mod, names in TORCH_MODULES.items() for name in names}
        self._made: dict[str, type] = {}

    def allowed(self, module: str, name: str) -> bool:
        return (module, name) in self.torch or (module.rsplit(".", 1)[-1], name) in self.project

    def stub(self, module: str, name: str) -> type:
        full = f"{module}.{name}"
        if full not in self._made:
            self._made[full] = type(name, (PickledObject,), {"pickled_name": full, "__module__": __name__})
        return self._made[full]


def is_zip(path: Path) -> bool:
    return zipfile.is_zipfile(path)


def load_pickled(path: str | Path, stubs: Stubs) -> tuple[Any, str]:
    """The object in a ``torch.save`` file (stubs for the allowed classes) and the file format
    (``zip`` or ``legacy``); EdgeprotoError naming what is refused."""
    path = Path(path)
    if not path.is_file():
        raise EdgeprotoError(f"checkpoint file not found: {path}")
    if is_zip(path):
        return _load_zip(path, stubs), "zip"
    return _load_legacy(path, stubs), "legacy"


def _refuse(path: Path, names: list[str]) -> EdgeprotoError:
    return EdgeprotoError(
        f"{path}: refusing to unpickle {', '.join(sorted(set(names)))}: not a class of a ProtoPNet "
        "checkpoint (only torch tensors and the known model classes are read; no pickled code runs)"
    )


def _load_zip(path: Path, stubs: Stubs) -> Any:
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as exc:  # a torn zip, a zip that is not a torch file
        raise EdgeprotoError(f"{path} is not a readable torch checkpoint: {exc}") from None
    split = [tuple(n.rsplit(".", 1)) if "." in n else ("", n) for n in needed]
    bad = [n for n, (mod, name) in zip(needed, split) if not stubs.allowed(mod, name)]
    if bad:
        raise _refuse(path, bad)
    mapping = [(stubs.stub(mod, name), f"{mod}.{name}") for mod, name in split]
    try:
        with torch.serialization.safe_globals(mapping):
            return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise EdgeprotoError(f"{path}: refused by torch's weights-only unpickler: {str(exc).splitlines()[-1]}") from None
    except Exception as exc:
        raise EdgeprotoError(f"{path} is not a readable torch checkpoint: {exc}") from None


class _Refused(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.full = f"{module}.{name}"


def restricted_pickle_module(stubs: Stubs):
    """A ``pickle_module`` for ``torch.load`` whose unpickler resolves only allowed names."""

    class RestrictedUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            if (module, name) in _LEGACY_CALLABLES:
                return _LEGACY_CALLABLES[(module, name)]
            if stubs.allowed(module, name):
                return stubs.stub(module, name)
            raise _Refused(module, name)

    class Module:
        Unpickler = RestrictedUnpickler

        @staticmethod
        def load(file, **kwargs):
            return RestrictedUnpickler(file, **kwargs).load()

    return Module


def _load_legacy(path: Path, stubs: Stubs) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns that it cannot compare the stubs' source
            return torch.load(path, weights_only=False, pickle_module=restricted_pickle_module(stubs),
                              map_location="cpu")
    except _Refused as exc:
        raise _refuse(path, [exc.full]) from None
    except Exception as exc:
        raise EdgeprotoError(f"{path} is not a readable torch checkpoint: {type(exc).__name__}: {exc}") from None


def is_module(obj: Any) -> bool:
    """A stub of a pickled ``nn.Module`` (it has the module bookkeeping dicts)."""
    return isinstance(obj, PickledObject) and isinstance(obj.__dict__.get("_modules"), dict)


def state_of(module: PickledObject, prefix: str = "") -> dict[str, Tensor]:
    """The state dict of a pickled module tree: parameters and persistent buffers, by dotted key."""
    out: dict[str, Tensor] = {}
    skip = module.__dict__.get("_non_persistent_buffers_set") or set()
    for key, value in (module.__dict__.get("_parameters") or {}).items():
        if value is not None:
            out[prefix + key] = value.detach()
    for key, value in (module.__dict__.get("_buffers") or {}).items():
        if value is not None and key not in skip:
            out[prefix + key] = value
    for key, child in (module.__dict__.get("_modules") or {}).items():
        if child is not None:
            out.update(state_of(child, f"{prefix}{key}."))
    return out
