"""Codebook similarity as ``edgeproto::codebook``: z (B,D,H,W), the codebook ``prototypes`` (M,D)
-> (B,M,H,W), the soft assignment softmax_m(cos(z_hw, c_m)/τ) of every location to the codebook
(sums to 1 over m).

ProtoQuant: prototypes are the entries of a learned codebook in the latent space of a frozen
backbone; a code's score is the max over locations of its assignment. ``auxiliary_loss`` is the
VQ codebook + commitment loss in cosine geometry, added to the training objective with
``train.coefs.commit``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from edgeproto.layers.fake_kernels import empty_maps

from edgeproto.layers.cosine.torch_op import cosine_map, cosine_vjp, normalize

COMMITMENT_BETA = 0.25  # weight of the commitment term against the codebook term (VQ-VAE's β)


def reference(z: Tensor, prototypes: Tensor, tau: float = 0.1) -> Tensor:
    """Plain differentiable implementation (the op's definition)."""
    return torch.softmax(cosine_map(z, prototypes) / tau, dim=1)


@torch.library.custom_op("edgeproto::codebook", mutates_args=())
def op(z: Tensor, prototypes: Tensor, tau: float = 0.1) -> Tensor:
    """Soft assignment of each location's direction to each code."""
    return reference(z, prototypes, tau).contiguous()


@op.register_fake
def _(z: Tensor, prototypes: Tensor, tau: float = 0.1) -> Tensor:
    return empty_maps(z, prototypes, "prototypes (codes)")


def _setup_context(ctx, inputs, output) -> None:
    z, codes, tau = inputs
    ctx.save_for_backward(z, codes, output)
    ctx.tau = tau


def _backward(ctx, grad: Tensor):
    z, codes, a = ctx.saved_tensors
    g_cos = a * (grad - (grad * a).sum(dim=1, keepdim=True)) / ctx.tau  # softmax over codes (dim 1)
    grad_z, grad_c = cosine_vjp(g_cos, z, codes, ctx.needs_input_grad[0], ctx.needs_input_grad[1])
    return grad_z, grad_c, None


op.register_autograd(_backward, setup_context=_setup_context)


def init_params(num_prototypes: int, dim: int, generator: torch.Generator | None = None) -> dict:
    """Codes ~ N(0, I): uniform random directions (only the direction matters)."""
    return {"prototypes": torch.randn(num_prototypes, dim, generator=generator)}


def dissimilarity(scores: Tensor, tau: float = 0.1) -> Tensor:
    """−log of a code's peak assignment probability (used by cluster/separation, if enabled)."""
    return -torch.log(scores.clamp_min(1e-12))


def push_similarity(z: Tensor, codes: Tensor, tau: float = 0.1) -> Tensor:
    """The patch a code stands for: the one of highest cosine."""
    return cosine_map(z, codes)


def auxiliary_loss(z: Tensor, codes: Tensor, tau: float = 0.1) -> Tensor:
    """VQ loss in cosine geometry over every location, with k its nearest code:
    (1 − cos(sg[ẑ], ĉ_k)) moves the codes to the features, β·(1 − cos(ẑ, sg[ĉ_k])) commits the
    features to their codes (β = 0.25)."""
    zhat = normalize(z, 1)[0].permute(0, 2, 3, 1).reshape(-1, z.shape[1])  # (BHW, D)
    chat = normalize(codes, 1)[0]
    with torch.no_grad():
        k = (zhat @ chat.t()).argmax(dim=1)
    codebook = 1.0 - (zhat.detach() * chat[k]).sum(dim=1)
    commitment = 1.0 - (zhat * chat[k].detach()).sum(dim=1)
    return codebook.mean() + COMMITMENT_BETA * commitment.mean()
