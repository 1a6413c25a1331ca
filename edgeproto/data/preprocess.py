"""Image loading and the one conversion from a picture to a model input.

numpy + Pillow only -- never torch -- because edge devices run this module too. Every dataset
and every runtime makes its inputs with :func:`to_input`, so training and deployment agree
pixel for pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from edgeproto.errors import EdgeprotoError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")

# Errors Pillow raises for files that are missing pieces, truncated or not images at all.
_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)

# The largest picture edgeproto decodes (width × height). Models take at most 2048², and a 40 Mpx
# RGB decode is ~120 MB; above this, downscale the file first. Pillow's own bomb limit is 89 Mpx.
MAX_IMAGE_PIXELS = 40_000_000


def check_pixels(img: Image.Image, path, limit: int = MAX_IMAGE_PIXELS) -> None:
    """Refuse (from the header, before decoding) a picture larger than ``limit`` pixels."""
    w, h = img.size
    if w * h > limit:
        raise EdgeprotoError(f"image {path} is {w}×{h} = {w * h / 1e6:.0f} Mpx; edgeproto reads at most "
                             f"{limit / 1e6:.0f} Mpx: downscale it first")


def load_image(path: str | Path, *, limit: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Read an image file fully and return it as an RGB ``PIL.Image``.

    Pictures over ``limit`` pixels are refused from their header (nothing is decoded; decoding at a
    reduced scale would change the pixels the model sees, so it is not done). Float images (mode F, e.g. a float TIFF) holding values in [0, 1] are
    scaled to [0, 255]; NaN or infinite pixels are refused.
    """
    path = Path(path)
    if not path.is_file():
        raise EdgeprotoError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            check_pixels(img, path, limit)
            img.load()
            return _to_rgb(img, path)
    except _READ_ERRORS as err:
        raise EdgeprotoError(f"cannot read image file {path}: {_reason(err)}") from None


def read_image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file from its header only (cheap; catches non-image files)."""
    path = Path(path)
    if not path.is_file():
        raise EdgeprotoError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            check_pixels(img, path)
            return img.size
    except _READ_ERRORS as err:
        raise EdgeprotoError(f"cannot read image file {path}: {_reason(err)}") from None


def to_raw(img: Image.Image, size: int) -> np.ndarray:
    """RGB, bilinear-resized to size x size: np.uint8 (size, size, 3) -- what visualisations show."""
    if not isinstance(img, Image.Image):
        raise EdgeprotoError(f"expected a PIL image, got {type(img).__name__}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise EdgeprotoError(f"image size must be a positive integer, got {size!r}")
    rgb = _to_rgb(img, getattr(img, "filename", None))
    if rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    return np.array(rgb, dtype=np.uint8)


def normalize(raw: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 (S, S, 3) -> float32 (3, S, S): scale to [0, 1], then (x - mean) / std per channel."""
    mean_arr = _channel_stats(mean, "mean")
    std_arr = _channel_stats(std, "std")
    if np.any(std_arr <= 0):
        raise EdgeprotoError(f"std must be positive in every channel, got {tuple(std)}")
    raw = np.asarray(raw)
    if raw.ndim != 3 or raw.shape[2] != 3:
        raise EdgeprotoError(f"expected an (S, S, 3) image array, got shape {raw.shape}")
    x = raw.astype(np.float32) / np.float32(255.0)
    x = (x - mean_arr) / std_arr
    return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def to_input(
    img: Image.Image, size: int, mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """The model input for one picture: float32 (3, size, size), RGB, bilinear resize, normalised."""
    return normalize(to_raw(img, size), mean, std)


def _to_rgb(img: Image.Image, path=None) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I") or img.mode == "F":  # 16/32-bit or float greyscale: squeeze into 8 bits
        arr = np.asarray(img, dtype=np.float64)
        if arr.size and not np.isfinite(arr).all():
            raise EdgeprotoError(f"image {path or ''} has NaN or infinite pixels".replace("  ", " "))
        note = None
        if img.mode == "F" and arr.size and arr.min() >= 0 and arr.max() <= 1:
            arr = arr * 255.0  # a float image in [0, 1] (the usual convention), not a black picture
            note = SCALED_NOTE
        elif arr.size and arr.max() > 255:
            arr = arr * (255.0 / 65535.0)
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
        if note:
            img.info["edgeproto_scaled"] = note
    return img.convert("RGB")


SCALED_NOTE = "float pixels in [0, 1] scaled to [0, 255]"


def _channel_stats(values: Sequence[float], what: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        arr = np.zeros(0, dtype=np.float32)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise EdgeprotoError(f"{what} must be 3 finite numbers (R, G, B), got {values!r}")
    return arr


def _reason(err: BaseException) -> str:
    text = str(err).strip()
    return text if text else type(err).__name__
