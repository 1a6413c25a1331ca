"""OpenVINO conversion of ``edgeproto::CosineSimilarity`` (imports openvino, never torch).

Same formula as ``onnx_function.py``: sim = ⟨ẑ, p̂⟩, x̂ = x / max(‖x‖, NORM_EPS) (z over channels,
prototypes over D).
"""

from __future__ import annotations

import numpy as np
import openvino.opset13 as ops

from edgeproto.layers.cosine import FAMILY, NORM_EPS

EXTENSION_OP_TYPE = FAMILY.op_type  # "CosineSimilarity"


def _const_like(value, like):
    """A scalar constant of ``like``'s element type."""
    return ops.convert_like(ops.constant(np.float32(value)), like)


def _axes(*axes: int):
    return ops.constant(np.array(axes, dtype=np.int64))


def normalized_cosine(z, prototypes):
    """⟨ẑ, p̂⟩ as (B,M,H,W) for z (B,D,H,W) and prototypes (M,D) (shared with hyperpg)."""
    eps = _const_like(NORM_EPS, z)
    zn = ops.divide(z, ops.maximum(ops.reduce_l2(z, _axes(1), keep_dims=True), eps))  # (B,D,H,W)
    pn = ops.divide(prototypes, ops.maximum(ops.reduce_l2(prototypes, _axes(1), keep_dims=True), eps))  # (M,D)
    cos = ops.matmul(ops.transpose(zn, _axes(0, 2, 3, 1)), pn, transpose_a=False, transpose_b=True)  # (B,H,W,M)
    return ops.transpose(cos, _axes(0, 3, 1, 2))  # (B,M,H,W)


def convert(node_context) -> list:
    """z (B,D,H,W), prototypes (M,D) -> ⟨ẑ, p̂⟩, (B,M,H,W)."""
    return normalized_cosine(node_context.get_input(0), node_context.get_input(1)).outputs()
