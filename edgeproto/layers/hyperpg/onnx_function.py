"""ONNX body of ``edgeproto::HyperPgLikelihood`` (standard ops only)."""

import math

from onnxscript import opset18 as op
from onnxscript import script
from onnxscript.values import Opset

from edgeproto.layers.cosine import NORM_EPS
from edgeproto.layers.family import ONNX_DOMAIN, ONNX_DOMAIN_VERSION

_domain = Opset(ONNX_DOMAIN, ONNX_DOMAIN_VERSION)
LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@script(_domain, default_opset=op)
def HyperPgLikelihood(z, prototypes, mu, log_sigma):
    """z (B,D,H,W), prototypes (M,D), mu (M,), log_sigma (M,) -> (B,M,H,W):
    -(cos - mu)^2 / (2 sigma^2) - log(sqrt(2 pi) sigma), cos = <ẑ, p̂>, sigma = exp(log_sigma).
    """
    axis = op.Constant(value_ints=[1])
    eps = op.CastLike(op.Constant(value_float=NORM_EPS), z)
    zn = op.Div(z, op.Max(op.ReduceL2(z, axis, keepdims=1), eps))  # (B,D,H,W)
    pn = op.Div(prototypes, op.Max(op.ReduceL2(prototypes, axis, keepdims=1), eps))  # (M,D)
    cos = op.MatMul(op.Transpose(zn, perm=[0, 2, 3, 1]), op.Transpose(pn, perm=[1, 0]))
    cos = op.Transpose(cos, perm=[0, 3, 1, 2])  # (B,M,H,W)
    mhw = op.Constant(value_ints=[1, 2])  # (M,) -> (M,1,1)
    ls = op.Unsqueeze(log_sigma, mhw)
    sigma = op.Exp(ls)
    d = op.Sub(cos, op.Unsqueeze(mu, mhw))
    two = op.CastLike(op.Constant(value_float=2.0), z)
    quad = op.Div(op.Mul(d, d), op.Mul(op.Mul(two, sigma), sigma))
    norm = op.Add(ls, op.CastLike(op.Constant(value_float=LOG_SQRT_2PI), z))
    return op.Sub(op.Neg(quad), norm)


FUNCTION = HyperPgLikelihood
