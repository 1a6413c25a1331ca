"""ONNX body of ``edgeproto::L2LogSimilarity`` (standard ops only, direct-difference form)."""

from onnxscript import opset18 as op
from onnxscript import script
from onnxscript.values import Opset

from edgeproto.layers.family import ONNX_DOMAIN, ONNX_DOMAIN_VERSION

_domain = Opset(ONNX_DOMAIN, ONNX_DOMAIN_VERSION)


@script(_domain, default_opset=op)
def L2LogSimilarity(z, prototypes, epsilon: float = 1e-4):
    """z (B,D,H,W), prototypes (M,D) -> log((d+1)/(d+eps)), d = sum_c (z - p)^2, (B,M,H,W)."""
    zz = op.Unsqueeze(z, op.Constant(value_ints=[1]))  # (B,1,D,H,W)
    pp = op.Unsqueeze(prototypes, op.Constant(value_ints=[0, 3, 4]))  # (1,M,D,1,1)
    diff = op.Sub(zz, pp)
    d = op.ReduceSum(op.Mul(diff, diff), op.Constant(value_ints=[2]), keepdims=0)
    one = op.CastLike(op.Constant(value_float=1.0), d)
    eps = op.CastLike(op.Constant(value_float=epsilon), d)
    sim = op.Log(op.Div(op.Add(d, one), op.Add(d, eps)))
    return sim


FUNCTION = L2LogSimilarity
