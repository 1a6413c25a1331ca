"""ProC-KD (``edgeproto distill``): a small student trained with a teacher's prototypes, across label
spaces; its bundle through ONNX Runtime, OpenVINO and on-device explain; explanation agreement."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeproto.errors import EdgeprotoError
from edgeproto.train import distill, train, validate_recipe
from edgeproto.train.agreement import top_prototype_agreement
from edgeproto.train.distill import distill_terms, kl_softmax, match_prototypes

# the tiny teacher (conftest: 3 classes, 32 px, seed 0) teaches a student with 4 classes on other images
STUDENT = {
    "name": "tiny-proc-kd",
    "seed": 0,
    "data": {"name": "procedural", "image_size": 32, "num_classes": 4, "train_size": 96, "test_size": 48, "seed": 1},
    "model": {"arch": "proc_kd", "backbone": {"name": "small_cnn", "width": 4, "stages": 3},
              "prototypes": {"family": "teacher"}},
    "train": {"batch_size": 32, "warm_epochs": 1, "joint_epochs": 2, "last_layer_epochs": 1, "joint_last_layer": True},
}


def student_recipe(**sections) -> dict:
    raw = copy.deepcopy(STUDENT)
    for key, value in sections.items():
        raw[key].update(value)
    return validate_recipe(raw)


# ------------------------------------------------------------------ metric and losses (hand-computed)


def test_agreement_hand_computed():
    teacher = np.array([[1.0, 3.0, 2.0], [5.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    student = np.array([[0.0, 9.0, 1.0], [0.0, 5.0, 0.0], [2.0, 1.0, 1.0]])
    # top-1: teacher 1, 0, 1 (tie → lower index); student 1, 1, 0 → 1 of 3
    # top-2: teacher {1,2} {0,1} {1,2}; student {1,2} {1,0} {0,1} → overlaps 2, 2, 1 of 2
    got = top_prototype_agreement(teacher, student, k=2)
    assert got["top1"] == pytest.approx(1 / 3) and got["topk_overlap"] == pytest.approx(5 / 6)
    assert got["k"] == 2 and got["images"] == 3
    assert top_prototype_agreement(teacher, teacher)["top1"] == 1.0
    with pytest.raises(ValueError):
        top_prototype_agreement(teacher, student[:, :2])


def test_prototypes_match_student_classes_by_teacher_scores():
    scores = torch.tensor([[1.0, 4.0], [3.0, 2.0], [5.0, 1.0], [5.0, 0.0]])  # 4 images, 2 prototypes
    labels = torch.tensor([0, 0, 1, 1])  # class 2 has no image
    classes, means = match_prototypes(scores, labels, 3)
    # class means: class 0 → [2, 3], class 1 → [5, 0.5]: prototype 0 → class 1, prototype 1 → class 0
    assert classes.tolist() == [1, 0]
    assert means[:2].tolist() == [[2.0, 3.0], [5.0, 0.5]] and torch.isinf(means[2]).all()


def test_distillation_terms():
    t = torch.tensor([[2.0, 0.0, 1.0]])
    assert kl_softmax(t, t, 1.0).item() == pytest.approx(0.0, abs=1e-7)
    s = torch.tensor([[0.0, 0.0, 0.0]])
    p = torch.softmax(t, dim=1)
    expected = float((p * (p.log() - np.log(1 / 3))).sum()) * 4.0  # × T² at T = 2
    assert kl_softmax(s * 2, t * 2, 2.0).item() == pytest.approx(expected, rel=1e-5)
    # maps on different grids: the teacher's are resized to the student's; logits only for the same classes
    out = {"scores": s, "maps": torch.zeros(1, 3, 4, 4), "logits": torch.zeros(1, 2),
           "projected": torch.zeros(1, 5, 4, 4)}
    teacher = {"scores": t, "maps": torch.randn(1, 3, 2, 2), "logits": torch.randn(1, 2),
               "features": torch.full((1, 5, 2, 2), 0.5)}
    kd = {"temperature": 1.0, "scores": 1.0, "maps": 0.5, "features": 1.0, "logits": 1.0}
    terms = distill_terms(out, teacher, kd, same_classes=False)
    assert sorted(terms) == ["kd_features", "kd_maps", "kd_scores"] and all(v.item() > 0 for v in terms.values())
    assert terms["kd_features"].item() == pytest.approx(0.25)  # (0 − 0.5)² everywhere after resizing
    assert "kd_logits" in distill_terms(out, teacher, kd, same_classes=True)


# ------------------------------------------------------------------ bad input (fast)


def _fake_checkpoint(path: Path, model: dict, prototypes: list) -> Path:
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"format": "edgeproto-checkpoint", "model": model,
                                                  "prototypes": prototypes}))
    return path


def test_bad_teachers_give_one_clear_error(tmp_path):
    recipe = student_recipe()
    cases = {
        "not a checkpoint": (tmp_path / "missing", "checkpoint not found"),
        "no config": (tmp_path / "empty", "config.json is missing"),
        "no prototypes": (_fake_checkpoint(tmp_path / "noproto", {"arch": "protopnet"}, []), "has no prototypes"),
        "segmentation": (_fake_checkpoint(tmp_path / "seg",
                                          {"arch": "latent_seg", "prototypes": {"family": "gaussian"}},
                                          [{"index": 0}]), "classification prototype model"),
        "4 channels": (_fake_checkpoint(tmp_path / "rgba", {"arch": "protopnet", "in_channels": 4,
                                                            "prototypes": {"family": "l2_log"}}, [{"index": 0}]),
                       "4-channel"),
    }
    (tmp_path / "empty").mkdir()
    for name, (teacher, message) in cases.items():
        out = tmp_path / f"out-{name}"
        with pytest.raises(EdgeprotoError, match=message):
            distill(recipe, teacher, out, quiet=True)
        assert not out.exists(), name


def test_proc_kd_needs_distill_and_distill_needs_proc_kd(tmp_path):
    with pytest.raises(EdgeprotoError, match="learns from a teacher"):
        train(student_recipe(), tmp_path / "a", quiet=True)
    plain = validate_recipe({**copy.deepcopy(STUDENT), "model": {"prototypes": {"family": "l2_log"}}})
    with pytest.raises(EdgeprotoError, match="trains model.arch proc_kd"):
        distill(plain, tmp_path, tmp_path / "b", quiet=True)
    with pytest.raises(EdgeprotoError, match="distill.temperature"):
        student_recipe(train={"distill": {"temperature": 0}})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_reports_a_bad_teacher_in_one_line(tmp_path, capsys):
    from edgeproto.cli import main

    recipe = tmp_path / "student.yaml"
    recipe.write_text(json.dumps(STUDENT))  # JSON is YAML
    old, sys.argv = sys.argv, ["edgeproto", "distill", "--teacher", str(tmp_path / "nope"), "--recipe", str(recipe),
                               "--out", str(tmp_path / "out")]
    try:
        with pytest.raises(SystemExit) as exc:
            main()
    finally:
        sys.argv = old
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ real training (slow)


@pytest.fixture(scope="session")
def student(trained, tmp_path_factory):
    """(teacher checkpoint, student checkpoint) distilled for real across label spaces (3 → 4 classes)."""
    teacher = trained("l2_log")
    out = tmp_path_factory.mktemp("proc-kd") / "student"
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        distill(student_recipe(), teacher, out, quiet=True)
    finally:
        torch.set_num_threads(threads)
    return teacher, out


def test_student_takes_the_teachers_prototypes_across_label_spaces(student):
    from edgeproto.train.checkpoint import load_checkpoint

    teacher_dir, student_dir = student
    teacher, t_cfg = load_checkpoint(teacher_dir)
    model, cfg = load_checkpoint(student_dir)
    assert t_cfg["classes"] != cfg["classes"] and len(cfg["classes"]) == 4
    assert torch.equal(model.prototype_layer.prototypes, teacher.prototype_layer.prototypes)
    assert cfg["model"]["teacher"]["recipe"] == t_cfg["recipe"]["name"]
    m = teacher.prototype_layer.num_prototypes
    assert len(cfg["prototypes"]) == m
    for rec, t_rec in zip(cfg["prototypes"], t_cfg["prototypes"]):
        assert 0 <= rec["class"] < 4 and rec["class_name"] == cfg["classes"][rec["class"]]
        assert rec["teacher_class"] == t_rec["class"]
        if rec["patch_png"]:  # the teacher's source patch, byte for byte
            assert (student_dir / rec["patch_png"]).read_bytes() == (teacher_dir / t_rec["patch_png"]).read_bytes()
    identity = model.prototype_class_identity
    assert identity.sum(dim=1).tolist() == [1.0] * m
    assert [int(c) for c in identity.argmax(dim=1)] == [r["class"] for r in cfg["prototypes"]]
    metrics = cfg["metrics"]
    assert 0.0 <= metrics["explanation_agreement_top1"] <= 1.0 and "teacher_test_accuracy_here" not in metrics
    # the metric in the config is the metric recomputed from both models on the student's test split
    from edgeproto.data import build_dataset

    ds = build_dataset(cfg["recipe"]["data"], "test")
    x = torch.stack([torch.as_tensor(ds[i][0]) for i in range(len(ds))])
    with torch.no_grad():
        out, t_out = model(x), teacher(x)
    assert out["maps"].shape[1] == m and out["logits"].shape == (len(ds), 4)
    again = top_prototype_agreement(t_out["scores"].numpy(), out["scores"].numpy())
    assert again["top1"] == pytest.approx(metrics["explanation_agreement_top1"])


def test_student_checks_against_its_teacher(trained, tmp_path):
    teacher = trained("l2_log")
    with pytest.raises(EdgeprotoError, match="trained on 32 px"):
        distill(student_recipe(data={"image_size": 48}), teacher, tmp_path / "a", quiet=True)
    with pytest.raises(EdgeprotoError, match="set family: teacher"):
        distill(student_recipe(model={"prototypes": {"family": "cosine"}}), teacher, tmp_path / "b", quiet=True)
    with pytest.raises(EdgeprotoError, match="label spaces differ"):
        distill(student_recipe(train={"distill": {"logits": 1.0}}), teacher, tmp_path / "c", quiet=True)
    with pytest.raises(EdgeprotoError, match="is inside the teacher"):
        distill(student_recipe(), teacher, teacher / "student", quiet=True)
    assert not any((tmp_path / n).exists() for n in "abc") and not (teacher / "student").exists()


def test_student_bundle_runs_on_onnxruntime_and_openvino_and_explains(student, tmp_path):
    from edgeproto.bundle import open_bundle
    from edgeproto.device.explain import explain_image
    from edgeproto.export.bundle_writer import export_bundle
    from edgeproto.layers import prototype_nodes
    from edgeproto.runtimes.onnxruntime.runner import OnnxRuntimeRunner
    from edgeproto.runtimes.openvino.runner import OpenVinoRunner

    import onnx

    _, student_dir = student
    manifest = export_bundle(student_dir, tmp_path / "bundle", golden=8)
    assert manifest["export_check"]["passed"]
    bundle = open_bundle(tmp_path / "bundle")
    graph = onnx.load(str(bundle.path("model.onnx")))
    assert sorted(n.op_type for n in prototype_nodes(graph)) == ["CodebookSimilarity", "L2LogSimilarity"]
    golden = bundle.golden()
    path = bundle.path("model.onnx")
    for runner in (OnnxRuntimeRunner(path), OpenVinoRunner(path, precision="fp32")):
        got = runner.run(golden["image"])
        for name in ("logits", "scores", "maps"):
            ref = golden[name]
            assert np.all(np.abs(got[name] - ref) <= 1e-4 + 1e-3 * np.abs(ref)), (type(runner).__name__, name)
        assert np.array_equal(got["scores"].argmax(1), golden["scores"].argmax(1))
    from PIL import Image

    from edgeproto.data import build_dataset

    ds = build_dataset(manifest["data"], "test")
    image = tmp_path / "x.png"
    ds.source_image(0).save(image)
    result = explain_image(bundle, image, k=2)
    assert result["prediction"]["class"] == int(golden["logits"][0].argmax())
    top = result["top_prototypes"][0]
    assert top["class"] == bundle.prototypes[top["prototype"]]["class"]
    assert Image.open(bundle.path(top["patch_png"])).size[0] > 0
