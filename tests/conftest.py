"""Shared fixtures: small models trained for real, once per test session."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from edgeproto.train import train, validate_recipe

TRAIN_THREADS = 2

TINY_RECIPE = {
    "name": "tiny",
    "seed": 0,
    "data": {"name": "procedural", "image_size": 32, "num_classes": 3, "train_size": 96, "test_size": 64},
    "model": {"backbone": {"name": "small_cnn", "width": 8, "stages": 2}, "prototypes": {"per_class": 2, "dim": 16}},
    "train": {"batch_size": 32, "warm_epochs": 1, "joint_epochs": 2, "last_layer_epochs": 2},
}


def tiny_recipe(family: str = "l2_log", *, model: dict | None = None, data: dict | None = None,
                **train_overrides) -> dict:
    """A recipe that trains in seconds (accuracy is not its point; the pipeline is). ``model`` and
    ``data`` update those sections (e.g. ``model={"head": "tversky"}``)."""
    raw = copy.deepcopy(TINY_RECIPE)
    raw["name"] = f"tiny-{family}"
    raw["model"]["prototypes"]["family"] = family
    raw["model"].update(model or {})
    raw["data"].update(data or {})
    raw["train"].update(train_overrides)
    return validate_recipe(raw)


def pytest_collection_modifyitems(config, items):
    """Every test that uses a trained model (the ``trained`` fixture, directly or through another
    fixture) is ``slow``: ``pytest -m "not slow"`` is the fast loop."""
    for item in items:
        if "trained" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """``trained(family)`` → path of a checkpoint trained for real on tiny procedural data (cached).
    Keyword arguments go to :func:`tiny_recipe` (``model=``, ``data=``, train keys)."""
    cache: dict[str, Path] = {}

    def get(family: str = "l2_log", **overrides) -> Path:
        key = family + (repr(sorted(overrides.items())) if overrides else "")
        if key not in cache:
            out = tmp_path_factory.mktemp(f"ckpt-{family}")
            # the same thread count on every machine: training is bit-reproducible for a fixed count
            # (two runs: identical weights) but not across counts (1 vs 2 threads: 2.4e-7 apart)
            threads = torch.get_num_threads()
            torch.set_num_threads(TRAIN_THREADS)
            try:
                train(tiny_recipe(family, **overrides), out, force=True, quiet=True)
            finally:
                torch.set_num_threads(threads)
            cache[key] = out
        return cache[key]

    return get


@pytest.fixture(scope="session", autouse=True)
def _bundle_cache(tmp_path_factory):
    """Zipped bundles are extracted under a session folder, not the user's ~/.cache."""
    import os

    old = os.environ.get("EDGEPROTO_CACHE")
    os.environ["EDGEPROTO_CACHE"] = str(tmp_path_factory.mktemp("edgeproto-cache"))
    yield
    if old is None:
        os.environ.pop("EDGEPROTO_CACHE", None)
    else:
        os.environ["EDGEPROTO_CACHE"] = old
