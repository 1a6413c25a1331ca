"""ONNX body of ``edgeproto::HopfieldRetrieval`` (standard ops only).

The ``steps − 1`` query refinements are a ``Loop`` whose trip count comes from the ``steps``
attribute -- fixed per model, never data-dependent; with the default ``steps = 1`` it runs zero
times. The loop body has no Reduce ops, so it needs no rewrite at other opsets.
"""

from onnxscript import opset18 as op
from onnxscript import script
from onnxscript.values import Opset

from edgeproto.layers.family import ONNX_DOMAIN, ONNX_DOMAIN_VERSION

_domain = Opset(ONNX_DOMAIN, ONNX_DOMAIN_VERSION)


@script(_domain, default_opset=op)
def HopfieldRetrieval(z, prototypes, beta: float = 0.0, steps: float = 1.0):
    """z (B,D,H,W), prototypes (M,D) -> softmax over the H·W locations of β⟨q, k⟩ after
    ``steps − 1`` updates q <- softmax(β q Kᵀ) K, q₀ = prototypes; β = beta, or 1/√D if beta = 0."""
    shape = op.Shape(z)
    batch = op.Slice(shape, op.Constant(value_ints=[0]), op.Constant(value_ints=[1]))
    hw = op.Slice(shape, op.Constant(value_ints=[2]), op.Constant(value_ints=[4]))
    dim = op.CastLike(op.Slice(shape, op.Constant(value_ints=[1]), op.Constant(value_ints=[2])), z)
    given = op.CastLike(op.Constant(value_float=beta), z)
    zero = op.CastLike(op.Constant(value_float=0.0), z)
    b = op.Where(op.Greater(given, zero), given, op.Reciprocal(op.Sqrt(dim)))  # (1,)
    head = op.Slice(shape, op.Constant(value_ints=[0]), op.Constant(value_ints=[2]))
    keys = op.Transpose(op.Reshape(z, op.Concat(head, op.Constant(value_ints=[-1]), axis=0)), perm=[0, 2, 1])
    keys_t = op.Transpose(keys, perm=[0, 2, 1])  # (B,D,N)
    q = op.Expand(prototypes, op.Concat(batch, op.Constant(value_ints=[1, 1]), axis=0))  # (B,M,D)
    n = op.Sub(op.Cast(op.Constant(value_float=steps), to=7), op.Constant(value_int=1))
    for i in range(n):
        q = op.MatMul(op.Softmax(op.Mul(b, op.MatMul(q, keys_t)), axis=-1), keys)
    att = op.Softmax(op.Mul(b, op.MatMul(q, keys_t)), axis=-1)  # (B,M,N)
    return op.Reshape(att, op.Concat(batch, op.Constant(value_ints=[-1]), hw, axis=0))


FUNCTION = HopfieldRetrieval
