"""The device product's numbers (issue 16), in one run on this machine:

1. **overhead**: per-frame cost of an explanation over bare inference in the persistent API
   (``Explainer``), for the default model (a bundle you pass) and a CUB-scale model (ResNet-18-sized
   ``small_resnet``, 224 px, 2000 L2 prototypes, 200 classes, untrained weights — the
   ``benchmarks/bench_targets.py`` configuration). Blocks of 25 frames alternate (bare, bare +
   preprocessing, explain, …) so a noisy shared CPU hits all three alike; per-frame medians.
2. **cold**: a cold ``edgeproto explain BUNDLE IMAGE`` (a fresh process: imports, bundle check,
   session, figure) vs a bare ONNX Runtime script doing the same inference; wall time and peak RSS,
   median of N; then where the difference goes (``python -X importtime``, cumulative per top-level package).
3. **video**: frames/s of ``edgeproto explain`` on a generated video (OpenCV, procedural test
   images), overlapped (decode ‖ infer ‖ draw) vs ``--serial``.
4. **serve**: ``edgeproto serve`` on 127.0.0.1 (a subprocess), a bounded number of ``POST /explain``
   requests from a few client threads: requests/s, p50, p99 and failures.

    PYTHONPATH=. python benchmarks/device_product.py runs/p/bundle [--only overhead,cold,video,serve]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
CUB_CONFIG = {
    "num_classes": 200, "in_channels": 3,
    "backbone": {"name": "small_resnet", "widths": [64, 128, 256, 512], "blocks": 2, "stem_stride": 4},
    "prototypes": {"family": "l2_log", "per_class": 10, "dim": 128},
}
CUB_SIZE = 224


def cub_bundle(out: Path) -> Path:
    """A CUB-scale bundle (untrained weights): export_onnx + a manifest, golden outputs from ORT."""
    import torch

    from edgeproto.bundle import FORMAT, FORMAT_VERSION, MANIFEST, file_hashes
    from edgeproto.export.onnx_graph import export_onnx
    from edgeproto.models import create_model
    from edgeproto.runtimes.onnxruntime.runner import OnnxRuntimeRunner

    torch.manual_seed(0)
    model = create_model(CUB_CONFIG).eval()
    out.mkdir(parents=True)
    export_onnx(model, torch.randn(1, 3, CUB_SIZE, CUB_SIZE), out / "model.onnx")
    x = np.random.default_rng(0).standard_normal((2, 3, CUB_SIZE, CUB_SIZE)).astype(np.float32)
    golden = OnnxRuntimeRunner(out / "model.onnx").run(x)
    (out / "explain").mkdir()
    (out / "golden").mkdir()
    np.save(out / "explain" / "last_layer.npy", model.class_weights().detach().numpy().astype(np.float32))
    np.save(out / "golden" / "image.npy", x)
    for n in ("logits", "scores", "maps"):
        np.save(out / "golden" / f"{n}.npy", golden[n])
    per = CUB_CONFIG["prototypes"]["per_class"]
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": {"file": "model.onnx"},
                "preprocess": {"image_size": CUB_SIZE, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
                "classes": [f"class{c:03d}" for c in range(200)],
                "prototypes": [{"index": j, "class": j // per} for j in range(200 * per)],
                "explain": {"last_layer": "explain/last_layer.npy"},
                "golden": {"files": {n: f"golden/{n}.npy" for n in ("image", "logits", "scores", "maps")}}}
    manifest["files"] = file_hashes(out)
    (out / MANIFEST).write_text(json.dumps(manifest))
    return out


def frames_for(bundle: Path, n: int) -> list[np.ndarray]:
    from edgeproto.bundle import open_bundle

    b = open_bundle(bundle)
    size = b.manifest["preprocess"]["image_size"]
    if b.manifest.get("data"):
        from edgeproto.data import build_dataset

        ds = build_dataset(b.manifest["data"], "test")
        return [ds.raw_image(i % len(ds)) for i in range(n)]
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def overhead(bundle: Path, label: str, n: int, threads: int, block: int = 25) -> dict:
    """Per-frame medians of bare inference, inference + preprocessing, and a full explanation, in
    alternating blocks of ``block`` frames (each loop in steady state; load drift hits all three)."""
    from edgeproto.device.explainer import Explainer

    frames = frames_for(bundle, n)
    with Explainer.open(bundle, threads=threads) as ex:
        xs = [ex.to_input(f[None]) for f in frames]
        for i in range(min(10, n)):  # warm-up
            ex.runner.run(xs[i])
            ex.explain(frames[i])
        loops = {"bare_ms": lambda f, x: ex.runner.run(x),
                 "bare_pre_ms": lambda f, x: ex.runner.run(ex.to_input(f[None])),
                 "explain_ms": lambda f, x: ex.explain(f)}
        times: dict[str, list[float]] = {k: [] for k in loops}
        for start in range(0, n, block):
            chunk = list(zip(frames[start:start + block], xs[start:start + block]))
            for key, fn in loops.items():
                for f, x in chunk:
                    t0 = time.perf_counter()
                    fn(f, x)
                    times[key].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        info = ex.info
    return {"model": label, "frames": n, **{k: round(v, 4) for k, v in med.items()},
            "overhead_vs_bare_pre": round(med["explain_ms"] / med["bare_pre_ms"] - 1, 4),
            "overhead_vs_bare": round(med["explain_ms"] / med["bare_ms"] - 1, 4),
            "runtime": f"{info['name']} {info['version']} {info['precision']} threads={info['threads']}"}


BARE_SCRIPT = """
import sys, numpy as np, onnxruntime as ort
from PIL import Image
s = ort.InferenceSession(sys.argv[1] + "/model.onnx", providers=["CPUExecutionProvider"])
size = s.get_inputs()[0].shape[2] if isinstance(s.get_inputs()[0].shape[2], int) else int(sys.argv[3])
img = np.asarray(Image.open(sys.argv[2]).convert("RGB").resize((size, size), Image.BILINEAR), np.float32) / 255
mean, std = np.array(%s, np.float32), np.array(%s, np.float32)
x = ((img - mean) / std).transpose(2, 0, 1)[None]
logits = s.run(["logits"], {s.get_inputs()[0].name: x})[0]
print(int(logits.argmax()))
"""


# A small launcher measures each cold run: a child forked from this (large) process would start with
# this process's resident pages and report them as its own peak RSS.
LAUNCHER = """
import json, os, subprocess, sys, time
argv = json.loads(sys.argv[1])
t0 = time.perf_counter()
proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(json.dumps([time.perf_counter() - t0, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)]))
"""


def _run_child(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one cold child process."""
    done = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, json.dumps(argv)], capture_output=True, text=True,
                          env=ENV, cwd=ROOT, check=True)
    wall, rss, code = json.loads(done.stdout)
    if code != 0:
        raise SystemExit(f"{argv} failed with {code}")
    return wall, rss


def cold(bundle: Path, repeat: int) -> dict:
    from PIL import Image

    from edgeproto.bundle import open_bundle

    b = open_bundle(bundle)
    pre = b.manifest["preprocess"]
    work = Path(tempfile.mkdtemp(prefix="edgeproto-cold-"))
    img = work / "x.png"
    Image.fromarray(frames_for(bundle, 1)[0]).save(img)
    bare = [sys.executable, "-c", BARE_SCRIPT % (pre["mean"], pre["std"]), str(bundle), str(img),
            str(pre["image_size"])]
    cli = [sys.executable, "-m", "edgeproto.cli", "explain", str(bundle), str(img), "-o", str(work / "e"), "--json"]
    rows = {"bare onnxruntime script": bare, "edgeproto explain (figure + JSON)": cli,
            "edgeproto explain --no-figure (JSON)": [*cli, "--no-figure"]}
    out = {}
    for name, argv in rows.items():
        runs = [_run_child(argv) for _ in range(repeat)]
        out[name] = {"wall_s": round(statistics.median(r[0] for r in runs), 3),
                     "peak_rss_mib": round(statistics.median(r[1] for r in runs), 1)}
    base = out["bare onnxruntime script"]
    for name in list(rows)[1:]:
        out[name]["ratio_wall"] = round(out[name]["wall_s"] / base["wall_s"], 2)
        out[name]["ratio_rss"] = round(out[name]["peak_rss_mib"] / base["peak_rss_mib"], 2)
    out["importtime_cli"] = importtime([sys.executable, "-X", "importtime", *cli[1:]])
    out["importtime_cli_no_figure"] = importtime([sys.executable, "-X", "importtime", *cli[1:], "--no-figure"])
    out["importtime_bare"] = importtime([sys.executable, "-X", "importtime", *bare[1:]])
    return out


def importtime(argv: list[str], top: int = 12) -> dict:
    """Cumulative import seconds per top-level package (python -X importtime), largest first."""
    proc = subprocess.run(argv, capture_output=True, text=True, env=ENV, cwd=ROOT)
    totals: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if not m or len(m.group(3)) != 1:  # top-level imports only (indent of one space)
            continue
        pkg = m.group(4).split(".")[0]
        totals[pkg] = totals.get(pkg, 0.0) + int(m.group(2)) / 1e6
    ordered = sorted(totals.items(), key=lambda kv: -kv[1])
    return {"total_s": round(sum(totals.values()), 3), **{k: round(v, 3) for k, v in ordered[:top]}}


def video(bundle: Path, frames: int, repeat: int) -> dict:
    import cv2

    work = Path(tempfile.mkdtemp(prefix="edgeproto-video-"))
    path = work / "clip.mp4"
    src = frames_for(bundle, 16)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (256, 256))
    for i in range(frames):
        w.write(cv2.resize(np.ascontiguousarray(src[(i // 5) % len(src)][..., ::-1]), (256, 256),
                           interpolation=cv2.INTER_NEAREST))
    w.release()
    out = {"frames": frames, "size": "256x256"}
    for mode, flag in (("overlapped", []), ("serial", ["--serial"])):
        fps = []
        for r in range(repeat):
            proc = subprocess.run([sys.executable, "-m", "edgeproto.cli", "explain", str(bundle), str(path),
                                   "-o", str(work / f"{mode}{r}"), "--json", *flag],
                                  capture_output=True, text=True, env=ENV, cwd=ROOT, check=True)
            summary = json.loads(proc.stdout)
            fps.append(summary["fps"])
            stages = summary["stage_seconds"]
        out[mode] = {"fps_median": round(statistics.median(fps), 2), "fps_runs": fps, "stage_seconds_last": stages}
    out["speedup"] = round(out["overlapped"]["fps_median"] / out["serial"]["fps_median"], 2)
    return out


def serve(bundle: Path, requests: int, clients: int) -> dict:
    import socket
    import urllib.request

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "edgeproto.cli", "serve", str(bundle), "--port", str(port),
                             "--rate", "0"], env=ENV, cwd=ROOT, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1)
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise SystemExit("edgeproto serve did not start")
                time.sleep(0.2)
        from io import BytesIO

        from PIL import Image

        images = []
        for f in frames_for(bundle, 8):
            buf = BytesIO()
            Image.fromarray(f).save(buf, format="PNG")
            images.append(base64.b64encode(buf.getvalue()).decode())
        with httpx.Client(timeout=30) as c:  # warm-up
            for im in images[:4]:
                c.post(url + "/explain", json={"image": im}).raise_for_status()
        latencies: list[float] = []
        failures: list[str] = []
        lock = threading.Lock()
        counter = iter(range(requests))

        def client() -> None:
            with httpx.Client(timeout=30) as c:
                for i in counter:
                    t0 = time.perf_counter()
                    try:
                        r = c.post(url + "/explain", json={"image": images[i % len(images)]})
                        ok = r.status_code == 200 and "prediction" in r.json()
                        why = f"HTTP {r.status_code}"
                    except Exception as exc:  # noqa: BLE001 -- counted as a failure
                        ok, why = False, repr(exc)
                    dt = time.perf_counter() - t0
                    with lock:
                        latencies.append(dt)
                        if not ok:
                            failures.append(why)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    lat = np.asarray(latencies) * 1e3
    return {"requests": len(latencies), "clients": clients, "failures": len(failures), "wall_s": round(wall, 3),
            "requests_per_s": round(len(latencies) / wall, 2), "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2), "max_ms": round(float(lat.max()), 2),
            "first_failures": failures[:3]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path, help="the default model's bundle (e.g. runs/p/bundle)")
    ap.add_argument("--only", default="overhead,cold,video,serve")
    ap.add_argument("--frames", type=int, default=300, help="overhead: frames per model (CUB-scale: a fifth)")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: its default)")
    ap.add_argument("--repeat", type=int, default=5, help="cold / video: runs per variant")
    ap.add_argument("--video-frames", type=int, default=300)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    only = set(args.only.split(","))
    result: dict = {"cpus": os.cpu_count(), "load_before": os.getloadavg()}
    if "overhead" in only:
        rows = [overhead(args.bundle, "default (protopnet_procedural)", args.frames, args.threads)]
        with tempfile.TemporaryDirectory() as tmp:
            print("building the CUB-scale bundle ...", file=sys.stderr, flush=True)
            cub = cub_bundle(Path(tmp) / "cub")
            rows.append(overhead(cub, "CUB-scale (224 px, 2000 prototypes)", max(20, args.frames // 5), args.threads))
        result["overhead"] = rows
    if "cold" in only:
        result["cold"] = cold(args.bundle, args.repeat)
    if "video" in only:
        result["video"] = video(args.bundle, args.video_frames, max(1, args.repeat // 2))
    if "serve" in only:
        result["serve"] = serve(args.bundle, args.requests, args.clients)
    result["load_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
