"""Similarity maps in input pixels: bicubic upsampling (as PyTorch/ProtoPNet do) and the high-activation box.

Ground floor: numpy only.
"""

from __future__ import annotations

import functools

import numpy as np

from edgeproto.errors import EdgeprotoError

_CUBIC_A = -0.75  # PyTorch's bicubic kernel (F.interpolate mode="bicubic"), which push uses


@functools.lru_cache(maxsize=64)
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
    w.flags.writeable = False  # cached: shared by every call of the same size
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


def upsample_maps(maps: np.ndarray, size: int) -> np.ndarray:
    """:func:`upsample_map` of a stack of maps (K, H, W) → float64 (K, size, size), one matmul pair."""
    m = np.asarray(maps, dtype=np.float64)
    if m.ndim != 3 or m.shape[1] == 0 or m.shape[2] == 0:
        raise EdgeprotoError(f"expected a stack of (H, W) maps, got shape {m.shape}")
    return _cubic_weights(m.shape[1], int(size)) @ m @ _cubic_weights(m.shape[2], int(size)).T


def map_peak(map2d: np.ndarray, size: int) -> tuple[int, int] | None:
    """(y, x) of the maximum of the map upsampled (bicubic) to ``size`` px (the first one in row-major
    order); None for a non-finite map."""
    m = np.asarray(map2d, dtype=np.float64)
    if not np.isfinite(m).all():
        return None
    up = upsample_map(m, size)
    y, x = np.unravel_index(int(up.argmax()), up.shape)
    return int(y), int(x)


def high_activation_boxes(ups: np.ndarray, percentile: float = 95.0) -> list[list[int]]:
    """:func:`high_activation_box` of each upsampled map of a stack (K, H, W), with one partition."""
    ups = np.asarray(ups, dtype=np.float64)
    k, h, w = ups.shape
    flat = ups.reshape(k, -1)
    n = flat.shape[1]
    q = percentile / 100
    virtual = (n - 1) * q
    lo = min(max(int(np.floor(virtual)), 0), n - 1)
    hi = min(lo + 1, n - 1)
    part = np.partition(flat, (lo, hi) if hi != lo else lo, axis=1)
    a, b = part[:, lo], part[:, hi]
    t = virtual - np.floor(virtual)
    d = b - a
    thresholds = b - d * (1 - t) if t >= 0.5 else a + d * t
    mask = ups >= thresholds[:, None, None]
    rows, cols = mask.any(axis=2), mask.any(axis=1)
    y0, x0 = rows.argmax(axis=1), cols.argmax(axis=1)
    y1, x1 = h - rows[:, ::-1].argmax(axis=1), w - cols[:, ::-1].argmax(axis=1)
    return [[int(x0[i]), int(y0[i]), int(x1[i]), int(y1[i])] for i in range(k)]


def percentile_linear(values: np.ndarray, percentile: float) -> float:
    """``np.percentile(values, percentile)`` (the default linear method) with one ``np.partition``:
    the same arithmetic (virtual index (n − 1)·q, numpy's two-sided lerp), without the general
    machinery -- this runs for every explained prototype of every frame."""
    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    n = flat.size
    q = percentile / 100
    virtual = (n - 1) * q
    lo = int(np.floor(virtual))
    lo = min(max(lo, 0), n - 1)
    hi = min(lo + 1, n - 1)
    part = np.partition(flat, (lo, hi)) if hi != lo else np.partition(flat, lo)
    a, b = part[lo], part[hi]
    t = virtual - np.floor(virtual)
    d = b - a
    return float(b - d * (1 - t)) if t >= 0.5 else float(a + d * t)


def high_activation_box(up: np.ndarray, percentile: float = 95.0) -> list[int]:
    """ProtoPNet's high-activation box: ``[x0, y0, x1, y1]`` (x1, y1 exclusive) around the pixels of
    the upsampled map ``up`` (H, W) at or above its ``percentile``."""
    up = np.asarray(up, dtype=np.float64)
    if up.ndim != 2 or up.size == 0 or not np.isfinite(up).all():
        raise EdgeprotoError(f"expected a finite, non-empty (H, W) map, got shape {up.shape}")
    mask = up >= percentile_linear(up, percentile)
    ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1]


def peak_index(maps: np.ndarray) -> np.ndarray:
    """(…, M) flat latent index of each prototype's most similar patch in ``maps`` (…, M, H, W)."""
    m = np.asarray(maps)
    return m.reshape(*m.shape[:-2], -1).argmax(axis=-1)


def similarity_at(maps: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(N, M) similarity of every map in ``maps`` (N, M, H, W) at each prototype's flat latent
    ``index`` (M,): "the same patch location" of Nauta et al. (2020)."""
    m = np.asarray(maps)
    flat = m.reshape(m.shape[0], m.shape[1], -1)
    return np.take_along_axis(flat, np.asarray(index, dtype=np.int64)[None, :, None], axis=2)[..., 0]


def weighted_importance(delta: np.ndarray, s_orig: np.ndarray) -> np.ndarray:
    """Nauta et al.'s global importance Σ(Δ·s_orig)/Σ s_orig over axis 0 (images); ``delta`` (N, …, M)
    and ``s_orig`` (N, M) broadcast on the middle axes. NaN where Σ s_orig is 0."""
    d = np.asarray(delta, dtype=np.float64)
    s = np.asarray(s_orig, dtype=np.float64).reshape(d.shape[0], *([1] * (d.ndim - 2)), d.shape[-1])
    total = s.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total != 0, (d * s).sum(axis=0) / total, np.nan)
