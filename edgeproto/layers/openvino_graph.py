"""Small graph-building helpers shared by the families' OpenVINO converters (no torch)."""

from __future__ import annotations

import numpy as np
import openvino.opset13 as ops


def const_like(value: float, like):
    """A scalar constant of ``like``'s element type."""
    return ops.convert_like(ops.constant(np.float32(value)), like)


def axes(*values: int):
    """An int64 axes constant."""
    return ops.constant(np.array(values, dtype=np.int64))
