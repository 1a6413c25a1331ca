"""Fast per-frame annotation for streams (video, camera): the top prototype's heatmap over the
frame, its ≥95th-percentile box, and a caption with the prediction and the prototype. OpenCV only
(matplotlib is far too slow per frame); the heatmap uses the explainer's fixed colour scale, so
frames are comparable. Never torch.
"""

from __future__ import annotations

import numpy as np

from edgeproto.data.modifications import VIDEO_EXTRA
from edgeproto.errors import EdgeprotoError

ALPHA = 0.45


def cv2_module():
    """OpenCV, or one clear error naming the extra that installs it."""
    try:
        import cv2
    except ImportError:
        raise EdgeprotoError(f"video and camera input need OpenCV: pip install '{VIDEO_EXTRA}'") from None
    return cv2


def annotate_frame(frame: np.ndarray, result, map_range: tuple[float, float]) -> np.ndarray:
    """uint8 BGR frame (H, W, 3) with the explanation of ``result`` drawn on it (for cv2.VideoWriter).

    ``frame`` is the RGB frame as decoded; the heatmap and box are scaled from model-input pixels
    to the frame's size.
    """
    cv2 = cv2_module()
    h, w = frame.shape[:2]
    bgr = np.ascontiguousarray(frame[..., ::-1])
    if result.top:
        p = result.top[0]
        lo, hi = map_range
        # display only: OpenCV's bicubic (a = −0.75, half-pixel centres, replicated border, the kernel of
        # edgeproto.maps.upsample_map) in float32 is far cheaper per frame; the box comes from the explanation
        up = cv2.resize(np.asarray(p.map, dtype=np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        norm = np.clip((up - lo) / (hi - lo), 0, 1)
        heat = cv2.applyColorMap(np.rint(norm * 255).astype(np.uint8), cv2.COLORMAP_JET)
        bgr = cv2.addWeighted(bgr, 1 - ALPHA, heat, ALPHA, 0)
        sx, sy = w / result.input_size, h / result.input_size
        x0, y0, x1, y1 = p.box
        cv2.rectangle(bgr, (int(x0 * sx), int(y0 * sy)), (max(int(x1 * sx) - 1, 0), max(int(y1 * sy) - 1, 0)),
                      (102, 255, 0), 2)
        caption2 = f"like proto {p.prototype} ({p.class_name}) s={p.score:.2f}"
    else:
        caption2 = ""
    caption = f"{result.class_name}  p={result.probability:.2f}"
    scale = max(0.35, min(w, h) / 640)
    line = int(round(26 * scale / 0.4))
    band = bgr[: 2 * line + 6]
    bgr[: 2 * line + 6] = (band * 0.35).astype(np.uint8)  # a dark band keeps the captions readable
    for i, text in enumerate((caption, caption2)):
        cv2.putText(bgr, text, (5, (i + 1) * line), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return bgr
