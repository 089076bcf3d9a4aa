"""Today's onnx (1.23: IR version 14, opset 28) through the public path: regression tests for
Cast to 2/4-bit integers per opset, Shape(start/end) folding, bfloat16/float8 I/O, IR and opset
lowering for onnxruntime, old opsets converted, and non-tensor I/O refused."""

from __future__ import annotations

import logging

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import aicc
from aicc.data import read_tensor_file
from aicc.errors import BackendError, ModelError
from aicc.ort_compat import for_onnxruntime, needed_ir_version
from aicc.program import TensorDesc


def _model(nodes, inputs, outputs, *, opset=17, ir=8, inits=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    return model


def _run(model, feeds, backend="interpreter", tmp_path=None):
    out = tmp_path / f"{backend}.qpc" if tmp_path is not None else None
    return aicc.load(aicc.compile(model, backend=backend, output=out)).run(feeds)


def _compiled_ops(path):
    return [n.op_type for n in onnx.load(str(path / "default" / "model.onnx")).graph.node]


# --- Cast / CastLike to 2- and 4-bit integers follow the model's opset -------------------------

_X = np.array([-9.0, -8.5, 1.5, 2.5, 7.6, 16.0, np.nan, np.inf], np.float32)


@pytest.mark.parametrize("backend", ["interpreter", "cpu"])
@pytest.mark.parametrize("opset, expected", [
    (21, [-8, -8, 2, 2, 7, 7, 0, 7]),    # Cast-21: round half to even, then saturate
    (25, [0, -8, 1, 2, 7, 0, 0, 0]),     # Cast-25 on: truncate; out of range, NaN, inf give 0
    (28, [0, -8, 1, 2, 7, 0, 0, 0]),
])
def test_cast_float_to_int4_follows_the_opset(opset, expected, backend):
    """On cpu too: onnxruntime's own Cast rounds half away from zero and wraps (ort_casts)."""
    model = _model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT4)],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8])],
                   [helper.make_tensor_value_info("y", TensorProto.INT4, [8])],
                   opset=opset, ir=10 if opset < 25 else 13)
    got = _run(model, {"x": _X}, backend)["y"]
    assert got.dtype == np.dtype(ml_dtypes.int4)
    assert got.astype(np.int8).tolist() == expected


@pytest.mark.parametrize("backend", ["interpreter", "cpu"])
def test_castlike_to_uint2_follows_the_opset(backend):
    x = np.array([-1.0, 1.5, 3.0, 4.0], np.float16)
    like = np.zeros(1, ml_dtypes.uint2)
    model = _model([helper.make_node("CastLike", ["x", "l"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [4]),
                    helper.make_tensor_value_info("l", TensorProto.UINT2, [1])],
                   [helper.make_tensor_value_info("y", TensorProto.UINT2, [4])],
                   opset=25, ir=13)
    got = _run(model, {"x": x, "l": like}, backend)["y"]
    assert got.astype(np.int8).tolist() == [0, 1, 3, 0]
    # integer sources wrap in every opset (fixed point to fixed point discards high bits)
    model = _model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.INT4)],
                   [helper.make_tensor_value_info("x", TensorProto.INT32, [3])],
                   [helper.make_tensor_value_info("y", TensorProto.INT4, [3])], opset=21, ir=10)
    got = _run(model, {"x": np.array([-9, 8, 200], np.int32)}, backend)["y"]
    assert got.astype(np.int8).tolist() == [7, -8, -8]


# --- fold-constants: Shape start/end, and the ops it folds itself -------------------------------

@pytest.mark.parametrize("backend", ["interpreter", "cpu"])
@pytest.mark.parametrize("attrs, dims", [
    ({"start": 1}, [4, 5]), ({"end": -1}, [3, 4]), ({"start": -2, "end": 2}, [4]),
    ({"start": 2, "end": 1}, []), ({"start": -10, "end": 10}, [3, 4, 5]),
])
def test_fold_constants_folds_shape_with_start_and_end(tmp_path, backend, attrs, dims):
    model = _model([helper.make_node("Shape", ["x"], ["s"], **attrs)],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4, 5])],
                   [helper.make_tensor_value_info("s", TensorProto.INT64, [len(dims)])],
                   opset=21)
    path = aicc.compile(model, backend=backend, output=tmp_path / "p.qpc")
    assert "Shape" not in _compiled_ops(path)  # folded, and folded right
    got = aicc.load(path).run({"x": np.zeros([3, 4, 5], np.float32)})["s"]
    assert got.tolist() == dims


def test_fold_constants_gathers_and_slices_a_shape_with_start(tmp_path):
    nodes = [helper.make_node("Shape", ["x"], ["s"], start=1),
             helper.make_node("Gather", ["s", "i"], ["g"], axis=0),
             helper.make_node("Slice", ["s", "b", "e"], ["t"])]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "i"),
             numpy_helper.from_array(np.array([1], np.int64), "b"),
             numpy_helper.from_array(np.array([2], np.int64), "e")]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4, 5])],
                   [helper.make_tensor_value_info("g", TensorProto.INT64, []),
                    helper.make_tensor_value_info("t", TensorProto.INT64, [1])],
                   opset=21, inits=inits)
    path = aicc.compile(model, backend="interpreter", output=tmp_path / "p.qpc")
    assert _compiled_ops(path) == []
    got = aicc.load(path).run({"x": np.zeros([3, 4, 5], np.float32)})
    assert got["g"].tolist() == 4 and got["t"].tolist() == [5]


def test_fold_constants_keeps_a_fractional_constant_in_cast_arithmetic(tmp_path):
    """Cast(int -> float) * 0.5 -> Cast(int): computing in int would turn 0.5 into 0."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Cast", ["s"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["f", "half"], ["m"]),
             helper.make_node("Cast", ["m"], ["y"], to=TensorProto.INT64)]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4, 5])],
                   [helper.make_tensor_value_info("y", TensorProto.INT64, [3])], opset=17,
                   inits=[numpy_helper.from_array(np.array(0.5, np.float32), "half")])
    got = _run(model, {"x": np.zeros([3, 4, 5], np.float32)}, tmp_path=tmp_path)["y"]
    assert got.tolist() == [1, 2, 2]


def test_fold_constants_keeps_comparisons_of_cast_shapes(tmp_path):
    """Equal(Cast(int -> float), ...) -> Cast(-> int): Equal returns bool, its output is no
    float to rebind to the int Cast's output (that made onnxruntime refuse the folded graph)."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Cast", ["s"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT),
             helper.make_node("Equal", ["f", "kf"], ["e"]),
             helper.make_node("Cast", ["e"], ["y"], to=TensorProto.INT64),
             helper.make_node("Add", ["y", "z"], ["w"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4, 5]),
                           helper.make_tensor_value_info("z", TensorProto.INT64, [3])],
                   [helper.make_tensor_value_info("w", TensorProto.INT64, [3])], opset=17,
                   inits=[numpy_helper.from_array(np.array([3, 0, 5], np.int64), "k")])
    feeds = {"x": np.zeros([3, 4, 5], np.float32), "z": np.array([10, 20, 30], np.int64)}
    for backend in ("interpreter", "cpu"):
        assert _run(model, feeds, backend, tmp_path)["w"].tolist() == [11, 20, 31]


# --- bfloat16 and float8 inputs and outputs -------------------------------------------------------

_ML_TYPES = [(TensorProto.BFLOAT16, ml_dtypes.bfloat16),
             (TensorProto.FLOAT8E4M3FN, ml_dtypes.float8_e4m3fn),
             (TensorProto.FLOAT8E4M3FNUZ, ml_dtypes.float8_e4m3fnuz),
             (TensorProto.FLOAT8E5M2, ml_dtypes.float8_e5m2),
             (TensorProto.FLOAT8E5M2FNUZ, ml_dtypes.float8_e5m2fnuz)]


@pytest.mark.parametrize("backend", ["interpreter", "cpu"])
@pytest.mark.parametrize("elem, dtype", _ML_TYPES)
def test_bfloat16_and_float8_io_through_the_public_path(tmp_path, backend, elem, dtype):
    nodes = [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["f", "f"], ["sq"]),
             helper.make_node("Cast", ["sq"], ["y"], to=elem)]
    model = _model(nodes, [helper.make_tensor_value_info("x", elem, [2, 3])],
                   [helper.make_tensor_value_info("y", elem, [2, 3]),
                    helper.make_tensor_value_info("f", TensorProto.FLOAT, [2, 3])],
                   opset=21, ir=10)
    x = np.array([[0.5, -1.5, 2.0], [3.0, -0.25, 1.0]], np.float32).astype(dtype)
    session = aicc.load(aicc.compile(model, backend=backend, output=tmp_path / "p.qpc"))
    assert [d.dtype for d in session.inputs] == [np.dtype(dtype).name]
    got = session.run({"x": x})
    assert got["y"].dtype == np.dtype(dtype)
    ref = (x.astype(np.float32) ** 2).astype(dtype)
    np.testing.assert_array_equal(got["y"].astype(np.float32), ref.astype(np.float32))
    np.testing.assert_array_equal(got["f"], x.astype(np.float32))


def test_bfloat16_input_file_from_npy(tmp_path):
    x = np.array([1.5, -2.0], ml_dtypes.bfloat16)
    np.save(tmp_path / "x.npy", x)  # stored as |V2: .npy has no name for bfloat16
    got = read_tensor_file(tmp_path / "x.npy", TensorDesc("x", "bfloat16", [2]))
    assert got.dtype == np.dtype(ml_dtypes.bfloat16) and got.tolist() == x.tolist()
    np.save(tmp_path / "y.npy", np.zeros(2, np.float16))
    with pytest.raises(aicc.AiccError, match="holds float16"):
        read_tensor_file(tmp_path / "y.npy", TensorDesc("x", "bfloat16", [2]))


def test_bfloat16_input_from_a_json_input_file(tmp_path):
    from aicc.data import parse_json_input_file

    x = np.array([[1.5, -2.0, 0.25]], ml_dtypes.bfloat16)
    x.tofile(tmp_path / "x.raw")
    (tmp_path / "in.json").write_text(
        '{"IO-files": [[{"path": "x.raw", "io-direction": "in", "map-to": "x", '
        '"data-type": "bf16", "dims": [1, 3]}]]}')
    feeds = parse_json_input_file(tmp_path / "in.json", [TensorDesc("x", "bfloat16", [1, 3])])
    assert feeds[0]["x"].dtype == np.dtype(ml_dtypes.bfloat16)
    assert feeds[0]["x"].tolist() == x.tolist()


# --- IR version 14 and opset 28 on onnxruntime ----------------------------------------------------

def _relu_model(opset, ir):
    return _model([helper.make_node("Relu", ["x"], ["r"]),
                   helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT16)],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [4])],
                  opset=opset, ir=ir)


def test_ir14_opset28_model_compiles_and_runs_on_cpu(tmp_path):
    model = _relu_model(28, 14)  # Cast-28 is newer than onnxruntime's opset: converted
    x = np.array([-1.0, 0.5, 2.0, -3.0], np.float32)
    got = _run(model, {"x": x}, backend="cpu", tmp_path=tmp_path)["y"]
    np.testing.assert_array_equal(got, np.maximum(x, 0).astype(np.float16))
    lowered = for_onnxruntime(model)
    ort.InferenceSession(lowered.SerializeToString(), providers=["CPUExecutionProvider"])
    assert model.ir_version == 14  # the caller's model is left as it was


def test_model_needing_ir14_is_refused_clearly_on_cpu():
    model = _model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT6E2M3),
                    helper.make_node("Cast", ["y"], ["z"], to=TensorProto.FLOAT)],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                   [helper.make_tensor_value_info("z", TensorProto.FLOAT, [4])],
                   opset=28, ir=14)
    assert needed_ir_version(model)[0] == 14
    with pytest.raises(BackendError, match="needs IR version 14.*FLOAT6E2M3"):
        aicc.compile(model, backend="cpu")


def test_fold_constants_folds_an_ir14_model(tmp_path):
    nodes = [helper.make_node("Add", ["a", "a"], ["c"]),
             helper.make_node("Mul", ["x", "c"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], opset=28,
                   ir=14, inits=[numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "a")])
    path = aicc.compile(model, backend="interpreter", output=tmp_path / "p.qpc")
    assert _compiled_ops(path) == ["Mul"]
    got = aicc.load(path).run({"x": np.array([3.0, 4.0], np.float32)})["y"]
    assert got.tolist() == [6.0, 16.0]


def test_fold_constants_folds_an_ir14_model_with_subgraphs(tmp_path):
    """graph-surgeon folds each If branch with onnxruntime on its own: every graph is
    re-stamped for onnxruntime meanwhile."""
    def branch(value):
        return helper.make_graph(
            [helper.make_node("Add", ["a", "a"], ["o"])], "b", [],
            [helper.make_tensor_value_info("o", TensorProto.FLOAT, [2])],
            initializer=[numpy_helper.from_array(np.full(2, value, np.float32), "a")])

    nodes = [helper.make_node("Add", ["c", "c"], ["c2"]),
             helper.make_node("Mul", ["x", "c2"], ["m"]),
             helper.make_node("If", ["cond"], ["r"], then_branch=branch(1.0),
                              else_branch=branch(2.0)),
             helper.make_node("Add", ["m", "r"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
                           helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], opset=28,
                   ir=14, inits=[numpy_helper.from_array(np.array([1, 2], np.float32), "c")])
    path = aicc.compile(model, backend="cpu", output=tmp_path / "p.qpc")
    assert _compiled_ops(path) == ["Mul", "If", "Add"]
    session = aicc.load(path)
    for cond, expected in ((True, [4.0, 6.0]), (False, [6.0, 8.0])):
        got = session.run({"x": np.ones(2, np.float32), "cond": np.array(cond)})["y"]
        assert got.tolist() == expected


# --- opsets below the supported range; non-tensor graph I/O --------------------------------

def test_opset1_model_is_converted_with_a_warning(tmp_path, caplog):
    model = _model([helper.make_node("Not", ["x"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.BOOL, [3])],
                   [helper.make_tensor_value_info("y", TensorProto.BOOL, [3])], opset=1, ir=3)
    with caplog.at_level(logging.WARNING, logger="aicc.ir"):
        for backend in ("interpreter", "cpu"):
            got = _run(model, {"x": np.array([True, False, True])}, backend, tmp_path)["y"]
            assert got.tolist() == [False, True, False]
    assert "opset 1 is older than supported; converted to opset 7" in caplog.text


def test_opset_the_converter_cannot_convert_is_refused():
    model = _model([helper.make_node("NoSuchOp", ["x"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], opset=1, ir=3)
    with pytest.raises(ModelError, match="opset 1 is older than supported .* cannot convert"):
        aicc.compile(model, backend="interpreter")


@pytest.mark.parametrize("backend", ["interpreter", "cpu"])
def test_optional_and_sequence_inputs_are_refused_up_front(backend):
    seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, [2])
    model = _model([helper.make_node("Identity", ["s"], ["t"])], [seq],
                   [helper.make_tensor_sequence_value_info("t", TensorProto.FLOAT, [2])],
                   opset=17)
    with pytest.raises(ModelError, match=r"graph input 's' has type seq\(tensor\(float\)\)"):
        aicc.compile(model, backend=backend)
    opt = helper.make_value_info("o", helper.make_optional_type_proto(
        helper.make_tensor_type_proto(TensorProto.FLOAT, [2])))
    model = _model([helper.make_node("Identity", ["o"], ["p"])], [opt],
                   [helper.make_value_info("p", helper.make_optional_type_proto(
                       helper.make_tensor_type_proto(TensorProto.FLOAT, [2])))], opset=17)
    with pytest.raises(ModelError, match=r"graph input 'o' has type optional\(tensor\(float\)\)"):
        aicc.compile(model, backend=backend)
