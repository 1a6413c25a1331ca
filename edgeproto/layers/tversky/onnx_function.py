"""ONNX body of ``edgeproto::TverskySimilarity`` (standard ops only; the same smooth forward as
the torch op: [x>0] ≈ σ(x/τ))."""

from onnxscript import opset18 as op
from onnxscript import script
from onnxscript.values import Opset

from edgeproto.layers.family import ONNX_DOMAIN, ONNX_DOMAIN_VERSION

_domain = Opset(ONNX_DOMAIN, ONNX_DOMAIN_VERSION)


@script(_domain, default_opset=op)
def TverskySimilarity(z, prototypes, feature_bank, theta, alpha, beta, tau: float = 0.1):
    """z (B,D,H,W), prototypes (M,D), feature_bank (F,D), theta/alpha/beta (M,) -> (B,M,H,W):
    θ·Σ a⁺b⁺ − α·Σ a⁺(1 − s(b)) − β·Σ b⁺(1 − s(a)), a = Ω·z, b = Ω·p, s(x) = σ(x/τ), x⁺ = x·s(x)."""
    t = op.CastLike(op.Constant(value_float=tau), z)
    one = op.CastLike(op.Constant(value_float=1.0), z)
    a = op.MatMul(op.Transpose(z, perm=[0, 2, 3, 1]), op.Transpose(feature_bank, perm=[1, 0]))  # (B,H,W,F)
    b = op.MatMul(prototypes, op.Transpose(feature_bank, perm=[1, 0]))  # (M,F)
    sa = op.Sigmoid(op.Div(a, t))
    sb = op.Sigmoid(op.Div(b, t))
    ap = op.Mul(a, sa)
    bp = op.Mul(b, sb)
    col = op.Constant(value_ints=[1])  # (M,) -> (M,1)
    th = op.Unsqueeze(theta, col)
    al = op.Unsqueeze(alpha, col)
    be = op.Unsqueeze(beta, col)
    common = op.MatMul(ap, op.Transpose(bp, perm=[1, 0]))  # (B,H,W,M)
    a_not_b = op.MatMul(ap, op.Transpose(op.Sub(one, sb), perm=[1, 0]))
    b_not_a = op.MatMul(op.Sub(one, sa), op.Transpose(bp, perm=[1, 0]))
    sim = op.Sub(
        op.Sub(op.Mul(common, op.Transpose(th, perm=[1, 0])), op.Mul(a_not_b, op.Transpose(al, perm=[1, 0]))),
        op.Mul(b_not_a, op.Transpose(be, perm=[1, 0])),
    )
    return op.Transpose(sim, perm=[0, 3, 1, 2])  # (B,M,H,W)


FUNCTION = TverskySimilarity
