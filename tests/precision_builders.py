"""Models and files for the custom I/O, fp16 and INT32 tests (built with onnx.helper)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from aicc import ir

#: The seed's custom I/O example (seeds/custom-io.txt), verbatim. The seed's table lists output_0
#: and output_1 as "float64", but its YAML (which is what a tool reads) says float16, and float64
#: is not a custom I/O precision: the YAML wins.
SEED_YAML = """\
- IOName: input_0
  Layout: NHWC
  Precision: int8
  Scale: 0.12
  Offset: 3
- IOName: input_1
  Layout: NHWC
- IOName: input_2
  Layout: NHWC
- IOName: output_0
  Layout: NHWC
  Precision: float16
- IOName: output_1
  Precision: float16
"""

#: The seed's LLM example: repeated identical entries (merged, noted).
LLM_YAML = """\
- IOName: past_key.0
  Precision: mxint8
- IOName: past_key.0
  Precision: mxint8
- IOName: past_key.0_RetainedState
  Precision: mxint8
- IOName: past_key.0_RetainedState
  Precision: mxint8
"""


def _model(graph: onnx.GraphProto, opset: int = 17) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return ir.load_model(model.SerializeToString())


def seed_model() -> onnx.ModelProto:
    """Three inputs, three outputs with the seed's names, types and ranks.

    input_0, input_1 float [1,3,4,5] (NCHW), input_2 int64 [1,3,4,5];
    output_0 = Relu(input_0 + input_1 * input_2) float rank 4, output_1 = its spatial mean before
    the Relu, float [1,3]; output_2 = spatial sum of input_2, int64 [1,3].
    """
    nodes = [helper.make_node("Cast", ["input_2"], ["i2f"], to=TP.FLOAT, name="cast"),
             helper.make_node("Mul", ["input_1", "i2f"], ["m"], name="mul"),
             helper.make_node("Add", ["input_0", "m"], ["t"], name="add"),
             helper.make_node("Relu", ["t"], ["output_0"], name="relu"),
             helper.make_node("ReduceMean", ["t"], ["output_1"], axes=[2, 3], keepdims=0,
                              name="mean"),
             helper.make_node("ReduceSum", ["input_2", "axes"], ["output_2"], keepdims=0,
                              name="sum")]
    shape = [1, 3, 4, 5]
    graph = helper.make_graph(
        nodes, "seed",
        [helper.make_tensor_value_info("input_0", TP.FLOAT, shape),
         helper.make_tensor_value_info("input_1", TP.FLOAT, shape),
         helper.make_tensor_value_info("input_2", TP.INT64, shape)],
        [helper.make_tensor_value_info("output_0", TP.FLOAT, shape),
         helper.make_tensor_value_info("output_1", TP.FLOAT, [1, 3]),
         helper.make_tensor_value_info("output_2", TP.INT64, [1, 3])],
        [numpy_helper.from_array(np.array([2, 3], np.int64), "axes")])
    return _model(graph)


def kv_model(length: int = 64, opset: int = 17, batch: str | int = "batch") -> onnx.ModelProto:
    """past_key.0 float [batch, 2, 8, length] -> past_key.0_RetainedState = 0.5 * it."""
    shape = [batch, 2, 8, length]
    graph = helper.make_graph(
        [helper.make_node("Mul", ["past_key.0", "half"], ["past_key.0_RetainedState"],
                          name="scale")], "kv",
        [helper.make_tensor_value_info("past_key.0", TP.FLOAT, shape)],
        [helper.make_tensor_value_info("past_key.0_RetainedState", TP.FLOAT, shape)],
        [numpy_helper.from_array(np.array(0.5, np.float32), "half")])
    return _model(graph, opset)


def qdq_io_model() -> onnx.ModelProto:
    """int8 input q_in -> DequantizeLinear(0.05, 2) -> Relu -> QuantizeLinear(0.1, -1) -> q_out."""
    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["q_in", "s_in", "z_in"], ["x"], name="dq"),
         helper.make_node("Relu", ["x"], ["y"], name="relu"),
         helper.make_node("QuantizeLinear", ["y", "s_out", "z_out"], ["q_out"], name="q")],
        "qdq",
        [helper.make_tensor_value_info("q_in", TP.INT8, [2, 6])],
        [helper.make_tensor_value_info("q_out", TP.INT8, [2, 6])],
        [numpy_helper.from_array(np.array(0.05, np.float32), "s_in"),
         numpy_helper.from_array(np.array(2, np.int8), "z_in"),
         numpy_helper.from_array(np.array(0.1, np.float32), "s_out"),
         numpy_helper.from_array(np.array(-1, np.int8), "z_out")])
    return _model(graph)


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path
