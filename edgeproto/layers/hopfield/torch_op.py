"""Modern Hopfield retrieval as ``edgeproto::hopfield``: z (B,D,H,W), prototypes (M,D) -> the
attention of each state pattern over the H·W locations, (B,M,H,W) (sums to 1 over H,W).

Ramsauer et al. 2020 ("Hopfield Networks is All You Need"): the stored patterns are the latent
patches k_n (N = H·W), the state patterns are the prototypes. One update step is
ξ_new = Σ_n softmax_n(β⟨ξ, k_n⟩)·k_n; the op returns the attention of the last of ``steps`` update
steps (steps = 1: the attention of the prototypes themselves). ``steps`` is fixed per model (a node
attribute), so the iteration exports as a Loop with a constant trip count.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from edgeproto.layers.fake_kernels import empty_maps


def effective_beta(beta: float, dim: int) -> float:
    """``beta``, or 1/√D when it is 0 (the default)."""
    return float(beta) if beta > 0 else 1.0 / math.sqrt(dim)


def num_steps(steps: float) -> int:
    """The update-step count: ``steps`` must hold an integer ≥ 1."""
    n = int(steps)
    if n != steps or n < 1:
        raise ValueError(f"hopfield steps must be an integer >= 1, got {steps}")
    return n


def _keys(z: Tensor) -> Tensor:
    """Stored patterns (B,N,D) from z (B,D,H,W)."""
    return z.flatten(2).transpose(1, 2)


def _iterate(z: Tensor, prototypes: Tensor, beta: float, steps: float) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Keys K (B,N,D), the states q_0..q_{s-1} (B,M,D) and attentions A_0..A_{s-1} (B,M,N)."""
    k = _keys(z)
    b = effective_beta(beta, z.shape[1])
    q = prototypes.unsqueeze(0).expand(z.shape[0], -1, -1)
    states, atts = [], []
    for t in range(num_steps(steps)):
        a = torch.softmax(b * torch.einsum("bmd,bnd->bmn", q, k), dim=-1)
        states.append(q)
        atts.append(a)
        if t + 1 < num_steps(steps):
            q = torch.einsum("bmn,bnd->bmd", a, k)
    return k, states, atts


def reference(z: Tensor, prototypes: Tensor, beta: float = 0.0, steps: float = 1.0) -> Tensor:
    """Plain differentiable implementation (the op's definition)."""
    k = _keys(z)
    b = effective_beta(beta, z.shape[1])
    q = prototypes.unsqueeze(0).expand(z.shape[0], -1, -1)
    for _ in range(num_steps(steps) - 1):
        q = torch.softmax(b * q @ k.transpose(1, 2), dim=-1) @ k
    a = torch.softmax(b * q @ k.transpose(1, 2), dim=-1)
    return a.reshape(z.shape[0], prototypes.shape[0], z.shape[2], z.shape[3])


@torch.library.custom_op("edgeproto::hopfield", mutates_args=())
def op(z: Tensor, prototypes: Tensor, beta: float = 0.0, steps: float = 1.0) -> Tensor:
    """Attention of each prototype (state pattern) over the locations after ``steps`` updates."""
    atts = _iterate(z, prototypes, beta, steps)[2]
    return atts[-1].reshape(z.shape[0], prototypes.shape[0], z.shape[2], z.shape[3]).contiguous()


@op.register_fake
def _(z: Tensor, prototypes: Tensor, beta: float = 0.0, steps: float = 1.0) -> Tensor:
    maps = empty_maps(z, prototypes)
    num_steps(steps)
    return maps


def _setup_context(ctx, inputs, output) -> None:
    z, prototypes, beta, steps = inputs
    ctx.save_for_backward(z, prototypes)
    ctx.beta, ctx.steps = beta, steps


def _softmax_vjp(g: Tensor, a: Tensor) -> Tensor:
    """dL/dS for A = softmax(S) along the last dim."""
    return a * (g - (g * a).sum(dim=-1, keepdim=True))


def _backward(ctx, grad: Tensor):
    z, p = ctx.saved_tensors
    k, states, atts = _iterate(z, p, ctx.beta, ctx.steps)
    b = effective_beta(ctx.beta, z.shape[1])
    g_a = grad.flatten(2)  # dL/dA_{s-1}, (B,M,N)
    g_k = torch.zeros_like(k)
    g_q = None
    for t in range(len(atts) - 1, -1, -1):
        if g_q is not None:  # q_{t+1} = A_t K
            g_a = torch.einsum("bmd,bnd->bmn", g_q, k)
            g_k = g_k + torch.einsum("bmn,bmd->bnd", atts[t], g_q)
        g_s = b * _softmax_vjp(g_a, atts[t])  # through S_t = β q_t Kᵀ
        g_q = torch.einsum("bmn,bnd->bmd", g_s, k)
        g_k = g_k + torch.einsum("bmn,bmd->bnd", g_s, states[t])
    grad_z = grad_p = None
    if ctx.needs_input_grad[0]:
        grad_z = g_k.transpose(1, 2).reshape(z.shape)
    if ctx.needs_input_grad[1]:
        grad_p = g_q.sum(dim=0)
    return grad_z, grad_p, None, None


op.register_autograd(_backward, setup_context=_setup_context)


def init_params(num_prototypes: int, dim: int, generator: torch.Generator | None = None) -> dict:
    """State patterns ~ N(0, I): random directions, so early attention is spread but not uniform."""
    return {"prototypes": torch.randn(num_prototypes, dim, generator=generator)}


def dissimilarity(scores: Tensor, beta: float = 0.0, steps: float = 1.0) -> Tensor:
    """−log of the peak attention (scores = max over locations, in (0, 1]): 0 when a prototype's
    attention sits on one location, log N when it is spread evenly; used by cluster/separation."""
    return -torch.log(scores.clamp_min(1e-12))
