"""ONNX export of prototype models: one edgeproto node per prototype layer (function / inline /
plugin modes), readable parameter names, dynamic batch, ORT parity with PyTorch, atomic save."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import edgeproto.layers as L
from edgeproto.errors import EdgeprotoError
from edgeproto.export.onnx_graph import (
    SUPPORTED_OPSETS,
    _save_atomic,
    export_onnx,
    register_schemas,
)
from edgeproto.layers import prototype_nodes
from edgeproto.outputs import OUTPUTS

ort = pytest.importorskip("onnxruntime")

FAMILIES = sorted(L.families())
NUM_PROTOTYPES, DIM, CLASSES = 6, 8, 3
IMAGE = (3, 12, 12)


class PrototypeLayer(nn.Module):
    """Calls ``torch.ops.edgeproto.<family>`` with its parameters; float attrs as kwargs,
    set away from their defaults so the node attributes are checked for real."""

    def __init__(self, family: L.PrototypeFamily, seed: int = 0):
        super().__init__()
        self.family = family
        params = family.torch_module.init_params(
            NUM_PROTOTYPES, DIM, generator=torch.Generator().manual_seed(seed)
        )
        for name in family.param_names:
            setattr(self, name, nn.Parameter(params[name].clone()))
        self.attrs = {k: float(v) * 10.0 for k, v in family.attrs.items()}

    def forward(self, z):
        op = getattr(torch.ops.edgeproto, self.family.name)
        return op(z, *[getattr(self, n) for n in self.family.param_names], **self.attrs)


class TinyProtoNet(nn.Module):
    """Conv backbone -> sigmoid features -> prototype layer(s) -> max over locations -> linear."""

    def __init__(self, *family_names: str):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, DIM, 3))
        layers = [PrototypeLayer(L.get_family(n), seed=i) for i, n in enumerate(family_names)]
        if len(layers) == 1:
            self.prototype_layer = layers[0]
        else:
            self.prototype_layers = nn.ModuleList(layers)
        self.last_layer = nn.Linear(NUM_PROTOTYPES * len(layers), CLASSES)

    def forward(self, image):
        z = torch.sigmoid(self.backbone(image))
        layers = (
            [self.prototype_layer] if hasattr(self, "prototype_layer") else self.prototype_layers
        )
        maps = torch.cat([layer(z) for layer in layers], dim=1)
        scores = maps.amax(dim=(2, 3))
        return {"logits": self.last_layer(scores), "scores": scores, "maps": maps}


def _param_names(model: nn.Module) -> set[str]:
    return {
        name
        for name, _ in model.named_parameters()
        if ".prototype_layer" in f".{name}" or "prototype_layers" in name
    }


_CACHE: dict = {}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """export(families tuple, ops, opset) -> (torch model, ModelProto, path), cached per module."""
    root = tmp_path_factory.mktemp("onnx")

    def get(names: tuple[str, ...], ops: str, opset: int = 18):
        key = (names, ops, opset)
        if key not in _CACHE:
            model = TinyProtoNet(*names).eval()
            path = root / f"{'-'.join(names)}_{ops}_{opset}.onnx"
            proto = export_onnx(model, torch.rand(2, *IMAGE), path, ops=ops, opset=opset)
            _CACHE[key] = (model, proto, path)
        return _CACHE[key]

    return get


def _ort_vs_torch(model, path, batches=(1, 7, 64)):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["image"]
    assert [o.name for o in sess.get_outputs()] == list(OUTPUTS)
    gen = torch.Generator().manual_seed(1)
    for batch in batches:
        x = torch.rand(batch, *IMAGE, generator=gen)
        with torch.no_grad():
            ref = model(x)
        got = dict(zip(OUTPUTS, sess.run(None, {"image": x.numpy()})))
        for key in ("logits", "scores", "maps"):
            assert got[key].shape == tuple(ref[key].shape), (batch, key)
        for key in ("logits", "scores"):
            diff = float(np.abs(got[key] - ref[key].numpy()).max())
            assert diff <= 1e-5, (batch, key, diff)


def _io_names(proto: onnx.ModelProto):
    assert [i.name for i in proto.graph.input] == ["image"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and not dims[0].HasField("dim_value")
    assert [d.dim_value for d in dims[1:]] == list(IMAGE)
    assert [o.name for o in proto.graph.output] == list(OUTPUTS)


# --------------------------------------------------------------------------- function mode


@pytest.mark.parametrize("name", FAMILIES)
def test_function_mode_keeps_one_node_and_its_function(exported, name):
    family = L.get_family(name)
    model, proto, path = exported((name,), "function")
    onnx.checker.check_model(proto, full_check=True)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    _io_names(proto)
    imports = {i.domain: i.version for i in proto.opset_import}
    assert imports[""] == 18 and imports["edgeproto"] == 1

    nodes = prototype_nodes(proto)
    assert len(nodes) == 1
    node = nodes[0]
    assert (node.domain, node.op_type) == ("edgeproto", family.op_type)
    inits = {t.name for t in proto.graph.initializer}
    expected = [f"prototype_layer.{p}" for p in family.param_names]
    assert list(node.input[1:]) == expected  # readable, in param order, not folded
    assert set(expected) <= inits
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert set(attrs) == set(family.attrs)
    for key, default in family.attrs.items():
        assert attrs[key] == pytest.approx(default * 10.0, rel=1e-6)

    assert [(f.domain, f.name) for f in proto.functions] == [("edgeproto", family.op_type)]
    func = proto.functions[0]
    assert {i.domain: i.version for i in func.opset_import} == {"": 18}
    assert all(n.domain in ("", "ai.onnx") for n in func.node)
    # the function body holds no parameter values: they stay graph initializers
    assert not any(n.op_type == "Constant" and n.attribute[0].name == "value" for n in func.node)
    _ort_vs_torch(model, path)


@pytest.mark.parametrize("name", FAMILIES)
def test_inline_mode_is_standard_ops_only(exported, name):
    family = L.get_family(name)
    model, proto, path = exported((name,), "inline")
    onnx.checker.check_model(proto, full_check=True)
    _io_names(proto)
    assert prototype_nodes(proto) == []
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)
    assert len(proto.functions) == 0
    assert {i.domain for i in proto.opset_import} == {""}
    consumed = {i for n in proto.graph.node for i in n.input}
    inits = {t.name for t in proto.graph.initializer}
    for p in family.param_names:
        assert f"prototype_layer.{p}" in consumed and f"prototype_layer.{p}" in inits
    _ort_vs_torch(model, path)


def test_inline_equals_onnx_inliner_of_function_mode(exported):
    _, proto, _ = exported((FAMILIES[0],), "function")
    inlined = onnx.inliner.inline_local_functions(proto)
    assert prototype_nodes(inlined) == [] and len(inlined.functions) == 0
    onnx.checker.check_model(inlined, full_check=True)


@pytest.mark.parametrize("name", FAMILIES)
def test_plugin_mode_has_plugin_attrs_and_no_function(exported, name):
    family = L.get_family(name)
    _, proto, path = exported((name,), "plugin")
    _io_names(proto)
    assert len(proto.functions) == 0
    nodes = prototype_nodes(proto)
    assert len(nodes) == 1 and nodes[0].op_type == family.op_type
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert attrs["plugin_namespace"] == b"edgeproto"
    assert attrs["plugin_version"] == b"1"
    assert {i.domain: i.version for i in proto.opset_import}["edgeproto"] == 1
    # full check: with the registered schema, shape inference goes through the bare node
    register_schemas()
    onnx.checker.check_model(onnx.load(path), full_check=True)
    bare = onnx.ModelProto()
    bare.CopyFrom(proto)
    del bare.graph.value_info[:]
    for out in bare.graph.output:  # forget declared output shapes: inference must find them
        out.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(bare, strict_mode=True)
    values = list(inferred.graph.value_info) + list(inferred.graph.output)
    out = next(v for v in values if v.name == nodes[0].output[0])
    dims = out.type.tensor_type.shape.dim
    assert len(dims) == 4 and dims[0].dim_param == "batch" and dims[1].dim_value == NUM_PROTOTYPES


# --------------------------------------------------------------------------- several layers


def test_two_prototype_layers_two_nodes(exported):
    names = tuple(FAMILIES[:2]) if len(FAMILIES) > 1 else (FAMILIES[0], FAMILIES[0])
    model, proto, path = exported(names, "function")
    onnx.checker.check_model(proto, full_check=True)
    nodes = prototype_nodes(proto)
    assert len(nodes) == 2
    assert sorted(f.name for f in proto.functions) == sorted({n.op_type for n in nodes})
    for i, node in enumerate(nodes):
        assert all(inp.startswith(f"prototype_layers.{i}.") for inp in node.input[1:])
    _ort_vs_torch(model, path, batches=(1, 7))


# --------------------------------------------------------------------------- opsets


@pytest.mark.parametrize("opset", sorted({SUPPORTED_OPSETS.start, 17, 21, SUPPORTED_OPSETS.stop - 1}))
def test_other_opsets(exported, opset):
    # cosine's body has ReduceL2, whose axes were an attribute before opset 18
    name = "cosine" if "cosine" in FAMILIES else FAMILIES[0]
    model, proto, path = exported((name,), "function", opset)
    onnx.checker.check_model(proto, full_check=True)
    assert {i.domain: i.version for i in proto.opset_import}[""] == opset
    assert {i.domain: i.version for i in proto.functions[0].opset_import} == {"": opset}
    _ort_vs_torch(model, path, batches=(1, 7))


@pytest.mark.parametrize("opset", [9, 14, SUPPORTED_OPSETS.stop])
def test_unsupported_opset_raises(tmp_path, opset):
    path = tmp_path / "m.onnx"
    with pytest.raises(EdgeprotoError, match=f"opset {opset}"):
        export_onnx(TinyProtoNet(FAMILIES[0]), torch.rand(1, *IMAGE), path, opset=opset)
    assert list(tmp_path.iterdir()) == []


def test_bad_ops_mode_raises(tmp_path):
    with pytest.raises(EdgeprotoError, match="ops must be"):
        export_onnx(TinyProtoNet(FAMILIES[0]), torch.rand(1, *IMAGE), tmp_path / "m.onnx", ops="x")


# --------------------------------------------------------------------------- files, state


def test_output_file_complete_and_no_leftovers(tmp_path):
    model = TinyProtoNet(FAMILIES[0])
    model.train()
    model.backbone[0].eval()  # mixed modes must survive the export
    path = tmp_path / "sub" / "model.onnx"
    path.parent.mkdir()
    path.write_bytes(b"old")
    proto = export_onnx(model, torch.rand(1, *IMAGE), path)  # batch 1 example: still dynamic
    assert os.listdir(path.parent) == ["model.onnx"]
    assert onnx.load(path) == proto
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert model.training and model.prototype_layer.training and not model.backbone[0].training


def test_atomic_save_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")

    class Broken:
        def SerializeToString(self):  # noqa: N802  (protobuf name)
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        _save_atomic(Broken(), path)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.onnx"]


def test_model_without_dict_output_is_rejected(tmp_path):
    class Bad(TinyProtoNet):
        def forward(self, image):
            return super().forward(image)["logits"]

    with pytest.raises(EdgeprotoError, match="dict with keys"):
        export_onnx(Bad(FAMILIES[0]), torch.rand(2, *IMAGE), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_transformed_parameters_warn(tmp_path):
    class Scaled(TinyProtoNet):
        def forward(self, image):
            z = torch.sigmoid(self.backbone(image))
            layer = self.prototype_layer
            params = [getattr(layer, n) * 1.5 for n in layer.family.param_names]
            maps = getattr(torch.ops.edgeproto, layer.family.name)(z, *params)
            scores = maps.amax(dim=(2, 3))
            return {"logits": self.last_layer(scores), "scores": scores, "maps": maps}

    with pytest.warns(UserWarning, match="not model parameters"):
        export_onnx(Scaled(FAMILIES[0]), torch.rand(2, *IMAGE), tmp_path / "m.onnx")
