"""Quantizing models as real exporters write them (issue 14): an old opset (12, where
DequantizeLinear has no ``axis``), weights in ``Constant`` nodes, scalar helper constants of
elementwise ops and shape computations. Every output of ``aicc quantize`` and of
``-convert-to-quantize`` must load and run in onnxruntime, near the float model."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from aicc.cli import main
from quant_builders import write_input_list


def _const(name, values):
    return helper.make_node("Constant", [], [name], name=f"const_{name}",
                            value=numpy_helper.from_array(np.asarray(values), name))


def old_opset_model(opset: int = 12) -> onnx.ModelProto:
    """Conv (weights in Constant nodes) -> x*6+3 (scalar helpers) -> Clip -> a Reshape whose shape
    is computed in float (Shape -> Cast -> Mul -> Cast) -> ReduceMean -> Squeeze (axes attribute,
    an input since opset 13) -> MatMul -> Softmax (changed meaning at 13)."""
    rng = np.random.default_rng(0)
    nodes = [
        _const("W", (rng.standard_normal((4, 3, 3, 3))
                     * np.array([1, 5, 0.1, 2]).reshape(4, 1, 1, 1)).astype(np.float32)),
        _const("B", rng.standard_normal(4).astype(np.float32)),
        helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        _const("six", np.float32(6.0)), _const("three", np.float32(3.0)),
        helper.make_node("Mul", ["c", "six"], ["m"], name="mul"),
        helper.make_node("Add", ["m", "three"], ["a"], name="add"),
        _const("lo", np.float32(0.0)), _const("hi", np.float32(20.0)),
        helper.make_node("Clip", ["a", "lo", "hi"], ["h"], name="clip"),
        helper.make_node("Shape", ["h"], ["s"], name="shape"),
        helper.make_node("Cast", ["s"], ["sf"], name="cast_f", to=TensorProto.FLOAT),
        _const("ones", np.ones(4, np.float32)),
        helper.make_node("Mul", ["sf", "ones"], ["sf1"], name="shape_mul"),
        helper.make_node("Cast", ["sf1"], ["si"], name="cast_i", to=TensorProto.INT64),
        helper.make_node("Reshape", ["h", "si"], ["r"], name="reshape"),
        helper.make_node("ReduceMean", ["r"], ["p"], name="pool", axes=[2, 3], keepdims=1),
        helper.make_node("Squeeze", ["p"], ["q"], name="squeeze", axes=[2, 3]),
        _const("F", rng.standard_normal((4, 5)).astype(np.float32)),
        helper.make_node("MatMul", ["q", "F"], ["l"], name="fc"),
        helper.make_node("Softmax", ["l"], ["y"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes, "old", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    return model


def _feeds(n, seed=1):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(n)]


def _ort(path_or_model):
    data = path_or_model.SerializeToString() if isinstance(path_or_model, onnx.ModelProto) \
        else str(path_or_model)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


FLAG_SETS = [
    [], ["--use_per_channel_quantization"], ["--use_per_row_quantization"],
    ["--use_per_channel_quantization", "--act_bw", "16"], ["--weight_bw", "16"],
    ["--weight_bw", "4"], ["--weight_bw", "4", "--pack_4_bit_weights"],
    ["--use_per_channel_quantization", "--act_quantizer_calibration", "percentile"],
]


@pytest.mark.parametrize("flags", FLAG_SETS, ids=lambda f: " ".join(f) or "defaults")
def test_every_quantize_output_loads_in_onnxruntime(flags, tmp_path, capsys, caplog):
    model = old_opset_model()
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    lst = write_input_list(tmp_path / "cal", _feeds(8), npy=True)
    out = tmp_path / "q.onnx"
    with caplog.at_level(logging.WARNING):
        code = main(["quantize", "-i", str(src), "-o", str(out), "--input_list", str(lst),
                     *flags])
    err = capsys.readouterr().err
    assert code == 0, err
    q = onnx.load(out)
    onnx.checker.check_model(q, full_check=True)
    needs_axis = "--use_per_channel_quantization" in flags or "--use_per_row_quantization" in flags
    if needs_axis or "16" in flags or "--pack_4_bit_weights" in flags:
        assert q.opset_import[0].version >= 13
        assert "with onnx's version converter" in caplog.text
    else:
        assert q.opset_import[0].version == 12        # nothing needed a newer opset
    if needs_axis:   # per-channel kept, not silently dropped
        axes = [a.i for n in q.graph.node if n.op_type == "DequantizeLinear"
                for a in n.attribute if a.name == "axis"]
        assert axes
    x = np.concatenate([f["x"] for f in _feeds(6, seed=7)])
    ref = _ort(model).run(None, {"x": x})[0]
    got = _ort(out).run(None, {"x": x})[0]
    # softmax probabilities: 4-bit weights are coarse, 8/16-bit close
    assert np.max(np.abs(got - ref)) < (0.3 if "4" in flags else 0.1)


def test_helpers_and_shape_computations_stay_exact(tmp_path, capsys, caplog):
    src, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    onnx.save(old_opset_model(), src)
    lst = write_input_list(tmp_path / "cal", _feeds(4), npy=True)
    with caplog.at_level(logging.WARNING):
        assert main(["quantize", "-i", str(src), "-o", str(out), "--input_list", str(lst)]) == 0
    q = onnx.load(out)
    quantized = {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
    for exact in ("sf", "sf1", "six", "three", "ones"):
        assert not any(t == exact or t.startswith(exact + "_") for t in quantized), exact
    assert {"W", "F"} <= {n.output[0].split("_")[0] for n in q.graph.node
                          if n.op_type == "DequantizeLinear"} | \
        {i.name.split("_")[0] for i in q.graph.initializer if i.data_type == TensorProto.INT8}
    # no warning per tensor: at most one summary line
    assert caplog.text.count("degenerate") <= 1


def test_convert_to_quantize_output_at_old_opset_runs(tmp_path, capsys):
    import aicc
    src = tmp_path / "m.onnx"
    onnx.save(old_opset_model(), src)
    lst = write_input_list(tmp_path / "cal", _feeds(4), npy=True)
    qpc = tmp_path / "qpc"
    code = main(["compile", f"-m={src}", f"-input-list-file={lst}", "-convert-to-quantize",
                 "-enable-channelwise", "-onnx-define-symbol=N,1", f"-aic-binary-dir={qpc}"])
    assert code == 0, capsys.readouterr().err
    x = _feeds(1, seed=3)[0]
    got = aicc.load(qpc).run(x)["y"]
    ref = _ort(old_opset_model()).run(None, x)[0]
    assert np.max(np.abs(got - ref)) < 0.1


def _float_byte_classifier() -> onnx.ModelProto:
    """magika's front (tf2onnx): byte values in a float input, Cast to int32, one-hot encoded,
    a dense layer averaged over the bytes into 5 class scores."""
    w = np.random.default_rng(2).standard_normal((256, 5)).astype(np.float32)
    nodes = [
        helper.make_node("Cast", ["bytes"], ["ids"], name="cast_ids", to=TensorProto.INT32),
        _const("depth", np.int32(256)), _const("onoff", np.array([0.0, 1.0], np.float32)),
        helper.make_node("OneHot", ["ids", "depth", "onoff"], ["hot"], name="onehot", axis=-1),
        _const("W", w),
        helper.make_node("MatMul", ["hot", "W"], ["logits"], name="dense"),
        helper.make_node("ReduceMean", ["logits"], ["y"], name="pool", axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "bytes", [helper.make_tensor_value_info("bytes", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_a_float_tensor_cast_to_integers_stays_exact(tmp_path, capsys):
    """Quantizing the byte values (scale max/255 on ASCII text, 126/255) moved 65.0 to 64.78,
    which Cast truncates to byte 64: every one-hot row changed (magika: -1.2 dB SQNR). Read as
    integers, the tensor stays exact: the quantized model gives the float model's scores within
    a few output steps (on calibration samples: the ranges cover them, only the path is tested)."""
    rng = np.random.default_rng(4)
    text = [{"bytes": rng.integers(32, 127, (1, 64)).astype(np.float32)} for _ in range(8)]
    src, out = tmp_path / "m.onnx", tmp_path / "q.onnx"
    model = _float_byte_classifier()
    onnx.save(model, src)
    lst = write_input_list(tmp_path / "cal", text, npy=True)
    assert main(["quantize", "-i", str(src), "-o", str(out), "--input_list", str(lst),
                 "--use_per_channel_quantization"]) == 0, capsys.readouterr().err
    q = onnx.load(out)
    assert "bytes" not in {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
    for feeds in text[:4]:
        ref = _ort(model).run(None, feeds)[0]
        got = _ort(out).run(None, feeds)[0]
        # one-hot exact, 8-bit weights (steps ~0.02, averaged over 64 bytes) and scores (steps
        # ~0.003): within 0.02; the shifted bytes were off by 0.1-0.3
        assert np.max(np.abs(got - ref)) < 0.02, (got, ref)
