"""OpenVINO conversion of ``edgeproto::HyperPgLikelihood`` (imports openvino, never torch).

Same formula as ``onnx_function.py``: cos = ⟨ẑ, p̂⟩ (norms clamped at NORM_EPS), σ = exp(log σ),

    sim = −(cos − μ)² / (2σ²) − log(√(2π)·σ)
"""

from __future__ import annotations

import math

import numpy as np
import openvino.opset13 as ops

from edgeproto.layers.openvino_graph import axes, const_like

from edgeproto.layers.cosine.openvino import normalized_cosine
from edgeproto.layers.hyperpg import FAMILY

EXTENSION_OP_TYPE = FAMILY.op_type  # "HyperPgLikelihood"
LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)



def convert(node_context) -> list:
    """z (B,D,H,W), prototypes (M,D), mu (M,), log_sigma (M,) -> (B,M,H,W)."""
    z = node_context.get_input(0)
    prototypes, mu, log_sigma = (node_context.get_input(i) for i in (1, 2, 3))
    cos = normalized_cosine(z, prototypes)  # (B,M,H,W)
    mhw = ops.constant(np.array([1, 2], dtype=np.int64))  # (M,) -> (M,1,1)
    ls = ops.unsqueeze(log_sigma, mhw)
    sigma = ops.exp(ls)
    d = ops.subtract(cos, ops.unsqueeze(mu, mhw))
    quad = ops.divide(ops.multiply(d, d), ops.multiply(ops.multiply(const_like(2.0, z), sigma), sigma))
    norm = ops.add(ls, const_like(LOG_SQRT_2PI, z))
    return ops.subtract(ops.negative(quad), norm).outputs()
