"""ProC-KD: the deployed student vs the deployed teacher, in one run.

For each runtime (same precision, same thread count for both): single-stream latency of the
teacher bundle and of the student bundle (``edgeproto.measure.single_stream.bench_runtime``), and
the ratio teacher / student (the speed-up). Then, on the student's test split, both deployed
models on the same images: explanation agreement (is the most activated prototype the same?
``edgeproto.train.agreement``), and the accuracy of each on its own classes where the labels are
comparable.

    python benchmarks/distill_speedup.py TEACHER_BUNDLE STUDENT_BUNDLE [--targets onnxruntime,openvino]
        [--precision fp32] [--threads 1] [--min-seconds 3] [--limit N] [--json]

The student bundle must come from ``edgeproto distill`` with that teacher (same prototype count).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from edgeproto.bundle import open_bundle
from edgeproto.data import build_dataset
from edgeproto.data.preprocess import to_input
from edgeproto.measure.single_stream import bench_runtime
from edgeproto.runtimes import load_runner
from edgeproto.train.agreement import top_prototype_agreement


def _latency(bundle, target: str, precision: str, threads: int, min_seconds: float) -> dict:
    report = bench_runtime(bundle, target=target, precision=precision, threads=threads, min_queries=200,
                           min_seconds=min_seconds)
    lat = report["batches"][0]["latency"]
    return {"p50_ms": lat["p50_ms"], "p90_ms": lat["p90_ms"], "mean_ms": lat["mean_ms"], "queries": lat["queries"],
            "precision": report["runtime"].get("precision"), "threads": report["runtime"].get("threads")}


def _outputs(bundle, target: str, precision: str, threads: int, ds, ids) -> dict[str, np.ndarray]:
    pre = bundle.manifest["preprocess"]
    runner = load_runner(bundle, target, precision, threads=threads)
    out: dict[str, list] = {"logits": [], "scores": []}
    try:
        for i in range(0, len(ids), 64):
            x = np.stack([to_input(ds.source_image(int(j)), pre["image_size"], pre["mean"], pre["std"])
                          for j in ids[i : i + 64]])
            o = runner.run(x)
            for k in out:
                out[k].append(o[k])
    finally:
        runner.close()
    return {k: np.concatenate(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher")
    parser.add_argument("student")
    parser.add_argument("--targets", default="onnxruntime,openvino")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--limit", type=int, default=0, help="test images for the agreement (0: all)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    teacher, student = open_bundle(args.teacher), open_bundle(args.student)
    if len(teacher.prototypes) != len(student.prototypes):
        raise SystemExit(f"the student has {len(student.prototypes)} prototypes, the teacher "
                         f"{len(teacher.prototypes)}: not a ProC-KD pair")
    rows = []
    ds = build_dataset(student.manifest["data"], "test")
    ids = list(range(len(ds) if args.limit <= 0 else min(args.limit, len(ds))))
    labels = np.array([int(ds.labels[i]) for i in ids])
    same_classes = list(teacher.classes) == list(student.classes)
    for target in [t.strip() for t in args.targets.split(",") if t.strip()]:
        t_lat = _latency(teacher, target, args.precision, args.threads, args.min_seconds)
        s_lat = _latency(student, target, args.precision, args.threads, args.min_seconds)
        t_out = _outputs(teacher, target, args.precision, args.threads, ds, ids)
        s_out = _outputs(student, target, args.precision, args.threads, ds, ids)
        agree = top_prototype_agreement(t_out["scores"], s_out["scores"])
        rows.append({
            "target": target, "precision": args.precision, "threads": args.threads,
            "teacher": t_lat, "student": s_lat,
            "speedup_p50": t_lat["p50_ms"] / s_lat["p50_ms"], "speedup_p90": t_lat["p90_ms"] / s_lat["p90_ms"],
            "images": len(ids), "explanation_agreement_top1": agree["top1"],
            f"top{agree['k']}_overlap": agree["topk_overlap"],
            "student_accuracy": float((s_out["logits"].argmax(1) == labels).mean()),
            "teacher_accuracy": float((t_out["logits"].argmax(1) == labels).mean()) if same_classes else None,
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"teacher {args.teacher} ({teacher.manifest['source']['recipe']}), student {args.student} "
          f"({student.manifest['source']['recipe']}); {len(ids)} test images of the student's data")
    for r in rows:
        print(f"{r['target']:12s} {r['precision']} threads={r['threads']}: "
              f"teacher p50 {r['teacher']['p50_ms']:.3f} ms "
              f"p90 {r['teacher']['p90_ms']:.3f} ms | student p50 {r['student']['p50_ms']:.3f} ms "
              f"p90 {r['student']['p90_ms']:.3f} ms | speed-up p50 ×{r['speedup_p50']:.2f} p90 ×{r['speedup_p90']:.2f}")
        acc_t = "n/a (other classes)" if r["teacher_accuracy"] is None else f"{r['teacher_accuracy']:.4f}"
        print(f"{'':12s} explanation agreement top-1 {r['explanation_agreement_top1']:.4f}, top-5 overlap "
              f"{r['top5_overlap']:.4f}; accuracy student {r['student_accuracy']:.4f}, teacher {acc_t}")


if __name__ == "__main__":
    main()
