"""convert-fp16: -convert-to-fp16 on the example model, fp16 by instance name, original precision by
op type, fp16 by op type, Cast safety (no back-to-back pairs, integers untouched, shared
initializers split, Casts checked), and every refusal."""

from __future__ import annotations

import logging
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import aicc
from aicc import ir
from aicc.cli import main
from aicc.errors import ConfigError, PassError
from aicc.pipeline import Pipeline, run_pipeline
from aicc.program import Program
from aicc.testing import run_model, run_pass
from precision_builders import SEED_YAML, seed_model

#: fp16 keeps ~11 bits: the example's logits (|x| < ~20) move by at most this much
LOGIT_TOLERANCE = 0.1


def _data(example_model_path):
    folder = example_model_path.parent / "data"
    return (np.load(folder / "digits_test_images.npy"), np.load(folder / "digits_test_labels.npy"))


def _pipeline(model, steps, registries):
    program = Program.from_model(model)
    pipeline = Pipeline.build(steps + ["fold-constants", "fold-batchnorm", "cleanup"],
                              registries.passes)
    return run_pipeline(pipeline, program, registries=registries)


def _node(program, name):
    return next(n for n in program.graphs["default"].nodes if n.name == name)


def _dtypes(node):
    return [None if t.is_empty() else str(ir.tensor_dtype(t)) for t in node.inputs]


def test_convert_to_fp16_on_the_example(tmp_path, example_model_path):
    images, labels = _data(example_model_path)
    qpc = tmp_path / "fp16.qpc"
    assert main(["compile", f"-m={example_model_path}", "-convert-to-fp16",
                 f"-aic-binary-dir={qpc}", "-compile-only"]) == 0
    reference = run_model(ir.load_model(example_model_path), {"image": images})["logits"]
    for backend in ("cpu", "interpreter"):
        session = aicc.load(qpc, backend=backend)
        assert [(d.dtype, d.shape) for d in session.inputs] == [("float32", ["batch", 1, 8, 8])]
        logits = session.run({"image": images})["logits"]
        assert logits.dtype == np.float32
        acc16 = float((logits.argmax(1) == labels).mean())
        acc32 = float((reference.argmax(1) == labels).mean())
        assert abs(acc16 - acc32) <= 0.005
        assert float(np.abs(logits - reference).max()) <= LOGIT_TOLERANCE
    model = onnx.load(qpc / "default" / "model.onnx")
    casts = [n for n in model.graph.node if n.op_type == "Cast"]
    assert len(casts) == 2      # one at the input, one at the output: nothing back to back
    assert {i.data_type for i in model.graph.initializer} == {TP.FLOAT16}


def test_fp16_by_instance_name(tmp_path, example_model_path, registries):
    npi = tmp_path / "npi.yaml"
    npi.write_text("FP16NodeInstanceNames: [conv0, bn0, relu0]\n")
    program = _pipeline(ir.load_model(example_model_path),
                        [("convert-fp16", {"node_precision_info": str(npi)})], registries)
    assert program.node_precision == {"conv0": "float16", "bn0": "float16", "relu0": "float16"}
    conv0 = _node(program, "conv0")         # conv0 and bn0 were both fp16: they folded
    assert _dtypes(conv0) == ["float16", "float16", "float16"]
    assert "BatchNormalization" not in [n.op for n in program.graphs["default"].nodes]
    assert _dtypes(_node(program, "dw1"))[1] == "float32"
    images, _ = _data(example_model_path)
    ref = run_model(ir.load_model(example_model_path), {"image": images})["logits"]
    got = run_model(program.to_model(), {"image": images})["logits"]
    assert float(np.abs(got - ref).max()) <= LOGIT_TOLERANCE


def test_conv_without_its_batchnorm_warns_and_does_not_fuse(tmp_path, example_model_path,
                                                           registries, caplog):
    npi = tmp_path / "npi.yaml"
    npi.write_text("FP16NodeInstanceNames: [conv0]\n")
    with caplog.at_level(logging.WARNING):
        program = _pipeline(ir.load_model(example_model_path),
                            [("convert-fp16", {"node_precision_info": str(npi)})], registries)
    assert "Conv 'conv0' runs in fp16 but BatchNormalization 'bn0' does not: they will not fuse" \
        in caplog.text
    ops = [n.op for n in program.graphs["default"].nodes]
    assert ops.count("BatchNormalization") == 1
    counters = run_pass(ir.load_model(example_model_path), "convert-fp16",
                        {"nodes": ["conv0"]})
    assert counters.node_precision == {"conv0": "float16"}


def test_keep_original_precision_by_op_type(tmp_path, example_model_path):
    qpc = tmp_path / "keep.qpc"
    assert main(["compile", f"-m={example_model_path}", "-convert-to-fp16",
                 "-keep-original-precision-for-nodes=Gemm,Clip", f"-aic-binary-dir={qpc}",
                 "-compile-only"]) == 0
    model = onnx.load(qpc / "default" / "model.onnx")
    inits = {i.name: i.data_type for i in model.graph.initializer}
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in onnx.shape_inference.infer_shapes(model).graph.value_info}
    for node in model.graph.node:
        if node.op_type in ("Gemm", "Clip"):
            assert all(inits.get(i, types.get(i)) == TP.FLOAT for i in node.input if i), node.name
        if node.op_type == "Conv":
            assert inits[node.input[1]] == TP.FLOAT16
    manifest = aicc.load(qpc).program_meta
    assert manifest["node_precision"]["fc"] == "original"
    assert manifest["node_precision"]["conv0"] == "float16"


def test_execute_nodes_in_fp16_by_op_type(example_model_path, registries):
    program = _pipeline(ir.load_model(example_model_path),
                        [("convert-fp16", {"op_types": ["Gemm"]})], registries)
    assert program.node_precision == {"fc": "float16"}
    assert _dtypes(_node(program, "fc")) == ["float16"] * 3
    assert all(_dtypes(n)[1] == "float32" for n in program.graphs["default"].nodes
               if n.op == "Conv")


def _mixed_model():
    """Float math beside integer shape math and a weight shared by two MatMuls."""
    w = numpy_helper.from_array(np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"], name="mm_a"),
             helper.make_node("MatMul", ["x", "w"], ["b"], name="mm_b"),
             helper.make_node("Shape", ["a"], ["s"], name="shape"),
             helper.make_node("Gather", ["a", "idx"], ["g"], axis=1, name="gather"),
             helper.make_node("Reshape", ["b", "s"], ["r"], name="reshape"),
             helper.make_node("Add", ["r", "a"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "mixed",
                              [helper.make_tensor_value_info("x", TP.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TP.FLOAT, [2, 3]),
                               helper.make_tensor_value_info("g", TP.FLOAT, [2, 2])],
                              [w, numpy_helper.from_array(np.array([0, 2], np.int64), "idx")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return ir.load_model(model.SerializeToString())


def test_cast_safety_integers_untouched_and_shared_weights_split():
    model = _mixed_model()
    program = run_pass(model, "convert-fp16", {"nodes": ["a", "g", "y"]})
    graph = program.graphs["default"]
    nodes = {n.name: n for n in graph.nodes}
    assert ir.tensor_dtype(nodes["mm_a"].inputs[1]) == np.float16     # fp16 copy of w
    assert ir.tensor_dtype(nodes["mm_b"].inputs[1]) == np.float32     # the original stays
    assert nodes["mm_a"].inputs[1] is not nodes["mm_b"].inputs[1]
    assert ir.tensor_dtype(nodes["gather"].inputs[1]) == np.int64     # indices untouched
    assert ir.tensor_dtype(nodes["shape"].outputs[0]) == np.int64
    assert ir.tensor_dtype(nodes["reshape"].inputs[1]) == np.int64
    for node in graph.nodes:            # no Cast reads a Cast
        if node.op == "Cast":
            producer = node.inputs[0].inputs[0] if node.inputs[0].inputs else None
            assert producer is None or producer.op != "Cast", node.name
    # gather reads mm_a's fp16 output directly, add reads it through no extra Cast pair
    assert ir.tensor_dtype(nodes["gather"].inputs[0]) == np.float16
    x = np.linspace(-2, 2, 8, dtype=np.float32).reshape(2, 4)
    for backend in ("cpu", "interpreter"):
        got = run_model(program.to_model(), {"x": x}, backend=backend)
        ref = run_model(model, {"x": x}, backend=backend)
        for name in ref:
            assert got[name].dtype == np.float32
            np.testing.assert_allclose(got[name], ref[name], rtol=2e-3, atol=2e-3)


def test_graph_io_stay_declared_and_custom_float16_io_folds_casts(tmp_path, registries):
    (tmp_path / "c.yaml").write_text(SEED_YAML)
    program = _pipeline(seed_model(), [("convert-fp16", {"all": True}),
                                       ("custom-io", {"config": str(tmp_path / "c.yaml"),
                                                      "conversions": "device"})], registries)
    graph = program.graphs["default"]
    by_out = {t.name: t for t in graph.outputs}
    # output_0 is float16 custom I/O: the fp16 Relu feeds it with no Cast pair in between
    relu = by_out["output_0"].inputs[0]
    assert relu.op == "Transpose" and relu.inputs[0].inputs[0].op == "Relu"
    assert ir.tensor_dtype(by_out["output_0"]) == np.float16
    casts = [n for n in graph.nodes if n.op == "Cast"]
    for cast in casts:
        src = cast.inputs[0].inputs[0] if cast.inputs[0].inputs else None
        assert src is None or src.op != "Cast"


def test_cast_check_catches_a_wrong_declared_type():
    from aicc.graph_casts import verify_types

    graph = ir.import_graph(seed_model())
    cast = next(n for n in graph.nodes if n.op == "Cast")
    cast.attrs["to"] = TP.FLOAT16       # output still declared float32
    with pytest.raises(PassError, match="Cast 'cast' converts to float16 but its output 'i2f' "
                                        "is declared float32"):
        verify_types(graph, who="test")


@pytest.mark.parametrize("text,match", [
    ("FP32NodeInstanceNames: [conv0]\n", "FP32NodeInstanceNames: setting node instances to FP32 "
                                         "is not supported"),
    ("FP16NodeInstanceNames: [conv0]\nFP32NodeInstanceNames: [fc]\n", "not supported"),
    ("FP16NodeInstanceName: [conv0]\n", "unknown key 'FP16NodeInstanceName' \\(did you mean "
                                        "'FP16NodeInstanceNames'"),
    ("FP16NodeInstanceNames: conv0\n", "expected a list of node output names"),
    ("FP16NodeInstanceNames: []\n", "the list is empty"),
    ("FP16NodeInstanceNames: [conv0, [bn0]]\n", "FP16NodeInstanceNames\\[1\\]: expected a node's "
                                                "first output name"),
    ("- conv0\n", "expected a mapping with key FP16NodeInstanceNames"),
    ("FP16NodeInstanceNames: [conv9]\n", "no node has first output 'conv9' \\(close matches: "
                                         "conv0"),
    ("FP16NodeInstanceNames: [zzz_unknown]\n", "no output is close to it"),
])
def test_node_precision_info_refusals(tmp_path, example_model_path, capsys, text, match):
    npi = tmp_path / "npi.yaml"
    npi.write_text(text)
    code = main(["compile", f"-m={example_model_path}", f"-node-precision-info={npi}",
                 f"-aic-binary-dir={tmp_path / 'q'}"])
    err = capsys.readouterr().err
    assert code == 2 and str(npi) in err
    assert re.search(match, err), err


def test_numeric_names_are_read_as_text(tmp_path):
    from aicc.passes.precision.convert_fp16 import load_node_precision_info

    (tmp_path / "n.yaml").write_text("FP16NodeInstanceNames: [123, conv0, conv0]\n")
    assert load_node_precision_info(tmp_path / "n.yaml") == ["123", "conv0"]


@pytest.mark.parametrize("argv,match", [
    (["-convert-to-fp16", "-keep-original-precision-for-nodes=Gem"],
     "unknown op type 'Gem' \\(did you mean 'Gemm'"),
    (["-execute-nodes-in-fp16=Softmax,,Relu"], "empty op type"),
    (["-execute-nodes-in-fp16=Softmax"], "the model has no Softmax node"),
    (["-convert-to-fp16", "-keep-original-precision-for-nodes=Softmax"],
     "the model has no Softmax node"),
    (["-keep-original-precision-for-nodes=Gemm"], "-keep-original-precision-for-nodes keeps op "
                                                  "types in their original precision while the "
                                                  "rest is lowered, and nothing is lowered"),
])
def test_op_type_refusals(tmp_path, example_model_path, capsys, argv, match):
    code = main(["compile", f"-m={example_model_path}", f"-aic-binary-dir={tmp_path / 'q'}"]
                + argv)
    err = capsys.readouterr().err
    assert code == 2
    assert re.search(match, err), err
    assert not (tmp_path / "q").exists()


def test_a_named_node_without_float_math_is_refused():
    with pytest.raises(ConfigError, match="node 'output_2' \\(ReduceSum\\) cannot run in fp16: it "
                                          "has no float32 computation"):
        run_pass(seed_model(), "convert-fp16", {"nodes": ["output_2"]})
    with pytest.raises(ConfigError, match="node 's' \\(Shape\\) cannot run in fp16: Shape is "
                                          "never converted"):
        run_pass(_mixed_model(), "convert-fp16", {"nodes": ["s"]})
    with pytest.raises(ConfigError, match="nothing to convert"):
        run_pass(seed_model(), "convert-fp16", {})


def _big_constant_model(op: str) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node(op, ["x", "big"], ["y"], name="n")], "g",
                              [helper.make_tensor_value_info("x", TP.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TP.FLOAT, [2])],
                              [numpy_helper.from_array(np.array([1e5, 2.0], np.float32), "big")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_node_reading_a_constant_beyond_fp16_stays_fp32(caplog):
    with caplog.at_level(logging.WARNING):
        program = run_pass(_big_constant_model("Mul"), "convert-fp16", {"all": True})
    assert "node 'n' (Mul) stays in fp32: it reads constant 'big' (|x| up to 1e+05)" \
        in caplog.text
    mul = next(n for n in program.graphs["default"].nodes if n.op == "Mul")
    assert np.asarray(mul.inputs[1].values).tolist() == [1e5, 2.0]
    assert program.node_precision["n"] == "float32"


def test_a_bound_beyond_fp16_is_clipped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        program = run_pass(_big_constant_model("Min"), "convert-fp16", {"all": True})
    assert "constant 'big' has 1 value(s) beyond the fp16 range" in caplog.text
    node = next(n for n in program.graphs["default"].nodes if n.op == "Min")
    assert np.asarray(node.inputs[1].values).tolist() == [65504.0, 2.0]


def test_fp16_pipeline_prints_and_reads_back(tmp_path, example_model_path, capsys):
    npi = tmp_path / "npi.yaml"
    npi.write_text("FP16NodeInstanceNames: [logits]\n")   # Gemm 'fc' is named by its output
    assert main(["compile", f"-m={example_model_path}", "-convert-to-fp16",
                 "-keep-original-precision-for-nodes=Gemm", f"-node-precision-info={npi}",
                 "--print-pipeline"]) == 0
    text = capsys.readouterr().out.strip()
    assert text.startswith(f"convert-fp16{{all=true node_precision_info={npi} "
                           "keep_op_types=[Gemm]}")
    assert main(["compile", f"-m={example_model_path}", "--passes", text,
                 f"-aic-binary-dir={tmp_path / 'q'}", "-compile-only"]) == 0
    meta = aicc.load(tmp_path / "q").program_meta["node_precision"]
    assert meta["fc"] == "float16"      # the named instance wins over its kept op type


def test_scalar_constants_stay_scalars_in_fp16(tmp_path):
    """A 0-d initializer converted to fp16 keeps rank 0 (np.ascontiguousarray made it [1], which
    changed the rank of everything it broadcast with: Greater(ReduceSum(x), 0) became [1])."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    import onnxruntime as ort
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
         helper.make_node("Add", ["s", "bias"], ["y"])], "scalar",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        [numpy_helper.from_array(np.array(0.5, np.float32), "bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    qpc = aicc.compile(model, target="interpreter", fp16=True, output=tmp_path / "q")
    x = np.arange(6, dtype=np.float32).reshape(2, 3) / 10
    got = aicc.load(qpc).run({"x": x})["y"]
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.shape == want.shape == ()
    np.testing.assert_allclose(got, want, rtol=1e-3)
    assert onnx.load(qpc / "default" / "model.onnx").graph.output[0].type.tensor_type.shape.dim \
        .__len__() == 0
