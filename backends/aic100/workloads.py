"""Reference workloads for tests and benchmarks: parameters in, a ResNet-50-shaped ONNX model out
(random weights; fp32, fp16 or int8 QDQ).

The network is ResNet-50 v1.5 with batch normalization already folded into the convolutions:
a 7x7/2 stem and 3x3/2 max pool, bottleneck stages of [3, 4, 6, 3] blocks (widths 64, 128, 256,
512, expansion 4, the stride on the 3x3 convolution, a 1x1 projection on each stage's first
block), global average pooling and a 1000-way classifier: 4.1 GMACs and 25.5 M parameters at
224x224. ``image`` and ``width`` shrink it for fast numeric tests.

``precision="int8"`` writes the QDQ form a quantizer produces (int8 activations with fixed
scales, int8 per-channel weights, int32 biases at input x weight scale, Relu fused before each
QuantizeLinear); it is meant for cost studies, whose figures do not depend on the values.
``precision="fp16"`` writes fp16 weights and computation with Casts at the float32 I/O.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["resnet50", "mobilenet", "RESNET50_STAGES"]

RESNET50_STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))


class _Builder:
    def __init__(self, precision: str, rng: np.random.Generator):
        self.precision = precision
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0
        self.act_scale = 0.05

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def float_dtype(self):
        return np.float16 if self.precision == "fp16" else np.float32

    # -- int8 helpers -----------------------------------------------------------------------
    def quantize(self, x: str, scale: float) -> str:
        """x (float) -> Q -> DQ: the name of the dequantized tensor."""
        s = self.const(self.name("s"), np.array(scale, np.float32))
        z = self.const(self.name("z"), np.array(0, np.int8))
        q = self.name(f"{x}_q")
        dq = self.name(f"{x}_dq")
        self.nodes.append(helper.make_node("QuantizeLinear", [x, s, z], [q]))
        self.nodes.append(helper.make_node("DequantizeLinear", [q, s, z], [dq]))
        return dq

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int, *, relu: bool,
             gain: float = 1.0, name: str) -> str:
        fan_in = cin * k * k
        w = (self.rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / fan_in) * gain)
        b = self.rng.standard_normal(cout) * 0.01
        attrs = {"kernel_shape": [k, k], "strides": [stride, stride],
                 "pads": [k // 2] * 4}
        out = name if not relu else f"{name}_pre"
        if self.precision == "int8":
            w_scale = np.maximum(np.abs(w).reshape(cout, -1).max(1), 1e-8) / 127.0
            wq = np.clip(np.rint(w / w_scale[:, None, None, None]), -127, 127).astype(np.int8)
            b_scale = self.act_scale * w_scale
            bq = np.rint(b / b_scale).astype(np.int32)
            wdq = self.name(f"{name}_w_dq")
            bdq = self.name(f"{name}_b_dq")
            self.nodes.append(helper.make_node(
                "DequantizeLinear", [self.const(f"{name}_w", wq),
                                     self.const(f"{name}_w_scale", w_scale.astype(np.float32)),
                                     self.const(f"{name}_w_zero", np.zeros(cout, np.int8))],
                [wdq], axis=0))
            self.nodes.append(helper.make_node(
                "DequantizeLinear", [self.const(f"{name}_b", bq),
                                     self.const(f"{name}_b_scale", b_scale.astype(np.float32)),
                                     self.const(f"{name}_b_zero", np.zeros(cout, np.int32))],
                [bdq], axis=0))
            self.nodes.append(helper.make_node("Conv", [x, wdq, bdq], [out], name=name, **attrs))
        else:
            dt = self.float_dtype()
            self.nodes.append(helper.make_node(
                "Conv", [x, self.const(f"{name}_w", w.astype(dt)),
                         self.const(f"{name}_b", b.astype(dt))], [out], name=name, **attrs))
        if relu:
            self.nodes.append(helper.make_node("Relu", [out], [name], name=f"{name}_relu"))
        return self.quantize(name, self.act_scale) if self.precision == "int8" else name

    def bottleneck(self, x: str, cin: int, width: int, stride: int, project: bool,
                   tag: str) -> str:
        cout = width * 4
        a = self.conv(x, cin, width, 1, 1, relu=True, name=f"{tag}_c1")
        b = self.conv(a, width, width, 3, stride, relu=True, name=f"{tag}_c2")
        c = self.conv(b, width, cout, 1, 1, relu=False, gain=0.3, name=f"{tag}_c3")
        short = self.conv(x, cin, cout, 1, stride, relu=False, name=f"{tag}_proj") \
            if project else x
        total = f"{tag}_sum"
        self.nodes.append(helper.make_node("Add", [c, short], [total], name=f"{tag}_add"))
        out = f"{tag}_out"
        self.nodes.append(helper.make_node("Relu", [total], [out], name=f"{tag}_relu"))
        return self.quantize(out, self.act_scale) if self.precision == "int8" else out


def resnet50(*, batch: int | str = 1, image: int = 224, width: float = 1.0, classes: int = 1000,
             precision: str = "fp32", int8_input: bool = False, seed: int = 0
             ) -> onnx.ModelProto:
    """A ResNet-50-shaped model: input ``image`` float32 [batch, 3, image, image], output
    ``logits`` float32 [batch, classes]. ``width`` scales every channel count.

    ``int8_input`` (with ``precision="int8"``) makes ``image`` the int8 tensor itself (scale
    0.02), as benchmark submissions feed preprocessed, quantized images: a quarter of the bytes
    the device reads per sample."""
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"precision {precision!r}: expected fp32, fp16 or int8")
    b = _Builder(precision, np.random.default_rng(seed))
    x = "image"
    if precision == "fp16":
        b.nodes.append(helper.make_node("Cast", ["image"], ["image_fp16"], to=TensorProto.FLOAT16))
        x = "image_fp16"
    elif precision == "int8" and int8_input:
        s_in = b.const("image_scale", np.array(0.02, np.float32))
        z_in = b.const("image_zero", np.array(0, np.int8))
        b.nodes.append(helper.make_node("DequantizeLinear", ["image", s_in, z_in], ["image_dq"]))
        x = "image_dq"
    elif precision == "int8":
        x = b.quantize("image", 0.02)
    stem = max(8, int(64 * width))
    x = b.conv(x, 3, stem, 7, 2, relu=True, name="conv1")
    pooled = "pool1"
    b.nodes.append(helper.make_node("MaxPool", [x], [pooled], kernel_shape=[3, 3],
                                    strides=[2, 2], pads=[1, 1, 1, 1], name="pool1"))
    x = b.quantize(pooled, b.act_scale) if precision == "int8" else pooled
    cin = stem
    for si, (w, blocks, stride) in enumerate(RESNET50_STAGES):
        w = max(4, int(w * width))
        for bi in range(blocks):
            x = b.bottleneck(x, cin, w, stride if bi == 0 else 1, bi == 0, f"s{si + 1}b{bi + 1}")
            cin = w * 4
    b.nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    x = b.quantize("gap", b.act_scale) if precision == "int8" else "gap"
    b.nodes.append(helper.make_node("Flatten", [x], ["flat"], axis=1, name="flatten"))
    fc_w = b.rng.standard_normal((classes, cin)) * np.sqrt(1.0 / cin)
    fc_b = b.rng.standard_normal(classes) * 0.01
    out = "logits"
    if precision == "int8":
        w_scale = np.maximum(np.abs(fc_w).max(1), 1e-8) / 127.0
        wq = np.clip(np.rint(fc_w / w_scale[:, None]), -127, 127).astype(np.int8)
        bq = np.rint(fc_b / (b.act_scale * w_scale)).astype(np.int32)
        b.nodes.append(helper.make_node("DequantizeLinear", [
            b.const("fc_w", wq), b.const("fc_w_scale", w_scale.astype(np.float32)),
            b.const("fc_w_zero", np.zeros(classes, np.int8))], ["fc_w_dq"], axis=0))
        b.nodes.append(helper.make_node("DequantizeLinear", [
            b.const("fc_b", bq), b.const("fc_b_scale", (b.act_scale * w_scale).astype(np.float32)),
            b.const("fc_b_zero", np.zeros(classes, np.int32))], ["fc_b_dq"], axis=0))
        b.nodes.append(helper.make_node("Gemm", ["flat", "fc_w_dq", "fc_b_dq"], ["fc"],
                                        transB=1, name="fc"))
        s = b.const("logits_s", np.array(0.1, np.float32))
        z = b.const("logits_z", np.array(0, np.int8))
        b.nodes.append(helper.make_node("QuantizeLinear", ["fc", s, z], ["logits_q"]))
        b.nodes.append(helper.make_node("DequantizeLinear", ["logits_q", s, z], [out]))
    else:
        dt = b.float_dtype()
        fc_out = "fc" if precision == "fp16" else out
        b.nodes.append(helper.make_node("Gemm", ["flat", b.const("fc_w", fc_w.astype(dt)),
                                                 b.const("fc_b", fc_b.astype(dt))], [fc_out],
                                        transB=1, name="fc"))
        if precision == "fp16":
            b.nodes.append(helper.make_node("Cast", ["fc"], [out], to=TensorProto.FLOAT))
    graph = helper.make_graph(
        b.nodes, "resnet50",
        [helper.make_tensor_value_info("image", TensorProto.INT8 if int8_input and
                                       precision == "int8" else TensorProto.FLOAT,
                                       [batch, 3, image, image])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def mobilenet(*, batch: int = 8, image: int = 96, width: float = 0.5, classes: int = 100,
              seed: int = 0) -> onnx.ModelProto:
    """A MobileNet-v1-style fp16 model: a 3x3/2 stem, 13 depthwise-separable blocks (3x3
    depthwise + 1x1 pointwise, each with Relu; strides as MobileNet v1), global average pooling
    and a classifier. Input ``image`` float16 [batch, 3, image, image], output ``logits``
    float16 [batch, classes]. Small enough to compile in a fraction of a second (for the
    multi-core scaling tests)."""
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def conv(x: str, cin: int, cout: int, k: int, stride: int, group: int, name: str) -> str:
        w = rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / (cin // group * k * k))
        inits.append(numpy_helper.from_array(w.astype(np.float16), f"{name}_w"))
        inits.append(numpy_helper.from_array(np.zeros(cout, np.float16), f"{name}_b"))
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [f"{name}_c"],
                                      name=name, kernel_shape=[k, k], strides=[stride, stride],
                                      pads=[k // 2] * 4, group=group))
        nodes.append(helper.make_node("Relu", [f"{name}_c"], [name], name=f"{name}_relu"))
        return name

    def ch(c: int) -> int:
        return max(8, int(c * width))

    x = conv("image", 3, ch(32), 3, 2, 1, "stem")
    cin = ch(32)
    blocks = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + \
        [(1024, 2), (1024, 1)]
    for i, (cout, stride) in enumerate(blocks):
        x = conv(x, cin, cin, 3, stride, cin, f"b{i}_dw")
        x = conv(x, cin, ch(cout), 1, 1, 1, f"b{i}_pw")
        cin = ch(cout)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1, name="flatten"))
    fc = rng.standard_normal((classes, cin)) * np.sqrt(1.0 / cin)
    inits.append(numpy_helper.from_array(fc.astype(np.float16), "fc_w"))
    inits.append(numpy_helper.from_array(np.zeros(classes, np.float16), "fc_b"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1,
                                  name="fc"))
    graph = helper.make_graph(
        nodes, "mobilenet",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT16, [batch, 3, image, image])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT16, [batch, classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model
