"""``edgeproto serve``: the explainer behind a small HTTP server (FastAPI on uvicorn, the ``serve`` extra).

- ``GET /``: a page that uploads an image and shows the prediction, each explaining prototype's
  heatmap over the input, its patch in its source training image and its nearest training patches;
- ``POST /explain``: JSON ``{"image": "<base64 PNG/JPEG/BMP>", "because": false}`` → the explanation
  record of ``edgeproto explain`` plus ``images`` (PNG data URLs of the heatmaps and source panels);
- ``GET /healthz``: the model and runtime.

Bounded: bodies over ``max_bytes`` are refused (413) from their ``Content-Length`` or while read;
a token bucket per client address limits the request rate (429 with ``Retry-After``); decoded
pictures are bounded by the same pixel limit as files. One :class:`Explainer` serves every request
(ONNX Runtime sessions run concurrently). Never torch.
"""


import base64
import binascii
import io
import threading
import time
from importlib import resources

import numpy as np
from PIL import Image, ImageDraw

from edgeproto.data.preprocess import MAX_IMAGE_PIXELS, check_pixels
from edgeproto.device.explain import explanation_record
from edgeproto.device.figure import gallery_panel, heatmap_overlay, source_panel
from edgeproto.errors import EdgeprotoError

MAX_BYTES = 8 << 20
RATE = 20.0  # requests per second per client, sustained
BURST = 40
PANEL = 192


class TokenBucket:
    """Per-key token buckets: ``rate`` tokens a second up to ``burst``; :meth:`take` says how long to wait."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = float(rate), int(burst)
        self._state: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 when a token was taken, else the seconds until one is free."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._state.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._state[key] = (tokens - 1, now)
                return 0.0
            self._state[key] = (tokens, now)
            if len(self._state) > 10_000:  # forget idle clients
                self._state = {k: v for k, v in self._state.items() if now - v[1] < 60}
            return (1 - tokens) / self.rate


def _data_url(arr: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)  # speed over size: it is sent once
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def decode_image(text: str) -> np.ndarray:
    """uint8 RGB pixels of a base64 (or data-URL) encoded picture; EdgeprotoError for anything else."""
    if not isinstance(text, str) or not text:
        raise EdgeprotoError("'image' must be a base64-encoded PNG, JPEG or BMP")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EdgeprotoError("'image' is not valid base64") from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            check_pixels(im, "the uploaded image", MAX_IMAGE_PIXELS)
            im.load()
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise EdgeprotoError(f"the uploaded file is not a readable image ({exc})") from None


def check_installed() -> None:
    """One clear error when FastAPI or uvicorn is missing."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise EdgeprotoError(f"edgeproto serve needs {', '.join(missing)}: pip install 'edgeproto[serve]'")


def create_app(explainer, *, max_bytes: int = MAX_BYTES, rate: float = RATE, burst: int = BURST):
    """The FastAPI application serving ``explainer`` (an open :class:`~edgeproto.device.explainer.Explainer`)."""
    check_installed()
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse

    bucket = TokenBucket(rate, burst)
    page = resources.files("edgeproto.device").joinpath("page.html").read_text(encoding="utf-8")
    bundle = explainer.bundle
    static: dict[int, dict] = {}
    static_lock = threading.Lock()
    app = FastAPI(title="edgeproto", docs_url=None, redoc_url=None, openapi_url=None)

    def prototype_images(j: int) -> dict:
        with static_lock:
            if j not in static:
                rec = bundle.prototypes[j] if j < len(bundle.prototypes) else {}
                src, caption = source_panel(bundle, rec, PANEL)
                gal = gallery_panel(bundle, j, PANEL)
                static[j] = {"source": None if src is None else _data_url(src), "source_caption": caption,
                             "gallery": None if gal is None else _data_url(gal)}
            return static[j]

    @app.middleware("http")
    async def bounds(request: Request, call_next):
        if request.method == "POST":
            wait = bucket.take(request.client.host if request.client else "?")
            if wait > 0:
                return JSONResponse({"error": "too many requests"}, status_code=429,
                                    headers={"Retry-After": str(max(1, int(np.ceil(wait))))})
            length = request.headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > max_bytes):
                return JSONResponse({"error": f"request body larger than {max_bytes} bytes"}, status_code=413)
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True, "classes": list(explainer.classes), "input_size": explainer.size,
                "runtime": explainer.info}

    @app.post("/explain")
    async def explain(request: Request):
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > max_bytes:
                return JSONResponse({"error": f"request body larger than {max_bytes} bytes"}, status_code=413)
        try:
            import json

            payload = json.loads(body)
            if not isinstance(payload, dict) or "image" not in payload:
                raise EdgeprotoError("send JSON {\"image\": \"<base64 image>\"}")
            frame = decode_image(payload["image"])
            because = bool(payload.get("because", False))
        except (ValueError, EdgeprotoError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        from starlette.concurrency import run_in_threadpool

        try:
            return await run_in_threadpool(_answer, frame, because)
        except EdgeprotoError as exc:
            return JSONResponse({"error": str(exc)}, status_code=422)

    def _boxed(result, p, side: int) -> np.ndarray:
        """The heatmap over the input with the 95th-percentile box (as in the figure)."""
        over = Image.fromarray(heatmap_overlay(result.raw, p.map, side, vrange=explainer.map_range))
        f = side / result.input_size
        x0, y0, x1, y1 = p.box
        ImageDraw.Draw(over).rectangle([x0 * f + 1, y0 * f + 1, x1 * f - 2, y1 * f - 2], outline=(0, 255, 102), width=2)
        return np.asarray(over)

    def _answer(frame: np.ndarray, because: bool) -> dict:
        result = explainer.explain(frame, because=because)
        record = explanation_record(explainer, result, None)
        side = PANEL
        record["images"] = [{"prototype": p.prototype, "heatmap": _data_url(_boxed(result, p, side)),
                             **prototype_images(p.prototype)} for p in result.top]
        record["map_range"] = list(explainer.map_range)
        return record

    return app


def serve(explainer, *, host: str = "127.0.0.1", port: int = 8000, max_bytes: int = MAX_BYTES,
          rate: float = RATE, burst: int = BURST) -> None:
    """Run the server until interrupted (uvicorn, one process)."""
    check_installed()
    import uvicorn

    uvicorn.run(create_app(explainer, max_bytes=max_bytes, rate=rate, burst=burst), host=host, port=port,
                log_level="warning", limit_concurrency=64, timeout_keep_alive=5)
