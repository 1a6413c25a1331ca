"""Plugin graphs: prototype nodes as bare TensorRT plugin nodes, and back (no TensorRT needed)."""

from __future__ import annotations

from pathlib import Path

import onnx

from edgeproto.errors import EdgeprotoError
from edgeproto.layers import prototype_nodes
from edgeproto.layers.family import ONNX_DOMAIN
from edgeproto.runtimes.tensorrt.plugins import DOMAIN, NAMESPACE, PLUGIN_OPS, VERSION

FUNCTIONS_FILE = "functions.onnx"
"""Beside a plugin graph: the prototype ops' ONNX bodies (what the CPU runner executes)."""
PLUGIN_ATTRIBUTES = ("plugin_namespace", "plugin_version", "aot")


def plugin_nodes(model: onnx.ModelProto) -> list:
    """The TensorRT plugin nodes of ``model``'s main graph."""
    return [n for n in model.graph.node if n.domain == DOMAIN]


def is_plugin_graph(model: onnx.ModelProto) -> bool:
    """Whether ``model`` holds TensorRT plugin nodes."""
    return bool(plugin_nodes(model))


def plugin_graph(model: onnx.ModelProto, functions_path: Path) -> onnx.ModelProto:
    """``model`` with each prototype node turned into a bare TensorRT plugin node; the function bodies
    are removed (the parser would take a body over a plugin) and saved to ``functions_path``."""
    nodes = prototype_nodes(model)
    unsupported = sorted({n.op_type for n in nodes} - set(PLUGIN_OPS))
    if unsupported:
        raise EdgeprotoError(f"no TensorRT plugin for {unsupported} yet (plugins: {sorted(PLUGIN_OPS)}); "
                             "compile with --ops inline")
    result = onnx.ModelProto()
    result.CopyFrom(model)
    for node in prototype_nodes(result):
        node.domain = DOMAIN
        node.attribute.extend([onnx.helper.make_attribute("plugin_namespace", NAMESPACE),
                               onnx.helper.make_attribute("plugin_version", VERSION),
                               onnx.helper.make_attribute("aot", 1)])
    bodies = onnx.helper.make_model(onnx.helper.make_graph([], "functions", [], []),
                                    opset_imports=list(model.opset_import), functions=list(model.functions))
    onnx.save(bodies, functions_path)
    del result.functions[:]
    result.opset_import.append(onnx.helper.make_opsetid(DOMAIN, 1))
    return result


def attach_functions(model: onnx.ModelProto, functions_path: Path) -> onnx.ModelProto:
    """A plugin graph made runnable by ONNX Runtime: the bodies back, the plugin attributes off."""
    bodies = onnx.load(functions_path)
    result = onnx.ModelProto()
    result.CopyFrom(model)
    result.functions.extend(bodies.functions)
    for node in plugin_nodes(result):
        node.domain = ONNX_DOMAIN
        kept = [a for a in node.attribute if a.name not in PLUGIN_ATTRIBUTES]
        del node.attribute[:]
        node.attribute.extend(kept)
    return result

