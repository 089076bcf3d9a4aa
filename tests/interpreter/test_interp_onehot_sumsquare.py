"""OneHot and ReduceSumSquare on the interpreter through the public path, against onnxruntime,
for the forms onnx's node cases leave out: float indices (a fractional one matches no position)
and depth, negative and out-of-range indices on an inner axis, integer sums, opset 13's attribute
axes and opset 18's empty axes with noop_with_empty_axes. Results must be equal (same dtype,
exact values: squares of small integers and on/off selections are exact in float32)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import aicc


def _model(node, inputs, outputs, inits=(), opset=18) -> onnx.ModelProto:
    graph = helper.make_graph([node], "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _check(model, feeds, tmp_path):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, feeds)
    qpc = aicc.compile(model, backend="interpreter", output=tmp_path / "m.qpc")
    got = aicc.load(qpc).run(feeds)
    got = [got[o.name] for o in model.graph.output] if isinstance(got, dict) else list(got)
    for g, r in zip(got, ref, strict=True):
        assert g.dtype == r.dtype and g.shape == r.shape
        np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_onehot_float_indices_inner_axis(axis, tmp_path):
    # 2.7 is fractional, 4 and -4 are out of range for depth 3
    idx = np.array([[0.0, 2.7, -1.0], [-3.0, 4.0, -4.0]], np.float32)
    node = helper.make_node("OneHot", ["i", "d", "v"], ["y"], axis=axis)
    shape = [3, 2, 3] if axis == 0 else [2, 3, 3]
    model = _model(node, [helper.make_tensor_value_info("i", TensorProto.FLOAT, [2, 3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                   [numpy_helper.from_array(np.array(3.0, np.float32), "d"),
                    numpy_helper.from_array(np.array([-5, 7], np.float32), "v")], opset=11)
    _check(model, {"i": idx}, tmp_path)


@pytest.mark.parametrize("dtype", [np.int32, np.float32])
def test_reduce_sum_square_attribute_axes_keeps_dtype(dtype, tmp_path):
    x = np.arange(-6, 6).reshape(3, 4).astype(dtype)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    node = helper.make_node("ReduceSumSquare", ["x"], ["y"], axes=[1], keepdims=0)
    model = _model(node, [helper.make_tensor_value_info("x", elem, [3, 4])],
                   [helper.make_tensor_value_info("y", elem, [3])], opset=13)
    _check(model, {"x": x}, tmp_path)


@pytest.mark.parametrize("noop", [0, 1])
def test_reduce_sum_square_empty_axes_input(noop, tmp_path):
    """Empty axes reduce everything, or with noop_with_empty_axes=1 only square the input."""
    x = np.arange(-3, 3).reshape(2, 3).astype(np.float32)
    node = helper.make_node("ReduceSumSquare", ["x", "a"], ["y"], noop_with_empty_axes=noop)
    model = _model(node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                          helper.make_tensor_value_info("a", TensorProto.INT64, [0])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                  [2, 3] if noop else [1, 1])])
    _check(model, {"x": x, "a": np.zeros(0, np.int64)}, tmp_path)
