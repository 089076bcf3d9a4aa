"""What third-party models taught (issue 12): unnamed dimensions are each their own unknown, a
wrong declared output shape is corrected at compile time, models onnxruntime already quantized
(com.microsoft ops, shapeless value_info) compile and run on cpu and are refused clearly
elsewhere. Every result is compared with onnxruntime on the original model."""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import aicc
from aicc.cli import main


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds)))


def _compile(tmp_path, model: onnx.ModelProto, *flags: str, name: str = "m"):
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    qpc = tmp_path / f"{name}.qpc"
    code = main(["compile", f"-m={path}", f"-aic-binary-dir={qpc}", "-compile-only", *flags])
    return code, qpc


def _manifest_outputs(qpc) -> list[dict]:
    return json.loads((qpc / "manifest.json").read_text())["specializations"][0]["outputs"]


# -- unnamed dimensions ------------------------------------------------------------------------

def _paddle_like(dims: list) -> onnx.ModelProto:
    """x [?, 3, ?, ?] (paddle2onnx writes '?' for each unknown) -> GlobalAveragePool -> Flatten."""
    x = helper.make_tensor_value_info("x", TP.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TP.FLOAT, [dims[0], 3])
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
             helper.make_node("Flatten", ["p"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("dims", [["?", 3, "?", "?"], [-1, 3, None, None]],
                         ids=["question-marks", "unnamed"])
def test_unnamed_dimensions_are_distinct(tmp_path, dims):
    model = _paddle_like(dims)
    if dims[0] == -1:  # helper writes -1 as a dim_value, as old exporters did
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == -1
    code, qpc = _compile(tmp_path, model, "--input-shape=x=1,3,48,192")
    assert code == 0
    x = np.random.default_rng(0).standard_normal((1, 3, 48, 192)).astype(np.float32)
    got = aicc.load(qpc).run({"x": x})["y"]
    np.testing.assert_allclose(got, _ort(model, {"x": x})["y"], rtol=1e-5, atol=1e-6)
    # the output's unknown batch became the bound 1 (computed, recorded in the container)
    assert _manifest_outputs(qpc)[0]["shape"] == [1, 3]


def test_a_named_symbol_still_binds_once(tmp_path, capsys):
    code, _ = _compile(tmp_path, _paddle_like(["n", 3, "n", "w"]), "--input-shape=x=1,3,48,192")
    assert code == 2
    assert "dimension 2 is symbol 'n', already 1, not 48" in capsys.readouterr().err


# -- wrong declared output shapes --------------------------------------------------------------

WRONG_OUTPUT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 3, 4] x) => (float[1, seqlen] y) {
  s = Shape(x)
  r = ReduceProd<keepdims = 1>(s)
  one = Constant<value = int64[1] {1}>()
  shp = Concat<axis = 0>(r, one)
  y = Reshape(x, shp)
}
"""


def test_wrong_declared_output_shape_is_corrected_with_a_warning(tmp_path, caplog):
    model = onnx.parser.parse_model(WRONG_OUTPUT)
    with caplog.at_level(logging.WARNING):
        code, qpc = _compile(tmp_path, model)
    assert code == 0
    assert "output 'y' is declared [1, 1] but the graph computes [24, 1]" in caplog.text
    assert _manifest_outputs(qpc)[0]["shape"] == [24, 1]
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(aicc.load(qpc).run({"x": x})["y"], _ort(model, {"x": x})["y"])


# -- models onnxruntime already quantized ------------------------------------------------------

def _ort_quantized(tmp_path) -> onnx.ModelProto:
    """A float LSTM + MatMul quantized by onnxruntime's quantize_dynamic (DynamicQuantizeLSTM,
    DynamicQuantizeLinear, MatMulInteger), its output declared wrong and listed in value_info
    without a shape, as the quantizer left ddddocr's CRNN."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    rng = np.random.default_rng(0)
    hidden, size, steps = 8, 6, 5
    inits = [numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, size)).astype(np.float32),
                                     "W"),
             numpy_helper.from_array(rng.standard_normal((1, 4 * hidden, hidden))
                                     .astype(np.float32), "R"),
             numpy_helper.from_array(rng.standard_normal((hidden, 3)).astype(np.float32), "M"),
             numpy_helper.from_array(np.array([1], np.int64), "axis")]
    nodes = [helper.make_node("LSTM", ["x", "W", "R"], ["Y"], hidden_size=hidden, name="lstm"),
             helper.make_node("Squeeze", ["Y", "axis"], ["Ys"], name="squeeze"),
             helper.make_node("MatMul", ["Ys", "M"], ["y"], name="matmul")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT,
                                                                         [steps, 1, size])],
                              [helper.make_tensor_value_info("y", TP.FLOAT, [steps, 1, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "float.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer's pre-processing advice
    try:
        quantize_dynamic(str(tmp_path / "float.onnx"), str(tmp_path / "q.onnx"),
                         weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    q = onnx.load(tmp_path / "q.onnx")
    assert {"DynamicQuantizeLSTM", "MatMulInteger", "DynamicQuantizeLinear"} <= \
        {n.op_type for n in q.graph.node}
    q.graph.value_info.append(helper.make_tensor_value_info("y", TP.FLOAT, None))
    return q


def test_cpu_runs_a_model_onnxruntime_quantized(tmp_path):
    model = _ort_quantized(tmp_path)
    code, qpc = _compile(tmp_path, model, name="quantized")
    assert code == 0
    x = np.random.default_rng(1).standard_normal((5, 1, 6)).astype(np.float32)
    got = aicc.load(qpc).run({"x": x})["y"]   # loading runs the ONNX checker on the container
    np.testing.assert_allclose(got, _ort(model, {"x": x})["y"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("flags", [["--backend=interpreter"], ["-aic-hw"]],
                         ids=["interpreter", "aic100"])
def test_other_backends_refuse_com_microsoft_ops_clearly(tmp_path, capsys, flags):
    code, qpc = _compile(tmp_path, _ort_quantized(tmp_path), *flags, name="quantized")
    err = capsys.readouterr().err
    assert code == 2 and not qpc.exists()
    line = err.strip().splitlines()[-1]
    # the contrib op is named first, with the reason and the way out
    assert "cannot run: node 'lstm_quant' (com.microsoft.DynamicQuantizeLSTM)" in line
    assert "com.microsoft are onnxruntime's own (contrib) ops" in line
    assert "--backend cpu" in line


# -- per-channel int8 of models older than opset 13 --------------------------------------------

def test_per_channel_quantization_of_an_opset_11_model_loads_in_onnxruntime(tmp_path):
    """DequantizeLinear takes ``axis`` from opset 13: PP-OCR's opset-11/12 models gave int8
    models onnxruntime refused ("Unrecognized attribute: axis"). The graph is converted first."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((3, 4 * 6 * 6)).astype(np.float32), "g")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "g"], ["logits"], name="fc", transB=1),
             helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT,
                                                                         [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TP.FLOAT, [1, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6
    onnx.save(model, tmp_path / "m.onnx")
    lines = []
    for i in range(4):
        rng.standard_normal((1, 3, 8, 8)).astype(np.float32).tofile(tmp_path / f"x{i}.raw")
        lines.append(f"x{i}.raw")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    assert main(["quantize", "--input_model", str(tmp_path / "m.onnx"), "--output_model",
                 str(tmp_path / "q.onnx"), "--input_list", str(tmp_path / "list.txt"),
                 "--use_per_channel_quantization"]) == 0
    q = onnx.load(tmp_path / "q.onnx")
    assert {o.version for o in q.opset_import if o.domain in ("", "ai.onnx")} == {13}
    axes = [a.i for n in q.graph.node if n.op_type == "DequantizeLinear"
            for a in n.attribute if a.name == "axis"]
    assert axes, "weights are quantized per channel"
    x = np.fromfile(tmp_path / "x0.raw", np.float32).reshape(1, 3, 8, 8)
    ref = _ort(model, {"x": x})["y"]
    got = _ort(q, {"x": x})["y"]      # loads in onnxruntime
    assert np.abs(got - ref).max() < 0.1   # int8 softmax probabilities: a loose sanity bound


VALUE_DEPENDENT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[4] x, int64[1] n) => (float[4] y) {
  y = Tile(x, n)
}
"""


SLICE_BY_INPUT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[20, 10, 5] x, int64[3] starts, int64[3] ends) => (float[20, 10, 1] y) {
  y = Slice(x, starts, ends)
}
"""

FLOAT_VALUE_DEPENDENT = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[4] x, float[1] r) => (float[4] y) {
  n = Cast<to = 7>(r)
  y = Tile(x, n)
}
"""


@pytest.mark.parametrize("text", [VALUE_DEPENDENT, SLICE_BY_INPUT, FLOAT_VALUE_DEPENDENT],
                         ids=["tile-by-int-input", "slice-by-int-inputs", "tile-by-float-value"])
def test_a_shape_that_depends_on_input_values_is_left_as_declared(tmp_path, caplog, text):
    """Shapes carried by input values (integer inputs; or a float input whose value, cast,
    repeats a Tile: zeros and ones disagree) are never decided by a made-up run."""
    model = onnx.parser.parse_model(text)
    declared = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    with caplog.at_level(logging.WARNING):
        code, qpc = _compile(tmp_path, model)
    assert code == 0 and "declared" not in caplog.text
    assert _manifest_outputs(qpc)[0]["shape"] == declared
