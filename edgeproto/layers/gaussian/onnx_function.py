"""ONNX body of ``edgeproto::GaussianLikelihood`` (standard ops only, direct-difference form)."""

import math

from onnxscript import opset18 as op
from onnxscript import script
from onnxscript.values import Opset

from edgeproto.layers.family import ONNX_DOMAIN, ONNX_DOMAIN_VERSION

_domain = Opset(ONNX_DOMAIN, ONNX_DOMAIN_VERSION)
LOG_2PI = math.log(2.0 * math.pi)


@script(_domain, default_opset=op)
def GaussianLikelihood(z, means, log_var):
    """z (B,D,H,W), means (M,D), log_var (M,D) -> (B,M,H,W):
    -1/2 sum_c [(z_c - mu_c)^2 / v_c + log v_c + log 2pi], v = exp(log_var)."""
    param_axes = op.Constant(value_ints=[0, 3, 4])  # (M,D) -> (1,M,D,1,1)
    diff = op.Sub(op.Unsqueeze(z, op.Constant(value_ints=[1])), op.Unsqueeze(means, param_axes))
    var = op.Unsqueeze(op.Exp(log_var), param_axes)
    quad = op.ReduceSum(op.Div(op.Mul(diff, diff), var), op.Constant(value_ints=[2]), keepdims=0)
    log_2pi = op.CastLike(op.Constant(value_float=LOG_2PI), z)
    const = op.ReduceSum(op.Add(log_var, log_2pi), op.Constant(value_ints=[1]), keepdims=0)
    const = op.Unsqueeze(const, op.Constant(value_ints=[1, 2]))  # (M,1,1)
    half = op.CastLike(op.Constant(value_float=-0.5), z)
    return op.Mul(half, op.Add(quad, const))


FUNCTION = GaussianLikelihood
