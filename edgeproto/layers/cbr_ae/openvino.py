"""OpenVINO conversion of ``edgeproto::NegSquaredDistance`` (imports openvino, never torch).

Same formula as ``onnx_function.py``, in the direct-difference form: sim = −Σ_c (z_c − p_c)².
"""

from __future__ import annotations

import numpy as np
import openvino.opset13 as ops

from edgeproto.layers.cbr_ae import FAMILY

EXTENSION_OP_TYPE = FAMILY.op_type  # "NegSquaredDistance"


def _axes(*axes: int):
    return ops.constant(np.array(axes, dtype=np.int64))


def convert(node_context) -> list:
    """z (B,D,H,W), prototypes (M,D) -> −Σ_c (z − p)², (B,M,H,W)."""
    z, prototypes = node_context.get_input(0), node_context.get_input(1)
    diff = ops.subtract(ops.unsqueeze(z, _axes(1)), ops.unsqueeze(prototypes, _axes(0, 3, 4)))
    return ops.negative(ops.reduce_sum(ops.multiply(diff, diff), _axes(2), keep_dims=False)).outputs()
