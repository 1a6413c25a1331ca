"""Similarity maps in input pixels: bicubic upsampling (as PyTorch/ProtoPNet do) and the high-activation box.

Ground floor: numpy only.
"""

from __future__ import annotations

import numpy as np

from edgeproto.errors import EdgeprotoError

_CUBIC_A = -0.75  # PyTorch's bicubic kernel (F.interpolate mode="bicubic"), which push uses


def _cubic_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of 1-D bicubic interpolation, align_corners=False, border replicated.

    The same arithmetic as PyTorch's ``upsample_bicubic2d`` (A = -0.75; source index
    ``(dst + 0.5)·in/out − 0.5``; the four taps clamped to the edge), so boxes match push's.
    """
    a = _CUBIC_A
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    base = np.floor(src)
    t = src - base
    cc1 = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1  # noqa: E731  |x| <= 1
    cc2 = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a  # noqa: E731  1 < |x| < 2
    coeffs = np.stack([cc2(t + 1), cc1(t), cc1(1 - t), cc2(2 - t)], axis=1)  # (n_out, 4)
    w = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    for tap in range(4):
        cols = np.clip(base.astype(np.int64) - 1 + tap, 0, n_in - 1)
        np.add.at(w, (rows, cols), coeffs[:, tap])
    return w


def upsample_map(map2d: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bicubic upsampling of one (H, W) similarity map to ``size`` (an int, or (width, height)).

    float64 (height, width); matches ``F.interpolate(mode="bicubic", align_corners=False)``.
    """
    m = np.asarray(map2d, dtype=np.float64)
    if m.ndim != 2 or m.size == 0:
        raise EdgeprotoError(f"expected a non-empty (H, W) map, got shape {m.shape}")
    width, height = (size, size) if np.isscalar(size) else size
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise EdgeprotoError(f"upsample size must be positive, got {size!r}")
    return _cubic_weights(m.shape[0], height) @ m @ _cubic_weights(m.shape[1], width).T


def high_activation_box(up: np.ndarray, percentile: float = 95.0) -> list[int]:
    """ProtoPNet's high-activation box: ``[x0, y0, x1, y1]`` (x1, y1 exclusive) around the pixels of
    the upsampled map ``up`` (H, W) at or above its ``percentile``."""
    up = np.asarray(up, dtype=np.float64)
    if up.ndim != 2 or up.size == 0 or not np.isfinite(up).all():
        raise EdgeprotoError(f"expected a finite, non-empty (H, W) map, got shape {up.shape}")
    ys, xs = np.nonzero(up >= np.percentile(up, percentile))
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
