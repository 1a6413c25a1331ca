"""TensorRT: a TensorRT-ready ONNX graph whose precision is explicit (compile, on any host), the same
graph run by ONNX Runtime on the CPU (``tensorrt-graph``), and engines built with Polygraphy on the
device (``tensorrt``)."""
