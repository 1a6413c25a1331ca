"""ProtoPNet similarity as ``edgeproto::l2_log``: z (B,D,H,W), prototypes (M,D) -> (B,M,H,W)."""

from __future__ import annotations

import torch
from torch import Tensor

from edgeproto.layers.fake_kernels import empty_maps


def squared_distances(z: Tensor, prototypes: Tensor) -> Tensor:
    """Σ_c (z − p)² in the direct (difference) form; accurate where z²−2zp+p² is not."""
    diff = z.unsqueeze(1) - prototypes[None, :, :, None, None]
    return diff.pow(2).sum(dim=2)


def reference(z: Tensor, prototypes: Tensor, epsilon: float = 1e-4) -> Tensor:
    """Plain differentiable implementation (the op's definition)."""
    d = squared_distances(z, prototypes)
    return torch.log((d + 1.0) / (d + epsilon))


@torch.library.custom_op("edgeproto::l2_log", mutates_args=())
def op(z: Tensor, prototypes: Tensor, epsilon: float = 1e-4) -> Tensor:
    """log((d+1)/(d+ε)) with d the squared L2 distance of each location to each prototype."""
    return reference(z, prototypes, epsilon).contiguous()


@op.register_fake
def _(z: Tensor, prototypes: Tensor, epsilon: float = 1e-4) -> Tensor:
    return empty_maps(z, prototypes)


def _setup_context(ctx, inputs, output) -> None:
    z, prototypes, epsilon = inputs
    ctx.save_for_backward(z, prototypes)
    ctx.epsilon = epsilon


def _backward(ctx, grad: Tensor):
    z, p = ctx.saved_tensors
    d = squared_distances(z, p)
    g = grad * (1.0 / (d + 1.0) - 1.0 / (d + ctx.epsilon))  # dL/dd, (B,M,H,W)
    grad_z = grad_p = None
    if ctx.needs_input_grad[0]:
        grad_z = 2.0 * (z * g.sum(dim=1, keepdim=True) - torch.einsum("bmhw,md->bdhw", g, p))
    if ctx.needs_input_grad[1]:
        grad_p = -2.0 * (torch.einsum("bmhw,bdhw->md", g, z) - p * g.sum(dim=(0, 2, 3))[:, None])
    return grad_z, grad_p, None


op.register_autograd(_backward, setup_context=_setup_context)


def init_params(num_prototypes: int, dim: int, generator: torch.Generator | None = None) -> dict:
    """ProtoPNet's init: prototypes uniform in [0, 1) (the add-on ends in a sigmoid)."""
    return {"prototypes": torch.rand(num_prototypes, dim, generator=generator)}


def dissimilarity(scores: Tensor, epsilon: float = 1e-4) -> Tensor:
    """The squared distance d behind a similarity (inverse of log((d+1)/(d+ε))): ProtoPNet's
    cluster/separation costs are written in d, which is bounded below by 0."""
    e = torch.exp(scores)
    return ((1.0 - epsilon * e) / (e - 1.0)).clamp_min(0.0)
