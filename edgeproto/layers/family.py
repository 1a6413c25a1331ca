"""What one prototype-similarity family provides, and the registry of families.

A family is one subpackage ``edgeproto/layers/<name>/`` that keeps side by side:

- ``__init__.py``: its ``FAMILY`` spec (this dataclass) -- imports neither torch nor onnxscript;
- ``torch_op.py``: the PyTorch op (``torch.library.custom_op`` ``edgeproto::<name>`` with a fake
  kernel and an analytic backward), a plain differentiable ``reference`` and ``init_params``;
- ``onnx_function.py``: the ONNX function body (onnxscript, standard ops only), named ``op_type``.

Every op maps latent features ``z`` (B,D,H,W) plus its parameters to similarity maps (B,M,H,W);
larger means "looks more like that prototype".
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

from edgeproto.errors import EdgeprotoError

ONNX_DOMAIN = "edgeproto"
ONNX_DOMAIN_VERSION = 1


@dataclass(frozen=True)
class PrototypeFamily:
    """One prototype-similarity family (the spec; the implementations load lazily)."""

    name: str  # recipe key and torch op name, e.g. "l2_log" -> torch.ops.edgeproto.l2_log
    op_type: str  # ONNX op type in domain ``edgeproto``, e.g. "L2LogSimilarity"
    param_names: tuple[str, ...]  # tensor inputs after z, in order (node inputs on export)
    attrs: dict[str, float] = field(default_factory=dict)  # float attributes and their defaults
    summary: str = ""  # the formula, for docs and ``edgeproto info``

    @property
    def torch_module(self) -> ModuleType:
        """``torch_op`` module: ``op``, ``reference``, ``init_params``."""
        return importlib.import_module(f"edgeproto.layers.{self.name}.torch_op")

    @property
    def onnx_function(self):
        """The onnxscript function (``OnnxFunction``) whose name is ``op_type``."""
        return importlib.import_module(f"edgeproto.layers.{self.name}.onnx_function").FUNCTION


_FAMILIES: dict[str, PrototypeFamily] = {}


def register_family(family: PrototypeFamily) -> PrototypeFamily:
    """Add a family to the registry (each family's ``__init__`` calls this once)."""
    if family.name in _FAMILIES:
        raise ValueError(f"prototype family {family.name!r} registered twice")
    _FAMILIES[family.name] = family
    return family


def get_family(name: str) -> PrototypeFamily:
    """The family registered as ``name``, or a clear error naming the known ones."""
    if name not in _FAMILIES:
        raise EdgeprotoError(
            f"unknown prototype family {name!r}; known: {', '.join(sorted(_FAMILIES))}"
        )
    return _FAMILIES[name]


def family_for_op_type(op_type: str) -> PrototypeFamily:
    """The family that exports as ONNX op ``op_type``."""
    for fam in _FAMILIES.values():
        if fam.op_type == op_type:
            return fam
    raise EdgeprotoError(f"no prototype family exports as edgeproto::{op_type}")


def families() -> dict[str, PrototypeFamily]:
    """All registered families by name."""
    return dict(_FAMILIES)


def prototype_nodes(model) -> list:
    """The ``edgeproto``-domain nodes of an ONNX model's main graph (one per prototype layer)."""
    return [n for n in model.graph.node if n.domain == ONNX_DOMAIN]
