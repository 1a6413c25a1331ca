"""ONNX body of ``edgeproto::CosineSimilarity`` (standard ops only)."""

from onnxscript import opset18 as op
from onnxscript import script
from onnxscript.values import Opset

from edgeproto.layers.cosine import NORM_EPS
from edgeproto.layers.family import ONNX_DOMAIN, ONNX_DOMAIN_VERSION

_domain = Opset(ONNX_DOMAIN, ONNX_DOMAIN_VERSION)


@script(_domain, default_opset=op)
def CosineSimilarity(z, prototypes):
    """z (B,D,H,W), prototypes (M,D) -> <ẑ, p̂>, x̂ = x / max(|x|, NORM_EPS), (B,M,H,W)."""
    axis = op.Constant(value_ints=[1])
    eps = op.CastLike(op.Constant(value_float=NORM_EPS), z)
    zn = op.Div(z, op.Max(op.ReduceL2(z, axis, keepdims=1), eps))  # (B,D,H,W)
    pn = op.Div(prototypes, op.Max(op.ReduceL2(prototypes, axis, keepdims=1), eps))  # (M,D)
    cos = op.MatMul(op.Transpose(zn, perm=[0, 2, 3, 1]), op.Transpose(pn, perm=[1, 0]))
    return op.Transpose(cos, perm=[0, 3, 1, 2])  # (B,H,W,M) -> (B,M,H,W)


FUNCTION = CosineSimilarity
