"""OpenVINO conversion of ``edgeproto::HopfieldRetrieval`` (imports openvino, never torch).

Same formula as ``onnx_function.py``; the ``steps − 1`` query updates are unrolled here (``steps``
is a node attribute, known at conversion time):

    K = z as (B, N, D);  q₀ = p;  q_{t+1} = softmax(β q_t Kᵀ) K;  sim = softmax(β q_{s−1} Kᵀ)
"""

from __future__ import annotations

import numpy as np
import openvino.opset13 as ops

from edgeproto.layers.hopfield import FAMILY

EXTENSION_OP_TYPE = FAMILY.op_type  # "HopfieldRetrieval"


def _ints(*values: int):
    return ops.constant(np.array(values, dtype=np.int64))


def convert(node_context) -> list:
    """z (B,D,H,W), prototypes (M,D) -> attention over locations, (B,M,H,W)."""
    z = node_context.get_input(0)
    prototypes = node_context.get_input(1)
    beta = float(node_context.get_attribute("beta", float(FAMILY.attrs["beta"])))
    steps_attr = float(node_context.get_attribute("steps", float(FAMILY.attrs["steps"])))
    steps = int(steps_attr)
    if steps != steps_attr or steps < 1:
        raise ValueError(f"HopfieldRetrieval: steps must be an integer >= 1, got {steps_attr}")
    shape = ops.shape_of(z, output_type="i64")
    batch = ops.gather(shape, _ints(0), _ints(0))
    hw = ops.gather(shape, _ints(2, 3), _ints(0))
    if beta > 0:
        b = ops.convert_like(ops.constant(np.float32(beta)), z)
    else:
        dim = ops.convert_like(ops.gather(shape, _ints(1), _ints(0)), z)
        b = ops.divide(ops.convert_like(ops.constant(np.float32(1.0)), z), ops.sqrt(dim))
    head = ops.gather(shape, _ints(0, 1), _ints(0))
    flat = ops.reshape(z, ops.concat([head, _ints(-1)], 0), special_zero=False)  # (B,D,N)
    keys = ops.transpose(flat, _ints(0, 2, 1))  # (B,N,D)
    q = ops.broadcast(ops.unsqueeze(prototypes, _ints(0)), ops.concat([batch, _ints(1, 1)], 0),
                      broadcast_spec="BIDIRECTIONAL")  # (B,M,D)

    def attention(q):
        return ops.softmax(ops.multiply(b, ops.matmul(q, flat, transpose_a=False, transpose_b=False)), -1)

    for _ in range(steps - 1):
        q = ops.matmul(attention(q), keys, transpose_a=False, transpose_b=False)
    att = attention(q)  # (B,M,N)
    out = ops.reshape(att, ops.concat([batch, _ints(-1), hw], 0), special_zero=False)
    return out.outputs()
