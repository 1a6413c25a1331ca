"""ONNX body of ``edgeproto::NegSquaredDistance`` (standard ops only, direct-difference form)."""

from onnxscript import opset18 as op
from onnxscript import script
from onnxscript.values import Opset

from edgeproto.layers.family import ONNX_DOMAIN, ONNX_DOMAIN_VERSION

_domain = Opset(ONNX_DOMAIN, ONNX_DOMAIN_VERSION)


@script(_domain, default_opset=op)
def NegSquaredDistance(z, prototypes):
    """z (B,D,H,W), prototypes (M,D) -> −Σ_c (z − p)², (B,M,H,W)."""
    zz = op.Unsqueeze(z, op.Constant(value_ints=[1]))  # (B,1,D,H,W)
    pp = op.Unsqueeze(prototypes, op.Constant(value_ints=[0, 3, 4]))  # (1,M,D,1,1)
    diff = op.Sub(zz, pp)
    return op.Neg(op.ReduceSum(op.Mul(diff, diff), op.Constant(value_ints=[2]), keepdims=0))


FUNCTION = NegSquaredDistance
