"""Prototype-similarity families: one subpackage each, registered here (no torch import)."""

from edgeproto.layers.family import (
    ONNX_DOMAIN,
    ONNX_DOMAIN_VERSION,
    PrototypeFamily,
    families,
    family_for_op_type,
    get_family,
    prototype_nodes,
    register_family,
)
from edgeproto.layers import l2_log  # noqa: F401  (registers)
from edgeproto.layers import hyperpg, gaussian, cosine  # noqa: F401  (registers)
from edgeproto.layers import hopfield, tversky, codebook, cbr_ae  # noqa: F401  (registers)

__all__ = [
    "ONNX_DOMAIN",
    "ONNX_DOMAIN_VERSION",
    "PrototypeFamily",
    "families",
    "family_for_op_type",
    "get_family",
    "prototype_nodes",
    "register_family",
]
