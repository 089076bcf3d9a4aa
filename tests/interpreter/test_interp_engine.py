"""The interpreter engine: up-front op checks, observers, intermediate outputs, freeing, precision,
opset-dependent attribute forms, error reporting, and the backend plugin around it."""

from __future__ import annotations

import tracemalloc

import numpy as np
import onnx
import onnx.parser
import pytest
from onnx import TensorProto, helper, numpy_helper

from aicc.backends.interpreter import InterpreterBackend, InterpreterExecutable
from aicc.backends.interpreter.engine import Interpreter
from aicc.errors import BackendError, ConfigError, DataError, ModelError
from aicc.options import build_options


def parse(text: str) -> onnx.ModelProto:
    model = onnx.parser.parse_model(text)
    onnx.checker.check_model(model)
    return model


def make(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def vi(name, elem=TensorProto.FLOAT, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


CHAIN = parse("""
<ir_version: 8, opset_import: ["" : 17]>
chain (float[2, 3] x) => (float[2, 3] y, float[2, 3] side)
      <float[2, 3] w = {1, 1, 1, 1, 1, 1}> {
    c = Constant <value = float[1] {2.0}> ()
    a = Mul (x, c)
    b = Relu (a)
    side = Neg (a)
    y = Add (b, w)
}
""")


# --- up-front op checks --------------------------------------------------------------------

def test_unsupported_nodes_are_all_reported_before_running():
    model = make(
        [helper.make_node("Relu", ["x"], ["a"], name="ok"),
         helper.make_node("FancyOp", ["a"], ["b"], name="fancy"),
         helper.make_node("Bar", ["b"], ["c"], name="custom", domain="com.example"),
         helper.make_node("NonMaxSuppression", ["c", "c"], ["y"], name="nms")],
        [vi("x", shape=[1, 1, 4])], [vi("y", TensorProto.INT64)])
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    expected = ["node 'fancy' (FancyOp)", "node 'custom' (com.example.Bar)",
                "node 'nms' (NonMaxSuppression)"]
    assert Interpreter.unsupported_nodes(model) == expected
    assert InterpreterBackend().unsupported_nodes(model) == expected
    with pytest.raises(BackendError) as info:
        Interpreter(model)
    text = str(info.value)
    assert "3 node(s)" in text and all(e in text for e in expected)


def test_an_op_version_older_than_the_kernel_is_reported():
    model = make([helper.make_node("Resize", ["x", "s"], ["y"], name="up")],
                 [vi("x", shape=[1, 1, 2, 2]), vi("s", shape=[4])], [vi("y")], opset=10)
    (problem,) = Interpreter.unsupported_nodes(model)
    assert problem.startswith("node 'up' (Resize)") and "opset 10" in problem


def test_supported_model_has_no_unsupported_nodes():
    assert Interpreter.unsupported_nodes(CHAIN) == []


# --- observers and outputs -----------------------------------------------------------------

def test_observer_sees_inputs_constants_and_every_produced_tensor_in_order():
    seen = []
    x = np.arange(6, dtype=np.float32).reshape(2, 3) - 2
    Interpreter(CHAIN).run({"x": x}, observe=lambda n, a: seen.append((n, a.copy())))
    names = [n for n, _ in seen]
    assert names[:2] == ["x", "c"]
    assert set(names[2:]) == {"a", "b", "side", "y"} and len(names) == 6
    assert names.index("a") < names.index("b") < names.index("y")
    values = dict(seen)
    np.testing.assert_array_equal(values["b"], np.maximum(2 * x, 0))


def test_observe_names_selects_tensors_and_may_name_an_initializer():
    seen = {}
    Interpreter(CHAIN).run({"x": np.ones((2, 3), np.float32)},
                           observe=lambda n, a: seen.__setitem__(n, a),
                           observe_names=["b", "w"])
    assert sorted(seen) == ["b", "w"]


def test_observe_names_must_exist():
    with pytest.raises(DataError, match="no tensor named 'bb'.*did you mean 'b'"):
        Interpreter(CHAIN).run({"x": np.ones((2, 3), np.float32)}, observe=print,
                               observe_names=["bb"])


def test_outputs_returns_intermediates_and_runs_only_what_they_need():
    interp = Interpreter(CHAIN)
    out = interp.run({"x": np.ones((2, 3), np.float32)}, outputs=["a", "side"])
    assert list(out) == ["a", "side"]
    np.testing.assert_array_equal(out["a"], np.full((2, 3), 2, np.float32))
    assert [s.op_type for s in interp.schedule(["side"])] == ["Mul", "Neg"]
    with pytest.raises(DataError, match="no tensor named 'nope'"):
        interp.run({"x": np.ones((2, 3), np.float32)}, outputs=["nope"])


def test_a_failing_branch_that_is_not_needed_does_not_run():
    model = parse("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[6] x) => (float[6] y, float[4, 4] bad) {
        y = Relu (x)
        shape = Constant <value = int64[2] {4, 4}> ()
        bad = Reshape (x, shape)
    }
    """)
    interp = Interpreter(model)
    assert interp.run({"x": np.ones(6, np.float32)}, outputs=["y"])["y"].shape == (6,)
    with pytest.raises(BackendError, match=r"Reshape\) failed on inputs \[float32\(6,\)"):
        interp.run({"x": np.ones(6, np.float32)})


# --- memory: intermediates die after their last consumer -----------------------------------

def test_schedule_frees_each_intermediate_once_after_its_last_consumer():
    interp = Interpreter(CHAIN)
    steps = interp.schedule()
    freed = [n for s in steps for n in s.frees]
    assert sorted(freed) == sorted(set(freed))
    assert "y" not in freed and "side" not in freed and "w" not in freed
    last_use = {}
    for i, s in enumerate(steps):
        for n in s.inputs:
            last_use[n] = i
    for i, s in enumerate(steps):
        for n in s.frees:
            assert last_use.get(n, i) == i, n


def test_memory_follows_the_live_set_on_a_long_chain():
    n_ops, shape = 12, (1024, 1024)  # 4 MiB per tensor; without freeing the chain holds 48 MiB
    nodes = [helper.make_node("Neg" if i % 2 else "Abs", [f"t{i}"], [f"t{i + 1}"])
             for i in range(n_ops)]
    model = make(nodes, [vi("t0", shape=list(shape))], [vi(f"t{n_ops}", shape=list(shape))])
    interp = Interpreter(model)
    interp.run({"t0": np.ones(shape, np.float32)})
    tracemalloc.start()
    try:
        interp.run({"t0": np.ones(shape, np.float32)})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 3.2 * 4 * 2 ** 20  # the feed, one input and one output at a time


# --- precision policy ------------------------------------------------------------------------

def test_fp16_matmul_and_reductions_accumulate_in_float32():
    model = make([helper.make_node("MatMul", ["a", "b"], ["m"]),
                  helper.make_node("ReduceSum", ["a"], ["s"], keepdims=0)],
                 [vi("a", TensorProto.FLOAT16, [1, 4096]), vi("b", TensorProto.FLOAT16, [4096, 1])],
                 [vi("m", TensorProto.FLOAT16), vi("s", TensorProto.FLOAT16)])
    ones = np.ones((1, 4096), np.float16)
    out = Interpreter(model).run({"a": ones, "b": ones.T.copy()})
    # fp16 accumulation would stall at 2048 (2048 + 1 rounds back to 2048)
    assert out["m"].dtype == np.float16 and out["m"].item() == 4096
    assert out["s"].dtype == np.float16 and out["s"].item() == 4096


def test_fp16_conv_rounds_once_from_the_float32_result():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 8, 6, 6)).astype(np.float16)
    w = rng.standard_normal((4, 8, 3, 3)).astype(np.float16)

    def conv(elem):
        return make([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                    [vi("x", elem, [1, 8, 6, 6]), vi("w", elem, [4, 8, 3, 3])], [vi("y", elem)])

    half = Interpreter(conv(TensorProto.FLOAT16)).run({"x": x, "w": w})["y"]
    full = Interpreter(conv(TensorProto.FLOAT)).run({"x": x.astype(np.float32),
                                                     "w": w.astype(np.float32)})["y"]
    assert half.dtype == np.float16
    np.testing.assert_array_equal(half, full.astype(np.float16))


def test_integer_ops_stay_integer_and_division_truncates():
    model = make([helper.make_node("Div", ["a", "b"], ["q"]),
                  helper.make_node("Add", ["a", "a"], ["s"]),
                  helper.make_node("ReduceSum", ["a"], ["r"], keepdims=0),
                  helper.make_node("CumSum", ["a", "axis"], ["c"])],
                 [vi("a", TensorProto.INT8, [4]), vi("b", TensorProto.INT8, [4])],
                 [vi("q", TensorProto.INT8), vi("s", TensorProto.INT8), vi("r", TensorProto.INT8),
                  vi("c", TensorProto.INT8)],
                 [numpy_helper.from_array(np.array(0, np.int64), "axis")])
    a = np.array([-7, 7, -7, 100], np.int8)
    b = np.array([2, -2, -2, 3], np.int8)
    out = Interpreter(model).run({"a": a, "b": b})
    assert all(v.dtype == np.int8 for v in out.values())
    np.testing.assert_array_equal(out["q"], [-3, -3, 3, 33])
    np.testing.assert_array_equal(out["s"], [-14, 14, -14, -56])  # 200 wraps to -56
    assert out["r"].item() == 93
    np.testing.assert_array_equal(out["c"], np.cumsum(a, dtype=np.int8))


def test_pow_keeps_the_base_dtype():
    model = make([helper.make_node("Pow", ["x", "e"], ["y"])],
                 [vi("x", TensorProto.FLOAT, [3]), vi("e", TensorProto.INT64, [3])], [vi("y")])
    out = Interpreter(model).run({"x": np.array([2, 3, 4], np.float32),
                                  "e": np.array([2, 0, -1], np.int64)})["y"]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [4, 1, 0.25])


# --- attributes that became inputs across opsets ----------------------------------------------

X = np.arange(24, dtype=np.float32).reshape(2, 3, 4)


def _i64(name, values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


OPSET_FORMS = {
    "Split": [
        (11, dict(axis=2, split=[1, 3]), [], ()),
        (13, dict(axis=2), ["sp"], [_i64("sp", [1, 3])]),
    ],
    "Squeeze": [
        (11, dict(axes=[0]), [], ()),
        (13, {}, ["ax"], [_i64("ax", [0])]),
    ],
    "Unsqueeze": [
        (11, dict(axes=[0, -1]), [], ()),
        (13, {}, ["ax"], [_i64("ax", [0, -1])]),
    ],
    "ReduceMean": [
        (13, dict(axes=[1, 2], keepdims=0), [], ()),
        (18, dict(keepdims=0), ["ax"], [_i64("ax", [1, 2])]),
    ],
    "ReduceSum": [
        (11, dict(axes=[-1]), [], ()),
        (13, {}, ["ax"], [_i64("ax", [-1])]),
    ],
    "Clip": [
        (6, dict(min=3.0, max=10.0), [], ()),
        (13, {}, ["lo", "hi"], [numpy_helper.from_array(np.array(3, np.float32), "lo"),
                               numpy_helper.from_array(np.array(10, np.float32), "hi")]),
    ],
    "Pad": [
        (2, dict(pads=[0, 1, 0, 0, 0, 2], mode="edge"), [], ()),
        (13, dict(mode="edge"), ["p"], [_i64("p", [0, 1, 0, 0, 0, 2])]),
        (18, dict(mode="edge"), ["p", "", "ax"], [_i64("p", [1, 0, 0, 2]), _i64("ax", [1, -1])]),
    ],
    "Slice": [
        (1, dict(starts=[1, -3], ends=[3, 100], axes=[1, 2]), [], ()),
        (13, {}, ["s", "e", "ax"], [_i64("s", [1, -3]), _i64("e", [3, 100]), _i64("ax", [1, 2])]),
    ],
}


@pytest.mark.parametrize("op", sorted(OPSET_FORMS))
def test_attribute_and_input_forms_agree_across_opsets(op):
    results = []
    for opset, attrs, extra, inits in OPSET_FORMS[op]:
        outs = ["y", "z"] if op == "Split" else ["y"]
        x = X[:1] if op == "Squeeze" else X
        model = make([helper.make_node(op, ["x"] + extra, outs, **attrs)],
                     [vi("x", shape=list(x.shape))], [vi(o) for o in outs], inits, opset=opset)
        assert not Interpreter.unsupported_nodes(model)
        results.append(Interpreter(model).run({"x": x}))
    for other in results[1:]:
        assert list(other) == list(results[0])
        for name in other:
            np.testing.assert_array_equal(other[name], results[0][name])


# --- graph structure and errors ----------------------------------------------------------------

def test_nodes_out_of_order_are_sorted():
    model = make([helper.make_node("Neg", ["a"], ["y"]), helper.make_node("Abs", ["x"], ["a"])],
                 [vi("x", shape=[2])], [vi("y", shape=[2])])
    out = Interpreter(model).run({"x": np.array([-1, 2], np.float32)})
    np.testing.assert_array_equal(out["y"], [-1, -2])


def test_dangling_input_is_a_model_error():
    model = make([helper.make_node("Add", ["x", "ghost"], ["y"], name="add")],
                 [vi("x", shape=[2])], [vi("y", shape=[2])])
    with pytest.raises(ModelError, match="node 'add' \\(Add\\): input 'ghost'"):
        Interpreter(model)


def test_bad_attribute_is_reported_at_construction():
    model = make([helper.make_node("Gelu", ["x"], ["y"], name="g", approximate="erf")],
                 [vi("x", shape=[2])], [vi("y", shape=[2])], opset=20)
    with pytest.raises(ModelError, match="node 'g' \\(Gelu\\).*approximate"):
        Interpreter(model)


def test_output_dtype_contradicting_the_model_is_reported():
    model = make([helper.make_node("Cast", ["x"], ["y"], name="cast", to=TensorProto.DOUBLE)],
                 [vi("x", shape=[2])], [vi("y", TensorProto.FLOAT, [2])])
    with pytest.raises(BackendError, match="node 'cast' \\(Cast\\): output 'y' has dtype float64"):
        Interpreter(model).run({"x": np.ones(2, np.float32)})


def test_check_types_compares_intermediates_with_value_info():
    model = make([helper.make_node("Relu", ["x"], ["a"], name="r"),
                  helper.make_node("Neg", ["a"], ["y"])],
                 [vi("x", shape=[2, 3])], [vi("y", shape=[2, 3])])
    model.graph.value_info.append(vi("a", shape=[3, 2]))
    Interpreter(model).run({"x": np.ones((2, 3), np.float32)})  # not checked by default
    with pytest.raises(BackendError, match="node 'r' \\(Relu\\): output 'a' has shape"):
        Interpreter(model, check_types=True).run({"x": np.ones((2, 3), np.float32)})


def test_local_functions_are_inlined():
    model = parse("""
    <ir_version: 8, opset_import: ["" : 17, "local" : 1]>
    g (float[3] x) => (float[3] y) {
        y = local.Twice (x)
    }
    <domain: "local", opset_import: ["" : 17]>
    Twice (a) => (b) {
        b = Add (a, a)
    }
    """)
    out = Interpreter(model).run({"x": np.array([1, 2, 3], np.float32)})
    np.testing.assert_array_equal(out["y"], [2, 4, 6])


def test_returned_outputs_never_alias_weights():
    out = Interpreter(CHAIN).run({"x": np.ones((2, 3), np.float32)}, outputs=["w"])
    out["w"][0, 0] = 5  # a copy: the interpreter's weights stay read-only and intact
    again = Interpreter(CHAIN).run({"x": np.ones((2, 3), np.float32)}, outputs=["w"])
    assert again["w"][0, 0] == 1


# --- the backend plugin --------------------------------------------------------------------

def test_backend_is_registered_through_the_hook():
    from aicc.backends import interpreter
    from aicc.registry import Registry

    registry = Registry("backend")
    interpreter.aicc_register_backends(registry)
    assert registry.get("interpreter").cls is InterpreterBackend


def test_backend_compiles_and_runs_with_declared_dtypes():
    backend = InterpreterBackend(build_options(InterpreterBackend.Options, {"profile": True},
                                               owner="backend 'interpreter'"))
    exe = backend.compile(CHAIN, program_meta={}, spec_options={})
    assert isinstance(exe, InterpreterExecutable)
    out = exe.run({"x": np.ones((2, 3), np.float32)})
    assert list(out) == ["y", "side"] and all(v.dtype == np.float32 for v in out.values())
    stats = exe.stats()
    assert stats["runs"] == 1 and "Mul" in stats["op_time_s"]
    assert {"float16", "float32", "int8", "uint8", "int4"} <= InterpreterBackend.dtypes


def test_backend_options_are_strict():
    with pytest.raises(ConfigError, match="unknown option 'check_type'"):
        build_options(InterpreterBackend.Options, {"check_type": True}, owner="backend")


def test_softmax_before_opset_13_coerces_to_2d():
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    model = make([helper.make_node("Softmax", ["x"], ["y"])], [vi("x", shape=[2, 3, 4])],
                 [vi("y")], opset=11)  # default axis 1: softmax over the last 12 values
    y = Interpreter(model).run({"x": x})["y"]
    flat = x.reshape(2, 12)
    ref = np.exp(flat - flat.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    np.testing.assert_allclose(y, ref.reshape(2, 3, 4), rtol=1e-6)


def test_cycle_is_a_model_error():
    model = make([helper.make_node("Neg", ["b"], ["a"], name="first"),
                  helper.make_node("Neg", ["a"], ["b"], name="second")],
                 [vi("x", shape=[2])], [vi("b", shape=[2])])
    with pytest.raises(ModelError, match="cycle"):
        Interpreter(model)
