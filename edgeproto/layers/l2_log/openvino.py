"""OpenVINO conversion of ``edgeproto::L2LogSimilarity`` (imports openvino, never torch).

OpenVINO's ONNX frontend does not expand model-local functions, so the custom node is mapped to
OpenVINO ops here with the same formula as ``onnx_function.py``, in the direct-difference form
(the expanded z² − 2zp + p² loses precision):

    d = Σ_c (z_c − p_c)²,  sim = log((d + 1) / (d + ε))
"""

from __future__ import annotations

import openvino.opset13 as ops

from edgeproto.layers.openvino_graph import axes, const_like

from edgeproto.layers.l2_log import FAMILY

EXTENSION_OP_TYPE = FAMILY.op_type  # "L2LogSimilarity"




def convert(node_context) -> list:
    """z (B,D,H,W), prototypes (M,D) -> log((d+1)/(d+eps)), d = Σ_c (z − p)², (B,M,H,W)."""
    z = node_context.get_input(0)
    prototypes = node_context.get_input(1)
    epsilon = float(node_context.get_attribute("epsilon", float(FAMILY.attrs["epsilon"])))
    zz = ops.unsqueeze(z, axes(1))  # (B,1,D,H,W)
    pp = ops.unsqueeze(prototypes, axes(0, 3, 4))  # (1,M,D,1,1)
    diff = ops.subtract(zz, pp)
    d = ops.reduce_sum(ops.multiply(diff, diff), axes(2), keep_dims=False)  # (B,M,H,W)
    sim = ops.log(ops.divide(ops.add(d, const_like(1.0, d)), ops.add(d, const_like(epsilon, d))))
    return sim.outputs()
