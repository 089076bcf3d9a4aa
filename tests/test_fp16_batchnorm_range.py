"""fp16 on a BatchNormalization whose parameters leave the fp16 range (PP-OCRv4 det: a variance
of 1e8 after a layer with outputs in the thousands). Before, the variance was clipped to 65504
(initializers) or cast to inf (Constant nodes, how Paddle exports weights), fold-batchnorm then
folded a wrong or zero scale, and the detector returned an all-zero map with exit code 0. Now the
layer keeps its function as scale and shift, and every backend agrees with onnxruntime within
fp16 tolerance, through the public path. (A BatchNormalization after a Conv that also goes to
fp16 is now folded into it in float64 before the cast, so only a lone one is rewritten.)"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import aicc

RNG = np.random.default_rng(7)
W = (RNG.standard_normal((4, 3, 3, 3)) * 40).astype(np.float32)      # outputs in the thousands
BN = {"gamma": RNG.uniform(0.8, 1.2, 4), "beta": RNG.uniform(-0.5, 0.5, 4),
      "mean": RNG.uniform(-300, 300, 4), "var": RNG.uniform(1e7, 1e8, 4)}


def _model(as_constant_nodes: bool, bn_alone: bool = False) -> onnx.ModelProto:
    """x -> Conv -> BatchNormalization (variance ~1e8) -> Sigmoid; with ``bn_alone`` an Add sits
    between Conv and BatchNormalization, so it cannot fold and runs in fp16 itself."""
    params = {"w": W, **{k: v.astype(np.float32) for k, v in BN.items()}}
    nodes, inits = [], []
    for name, value in params.items():
        if as_constant_nodes:
            nodes.append(helper.make_node("Constant", [], [name], name=f"const_{name}",
                                          value=numpy_helper.from_array(value, name)))
        else:
            inits.append(numpy_helper.from_array(value, name))
    nodes.append(helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]))
    x_bn = "c"
    if bn_alone:
        inits.append(numpy_helper.from_array(np.float32([1.0]), "one"))
        nodes.append(helper.make_node("Add", ["c", "one"], ["c1"], name="add"))
        x_bn = "c1"
    nodes += [helper.make_node("BatchNormalization", [x_bn, "gamma", "beta", "mean", "var"],
                               ["b"], name="bn"),
              helper.make_node("Sigmoid", ["b"], ["y"], name="sig")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT,
                                                                         [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TP.FLOAT, [1, 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("as_constant_nodes", [False, True], ids=["initializers", "constants"])
@pytest.mark.parametrize("bn_alone", [False, True], ids=["folded", "alone"])
@pytest.mark.parametrize("target", ["interpreter", "cpu", "aic100"])
def test_fp16_keeps_the_batchnorm_scale(tmp_path, caplog, as_constant_nodes, bn_alone, target):
    model = _model(as_constant_nodes, bn_alone)
    x = (RNG.standard_normal((1, 3, 8, 8)) * 2).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert 0.05 < ref.mean() < 0.95                  # the sigmoid is not saturated everywhere
    with caplog.at_level(logging.WARNING):
        aicc.compile(model, output=tmp_path / "q", target=target, fp16=True)
    got = aicc.load(tmp_path / "q").run({"x": x})["y"]
    # fp16 tolerance: the pre-sigmoid values are O(1); a wrong BN scale moves them by O(10)
    np.testing.assert_allclose(got, ref, atol=1e-2)
    # after a Conv, convert-fp16 folds the pair in float64 before any cast: nothing to rewrite
    assert ("runs as the same scale and shift" in caplog.text) == bn_alone
