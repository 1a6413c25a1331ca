"""OpenVINO conversion of ``edgeproto::GaussianLikelihood`` (imports openvino, never torch).

Same formula as ``onnx_function.py``, in the direct-difference form: v = exp(log_var),

    sim = −½ Σ_c [(z_c − μ_c)² / v_c + log v_c + log 2π]
"""

from __future__ import annotations

import math

import openvino.opset13 as ops

from edgeproto.layers.openvino_graph import axes, const_like

from edgeproto.layers.gaussian import FAMILY

EXTENSION_OP_TYPE = FAMILY.op_type  # "GaussianLikelihood"
LOG_2PI = math.log(2.0 * math.pi)




def convert(node_context) -> list:
    """z (B,D,H,W), means (M,D), log_var (M,D) -> (B,M,H,W)."""
    z = node_context.get_input(0)
    means, log_var = node_context.get_input(1), node_context.get_input(2)
    param_axes = axes(0, 3, 4)  # (M,D) -> (1,M,D,1,1)
    diff = ops.subtract(ops.unsqueeze(z, axes(1)), ops.unsqueeze(means, param_axes))  # (B,M,D,H,W)
    var = ops.unsqueeze(ops.exp(log_var), param_axes)
    quad = ops.reduce_sum(ops.divide(ops.multiply(diff, diff), var), axes(2), keep_dims=False)  # (B,M,H,W)
    const = ops.reduce_sum(ops.add(log_var, const_like(LOG_2PI, z)), axes(1), keep_dims=False)  # (M,)
    const = ops.unsqueeze(const, axes(1, 2))  # (M,1,1)
    return ops.multiply(const_like(-0.5, z), ops.add(quad, const)).outputs()
