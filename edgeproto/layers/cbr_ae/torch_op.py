"""Li et al.'s prototype layer as ``edgeproto::cbr_ae``: z (B,D,H,W), prototypes (M,D) -> −‖z − p‖²,
(B,M,H,W).

In the case-based reasoning autoencoder z is the encoder's output vector, (B,D,1,1), so the maps are
(B,M,1,1); the linear last layer turns the (negated) squared distances into logits. The op works on
any H×W, like every family.
"""

from __future__ import annotations

import torch
from torch import Tensor

from edgeproto.layers.fake_kernels import empty_maps

from edgeproto.layers.l2_log.torch_op import squared_distances


def reference(z: Tensor, prototypes: Tensor) -> Tensor:
    """Plain differentiable implementation (the op's definition)."""
    return -squared_distances(z, prototypes)


@torch.library.custom_op("edgeproto::cbr_ae", mutates_args=())
def op(z: Tensor, prototypes: Tensor) -> Tensor:
    """Negated squared L2 distance of each location's features to each prototype."""
    return reference(z, prototypes).contiguous()


@op.register_fake
def _(z: Tensor, prototypes: Tensor) -> Tensor:
    return empty_maps(z, prototypes)


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad: Tensor):
    z, p = ctx.saved_tensors
    grad_z = grad_p = None
    if ctx.needs_input_grad[0]:  # d(−Σ(z−p)²)/dz = −2(z − p)
        grad_z = -2.0 * (z * grad.sum(dim=1, keepdim=True) - torch.einsum("bmhw,md->bdhw", grad, p))
    if ctx.needs_input_grad[1]:
        grad_p = 2.0 * (torch.einsum("bmhw,bdhw->md", grad, z) - p * grad.sum(dim=(0, 2, 3))[:, None])
    return grad_z, grad_p


op.register_autograd(_backward, setup_context=_setup_context)


def init_params(num_prototypes: int, dim: int, generator: torch.Generator | None = None) -> dict:
    """Prototypes uniform in [0, 1) (Li et al.; the encoder ends in a sigmoid)."""
    return {"prototypes": torch.rand(num_prototypes, dim, generator=generator)}


def dissimilarity(scores: Tensor) -> Tensor:
    """The squared distance ‖z − p‖² (Li et al.'s R1/R2 and the cluster/separation costs)."""
    return -scores
