"""The families added after the first four (hopfield, ...), end to end: op details the generic
tests in test_layers.py do not reach (non-default attributes, hand-computed cases), export to one
edgeproto node + its function, and fp32 parity of ONNX Runtime and OpenVINO with PyTorch
(scores within 1e-4, the same top-1 prototype on every image) on models trained for real."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgeproto.bundle import open_bundle
from edgeproto.ranking import top_prototypes
from edgeproto.export.bundle_writer import export_bundle
from edgeproto.export.onnx_graph import export_onnx
from edgeproto.layers import prototype_nodes
from edgeproto.layers import get_family
from edgeproto.runtimes.onnxruntime.runner import OnnxRuntimeRunner

ov = pytest.importorskip("openvino")
from edgeproto.runtimes.openvino.runner import OpenVinoRunner  # noqa: E402

ATOL = 1e-4


def _op(name):
    return get_family(name).torch_module.op


def _ref(name):
    return get_family(name).torch_module.reference


def _runtimes_vs_torch(onnx_path, reference: dict, images: np.ndarray, classes: np.ndarray) -> dict:
    """ORT and OpenVINO fp32 outputs vs the PyTorch ones: max |diff| of scores and logits and the
    top-1 prototype agreement, per runtime; asserts the parity contract."""
    figures = {}
    for name, runner in (("onnxruntime", OnnxRuntimeRunner(onnx_path)),
                         ("openvino", OpenVinoRunner(onnx_path, precision="fp32"))):
        out = runner.run(images)
        assert out["maps"].shape == reference["maps"].shape
        d_scores = float(np.abs(out["scores"] - reference["scores"]).max())
        d_logits = float(np.abs(out["logits"] - reference["logits"]).max())
        ref_top = top_prototypes(reference["logits"], reference["scores"], classes, 2)
        same = top_prototypes(out["logits"], out["scores"], classes, 1)[:, 0] == ref_top[:, 0]
        # an image whose two best prototypes of the same class tie in the reference (an untrained
        # toy model: all scores equal to ~1e-9) has no well-defined top-1; it is not counted
        s = np.take_along_axis(np.asarray(reference["scores"], np.float64), ref_top, axis=1)
        tied = (classes[ref_top[:, 0]] == classes[ref_top[:, 1]]) & np.isclose(s[:, 0], s[:, 1], rtol=1e-6, atol=1e-6)
        agree = float(same[~tied].mean()) if (~tied).any() else 1.0
        figures[name] = (d_scores, d_logits, agree)
        assert d_scores <= ATOL and d_logits <= ATOL and agree == 1.0, (name, figures[name])
    return figures


def _bundle_parity(checkpoint, out_dir, expected_nodes: list[str]) -> dict:
    """Export a trained checkpoint; one edgeproto node per prototype layer with its function;
    ORT and OpenVINO vs PyTorch on the bundle's golden images."""
    export_bundle(checkpoint, out_dir)
    bundle = open_bundle(out_dir)
    model = onnx.load(bundle.path("model.onnx"))
    assert [n.op_type for n in prototype_nodes(model)] == expected_nodes
    assert sorted(f.name for f in model.functions) == sorted(set(expected_nodes))
    golden = bundle.golden()
    return _runtimes_vs_torch(bundle.path("model.onnx"), golden, golden["image"], bundle.prototype_classes())


class _Net(nn.Module):
    """conv -> sigmoid features -> one prototype op with explicit attributes -> max -> linear."""

    def __init__(self, family: str, attrs: dict, dim: int = 8, m: int = 6):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Conv2d(3, dim, 3), nn.ReLU(), nn.Conv2d(dim, dim, 3))
        fam = get_family(family)
        self.family, self.attrs = fam, attrs
        params = fam.torch_module.init_params(m, dim, generator=torch.Generator().manual_seed(0))
        self.prototype_layer = nn.Module()
        for k in fam.param_names:
            self.prototype_layer.register_parameter(k, nn.Parameter(params[k]))
        self.last_layer = nn.Linear(m, 3, bias=False)

    def forward(self, image):
        z = torch.sigmoid(self.backbone(image))
        ps = [getattr(self.prototype_layer, k) for k in self.family.param_names]
        maps = self.family.torch_module.op(z, *ps, **self.attrs)
        scores = maps.amax(dim=(2, 3))
        return {"logits": self.last_layer(scores), "scores": scores, "maps": maps}


def _export_parity(tmp_path, family: str, attrs: dict) -> dict:
    model = _Net(family, attrs).eval()
    path = tmp_path / f"{family}.onnx"
    proto = export_onnx(model, torch.rand(2, 3, 12, 12), path)
    (node,) = prototype_nodes(proto)
    got = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert got == pytest.approx(attrs)
    images = np.random.default_rng(0).random((5, 3, 12, 12), dtype=np.float32)
    with torch.no_grad():
        ref = {k: v.numpy() for k, v in model(torch.from_numpy(images)).items()}
    classes = model.last_layer.weight.detach().argmax(dim=0).numpy()  # the class each prototype favours
    return _runtimes_vs_torch(path, ref, images, classes)


# ---- hopfield -----------------------------------------------------------------------------------


def test_hopfield_two_locations_by_hand():
    """β⟨p, k⟩ = 1·(1·2 + 0·0) = 2 and 1·(0) = 0 -> attention (e²/(e²+1), 1/(e²+1))."""
    z = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64).reshape(1, 2, 1, 2)
    p = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    e2 = math.exp(2.0)
    for fn in (_op("hopfield"), _ref("hopfield")):
        out = fn(z, p, beta=1.0)
        assert out.shape == (1, 1, 1, 2)
        assert out.flatten().tolist() == pytest.approx([e2 / (e2 + 1), 1 / (e2 + 1)], rel=1e-12)
    # default beta = 1/sqrt(D) = 1/sqrt(2)
    a = math.exp(2.0 / math.sqrt(2.0))
    assert _op("hopfield")(z, p).flatten()[0].item() == pytest.approx(a / (a + 1), rel=1e-12)
    # two steps: q1 = A K = (2·w, 1 - w); attention of q1 over the two keys
    w = e2 / (e2 + 1)
    s = np.array([2 * w * 2, (1 - w) * 1.0])
    expected = np.exp(s) / np.exp(s).sum()
    got = _op("hopfield")(z, p, beta=1.0, steps=2.0).flatten().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("attrs", [{"beta": 0.7, "steps": 3.0}, {"beta": 0.0, "steps": 2.0}])
def test_hopfield_iterative_gradients_and_onnx(attrs):
    g = torch.Generator().manual_seed(0)
    z = torch.rand(2, 4, 3, 5, generator=g, dtype=torch.float64) * 2 - 0.5
    p = torch.randn(6, 4, generator=g, dtype=torch.float64)
    args = (z.requires_grad_(), p.requires_grad_())
    fn = lambda z, p: _op("hopfield")(z, p, **attrs)  # noqa: E731
    assert torch.autograd.gradcheck(fn, args)
    out = fn(*args)
    grads = torch.autograd.grad(out, args, out.detach().cos())
    ref = _ref("hopfield")(*args, **attrs)
    ref_grads = torch.autograd.grad(ref, args, out.detach().cos())
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)
    torch.library.opcheck(_op("hopfield"), (z.float().detach(), p.float().detach()), attrs)
    got = np.asarray(get_family("hopfield").onnx_function(z.float().detach().numpy(), p.float().detach().numpy(),
                                                          **attrs))
    np.testing.assert_allclose(got, out.detach().float().numpy(), rtol=0, atol=1e-6)
    assert np.allclose(got.sum(axis=(2, 3)), 1.0, atol=1e-5)


def test_hopfield_bad_steps_rejected():
    z, p = torch.rand(1, 2, 2, 2), torch.rand(3, 2)
    for steps in (0.0, 1.5):
        with pytest.raises(ValueError, match="steps"):
            _op("hopfield")(z, p, steps=steps)


def test_hopfield_steps_export_and_runtimes(tmp_path):
    """A fixed 3-step model: a Loop with constant trip count in ONNX, unrolled by the OpenVINO
    converter; both match PyTorch."""
    figures = _export_parity(tmp_path, "hopfield", {"beta": 0.3, "steps": 3.0})
    print(f"\nhopfield steps=3: {figures}")


def test_hopfield_trained_bundle_parity(trained, tmp_path):
    figures = _bundle_parity(trained("hopfield"), tmp_path / "b", ["HopfieldRetrieval"])
    print(f"\nhopfield trained: {figures}")


# ---- tversky ------------------------------------------------------------------------------------


def _tversky_inputs(seed=0, dtype=torch.float64, f=5):
    g = torch.Generator().manual_seed(seed)
    z = torch.rand(2, 4, 3, 5, generator=g, dtype=dtype) * 2 - 0.5
    params = get_family("tversky").torch_module.init_params(6, 4, generator=g, num_features=f)
    params = {k: (v + 0.3 * torch.randn(v.shape, generator=g)).to(dtype) for k, v in params.items()}
    return z, params


def test_tversky_terms_and_hard_limit():
    """The rearranged op equals the three terms written out; as τ → 0 it is the hard rule
    θ·Σ ab[a>0][b>0] − α·Σ a[a>0][b≤0] − β·Σ b[b>0][a≤0]."""
    tm = get_family("tversky").torch_module
    z, params = _tversky_inputs(f=7)
    args = (z, *params.values())
    torch.testing.assert_close(tm.reference(*args, tau=0.3), tm.term_by_term(*args, tau=0.3))
    a = torch.einsum("bdhw,fd->bfhw", z, params["feature_bank"])[:, None]
    b = (params["prototypes"] @ params["feature_bank"].t())[None, :, :, None, None]
    pa, pb = (a > 0).double(), (b > 0).double()
    m = lambda t: t[None, :, None, None]  # noqa: E731
    hard = (m(params["theta"]) * (a * b * pa * pb).sum(2) - m(params["alpha"]) * (a * pa * (1 - pb)).sum(2)
            - m(params["beta"]) * (b * pb * (1 - pa)).sum(2))
    assert a.abs().min() > 1e-3 and b.abs().min() > 1e-3  # away from the switch
    torch.testing.assert_close(_op("tversky")(*args, tau=1e-5), hard, rtol=1e-9, atol=1e-9)


def test_tversky_nondefault_tau_gradients_and_onnx():
    z, params = _tversky_inputs(seed=1, f=3)  # F != M: the bank size is free
    args = tuple(t.requires_grad_() for t in (z, *params.values()))
    fn = lambda *t: _op("tversky")(*t, tau=0.5)  # noqa: E731
    assert torch.autograd.gradcheck(fn, args)
    out = fn(*args)
    got = np.asarray(get_family("tversky").onnx_function(*[t.detach().float().numpy() for t in args], tau=0.5))
    np.testing.assert_allclose(got, out.detach().float().numpy(), rtol=0, atol=1e-5)


def test_tversky_prototype_layer_trained_bundle_parity(trained, tmp_path):
    figures = _bundle_parity(trained("tversky"), tmp_path / "b", ["TverskySimilarity"])
    print(f"\ntversky layer trained: {figures}")


def test_tversky_head_trained_bundle_parity(trained, tmp_path):
    """``model.head: tversky``: logits are Tversky similarities of the pooled scores to the class
    prototypes -- one more edgeproto node (after the prototype layer's), with its function."""
    from edgeproto.train.checkpoint import load_checkpoint

    ckpt = trained("l2_log", model={"head": "tversky", "head_features": 4, "head_attrs": {"tau": 0.2}})
    model, _ = load_checkpoint(ckpt)
    assert model.head == "tversky" and model.last_layer.feature_bank.shape == (4, 6)
    figures = _bundle_parity(ckpt, tmp_path / "b", ["L2LogSimilarity", "TverskySimilarity"])
    (node,) = [n for n in prototype_nodes(onnx.load(tmp_path / "b" / "model.onnx")) if n.op_type == "TverskySimilarity"]
    assert list(node.input[1:]) == [f"last_layer.{p}" for p in get_family("tversky").param_names]
    assert {a.name: a.f for a in node.attribute} == pytest.approx({"tau": 0.2})
    print(f"\ntversky head trained: {figures}")


def test_head_recipe_errors():
    from edgeproto.errors import EdgeprotoError

    from conftest import tiny_recipe

    with pytest.raises(EdgeprotoError, match="model.head"):
        tiny_recipe(model={"head": "mlp"})
    with pytest.raises(EdgeprotoError, match="need model.head: tversky"):
        tiny_recipe(model={"head_features": 3})
    with pytest.raises(EdgeprotoError, match="train.push"):
        tiny_recipe(push="sometimes")
    with pytest.raises(EdgeprotoError, match="rule"):
        from edgeproto.data import build_dataset

        build_dataset({"name": "procedural", "rule": "and"}, "train")


def test_xor_rule_data():
    """Rule xor: two classes; exactly one of circle/square present <=> class 1; always two shapes."""
    from edgeproto.data import build_dataset

    ds = build_dataset({"name": "procedural", "rule": "xor", "image_size": 32, "train_size": 24}, "train")
    assert ds.classes == ["none_or_both", "exactly_one"]
    for i in range(len(ds)):
        present = ds.part_masks(i).any(axis=(1, 2))
        assert present.sum() == 2
        assert int(present[0] != present[1]) == int(ds.labels[i])  # circle xor square


@pytest.mark.slow
def test_tversky_head_learns_xor_where_linear_cannot():
    """Part-presence scores of two parts (+ noise, + two irrelevant parts), class = exactly one
    present: the linear head stays near chance, the Tversky head fits the rule
    (benchmarks/tversky_xor.py measures the same on images)."""
    from edgeproto.models import TverskyHead

    g = torch.Generator().manual_seed(0)
    n = 512
    present = torch.randint(0, 2, (n, 4), generator=g).float()
    x = present * 4.0 + 0.5 + 0.3 * torch.randn(n, 4, generator=g)  # like l2_log scores: > 0
    y = (present[:, 0] != present[:, 1]).long()

    def fit(head, steps=400):
        torch.manual_seed(0)
        opt = torch.optim.Adam(head.parameters(), lr=2e-2)
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(head(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return (head(x).argmax(1) == y).float().mean().item()

    torch.manual_seed(0)
    linear = fit(nn.Linear(4, 2))
    torch.manual_seed(0)
    tversky = fit(TverskyHead(4, 2, num_features=8, attrs={"tau": 0.1}))
    print(f"\nXOR on presence scores: linear {linear:.3f}, tversky {tversky:.3f}")
    assert linear < 0.8 and tversky > 0.95


# ---- codebook (ProtoQuant) ----------------------------------------------------------------------


def test_codebook_two_codes_by_hand_and_aux_loss():
    """z = (1, 0) against codes (2, 0) and (0, 3): cos = (1, 0) -> softmax((10, 0)) at τ = 0.1."""
    z = torch.tensor([1.0, 0.0], dtype=torch.float64).reshape(1, 2, 1, 1)
    codes = torch.tensor([[2.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    e = math.exp(10.0)
    for fn in (_op("codebook"), _ref("codebook")):
        assert fn(z, codes).flatten().tolist() == pytest.approx([e / (e + 1), 1 / (e + 1)], rel=1e-12)
    got = np.asarray(get_family("codebook").onnx_function(z.float().numpy(), codes.float().numpy(), tau=0.5))
    np.testing.assert_allclose(got.flatten(), _op("codebook")(z, codes, tau=0.5).flatten().numpy(), atol=1e-6)
    # VQ loss: nearest code of z=(1,1)/√2 is (2, 0) (tie broken to the first): 1 − cos = 1 − 1/√2,
    # codebook term + 0.25 × commitment term; the codebook term moves only the code, the
    # commitment term only z
    aux = get_family("codebook").torch_module.auxiliary_loss
    z2 = torch.tensor([1.0, 1.0], dtype=torch.float64).reshape(1, 2, 1, 1).requires_grad_()
    c2 = codes.clone().requires_grad_()
    loss = aux(z2, c2)
    assert loss.item() == pytest.approx(1.25 * (1 - 1 / math.sqrt(2)), rel=1e-12)
    loss.backward()
    assert c2.grad[1].abs().sum() == 0 and c2.grad[0].abs().sum() > 0 and z2.grad.abs().sum() > 0


def test_codebook_gradients_nondefault_tau():
    g = torch.Generator().manual_seed(3)
    z = (torch.rand(2, 4, 3, 5, generator=g, dtype=torch.float64) - 0.3).requires_grad_()
    c = torch.randn(6, 4, generator=g, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda z, c: _op("codebook")(z, c, tau=0.37), (z, c))


def test_codebook_frozen_backbone_prune_and_parity(trained, tmp_path):
    """ProtoQuant recipe shape on the tiny data: start from a ProtoPNet checkpoint (its backbone,
    add-on and prototypes as initial codes), backbone frozen (weights and BatchNorm statistics),
    non-negative class weights, codes that never win pruned; ORT and OpenVINO match PyTorch."""
    from edgeproto.train.checkpoint import load_checkpoint, read_config

    source = trained("l2_log")
    ckpt = trained("codebook", model={"head": "nonneg"}, init_from=str(source), freeze_backbone=True,
                   prune_unused=True, push="visualize")
    model, config = load_checkpoint(ckpt)
    src, _ = load_checkpoint(source)
    for (name, a), b in zip(model.backbone.state_dict().items(), src.backbone.state_dict().values()):
        assert torch.equal(a, b), f"frozen backbone changed: {name}"
    assert config["init_from_copied"] == ["add_on", "backbone", "prototype_layer"]
    assert not torch.equal(model.add_on[0].weight, src.add_on[0].weight)  # the add-on trains
    pruned = config["pruned_prototypes"]
    assert [p["index"] for p in config["prototypes"] if p["pruned"]] == pruned
    assert all((p["wins"] == 0) == p["pruned"] for p in config["prototypes"])
    weights = model.class_weights()
    assert (weights >= 0).all() and (weights[:, pruned] == 0).all()
    with torch.no_grad():  # ReLU in the forward: negative raw weights contribute nothing
        model.last_layer.weight[0, 0] = -5.0
        x = torch.rand(2, 3, 32, 32)
        ref = model(x)["scores"] @ torch.relu(model.last_layer.weight).t()
        torch.testing.assert_close(model(x)["logits"], ref)
    figures = _bundle_parity(ckpt, tmp_path / "b", ["CodebookSimilarity"])
    print(f"\ncodebook trained (pruned {pruned}): {figures}")
    assert read_config(ckpt)["recipe"]["train"]["freeze_backbone"] is True


def test_init_from_must_be_a_checkpoint(tmp_path):
    from edgeproto.errors import EdgeprotoError
    from edgeproto.train import train

    from conftest import tiny_recipe

    (tmp_path / "src").mkdir()
    with pytest.raises(EdgeprotoError, match="config.json"):
        train(tiny_recipe(init_from=str(tmp_path / "src")), tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()
    with pytest.raises(EdgeprotoError, match="inside the init_from checkpoint"):  # never write into the source
        train(tiny_recipe(init_from=str(tmp_path / "src")), tmp_path / "src" / "out", quiet=True)


# ---- cbr_ae (Li et al. 2018) ----------------------------------------------------------------------

CBR_MODEL = {"arch": "cbr_ae", "backbone": {"name": "cbr_encoder", "width": 8, "latent_channels": 4, "stages": 4}}


def test_cbr_loss_terms_by_hand():
    """R1 = mean over prototypes of the min over the batch of d, R2 = mean over the batch of the min
    over prototypes; d = squared distance = −score for cbr_ae; reconstruction = per-image sum of
    squared errors, mean over the batch (Li et al.'s ae_error: 4 pixels × 0.25 = 1.0 here)."""
    from types import SimpleNamespace

    from edgeproto.models import PrototypeLayer
    from edgeproto.train.losses import cbr_loss

    d = torch.tensor([[1.0, 4.0, 9.0], [2.0, 0.5, 7.0]])  # (B=2, M=3)
    model = SimpleNamespace(prototype_layer=PrototypeLayer("cbr_ae", 3, 2))
    out = {"scores": -d, "logits": torch.zeros(2, 2), "reconstruction": torch.full((2, 1, 2, 2), 0.5)}
    coefs = {"crs_ent": 1.0, "recon": 2.0, "r1": 3.0, "r2": 5.0}
    total, parts = cbr_loss(out, torch.zeros(2, 1, 2, 2), torch.tensor([0, 1]), model, coefs)
    r1, r2 = (1.0 + 0.5 + 7.0) / 3, (1.0 + 0.5) / 2
    assert parts["r1"] == pytest.approx(r1) and parts["r2"] == pytest.approx(r2)
    assert parts["recon"] == pytest.approx(1.0) and parts["ce"] == pytest.approx(math.log(2))
    assert total.item() == pytest.approx(math.log(2) + 2 * 1.0 + 3 * r1 + 5 * r2)


def test_cbr_ae_trained_pictures_and_parity(trained, tmp_path):
    """Encoder → 16-dim code → NegSquaredDistance (maps (B,M,1,1)) → linear; each prototype's
    picture in the checkpoint and the bundle is its decoder rendering."""
    from PIL import Image

    from edgeproto.train.checkpoint import load_checkpoint

    ckpt = trained("cbr_ae", model=CBR_MODEL)
    model, config = load_checkpoint(ckpt)
    assert type(model).__name__ == "CbrAutoencoderNet" and model.latent_dim == 16
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
    assert out["maps"].shape == (3, 6, 1, 1) and set(out) == {"logits", "scores", "maps"}
    d = ((model.features(x)[:, None, :, 0, 0] - model.prototype_layer.prototypes[None]) ** 2).sum(-1)
    torch.testing.assert_close(out["scores"], -d)
    rendered = (model.render_prototypes().permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    for rec in config["prototypes"]:
        assert rec["picture"] == "decoder" and rec["patch_box"] == [0, 0, 32, 32]
        png = np.asarray(Image.open(ckpt / rec["patch_png"]).convert("RGB"))
        np.testing.assert_array_equal(png, rendered[rec["index"]])
    figures = _bundle_parity(ckpt, tmp_path / "b", ["NegSquaredDistance"])
    bundle = open_bundle(tmp_path / "b")
    for rec in bundle.manifest["prototypes"]:  # the rendered pictures travel with the bundle
        assert (tmp_path / "b" / rec["patch_png"]).read_bytes() == (ckpt / rec["patch_png"]).read_bytes()
    print(f"\ncbr_ae trained: {figures}")


def test_cbr_ae_recipe_errors():
    from edgeproto.errors import EdgeprotoError
    from edgeproto.models import create_model

    from conftest import tiny_recipe

    with pytest.raises(EdgeprotoError, match="cbr_encoder"):
        tiny_recipe("cbr_ae", model={"arch": "cbr_ae"})
    with pytest.raises(EdgeprotoError, match="model.arch"):
        tiny_recipe(model={"arch": "vae"})
    cfg = {"num_classes": 3, "image_size": 32, "arch": "cbr_ae", "backbone": CBR_MODEL["backbone"],
           "prototypes": {"family": "cbr_ae", "per_class": 1, "dim": 40}}
    with pytest.raises(EdgeprotoError, match="must equal the encoding size"):
        create_model(cfg)
