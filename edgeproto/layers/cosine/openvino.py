"""OpenVINO conversion of ``edgeproto::CosineSimilarity`` (imports openvino, never torch).

Same formula as ``onnx_function.py``: sim = ⟨ẑ, p̂⟩, x̂ = x / max(‖x‖, NORM_EPS) (z over channels,
prototypes over D).
"""

from __future__ import annotations

import openvino.opset13 as ops

from edgeproto.layers.openvino_graph import axes, const_like

from edgeproto.layers.cosine import FAMILY, NORM_EPS

EXTENSION_OP_TYPE = FAMILY.op_type  # "CosineSimilarity"




def normalized_cosine(z, prototypes):
    """⟨ẑ, p̂⟩ as (B,M,H,W) for z (B,D,H,W) and prototypes (M,D) (shared with hyperpg)."""
    eps = const_like(NORM_EPS, z)
    zn = ops.divide(z, ops.maximum(ops.reduce_l2(z, axes(1), keep_dims=True), eps))  # (B,D,H,W)
    pn = ops.divide(prototypes, ops.maximum(ops.reduce_l2(prototypes, axes(1), keep_dims=True), eps))  # (M,D)
    cos = ops.matmul(ops.transpose(zn, axes(0, 2, 3, 1)), pn, transpose_a=False, transpose_b=True)  # (B,H,W,M)
    return ops.transpose(cos, axes(0, 3, 1, 2))  # (B,M,H,W)


def convert(node_context) -> list:
    """z (B,D,H,W), prototypes (M,D) -> ⟨ẑ, p̂⟩, (B,M,H,W)."""
    return normalized_cosine(node_context.get_input(0), node_context.get_input(1)).outputs()
