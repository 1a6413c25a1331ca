"""Every registered runtime keeps the runner contract (edgeproto.runner_contract.Runner) on a real bundle."""

from __future__ import annotations

import numpy as np
import pytest

from edgeproto.bundle import open_bundle
from edgeproto.export.bundle_writer import export_bundle
from edgeproto.outputs import OUTPUTS, golden_tolerance
from edgeproto.runtimes import RUNTIMES, Runner, load_runner
from edgeproto.runtimes.compile import compile_bundle
from edgeproto.runner_contract import INFO_KEYS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("contract") / "b"
    export_bundle(trained("l2_log"), out, golden=6)
    return open_bundle(out)


@pytest.mark.parametrize("name", sorted(RUNTIMES))
def test_runner_contract(bundle, name):
    spec = RUNTIMES[name]
    if spec.missing():
        pytest.skip(f"{name} is not installed here ({', '.join(spec.missing())})"
                    + ("; it needs a CUDA GPU, which this machine lacks" if spec.devices == "GPU" else ""))
    if spec.requires_compile and f"{spec.artifact_target}-fp32" not in bundle.manifest.get("compiled", {}):
        compile_bundle(bundle.root, target=spec.artifact_target, precision="fp32", progress=False)
        bundle = open_bundle(bundle.root)
    runner = load_runner(bundle, name, "fp32", threads=1)
    try:
        assert isinstance(runner, Runner)
        assert runner.name == name and runner.version and runner.precision == "fp32"
        desc = runner.describe()
        assert [o["name"] for o in desc["outputs"]] == list(OUTPUTS)
        assert len(desc["inputs"]) == 1 and desc["inputs"][0]["shape"][1:] == [3, *[
            int(bundle.manifest["preprocess"]["image_size"])] * 2]
        golden = bundle.golden()
        tol = golden_tolerance("fp32")
        for batch in (1, 4):
            out = runner.run(golden["image"][:batch])
            assert set(OUTPUTS) <= set(out)
            for o in OUTPUTS:
                assert isinstance(out[o], np.ndarray) and out[o].shape == golden[o][:batch].shape
                np.testing.assert_allclose(out[o], golden[o][:batch], atol=tol["atol"], rtol=tol["rtol"])
        info = runner.info()
        assert tuple(info)[: len(INFO_KEYS)] == INFO_KEYS
        assert (info["name"], info["precision"], info["threads"]) == (name, "fp32", 1)
        assert isinstance(info["device"], str) and info["device"]
    finally:
        runner.close()


def test_torch_runner_gives_back_its_threads(bundle):
    import torch

    before = torch.get_num_threads()
    runner = load_runner(bundle, "torch", threads=1)
    assert torch.get_num_threads() == 1
    runner.close()
    assert torch.get_num_threads() == before


def test_host_only_runtime_refuses_reduced_precision(bundle):
    from edgeproto.errors import EdgeprotoError

    with pytest.raises(EdgeprotoError, match="not supported by target 'torch'.*fp32 PyTorch reference"):
        load_runner(bundle, "torch", "int8")
