"""aic100 numerics against the interpreter: int8 within one quantization step (integer kernels
with int32 accumulators and fixed-point requantization), fp16 within fp16 tolerance, and the
same results whatever the partition."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from aic100_models import bind, compile_aic, interp, qdq_op_model, to_fp16, to_int8
from aicc.backends.aic100.numerics import fixed_point_multiplier, requantize
from aicc.backends.aic100.workloads import resnet50
from aicc.backends.interpreter.engine import Interpreter
from aicc.errors import BackendError

Y_SCALE = 0.08  # output scale of qdq_op_model


# --- fixed-point requantization ------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-(1 << 31), (1 << 31) - 1), min_size=1, max_size=32),
       st.floats(1e-7, 4.0), st.integers(-20, 20))
def test_requantize_is_rounding_of_the_real_product(acc, mult, zero):
    acc = np.array(acc, np.int64)
    got = requantize(acc, np.array([mult]), zero, np.dtype(np.int8), 0).astype(np.int64)
    exact = acc.astype(np.float64) * mult
    ref = np.clip(np.floor(exact + 0.5) + zero, -128, 127)
    assert np.abs(got - ref).max() <= 1
    far = np.abs(exact - np.floor(exact) - 0.5) > 1e-6 * (1 + np.abs(exact))
    assert np.array_equal(got[far], ref[far])


def test_fixed_point_multiplier_decomposition():
    mult = np.array([1e-6, 0.0123, 0.5, 0.999999, 1.0, 3.7])
    mant, shift = fixed_point_multiplier(mult)
    assert np.all((mant >= 1 << 30) & (mant < 1 << 31))
    np.testing.assert_allclose(mant * 2.0 ** -shift.astype(float), mult, rtol=2 ** -30)
    with pytest.raises(BackendError, match="requantization scale"):
        fixed_point_multiplier(np.array([0.0]))


# --- single quantized ops -----------------------------------------------------------------

CASES = [
    dict(op="Conv"), dict(op="Conv", act="Relu"), dict(op="Conv", act="Clip"),
    dict(op="Conv", per_channel=False, x_dtype=np.int8, x_zero=-5),
    dict(op="Conv", stride=2, dilation=2, spatial=11), dict(op="Conv", group=2),
    dict(op="Conv", group=8, cout=8), dict(op="Conv", group=4, cout=8, act="Relu"),
    dict(op="Gemm"), dict(op="Gemm", trans_b=0, act="Relu"), dict(op="Gemm", per_channel=False),
    dict(op="MatMul"), dict(op="MatMul", act="Clip", x_dtype=np.int8, x_zero=0),
]


def _ident(case):
    return "-".join(f"{k}={v.__name__ if isinstance(v, type) else v}" for k, v in case.items())


@pytest.mark.parametrize("case", CASES, ids=_ident)
def test_quantized_op_within_one_step(case):
    model = qdq_op_model(**case)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    feeds = {"x": (np.random.default_rng(1).standard_normal(shape) * 3).astype(np.float32)}
    ref = interp(model, feeds)["y"]
    results = []
    for cores, ols in ((1, 1), (3, 1), (4, 2)):
        exe = compile_aic(model, num_cores=cores, ols=ols)
        main = next(sp for sp in exe.plan.steps if sp.step.name == "main")
        assert main.step.integer is not None and main.step.precision == "int8"
        out = exe.run(feeds)["y"]
        assert out.dtype == ref.dtype and out.shape == ref.shape
        assert np.abs(out - ref).max() <= Y_SCALE * 1.0001
        results.append(out)
    # the partition never changes an integer result
    assert all(np.array_equal(results[0], r) for r in results[1:])


def test_bias_on_its_own_scale_is_rescaled_to_the_accumulator():
    model = qdq_op_model("Conv")
    for init in model.graph.initializer:
        if init.name == "b_s":
            init.CopyFrom(numpy_helper.from_array(np.full(12, 0.01, np.float32), "b_s"))
    feeds = {"x": np.random.default_rng(2).standard_normal((2, 8, 9, 9)).astype(np.float32)}
    exe = compile_aic(model)
    main = next(sp for sp in exe.plan.steps if sp.step.name == "main")
    assert main.step.integer.bias_rescaled
    assert np.abs(exe.run(feeds)["y"] - interp(model, feeds)["y"]).max() <= Y_SCALE * 1.0001


def test_int32_accumulator_saturates_and_is_counted():
    k = 140_000  # 127 x 127 x 140000 > 2**31
    nodes = [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "s", "z"], ["wd"]),
             helper.make_node("MatMul", ["xd", "wd"], ["m"], name="main"),
             helper.make_node("QuantizeLinear", ["m", "s", "z"], ["y"])]
    inits = [numpy_helper.from_array(np.full((k, 1), 127, np.int8), "w"),
             numpy_helper.from_array(np.array(1e-3, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z")]
    graph = helper.make_graph(nodes, "sat", [helper.make_tensor_value_info(
        "x", TensorProto.INT8, [1, k])], [helper.make_tensor_value_info(
            "y", TensorProto.INT8, [1, 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    exe = compile_aic(model)
    out = exe.run({"x": np.full((1, k), 127, np.int8)})["y"]
    assert out.item() == 127 and exe.stats()["simulated"]["int32_saturations"] == 1


def test_float_op_between_dq_and_q_runs_like_the_interpreter():
    s = numpy_helper.from_array(np.array(0.02, np.float32), "s")
    z = numpy_helper.from_array(np.array(0, np.int8), "z")
    nodes = [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["xd"]),
             helper.make_node("Softmax", ["xd"], ["p"], axis=-1, name="softmax"),
             helper.make_node("QuantizeLinear", ["p", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "sm", [helper.make_tensor_value_info(
        "x", TensorProto.INT8, [4, 16])], [helper.make_tensor_value_info(
            "y", TensorProto.INT8, [4, 16])], [s, z])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).integers(-128, 127, (4, 16)).astype(np.int8)
    exe = compile_aic(model, num_cores=2)
    assert exe.plan.steps[0].step.precision == "fp32"
    assert np.array_equal(exe.run({"x": x})["y"], interp(model, {"x": x})["y"])


# --- float32 refused ----------------------------------------------------------------------

def test_float32_compute_is_refused_with_the_fix(example_model_path, registries):
    model = bind(onnx.load(example_model_path), 2, registries)
    with pytest.raises(BackendError, match=r"compute in float32, which the AIC100 does not: "
                                           r"node 'conv0' \(Conv\).*compile with fp16 \(the vendor"):
        compile_aic(model)


# --- the example model --------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits(example_model_path):
    images = np.load(example_model_path.parent / "data" / "digits_test_images.npy")
    return onnx.load(example_model_path), images.astype(np.float32)


def test_example_model_fp16(digits, registries):
    model, images = digits
    fp16 = bind(to_fp16(model, registries), 8, registries)
    feeds = {"image": images[:8]}
    ref = interp(fp16, feeds)["logits"]
    for cores in (1, 4):
        exe = compile_aic(fp16, num_cores=cores)
        assert {sp.step.precision for sp in exe.plan.steps if sp.step.kind == "tensor"} == \
            {"fp16"}
        out = exe.run(feeds)["logits"]
        np.testing.assert_allclose(out, ref, rtol=1e-2, atol=1e-2 * np.abs(ref).max())
    float_ref = interp(bind(model, 8, registries), feeds)["logits"]
    assert (out.argmax(1) == float_ref.argmax(1)).mean() >= 0.99


def test_example_model_int8_within_one_step(digits, registries):
    if "quantize" not in registries.passes:
        pytest.skip("the quantize pass is not registered")
    model, images = digits
    samples = [{"image": images[i:i + 1]} for i in range(100, 132)]
    qdq = bind(to_int8(model, samples, registries), 4, registries)
    scale = next(numpy_helper.to_array(i) for i in qdq.graph.initializer
                 if i.name == "logits_scale")
    outs = []
    for cores in (1, 2, 4):
        exe = compile_aic(qdq, num_cores=cores)
        tensor_steps = [sp for sp in exe.plan.steps if sp.step.kind == "tensor"]
        assert tensor_steps and all(sp.step.integer is not None for sp in tensor_steps)
        for start in range(0, 16, 4):
            feeds = {"image": images[start:start + 4]}
            out = exe.run(feeds)["logits"]
            ref = interp(qdq, feeds)["logits"]
            assert np.abs(out - ref).max() <= float(scale) * 1.0001
            outs.append(out)
    assert all(np.array_equal(outs[i], outs[i % 4]) for i in range(len(outs)))


# --- a ResNet-50-shaped graph (reduced for speed: 64x64, a quarter of the channels) ---------

@pytest.fixture(scope="module")
def resnet():
    return resnet50(batch="N", image=64, width=0.25, classes=100, seed=3)


def test_resnet_shaped_fp16(resnet, registries):
    fp16 = bind(to_fp16(resnet, registries), 2, registries)
    feeds = {"image": np.random.default_rng(0).standard_normal((2, 3, 64, 64))
             .astype(np.float32)}
    ref = interp(fp16, feeds)["logits"]
    exe = compile_aic(fp16, num_cores=4, ols=2)
    out = exe.run(feeds)["logits"]
    np.testing.assert_allclose(out, ref, rtol=1e-2, atol=1e-2 * np.abs(ref).max())


def test_resnet_shaped_int8_op_by_op(resnet, registries):
    """Every step, fed the interpreter's own inputs, is within one step of the interpreter's
    output; end to end, the rare one-step differences drift through 53 layers but stay
    small."""
    if "quantize" not in registries.passes:
        pytest.skip("the quantize pass is not registered")
    rng = np.random.default_rng(0)
    samples = [{"image": rng.standard_normal((1, 3, 64, 64)).astype(np.float32)}
               for _ in range(4)]
    qdq = bind(to_int8(resnet, samples, registries), 2, registries)
    feeds = {"image": rng.standard_normal((2, 3, 64, 64)).astype(np.float32)}
    seen: dict[str, np.ndarray] = {}
    ref = Interpreter(qdq).run(feeds, observe=lambda n, v: seen.__setitem__(n, v))["logits"]
    exe = compile_aic(qdq, num_cores=4)
    checked = 0
    for index, sp in enumerate(exe.plan.steps):
        got = exe.runner.step_outputs(index, seen)
        for name, value in got.items():
            expected = seen[name]
            assert value.dtype == expected.dtype, name
            diff = np.abs(value.astype(np.float64) - expected.astype(np.float64))
            if value.dtype.kind in "iu":
                assert diff.max() <= 1, (sp.step.name, name, diff.max())
                checked += sp.step.integer is not None
            else:
                assert diff.max() <= 1e-6 * (1 + np.abs(expected).max()), (sp.step.name, name)
    assert checked >= 50  # every convolution and the classifier ran as integer steps
    out = exe.run(feeds)["logits"]
    assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.98


# --- fp16 tensor ops of every shape the engine cuts ----------------------------------------

def _fp16_model(node, x_shape, inits):
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT16, x_shape)], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT16, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


def _w(rng, *shape):
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float16), "w")


FP16_CASES = {
    "conv1d": lambda r: _fp16_model(helper.make_node("Conv", ["x", "w"], ["y"], name="main",
                                                     pads=[2, 1], strides=[2]),
                                    [2, 4, 17], [_w(r, 6, 4, 3)]),
    "grouped": lambda r: _fp16_model(helper.make_node("Conv", ["x", "w"], ["y"], name="main",
                                                      group=2, pads=[1, 1, 1, 1]),
                                     [1, 8, 10, 10], [_w(r, 6, 4, 3, 3)]),
    "depthwise-dilated": lambda r: _fp16_model(
        helper.make_node("Conv", ["x", "w"], ["y"], name="main", group=8, dilations=[2, 2],
                         auto_pad="SAME_UPPER"), [2, 8, 9, 9], [_w(r, 8, 1, 3, 3)]),
    "gemm-transposed": lambda r: _fp16_model(
        helper.make_node("Gemm", ["x", "w", "c"], ["y"], name="main", transA=1, alpha=0.5,
                         beta=2.0), [6, 5],
        [_w(r, 6, 7), numpy_helper.from_array(np.ones(7, np.float16), "c")]),
    "batched-matmul": lambda r: _fp16_model(
        helper.make_node("MatMul", ["x", "w"], ["y"], name="main"), [2, 3, 5, 6],
        [_w(r, 6, 9)]),
}


@pytest.mark.parametrize("name", sorted(FP16_CASES))
def test_fp16_tensor_ops_match_the_interpreter_on_any_split(name):
    rng = np.random.default_rng(0)
    model = FP16_CASES[name](rng)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    feeds = {"x": rng.standard_normal(shape).astype(np.float16)}
    ref = interp(model, feeds)["y"]
    for cores, ols in ((1, 1), (3, 1), (2, 3)):
        exe = compile_aic(model, num_cores=cores, ols=ols)
        assert exe.plan.steps[0].step.precision == "fp16"
        out = exe.run(feeds)["y"]
        assert out.dtype == np.float16 and out.shape == ref.shape
        np.testing.assert_allclose(out.astype(np.float32), ref.astype(np.float32), rtol=2e-3,
                                   atol=2e-3)
