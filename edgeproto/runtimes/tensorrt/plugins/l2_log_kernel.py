"""The Triton kernel of ``edgeproto::L2LogSimilarity`` and its ahead-of-time compilation to PTX.

One program computes one block of spatial positions of one image for one prototype:
``d = Σ_c (z[b,c,hw] − p[m,c])²`` (the direct-difference form of the ONNX body, no cancellation),
``out[b,m,hw] = log((d + 1) / (d + ε))``. ε is a compile-time constant (the node's attribute), so
the only run-time scalars are the shapes — what TensorRT's AOT plugins pass (int32 expressions).

Kernel arguments, in TensorRT's AOT order: the inputs (``z``, ``prototypes``), the extra scalars
(``C``, ``M``, ``HW``), the output. Triton ≥ 3.3 appends its own scratch pointers after them; the
kernel uses no scratch (sizes 0).
"""

from __future__ import annotations

import triton
import triton.language as tl

BLOCK = 128
"""Spatial positions per program."""


@triton.jit
def l2_log_similarity_kernel(z_ptr, p_ptr, C, M, HW, out_ptr, EPS: tl.constexpr, BLOCK_HW: tl.constexpr):
    block = tl.program_id(0)
    m = tl.program_id(1)
    b = tl.program_id(2)
    offs = block * BLOCK_HW + tl.arange(0, BLOCK_HW)
    inside = offs < HW
    z_img = z_ptr + b * C * HW
    d = tl.zeros([BLOCK_HW], dtype=tl.float32)
    for c in range(0, C):
        zc = tl.load(z_img + c * HW + offs, mask=inside, other=0.0)
        diff = zc - tl.load(p_ptr + m * C + c)
        d += diff * diff
    tl.store(out_ptr + (b * M + m) * HW + offs, tl.log((d + 1.0) / (d + EPS)), mask=inside)


SIGNATURE = {"z_ptr": "*fp32", "p_ptr": "*fp32", "C": "i32", "M": "i32", "HW": "i32", "out_ptr": "*fp32",
             "EPS": "constexpr", "BLOCK_HW": "constexpr"}


def grid(batch: int, prototypes: int, hw: int) -> tuple[int, int, int]:
    """Launch grid (spatial blocks, prototypes, images)."""
    return (triton.cdiv(hw, BLOCK), prototypes, batch)


def compile_ptx(epsilon: float, target=None):
    """The kernel compiled ahead of time for ``target`` (a ``triton.backends.compiler.GPUTarget``;
    the local GPU when None): Triton's compiled kernel, whose ``asm["ptx"]`` TensorRT embeds."""
    source = triton.compiler.ASTSource(fn=l2_log_similarity_kernel, signature=SIGNATURE,
                                       constexprs={"EPS": float(epsilon), "BLOCK_HW": BLOCK})
    return triton.compile(source, target=target) if target is not None else triton.compile(source)
