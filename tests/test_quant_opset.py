"""The opset quantization needs (passes/quantization/opset.py, qdq.ensure_opset): raising the
opset re-reads every node against the new schemas, the nodes of If/Loop/Scan bodies included, and
the messages name what needs the opset (4/16-bit types, or per-channel ``axis``)."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as TP
from onnx import helper

from aicc import ir
from aicc.errors import ModelError
from aicc.passes.quantization.qdq import ensure_opset
from aicc.quantization import quantize_model


def if_model(reduce: bool = True, opset: int = 17) -> onnx.ModelProto:
    """Relu(x) -> If(c: then ReduceMean, else ReduceMax over axis 1, their axes an attribute
    before opset 18 | without ``reduce`` both branches Relu) -> Relu."""
    shape = [2, 1] if reduce else [2, 4]

    def branch(op, name):
        attrs = {"axes": [1], "keepdims": 1} if reduce else {}
        return helper.make_graph([helper.make_node(op if reduce else "Relu", ["r"], [name],
                                                   name=f"{name}_op", **attrs)],
                                 name, [], [helper.make_tensor_value_info(name, TP.FLOAT, shape)])

    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("If", ["c"], ["o"], name="if", then_branch=branch("ReduceMean", "t"),
                              else_branch=branch("ReduceMax", "e")),
             helper.make_node("Relu", ["o"], ["y"], name="relu2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, [2, 4]),
                                           helper.make_tensor_value_info("c", TP.BOOL, [])],
                              [helper.make_tensor_value_info("y", TP.FLOAT, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def test_a_subgraph_node_whose_meaning_changes_blocks_the_bump():
    graph = ir.import_graph(if_model())
    with pytest.raises(ModelError, match=r"'t_op' \(ReduceMean 13 -> 18: attribute axes\) in "
                                         r"then_branch of 'if'; 'e_op' \(ReduceMax 13 -> 20: "
                                         r"attribute axes\) in else_branch of 'if'"):
        ensure_opset(graph, 21, where="w")
    assert graph.opset == 17            # nothing changed


def test_a_safe_bump_raises_the_subgraphs_too():
    graph = ir.import_graph(if_model(reduce=False))
    assert ensure_opset(graph, 21, where="w")
    assert {g.opset for g in [graph, *graph.subgraphs(recursive=True)]} == {21}
    model = ir.export_model(graph, ir_version=10)
    onnx.checker.check_model(model, full_check=True)


def _samples(n=6):
    rng = np.random.default_rng(0)
    return [{"x": rng.standard_normal((2, 4)).astype(np.float32), "c": np.array(i % 2 == 0)}
            for i in range(n)]


def test_16bit_quantization_of_a_model_with_if_stays_valid():
    """Old code bumped the opset past the branches' Reduce(axes=...) nodes, writing a model
    onnxruntime refuses; now the version converter rewrites the branches."""
    model = if_model()
    qmodel, _ = quantize_model(model, samples=_samples(), progress=False, act_bitwidth=16)
    assert qmodel.opset_import[0].version == 21
    onnx.checker.check_model(qmodel, full_check=True)
    ref = ort.InferenceSession(model.SerializeToString())
    got = ort.InferenceSession(qmodel.SerializeToString())
    for feed in _samples(4):
        # 16-bit activations over ranges of a few units: a step of ~1e-4 per Q/DQ, three of them
        np.testing.assert_allclose(got.run(None, feed)[0], ref.run(None, feed)[0], atol=1e-3)


def test_the_per_channel_bump_is_named_as_such(caplog):
    graph = ir.import_graph(if_model(opset=12))
    why = "per-channel DequantizeLinear (its 'axis' attribute)"
    with pytest.raises(ModelError) as info:
        ensure_opset(graph, 18, where="w", why=why, instead="quantize weights per tensor")
    assert "opset 18 is needed for per-channel" in str(info.value)
    assert "4/16-bit" not in str(info.value) and "per tensor" in str(info.value)
    conv = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "c",
        [helper.make_tensor_value_info("x", TP.FLOAT, [1, 2, 4, 4])],
        [helper.make_tensor_value_info("y", TP.FLOAT, [1, 3, 4, 4])],
        [onnx.numpy_helper.from_array(np.ones((3, 2, 1, 1), np.float32) *
                                      np.arange(1, 4, dtype=np.float32).reshape(3, 1, 1, 1), "w")])
    model = helper.make_model(conv, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7
    rng = np.random.default_rng(1)
    with caplog.at_level(logging.INFO, logger="aicc.passes.quantization"):
        quantize_model(model, samples=[{"x": rng.standard_normal((1, 2, 4, 4)).astype(np.float32)}],
                       progress=False, per_channel=True)
    raised = [r.getMessage() for r in caplog.records if "raised from 12 to 13" in r.getMessage()]
    assert raised and all("per-channel" in m and "4/16-bit" not in m for m in raised), raised


def _layernorm_model() -> onnx.ModelProto:
    """Conv -> a LayerNorm spelled out (ReduceMean with ``axes`` as an attribute, opset 12) ->
    Conv: onnx's version converter moves the axes to an input (a Constant node) at opset 18."""
    rng = np.random.default_rng(3)
    w1, w2 = (helper.make_tensor(n, TP.FLOAT, [4, 4, 1, 1], rng.standard_normal(16).tolist())
              for n in ("w1", "w2"))
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], name="conv1"),
             helper.make_node("ReduceMean", ["c"], ["m"], name="mean", axes=[1]),
             helper.make_node("Sub", ["c", "m"], ["d"], name="sub"),
             helper.make_node("Mul", ["d", "d"], ["d2"], name="sq"),
             helper.make_node("ReduceMean", ["d2"], ["v"], name="var", axes=[1]),
             helper.make_node("Add", ["v", "eps"], ["ve"], name="addeps"),
             helper.make_node("Sqrt", ["ve"], ["s"], name="sqrt"),
             helper.make_node("Div", ["d", "s"], ["n"], name="div"),
             helper.make_node("Conv", ["n", "w2"], ["y"], name="conv2")]
    graph = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info("x", TP.FLOAT,
                                                                          [1, 4, 6, 6])],
                              [helper.make_tensor_value_info("y", TP.FLOAT, [1, 4, 6, 6])],
                              [w1, w2, helper.make_tensor("eps", TP.FLOAT, [], [1e-5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])
    model.ir_version = 7
    return model


@pytest.mark.parametrize("bits", [{}, {"weight_bitwidth": 16}, {"act_bitwidth": 16}],
                         ids=["int8", "w16", "a16"])
def test_a_converted_layernorm_still_fuses_and_calibration_covers_it(bits):
    """Regression: the converter's Constant-node axes made ReduceMean read a second 'source', so
    at opset 21 the LayerNorm no longer fused, quantize wanted tensors calibration had skipped
    ('the calibration profile skipped it'), and 16-bit PP-OCRv4 rec failed."""
    rng = np.random.default_rng(0)
    samples = [{"x": rng.standard_normal((1, 4, 6, 6)).astype(np.float32)} for _ in range(8)]
    model, program = quantize_model(_layernorm_model(), samples=samples, progress=False,
                                    per_channel=True, **bits)
    quantized = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert {"c", "n"} <= quantized and not quantized & {"m", "d", "d2", "v", "ve", "s"}
    x = samples[0]["x"]
    ref = ort.InferenceSession(_layernorm_model().SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - got) ** 2)) > 20


def test_a_bias_the_int32_grid_cannot_hold_widens_its_weight_channel():
    """16-bit weights of 1e-3 on inputs of 1e-2 give a bias grid of ~1e-12: a bias of 0.5 needs
    ~4e11 steps. Before, it was clipped to 2^31 - 1 steps (an output offset of 0.003 instead of
    0.5, exit 0); now the channel's weight scale grows until the bias fits."""
    rng = np.random.default_rng(5)
    w = helper.make_tensor("w", TP.FLOAT, [2, 3, 1, 1], (rng.standard_normal(6) * 1e-3).tolist())
    b = helper.make_tensor("b", TP.FLOAT, [2], [0.5, -0.25])
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")],
                              "g", [helper.make_tensor_value_info("x", TP.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TP.FLOAT, [1, 2, 4, 4])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    samples = [{"x": rng.uniform(0, 0.01, (1, 3, 4, 4)).astype(np.float32)} for _ in range(4)]
    q, program = quantize_model(model, samples=samples, progress=False, per_channel=True,
                                weight_bitwidth=16)
    x = samples[0]["x"]
    ref = ort.InferenceSession(model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(q.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, ref, atol=4e-3)  # the 8-bit output grid: 0.75 / 255


def test_calibration_observes_what_quantize_plans_after_the_opset_conversion(monkeypatch):
    """Calibration plans what to observe on the graph quantize will see, the converted one too:
    with the converter's Constant nodes left as nodes (so the LayerNorm no longer fuses at opset
    21), the tensors quantize then encodes are still calibrated, not refused as skipped."""
    import aicc.passes.quantization.opset as opset_module
    monkeypatch.setattr(opset_module, "lower_constant_nodes", lambda graph: None)
    rng = np.random.default_rng(1)
    samples = [{"x": rng.standard_normal((1, 4, 6, 6)).astype(np.float32)} for _ in range(8)]
    model, _ = quantize_model(_layernorm_model(), samples=samples, progress=False,
                              per_channel=True, weight_bitwidth=16)
    quantized = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert "m" in quantized            # the unfused ReduceMean output, calibrated
