"""ONNX body of ``edgeproto::CodebookSimilarity`` (standard ops only)."""

from onnxscript import opset18 as op
from onnxscript import script
from onnxscript.values import Opset

from edgeproto.layers.cosine import NORM_EPS
from edgeproto.layers.family import ONNX_DOMAIN, ONNX_DOMAIN_VERSION

_domain = Opset(ONNX_DOMAIN, ONNX_DOMAIN_VERSION)


@script(_domain, default_opset=op)
def CodebookSimilarity(z, prototypes, tau: float = 0.1):
    """z (B,D,H,W), prototypes (the codes, M,D) -> softmax over M of <ẑ, ĉ>/tau, x̂ = x / max(|x|, NORM_EPS), (B,M,H,W)."""
    axis = op.Constant(value_ints=[1])
    eps = op.CastLike(op.Constant(value_float=NORM_EPS), z)
    zn = op.Div(z, op.Max(op.ReduceL2(z, axis, keepdims=1), eps))  # (B,D,H,W)
    cn = op.Div(prototypes, op.Max(op.ReduceL2(prototypes, axis, keepdims=1), eps))  # (M,D)
    cos = op.MatMul(op.Transpose(zn, perm=[0, 2, 3, 1]), op.Transpose(cn, perm=[1, 0]))  # (B,H,W,M)
    t = op.CastLike(op.Constant(value_float=tau), z)
    return op.Transpose(op.Softmax(op.Div(cos, t), axis=-1), perm=[0, 3, 1, 2])  # (B,M,H,W)


FUNCTION = CodebookSimilarity
