"""The persistent on-device explainer: open a bundle once, then explain frame after frame.

``Explainer.open(bundle, target=, precision=)`` checks the bundle's integrity once and keeps one
runner session; ``explain(frame)`` takes a PIL image, a uint8 numpy array (H, W, 3 RGB, H × W grey,
H, W, 4 RGBA) or a batch (a list, or an (N, H, W, 3) array) and returns typed results. numpy +
Pillow + a runtime only -- never torch.

An explanation is the predicted class and its top-k prototypes (:mod:`edgeproto.ranking`: the
predicted class's own prototypes by similarity, then the others), each with its raw similarity map,
the map's peak and ProtoPNet's ≥95th-percentile box in model-input pixels, and its contribution
(score × class weight) to the predicted logit. The logit is decomposed into the prototype terms and a
rest (bias or a non-linear head), so the numbers add up, and the runner-up class is explained the
same way (which prototypes made the difference).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from edgeproto.bundle import Bundle, open_bundle
from edgeproto.data.preprocess import load_image, normalize, to_raw
from edgeproto.errors import EdgeprotoError
from edgeproto.maps import high_activation_boxes, upsample_maps
from edgeproto.outputs import run_outputs, static_batch
from edgeproto.probabilities import softmax
from edgeproto.ranking import ranking


@dataclass(frozen=True)
class PrototypeEvidence:
    """One explaining prototype: "this part of the input looks like that prototype"."""

    rank: int
    prototype: int
    class_index: int
    class_name: str
    score: float
    weight: float  # its weight in the predicted class's logit
    contribution: float  # score × weight: its term in the predicted logit
    argmax: tuple[int, int]  # (x, y) of the upsampled map's peak, model-input pixels
    latent_argmax: tuple[int, int]  # (row, col) of the raw map's peak
    box: tuple[int, int, int, int]  # ≥95th-percentile box [x0, y0, x1, y1), model-input pixels
    map: np.ndarray  # raw (H, W) similarity map
    patch_png: str | None = None
    source_image: int | None = None
    source_png: str | None = None
    patch_box: tuple[int, int, int, int] | None = None
    merged: tuple[int, ...] = ()
    because: dict | None = None  # {"local": {modification: Δ}, "global": {modification: importance}}

    def to_dict(self) -> dict:
        """JSON-able (``class`` for ``class_index``, the map as nested lists)."""
        d = asdict(self)
        d["class"] = d.pop("class_index")
        d["map"] = np.asarray(self.map, dtype=np.float64).round(6).tolist()
        for key in ("argmax", "latent_argmax", "box", "patch_box", "merged"):
            d[key] = None if d[key] is None else list(d[key])
        if d["because"] is None:
            d.pop("because")
        return d


@dataclass(frozen=True)
class Explanation:
    """The explanation of one frame."""

    prediction: int
    class_name: str
    probability: float
    classes: tuple[str, ...]
    probabilities: np.ndarray  # (C,)
    logits: np.ndarray  # (C,)
    top: tuple[PrototypeEvidence, ...]
    input_size: int
    image_size: tuple[int, int]  # the frame's (width, height) before resizing
    logit_terms: dict  # {"prototypes": Σ score·weight, "rest": logit − that, "logit": the logit}
    runner_up: dict | None  # the second class: its logit, the gap and the prototypes that made it
    raw: np.ndarray = field(repr=False)  # uint8 (S, S, 3): exactly what the model saw
    input_note: str | None = None

    def to_dict(self) -> dict:
        """The JSON record ``edgeproto explain`` writes (``raw`` is left out)."""
        out = {
            "image_size": list(self.image_size),
            "input_size": self.input_size,
            "prediction": {"class": self.prediction, "class_name": self.class_name, "probability": self.probability},
            "classes": list(self.classes),
            "probabilities": [float(p) for p in self.probabilities],
            "logits": [float(v) for v in self.logits],
            "logit_terms": dict(self.logit_terms),
            "runner_up": self.runner_up,
            "k": len(self.top),
            "top_prototypes": [p.to_dict() for p in self.top],
        }
        if tuple(self.image_size) != (self.input_size, self.input_size):
            out["resized_from"] = list(self.image_size)
        if self.input_note:
            out["input_note"] = self.input_note
        return out


def map_range(bundle: Bundle) -> tuple[float, float]:
    """One colour scale for every heatmap of a model: the range of the bundle's golden maps (the
    PyTorch reference on test images), so rows, frames and images are comparable."""
    golden = bundle.manifest["golden"]["files"]
    maps = bundle.array(golden["maps"]) if "maps" in golden else np.zeros(1)
    lo, hi = float(np.min(maps)), float(np.max(maps))
    return lo, (hi if hi > lo else lo + 1.0)


def frame_to_raw(frame, size: int) -> tuple[np.ndarray, tuple[int, int], str | None]:
    """uint8 (size, size, 3) RGB model view of one frame, its original (width, height), a note."""
    if isinstance(frame, (str, Path)):
        frame = load_image(frame)
    if isinstance(frame, Image.Image):
        return to_raw(frame, size), frame.size, frame.info.get("edgeproto_scaled")
    arr = np.asarray(frame)
    if arr.dtype != np.uint8:
        raise EdgeprotoError(f"a frame must be uint8 pixels (got {arr.dtype}); scale it to 0..255 first")
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3))) or arr.size == 0:
        raise EdgeprotoError(f"a frame must be (H, W, 3) RGB, (H, W) grey or (H, W, 4) RGBA; got shape {arr.shape}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    h, w = arr.shape[:2]
    if arr.ndim == 3 and (h, w) == (size, size):
        return np.ascontiguousarray(arr), (w, h), None
    return to_raw(Image.fromarray(arr), size), (w, h), None


class Explainer:
    """A bundle opened once with one runner session; :meth:`explain` per frame or batch."""

    def __init__(self, bundle: Bundle, runner, target: str, *, k: int = 3) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise EdgeprotoError(f"k must be a positive integer, got {k!r}")
        self.bundle, self.runner, self.target, self.k = bundle, runner, target, int(k)
        pre = bundle.manifest["preprocess"]
        self.size = int(pre["image_size"])
        normalize(np.zeros((1, 1, 3), np.uint8), pre["mean"], pre["std"])  # checks the statistics once
        self._mean = np.asarray(pre["mean"], dtype=np.float32)
        self._std = np.asarray(pre["std"], dtype=np.float32)
        self._static_batch = static_batch(runner)
        self.last_layer = bundle.last_layer().astype(np.float64)
        self.proto_classes = bundle.prototype_classes()
        self.classes = tuple(bundle.classes)
        self._info = runner.info()
        self._because_global = None
        self._map_range = None
        self._own = {c: np.flatnonzero(self.proto_classes == c) for c in range(len(self.classes))}
        self._records = [self._record(j) for j in range(len(self.proto_classes))]

    @classmethod
    def open(cls, bundle: Bundle | str | Path, *, target: str = "onnxruntime", precision: str = "fp32",
             guard: str = "prototypes", device: str | None = None, threads: int = 0, k: int = 3) -> Explainer:
        """Open ``bundle`` (a path is integrity-checked once) and load its ``target``/``precision`` artifact."""
        from edgeproto.runtimes import load_runner

        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise EdgeprotoError(f"k must be a positive integer, got {k!r}")
        opened = bundle if isinstance(bundle, Bundle) else open_bundle(bundle)
        # no spin-waiting between runs: the explainer's own work runs between them on the same cores
        runner = load_runner(opened, target, precision, guard, device, threads, spinning=False)
        return cls(opened, runner, target, k=k)

    def _record(self, j: int) -> dict:
        """What an explanation shows of prototype ``j`` (read once from the manifest)."""
        protos = self.bundle.prototypes
        rec = protos[j] if j < len(protos) else {}
        cls = int(rec.get("class", -1))
        box = rec.get("patch_box")
        return {"class": cls,
                "class_name": rec.get("class_name", self.classes[cls] if 0 <= cls < len(self.classes) else str(cls)),
                "patch_png": rec.get("patch_png"), "source_image": rec.get("source_image"),
                "source_png": rec.get("source_png"), "patch_box": tuple(box) if box else None,
                "merged": tuple(rec.get("merged", ()))}

    # ------------------------------------------------------------------ running
    @property
    def map_range(self) -> tuple[float, float]:
        """The model's one heatmap colour scale (:func:`map_range`)."""
        if self._map_range is None:
            self._map_range = map_range(self.bundle)
        return self._map_range

    def global_because(self) -> dict[int, dict[str, float]]:
        """The bundle's global "because" importances per prototype (empty when exported without them)."""
        if self._because_global is None:
            from edgeproto.device.because import global_importance

            self._because_global = global_importance(self.bundle) or {}
        return self._because_global

    @property
    def info(self) -> dict:
        """The runtime really used: ``target`` plus the runner's :meth:`info`."""
        return {"target": self.target, **self._info}

    def to_input(self, raws: np.ndarray) -> np.ndarray:
        """float32 (N, 3, S, S) model input from uint8 (N, S, S, 3) model views: the arithmetic of
        :func:`edgeproto.data.preprocess.normalize` on the whole batch at once."""
        x = (np.asarray(raws).astype(np.float32) / np.float32(255.0) - self._mean) / self._std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)

    def infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Bare inference: the runner's outputs for a preprocessed batch, checked to be finite."""
        if self._static_batch is None:  # one call, no chunking (the common case, and the fast one)
            try:
                out = self.runner.run(x)
            except EdgeprotoError:
                raise
            except Exception as exc:  # each runtime raises its own exception types
                raise EdgeprotoError(f"{self.target} failed to run the model: {exc}") from None
            if any(n not in out for n in ("logits", "scores", "maps")):
                out = run_outputs(self.runner, x, self.target)  # the contract's error message
        else:
            out = run_outputs(self.runner, x, self.target)
        if not (np.isfinite(out["logits"]).all() and np.isfinite(out["scores"]).all()
                and np.isfinite(out["maps"]).all()):
            raise EdgeprotoError(
                f"{self.target} ({self._info['precision']}) produced non-finite outputs: this artifact cannot "
                "explain (a quantized prototype layer does this; keep it in fp32)")
        return out

    def explain(self, frames, *, because: bool = False):
        """An :class:`Explanation` for one frame, or a list of them for a batch (list or (N,H,W,3) array).

        ``because``: each top prototype also gets its local and global "because" importances
        (:mod:`edgeproto.device.because`; six extra forward passes per frame).
        """
        single = not (isinstance(frames, (list, tuple)) or (isinstance(frames, np.ndarray) and frames.ndim == 4))
        items = [frames] if single else list(frames)
        if not items:
            raise EdgeprotoError("nothing to explain: the batch is empty")
        views = [frame_to_raw(f, self.size) for f in items]
        raws = np.stack([v[0] for v in views])
        out = self.infer(self.to_input(raws))
        results = self.from_outputs(raws, out, sizes=[v[1] for v in views], notes=[v[2] for v in views])
        if because:
            from edgeproto.device.because import add_because

            results = [add_because(self, r) for r in results]
        return results[0] if single else results

    # ------------------------------------------------------------------ reading the outputs
    def from_outputs(self, raws: np.ndarray, out: dict[str, np.ndarray], *, sizes: Sequence | None = None,
                     notes: Sequence | None = None) -> list[Explanation]:
        """Explanations of a batch from its model views and the runner's outputs."""
        logits = np.asarray(out["logits"], dtype=np.float64)
        scores = np.asarray(out["scores"], dtype=np.float64)
        maps = out["maps"]
        order = ranking(logits, scores, self.proto_classes)
        results = []
        for i in range(len(raws)):
            pred = int(logits[i].argmax())
            probs = softmax(logits[i])
            terms = scores[i] * self.last_layer[pred]
            top = order[i, : self.k]
            size = tuple(sizes[i]) if sizes is not None else (self.size, self.size)
            results.append(Explanation(
                prediction=pred, class_name=self.classes[pred], probability=float(probs[pred]),
                classes=self.classes, probabilities=probs, logits=logits[i],
                top=self._evidence(top, pred, scores[i], maps[i], terms), input_size=self.size,
                image_size=(int(size[0]), int(size[1])), logit_terms=self._terms(logits[i, pred], terms),
                runner_up=self._runner_up(logits[i], scores[i], pred), raw=raws[i],
                input_note=notes[i] if notes is not None else None))
        return results

    @staticmethod
    def _terms(logit: float, terms: np.ndarray) -> dict:
        total = float(terms.sum())
        return {"logit": float(logit), "prototypes": total, "rest": float(logit) - total}

    def _runner_up(self, logits: np.ndarray, scores: np.ndarray, pred: int) -> dict | None:
        """Why the second class lost: the logit gap and the prototypes whose terms differ most."""
        if len(logits) < 2:
            return None
        rest = logits.copy()
        rest[pred] = -np.inf
        second = int(rest.argmax())
        diff = scores * (self.last_layer[pred] - self.last_layer[second])  # each prototype's share of the gap
        idx = np.argsort(-np.abs(diff), kind="stable")[: self.k]
        own = self._own[second]
        best_own = int(own[scores[own].argmax()]) if len(own) else None
        gap = float(logits[pred] - logits[second])
        total = float(diff.sum())
        return {
            "class": second, "class_name": self.classes[second], "logit": float(logits[second]), "gap": gap,
            "prototype_terms": total, "rest": gap - total,
            "deciding": [{"prototype": int(j), "class": int(self.proto_classes[j]), "score": float(scores[j]),
                          "term": float(diff[j])} for j in idx],
            "best_own_prototype": None if best_own is None else
            {"prototype": best_own, "score": float(scores[best_own])},
        }

    def _evidence(self, top: np.ndarray, pred: int, scores: np.ndarray, maps: np.ndarray,
                  terms: np.ndarray) -> tuple[PrototypeEvidence, ...]:
        chosen = np.asarray(maps[top], dtype=np.float32)  # (k, H, W)
        ups = upsample_maps(chosen, self.size)
        boxes = high_activation_boxes(ups, 95.0)
        peaks = ups.reshape(len(top), -1).argmax(axis=1)
        latent = chosen.reshape(len(top), -1).argmax(axis=1)
        h, w = chosen.shape[1:]
        out = []
        for r, j in enumerate(top.tolist()):
            rec = self._records[j]
            out.append(PrototypeEvidence(
                rank=r + 1, prototype=j, class_index=rec["class"], class_name=rec["class_name"],
                score=float(scores[j]), weight=float(self.last_layer[pred, j]), contribution=float(terms[j]),
                argmax=(int(peaks[r] % self.size), int(peaks[r] // self.size)),
                latent_argmax=(int(latent[r] // w), int(latent[r] % w)), box=tuple(boxes[r]), map=chosen[r],
                patch_png=rec["patch_png"], source_image=rec["source_image"], source_png=rec["source_png"],
                patch_box=rec["patch_box"], merged=rec["merged"]))
        return tuple(out)

    def close(self) -> None:
        """Release the runner."""
        self.runner.close()

    def __enter__(self) -> Explainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
