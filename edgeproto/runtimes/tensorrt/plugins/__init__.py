"""TensorRT plugins for the prototype ops (``compile --target tensorrt --ops plugin``).

In a plugin graph the prototype node stays a bare node (op_type, ``plugin_namespace``,
``plugin_version``, ``aot``) with no function body, which TensorRT's ONNX parser resolves to a
registered plugin (its fallback importer looks plugins up by op_type and namespace, whatever the
node's domain; with a body present, the parser would take the body). The node moves to its own
domain (``edgeproto.tensorrt``), which has no schema, so ``onnx.checker`` does not hold the plugin
attributes against the op's ONNX schema.
The plugins are TensorRT quickly deployable plugins (``tensorrt.plugin``, TensorRT ≥ 10.9) whose
kernels are Triton kernels compiled ahead of time, so the engine runs without Python.
"""

from __future__ import annotations

from edgeproto.errors import EdgeprotoError

NAMESPACE = "edgeproto"
DOMAIN = "edgeproto.tensorrt"
"""The ONNX domain of plugin nodes."""
VERSION = "1"
PLUGIN_OPS = {"L2LogSimilarity": "edgeproto.runtimes.tensorrt.plugins.l2_log"}
"""Prototype op_type → the module that registers its plugin."""


def missing_packages() -> str | None:
    """Why the plugins cannot be registered here (None when they can)."""
    try:
        import tensorrt.plugin as trtp
    except ImportError:
        return ("--ops plugin needs TensorRT >= 10.9 with its Python plugin API (tensorrt.plugin), "
                "which is not installed here")
    if not hasattr(trtp, "aot_impl"):
        return "--ops plugin needs TensorRT >= 10.9 (tensorrt.plugin.aot_impl); this TensorRT has none"
    try:
        import triton  # noqa: F401
    except ImportError:
        return "--ops plugin needs Triton (pip install triton) to compile the plugin kernels"
    return None


def register_plugins(op_types) -> list[str]:
    """Register the plugins of ``op_types`` with TensorRT; a clear error when that is impossible."""
    import importlib

    unknown = sorted(set(op_types) - set(PLUGIN_OPS))
    if unknown:
        raise EdgeprotoError(f"no TensorRT plugin for {unknown} (plugins exist for {sorted(PLUGIN_OPS)})")
    why = missing_packages()
    if why:
        raise EdgeprotoError(why + "; compile with --ops inline instead")
    return [importlib.import_module(PLUGIN_OPS[op]).NAME for op in sorted(set(op_types))]
