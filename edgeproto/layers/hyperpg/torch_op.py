"""HyperPg as ``edgeproto::hyperpg``: z (B,D,H,W), prototypes (M,D), mu (M,), log_sigma (M,)
-> log N(cos; μ, σ²) with cos the cosine similarity, (B,M,H,W)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from edgeproto.layers.fake_kernels import empty_maps

from edgeproto.layers.cosine.torch_op import cosine_map, cosine_vjp

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def log_density(cos: Tensor, mu: Tensor, log_sigma: Tensor) -> Tensor:
    """−(cos − μ)² / (2σ²) − log(√(2π)·σ); μ, log σ (M,) broadcast over (B,M,H,W)."""
    ls = log_sigma[None, :, None, None]
    sigma = torch.exp(ls)
    d = cos - mu[None, :, None, None]
    return -(d * d) / (2.0 * sigma * sigma) - (ls + LOG_SQRT_2PI)


def reference(z: Tensor, prototypes: Tensor, mu: Tensor, log_sigma: Tensor) -> Tensor:
    """Plain differentiable implementation (the op's definition)."""
    return log_density(cosine_map(z, prototypes), mu, log_sigma)


@torch.library.custom_op("edgeproto::hyperpg", mutates_args=())
def op(z: Tensor, prototypes: Tensor, mu: Tensor, log_sigma: Tensor) -> Tensor:
    """HyperPg log-likelihood of each location's direction under each prototype."""
    return reference(z, prototypes, mu, log_sigma).contiguous()


@op.register_fake
def _(z: Tensor, prototypes: Tensor, mu: Tensor, log_sigma: Tensor) -> Tensor:
    maps = empty_maps(z, prototypes)
    torch._check(mu.shape == (prototypes.shape[0],), lambda: "mu must be (M,)")
    torch._check(log_sigma.shape == (prototypes.shape[0],), lambda: "log_sigma must be (M,)")
    return maps


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad: Tensor):
    z, p, mu, log_sigma = ctx.saved_tensors
    need_z, need_p, need_mu, need_ls = ctx.needs_input_grad
    d = cosine_map(z, p) - mu[None, :, None, None]
    r = grad * d * torch.exp(-2.0 * log_sigma)[None, :, None, None]  # g·(cos − μ)/σ²
    grad_z = grad_p = grad_mu = grad_ls = None
    if need_z or need_p:
        grad_z, grad_p = cosine_vjp(-r, z, p, need_z, need_p)
    if need_mu:
        grad_mu = r.sum(dim=(0, 2, 3))
    if need_ls:
        grad_ls = (r * d - grad).sum(dim=(0, 2, 3))  # g·((cos − μ)²/σ² − 1)
    return grad_z, grad_p, grad_mu, grad_ls


op.register_autograd(_backward, setup_context=_setup_context)


def init_params(num_prototypes: int, dim: int, generator: torch.Generator | None = None) -> dict:
    """randn prototypes (uniform directions); μ = 1 (peak at perfect alignment);
    σ = 0.5, wide enough that random directions (cos ≈ 0) still get useful gradients."""
    return {
        "prototypes": torch.randn(num_prototypes, dim, generator=generator),
        "mu": torch.ones(num_prototypes),
        "log_sigma": torch.full((num_prototypes,), math.log(0.5)),
    }


def dissimilarity(scores: Tensor) -> Tensor:
    """Negative log-density, used by the cluster/separation costs."""
    return -scores


# Separation cost as the public HyperPg code aggregates it (nips25-12267/12267-hyperpg @ ba8c122,
# src/prob_proto/losses/prototype_loss.py, SeparationLoss): per image, each wrong class's best
# prototype (max density), averaged over the wrong classes -- not ProtoPNet's single nearest
# wrong-class prototype. Read by edgeproto.train.losses.
SEPARATION = "mean_over_wrong_classes"

# No ``push_similarity``: push searches by the op itself, the log-likelihood under the prototype's
# μ and σ (the patch the prototype finds most likely), not by the bare cosine.
