"""The device product: the persistent Explainer, image/folder/video inputs with overlapped stages,
"this looks like that, because" (Nauta et al.), and the export extras it reads (gallery, sources)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from edgeproto.bundle import FORMAT, FORMAT_VERSION, MANIFEST, file_hashes, open_bundle
from edgeproto.commands.explain import run_explain
from edgeproto.data.modifications import MODIFICATIONS, modify, shift_hue, warp_shape
from edgeproto.device.explain import explain_image
from edgeproto.device.explainer import Explainer
from edgeproto.errors import EdgeprotoError
from edgeproto.export.bundle_writer import export_bundle

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless (the video extra) is not installed")


@pytest.fixture(scope="module")
def bundle_dir(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("product") / "b"
    export_bundle(trained("l2_log"), out, golden=8, analysis_images=24)
    return out


@pytest.fixture(scope="module")
def test_images(bundle_dir):
    from edgeproto.data import build_dataset

    ds = build_dataset(open_bundle(bundle_dir).manifest["data"], "test")
    return [ds.raw_image(i) for i in range(8)]


def test_export_extras_gallery_sources_because(bundle_dir):
    b = open_bundle(bundle_dir)
    ex = b.manifest["explain"]
    table = b.array(ex["because"]["file"])
    assert table.shape == (len(b.prototypes), len(MODIFICATIONS)) and np.isfinite(table).all()
    assert ex["because"]["modifications"] == list(MODIFICATIONS) and ex["because"]["images"] == 24
    gallery = ex["gallery"]["prototypes"]
    assert len(gallery) == len(b.prototypes) and all(len(g) == 5 for g in gallery)
    for g in gallery:
        assert [e["score"] for e in g] == sorted((e["score"] for e in g), reverse=True)
        assert all(b.path(e["png"]).is_file() for e in g)
    with_source = [p for p in b.prototypes if p.get("source_image") is not None]
    assert with_source and all(b.path(p["source_png"]).is_file() for p in with_source)
    src = np.asarray(Image.open(b.path(with_source[0]["source_png"])))
    assert src.shape == (b.manifest["preprocess"]["image_size"],) * 2 + (3,)


def test_explainer_batch_single_and_record_agree(bundle_dir, test_images, tmp_path):
    golden = open_bundle(bundle_dir).golden()
    with Explainer.open(bundle_dir, k=3) as ex:
        batch = ex.explain(np.stack(test_images[:4]))
        single = [ex.explain(Image.fromarray(im)) for im in test_images[:4]]
        for a, b in zip(batch, single):
            assert a.prediction == b.prediction and [p.prototype for p in a.top] == [p.prototype for p in b.top]
            np.testing.assert_allclose(a.logits, b.logits, atol=1e-5, rtol=1e-5)
        r = batch[0]
        np.testing.assert_allclose(r.logits, golden["logits"][0], atol=1e-4, rtol=1e-3)
        terms = r.logit_terms  # the numbers add up: logit = Σ score·weight + rest
        assert abs(terms["prototypes"] + terms["rest"] - terms["logit"]) <= 1e-6 + 1e-6 * abs(terms["logit"])
        assert abs(terms["rest"]) <= 1e-4 + 1e-4 * abs(terms["logit"])  # linear head without bias
        ru = r.runner_up
        assert ru["class"] != r.prediction
        assert abs(ru["gap"] - (r.logits[r.prediction] - r.logits[ru["class"]])) < 1e-9
        assert abs(ru["prototype_terms"] + ru["rest"] - ru["gap"]) < 1e-6
        png = tmp_path / "x.png"
        Image.fromarray(test_images[0]).save(png)
        record = explain_image(bundle_dir, png)
        assert [p["prototype"] for p in record["top_prototypes"]] == [p.prototype for p in r.top]
        assert record["logit_terms"]["logit"] == pytest.approx(terms["logit"], rel=1e-6, abs=1e-6)
        with pytest.raises(EdgeprotoError, match="uint8"):
            ex.explain(np.zeros((8, 8, 3), dtype=np.float32))
        with pytest.raises(EdgeprotoError, match="shape"):
            ex.explain(np.zeros((8, 8, 5), dtype=np.uint8))
        with pytest.raises(EdgeprotoError, match="empty"):
            ex.explain([])


def _video(path, frames, size=96, fps=8):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    for f in frames:
        w.write(cv2.resize(np.ascontiguousarray(f[..., ::-1]), (size, size), interpolation=cv2.INTER_NEAREST))
    w.release()


def test_video_overlapped_equals_serial_and_folder(bundle_dir, test_images, tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    _video(video, [test_images[i // 3] for i in range(18)])
    for name, serial in (("over", False), ("serial", True)):
        assert run_explain(bundle_dir, str(video), out_prefix=tmp_path / name, as_json=True, overlap=not serial) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["frames"] == 18 and summary["fps"] > 0 and summary["overlapped"] is (not serial)
    over = [json.loads(x) for x in (tmp_path / "over.jsonl").read_text().splitlines()]
    ser = [json.loads(x) for x in (tmp_path / "serial.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in over] == list(range(18))
    assert [(r["prediction"]["class"], [p["prototype"] for p in r["top_prototypes"]]) for r in over] == \
        [(r["prediction"]["class"], [p["prototype"] for p in r["top_prototypes"]]) for r in ser]
    cap = cv2.VideoCapture(str(tmp_path / "over.mp4"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    assert frames == 18
    # the decoded frames explained one by one give the JSON Lines' answers
    cap = cv2.VideoCapture(str(video))
    decoded = [cap.read()[1][..., ::-1] for _ in range(18)]
    with Explainer.open(bundle_dir) as ex:
        direct = ex.explain(np.stack(decoded))
    assert [d.prediction for d in direct] == [r["prediction"]["class"] for r in over]

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(test_images[i]).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    assert run_explain(bundle_dir, str(folder), out_prefix=tmp_path / "figs", as_json=True) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 3
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "0.explained.png", "1.explained.png", "2.explained.png", "explanations.jsonl"]


def test_stream_errors_leave_no_output(bundle_dir, tmp_path, monkeypatch):
    from edgeproto.device import writers

    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgeprotoError, match="holds no images"):
        run_explain(bundle_dir, str(tmp_path / "empty"))
    with pytest.raises(EdgeprotoError, match="video file not found"):
        run_explain(bundle_dir, str(tmp_path / "missing.mp4"))
    with pytest.raises(EdgeprotoError, match="cannot open camera"):
        run_explain(bundle_dir, "63")  # no such camera here
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 64)
    with pytest.raises(EdgeprotoError):
        run_explain(bundle_dir, str(broken), out_prefix=tmp_path / "b")
    assert not (tmp_path / "b.mp4").exists() and not (tmp_path / "b.jsonl").exists()

    video = tmp_path / "v.mp4"
    _video(video, [np.full((32, 32, 3), 60 * i, np.uint8) for i in range(4)])

    def fail(self, frame, result):
        raise EdgeprotoError("disk full (simulated)")
    monkeypatch.setattr(writers.VideoOut, "write", fail)
    for overlap in (True, False):
        with pytest.raises(EdgeprotoError, match="disk full"):
            run_explain(bundle_dir, str(video), out_prefix=tmp_path / "out", overlap=overlap)
        assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "out.jsonl").exists()


def test_modifications_follow_their_code():
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    for name in MODIFICATIONS:
        out = modify(raw, name)
        assert out.shape == raw.shape and out.dtype == np.uint8 and not np.array_equal(out, raw), name
    # shape: row i rolled by int(4 sin(pi i 0.05)), then column i; rolls only permute pixels
    warped = warp_shape(raw)
    assert sorted(map(tuple, warped.reshape(-1, 3))) == sorted(map(tuple, raw.reshape(-1, 3)))
    row = np.roll(raw[10], int(4 * np.sin(np.pi * 10 * 0.05)), axis=0)
    col_shift = [int(4 * np.sin(np.pi * i * 0.05)) for i in range(40)]
    rows_done = np.stack([np.roll(raw[i], col_shift[i], axis=0) for i in range(40)])
    assert np.array_equal(rows_done[10], row)
    assert np.array_equal(warped, np.stack([np.roll(rows_done[:, i], col_shift[i], axis=0) for i in range(40)], 1))
    # hue: the HSV hue byte + uint8(0.1·255) = 25, wrapping
    h0 = np.asarray(Image.fromarray(raw).convert("HSV"))[..., 0].astype(int)
    assert np.array_equal(np.asarray(Image.fromarray(raw).convert("HSV").split()[0]), h0)
    grey = np.full((8, 8, 3), 128, np.uint8)
    assert np.array_equal(shift_hue(grey), grey)  # no hue to shift
    with pytest.raises(EdgeprotoError, match="unknown modification"):
        modify(raw, "blur")


# ----------------------------------------------------------------------------- a colour prototype
def _colour_model(size: int, prototypes: np.ndarray) -> onnx.ModelProto:
    """x (B,3,S,S) in [0,1] → per-pixel chroma direction (x − grey)/‖x − grey‖, 4×4 average pool →
    ProtoPNet L2 log-similarity to ``prototypes`` (M,3); scores = max; logits = scores (one class each).
    The chroma direction ignores contrast, saturation and brightness (blends with grey or black):
    only hue moves it, so hue importance must dominate."""
    m = len(prototypes)
    P = prototypes.astype(np.float32).reshape(1, m, 3, 1, 1)
    inits = [helper.make_tensor("P", TensorProto.FLOAT, P.shape, P.ravel()),
             helper.make_tensor("eps", TensorProto.FLOAT, [], [1e-6]),
             helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
             helper.make_tensor("ep4", TensorProto.FLOAT, [], [1e-4]),
             helper.make_tensor("ax1", TensorProto.INT64, [1], [1]),
             helper.make_tensor("ax2", TensorProto.INT64, [1], [2]),
             helper.make_tensor("ax34", TensorProto.INT64, [2], [2, 3]),
             helper.make_tensor("W", TensorProto.FLOAT, [m, m], np.eye(m, dtype=np.float32).ravel())]
    nodes = [
        helper.make_node("ReduceMean", ["image", "ax1"], ["grey"], keepdims=1),
        helper.make_node("Sub", ["image", "grey"], ["c"]),
        helper.make_node("Mul", ["c", "c"], ["c2"]),
        helper.make_node("ReduceSum", ["c2", "ax1"], ["n2"], keepdims=1),
        helper.make_node("Add", ["n2", "eps"], ["n2e"]),
        helper.make_node("Sqrt", ["n2e"], ["n"]),
        helper.make_node("Div", ["c", "n"], ["u"]),
        helper.make_node("AveragePool", ["u"], ["z"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Unsqueeze", ["z", "ax1"], ["z5"]),  # (B,1,3,H,W)
        helper.make_node("Sub", ["z5", "P"], ["diff"]),  # (B,M,3,H,W)
        helper.make_node("Mul", ["diff", "diff"], ["d2"]),
        helper.make_node("ReduceSum", ["d2", "ax2"], ["d"], keepdims=0),  # (B,M,H,W)
        helper.make_node("Add", ["d", "one"], ["num"]),
        helper.make_node("Add", ["d", "ep4"], ["den"]),
        helper.make_node("Div", ["num", "den"], ["ratio"]),
        helper.make_node("Log", ["ratio"], ["maps"]),
        helper.make_node("ReduceMax", ["maps", "ax34"], ["scores"], keepdims=0),
        helper.make_node("MatMul", ["scores", "W"], ["logits"]),
    ]
    h = size // 4
    graph = helper.make_graph(
        nodes, "colour", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", m]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", m]),
         helper.make_tensor_value_info("maps", TensorProto.FLOAT, ["batch", m, h, h])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def _direction(rgb) -> np.ndarray:
    c = np.asarray(rgb, dtype=np.float64) / 255
    c = c - c.mean()
    return c / np.linalg.norm(c)


def test_a_colour_prototype_depends_on_hue(tmp_path):
    import onnxruntime as ort

    from edgeproto.export.analysis import analyse

    size = 48
    protos = np.stack([_direction((220, 30, 30)), _direction((30, 60, 220))])  # red, blue
    root = tmp_path / "colour"
    root.mkdir()
    model = _colour_model(size, protos)
    (root / "model.onnx").write_bytes(model.SerializeToString())
    sess = ort.InferenceSession(str(root / "model.onnx"))
    rng = np.random.default_rng(0)

    def picture(rgb):  # the colour under a random brightness per pixel: texture, one hue
        shade = rng.uniform(0.6, 1.0, (size, size, 1))
        return np.rint(np.asarray(rgb, dtype=np.float64) * shade).astype(np.uint8)

    frames = [picture((220, 30, 30)), picture((30, 60, 220))]
    x = np.stack([f.transpose(2, 0, 1) / 255 for f in frames]).astype(np.float32)
    logits, scores, maps = sess.run(None, {"image": x})
    (root / "explain").mkdir()
    (root / "golden").mkdir()
    np.save(root / "explain" / "last_layer.npy", np.eye(2, dtype=np.float32))
    for n, a in (("image", x), ("logits", logits), ("scores", scores), ("maps", maps)):
        np.save(root / "golden" / f"{n}.npy", a)
    records = [{"index": j, "class": j, "class_name": n, "source_image": None} for j, n in enumerate(("red", "blue"))]
    run = lambda batch: dict(zip(("logits", "scores", "maps"), sess.run(None, {"image": batch})))  # noqa: E731
    config = {"recipe": {"data": {"name": "procedural", "image_size": size, "num_classes": 3, "train_size": 24,
                                  "test_size": 8}},
              "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "image_size": size, "prototypes": records}
    extras = analyse(root, config, run, images=24)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": {"file": "model.onnx"},
                "preprocess": {"image_size": size, "mean": [0.0] * 3, "std": [1.0] * 3}, "classes": ["red", "blue"],
                "prototypes": records, "explain": {"last_layer": "explain/last_layer.npy",
                                                   "because": extras["because"], "gallery": extras["gallery"]},
                "golden": {"files": {n: f"golden/{n}.npy" for n in ("image", "logits", "scores", "maps")}}}
    manifest["files"] = file_hashes(root)
    (root / MANIFEST).write_text(json.dumps(manifest))

    with Explainer.open(root, k=2) as ex:
        for want, frame in zip((0, 1), frames):
            r = ex.explain(frame, because=True)
            assert r.prediction == want and r.top[0].prototype == want
            local = r.top[0].because["local"]
            others = {k: v for k, v in local.items() if k != "hue"}
            assert max(local, key=local.get) == "hue", local
            assert local["hue"] > 5 * max(abs(v) for v in others.values()), local  # hue dominates
            glob = r.top[0].because["global"]
            assert max(glob, key=glob.get) == "hue", glob  # over the procedural train images too
    assert run_explain(root, str(_save(frames[0], tmp_path / "input-red.png")), out_prefix=tmp_path / "red", as_json=True,
                       because=True) == 0
    assert (tmp_path / "red.png").is_file() and (tmp_path / "red.json").is_file()


def _save(arr, path):
    Image.fromarray(arr).save(path)
    return path
