"""``edgeproto::L2LogSimilarity`` as a TensorRT quickly deployable plugin (``tensorrt.plugin``).

Imported only by :func:`edgeproto.runtimes.tensorrt.plugins.register_plugins`, on a machine with
TensorRT ≥ 10.9 and Triton. ``register`` gives the output shape (B, M, H, W); ``autotune`` takes
float32 in and out (the plugin sits inside the explanation guard, so its inputs are float32 at
every precision); ``aot_impl`` hands TensorRT the Triton kernel as PTX, so the serialized engine
runs without Python; ``impl`` (the JIT path, used when a graph asks for ``aot=0``) launches the same
kernel from Python on TensorRT's stream.
"""

from __future__ import annotations

from typing import Tuple, Union

import tensorrt.plugin as trtp

from edgeproto.runtimes.tensorrt.plugins import l2_log_kernel as kernel

NAME = "edgeproto::L2LogSimilarity"


@trtp.register(NAME)
def describe(z: trtp.TensorDesc, prototypes: trtp.TensorDesc, epsilon: float) -> trtp.TensorDesc:
    out = z.like()
    out.shape_expr[1] = prototypes.shape_expr[0]
    return out


@trtp.autotune(NAME)
def formats(z: trtp.TensorDesc, prototypes: trtp.TensorDesc, outputs: Tuple[trtp.TensorDesc]):
    return [trtp.AutoTuneCombination("FP32, FP32, FP32", "LINEAR")]


@trtp.aot_impl(NAME)
def ahead_of_time(z: trtp.TensorDesc, prototypes: trtp.TensorDesc, epsilon: float,
                  outputs: Tuple[trtp.TensorDesc], tactic: int
                  ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]:
    compiled = kernel.compile_ptx(epsilon)
    shape = z.shape_expr
    hw = shape[2] * shape[3]
    launch = trtp.KernelLaunchParams()
    launch.grid_x = trtp.cdiv(hw, kernel.BLOCK)
    launch.grid_y = prototypes.shape_expr[0]
    launch.grid_z = shape[0]
    launch.block_x = compiled.metadata.num_warps * 32
    launch.shared_mem = compiled.metadata.shared
    scalars = trtp.SymIntExprs.from_tuple([trtp.SymInt32(e) for e in (shape[1], prototypes.shape_expr[0], hw)])
    return compiled.metadata.name.encode(), compiled.asm["ptx"].encode(), launch, scalars


class _Device:
    """A TensorRT device tensor as Triton's launcher sees an argument: ``data_ptr()`` and ``dtype``."""

    def __init__(self, tensor: trtp.Tensor) -> None:
        self._ptr = tensor.__cuda_array_interface__["data"][0]
        self.dtype = "float32"

    def data_ptr(self) -> int:
        return self._ptr


@trtp.impl(NAME)
def just_in_time(z: trtp.Tensor, prototypes: trtp.Tensor, epsilon: float, outputs: Tuple[trtp.Tensor],
                 stream: int) -> None:
    b, c, h, w = z.shape
    m = prototypes.shape[0]
    launch = kernel.l2_log_similarity_kernel[kernel.grid(b, m, h * w)]
    launch(_Device(z), _Device(prototypes), c, m, h * w, _Device(outputs[0]), EPS=float(epsilon),
           BLOCK_HW=kernel.BLOCK)
