"""``edgeproto import protopnet``: checkpoints saved by the official ProtoPNet code come in safely and
give the same outputs.

The official network (github cfchen-duke/ProtoPNet: ``model.py``, ``resnet_features.py``,
``vgg_features.py``, ``densenet_features.py``) is re-written below from that code, under the
official module names (``model.PPNet``, ``resnet_features.BasicBlock``, …), so ``torch.save(model)``
writes the same whole-module pickle as the official ``save.py``. Its forward (expanded-form
``_l2_convolution``, min-pool, log activation, last layer) is the reference for edgeproto's outputs.
"""

from __future__ import annotations

import os
import sys
import types
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeproto.errors import EdgeprotoError
from edgeproto.layers.l2_log.torch_op import squared_distances
from edgeproto.train.checkpoint import load_checkpoint, read_config
from edgeproto.train.protopnet_import import import_protopnet

RTOL, ATOL = 1e-5, 1e-6
pytestmark = pytest.mark.filterwarnings("ignore:Couldn.t retrieve source code:UserWarning")  # legacy torch.save of test classes
SIZE = 64


# ----------------------------------------------------------------- the official code, re-written
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet_features(nn.Module):
    def __init__(self, block, layers):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.block, self.layers = block, layers  # a class reference in the pickle, as the official one
        self.kernel_sizes, self.strides, self.paddings = [7, 3], [2, 2], [3, 1]
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def __repr__(self):
        return "resnet_features"


class VGG_features(nn.Module):
    def __init__(self, cfg, batch_norm=False):
        super().__init__()
        self.batch_norm = batch_norm
        layers, c = [], 3
        for v in cfg:
            if v == "M":
                layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
            else:
                conv = nn.Conv2d(c, v, kernel_size=3, padding=1)
                layers += [conv, nn.BatchNorm2d(v), nn.ReLU(inplace=True)] if batch_norm else [conv, nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)

    def forward(self, x):
        return self.features(x)

    def __repr__(self):
        return "VGG"


class _DenseLayer(nn.Sequential):
    def __init__(self, cin, growth, bn_size, drop_rate):
        super().__init__()
        self.add_module("norm1", nn.BatchNorm2d(cin))
        self.add_module("relu1", nn.ReLU(inplace=True))
        self.add_module("conv1", nn.Conv2d(cin, bn_size * growth, 1, 1, bias=False))
        self.add_module("norm2", nn.BatchNorm2d(bn_size * growth))
        self.add_module("relu2", nn.ReLU(inplace=True))
        self.add_module("conv2", nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False))
        self.drop_rate = drop_rate

    def forward(self, x):
        return torch.cat([x, super().forward(x)], 1)


class _DenseBlock(nn.Sequential):
    def __init__(self, num_layers, cin, bn_size, growth, drop_rate):
        super().__init__()
        for i in range(num_layers):
            self.add_module("denselayer%d" % (i + 1), _DenseLayer(cin + i * growth, growth, bn_size, drop_rate))


class _Transition(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__()
        self.add_module("norm", nn.BatchNorm2d(cin))
        self.add_module("relu", nn.ReLU(inplace=True))
        self.add_module("conv", nn.Conv2d(cin, cout, 1, 1, bias=False))
        self.add_module("pool", nn.AvgPool2d(kernel_size=2, stride=2))


class DenseNet_features(nn.Module):
    def __init__(self, growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64, bn_size=4):
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv0", nn.Conv2d(3, num_init_features, 7, 2, 3, bias=False)),
            ("norm0", nn.BatchNorm2d(num_init_features)),
            ("relu0", nn.ReLU(inplace=True)),
            ("pool0", nn.MaxPool2d(3, 2, 1)),
        ]))
        c = num_init_features
        for i, n in enumerate(block_config):
            self.features.add_module("denseblock%d" % (i + 1), _DenseBlock(n, c, bn_size, growth_rate, 0))
            c += n * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module("transition%d" % (i + 1), _Transition(c, c // 2))
                c //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(c))
        self.features.add_module("final_relu", nn.ReLU(inplace=True))

    def forward(self, x):
        return self.features(x)

    def __repr__(self):
        return "densenet_features"


class PPNet(nn.Module):
    def __init__(self, features, img_size, prototype_shape, num_classes, add_on_layers_type="bottleneck"):
        super().__init__()
        self.img_size, self.prototype_shape = img_size, prototype_shape
        self.num_prototypes, self.num_classes = prototype_shape[0], num_classes
        self.epsilon = 1e-4
        self.prototype_activation_function = "log"
        self.prototype_class_identity = torch.zeros(self.num_prototypes, num_classes)
        per_class = self.num_prototypes // num_classes
        for j in range(self.num_prototypes):
            self.prototype_class_identity[j, j // per_class] = 1
        self.proto_layer_rf_info = [7, 32, 123, 16.0]
        self.features = features
        name = str(features).upper()
        if name.startswith("VGG") or name.startswith("RES"):
            cin = [m for m in features.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
        else:
            cin = [m for m in features.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features
        d = prototype_shape[1]
        if add_on_layers_type == "bottleneck":
            layers, c = [], cin
            while c > d or not layers:
                out = max(d, c // 2)
                layers += [nn.Conv2d(c, out, 1), nn.ReLU(), nn.Conv2d(out, out, 1),
                           nn.ReLU() if out > d else nn.Sigmoid()]
                c //= 2
            self.add_on_layers = nn.Sequential(*layers)
        else:
            self.add_on_layers = nn.Sequential(nn.Conv2d(cin, d, 1), nn.ReLU(), nn.Conv2d(d, d, 1), nn.Sigmoid())
        self.prototype_vectors = nn.Parameter(torch.rand(prototype_shape))
        self.ones = nn.Parameter(torch.ones(prototype_shape), requires_grad=False)
        self.last_layer = nn.Linear(self.num_prototypes, num_classes, bias=False)

    def _l2_convolution(self, x):
        x2_patch_sum = F.conv2d(x**2, weight=self.ones)
        p2 = torch.sum(self.prototype_vectors**2, dim=(1, 2, 3)).view(-1, 1, 1)
        xp = F.conv2d(x, weight=self.prototype_vectors)
        return F.relu(x2_patch_sum + (-2 * xp + p2))

    def forward(self, x):
        distances = self._l2_convolution(self.add_on_layers(self.features(x)))
        min_distances = -F.max_pool2d(-distances, kernel_size=(distances.size(2), distances.size(3)))
        min_distances = min_distances.view(-1, self.num_prototypes)
        activations = torch.log((min_distances + 1) / (min_distances + self.epsilon))
        return self.last_layer(activations), min_distances


OFFICIAL = {"model": [PPNet], "resnet_features": [BasicBlock, Bottleneck, ResNet_features],
            "vgg_features": [VGG_features],
            "densenet_features": [DenseNet_features, _DenseBlock, _DenseLayer, _Transition]}


@pytest.fixture(autouse=True)
def official_modules(monkeypatch):
    """The official module names, so pickle writes ``model.PPNet`` etc. (as the official save.py)."""
    for name, classes in OFFICIAL.items():
        module = types.ModuleType(name)
        for cls in classes:
            cls.__module__ = name
            setattr(module, cls.__name__, cls)
        monkeypatch.setitem(sys.modules, name, module)


def official_model(arch: str, add_on: str, classes: int = 3, per_class: int = 4, dim: int = 32) -> PPNet:
    features = {
        "resnet18": lambda: ResNet_features(BasicBlock, [2, 2, 2, 2]),
        "resnet50": lambda: ResNet_features(Bottleneck, [3, 4, 6, 3]),
        "vgg11_bn": lambda: VGG_features([64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"], True),
        "densenet121": lambda: DenseNet_features(32, (6, 12, 24, 16), 64),
    }[arch]()
    torch.manual_seed(0)
    model = PPNet(features, SIZE, (classes * per_class, dim, 1, 1), classes, add_on)
    with torch.no_grad():  # trained-looking statistics, so every BatchNorm matters
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        model.last_layer.weight.normal_()
    return model.eval()


def assert_close(actual, ref, what):
    err = (actual - ref).abs()
    bound = ATOL + RTOL * ref.abs()
    assert bool((err <= bound).all()), f"{what}: max abs {err.max():.3g}, worst err/bound {(err / bound).max():.3g}"


def check_same_outputs(official: PPNet, ckpt) -> None:
    model, _ = load_checkpoint(ckpt)
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref_logits, ref_min = official(x)
        out = model(x)
        ours_min = squared_distances(model.features(x), model.prototype_layer.prototypes).amin(dim=(2, 3))
    assert_close(out["logits"], ref_logits, "logits")
    assert_close(ours_min, ref_min, "min distances")
    assert_close(out["scores"], torch.log((ref_min + 1) / (ref_min + 1e-4)), "prototype activations")


@pytest.mark.parametrize("arch, add_on, legacy", [
    ("resnet18", "regular", False),
    ("resnet50", "bottleneck", True),
    ("vgg11_bn", "bottleneck", True),
    ("densenet121", "regular", False),
])
def test_whole_module_pickle_gives_the_official_outputs(tmp_path, arch, add_on, legacy):
    official = official_model(arch, add_on)
    path = tmp_path / f"{arch}.pth"
    torch.save(official, path, _use_new_zipfile_serialization=not legacy)
    classes = tmp_path / "classes.txt"
    classes.write_text("sparrow\nwren\nfinch\n")
    config = import_protopnet(path, tmp_path / "ckpt", classes=classes)
    imp = config["imported"]
    assert (imp["arch"], imp["add_on"], imp["kind"]) == (arch, add_on, "module")
    assert imp["format"] == ("legacy" if legacy else "zip")
    assert config["image_size"] == SIZE and config["classes"] == ["sparrow", "wren", "finch"]
    assert [p["class"] for p in config["prototypes"]] == [j // 4 for j in range(12)]
    assert all(p["no_source"] and p["patch_png"] is None for p in config["prototypes"])
    assert read_config(tmp_path / "ckpt")["model"]["prototypes"] == {
        "family": "l2_log", "per_class": 4, "dim": 32, "attrs": {"epsilon": 1e-4}}
    check_same_outputs(official, tmp_path / "ckpt")


def test_plain_state_dict_needs_arch(tmp_path):
    official = official_model("resnet18", "bottleneck")
    path = tmp_path / "state.pth"
    torch.save(official.state_dict(), path)
    with pytest.raises(EdgeprotoError, match="plain state dict: pass --arch"):
        import_protopnet(path, tmp_path / "a")
    with pytest.raises(EdgeprotoError, match="--arch vgg16 does not match .* resnet18"):
        import_protopnet(path, tmp_path / "a", arch="vgg16")
    with pytest.raises(EdgeprotoError, match="unknown --arch 'resnet19'"):
        import_protopnet(path, tmp_path / "a", arch="resnet19")
    config = import_protopnet(path, tmp_path / "ckpt", arch="resnet18", image_size=SIZE)
    assert config["classes"] == ["class_0", "class_1", "class_2"] and config["imported"]["kind"] == "state_dict"
    check_same_outputs(official, tmp_path / "ckpt")
    assert not (tmp_path / "a").exists()


def test_shape_mismatch_and_bad_files_are_clear_errors(tmp_path):
    state = official_model("resnet18", "regular").state_dict()
    state["add_on_layers.2.weight"] = torch.zeros(16, 32, 1, 1)  # not D→D
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(EdgeprotoError, match="do not fit a resnet18 ProtoPNet.*add_on.2.weight"):
        import_protopnet(path, tmp_path / "out", arch="resnet18")
    del state["prototype_vectors"]
    torch.save(state, path)
    with pytest.raises(EdgeprotoError, match="not a ProtoPNet checkpoint"):
        import_protopnet(path, tmp_path / "out", arch="resnet18")
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(EdgeprotoError, match="not a readable torch checkpoint"):
        import_protopnet(path, tmp_path / "out", arch="resnet18")
    classes = tmp_path / "classes.txt"
    classes.write_text("a\nb\n")
    torch.save(official_model("resnet18", "regular"), path)
    with pytest.raises(EdgeprotoError, match="has 2 names; the checkpoint has 3 classes"):
        import_protopnet(path, tmp_path / "out", classes=classes)
    assert not (tmp_path / "out").exists()


class Hostile:
    """Unpickling this would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("legacy", [False, True])
def test_hostile_pickle_is_refused_and_runs_nothing(tmp_path, legacy):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    official = official_model("resnet18", "regular")
    official.img_size = Hostile(marker)  # hidden inside an otherwise genuine checkpoint
    torch.save(official, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(EdgeprotoError, match=r"refusing to unpickle .*system"):
        import_protopnet(path, tmp_path / "ckpt")
    assert not marker.exists() and not (tmp_path / "ckpt").exists()


def test_cli_import(tmp_path):
    from click.testing import CliRunner

    from edgeproto.cli import cli

    path = tmp_path / "m.pth"
    torch.save(official_model("resnet18", "regular"), path)
    result = CliRunner().invoke(cli, ["import", "protopnet", str(path), "-o", str(tmp_path / "c"), "--json"])
    assert result.exit_code == 0, result.output
    assert '"prototypes_without_source": 12' in result.output
    again = CliRunner().invoke(cli, ["import", "protopnet", str(path), "-o", str(tmp_path / "c")])
    assert again.exit_code != 0 and "already holds a checkpoint" in str(again.exception)


def test_imported_checkpoint_exports_and_explains_like_the_official_model(tmp_path):
    """Import with --data, export (checked in ONNX Runtime), explain on the device side: the logits
    of the explanation are the official forward pass's on the same input."""
    import numpy as np
    from PIL import Image

    from edgeproto.data.base import IMAGENET_MEAN, IMAGENET_STD
    from edgeproto.data.preprocess import load_image, to_input
    from edgeproto.device.explain import explain_image
    from edgeproto.export.bundle_writer import export_bundle

    rng = np.random.default_rng(0)
    for name in ("finch", "sparrow", "wren"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(tmp_path / "data" / name / f"{i}.png")
    official = official_model("resnet18", "bottleneck")
    torch.save(official, tmp_path / "m.pth")
    config = import_protopnet(tmp_path / "m.pth", tmp_path / "ckpt", data=tmp_path / "data")
    assert config["classes"] == ["finch", "sparrow", "wren"] and config["recipe"]["data"]["name"] == "folder"
    manifest = export_bundle(tmp_path / "ckpt", tmp_path / "bundle", golden=3)
    assert manifest["export_check"]["passed"]
    image = tmp_path / "data" / "wren" / "0.png"
    result = explain_image(tmp_path / "bundle", image, k=2)
    x = torch.from_numpy(to_input(load_image(image), SIZE, IMAGENET_MEAN, IMAGENET_STD))[None]
    with torch.no_grad():
        ref_logits, _ = official(x)
    assert_close(torch.tensor(result["logits"]), ref_logits[0], "explained logits (ONNX Runtime)")
    assert all(p["patch_png"] is None for p in result["top_prototypes"])


def test_cabrnet_protopnet_state_dict(tmp_path):
    """CaBRNet's ProtoPNet keeps the official network under its own names (the inverse of its
    ``_load_legacy_state_dict``: features → extractor.convnet, add-on convolutions by YAML name,
    prototype_vectors → classifier.prototypes, ones → the similarity layer's summation kernel)."""
    official = official_model("resnet18", "regular")
    names = {"add_on_layers.0": "extractor.add_on.conv1", "add_on_layers.2": "extractor.add_on.conv2",
             "prototype_vectors": "classifier.prototypes", "ones": "classifier.similarity_layer._summation_kernel",
             "last_layer.weight": "classifier.last_layer.weight"}
    state = {}
    for key, value in official.state_dict().items():
        if key.startswith("features."):
            key = "extractor.convnet." + key[len("features."):]
        for old, new in names.items():
            if key == old or key.startswith(old + "."):
                key = new + key[len(old):]
        state[key] = value
    state["classifier.proto_class_map"] = official.prototype_class_identity
    torch.save(state, tmp_path / "model_state.pth")
    config = import_protopnet(tmp_path / "model_state.pth", tmp_path / "ckpt", arch="resnet18", image_size=SIZE)
    assert (config["imported"]["from"], config["imported"]["add_on"]) == ("cabrnet", "regular")
    check_same_outputs(official, tmp_path / "ckpt")


class PublicHyperPgProtoPNet(nn.Module):
    """The public HyperPg code's ProtoPNet (nips25-12267/12267-hyperpg ``models/protopnet.py`` with the
    ``hyperpg`` prototype module), its backbone's input transforms left out (see hyperpg_import)."""

    def __init__(self, features: ResNet_features, classes: int, per_class: int, dim: int, out_hw: int):
        super().__init__()
        f = features
        self.backbone = nn.Module()
        self.backbone.net = nn.Sequential(f.conv1, f.bn1, f.relu, f.maxpool, f.layer1, f.layer2, f.layer3, f.layer4)
        cin = [m for m in f.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
        self.neck = nn.Module()
        self.neck.convs = nn.Sequential(nn.Conv2d(cin, dim, 1), nn.ReLU(), nn.Conv2d(dim, dim, 1), nn.Sigmoid())
        self.prototype_module = nn.Module()
        self.prototype_module.prototypes = nn.Parameter(torch.randn(classes, per_class, dim, 1, 1))
        self.prototype_module.mus = nn.Parameter(torch.rand(classes, per_class, 1))
        self.prototype_module.sigmas = nn.Parameter(0.3 + 0.5 * torch.rand(classes, per_class, 1))
        self.clf = nn.Sequential(nn.MaxPool2d((out_hw, out_hw)), nn.Flatten(),
                                 nn.Linear(classes * per_class, classes, bias=False))

    def forward(self, x):
        feats = self.neck.convs(self.backbone.net(x))
        pm = self.prototype_module
        c, p = pm.prototypes.shape[:2]
        protos = F.normalize(pm.prototypes.view(c * p, -1), p=2, dim=1)
        cos = F.conv2d(F.normalize(feats, p=2, dim=1), protos.view(c * p, -1, 1, 1))
        mus, sigmas = pm.mus.view(1, c * p, 1, 1), pm.sigmas.view(1, c * p, 1, 1)
        density = -torch.square(cos - mus) / (2 * torch.square(sigmas) + 1e-6) - torch.log(2 * torch.pi * sigmas)
        return self.clf(density), self.clf[:2](density)


def test_hyperpg_lightning_checkpoint(tmp_path):
    """Same network; edgeproto's scores are log √(2π) above the public code's (its normal-density
    constant), so each logit is above by log √(2π)·Σ_j w_cj."""
    import math

    from edgeproto.train.hyperpg_import import import_hyperpg

    torch.manual_seed(0)
    public = PublicHyperPgProtoPNet(ResNet_features(BasicBlock, [2, 2, 2, 2]), 3, 4, 32, SIZE // 32)
    with torch.no_grad():
        for m in public.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    public.eval()
    ckpt = {"epoch": 9, "global_step": 90, "pytorch-lightning_version": "2.5.0",
            "state_dict": {"model." + k: v for k, v in public.state_dict().items()}}
    torch.save(ckpt, tmp_path / "epoch=009.ckpt")
    config = import_hyperpg(tmp_path / "epoch=009.ckpt", tmp_path / "ckpt", image_size=SIZE)
    assert (config["imported"]["arch"], config["model"]["prototypes"]["family"]) == ("resnet18", "hyperpg")
    model, _ = load_checkpoint(tmp_path / "ckpt")
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    shift = 0.5 * math.log(2 * math.pi)
    with torch.no_grad():
        ref_logits, ref_scores = public(x)
        out = model(x)
        w = public.clf[2].weight
    assert_close(out["scores"], ref_scores + shift, "HyperPg scores (+ log √(2π))")
    assert_close(out["logits"], ref_logits + shift * w.sum(dim=1), "HyperPg logits (+ log √(2π)·Σ_j w_cj)")
    assert config["imported"]["logit_shift_per_class"] == pytest.approx((shift * w.sum(dim=1)).tolist())
