"""``compile --precision auto`` (the search, its manifest record, its refusal), ``validate --localize``
and the Pareto plot, on a tiny trained model (small search spaces: seconds, not minutes)."""

from __future__ import annotations

import base64
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from edgeproto.bundle import MANIFEST, file_hashes, open_bundle
from edgeproto.cli import cli
from edgeproto.compare.localize import localize
from edgeproto.compare.precision_search import SearchThresholds, compile_auto
from edgeproto.compare.report_search import pareto_chart, pareto_front, pareto_section
from edgeproto.errors import EdgeprotoError
from edgeproto.export.bundle_writer import export_bundle
from edgeproto.outputs import OUTPUTS
from edgeproto.runtimes import load_runner
from edgeproto.runtimes.compile import CalibrationImages, compile_bundle

SMALL = {"calib": 32, "val_images": 48, "latency_queries": 5, "progress": False}


@pytest.fixture(scope="module")
def bundle_dir(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("auto") / "b"
    export_bundle(trained("l2_log"), out, golden=8)
    return out


@pytest.fixture()
def fresh(bundle_dir, tmp_path):
    dest = tmp_path / "b"
    shutil.copytree(bundle_dir, dest)
    return dest


def test_onnxruntime_search_keeps_the_fastest_passing_candidate_and_records_the_search(fresh):
    thresholds = SearchThresholds(min_top1=0.9, max_accuracy_drop=0.1)
    entry = compile_auto(fresh, target="onnxruntime", thresholds=thresholds, methods=("minmax", "entropy"),
                         fp16=False, max_steps=2, **SMALL)
    bundle = open_bundle(fresh)  # the manifest's file hashes still hold
    assert bundle.manifest["compiled"]["onnxruntime-auto"]["precision"] == "auto"
    search = entry["search"]
    rows = {r["name"]: r for r in search["candidates"]}
    assert {"fp32", "int8 minmax (prototypes fp32)", "int8 entropy (prototypes fp32)"} <= set(rows)
    # entropy calibration (2048-bin histogram) really clips: not MinMax's artifact again
    assert "same_as" not in rows["int8 entropy (prototypes fp32)"]
    for r in rows.values():
        assert r["latency_ms"] > 0 and 0.0 <= r["top1"] <= 1.0
        assert r["passed"] == (r["top1"] >= 0.9 and r["accuracy_drop"] <= 0.1)
    passing = [r for r in rows.values() if r["passed"]]
    winner = rows[search["winner"]]
    assert winner["passed"] and winner["latency_ms"] == min(r["latency_ms"] for r in passing)
    assert entry["chosen"]["name"] == search["winner"] and "× the fp32 speed" in search["why"]
    # sensitivity: every layer group probed alone; the quantized L2 prototype layer does the most damage
    ranking = search["ranking"]
    assert {d["group"] for d in ranking} == set(search["groups"]) and "prototypes" in search["groups"]
    assert ranking[0]["group"] == "prototypes" and ranking[0]["top1"] < ranking[-1]["top1"]
    # validation images are not calibration images
    calibration = CalibrationImages(bundle.manifest["data"], SMALL["calib"], progress=False)
    assert search["validation"]["split"] == "train" and len(search["validation"]["ids"]) == SMALL["val_images"]
    assert not set(search["validation"]["ids"]) & set(calibration.indices)
    # the artifact is loadable by precision "auto" and runs
    runner = load_runner(bundle, "onnxruntime", "auto")
    out = runner.run(bundle.golden()["image"])
    assert all(np.isfinite(out[k]).all() for k in OUTPUTS)
    assert entry["check"]["images"] == 8 and entry["inference_precision"] == winner["precision"]


def test_thresholds_no_candidate_meets_name_the_best_and_write_nothing(fresh):
    before = file_hashes(fresh), (fresh / MANIFEST).read_bytes(), sorted(p.name for p in fresh.parent.iterdir())
    impossible = SearchThresholds(min_top1=1.0, min_map_iou=1.0, max_accuracy_drop=-0.5)
    with pytest.raises(EdgeprotoError, match=r"no onnxruntime candidate meets .*nothing written.*the best candidate "
                                              r"was 'int8 minmax") as info:
        compile_auto(fresh, target="onnxruntime", thresholds=impossible, methods=("minmax",), fp16=False,
                     sensitivity=False, reduced_only=True, **SMALL)
    assert "compile --precision fp32" in str(info.value)
    after = file_hashes(fresh), (fresh / MANIFEST).read_bytes(), sorted(p.name for p in fresh.parent.iterdir())
    assert before == after


def test_compile_cli_refuses_bad_thresholds(fresh):
    runner = CliRunner()
    res = runner.invoke(cli, ["compile", str(fresh), "--precision", "auto", "--min-top1", "1.5"])
    assert isinstance(res.exception, EdgeprotoError) and "--min-top1 is a fraction in [0, 1]" in str(res.exception)
    res = runner.invoke(cli, ["compile", str(fresh), "--precision", "int8", "--min-top1", "0.9"])
    assert isinstance(res.exception, EdgeprotoError) and "thresholds of --precision auto" in str(res.exception)
    assert "onnxruntime-auto" not in json.loads((fresh / MANIFEST).read_text()).get("compiled", {})


def test_openvino_search_has_hints_and_nncf_accuracy_control(fresh):
    entry = compile_auto(fresh, target="openvino", thresholds=SearchThresholds(min_top1=0.9), calib=32,
                         val_images=24, latency_queries=5, progress=False)
    rows = {r["name"]: r for r in entry["search"]["candidates"]}
    assert {"fp32", "bf16 hint", "fp16 hint", "int8 nncf (prototypes fp32)"} <= set(rows)
    controlled = [r for r in rows.values() if "accuracy_control" in r]
    assert len(controlled) == 2 and all(r["accuracy_control"]["max_drop"] == pytest.approx(0.1) for r in controlled)
    assert rows[entry["search"]["winner"]]["passed"]
    if rows["fp16 hint"]["effective_precision"] == rows["bf16 hint"]["effective_precision"]:  # no f16 on this CPU
        assert rows["fp16 hint"]["same_as"] == "bf16 hint" and not rows["fp16 hint"]["passed"]
    assert open_bundle(fresh).manifest["compiled"]["openvino-auto"]["model"].endswith("model.xml")


def test_localize_finds_the_first_tensor_that_diverges(fresh, tmp_path):
    import onnx

    bundle = open_bundle(fresh)
    images = bundle.golden()["image"]
    clean = localize(bundle, images, target="onnxruntime", precision="fp32")
    assert clean["first_divergence"] is None
    assert all(r["status"] == "ok" and r["rel_l2"] < 1e-5 for r in clean["tensors"])
    watched = [r["tensor"] for r in clean["tensors"]]
    assert watched[-3:] == ["maps", "scores", "logits"] and len(watched) >= 5  # blocks, add-on, input, outputs
    # a target whose prototype vectors moved: everything before the prototype layer still matches
    model = onnx.load(bundle.path("model.onnx"))
    protos = next(t for t in model.graph.initializer if t.name.endswith("prototypes"))
    moved = onnx.numpy_helper.to_array(protos) + 0.5
    protos.CopyFrom(onnx.numpy_helper.from_array(moved.astype(np.float32), protos.name))
    onnx.save(model, tmp_path / "moved.onnx")
    broken = localize(bundle, images, target="onnxruntime", artifact=tmp_path / "moved.onnx")
    assert broken["first_divergence"]["tensor"] == "maps" and clean["top1_prototype_agreement"] == 1.0
    before = broken["tensors"][: watched.index("maps")]
    assert before and all(r["status"] == "ok" and r["rel_l2"] < 1e-5 for r in before)
    # real unguarded int8 of the tiny model: the backbone's quantization noise stays under the int8 limit
    compile_bundle(fresh, target="onnxruntime", precision="int8", guard="none", calib=32, progress=False)
    int8 = localize(open_bundle(fresh), images, target="onnxruntime", precision="int8", guard="none")
    assert all(r["status"] == "ok" for r in int8["tensors"][: watched.index("maps")])
    assert 0 < int8["tensors"][0]["rel_l2"] < int8["limit_rel_l2"] == 0.5


def test_validate_cli_localize_and_pareto_in_the_report(fresh, tmp_path):
    compile_bundle(fresh, target="onnxruntime", precision="int8", guard="none", calib=32, progress=False)
    res = CliRunner().invoke(cli, ["validate", str(fresh), "--precision", "int8", "--guard", "none", "--limit", "16",
                                   "--localize", "--out", str(tmp_path / "r"), "--json"])
    assert res.exit_code in (0, 1), res.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    loc = report["localize"]
    assert loc["images"] == 16 and [r["tensor"] for r in loc["tensors"]][-3:] == ["maps", "scores", "logits"]
    assert json.loads(res.output)["localize"]["tensors"] == loc["tensors"]
    page = (tmp_path / "r" / "report.html").read_text()
    assert "Where the artifact departs from the fp32 model (--localize)" in page
    res = CliRunner().invoke(cli, ["validate", str(fresh), "--sweep", "--localize"])
    assert isinstance(res.exception, EdgeprotoError) and "without --sweep" in str(res.exception)


def test_pareto_front_and_chart():
    pts = [{"label": "a", "latency_ms": 1.0, "top1": 0.90, "accuracy": 0.9, "passed": False, "chosen": False},
           {"label": "b", "latency_ms": 2.0, "top1": 0.99, "accuracy": 0.95, "passed": True, "chosen": True},
           {"label": "c", "latency_ms": 3.0, "top1": 0.95, "accuracy": 0.95, "passed": True, "chosen": False},
           {"label": "d", "latency_ms": 4.0, "top1": 1.00, "accuracy": 0.96, "passed": True, "chosen": False}]
    assert [p["label"] for p in pareto_front(pts)] == ["a", "b", "d"]  # c is slower and less faithful than b
    uri = pareto_chart(pts, 0.98)
    png = base64.b64decode(uri.split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    search = {"candidates": [{"name": p["label"], **{k: p[k] for k in ("latency_ms", "top1", "accuracy", "passed")}}
                             for p in pts], "winner": "b", "thresholds": {"min_top1": 0.98}}
    html = pareto_section({"search": search})
    assert "Pareto front" in html and "b (2.000 ms, top-1 0.990)" in html and "c (" not in html
    assert pareto_section({"kind": "sweep", "rows": []}) == ""
