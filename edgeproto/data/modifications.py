"""The image modifications of "This looks like that, *because* …" (Nauta et al., 2020).

Each one changes one visual characteristic of a whole picture by a fixed amount, with the values
of their ``preprocessing/mod_values.py`` (M-Nauta/Explaining_Prototypes):

- ``contrast`` 0.45, ``saturation`` 0.7, ``brightness`` 0.8: torchvision's ``ColorJitter`` with
  fixed factors on a PIL image, i.e. Pillow's ``ImageEnhance.Contrast`` / ``Color`` / ``Brightness``;
- ``hue`` 0.1: torchvision's PIL ``adjust_hue``: the HSV hue byte shifted by ``uint8(0.1·255)``, wrapping;
- ``texture``: OpenCV non-local-means denoising (``fastNlMeansDenoisingColored``, h = hColor = 4,
  template window 7, search window 21) of the BGR picture, as their script reads it with ``cv2.imread``;
- ``shape``: every row i rolled sideways by ``int(4·sin(π·i·0.05))``, then every column i rolled
  down by the same amount.

numpy + Pillow (+ OpenCV for ``texture``) -- never torch: the device computes local importances too.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance

from edgeproto.errors import EdgeprotoError

CONTRAST, SATURATION, HUE, BRIGHTNESS = 0.45, 0.7, 0.1, 0.8
SHAPE_AMPLITUDE, SHAPE_FREQUENCY = 4, 0.05
TEXTURE_H, TEXTURE_TEMPLATE, TEXTURE_SEARCH = 4, 7, 21

MODIFICATIONS = ("hue", "shape", "texture", "contrast", "saturation", "brightness")
PARAMETERS = {"contrast": CONTRAST, "saturation": SATURATION, "hue": HUE, "brightness": BRIGHTNESS,
              "shape": {"amplitude": SHAPE_AMPLITUDE, "frequency": SHAPE_FREQUENCY},
              "texture": {"h": TEXTURE_H, "hColor": TEXTURE_H, "template": TEXTURE_TEMPLATE,
                          "search": TEXTURE_SEARCH}}
VIDEO_EXTRA = "edgeproto[video]"


def _cv2():
    try:
        import cv2
    except ImportError:
        raise EdgeprotoError(f"the texture modification needs OpenCV: pip install '{VIDEO_EXTRA}'") from None
    return cv2


def _enhance(raw: np.ndarray, enhancer, factor: float) -> np.ndarray:
    return np.asarray(enhancer(Image.fromarray(raw)).enhance(factor))


def shift_hue(raw: np.ndarray, factor: float = HUE) -> np.ndarray:
    """torchvision's PIL ``adjust_hue``: the HSV hue byte plus ``uint8(factor·255)``, wrapping."""
    h, s, v = Image.fromarray(raw).convert("HSV").split()
    hue = np.asarray(h, dtype=np.uint8) + np.array(factor * 255).astype(np.uint8)  # uint8 wraps, as theirs
    return np.asarray(Image.merge("HSV", (Image.fromarray(hue, "L"), s, v)).convert("RGB"))


def warp_shape(raw: np.ndarray, amplitude: float = SHAPE_AMPLITUDE, frequency: float = SHAPE_FREQUENCY) -> np.ndarray:
    """Rows, then columns, rolled by ``int(amplitude·sin(π·i·frequency))`` (their ``modify_shape``)."""
    img = np.array(raw, copy=True)
    shift = [int(amplitude * np.sin(np.pi * i * frequency)) for i in range(max(img.shape[:2]))]
    for i in range(img.shape[0]):
        img[i] = np.roll(img[i], shift[i], axis=0)
    for i in range(img.shape[1]):
        img[:, i] = np.roll(img[:, i], shift[i], axis=0)
    return img


def smooth_texture(raw: np.ndarray) -> np.ndarray:
    """Non-local-means denoising of the BGR picture (h = hColor = 4, windows 7 and 21)."""
    cv2 = _cv2()
    bgr = np.ascontiguousarray(raw[..., ::-1])
    out = cv2.fastNlMeansDenoisingColored(bgr, None, h=TEXTURE_H, hColor=TEXTURE_H,
                                          templateWindowSize=TEXTURE_TEMPLATE, searchWindowSize=TEXTURE_SEARCH)
    return np.ascontiguousarray(out[..., ::-1])


def modify(raw: np.ndarray, name: str) -> np.ndarray:
    """uint8 (H, W, 3) RGB ``raw`` with modification ``name`` (one of :data:`MODIFICATIONS`) applied."""
    raw = np.asarray(raw)
    if raw.dtype != np.uint8 or raw.ndim != 3 or raw.shape[2] != 3:
        raise EdgeprotoError(f"expected a uint8 (H, W, 3) RGB image, got {raw.dtype} {raw.shape}")
    if name == "hue":
        return shift_hue(raw)
    if name == "shape":
        return warp_shape(raw)
    if name == "texture":
        return smooth_texture(raw)
    if name == "contrast":
        return _enhance(raw, ImageEnhance.Contrast, CONTRAST)
    if name == "saturation":
        return _enhance(raw, ImageEnhance.Color, SATURATION)
    if name == "brightness":
        return _enhance(raw, ImageEnhance.Brightness, BRIGHTNESS)
    raise EdgeprotoError(f"unknown modification {name!r}; known: {', '.join(MODIFICATIONS)}")


def modified_batch(raw: np.ndarray, names=MODIFICATIONS) -> np.ndarray:
    """uint8 (len(names), H, W, 3): ``raw`` under each modification, in order."""
    return np.stack([modify(raw, n) for n in names])
