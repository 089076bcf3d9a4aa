"""Helpers of the aic100 tests: models in fp16 and int8 (through the real passes when they are
registered), small graphs built with onnx.helper, and a compile-and-compare shortcut."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from aicc.backends.aic100 import Aic100Backend
from aicc.backends.interpreter.engine import Interpreter
from aicc.plugins import Registries
from aicc.testing import run_pass

__all__ = ["to_fp16", "to_int8", "bind", "compile_aic", "interp", "qdq_op_model",
           "matmul_chain", "conv_chain", "steps_of"]


def bind(model: onnx.ModelProto, batch: int, registries: Registries) -> onnx.ModelProto:
    """The model with its batch symbol bound (as -batchsize does)."""
    return run_pass(model, "bind-symbols", {"batchsize": batch}, registries=registries).to_model()


def to_fp16(model: onnx.ModelProto, registries: Registries) -> onnx.ModelProto:
    """-convert-to-fp16 through the convert-fp16 pass (then BN folding, as aicc compile does), or
    a plain conversion (fp16 initializers, Casts at the float32 I/O) when it is not registered."""
    if "convert-fp16" in registries.passes:
        program = run_pass(model, "convert-fp16", {"all": True}, registries=registries)
        program = run_pass(program, "fold-batchnorm", {}, registries=registries)
        return run_pass(program, "cleanup", {}, registries=registries).to_model()
    return _plain_fp16(model)


def _plain_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(
                numpy_helper.to_array(init).astype(np.float16), init.name))
    renames = {}
    for vi in g.input:
        renames[vi.name] = vi.name + "_fp16"
    nodes = [helper.make_node("Cast", [vi.name], [vi.name + "_fp16"], to=TensorProto.FLOAT16)
             for vi in g.input]
    for node in g.node:
        node.input[:] = [renames.get(x, x) for x in node.input]
    outs = {vi.name for vi in g.output}
    for node in g.node:
        node.output[:] = [o + "_fp16" if o in outs else o for o in node.output]
        node.input[:] = [x + "_fp16" if x in outs else x for x in node.input]
    tail = [helper.make_node("Cast", [vi.name + "_fp16"], [vi.name], to=TensorProto.FLOAT)
            for vi in g.output]
    new_nodes = nodes + list(g.node) + tail
    del g.node[:]
    g.node.extend(new_nodes)
    del g.value_info[:]
    return onnx.shape_inference.infer_shapes(m)


def to_int8(model: onnx.ModelProto, samples: Sequence[Mapping[str, np.ndarray]],
            registries: Registries, **options: Any) -> onnx.ModelProto:
    """A QDQ model through the calibrate + quantize passes."""
    from aicc.quantization import quantize_model

    qdq, _ = quantize_model(model, samples=samples, progress=False, registries=registries,
                            **options)
    return qdq


def compile_aic(model: onnx.ModelProto, spec_options: Mapping[str, Any] | None = None,
                **options: Any):
    backend = Aic100Backend(Aic100Backend.Options(**options))
    return backend.compile(model, program_meta={}, spec_options=spec_options or {})


def interp(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return Interpreter(model).run(feeds)


def steps_of(exe) -> dict[str, Any]:
    return {sp.step.name: sp for sp in exe.plan.steps}


def _q(name: str, scale: float, zero: int, dtype) -> list[onnx.TensorProto]:
    return [numpy_helper.from_array(np.array(scale, np.float32), f"{name}_s"),
            numpy_helper.from_array(np.array(zero, dtype), f"{name}_z")]


def qdq_op_model(op: str, *, seed: int = 0, batch: int = 2, act: str | None = None,
                 per_channel: bool = True, x_dtype=np.uint8, x_zero: int = 128,
                 group: int = 1, stride: int = 1, dilation: int = 1, spatial: int = 9,
                 cin: int = 8, cout: int = 12, trans_b: int = 1) -> onnx.ModelProto:
    """x (float) -> Q -> DQ -> OP(DQ(w int8), DQ(b int32)) [-> act] -> Q -> DQ -> y.

    ``op`` is Conv, ConvTranspose, Gemm or MatMul; weights int8 (per output channel or per tensor), bias int32
    at input scale x weight scale, activations ``x_dtype`` with zero point ``x_zero``.
    """
    rng = np.random.default_rng(seed)
    xs, ys = 0.05, 0.08
    inits: list[onnx.TensorProto] = []
    nodes = []
    inits += _q("x", xs, x_zero, x_dtype)
    nodes += [helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["xq"]),
              helper.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["xd"])]
    if op == "Conv":
        w = rng.standard_normal((cout, cin // group, 3, 3)) * 0.2
        ch_axis = 0
        x_shape = [batch, cin, spatial, spatial]
        attrs = {"group": group, "strides": [stride, stride], "dilations": [dilation, dilation],
                 "pads": [1, 1, 1, 1]}
    elif op == "ConvTranspose":
        w = rng.standard_normal((cin, cout // group, 3, 3)) * 0.2
        ch_axis = 1
        x_shape = [batch, cin, spatial, spatial]
        attrs = {"group": group, "strides": [stride, stride], "pads": [1, 1, 1, 1],
                 "output_padding": [stride - 1, stride - 1]}
    elif op == "Gemm":
        w = rng.standard_normal((cout, cin) if trans_b else (cin, cout)) * 0.2
        ch_axis = 0 if trans_b else 1
        x_shape = [batch, cin]
        attrs = {"transB": trans_b}
    else:
        w = rng.standard_normal((cin, cout)) * 0.2
        ch_axis = 1
        x_shape = [batch, 3, cin]
        attrs = {}
    red = tuple(i for i in range(w.ndim) if i != ch_axis)
    ws = (np.abs(w).max(axis=red) / 127.0) if per_channel else np.array(np.abs(w).max() / 127.0)
    shape = [1] * w.ndim
    if per_channel:
        shape[ch_axis] = -1
    wq = np.clip(np.rint(w / ws.reshape(shape)), -127, 127).astype(np.int8)
    inits += [numpy_helper.from_array(wq, "w_q"),
              numpy_helper.from_array(ws.astype(np.float32), "w_s"),
              numpy_helper.from_array(np.zeros(ws.shape, np.int8), "w_z")]
    nodes.append(helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["wd"],
                                  axis=ch_axis))
    inputs = ["xd", "wd"]
    if op != "MatMul":
        b = rng.standard_normal(cout) * 0.5
        bs = xs * (ws if per_channel else np.full(cout, float(ws)))
        inits += [numpy_helper.from_array(np.rint(b / bs).astype(np.int32), "b_q"),
                  numpy_helper.from_array(bs.astype(np.float32), "b_s"),
                  numpy_helper.from_array(np.zeros(cout, np.int32), "b_z")]
        nodes.append(helper.make_node("DequantizeLinear", ["b_q", "b_s", "b_z"], ["bd"],
                                      axis=0))
        inputs.append("bd")
    out = "y_pre" if act is None else "y_op"
    nodes.append(helper.make_node(op, inputs, [out], name="main", **attrs))
    if act == "Relu":
        nodes.append(helper.make_node("Relu", ["y_op"], ["y_pre"], name="act"))
    elif act == "Clip":
        inits += [numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
                  numpy_helper.from_array(np.array(3.0, np.float32), "hi")]
        nodes.append(helper.make_node("Clip", ["y_op", "lo", "hi"], ["y_pre"], name="act"))
    inits += _q("y", ys, 3, np.int8)
    nodes += [helper.make_node("QuantizeLinear", ["y_pre", "y_s", "y_z"], ["yq"]),
              helper.make_node("DequantizeLinear", ["yq", "y_s", "y_z"], ["y"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, x_shape)], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def matmul_chain(*, layers: int = 4, width: int = 1024, rows: int = 64,
                 seed: int = 0) -> onnx.ModelProto:
    """fp16 x[rows, width] -> (MatMul width x width -> Relu) x layers: weight-heavy (2 MiB each)."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float16)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"], name=f"mm{i}"))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"r{i}"], name=f"relu{i}"))
        x = f"r{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT16, [rows, width])], [helper.make_tensor_value_info(
            x, TensorProto.FLOAT16, [rows, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def conv_chain(*, layers: int = 4, channels: int = 64, size: int = 128, batch: int = 1,
               seed: int = 0) -> onnx.ModelProto:
    """fp16 image -> (3x3 Conv -> Relu) x layers: activation-heavy (2 MiB per tensor at 128^2)."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = "x"
    for i in range(layers):
        w = (rng.standard_normal((channels, channels, 3, 3)) / np.sqrt(9 * channels)
             ).astype(np.float16)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], name=f"conv{i}",
                                      pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        x = f"r{i}"
    graph = helper.make_graph(nodes, "convs", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT16, [batch, channels, size, size])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT16, [batch, channels, size, size])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model
