"""fold-constants on graphs with control flow (graph-surgeon's folding path): Shape start/end
respected, If branches left whole, and the cpu backend refusing what onnxruntime's kernels lack.

Regression tests for failures that onnx's node cases found once If/Loop/Scan joined the
interpreter's op list: ``Shape(start=1)`` folded to the whole shape (a silent wrong shape, then a
failing Reshape), and folding inside If branches leaving a branch that reads a tensor nothing
produces.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import aicc
from aicc.errors import BackendError

from onnx_node_cases import op_list_cases, run_public


def _shape_start_model_with_if() -> onnx.ModelProto:
    """x[2,3,4] -> Reshape(x, Concat([-1], Shape(x, start=1))) -> y[2,3,4], plus an If (so that
    graph-surgeon's folding path runs) whose branches read the outer-scope x."""
    then = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Shape", ["x"], ["tail"], start=1),
             helper.make_node("Concat", ["minus_one", "tail"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"]),
             helper.make_node("If", ["cond"], ["z"], then_branch=then, else_branch=other)]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3, 4])],
        [numpy_helper.from_array(np.array([-1], np.int64), "minus_one")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model


@pytest.mark.parametrize("backend", ["interpreter", "cpu"])
def test_shape_start_is_respected_in_graphs_with_control_flow(backend, tmp_path):
    model = _shape_start_model_with_if()
    feeds = {"x": np.arange(24, dtype=np.float32).reshape(2, 3, 4), "cond": np.array(False)}
    expected = ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"]).run(None, feeds)
    session = aicc.load(aicc.compile(model, backend=backend, output=tmp_path / "m.qpc"))
    out = session.run(feeds)
    np.testing.assert_array_equal(out["y"], expected[0])
    np.testing.assert_array_equal(out["z"], expected[1])


@pytest.mark.parametrize("name", ["test_affine_grid_2d_expanded",
                                  "test_linear_attention_decode_step_expanded"])
def test_onnx_function_cases_with_control_flow_fold_correctly(name, tmp_path):
    cases = op_list_cases("interpreter")
    if name not in cases:
        pytest.skip(f"this onnx has no case {name}")
    run_public(cases[name], "interpreter", folder=tmp_path)


def _lstm_batchwise() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((1, 16, 3)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal((1, 16, 4)).astype(np.float32), "R")]
    node = helper.make_node("LSTM", ["x", "W", "R"], ["y"], name="lstm", hidden_size=4, layout=1)
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 1, 4])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_cpu_refuses_batch_major_rnns_up_front_and_the_interpreter_runs_them(tmp_path):
    model = _lstm_batchwise()
    with pytest.raises(BackendError, match=r"node 'lstm' \(LSTM: onnxruntime runs layout 0 only"):
        aicc.compile(model, backend="cpu", output=tmp_path / "cpu.qpc")
    assert not (tmp_path / "cpu.qpc").exists()
    session = aicc.load(aicc.compile(model, backend="interpreter", output=tmp_path / "i.qpc"))
    assert session.run({"x": np.ones((2, 5, 3), np.float32)})["y"].shape == (2, 5, 1, 4)
