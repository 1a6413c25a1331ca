"""OpenVINO conversion of ``edgeproto::CodebookSimilarity`` (imports openvino, never torch).

Same formula as ``onnx_function.py``: sim = softmax over the M codes of ⟨ẑ, ĉ⟩/τ.
"""

from __future__ import annotations

import numpy as np
import openvino.opset13 as ops

from edgeproto.layers.codebook import FAMILY
from edgeproto.layers.cosine.openvino import normalized_cosine

EXTENSION_OP_TYPE = FAMILY.op_type  # "CodebookSimilarity"


def convert(node_context) -> list:
    """z (B,D,H,W), codes (M,D) -> softmax_m(cos/τ), (B,M,H,W)."""
    z, codes = node_context.get_input(0), node_context.get_input(1)
    tau = float(node_context.get_attribute("tau", float(FAMILY.attrs["tau"])))
    cos = normalized_cosine(z, codes)  # (B,M,H,W)
    t = ops.convert_like(ops.constant(np.float32(tau)), z)
    return ops.softmax(ops.divide(cos, t), 1).outputs()
