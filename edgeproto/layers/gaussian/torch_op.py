"""Diagonal Gaussian as ``edgeproto::gaussian``: z (B,D,H,W), means (M,D), log_var (M,D)
-> log N(z; μ_m, diag(exp(log_var_m))), (B,M,H,W)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from edgeproto.layers.fake_kernels import empty_maps

LOG_2PI = math.log(2.0 * math.pi)


def _diff(z: Tensor, means: Tensor) -> Tensor:
    """z − μ in the direct form, (B,M,D,H,W)."""
    return z.unsqueeze(1) - means[None, :, :, None, None]


def reference(z: Tensor, means: Tensor, log_var: Tensor) -> Tensor:
    """Plain differentiable implementation (the op's definition)."""
    diff = _diff(z, means)
    quad = (diff * diff / torch.exp(log_var)[None, :, :, None, None]).sum(dim=2)
    const = (log_var + LOG_2PI).sum(dim=1)[:, None, None]  # (M,1,1)
    return -0.5 * (quad + const)


@torch.library.custom_op("edgeproto::gaussian", mutates_args=())
def op(z: Tensor, means: Tensor, log_var: Tensor) -> Tensor:
    """Diagonal-Gaussian log-likelihood of each location's features under each prototype."""
    return reference(z, means, log_var).contiguous()


@op.register_fake
def _(z: Tensor, means: Tensor, log_var: Tensor) -> Tensor:
    maps = empty_maps(z, means, "means")
    torch._check(log_var.shape == means.shape, lambda: "log_var must match means (M,D)")
    return maps


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad: Tensor):
    z, means, log_var = ctx.saved_tensors
    diff = _diff(z, means)
    w = diff * torch.exp(-log_var)[None, :, :, None, None]  # (z − μ)/v
    gw = grad.unsqueeze(2) * w  # (B,M,D,H,W)
    grad_z = grad_mu = grad_lv = None
    if ctx.needs_input_grad[0]:
        grad_z = -gw.sum(dim=1)
    if ctx.needs_input_grad[1]:
        grad_mu = gw.sum(dim=(0, 3, 4))
    if ctx.needs_input_grad[2]:
        grad_lv = 0.5 * ((gw * diff).sum(dim=(0, 3, 4)) - grad.sum(dim=(0, 2, 3))[:, None])
    return grad_z, grad_mu, grad_lv


op.register_autograd(_backward, setup_context=_setup_context)


def init_params(num_prototypes: int, dim: int, generator: torch.Generator | None = None) -> dict:
    """Means uniform in [0, 1) (the add-on ends in a sigmoid); log_var = 0, i.e. v = 1, wider
    than any sigmoid feature's spread (≤ 1/4), so early gradients reach every prototype."""
    return {
        "means": torch.rand(num_prototypes, dim, generator=generator),
        "log_var": torch.zeros(num_prototypes, dim),
    }


def dissimilarity(scores: Tensor) -> Tensor:
    """Negative log-likelihood, used by the cluster/separation costs."""
    return -scores
