"""Images embedded in the HTML reports, as ``data:`` URIs."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def _uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def array_uri(arr: np.ndarray) -> str:
    """An RGB uint8 array as an embedded PNG."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(buf, format="PNG", optimize=True)
    return _uri(buf.getvalue())


def figure_uri(fig) -> str:
    """A matplotlib figure as an embedded PNG (white background)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return _uri(buf.getvalue())
