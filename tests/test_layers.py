"""Every prototype-similarity family: torch op (opcheck, analytic gradients, reference, a tiny
hand-computed case) and its ONNX function (eager numerics vs torch, FunctionProto shape)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgeproto.errors import EdgeprotoError
from edgeproto.layers import ONNX_DOMAIN, families, get_family

FAMILIES = sorted(families())
B, D, H, W, M = 2, 4, 3, 5, 6


def make_inputs(name: str, dtype: torch.dtype = torch.float32, seed: int = 0) -> list[torch.Tensor]:
    """z (B,D,H,W) with mixed signs and the family's init_params, jittered so that no
    parameter sits at a special value (μ = 1, log_var = 0, ...)."""
    fam = get_family(name)
    g = torch.Generator().manual_seed(seed)
    z = torch.rand(B, D, H, W, generator=g) * 1.5 - 0.25
    params = fam.torch_module.init_params(M, D, generator=g)
    jittered = [params[k] + 0.3 * torch.randn(params[k].shape, generator=g)
                for k in fam.param_names]
    return [t.to(dtype) for t in [z, *jittered]]


def torch_op(name: str):
    return get_family(name).torch_module.op


# ---- registry ---------------------------------------------------------------------------------


def test_all_families_registered():
    assert set(FAMILIES) >= {"l2_log", "hyperpg", "gaussian", "cosine"}


def test_unknown_family_raises():
    with pytest.raises(EdgeprotoError, match="nope"):
        get_family("nope")


@pytest.mark.parametrize("name", FAMILIES)
def test_spec_matches_op_schema_and_init(name):
    fam = get_family(name)
    fam.torch_module  # importing it registers torch.ops.edgeproto.<name>
    schema = getattr(torch.ops.edgeproto, name).default._schema
    assert [a.name for a in schema.arguments] == ["z", *fam.param_names, *fam.attrs]
    params = fam.torch_module.init_params(M, D, generator=torch.Generator().manual_seed(0))
    assert list(params) == list(fam.param_names)
    assert all(p.dtype == torch.float32 and p.shape[0] == M for p in params.values())


# ---- torch op ---------------------------------------------------------------------------------


def _non_contiguous(z: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "channels_last":
        out = z.contiguous(memory_format=torch.channels_last)
    else:  # a permuted view of a (B,W,H,D) buffer
        out = z.permute(0, 3, 2, 1).contiguous().permute(0, 3, 2, 1)
    assert not out.is_contiguous() and torch.equal(out, z)
    return out


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed"])
@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("name", FAMILIES)
def test_opcheck(name, requires_grad, layout):
    z, *params = make_inputs(name)
    if layout != "contiguous":
        z = _non_contiguous(z, layout)
    args = [t.requires_grad_(requires_grad) for t in [z, *params]]
    torch.library.opcheck(torch_op(name), tuple(args))


@pytest.mark.parametrize("name", FAMILIES)
def test_output_is_contiguous_for_non_contiguous_z(name):
    z, *params = make_inputs(name)
    for layout in ("channels_last", "transposed"):
        out = torch_op(name)(_non_contiguous(z, layout), *params)
        assert out.is_contiguous() and out.shape == (B, M, H, W)
        torch.testing.assert_close(out, torch_op(name)(z, *params))


@pytest.mark.parametrize("name", FAMILIES)
def test_gradcheck_all_inputs(name):
    args = [t.requires_grad_() for t in make_inputs(name, torch.float64, seed=1)]
    assert torch.autograd.gradcheck(torch_op(name), tuple(args))


@pytest.mark.parametrize("name", FAMILIES)
def test_gradcheck_each_input_alone(name):
    """One input at a time needs grad: exercises the ctx.needs_input_grad branches."""
    base = make_inputs(name, torch.float64, seed=2)
    for i in range(len(base)):
        args = [t.clone().requires_grad_(j == i) for j, t in enumerate(base)]
        assert torch.autograd.gradcheck(torch_op(name), tuple(args)), f"input {i}"


@pytest.mark.parametrize("name", FAMILIES)
def test_analytic_backward_matches_reference_autograd(name):
    ref = get_family(name).torch_module.reference
    grads = []
    for fn in (torch_op(name), ref):
        args = [t.requires_grad_() for t in make_inputs(name, torch.float64, seed=3)]
        out = fn(*args)
        grads.append(torch.autograd.grad(out, args, torch.ones_like(out).cos()))
    for g_op, g_ref in zip(*grads):
        torch.testing.assert_close(g_op, g_ref)


@pytest.mark.parametrize("name", FAMILIES)
def test_op_equals_reference(name):
    args = make_inputs(name, seed=4)
    out = torch_op(name)(*args)
    assert out.shape == (B, M, H, W) and out.dtype == torch.float32
    torch.testing.assert_close(out, get_family(name).torch_module.reference(*args), rtol=0, atol=0)


@pytest.mark.parametrize("name", FAMILIES)
def test_tiny_features_match_reference(name):
    """Locations with all-zero and with tiny (norm below the 1e-6 clamp) features: finite output
    and the analytic gradients still agree with autograd through ``reference``."""
    results = []
    for fn in (torch_op(name), get_family(name).torch_module.reference):
        z, *params = make_inputs(name, torch.float64, seed=5)
        z[:, :, 0, 0] = 0.0
        z[:, :, 1, 1] *= 1e-8
        args = [t.requires_grad_() for t in [z, *params]]
        out = fn(*args)
        results.append((out, torch.autograd.grad(out, args, torch.ones_like(out).cos())))
    (out, grads), (ref_out, ref_grads) = results
    assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(out, ref_out)
    for g, g_ref in zip(grads, ref_grads):
        torch.testing.assert_close(g, g_ref)


def _t(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _z(*channels) -> torch.Tensor:
    return _t(*channels).reshape(1, -1, 1, 1)


LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# (name, z, params, expected scalar) -- hand-computed 1x1, one-prototype cases.
TINY_CASES = [
    ("l2_log", _z(0.3, 0.7), [_t(0.3, 0.7)[None]], math.log(1 / 1e-4)),
    ("l2_log", _z(1.0, 2.0), [_t(0.0, 0.0)[None]], math.log(6 / (5 + 1e-4))),
    ("cosine", _z(1.0, 1.0), [_t(1.0, 0.0)[None]], 1 / math.sqrt(2)),
    ("cosine", _z(3.0, 4.0), [_t(-6.0, -8.0)[None]], -1.0),
    ("cosine", _z(0.0, 0.0), [_t(1.0, 2.0)[None]], 0.0),  # eps clamp: no NaN
    ("hyperpg", _z(3.0, 4.0), [_t(6.0, 8.0)[None], _t(1.0), _t(math.log(0.5))],
     -math.log(0.5) - LOG_SQRT_2PI),
    ("hyperpg", _z(1.0, 0.0), [_t(0.0, 1.0)[None], _t(1.0), _t(math.log(0.5))],
     -1 / (2 * 0.25) - math.log(0.5) - LOG_SQRT_2PI),
    ("gaussian", _z(1.0, 2.0), [_t(0.0, 0.0)[None], _t(0.0, math.log(4.0))[None]],
     -0.5 * (1 + 4 / 4 + math.log(4.0) + 2 * math.log(2 * math.pi))),
    ("gaussian", _z(0.5, 0.5), [_t(0.5, 0.5)[None], _t(0.0, 0.0)[None]], -math.log(2 * math.pi)),
    ("hopfield", _z(3.0, -4.0), [_t(0.5, 2.0)[None]], 1.0),  # one location: all the attention
    # a = Ωz = (2, -1), b = Ωp = (1, 1), s(x) = σ(x/0.1): θ=1, α=β=0.5
    ("tversky", _z(2.0, -1.0), [_t(1.0, 1.0)[None], torch.eye(2, dtype=torch.float64), _t(1.0), _t(0.5), _t(0.5)],
     (2 * _sig(20) * _sig(10) - _sig(-10) * _sig(10))
     - 0.5 * (2 * _sig(20) * (1 - _sig(10)) - _sig(-10) * (1 - _sig(10)))
     - 0.5 * (_sig(10) * (1 - _sig(20)) + _sig(10) * (1 - _sig(-10)))),
    # a single code takes the whole assignment, whatever the cosine
    ("codebook", _z(3.0, 4.0), [_t(-1.0, 2.0)[None]], 1.0),
    ("cbr_ae", _z(1.0, 2.0), [_t(0.0, 0.5)[None]], -(1.0 + 2.25)),
]


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_has_a_tiny_case(name):
    assert any(case[0] == name for case in TINY_CASES), f"add a hand-computed case for {name}"


@pytest.mark.parametrize("name,z,params,expected", TINY_CASES)
def test_tiny_case_by_hand(name, z, params, expected):
    for fn in (get_family(name).torch_module.reference, torch_op(name)):
        out = fn(z, *params)
        assert out.shape == (1, 1, 1, 1)
        assert out.item() == pytest.approx(expected, rel=1e-12, abs=1e-12)


# ---- ONNX function ----------------------------------------------------------------------------

ONNX_ATOL = 1e-5


@pytest.mark.parametrize("name", FAMILIES)
def test_onnx_function_matches_torch(name):
    args = make_inputs(name, seed=6)
    expected = torch_op(name)(*args).numpy()
    got = get_family(name).onnx_function(*[a.numpy() for a in args])
    got = np.asarray(got)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=ONNX_ATOL)


@pytest.mark.parametrize("name", FAMILIES)
def test_onnx_function_matches_torch_on_tiny_features(name):
    """Zero and below-clamp (norm < 1e-6) feature vectors: same clamp in ONNX as in torch."""
    z, *params = make_inputs(name, seed=7)
    z[:, :, 0, 0] = 0.0
    z[:, :, 1, 1] *= 1e-8
    expected = torch_op(name)(z, *params).numpy()
    got = np.asarray(get_family(name).onnx_function(*[a.numpy() for a in [z, *params]]))
    np.testing.assert_allclose(got, expected, rtol=0, atol=ONNX_ATOL)


@pytest.mark.parametrize("name", FAMILIES)
def test_function_proto(name):
    fam = get_family(name)
    fp = fam.onnx_function.to_function_proto()
    assert fp.domain == ONNX_DOMAIN and fp.name == fam.op_type
    assert list(fp.input) == ["z", *fam.param_names] and len(fp.output) == 1
    assert sorted(a.name for a in fp.attribute_proto) + sorted(fp.attribute) == sorted(fam.attrs)
    assert fp.node and all(node.domain in ("", "ai.onnx") for node in fp.node)
    assert {o.domain for o in fp.opset_import} <= {"", "ai.onnx"}
