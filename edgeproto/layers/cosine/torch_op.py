"""Cosine similarity as ``edgeproto::cosine``: z (B,D,H,W), prototypes (M,D) -> (B,M,H,W).

Also holds the normalisation helpers that ``hyperpg`` builds on.
"""

from __future__ import annotations

import torch
from torch import Tensor

from edgeproto.layers.fake_kernels import empty_maps

from edgeproto.layers.cosine import NORM_EPS as EPS


def normalize(x: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """``x / max(‖x‖, EPS)`` along ``dim``, and that clamped norm (dim kept)."""
    n = torch.linalg.vector_norm(x, dim=dim, keepdim=True).clamp_min(EPS)
    return x / n, n


def normalize_backward(g: Tensor, xhat: Tensor, n: Tensor, dim: int) -> Tensor:
    """VJP of ``normalize``: (g − x̂·⟨x̂, g⟩·[‖x‖ > EPS]) / max(‖x‖, EPS)."""
    proj = (g * xhat).sum(dim, keepdim=True) * (n > EPS)
    return (g - xhat * proj) / n


def cosine_map(z: Tensor, prototypes: Tensor) -> Tensor:
    """⟨ẑ, p̂⟩ for every location and prototype, (B,M,H,W)."""
    zhat, _ = normalize(z, 1)
    phat, _ = normalize(prototypes, 1)
    return torch.einsum("bdhw,md->bmhw", zhat, phat)


def cosine_vjp(
    g: Tensor, z: Tensor, prototypes: Tensor, need_z: bool, need_p: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of Σ g·cosine_map(z, p) w.r.t. z and p (None where not needed)."""
    zhat, nz = normalize(z, 1)
    phat, npr = normalize(prototypes, 1)
    grad_z = grad_p = None
    if need_z:
        grad_z = normalize_backward(torch.einsum("bmhw,md->bdhw", g, phat), zhat, nz, 1)
    if need_p:
        grad_p = normalize_backward(torch.einsum("bmhw,bdhw->md", g, zhat), phat, npr, 1)
    return grad_z, grad_p


def reference(z: Tensor, prototypes: Tensor) -> Tensor:
    """Plain differentiable implementation (the op's definition)."""
    return cosine_map(z, prototypes)


@torch.library.custom_op("edgeproto::cosine", mutates_args=())
def op(z: Tensor, prototypes: Tensor) -> Tensor:
    """Cosine similarity of each location's normalised features to each normalised prototype."""
    return reference(z, prototypes).contiguous()


@op.register_fake
def _(z: Tensor, prototypes: Tensor) -> Tensor:
    return empty_maps(z, prototypes)


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad: Tensor):
    z, p = ctx.saved_tensors
    return cosine_vjp(grad, z, p, ctx.needs_input_grad[0], ctx.needs_input_grad[1])


op.register_autograd(_backward, setup_context=_setup_context)


def init_params(num_prototypes: int, dim: int, generator: torch.Generator | None = None) -> dict:
    """Prototypes ~ N(0, I): only their direction matters, and randn directions are uniform."""
    return {"prototypes": torch.randn(num_prototypes, dim, generator=generator)}


def dissimilarity(scores: Tensor) -> Tensor:
    """Cosine distance 1 − cos, used by the cluster/separation costs."""
    return 1.0 - scores
