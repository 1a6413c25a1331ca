"""Tversky similarity as ``edgeproto::tversky``: z (B,D,H,W), prototypes (M,D), feature bank Ω (F,D),
θ, α, β (M,) -> (B,M,H,W).

Tversky's contrast model with feature saliences a = Ω·z (of the input at each location) and
b = Ω·p (of each prototype):

    f(A∩B) = Σ_f a·b·[a>0][b>0],  f(A−B) = Σ_f a·[a>0][b≤0],  f(B−A) = Σ_f b·[b>0][a≤0]
    sim    = θ·f(A∩B) − α·f(A−B) − β·f(B−A)

**Indicators**: the hard indicators have zero gradient almost everywhere and make the output jump
where a salience crosses 0 (so two runtimes that round a ≈ 0 differently disagree by O(1)). The op
therefore uses the smooth surrogate [x>0] ≈ s(x) = σ(x/τ), [x≤0] ≈ 1 − s(x) = σ(−x/τ) *in the
forward*, with τ a node attribute (default 0.1); the ONNX body and the OpenVINO converter compute the
same smooth forward, the backward is its exact gradient. As τ → 0 it becomes the hard rule
(a·s(a) → relu(a)); the scale of Ω is learned, so the network can sharpen the gates itself.

θ, α, β are learnable per prototype (M,) -- per class in the head; equal entries give the paper's
scalar form. Implemented in the rearranged form
sim = Σ_f a⁺·U + Σ_f s(a)·V − c with a⁺ = a·s(a), b⁺ = b·s(b), U = θb⁺ − α(1 − s(b)),
V = βb⁺, c = βΣ_f b⁺.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _parts(z, prototypes, feature_bank, theta, alpha, beta, tau):
    a = torch.einsum("bdhw,fd->bfhw", z, feature_bank)
    b = prototypes @ feature_bank.t()  # (M,F)
    ga, gb = torch.sigmoid(a / tau), torch.sigmoid(b / tau)
    ap, bp = a * ga, b * gb
    u = theta[:, None] * bp - alpha[:, None] * (1.0 - gb)
    v = beta[:, None] * bp
    c = beta * bp.sum(dim=1)
    return a, b, ga, gb, ap, bp, u, v, c


def term_by_term(z: Tensor, prototypes: Tensor, feature_bank: Tensor, theta: Tensor, alpha: Tensor, beta: Tensor,
                 tau: float = 0.1) -> Tensor:
    """The three Tversky terms written out one by one (for checking; same value as ``reference``)."""
    a = torch.einsum("bdhw,fd->bfhw", z, feature_bank)[:, None]  # (B,1,F,H,W)
    b = (prototypes @ feature_bank.t())[None, :, :, None, None]  # (1,M,F,1,1)
    sa, sb = torch.sigmoid(a / tau), torch.sigmoid(b / tau)
    common = (a * sa * b * sb).sum(dim=2)
    a_not_b = (a * sa * (1.0 - sb)).sum(dim=2)
    b_not_a = (b * sb * (1.0 - sa)).sum(dim=2)
    m = lambda t: t[None, :, None, None]  # noqa: E731
    return m(theta) * common - m(alpha) * a_not_b - m(beta) * b_not_a


def reference(z: Tensor, prototypes: Tensor, feature_bank: Tensor, theta: Tensor, alpha: Tensor, beta: Tensor,
              tau: float = 0.1) -> Tensor:
    """Plain differentiable implementation (the op's definition, in the rearranged form)."""
    _, _, ga, _, ap, _, u, v, c = _parts(z, prototypes, feature_bank, theta, alpha, beta, tau)
    return torch.einsum("bfhw,mf->bmhw", ap, u) + torch.einsum("bfhw,mf->bmhw", ga, v) - c[None, :, None, None]


@torch.library.custom_op("edgeproto::tversky", mutates_args=())
def op(z: Tensor, prototypes: Tensor, feature_bank: Tensor, theta: Tensor, alpha: Tensor, beta: Tensor,
       tau: float = 0.1) -> Tensor:
    """Tversky similarity of each location's features to each prototype over the feature bank."""
    return reference(z, prototypes, feature_bank, theta, alpha, beta, tau).contiguous()


@op.register_fake
def _(z, prototypes, feature_bank, theta, alpha, beta, tau: float = 0.1) -> Tensor:
    torch._check(z.dim() == 4, lambda: "z must be (B,D,H,W)")
    torch._check(prototypes.dim() == 2, lambda: "prototypes must be (M,D)")
    torch._check(feature_bank.dim() == 2, lambda: "feature_bank must be (F,D)")
    torch._check(z.shape[1] == prototypes.shape[1] == feature_bank.shape[1], lambda: "channel mismatch")
    for t in (theta, alpha, beta):
        torch._check(t.shape == (prototypes.shape[0],), lambda: "theta, alpha, beta must be (M,)")
    return z.new_empty((z.shape[0], prototypes.shape[0], z.shape[2], z.shape[3]))


def _setup_context(ctx, inputs, output) -> None:
    *tensors, tau = inputs
    ctx.save_for_backward(*tensors)
    ctx.tau = tau


def _backward(ctx, grad: Tensor):
    z, p, bank, theta, alpha, beta = ctx.saved_tensors
    tau = ctx.tau
    a, b, ga, gb, ap, bp, u, v, _ = _parts(z, p, bank, theta, alpha, beta, tau)
    need = ctx.needs_input_grad
    g_u = torch.einsum("bmhw,bfhw->mf", grad, ap)
    g_v = torch.einsum("bmhw,bfhw->mf", grad, ga)
    g_sum = grad.sum(dim=(0, 2, 3))  # dL/dc = −g_sum
    grad_z = grad_p = grad_bank = grad_theta = grad_alpha = grad_beta = None
    if need[0] or need[2]:
        sa = ga * (1.0 - ga) / tau
        g_a = (torch.einsum("bmhw,mf->bfhw", grad, u) * (ga + a * sa)
               + torch.einsum("bmhw,mf->bfhw", grad, v) * sa)
        if need[0]:
            grad_z = torch.einsum("bfhw,fd->bdhw", g_a, bank)
        if need[2]:
            grad_bank = torch.einsum("bfhw,bdhw->fd", g_a, z)
    if need[1] or need[2]:
        sb = gb * (1.0 - gb) / tau
        g_bp = theta[:, None] * g_u + beta[:, None] * g_v - (beta * g_sum)[:, None]
        g_b = g_bp * (gb + b * sb) + alpha[:, None] * g_u * sb
        if need[1]:
            grad_p = g_b @ bank
        if need[2]:
            grad_bank = grad_bank + g_b.t() @ p
    if need[3]:
        grad_theta = (g_u * bp).sum(dim=1)
    if need[4]:
        grad_alpha = -(g_u * (1.0 - gb)).sum(dim=1)
    if need[5]:
        grad_beta = (g_v * bp).sum(dim=1) - g_sum * bp.sum(dim=1)
    return grad_z, grad_p, grad_bank, grad_theta, grad_alpha, grad_beta, None


op.register_autograd(_backward, setup_context=_setup_context)


def init_params(num_prototypes: int, dim: int, generator: torch.Generator | None = None,
                num_features: int | None = None) -> dict:
    """Prototypes ~ N(0, I); feature bank Ω ~ N(0, 1/D) with ``num_features`` rows (default: as many
    as prototypes); θ = 1, α = 0.5, β = 0.25: common features count most, the input's distinctive
    features more than the prototype's (Tversky's asymmetry). α ≠ β also keeps the exporter from
    merging two identical initializers into one node input."""
    f = num_prototypes if num_features is None else num_features
    return {
        "prototypes": torch.randn(num_prototypes, dim, generator=generator),
        "feature_bank": torch.randn(f, dim, generator=generator) / dim**0.5,
        "theta": torch.ones(num_prototypes),
        "alpha": torch.full((num_prototypes,), 0.5),
        "beta": torch.full((num_prototypes,), 0.25),
    }


def dissimilarity(scores: Tensor, tau: float = 0.1) -> Tensor:
    """Negative similarity, used by the cluster/separation costs."""
    return -scores
