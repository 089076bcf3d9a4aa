"""A Conv + BatchNormalization pair going to fp16 folds in float64 from its float32 parameters
before anything is cast, as the device compiler folds it (issue 12). Folding after the cast
rounded gamma, beta, mean and variance to fp16 first: with means of 20-40 and outputs near 1 the
shift ``beta - mean * scale`` cancels, and the result was 4.3e-3 off onnxruntime where the
device's fold-then-cast gives 4.0e-4. Reference: onnxruntime on the original model; tolerance
1e-3 of the largest output magnitude (two fp16 roundings of an O(1) output, with margin)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import aicc

C = 16


def conv_bn(rng: np.random.Generator) -> onnx.ModelProto:
    w = (rng.standard_normal((C, C, 3, 3)) * 0.2).astype(np.float32)
    gamma = rng.uniform(0.5, 2, C).astype(np.float32)
    mean = rng.uniform(20, 40, C).astype(np.float32)
    var = rng.uniform(0.5, 2, C).astype(np.float32)
    beta = (mean * gamma / np.sqrt(var + 1e-5) + rng.uniform(-0.5, 0.5, C)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             ((w, "w"), (gamma, "gamma"), (beta, "beta"), (mean, "mean"), (var, "var"))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"],
                              ["y"], name="bn")]
    graph = helper.make_graph(nodes, "conv_bn",
                              [helper.make_tensor_value_info("x", TP.FLOAT, [1, C, 16, 16])],
                              [helper.make_tensor_value_info("y", TP.FLOAT, [1, C, 16, 16])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("target", ["interpreter", "aic100"])
def test_conv_batchnorm_folds_before_the_cast(tmp_path, target):
    rng = np.random.default_rng(0)
    model = conv_bn(rng)
    x = rng.random((1, C, 16, 16)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    aicc.compile(model, output=tmp_path / "q", target=target, fp16=True)
    session = aicc.load(tmp_path / "q")
    got = session.run({"x": x})["y"]
    assert np.abs(got - ref).max() <= 1e-3 * np.abs(ref).max()
    assert session.program_meta["node_precision"] == {"conv": "float16", "bn": "float16"}
