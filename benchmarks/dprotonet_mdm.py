"""DProtoNet's MDM heatmaps vs ProtoPNet's prototype heatmaps on the same test split, in one run.

    PYTHONPATH=. python benchmarks/dprotonet_mdm.py --dprotonet DPROTO_BUNDLE --protopnet PROTOPNET_BUNDLE \
        [--limit N] [--masks 64] [--scales 2,4,8] [--steps 32] [--parity 16]

For each bundle on ONNX Runtime fp32 (the deployed model): test accuracy, and for each heatmap kind
-- ``mdm`` (:mod:`edgeproto.device.mdm`, the logits' consistency under masks) and ``prototype``
(the bundle's ``maps`` of the top-1 prototype by the explanation contract, upsampled bicubically) --
deletion AUC (lower is better), insertion AUC (higher is better), both on the predicted class's
probability with the dataset's mean colour as baseline (:mod:`edgeproto.compare.heatmap_quality`),
and the pointing game on the procedural part masks. ``--parity N``: the MDM heatmaps of the first N
test images of the DProtoNet bundle on the PyTorch reference, ONNX Runtime and OpenVINO (fp32):
max |difference| and peak agreement against PyTorch.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from edgeproto.bundle import open_bundle
from edgeproto.compare.heatmap_quality import deletion_insertion, pointing_hit
from edgeproto.probabilities import softmax
from edgeproto.data import build_dataset
from edgeproto.device.explainer import Explainer
from edgeproto.device.mdm import mdm_maps
from edgeproto.maps import upsample_map
from edgeproto.ranking import ranking


def evaluate(path: str, limit: int | None, settings: dict, steps: int) -> dict:
    bundle = open_bundle(path)
    data = build_dataset(bundle.manifest["data"], "test")
    n = len(data) if limit is None else min(limit, len(data))
    rows = {kind: {"deletion": [], "insertion": [], "pointing": []} for kind in ("mdm", "prototype")}
    correct, t0 = 0, time.perf_counter()
    seconds = {"mdm": 0.0, "prototype": 0.0}
    with Explainer.open(bundle, target="onnxruntime") as ex:
        logits_fn = lambda b: ex.infer(b)["logits"]  # noqa: E731
        prob_fn = lambda b: softmax(logits_fn(b))  # noqa: E731
        for i in range(n):
            raw = data.raw_image(i)
            x = ex.to_input(raw[None])[0]
            t = time.perf_counter()
            out = ex.infer(x[None])
            top1 = int(ranking(out["logits"], out["scores"], ex.proto_classes)[0, 0])
            maps = {"prototype": upsample_map(np.asarray(out["maps"][0, top1], np.float64), ex.size)}
            seconds["prototype"] += time.perf_counter() - t
            t = time.perf_counter()
            maps["mdm"] = mdm_maps(logits_fn, x, **settings)["heatmap"]
            seconds["mdm"] += time.perf_counter() - t
            pred = int(out["logits"][0].argmax())
            correct += pred == int(data.labels[i])
            masks = data.part_masks(i)
            for kind, heat in maps.items():
                scores = deletion_insertion(prob_fn, x, heat, pred, steps=steps)
                rows[kind]["deletion"].append(scores["deletion"])
                rows[kind]["insertion"].append(scores["insertion"])
                hit = pointing_hit(heat, masks) if masks is not None else None
                if hit is not None:
                    rows[kind]["pointing"].append(hit)
    return {"name": bundle.manifest["source"]["recipe"], "images": n, "accuracy": correct / n,
            "seconds": time.perf_counter() - t0,
            "kinds": {k: {m: float(np.mean(v)) if v else float("nan") for m, v in r.items()}
                      | {"heatmap_ms": 1000 * seconds[k] / n} for k, r in rows.items()}}


def parity(path: str, count: int, settings: dict) -> list[dict]:
    """MDM heatmaps on the PyTorch reference vs ONNX Runtime and OpenVINO (fp32)."""
    bundle = open_bundle(path)
    data = build_dataset(bundle.manifest["data"], "test")
    heat = {}
    for target in ("torch", "onnxruntime", "openvino"):
        with Explainer.open(bundle, target=target) as ex:
            heat[target] = [mdm_maps(lambda b: ex.infer(b)["logits"], ex.to_input(data.raw_image(i)[None])[0],
                                     **settings)["heatmap"] for i in range(count)]
    out = []
    for target in ("onnxruntime", "openvino"):
        diffs = [float(np.abs(a - b).max()) for a, b in zip(heat[target], heat["torch"])]
        peaks = [int(a.argmax()) == int(b.argmax()) for a, b in zip(heat[target], heat["torch"])]
        out.append({"target": target, "images": count, "max_abs_diff": max(diffs), "peak_agreement": float(np.mean(peaks))})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dprotonet", required=True)
    ap.add_argument("--protopnet", required=True)
    ap.add_argument("--limit", type=int, default=None, help="first N test images (default: all)")
    ap.add_argument("--masks", type=int, default=64, help="MDM masks per scale")
    ap.add_argument("--scales", default="2,4,8")
    ap.add_argument("--steps", type=int, default=32, help="deletion/insertion steps")
    ap.add_argument("--parity", type=int, default=0, help="MDM parity torch vs ORT/OpenVINO on N images")
    args = ap.parse_args()
    settings = {"masks": args.masks, "scales": tuple(int(s) for s in args.scales.split(","))}
    results = [evaluate(p, args.limit, settings, args.steps) for p in (args.dprotonet, args.protopnet)]
    print(f"MDM: {args.masks} masks per scale, scales {args.scales}; deletion/insertion: {args.steps} steps, "
          "predicted class probability, baseline = dataset mean colour; ONNX Runtime fp32")
    print(f"{'model':24s} {'accuracy':>8s} {'heatmap':>10s} {'deletion↓':>10s} {'insertion↑':>10s} "
          f"{'pointing↑':>10s} {'ms/heatmap':>10s} {'images':>6s}")
    for r in results:
        for kind in ("mdm", "prototype"):
            k = r["kinds"][kind]
            print(f"{r['name']:24s} {r['accuracy']:8.4f} {kind:>10s} {k['deletion']:10.4f} {k['insertion']:10.4f} "
                  f"{k['pointing']:10.4f} {k['heatmap_ms']:10.1f} {r['images']:6d}")
    if args.parity:
        for p in parity(args.dprotonet, args.parity, settings):
            print(f"MDM parity vs PyTorch, {p['target']}: {p['images']} images, max |Δheatmap| {p['max_abs_diff']:.3g}, "
                  f"peak agreement {p['peak_agreement']:.3f}")


if __name__ == "__main__":
    main()
