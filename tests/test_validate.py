"""``edgeproto validate``: fidelity and localization metrics on hand-made cases with known answers,
thresholds, and validate / sweep on a trained bundle (passes, fails, reports, user mistakes)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from edgeproto.bundle import MANIFEST, open_bundle
from edgeproto.errors import EdgeprotoError
from edgeproto.compare import fidelity as fid
from edgeproto.ranking import top_prototypes
from edgeproto.compare.localization import box_half, localization, noisy_inputs, parts_in_box, peak_box
from edgeproto.compare.thresholds import THRESHOLDS, evaluate, resolve_thresholds
from edgeproto.compare.options import ValidateOptions
from edgeproto.compare.validate import validate_bundle
from edgeproto.commands.validate import run_validate
from edgeproto.export.bundle_writer import export_bundle

# --------------------------------------------------------------------------- hand-made outputs


def _bump(h: int, y: float, x: float, width: float = 0.8) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:h]
    return np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * width**2))


def _outputs(n: int = 6, h: int = 6, seed: int = 0):
    """Outputs of a fake 2-class, 4-prototype model (prototypes 0,1 → class 0; 2,3 → class 1)."""
    rng = np.random.default_rng(seed)
    last = np.array([[1.0, 1.0, -0.5, -0.5], [-0.5, -0.5, 1.0, 1.0]])
    maps = np.stack([np.stack([_bump(h, *rng.uniform(0.5, h - 1.5, 2)) * (1 + j) for j in range(4)])
                     for _ in range(n)])
    scores = maps.max(axis=(2, 3)) + rng.uniform(0, 0.1, (n, 4))
    # images 0..n/2-1 favour class 0 with prototype 0 on top; the rest class 1 with prototype 3
    scores[: n // 2, 0] += 10
    scores[n // 2:, 3] += 10
    return {"logits": scores @ last.T, "scores": scores, "maps": maps}, np.array([0, 0, 1, 1])


def test_identical_outputs_agree_perfectly():
    ref, classes = _outputs()
    same = {k: v.copy() for k, v in ref.items()}
    values = fid.per_image(ref, same, classes, k=3, size=24)
    s = fid.summarize(values, 3)
    for key in ("prediction", "top1", "topk_overlap", "topk_set", "kendall_tau", "map_pearson", "map_iou",
                "box_iou", "argmax", "argmax_pixel"):
        assert s[key] == pytest.approx(1.0), key
    assert s["argmax_distance_px"] == 0.0


def test_shifted_maps_lose_argmax_and_iou():
    ref, classes = _outputs()
    h = ref["maps"].shape[-1]
    act = {k: v.copy() for k, v in ref.items()}
    # every map's bump moves by half the map (wrapping): a different peak, disjoint high-activation masks
    for i in range(len(act["maps"])):
        for j in range(4):
            y, x = np.unravel_index(ref["maps"][i, j].argmax(), (h, h))
            act["maps"][i, j] = _bump(h, (y + h // 2) % h, (x + h // 2) % h) * (1 + j)
    s = fid.summarize(fid.per_image(ref, act, classes, k=4, size=24), 4)
    assert s["argmax"] == 0.0 and s["argmax_pixel"] == 0.0 and s["argmax_distance_px"] > 5
    assert s["map_iou"] < 0.2 and s["map_pearson"] < 0.5
    assert s["top1"] == 1.0 and s["prediction"] == 1.0  # scores untouched: only the maps moved


def test_permuted_prototypes_are_detected():
    ref, classes = _outputs()
    act = {k: v.copy() for k, v in ref.items()}
    for name in ("scores", "maps"):  # swap prototype channels 0 and 1 (same class, same weights)
        act[name][:, [0, 1]] = act[name][:, [1, 0]]
    values = fid.per_image(ref, act, classes, k=2, size=24)
    assert values["top1"].tolist() == [False] * 3 + [True] * 3  # the class-0 images had prototype 0 on top
    assert values["prediction"].all()  # logits unchanged: only the explanation moved
    s = fid.summarize(values)
    assert s["top1"] == 0.5 and s["kendall_tau"] < 1.0
    worst = fid.worst_images(values, ids=[10, 11, 12, 13, 14, 15], n=3)
    assert sorted(w["id"] for w in worst) == [10, 11, 12] and not any(w["top1"] for w in worst)
    checks = {c["name"]: c for c in evaluate(resolve_thresholds("fp32"), {"top1_prototype_agreement": s["top1"]})}
    assert checks["top1_prototype_agreement"]["status"] == "fail"


def test_non_finite_target_counts_as_disagreement():
    ref, classes = _outputs()
    act = {k: v.copy() for k, v in ref.items()}
    act["maps"][0] = np.inf
    act["scores"][1] = np.nan
    values = fid.per_image(ref, act, classes, k=2, size=24)
    assert values["map_iou"][0] == 0.0 and values["argmax"][0] == 0.0 and values["map_pearson"][0] == 0.0
    assert values["kendall_tau"][1] == 0.0 and values["map_iou"][2] == pytest.approx(1.0)


def test_metric_helpers_known_values():
    assert fid.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert fid.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert fid.pearson([[0.5]], [[0.5000001]]) == 1.0  # 1×1 maps (CBR autoencoder): no pattern to differ
    assert fid.pearson([1, 1, 1], [1, 2, 3]) == 0.0
    assert fid.kendall(np.array([1.0, 2, 3, 4]), np.array([1.0, 2, 4, 3])) == pytest.approx(4 / 6)
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    assert fid.mask_iou(a, b) == pytest.approx(1 / 3)
    assert fid.box_iou([0, 0, 2, 2], [1, 1, 3, 3]) == pytest.approx(1 / 7)


# --------------------------------------------------------------------------- localization


S, H = 32, 4  # 32-px inputs, 4×4 maps: latent cell (r, c) covers pixels 8r..8r+7


def _onehot(r: int, c: int) -> np.ndarray:
    m = np.zeros((H, H))
    m[r, c] = 1.0
    return m


def _part_at(r: int, c: int, parts: int = 2, which: int = 0) -> np.ndarray:
    """Masks (parts, S, S) with part ``which`` a 4×4 square centred on latent cell (r, c)."""
    masks = np.zeros((parts, S, S), bool)
    masks[which, 8 * r + 2: 8 * r + 6, 8 * c + 2: 8 * c + 6] = True
    return masks


CELLS = [(0, 0), (1, 2), (2, 1), (3, 3), (0, 3)]


def test_box_is_evalprotopnets_inclusive_73_px_at_224():
    """EvalProtoPNet: half_size=36, region (max(0, y−36), min(S, y+36)) and an inclusive in_bbox."""
    assert box_half(224) == 36 and box_half(32) == 5 and box_half(448) == 72
    box = peak_box(100, 100, 224, box_half(224))
    assert box == (64, 64, 136, 136)
    pts = np.array([[100.0, 64.0], [100.0, 136.0], [100.0, 63.0], [137.0, 100.0], [np.nan, np.nan]])
    assert parts_in_box(pts, box).tolist() == [True, True, False, False, False]  # 73 px wide
    assert peak_box(3, 220, 224, 36) == (184, 0, 224, 39)  # clipped as they clip it


def test_consistency_divides_by_images_where_the_part_is_visible():
    """A part visible in 7 of 10 images and hit in all 7: rate 1.00 (not 0.70), consistent."""
    maps = np.stack([_onehot(1, 1)[None]] * 10)
    masks = [_part_at(1, 1) if i < 7 else _part_at(3, 3, which=1) for i in range(10)]
    res = localization(maps, masks, prototype_classes=[0], labels=[0] * 10, top1=[0] * 10, size=S)
    rates = res["prototypes"][0]["part_rates"]
    assert rates == pytest.approx([1.0, 0.0])  # part 1 visible in 3 images, never hit
    assert res["consistency"] == 1.0 and res["box_px"] == 11 and res["box_half_px"] == 5
    # hit in 5 of the 7 visible images: 5/7 = 0.714 < 0.8, not consistent
    masks = [_part_at(1, 1) if i < 5 else _part_at(3, 3) if i < 7 else _part_at(3, 3, which=1) for i in range(10)]
    res = localization(maps, masks, prototype_classes=[0], labels=[0] * 10, top1=[0] * 10, size=S)
    assert res["prototypes"][0]["part_rates"][0] == pytest.approx(5 / 7) and res["consistency"] == 0.0


def test_pointing_game_tolerance():
    """Zhang et al.'s tolerance: a peak 10 px from the mask misses strictly and hits with 15 px."""
    maps = _onehot(0, 0)[None, None]  # upsampled peak at pixel (1, 1)
    masks = np.zeros((1, 1, S, S), bool)
    masks[0, 0, 11:14, 0:4] = True  # nearest mask pixel (11, 1): 10 px away
    kw = dict(prototype_classes=[0], labels=[0], top1=[0], size=S)
    assert localization(maps, list(masks), **kw)["pointing_game"] == 0.0
    res = localization(maps, list(masks), pointing_tolerance=15, **kw)
    assert res["pointing_game"] == 1.0 and res["pointing_tolerance_px"] == 15


def test_pointing_game_on_synthetic_masks():
    maps = np.stack([_onehot(1, 1)[None], _onehot(1, 1)[None], _onehot(2, 2)[None]])  # (3, 1, H, H)
    masks = [_part_at(1, 1), _part_at(3, 3), np.zeros((2, S, S), bool)]  # hit, miss, no parts (not counted)
    res = localization(maps, masks, prototype_classes=[0], labels=[0, 0, 0], top1=[0, 0, 0], size=S)
    assert res["pointing_images"] == 2 and res["pointing_game"] == 0.5


@pytest.mark.parametrize(("hits", "expected"), [(5, 1.0), (4, 1.0), (3, 0.0), (0, 0.0)])
def test_consistency_threshold(hits, expected):
    """One prototype of class 0 on five class-0 images; its part lies in the box in ``hits`` of them."""
    maps = np.stack([_onehot(r, c)[None] for r, c in CELLS])
    masks = [_part_at(r, c) if i < hits else _part_at(3 - r, 3 - c) for i, (r, c) in enumerate(CELLS)]
    res = localization(maps, masks, prototype_classes=[0], labels=[0] * 5, top1=[0] * 5, size=S,
                       part_names=["head", "tail"])
    assert res["consistency"] == expected
    assert res["prototypes"][0]["part_rates"] == pytest.approx([hits / 5, 0.0])
    assert res["prototypes"][0]["best_part_name"] == "head" and res["prototypes"][0]["consistent"] == bool(expected)


def test_consistency_only_counts_images_of_the_prototypes_class():
    # prototype 0 (class 0) is on the part in class-0 images; prototype 1 (class 1) never is
    maps = np.stack([np.stack([_onehot(r, c), _onehot(3 - r, 3 - c)]) for r, c in CELLS])
    masks = [_part_at(r, c) for r, c in CELLS]
    res = localization(maps, masks, prototype_classes=[0, 1], labels=[0, 0, 1, 1, 1], top1=[0] * 5, size=S)
    assert [p["images"] for p in res["prototypes"]] == [2, 3]
    assert res["consistency"] == 0.5 and res["consistent_prototypes"] == 1


def test_stability_counts_changed_hit_sets():
    maps = np.stack([_onehot(r, c)[None] for r, c in CELLS[:4]])
    masks = [_part_at(r, c) for r, c in CELLS[:4]]
    kwargs = dict(prototype_classes=[0], labels=[0] * 4, top1=[0] * 4, size=S)
    assert localization(maps, masks, noisy_maps=maps.copy(), **kwargs)["stability"] == 1.0
    moved = maps.copy()
    moved[0, 0], moved[1, 0] = _onehot(3, 3), _onehot(0, 0)  # images 0, 1: the peak leaves the part
    assert localization(maps, masks, noisy_maps=moved, **kwargs)["stability"] == 0.5
    assert localization(maps, masks, **kwargs)["stability"] is None
    broken = maps.copy()
    broken[2:] = np.inf  # a map that points nowhere is unstable (not "unchanged") and misses everything
    res = localization(broken, masks, noisy_maps=broken, **kwargs)
    intact = localization(maps[:2], masks[:2], prototype_classes=[0], labels=[0, 0], top1=[0, 0], size=S)
    assert res["stability"] == 0.5 and res["prototypes"][0]["part_rates"][0] == 0.5
    assert res["pointing_images"] == 4 and res["pointing_game"] == intact["pointing_game"] / 2 > 0


def test_noise_depends_only_on_image_id():
    x = np.zeros((3, 3, 8, 8), np.float32)
    a = noisy_inputs(x, [5, 6, 7])
    b = noisy_inputs(x[1:], [6, 7])
    assert np.array_equal(a[1:], b) and not np.array_equal(a[0], a[1])
    raw = noisy_inputs(np.zeros((1, 3, 64, 64)), [0], clip=None)
    assert abs(float(raw.std()) - 0.2) < 0.01 and np.abs(raw).max() > 0.5
    clipped = noisy_inputs(np.zeros((1, 3, 64, 64)), [0])  # EvalProtoPNet: N(0, 0.2²) clipped to ±0.25
    assert np.abs(clipped).max() == pytest.approx(0.25) and np.array_equal(clipped, np.clip(raw, -0.25, 0.25))


# --------------------------------------------------------------------------- thresholds


def test_thresholds_defaults_and_overrides(tmp_path):
    strict = resolve_thresholds("fp32")
    assert strict["top1_prototype_agreement"] == 1.0 and strict["prediction_agreement"] == 1.0
    assert strict["scores_max_abs"] <= 1e-4 and strict["map_iou"] >= 0.99
    assert resolve_thresholds("int8")["top1_prototype_agreement"] < resolve_thresholds("fp16")[
        "top1_prototype_agreement"] < 1.0
    f = tmp_path / "t.yaml"
    f.write_text("map_iou: 0.5\nscores_max_abs: null\nint8:\n  map_iou: 0.25\n")
    assert resolve_thresholds("fp32", f)["map_iou"] == 0.5 and resolve_thresholds("fp32", f)["scores_max_abs"] is None
    assert resolve_thresholds("int8", f)["map_iou"] == 0.25
    checks = {c["name"]: c["status"] for c in evaluate(resolve_thresholds("fp32", f), {"map_iou": 0.6})}
    assert checks["map_iou"] == "pass" and checks["scores_max_abs"] == "off" and checks["kendall_tau"] == "n/a"


@pytest.mark.parametrize(("text", "match"), [
    ("top1_agreement: 0.9\n", r"unknown threshold\(s\) 'top1_agreement'.*allowed keys: prediction_agreement"),
    ("fp32:\n  speed: 3\n", r"unknown threshold\(s\) 'speed'"),
    ("map_iou: high\n", "must be a number"),
    ("map_iou: 1.5\n", r"must lie in \[0, 1\]"),
    ("- 1\n- 2\n", "must hold a mapping"),
])
def test_bad_thresholds_file(tmp_path, text, match):
    f = tmp_path / "t.yaml"
    f.write_text(text)
    with pytest.raises(EdgeprotoError, match=match):
        resolve_thresholds("fp32", f)


# --------------------------------------------------------------------------- on a trained bundle


@pytest.fixture(scope="module")
def bundle_dir(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("validate") / "b"
    export_bundle(trained("l2_log"), out, golden=4)
    return out


@pytest.mark.parametrize("target", ["onnxruntime", "openvino"])
def test_fp32_passes_strict_thresholds_and_writes_report(bundle_dir, tmp_path, target, capsys):
    code = run_validate(bundle_dir, target, limit=64, out=tmp_path / "r", progress=False)
    printed = capsys.readouterr().out
    assert code == 0 and "PASSED" in printed and str(tmp_path / "r" / "report.html") in printed
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["passed"] and report["failed"] == [] and report["data"]["images"] == 64
    assert report["fidelity"]["top1"] == 1.0 and report["fidelity"]["prediction"] == 1.0
    assert report["fidelity"]["map_iou"] == pytest.approx(1.0)
    assert report["parity"]["scores"]["max_abs"] <= 1e-4
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert set(statuses) == set(THRESHOLDS) and set(statuses.values()) == {"pass"}
    loc = report["localization"]
    for key in ("pointing_game", "consistency", "stability"):
        assert loc["reference"][key] is not None and loc["target"][key] == pytest.approx(loc["reference"][key])
    assert report["target"]["runtime"]["name"] == target and report["environment"]["versions"]["torch"]
    assert report["examples"] and "_raw" not in report["examples"][0]
    page = (tmp_path / "r" / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 4 * len(report["examples"])
    assert 'class="badge PASS"' in page and "top1_prototype_agreement" in page and "<style>" in page
    for side in ("reference", "target"):  # the confusion matrix adds up to the images and the accuracy
        cm = np.asarray(report["accuracy"]["confusion"][side])
        assert cm.sum() == 64 and np.trace(cm) / 64 == pytest.approx(report["accuracy"][side])
    assert "Confusion matrix" in page
    wrong = [e for e in report["examples"] if e["target"]["pred"] != e["label"]]
    assert page.count('class="tag misclassified"') == len(wrong)


def test_impossible_threshold_fails_and_names_it(bundle_dir, tmp_path, capsys):
    t = tmp_path / "t.json"
    t.write_text(json.dumps({"scores_max_abs": 0}))
    code = run_validate(bundle_dir, "onnxruntime", limit=16, thresholds=t, out=tmp_path / "r", as_json=True)
    doc = json.loads(capsys.readouterr().out)  # progress is off in JSON mode: stdout is pure JSON
    assert code == 1 and doc["failed"] == ["scores_max_abs"] and not doc["passed"]
    assert doc["report"]["html"] == str(tmp_path / "r" / "report.html")
    page = (tmp_path / "r" / "report.html").read_text()
    assert 'class="badge FAIL"' in page and "Failed: scores_max_abs" in page


def test_tampered_target_swapping_prototypes_fails(bundle_dir, monkeypatch):
    """A runtime that mixes up two prototypes of the same class keeps every prediction but not the
    explanations: validate must catch it."""
    import edgeproto.compare.validate as validate_module

    bundle = open_bundle(bundle_dir)
    golden, classes = bundle.golden(), bundle.prototype_classes()
    p = int(top_prototypes(golden["logits"][:1], golden["scores"][:1], classes, 1)[0, 0])
    q = next(j for j, rec in enumerate(bundle.prototypes) if j != p and rec["class"] == bundle.prototypes[p]["class"])
    real = validate_module.load_runner

    class Swapped:
        def __init__(self, inner):
            self.inner, self.name, self.version = inner, inner.name, inner.version
            self.precision, self.device = inner.precision, inner.device

        def describe(self):
            return self.inner.describe()

        def info(self):
            return self.inner.info()

        def close(self):
            self.inner.close()

        def run(self, x):
            out = self.inner.run(x)
            for name in ("scores", "maps"):
                out[name][:, [p, q]] = out[name][:, [q, p]]
            return out

    def load(bundle, target, *a, **kw):
        runner = real(bundle, target, *a, **kw)
        return runner if target == "torch" else Swapped(runner)

    monkeypatch.setattr(validate_module, "load_runner", load)
    report = validate_bundle(bundle_dir, target="onnxruntime", options=ValidateOptions(limit=32, progress=False))
    assert not report["passed"] and "top1_prototype_agreement" in report["failed"]
    assert report["fidelity"]["top1"] < 1.0 and report["worst"][0]["top1"] is False
    assert report["fidelity"]["prediction"] == 1.0 and "prediction_agreement" not in report["failed"]


def test_sweep_compiles_and_tabulates(bundle_dir, tmp_path, capsys):
    root = tmp_path / "b"
    shutil.copytree(bundle_dir, root)
    code = run_validate(root, None, sweep=True, targets=["onnxruntime"], limit=16, out=tmp_path / "s",
                        latency_queries=3, progress=False)
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "s" / "report.json").read_text())
    rows = result["rows"]
    assert [(r["precision"], r["guard"]) for r in rows] == [("fp32", "prototypes"), ("fp16", "prototypes"),
                                                            ("int8", "prototypes"), ("int8", "none")]
    assert set(open_bundle(root).manifest["compiled"]) >= {"onnxruntime-fp16", "onnxruntime-int8",
                                                           "onnxruntime-int8-noguard"}
    assert rows[0]["top1_prototype_agreement"] == 1.0 and rows[0]["latency_vs_fp32"] == 1.0
    assert all(r["latency_ms"] > 0 for r in rows) and result["reference"]["latency_ms"] > 0
    assert code == (0 if result["passed"] else 1)
    assert result["passed"] == all(r["passed"] for r in rows if r["guard"] == "prototypes")
    page = (tmp_path / "s" / "report.html").read_text()
    assert "alt='sweep chart'" in page and "data:image/png;base64," in page and "int8" in printed


# --------------------------------------------------------------------------- user mistakes


def test_moved_checkpoint_is_reported(bundle_dir, trained, tmp_path):
    root, ckpt = tmp_path / "b", tmp_path / "ckpt"
    shutil.copytree(bundle_dir, root)
    shutil.copytree(trained("l2_log"), ckpt)
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["source"]["checkpoint"] = str(ckpt)
    (root / MANIFEST).write_text(json.dumps(manifest))
    assert validate_bundle(root, target="onnxruntime", options=ValidateOptions(limit=4, progress=False))["passed"]
    ckpt.rename(tmp_path / "elsewhere")
    with pytest.raises(EdgeprotoError, match=r"reference checkpoint .*ckpt is missing"):
        validate_bundle(root, target="onnxruntime", options=ValidateOptions(limit=4, progress=False))
    # pointing at it explicitly works; a different checkpoint is refused
    assert validate_bundle(root, target="onnxruntime", options=ValidateOptions(limit=4, checkpoint=tmp_path / "elsewhere", progress=False))["passed"]
    (tmp_path / "elsewhere" / "model.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(EdgeprotoError, match="not the one this bundle was exported from"):
        validate_bundle(root, target="onnxruntime", options=ValidateOptions(limit=4, checkpoint=tmp_path / "elsewhere", progress=False))


def test_data_of_another_model_is_refused(bundle_dir, tmp_path):
    f = tmp_path / "data.yaml"
    f.write_text("name: procedural\nimage_size: 32\nnum_classes: 4\ntest_size: 8\n")
    with pytest.raises(EdgeprotoError, match="dataset has 4 classes but the bundle's model has 3"):
        run_validate(bundle_dir, "onnxruntime", data=f, progress=False)
    f.write_text("name: procedural\nimage_size: 48\nnum_classes: 3\ntest_size: 8\n")
    with pytest.raises(EdgeprotoError, match="image_size is 48"):
        validate_bundle(bundle_dir, target="onnxruntime", options=ValidateOptions(data=f, progress=False))
    # a recipe file works as a data config too (its data section)
    f.write_text("name: r\ndata:\n  name: procedural\n  image_size: 32\n  num_classes: 3\n  test_size: 6\n")
    report = validate_bundle(bundle_dir, target="onnxruntime", options=ValidateOptions(data=f, progress=False))
    assert report["data"]["images"] == 6 and report["data"]["split_size"] == 6


def test_empty_split_limit_and_unknown_threshold(bundle_dir, tmp_path):
    classes = open_bundle(bundle_dir).classes
    for name in classes:  # one image per class: the 80/20 split leaves the test split empty
        (tmp_path / "imgs" / name).mkdir(parents=True)
        Image.new("RGB", (32, 32), (90, 120, 200)).save(tmp_path / "imgs" / name / "a.png")
    f = tmp_path / "data.yaml"
    f.write_text(f"name: folder\nroot: {tmp_path / 'imgs'}\nimage_size: 32\n")
    with pytest.raises(EdgeprotoError, match="test split of dataset 'folder' is empty"):
        validate_bundle(bundle_dir, target="onnxruntime", options=ValidateOptions(data=f, progress=False))
    with pytest.raises(EdgeprotoError, match="limit must be a whole number of at least 1"):
        validate_bundle(bundle_dir, target="onnxruntime", options=ValidateOptions(limit=0, progress=False))
    t = tmp_path / "t.yaml"
    t.write_text("top1_prototype_agreement: 1.0\nfidelity: 0.9\n")
    with pytest.raises(EdgeprotoError, match=r"unknown threshold\(s\) 'fidelity'; allowed keys: .*map_iou"):
        run_validate(bundle_dir, "onnxruntime", thresholds=t, progress=False)
    with pytest.raises(EdgeprotoError, match="no onnxruntime int8 artifact"):
        validate_bundle(bundle_dir, target="onnxruntime", precision="int8", options=ValidateOptions(limit=4, progress=False))


def test_metric_modules_import_no_torch():
    import subprocess
    import sys

    code = ("import sys\n"
            "class Block:\n"  # any torch import now fails (scipy only looks for an imported torch)
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'torch': raise ImportError('torch is blocked')\n"
            "sys.meta_path.insert(0, Block())\n"
            "import numpy as np\n"
            "from edgeproto.compare import fidelity, localization, thresholds, report_html\n"
            "m = np.random.default_rng(0).random((2, 3, 4, 4))\n"
            "out = {'logits': m.max((2, 3))[:, :2], 'scores': m.max((2, 3)), 'maps': m}\n"
            "assert fidelity.fidelity(out, out, np.array([0, 1, 1]), size=16)['summary']['top1'] == 1.0\n"
            "loc = localization.localization(m, [np.ones((1, 16, 16), bool)] * 2, [0, 1, 1], [0, 1], [0, 1])\n"
            "assert loc['pointing_game'] == 1.0 and 'torch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pointing_tolerance_option_is_checked_and_reported(bundle_dir):
    with pytest.raises(EdgeprotoError, match="pointing_tolerance"):
        ValidateOptions(pointing_tolerance=-1).check()
    report = validate_bundle(bundle_dir, target="onnxruntime",
                             options=ValidateOptions(limit=8, progress=False, pointing_tolerance=15))
    loc = report["localization"]
    assert loc["reference"]["pointing_tolerance_px"] == 15 and loc["target"]["box_px"] == 11
