"""Elementwise fusion in ``quantize`` (``passes/quantization/fusion.py``): the intermediates of a
HardSwish and a LayerNorm spelled out in elementary ops are not quantized, their inputs, outputs
and a residual Add's operands are; outputs against onnxruntime on the float model; and the CLI's
int32 bias default."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from aicc.cli import main
from aicc.quantization import quantize_model

from quant_builders import DIGITS, DIGITS_LIST, _model, sqnr_db

#: intermediates of the HardSwish x * clip(x + 3, 0, 6) / 6 and of the LayerNorm
INTERIOR = ["hs_add", "hs_clip", "hs_mul", "ln_mean", "ln_sub", "ln_pow", "ln_var", "ln_eps",
            "ln_std", "ln_div", "ln_mul"]
#: tensors where an expression starts or ends, or a residual Add reads two of them
BOUNDARY = ["x", "h", "hs", "m2", "r", "y"]


def _hardswish_layernorm(seed: int = 0) -> onnx.ModelProto:
    """x[1,16,32] -> MatMul -> h -> HardSwish -> hs -> MatMul -> m2 -> Add(m2, h) -> r ->
    LayerNorm over the last axis -> y."""
    rng = np.random.default_rng(seed)
    c = lambda name, v: numpy_helper.from_array(np.asarray(v, np.float32), name)  # noqa: E731
    inits = [c("w1", rng.standard_normal((32, 32)) * 0.4),
             c("w2", rng.standard_normal((32, 32)) * 0.2),
             c("three", 3.0), c("zero", 0.0), c("six", 6.0), c("two", 2.0), c("eps", 1e-5),
             c("gamma", 1 + 0.1 * rng.standard_normal(32)),
             c("beta", 0.1 * rng.standard_normal(32))]
    n = helper.make_node
    nodes = [n("MatMul", ["x", "w1"], ["h"]),
             n("Add", ["h", "three"], ["hs_add"]),
             n("Clip", ["hs_add", "zero", "six"], ["hs_clip"]),
             n("Mul", ["h", "hs_clip"], ["hs_mul"]), n("Div", ["hs_mul", "six"], ["hs"]),
             n("MatMul", ["hs", "w2"], ["m2"]), n("Add", ["m2", "h"], ["r"]),
             n("ReduceMean", ["r"], ["ln_mean"], axes=[-1]),
             n("Sub", ["r", "ln_mean"], ["ln_sub"]),
             n("Pow", ["ln_sub", "two"], ["ln_pow"]),
             n("ReduceMean", ["ln_pow"], ["ln_var"], axes=[-1]),
             n("Add", ["ln_var", "eps"], ["ln_eps"]), n("Sqrt", ["ln_eps"], ["ln_std"]),
             n("Div", ["ln_sub", "ln_std"], ["ln_div"]), n("Mul", ["ln_div", "gamma"], ["ln_mul"]),
             n("Add", ["ln_mul", "beta"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 32])
    return _model(nodes, [x], [y], inits)


def _samples(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 16, 32)).astype(np.float32)} for _ in range(count)]


def _quantize(model, **kw):
    return quantize_model(model, samples=_samples(32, 0), progress=False, registries=None,
                          per_channel=True, **kw)


def _sqnr(model: onnx.ModelProto, q: onnx.ModelProto) -> float:
    run = lambda m: np.concatenate([  # noqa: E731
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        .run(None, s)[0] for s in _samples(16, 7)])
    return sqnr_db(run(model), run(q))


def test_elementwise_intermediates_are_not_quantized():
    model = _hardswish_layernorm()
    q, program = _quantize(model)
    acts = program.encodings["activations"]
    assert sorted(set(INTERIOR) & set(acts)) == []
    assert all(name in acts and not acts[name].get("dtype") == "float" for name in BOUNDARY)
    quantized_inputs = {node.input[0] for node in q.graph.node if node.op_type == "QuantizeLinear"}
    assert not set(INTERIOR) & quantized_inputs


def test_without_fusion_every_intermediate_is_quantized_and_error_is_larger():
    model = _hardswish_layernorm()
    fused, _ = _quantize(model)
    split, program = _quantize(model, fuse_elementwise=False)
    # hs_add (an Add read only by a Clip) is the older activation fusion's, on either way
    assert set(INTERIOR) - {"hs_add"} <= set(program.encodings["activations"])
    # 8-bit everywhere vs. 8-bit at the expressions' edges, against onnxruntime on the float model
    a, b = _sqnr(model, fused), _sqnr(model, split)
    assert a > 30.0 and a > b + 1.0, (a, b)


def test_an_override_keeps_an_intermediate_quantized(tmp_path):
    path = tmp_path / "ov.json"
    path.write_text(json.dumps({"activation_encodings": {"hs_clip": [{"bitwidth": 8,
                                                                      "dtype": "int"}]},
                                "param_encodings": {}}))
    _, program = _quantize(_hardswish_layernorm(), overrides=str(path))
    acts = program.encodings["activations"]
    assert "hs_clip" in acts and "hs_add" not in acts


def test_cli_biases_are_int32_by_default(tmp_path, capsys):
    out = tmp_path / "q.onnx"
    code = main(["quantize", "--input_model", str(DIGITS), "--input_list", str(DIGITS_LIST),
                 "--input_dim", "image", "1,1,8,8", "--output_model", str(out)])
    assert code == 0, capsys.readouterr().err
    q = onnx.load(out)
    inits = {t.name: t for t in q.graph.initializer}
    conv_bias = [node.input[2] for node in q.graph.node if node.op_type == "Conv"]
    producers = {o: node for node in q.graph.node for o in node.output}
    dtypes = {inits[producers[b].input[0]].data_type for b in conv_bias}
    assert conv_bias and dtypes == {TensorProto.INT32}
