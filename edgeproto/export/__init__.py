"""Export of trained prototype models (ONNX graph in ``edgeproto.export.onnx_graph``).

Kept free of heavy imports: ``from edgeproto.export.onnx_graph import export_onnx``.
"""
