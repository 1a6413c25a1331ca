"""The explain loop over a stream of frames, with decoding, inference and drawing overlapped.

Three stages joined by small bounded queues (:data:`QUEUE_SIZE` frames): a decoder thread reads the
source, the calling thread runs the model (ONNX Runtime / OpenVINO release the GIL while they run)
and a writer thread draws and writes each result. ``overlap=False`` runs the same stages one after
the other on one thread (the baseline the overlap is measured against). The first error in any
stage stops the others and is raised in the caller.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

from edgeproto.device.sources import Source

QUEUE_SIZE = 4
_DONE = object()


@dataclass
class StreamStats:
    """What a run did: frames, wall seconds, frames per second, and seconds spent in each stage."""

    frames: int = 0
    seconds: float = 0.0
    overlapped: bool = True
    stage_seconds: dict = field(default_factory=lambda: {"decode": 0.0, "explain": 0.0, "draw": 0.0})

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {"frames": self.frames, "seconds": round(self.seconds, 4), "fps": round(self.fps, 3),
                "overlapped": self.overlapped, "stage_seconds": {k: round(v, 4) for k, v in self.stage_seconds.items()}}


def explain_stream(explainer, source: Source, write, *, overlap: bool = True, because: bool = False,
                   advance=None) -> StreamStats:
    """Explain every frame of ``source``; ``write(name, frame, result)`` draws/writes each result in order.

    ``advance()`` is called once per written frame (a progress bar).
    """
    advance = advance or (lambda n=1: None)
    stats = StreamStats(overlapped=overlap)
    start = time.perf_counter()
    if not overlap:
        frames = source.frames()
        while True:
            t0 = time.perf_counter()
            item = next(frames, None)
            t1 = time.perf_counter()
            stats.stage_seconds["decode"] += t1 - t0
            if item is None:
                break
            result = explainer.explain(item[1], because=because)
            t2 = time.perf_counter()
            write(item[0], item[1], result)
            stats.stage_seconds["explain"] += t2 - t1
            stats.stage_seconds["draw"] += time.perf_counter() - t2
            stats.frames += 1
            advance()
        stats.seconds = time.perf_counter() - start
        return stats

    inbox: queue.Queue = queue.Queue(QUEUE_SIZE)
    outbox: queue.Queue = queue.Queue(QUEUE_SIZE)
    stop = threading.Event()
    errors: list[BaseException] = []

    def put(q: queue.Queue, item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(q: queue.Queue):
        while not stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return _DONE

    def decode() -> None:
        try:
            frames = source.frames()
            while True:
                t0 = time.perf_counter()
                item = next(frames, None)
                stats.stage_seconds["decode"] += time.perf_counter() - t0
                if item is None or not put(inbox, item):
                    break
        except BaseException as exc:  # noqa: BLE001 -- handed to the caller
            errors.append(exc)
            stop.set()
        finally:
            put(inbox, _DONE)

    def draw() -> None:
        try:
            while True:
                item = get(outbox)
                if item is _DONE:
                    break
                t0 = time.perf_counter()
                write(*item)
                stats.stage_seconds["draw"] += time.perf_counter() - t0
                stats.frames += 1
                advance()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=decode, name="edgeproto-decode", daemon=True),
               threading.Thread(target=draw, name="edgeproto-draw", daemon=True)]
    for t in threads:
        t.start()
    try:
        while True:
            item = get(inbox)
            if item is _DONE:
                break
            t0 = time.perf_counter()
            result = explainer.explain(item[1], because=because)
            stats.stage_seconds["explain"] += time.perf_counter() - t0
            if not put(outbox, (item[0], item[1], result)):
                break
    except BaseException:
        stop.set()
        raise
    finally:
        put(outbox, _DONE)
        if errors or not threads[1].is_alive():
            stop.set()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    stats.seconds = time.perf_counter() - start
    return stats
