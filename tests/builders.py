"""Small model builders for tests: ONNX text in, checked ModelProto out."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
from onnx import TensorProto, helper, numpy_helper


def from_text(text: str, *, ir_version: int = 8) -> onnx.ModelProto:
    """Parse ONNX textual syntax into a model and check it."""
    model = onnx.parser.parse_model(text)
    model.ir_version = ir_version
    onnx.checker.check_model(model)
    return model


def conv_bn_model(*, channels: int = 4, out_channels: int = 6, group: int = 1, layer: str = "Conv",
                  with_bias: bool = True, seed: int = 0, act: str | None = "Relu",
                  transpose_b: int = 1, spatial: int = 5) -> onnx.ModelProto:
    """input -> layer -> BatchNormalization -> act -> output, with random, non-trivial weights."""
    rng = np.random.default_rng(seed)
    inits = []
    if layer == "Conv":
        w = rng.standard_normal((out_channels, channels // group, 3, 3)).astype(np.float32)
        x_shape = [1, channels, spatial, spatial]
        attrs = {"group": group, "pads": [1, 1, 1, 1]}
        n_out = out_channels
    elif layer == "ConvTranspose":
        w = rng.standard_normal((channels, out_channels // group, 3, 3)).astype(np.float32)
        x_shape = [1, channels, spatial, spatial]
        attrs = {"group": group, "strides": [2, 2]}
        n_out = out_channels
    else:
        k = channels
        w = rng.standard_normal((out_channels, k) if transpose_b else (k, out_channels)) \
            .astype(np.float32)
        x_shape = [3, k]
        attrs = {"transB": transpose_b, "alpha": 0.7, "beta": 1.3}
        n_out = out_channels
    inits.append(numpy_helper.from_array(w, "w"))
    inputs = ["x", "w"]
    if with_bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(n_out).astype(np.float32), "b"))
        inputs.append("b")
    for name, values in (("gamma", rng.uniform(0.5, 2.0, n_out)), ("beta", rng.standard_normal(n_out)),
                         ("mean", rng.standard_normal(n_out)), ("var", rng.uniform(0.2, 3.0, n_out))):
        inits.append(numpy_helper.from_array(values.astype(np.float32), name))
    nodes = [helper.make_node(layer, inputs, ["y"], name="layer", **attrs),
             helper.make_node("BatchNormalization", ["y", "gamma", "beta", "mean", "var"], ["z"],
                              name="bn", epsilon=1e-3)]
    out = "z"
    if act:
        nodes.append(helper.make_node(act, ["z"], ["a"], name="act"))
        out = "a"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    return model


def add_model(shape=("batch", 3)) -> onnx.ModelProto:
    """y = x + c with a symbolic first dimension (for symbol binding and runtime tests)."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "c"], ["y"], name="add")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))],
        [numpy_helper.from_array(np.arange(shape[-1], dtype=np.float32), "c")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model
