"""fp16 without sample data on models whose constants leave the fp16 range, through the public
path, against onnxruntime on the original model.

Before: a constant beyond +-65504 was clipped and the program answered wrong with exit code 0
(``x / 1e6`` became ``x / 65504``, 15x too large; ``x * Sqrt(1e8)`` became ``x * 256``). Now a
node computed from constants only stays fp32 (folded so), and one reading a constant beyond the
range stays fp32 with a warning naming it. Also: a run whose fp16 values overflow inside but whose
outputs stay finite (a decomposed LayerNorm whose variance is inf returns 0) warns on aic100 as
on the interpreter, naming the first node.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import aicc

TARGETS = ["interpreter", "aic100", "cpu"]


def _model(nodes: list, consts: dict[str, float], shape: list[int], out_shape=None, *,
           as_constant_nodes: bool) -> onnx.ModelProto:
    inits = []
    for name, value in consts.items():
        arr = numpy_helper.from_array(np.float32([value]), name)
        if as_constant_nodes:
            nodes = [helper.make_node("Constant", [], [name], name=f"c_{name}", value=arr)] + nodes
        else:
            inits.append(arr)
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TP.FLOAT, out_shape or shape)],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _compile_run(model, target, tmp_path, x):
    aicc.compile(model, output=tmp_path / "q", target=target, fp16=True)
    session = aicc.load(tmp_path / "q")
    return session, session.run({"x": x})["y"]


def _reference(model, x):
    return ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("as_constant_nodes", [False, True], ids=["initializers", "constants"])
@pytest.mark.parametrize("target", TARGETS)
def test_a_divisor_beyond_fp16_keeps_its_node_in_fp32(tmp_path, caplog, target,
                                                     as_constant_nodes):
    model = _model([helper.make_node("Div", ["x", "big"], ["y"], name="div")], {"big": 1e6},
                   [1, 8], as_constant_nodes=as_constant_nodes)
    x = (np.random.default_rng(0).standard_normal((1, 8)) * 1e3).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        session, got = _compile_run(model, target, tmp_path, x)
    ref = _reference(model, x)
    np.testing.assert_allclose(got, ref, rtol=1e-3)     # was 15x too large (1e6 -> 65504)
    assert "node 'div' (Div) stays in fp32: it reads constant 'big' (|x| up to 1e+06)" \
        in caplog.text
    assert session.program_meta["node_precision"]["div"] == "float32"


@pytest.mark.parametrize("as_constant_nodes", [False, True], ids=["initializers", "constants"])
@pytest.mark.parametrize("target", TARGETS)
def test_constant_arithmetic_folds_in_fp32(tmp_path, target, as_constant_nodes):
    """x * Sqrt(1e8) * (1e5 * 1e-3): the constant subexpressions fold to 1e4 and 100, both
    inside fp16's range, although 1e8 and 1e5 are not."""
    nodes = [helper.make_node("Sqrt", ["big"], ["s"], name="sqrt"),
             helper.make_node("Mul", ["a", "b"], ["ab"], name="mul_consts"),
             helper.make_node("Mul", ["x", "s"], ["xs"], name="mul_s"),
             helper.make_node("Mul", ["xs", "ab"], ["y"], name="mul_ab")]
    model = _model(nodes, {"big": 1e8, "a": 1e5, "b": 1e-3}, [1, 8],
                   as_constant_nodes=as_constant_nodes)
    x = (np.random.default_rng(1).standard_normal((1, 8)) * 1e-2).astype(np.float32)
    _, got = _compile_run(model, target, tmp_path, x)
    np.testing.assert_allclose(got, _reference(model, x), rtol=2e-3)   # was 0.97 off


def test_a_mask_constant_is_still_clipped(tmp_path, caplog):
    """Add of -1e9 (an attention mask) is a fill: it stays fp16, clipped, as before."""
    nodes = [helper.make_node("Add", ["x", "neg"], ["xm"], name="mask"),
             helper.make_node("Softmax", ["xm"], ["y"], axis=-1, name="sm")]
    model = _model(nodes, {"neg": -1e9}, [1, 8], as_constant_nodes=False)
    x = np.random.default_rng(2).standard_normal((1, 8)).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        session, got = _compile_run(model, "interpreter", tmp_path, x)
    np.testing.assert_allclose(got, _reference(model, x), atol=1e-3)
    assert "constant 'neg' has 1 value(s) beyond the fp16 range" in caplog.text
    assert session.program_meta["node_precision"]["mask"] == "float16"


@pytest.mark.parametrize("target", ["interpreter", "aic100"])
def test_an_overflow_hidden_from_the_outputs_is_named(tmp_path, caplog, target):
    """A decomposed LayerNorm on values near 600: the squares overflow fp16, the variance is
    inf, and y = d / inf = 0 is finite but wrong. The run must say so, naming the node."""
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[-1], name="mean"),
             helper.make_node("Sub", ["x", "m"], ["d"], name="sub"),
             helper.make_node("Mul", ["d", "d"], ["sq"], name="square"),
             helper.make_node("ReduceMean", ["sq"], ["v"], axes=[-1], name="var"),
             helper.make_node("Sqrt", ["v"], ["sd"], name="sqrt"),
             helper.make_node("Div", ["d", "sd"], ["y"], name="div")]
    model = _model(nodes, {}, [1, 64], as_constant_nodes=False)
    x = (np.random.default_rng(3).standard_normal((1, 64)) * 600).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        session, got = _compile_run(model, target, tmp_path, x)
    assert np.isfinite(got).all() and np.abs(got - _reference(model, x)).max() > 0.5
    assert "non-finite values inside (its outputs are finite but may be wrong)" in caplog.text
    assert "the first node to produce one is 'square'" in caplog.text
    assert session.nonfinite["default"]["first"]["node"] == "square"


@pytest.mark.parametrize("target", ["interpreter", "aic100"])
def test_a_computed_constant_beyond_fp16_keeps_its_reader_in_fp32(tmp_path, caplog, target):
    """x / (1e4 * 1e4): in fp16 the product is inf and x / inf = 0 everywhere (finite, wrong,
    no warning before). The product folds in fp32 and the Div reading it stays fp32."""
    nodes = [helper.make_node("Mul", ["a", "b"], ["ab"], name="mul_consts"),
             helper.make_node("Div", ["x", "ab"], ["y"], name="div")]
    model = _model(nodes, {"a": 1e4, "b": 1e4}, [1, 8], as_constant_nodes=False)
    x = (np.random.default_rng(4).standard_normal((1, 8)) * 1e4).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        _, got = _compile_run(model, target, tmp_path, x)
    np.testing.assert_allclose(got, _reference(model, x), rtol=1e-3)
    assert "node 'div' (Div) stays in fp32: it reads constant 'ab' (|x| up to 1e+08)" \
        in caplog.text
