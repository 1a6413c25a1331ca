"""What TensorRT's ONNX parser takes, and a check of a graph against it (no TensorRT needed).

The op list is the "Y" rows of onnx-tensorrt's ``docs/operators.md`` at release 10.1-GA (the newest
release in the snapshot read; JetPack 6.1/6.2 ship 10.3, which only adds to it). TensorRT 11 keeps
the parser's op set and drops the implicit-precision builder flags, so the graph checked here —
plain ops, explicit ``Cast``, symmetric Q/DQ — is what both generations need.
"""

from __future__ import annotations

import onnx

from edgeproto.runtimes.tensorrt.plugins import DOMAIN as PLUGIN_DOMAIN

PARSER_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike Ceil
Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements
GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample
GroupNormalization GRU HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf
IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool
MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot
Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd
ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter
ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign
SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze
Upsample Where Xor
""".split())
# parser restrictions that bite the graphs edgeproto writes (same source)
REDUCE_OPS_WITH_AXES_INPUT = frozenset({"ReduceL1", "ReduceL2", "ReduceMax", "ReduceMin", "ReduceMean", "ReduceSum", "ReduceProd",
                                        "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"})


def standard_op_names() -> set[str]:
    """Every op name of the default ONNX domain (a plugin op_type must not be one of them: the
    parser picks its importer by op_type alone, whatever the domain)."""
    return {s.name for s in onnx.defs.get_all_schemas_with_history() if s.domain in ("", "ai.onnx")}


def graph_problems(model: onnx.ModelProto, *, allow_plugins: bool = False) -> list[str]:
    """Why TensorRT's ONNX parser would refuse ``model`` (empty when it would parse it)."""
    problems = []
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    zero_points = {}
    for init in model.graph.initializer:
        zero_points[init.name] = onnx.numpy_helper.to_array(init)
    standard = None
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            if node.domain == PLUGIN_DOMAIN and allow_plugins:
                attrs = {a.name for a in node.attribute}
                standard = standard if standard is not None else standard_op_names()
                if "plugin_namespace" not in attrs:
                    problems.append(f"{node.op_type}: a plugin node needs a plugin_namespace attribute")
                if node.op_type in standard:
                    problems.append(f"{node.op_type}: a plugin op_type must not be a standard ONNX op name")
                continue
            problems.append(f"{node.domain}::{node.op_type} ({node.name}): not a standard op and not a plugin node")
            continue
        if node.op_type not in PARSER_OPS:
            problems.append(f"{node.op_type} ({node.name}): not supported by TensorRT's ONNX parser")
        if node.op_type in REDUCE_OPS_WITH_AXES_INPUT and len(node.input) > 1 and node.input[1] \
                and node.input[1] not in constants:
            problems.append(f"{node.op_type} ({node.name}): axes must be an initializer")
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zp = zero_points.get(node.input[2])
            if zp is None or zp.any():
                problems.append(f"{node.op_type} ({node.name}): the zero point must be a zero initializer")
    if model.functions and not allow_plugins:
        problems.append(f"model-local functions {[f.name for f in model.functions]}: TensorRT 8.x parses none")
    return problems
