"""A dynamic-shape CNN built in code: ONNX with symbolic ``batch``, ``height`` and ``width`` out.

The network specialization example of the vendor documentation compiles a ResNet with those three
symbols into three specializations; this small stand-in has the same interface, so the example's
config (``dynamic_cnn_specializations.json`` beside this file) applies unchanged::

    image [batch, 3, height, width]
      -> Conv 3x3 (3 -> C) -> BatchNormalization -> Relu
      -> Conv 3x3 (C -> C, stride 2) -> Relu
      -> GlobalAveragePool -> Flatten -> Gemm (C -> classes) -> logits [batch, classes]

Weights are random but seeded. ``python examples/dynamic_cnn.py out.onnx`` writes the model.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["build", "SPECIALIZATIONS"]

#: The vendor documentation's three specializations of a batch/height/width model.
SPECIALIZATIONS = {"specializations": [
    {"batch": "1", "height": "56", "width": "56"},
    {"batch": "1", "height": "112", "width": "112"},
    {"batch": "2", "height": "56", "width": "56"},
]}


def build(*, channels: int = 16, classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    """The model, checked, opset 17, IR version 8."""
    rng = np.random.default_rng(seed)
    c = channels

    def weight(name: str, *shape: int, scale: float = 1.0) -> onnx.TensorProto:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        values = rng.standard_normal(shape) * scale / np.sqrt(fan_in)
        return numpy_helper.from_array(values.astype(np.float32), name)

    inits = [
        weight("conv1.w", c, 3, 3, 3), weight("conv1.b", c, scale=0.1),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), "bn.gamma"),
        numpy_helper.from_array((0.1 * rng.standard_normal(c)).astype(np.float32), "bn.beta"),
        numpy_helper.from_array((0.1 * rng.standard_normal(c)).astype(np.float32), "bn.mean"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), "bn.var"),
        weight("conv2.w", c, c, 3, 3), weight("conv2.b", c, scale=0.1),
        weight("fc.w", classes, c), weight("fc.b", classes, scale=0.1),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "conv1.w", "conv1.b"], ["c1"], name="conv1",
                         pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn.gamma", "bn.beta", "bn.mean", "bn.var"],
                         ["b1"], name="bn", epsilon=1e-5),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "conv2.w", "conv2.b"], ["c2"], name="conv2",
                         pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "dynamic_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                       ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="aicc-examples")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/dynamic_cnn.py OUT.onnx")
    onnx.save_model(build(), sys.argv[1])
    print(f"wrote {sys.argv[1]}")
