"""OpenVINO conversion of ``edgeproto::TverskySimilarity`` (imports openvino, never torch).

Same smooth forward as ``onnx_function.py``: a = Ω·z, b = Ω·p, s(x) = σ(x/τ), x⁺ = x·s(x),

    sim = θ·Σ_f a⁺b⁺ − α·Σ_f a⁺(1 − s(b)) − β·Σ_f b⁺(1 − s(a))
"""

from __future__ import annotations

import numpy as np
import openvino.opset13 as ops

from edgeproto.layers.tversky import FAMILY

EXTENSION_OP_TYPE = FAMILY.op_type  # "TverskySimilarity"


def _const_like(value, like):
    return ops.convert_like(ops.constant(np.float32(value)), like)


def _axes(*axes: int):
    return ops.constant(np.array(axes, dtype=np.int64))


def convert(node_context) -> list:
    """z (B,D,H,W), prototypes (M,D), feature_bank (F,D), theta/alpha/beta (M,) -> (B,M,H,W)."""
    z, prototypes, bank, theta, alpha, beta = (node_context.get_input(i) for i in range(6))
    tau = float(node_context.get_attribute("tau", float(FAMILY.attrs["tau"])))
    t, one = _const_like(tau, z), _const_like(1.0, z)
    zl = ops.transpose(z, _axes(0, 2, 3, 1))  # (B,H,W,D)
    a = ops.matmul(zl, bank, transpose_a=False, transpose_b=True)  # (B,H,W,F)
    b = ops.matmul(prototypes, bank, transpose_a=False, transpose_b=True)  # (M,F)
    sa, sb = ops.sigmoid(ops.divide(a, t)), ops.sigmoid(ops.divide(b, t))
    ap, bp = ops.multiply(a, sa), ops.multiply(b, sb)
    common = ops.matmul(ap, bp, transpose_a=False, transpose_b=True)  # (B,H,W,M)
    a_not_b = ops.matmul(ap, ops.subtract(one, sb), transpose_a=False, transpose_b=True)
    b_not_a = ops.matmul(ops.subtract(one, sa), bp, transpose_a=False, transpose_b=True)
    sim = ops.subtract(
        ops.subtract(ops.multiply(common, theta), ops.multiply(a_not_b, alpha)),
        ops.multiply(b_not_a, beta),
    )
    return ops.transpose(sim, _axes(0, 3, 1, 2)).outputs()
