"""The trainer for real: push, checkpoints, resume after a kill, torchrun, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from edgeproto.data import build_dataset
from edgeproto.errors import EdgeprotoError
from edgeproto.train.checkpoint import load_checkpoint

from conftest import TINY_RECIPE, tiny_recipe

BIN = Path(sys.executable).parent


def run_cli(*args, timeout=300):
    return subprocess.run([str(BIN / "edgeproto"), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.parametrize("family", ["l2_log", "hyperpg"])
def test_every_prototype_is_a_training_patch_of_its_class(trained, family):
    model, config = load_checkpoint(trained(family))
    train_set = build_dataset(config["recipe"]["data"], "train")
    centers = model.prototype_layer.centers.detach()
    assert len(config["prototypes"]) == centers.shape[0]
    for rec in config["prototypes"]:
        x, label = train_set[rec["source_image"]]
        assert label == rec["class"] == int(model.prototype_classes[rec["index"]])
        with torch.no_grad():
            z = model.features(x[None])[0]
        h, w = rec["latent_hw"]
        torch.testing.assert_close(centers[rec["index"]], z[:, h, w], rtol=0, atol=1e-6)
        x0, y0, x1, y1 = rec["patch_box"]
        assert 0 <= x0 < x1 <= 32 and 0 <= y0 < y1 <= 32


def test_checkpoint_contents_and_info(trained):
    ckpt = trained("l2_log")
    assert {p.name for p in ckpt.iterdir()} == {"config.json", "model.safetensors", "prototypes"}
    assert len(list((ckpt / "prototypes").glob("*.png"))) == 6
    result = run_cli("info", ckpt, "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["op"] == "edgeproto::L2LogSimilarity" and info["num_prototypes"] == 6
    assert 0.0 <= info["metrics"]["test_accuracy"] <= 1.0
    assert info["classes"] == ["circle+square", "triangle+cross", "circle+stripes"]


@pytest.mark.slow
def test_training_learns(tmp_path):
    """Ten digit classes after a few seconds of training: far above chance (0.1). The full recipes'
    accuracies (≥ 95 %) are measured by `make demo` and recorded in the model cards."""
    raw = {
        "name": "learns",
        "data": {"name": "digits", "image_size": 16},
        "model": {"backbone": {"name": "small_cnn", "width": 16, "stages": 1},
                  "prototypes": {"family": "l2_log", "per_class": 1, "dim": 16}},
        "train": {"batch_size": 32, "warm_epochs": 0, "joint_epochs": 5, "last_layer_epochs": 5,
                  "lr": {"backbone": 3e-3, "add_on": 3e-3, "prototypes": 3e-3, "last_layer": 5e-3}},
    }
    result = run_cli("train", "--recipe", write_recipe(tmp_path / "r.yaml", raw), "--out", tmp_path / "o", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["metrics"]["test_accuracy"] >= 0.4


@pytest.mark.slow
def test_resume_after_kill(tmp_path):
    recipe = tiny_recipe("l2_log", joint_epochs=30)
    path = write_recipe(tmp_path / "r.yaml", recipe)
    out = tmp_path / "run"
    proc = subprocess.Popen([str(BIN / "edgeproto"), "train", "--recipe", str(path), "--out", str(out), "--quiet"])
    deadline = time.monotonic() + 120
    while not (out / "resume.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "resume.pt").exists() and not (out / "config.json").exists()
    state = torch.load(out / "resume.pt", weights_only=True)
    assert (state["stage"], state["epoch"]) < (2, 0)
    result = run_cli("train", "--recipe", path, "--out", out, "--json")
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stderr
    assert (out / "config.json").exists() and not (out / "resume.pt").exists()
    load_checkpoint(out)


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe("l2_log"))
    out = tmp_path / "ddp"
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", "-m", "edgeproto.cli",
           "train", "--recipe", str(path), "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    model, config = load_checkpoint(out)
    assert config["world_size"] == 2
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "prototypes"}


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r["model"]["prototypes"].pop("family"), "missing required key 'model.prototypes.family'"),
        (lambda r: r["train"].update(epochs=3), "unknown recipe key(s) train.epochs"),
        (lambda r: r["data"].update(colour="red"), "colour"),
        (lambda r: r["data"].update(name="imagenet"), "imagenet"),
        (lambda r: r["data"].update(image_size=6), "image_size"),
        (lambda r: r["model"]["backbone"].update(stages=6), "smaller than the backbone's stride 64"),
        (lambda r: r["model"]["backbone"].update(depth=50), "depth"),
        (lambda r: r.update(data={"name": "folder", "root": "/nonexistent/folder"}), "/nonexistent/folder"),
    ],
)
def test_bad_recipes_fail_cleanly(tmp_path, mutate, message):
    raw = json.loads(json.dumps(TINY_RECIPE))
    raw["model"]["prototypes"]["family"] = "l2_log"
    mutate(raw)
    result = run_cli("train", "--recipe", write_recipe(tmp_path / "r.yaml", raw), "--out", tmp_path / "o")
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_missing_recipe_and_empty_folder(tmp_path):
    result = run_cli("train", "--recipe", tmp_path / "nope.yaml", "--out", tmp_path / "o")
    assert result.returncode == 2 and "recipe not found" in result.stderr
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    raw = {"name": "f", "data": {"name": "folder", "root": str(tmp_path / "imgs")},
           "model": {"prototypes": {"family": "l2_log"}}}
    result = run_cli("train", "--recipe", write_recipe(tmp_path / "r.yaml", raw), "--out", tmp_path / "o")
    assert result.returncode == 2 and "Traceback" not in result.stderr and str(tmp_path / "imgs") in result.stderr
    assert not (tmp_path / "o").exists()


def test_truncated_checkpoint(trained, tmp_path):
    import shutil

    ckpt = tmp_path / "c"
    shutil.copytree(trained("l2_log"), ckpt)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(EdgeprotoError, match="corrupt or truncated"):
        load_checkpoint(ckpt)
    result = run_cli("export", ckpt, "-o", tmp_path / "b")
    assert result.returncode == 2 and "corrupt or truncated" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "b").exists()
    (ckpt / "config.json").unlink()
    result = run_cli("info", ckpt)
    assert result.returncode == 2 and "config.json is missing" in result.stderr


def test_finished_checkpoint_is_not_overwritten(trained, tmp_path):
    import shutil

    ckpt = tmp_path / "c"
    shutil.copytree(trained("l2_log"), ckpt)
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe("l2_log"))
    result = run_cli("train", "--recipe", path, "--out", ckpt)
    assert result.returncode == 2 and "--force" in result.stderr
