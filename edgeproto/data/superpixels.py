"""SLIC superpixels as model input: the region proposals of the ``region_seg`` arch.

numpy + scikit-image only -- never torch -- because the device computes them as preprocessing.
The label map travels to the model as a 4th input channel (after the normalised RGB), so the
exported graph takes "the image and the superpixel label map" as one tensor and every part of the
pipeline (golden inputs, calibration, validate, explain) feeds it like any other input.
"""

from __future__ import annotations

import numpy as np

from edgeproto.errors import EdgeprotoError

COMPACTNESS = 10.0


def slic_labels(raw: np.ndarray, n_segments: int) -> np.ndarray:
    """int64 (S,S) superpixel labels 0..n_segments-1 of a uint8 (S,S,3) image (scikit-image ``slic``;
    the rare labels beyond ``n_segments - 1`` are merged into the last one, so the model's fixed
    number of regions always holds them)."""
    try:
        from skimage.segmentation import slic
    except ImportError:
        raise EdgeprotoError("superpixels need scikit-image: pip install 'edgeproto[segmentation]'") from None
    labels = slic(np.asarray(raw), n_segments=int(n_segments), compactness=COMPACTNESS, start_label=0,
                  channel_axis=-1)
    return np.minimum(labels, int(n_segments) - 1).astype(np.int64)


def with_superpixels(x: np.ndarray, raw: np.ndarray, n_segments: int) -> np.ndarray:
    """float32 (4,S,S): the model input (3,S,S) with the label map of ``raw`` as a 4th channel."""
    labels = slic_labels(raw, n_segments).astype(np.float32)
    return np.concatenate([np.asarray(x, dtype=np.float32), labels[None]], axis=0)
