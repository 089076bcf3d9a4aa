"""int32-sandwich: the seed's graph (DQ -> Cast(INT32) -> op -> Cast(FLOAT) -> Q), the float-program
form, numerics on both reference backends, sentinel narrowing, and every refusal."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from aicc import ir
from aicc.cli import main
from aicc.errors import ConfigError
from aicc.passes.quantization.int32_sandwich import narrow_int64
from aicc.testing import run_model, run_pass

I64_MAX, I64_MIN = 2 ** 63 - 1, -(2 ** 63)


def _model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return ir.load_model(model.SerializeToString())


def _f(name, shape):
    return helper.make_tensor_value_info(name, TP.FLOAT, shape)


def add_slice_model(starts=(1,), ends=(I64_MAX,), steps=(1,)):
    """x + y -> s; Slice(s, starts, ends, axes=[1], steps) -> z; Relu(z) -> out."""
    nodes = [helper.make_node("Add", ["x", "y"], ["s"], name="add"),
             helper.make_node("Slice", ["s", "st", "en", "ax", "sp"], ["z"], name="slice"),
             helper.make_node("Relu", ["z"], ["out"], name="relu")]
    n = len(range(*slice(starts[0], None if ends[0] in (I64_MAX, I64_MIN) else ends[0],
                         steps[0]).indices(6)))
    return _model(nodes, [_f("x", [2, 6]), _f("y", [2, 6])], [_f("out", [2, n])],
                  [numpy_helper.from_array(np.array(starts, np.int64), "st"),
                   numpy_helper.from_array(np.array(ends, np.int64), "en"),
                   numpy_helper.from_array(np.array([1], np.int64), "ax"),
                   numpy_helper.from_array(np.array(steps, np.int64), "sp")])


def encodings(tmp_path, names, form="0.6.1", extra=None):
    if form == "0.6.1":
        acts = {n: [{"bitwidth": 32, "dtype": "int"}] for n in names}
        acts.update(extra or {})
        data = {"version": "0.6.1", "activation_encodings": acts, "param_encodings": {}}
    else:
        data = {"version": "1.0.0", "activation_encodings": [
            {"name": n, "dtype": "INT", "enc_type": "PER_TENSOR", "bw": 32, "is_sym": True,
             "scale": [1.0], "offset": [0]} for n in names], "param_encodings": []}
    path = tmp_path / "enc.json"
    path.write_text(json.dumps(data))
    return str(path)


def _ops(program):
    return [(n.op, n.name) for n in program.graphs["default"].nodes]


def test_float_program_sandwich_graph_and_numbers(tmp_path):
    model = add_slice_model()
    program = run_pass(model, "int32-sandwich",
                       {"overrides": encodings(tmp_path, ["x", "y", "s", "z"])})
    graph = program.graphs["default"]
    ops = [n.op for n in graph.nodes]
    assert ops == ["Cast", "Cast", "Add", "Slice", "Cast", "Relu"]   # no Cast pair between
    add = next(n for n in graph.nodes if n.op == "Add")
    slc = next(n for n in graph.nodes if n.op == "Slice")
    assert [str(ir.tensor_dtype(t)) for t in add.inputs + slc.inputs] == ["int32"] * 7
    assert slc.inputs[2].values.tolist() == [2 ** 31 - 1]           # INT64_MAX sentinel clamped
    back = next(n for n in graph.nodes if n.op == "Cast" and n.outputs[0].name == "z")
    assert back.attrs["to"] == TP.FLOAT
    assert program.node_precision == {"add": "int32", "slice": "int32"}
    rng = np.random.default_rng(0)
    x = rng.uniform(-9, 9, (2, 6)).astype(np.float32)
    y = rng.uniform(-9, 9, (2, 6)).astype(np.float32)
    for backend in ("cpu", "interpreter"):
        got = run_model(program.to_model(), {"x": x, "y": y}, backend=backend)["out"]
        # Cast(float -> int32) truncates toward zero: the op then adds integers
        ref = run_model(model, {"x": np.trunc(x), "y": np.trunc(y)}, backend=backend)["out"]
        np.testing.assert_array_equal(got, ref)
        integral = run_model(program.to_model(), {"x": np.trunc(x), "y": np.trunc(y)},
                             backend=backend)["out"]
        np.testing.assert_array_equal(integral, ref)


def test_int64_min_sentinel_with_a_negative_step(tmp_path):
    model = add_slice_model(starts=(-1,), ends=(I64_MIN,), steps=(-1,))
    program = run_pass(model, "int32-sandwich",
                       {"overrides": encodings(tmp_path, ["x", "y", "s", "z"], form="1.0.0")})
    slc = next(n for n in program.graphs["default"].nodes if n.op == "Slice")
    assert slc.inputs[2].values.tolist() == [-(2 ** 31)]
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    y = np.ones((2, 6), np.float32)
    for backend in ("cpu", "interpreter"):
        got = run_model(program.to_model(), {"x": x, "y": y}, backend=backend)["out"]
        np.testing.assert_array_equal(got, (x + y)[:, ::-1])


def test_out_of_range_int64_constant_is_refused(tmp_path):
    model = add_slice_model(ends=(2 ** 40,))
    with pytest.raises(ConfigError, match="node 'slice' \\(Slice\\): input 'en': int64 constant "
                                          "value 1099511627776 does not fit int32"):
        run_pass(model, "int32-sandwich", {"overrides": encodings(tmp_path, ["x", "y", "s", "z"])})


def test_narrow_int64_rules():
    np.testing.assert_array_equal(narrow_int64(np.array([I64_MAX, 3, I64_MIN]), op="Slice",
                                               index=2, where="w"), [2 ** 31 - 1, 3, -(2 ** 31)])
    with pytest.raises(ConfigError, match="does not fit int32"):
        narrow_int64(np.array([I64_MAX]), op="Slice", index=3, where="w")   # axes: no sentinel
    with pytest.raises(ConfigError, match="-2147483649"):
        narrow_int64(np.array([-(2 ** 31) - 1]), op="Slice", index=1, where="w")


def test_quantized_program_gets_the_seeds_graph(tmp_path):
    """DQ -> Op2 -> Q becomes DQ -> Cast(INT32) -> Op2 -> Cast(FLOAT) -> Q."""
    inits = [numpy_helper.from_array(np.array(0.5, np.float32), "sc"),
             numpy_helper.from_array(np.array(0, np.int8), "zp")]
    nodes = [helper.make_node("DequantizeLinear", ["q", "sc", "zp"], ["a"], name="dq"),
             helper.make_node("Neg", ["a"], ["b"], name="op2"),
             helper.make_node("QuantizeLinear", ["b", "sc", "zp"], ["q2"], name="quant")]
    model = _model(nodes, [helper.make_tensor_value_info("q", TP.INT8, [4])],
                   [helper.make_tensor_value_info("q2", TP.INT8, [4])], inits)
    program = run_pass(model, "int32-sandwich", {"overrides": encodings(tmp_path, ["a", "b"])})
    graph = program.graphs["default"]
    chain = [(n.op, n.attrs.get("to")) for n in graph.nodes]
    assert chain == [("DequantizeLinear", None), ("Cast", TP.INT32), ("Neg", None),
                     ("Cast", TP.FLOAT), ("QuantizeLinear", None)]
    q = np.array([-7, -1, 3, 100], np.int8)
    for backend in ("cpu", "interpreter"):
        got = run_model(program.to_model(), {"q": q}, backend=backend)["q2"]
        # dequantized values -3.5, -0.5, 1.5, 50 truncate to -3, 0, 1, 50 before the Neg
        np.testing.assert_array_equal(got, [6, 0, -2, -100])


@pytest.mark.parametrize("case,match", [
    ("weights", "node 'add' \\(Add\\) cannot run in INT32: INT32 overrides are only supported "
                "for ops which do not have weights and bias \\(it reads the constant 'c'\\)"),
    ("partial", "the INT32 override of 'x' applies to no op: node 'add' \\(Add\\) also reads or "
                "writes 'y', which has no INT32 override"),
    ("unknown", "INT32 override for 'nope', which is not a tensor of the model"),
    ("none", "no INT32 overrides"),
    ("float_only", "node 'sqrt' \\(Sqrt\\) cannot run in INT32: Sqrt does not take int32"),
    ("int8_input", "input 'q' is a quantized int8 tensor; INT32 needs it dequantized first"),
])
def test_refusals(tmp_path, case, match):
    if case == "weights":
        model = _model([helper.make_node("Add", ["x", "c"], ["s"], name="add")],
                       [_f("x", [3])], [_f("s", [3])],
                       [numpy_helper.from_array(np.ones(3, np.float32), "c")])
        names = ["x", "s"]
    elif case == "float_only":
        model = _model([helper.make_node("Sqrt", ["x"], ["s"], name="sqrt")],
                       [_f("x", [3])], [_f("s", [3])])
        names = ["x", "s"]
    elif case == "int8_input":
        model = _model([helper.make_node("Neg", ["q"], ["n"], name="neg")],
                       [helper.make_tensor_value_info("q", TP.INT8, [3])],
                       [helper.make_tensor_value_info("n", TP.INT8, [3])])
        names = ["q", "n"]
    else:
        model = add_slice_model()
        names = {"partial": ["x", "s"], "unknown": ["nope"], "none": []}[case]
    extra = {"x": [{"bitwidth": 8, "dtype": "int", "min": -1.0, "max": 1.0}]} \
        if case == "none" else None
    with pytest.raises(ConfigError, match=match):
        run_pass(model, "int32-sandwich", {"overrides": encodings(tmp_path, names, extra=extra)})


def test_pass_needs_overrides_and_reads_quant_overrides(tmp_path):
    with pytest.raises(ConfigError, match="needs the overrides file"):
        run_pass(add_slice_model(), "int32-sandwich")
    from aicc.program import Program

    program = Program.from_model(add_slice_model())
    program.encodings["int32"] = ["x", "y", "s", "z"]        # as quant-overrides leaves them
    program = run_pass(program, "int32-sandwich")
    assert program.node_precision == {"add": "int32", "slice": "int32"}


def test_bad_overrides_file_is_refused(tmp_path):
    (tmp_path / "enc.json").write_text('{"activation_encodings": {}, "param_encodings": {}, '
                                       '"activation_encodings": {}}')
    with pytest.raises(ConfigError, match="duplicate key"):
        run_pass(add_slice_model(), "int32-sandwich", {"overrides": str(tmp_path / "enc.json")})


def test_from_the_command_line(tmp_path, capsys):
    model_path = tmp_path / "m.onnx"
    model_path.write_bytes(add_slice_model().SerializeToString())
    enc = encodings(tmp_path, ["x", "y", "s", "z"])
    qpc = tmp_path / "q"
    assert main(["compile", f"-m={model_path}", "--passes",
                 f"fold-constants,int32-sandwich{{overrides={enc}}},cleanup",
                 f"-aic-binary-dir={qpc}", "-compile-only"]) == 0
    import aicc
    meta = aicc.load(qpc).program_meta
    assert meta["node_precision"] == {"add": "int32", "slice": "int32"}
    x = np.full((2, 6), 2.7, np.float32)
    out = aicc.load(qpc).run({"x": x, "y": x})["out"]
    np.testing.assert_array_equal(out, np.full((2, 5), 4.0, np.float32))
