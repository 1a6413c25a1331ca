"""What every family's fake kernel shares: shape checks and an empty (B,M,H,W) result."""

from __future__ import annotations

import torch
from torch import Tensor


def empty_maps(z: Tensor, centers: Tensor, what: str = "prototypes") -> Tensor:
    """Check z (B,D,H,W) against ``centers`` (M,D) and return an empty (B,M,H,W) tensor like z."""
    torch._check(z.dim() == 4, lambda: "z must be (B,D,H,W)")
    torch._check(centers.dim() == 2, lambda: f"{what} must be (M,D)")
    torch._check(z.shape[1] == centers.shape[1], lambda: "channel mismatch")
    return z.new_empty((z.shape[0], centers.shape[0], z.shape[2], z.shape[3]))
