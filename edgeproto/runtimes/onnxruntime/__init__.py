"""ONNX Runtime: runner and compiler."""
