"""Integer and QLinear ops on the interpreter against onnxruntime (the models onnxruntime's
dynamic quantization writes). Integer outputs must be equal; requantized uint8/int8 outputs may
differ by one step where a value lands on a rounding tie after float arithmetic."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import aicc
from aicc.backends.interpreter import Interpreter

RNG = np.random.default_rng(0)


def _model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _both(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    return Interpreter(model).run(feeds), ref


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


@pytest.mark.parametrize("a_type, b_type", [(np.uint8, np.uint8), (np.uint8, np.int8),
                                            (np.int8, np.int8)])
@pytest.mark.parametrize("per_axis", [False, True])
def test_matmul_integer(a_type, b_type, per_axis):
    a = RNG.integers(np.iinfo(a_type).min, np.iinfo(a_type).max, (2, 4, 5)).astype(a_type)
    b = RNG.integers(np.iinfo(b_type).min, np.iinfo(b_type).max, (5, 3)).astype(b_type)
    a_zp = np.array(7 if a_type == np.uint8 else -3, a_type)
    b_zp = (np.array([1, -2, 3], b_type) if b_type == np.int8 else np.array([1, 2, 3], b_type)) \
        if per_axis else np.array(2, b_type)
    model = _model([helper.make_node("MatMulInteger", ["a", "b", "azp", "bzp"], ["y"])],
                   [_vi("a", helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)],
                   [_vi("y", TensorProto.INT32, [2, 4, 3])],
                   [numpy_helper.from_array(b, "b"), numpy_helper.from_array(a_zp, "azp"),
                    numpy_helper.from_array(b_zp, "bzp")])
    got, ref = _both(model, {"a": a})
    assert got["y"].dtype == np.int32
    np.testing.assert_array_equal(got["y"], ref["y"])


@pytest.mark.parametrize("pads", [[0, 0, 0, 0], [1, 1, 1, 1]])
def test_conv_integer(pads):
    x = RNG.integers(0, 255, (1, 3, 6, 6)).astype(np.uint8)
    w = RNG.integers(0, 255, (4, 3, 3, 3)).astype(np.uint8)
    model = _model([helper.make_node("ConvInteger", ["x", "w", "xzp", "wzp"], ["y"], pads=pads,
                                     strides=[1, 2])],
                   [_vi("x", TensorProto.UINT8, x.shape)],
                   [_vi("y", TensorProto.INT32, [1, 4, None, None])],
                   [numpy_helper.from_array(w, "w"),
                    numpy_helper.from_array(np.array(11, np.uint8), "xzp"),
                    numpy_helper.from_array(np.array(128, np.uint8), "wzp")])
    got, ref = _both(model, {"x": x})
    np.testing.assert_array_equal(got["y"], ref["y"])


@pytest.mark.parametrize("data", ["mixed", "positive", "zeros", "ties"])
def test_dynamic_quantize_linear(data):
    x = {"mixed": RNG.standard_normal((3, 7)) * 4, "positive": RNG.uniform(1, 3, (3, 7)),
         "zeros": np.zeros((3, 7)), "ties": np.linspace(-1.0, 1.55, 21).reshape(3, 7)}[data]
    x = x.astype(np.float32)
    model = _model([helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])],
                   [_vi("x", TensorProto.FLOAT, x.shape)],
                   [_vi("y", TensorProto.UINT8, [3, 7]), _vi("s", TensorProto.FLOAT, []),
                    _vi("z", TensorProto.UINT8, [])])
    got, ref = _both(model, {"x": x})
    np.testing.assert_allclose(got["s"], ref["s"], rtol=1e-7)
    np.testing.assert_array_equal(got["z"], ref["z"])
    np.testing.assert_array_equal(got["y"], ref["y"])


def _requant_close(got, ref):
    diff = np.abs(got.astype(np.int32) - ref.astype(np.int32))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.02, diff.max()


@pytest.mark.parametrize("per_column", [False, True])
def test_qlinear_matmul(per_column):
    a = RNG.integers(0, 255, (4, 6)).astype(np.uint8)
    b = RNG.integers(-128, 127, (6, 5)).astype(np.int8)
    b_scale = np.array([0.02, 0.03, 0.01, 0.05, 0.04], np.float32) if per_column else \
        np.array(0.03, np.float32)
    b_zp = np.zeros(5, np.int8) if per_column else np.array(0, np.int8)
    inits = [numpy_helper.from_array(v, n) for n, v in (
        ("as", np.array(0.05, np.float32)), ("az", np.array(120, np.uint8)), ("b", b),
        ("bs", b_scale), ("bz", b_zp), ("ys", np.array(0.4, np.float32)),
        ("yz", np.array(100, np.uint8)))]
    model = _model([helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys",
                                                       "yz"], ["y"])],
                   [_vi("a", TensorProto.UINT8, a.shape)], [_vi("y", TensorProto.UINT8, [4, 5])],
                   inits)
    got, ref = _both(model, {"a": a})
    _requant_close(got["y"], ref["y"])


@pytest.mark.parametrize("per_channel", [False, True])
def test_qlinear_conv(per_channel):
    x = RNG.integers(0, 255, (1, 2, 5, 5)).astype(np.uint8)
    w = RNG.integers(-127, 127, (3, 2, 3, 3)).astype(np.int8)
    w_scale = np.array([0.01, 0.02, 0.015], np.float32) if per_channel else \
        np.array(0.02, np.float32)
    w_zp = np.zeros(3, np.int8) if per_channel else np.array(0, np.int8)
    bias = np.array([100, -2000, 50], np.int32)
    inits = [numpy_helper.from_array(v, n) for n, v in (
        ("xs", np.array(0.05, np.float32)), ("xz", np.array(128, np.uint8)), ("w", w),
        ("ws", w_scale), ("wz", w_zp), ("ys", np.array(0.3, np.float32)),
        ("yz", np.array(90, np.uint8)), ("bias", bias))]
    model = _model([helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys",
                                                     "yz", "bias"], ["y"], pads=[1, 1, 1, 1])],
                   [_vi("x", TensorProto.UINT8, x.shape)],
                   [_vi("y", TensorProto.UINT8, [1, 3, 5, 5])],
                   inits)
    got, ref = _both(model, {"x": x})
    _requant_close(got["y"], ref["y"])


def test_dynamically_quantized_matmul_through_the_public_path(tmp_path):
    """DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul: what quantize_dynamic writes."""
    w = RNG.integers(-127, 127, (8, 4)).astype(np.int8)
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             helper.make_node("MatMulInteger", ["xq", "w", "xz", "wz"], ["acc"]),
             helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["xs", "ws"], ["scale"]),
             helper.make_node("Mul", ["accf", "scale"], ["y"])]
    model = _model(nodes, [_vi("x", TensorProto.FLOAT, [3, 8])], [_vi("y", TensorProto.FLOAT,
                                                                       [3, 4])],
                   [numpy_helper.from_array(w, "w"),
                    numpy_helper.from_array(np.array(0, np.int8), "wz"),
                    numpy_helper.from_array(np.array(0.01, np.float32), "ws")])
    x = RNG.standard_normal((3, 8)).astype(np.float32)
    qpc = aicc.compile(model, backend="interpreter", output=tmp_path / "m.qpc")
    got = aicc.load(qpc).run({"x": x})
    _, ref = _both(model, {"x": x})
    np.testing.assert_allclose(got["y"], ref["y"], rtol=1e-6, atol=1e-6)
