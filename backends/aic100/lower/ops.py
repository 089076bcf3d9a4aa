"""The op tables of the aic100 lowering: which ops run on which unit, what each costs per output
element, which fuse into a step's epilogue, which are virtual, and which element types the device
holds; with ``unsupported_nodes``, the check built on them."""

from __future__ import annotations

from typing import Any

import onnx

__all__ = ["TENSOR_OPS", "DTYPES", "ALIAS_OPS", "VIRTUAL_OPS", "MOVEMENT_OPS", "VECTOR_COST",
           "EPILOGUE_OPS", "SUPPORTED_OPS", "REDUCING", "attrs", "label", "unsupported_nodes"]

TENSOR_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
#: element types of the tensors a program may hold: fp16 and fp32 (between DQ and Q), and the
#: integers the vector unit handles (4- and 16-bit ones for QDQ programs of those widths, which
#: run dequantized). No float64, bfloat16, float8 or 2-bit types: the AIC100 has none of them.
DTYPES = frozenset({"float16", "float32", "int4", "uint4", "int8", "uint8", "int16", "uint16",
                    "int32", "uint32", "int64", "uint64", "bool"})
#: ops that only rename or reinterpret a tensor: no cycles, no memory of their own
ALIAS_OPS = frozenset({"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze"})
VIRTUAL_OPS = ALIAS_OPS | {"DequantizeLinear"}
#: ops that move or convert data without floating-point arithmetic (allowed in any precision)
MOVEMENT_OPS = ALIAS_OPS | frozenset({
    "Transpose", "Concat", "Split", "Slice", "Gather", "Expand", "Tile", "Pad", "Shape", "Size",
    "Constant", "ConstantOfShape", "Cast", "QuantizeLinear",
    "DequantizeLinear", "Range", "Where", "Equal", "Less", "Greater", "LessOrEqual",
    "GreaterOrEqual", "Not", "And", "Or", "Xor", "OneHot"})
#: vector-unit work per output element (MAC-equivalents); pooling adds its window
VECTOR_COST = {
    "Relu": 1, "Clip": 1, "LeakyRelu": 2, "PRelu": 2, "Add": 1, "Sub": 1, "Mul": 1, "Div": 4,
    "Max": 1, "Min": 1, "Neg": 1, "Abs": 1, "Sqrt": 4, "Reciprocal": 4, "Pow": 8, "Exp": 8,
    "Log": 8, "Sigmoid": 8, "Tanh": 8, "Erf": 8, "Gelu": 10, "HardSigmoid": 2, "HardSwish": 3,
    "BatchNormalization": 2, "Cast": 1, "QuantizeLinear": 2,
    "DequantizeLinear": 1, "Softmax": 6, "LogSoftmax": 6, "LayerNormalization": 8,
    "ReduceMean": 1, "ReduceSum": 1, "ReduceMax": 1, "ReduceMin": 1, "ReduceProd": 1,
    "ReduceSumSquare": 2, "OneHot": 1,
    "MaxPool": 0, "AveragePool": 0, "GlobalAveragePool": 0, "GlobalMaxPool": 0, "Resize": 4,
    "Transpose": 1, "Concat": 1, "Split": 1, "Slice": 1, "Gather": 1, "Expand": 1, "Tile": 1,
    "Pad": 1, "Where": 1, "Equal": 1, "Less": 1, "Greater": 1, "LessOrEqual": 1,
    "GreaterOrEqual": 1, "Not": 1, "And": 1, "Or": 1, "Xor": 1,
    "Identity": 1, "Reshape": 1, "Flatten": 1, "Squeeze": 1, "Unsqueeze": 1, "Shape": 0,
    "Size": 0, "Constant": 0, "ConstantOfShape": 1, "Range": 1,
}
#: elementwise ops a step may absorb as its epilogue (one data input from the step)
EPILOGUE_OPS = frozenset({
    "Relu", "Clip", "LeakyRelu", "PRelu", "Add", "Sub", "Mul", "Div", "Max", "Min", "Neg", "Abs",
    "Sqrt", "Sigmoid", "Tanh", "Erf", "Gelu", "HardSigmoid", "HardSwish",
    "BatchNormalization", "Cast", "Exp"})
SUPPORTED_OPS = TENSOR_OPS | frozenset(VECTOR_COST)
#: ops that reduce their input: vector work per *input* element
REDUCING = {"GlobalAveragePool": 1, "GlobalMaxPool": 1, "ReduceMean": 1, "ReduceSum": 1,
            "ReduceMax": 1, "ReduceMin": 1, "ReduceProd": 1, "ReduceSumSquare": 2}

def attrs(node: onnx.NodeProto) -> dict[str, Any]:
    """The node's attributes as Python values."""
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def label(node: onnx.NodeProto, index: int) -> str:
    """How errors name a node: its name, else its first output, else its index."""
    return node.name or (node.output[0] if node.output else f"#{index}")


def unsupported_nodes(model: onnx.ModelProto) -> list[str]:
    """Every node the simulated AIC100 cannot run, as ``node 'NAME' (OpType)``."""
    problems = []
    for i, node in enumerate(model.graph.node):
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"node '{label(node, i)}' ({node.domain}.{node.op_type})")
        elif node.op_type not in SUPPORTED_OPS:
            problems.append(f"node '{label(node, i)}' ({node.op_type})")
    return problems

