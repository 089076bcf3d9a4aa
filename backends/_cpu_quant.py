"""How the ``cpu`` backend runs quantized graphs: onnxruntime session settings per graph and CPU.

onnxruntime fuses ``DequantizeLinear -> Conv/Gemm/MatMul -> QuantizeLinear`` into integer kernels
(``QLinearConv``, ``QGemm``, ``QLinearMatMul``) whose u8 x s8 products go through MLAS. On x86
CPUs without VNNI (AVX2, or AVX-512 without VNNI) MLAS multiplies with ``vpmaddubsw``, which adds
each pair of products into a *saturating* 16-bit lane: 255 * 127 * 2 does not fit, so large
activations against large weights come out wrong, by many quantization steps, with no error. On
the bundled example that is 95.8 % top-1 instead of the interpreter's 98.06 % (issue 13). CPUs
with VNNI (``vpdpbusd``, 32-bit accumulation) and ARM's kernels do not saturate.

Whether the CPU saturates is found by asking onnxruntime itself (``u8s8_saturates``): a tiny
``QLinearConv`` and a ``MatMulInteger`` whose exact results need more than 16 bits per product
pair run once per process and are compared with numpy's exact integer result. That tests the
kernels actually dispatched, whatever the CPU's feature names, the OS or the onnxruntime version.

The ``quantized_kernels`` option of the backend decides, for a graph with quantization ops:

- ``auto`` (default): onnxruntime's fused integer kernels where they are exact; where they
  saturate, ``float`` instead.
- ``float``: QDQ stays unfused (``session.disable_quant_qdq``): each quantized op runs as
  ``DequantizeLinear -> float op -> QuantizeLinear``, which is the ONNX definition the interpreter
  follows, so results agree with it within one quantization step (float rounding at a rounding
  boundary). Integer ops already present in the model (``QLinearConv`` ...) get onnxruntime's
  non-saturating u8u8 kernels (``session.x64quantprecision``).

The cost of ``float`` on a CPU with VNNI is measured by ``benchmarks/cpu_quantized.py``.
Graphs without quantization ops are never affected.
"""

from __future__ import annotations

import functools
import logging
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["QUANT_KERNELS", "has_quantized_ops", "u8s8_saturates", "quantized_session_config"]

logger = logging.getLogger(__name__)

QUANT_KERNELS = ("auto", "float")
QuantKernels = Literal["auto", "float"]

#: Ops that make a graph "quantized" for this decision (any domain).
_QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
                        "MatMulInteger", "ConvInteger", "QGemm", "MatMulIntegerToFloat",
                        "DynamicQuantizeMatMul", "QAttention", "DynamicQuantizeLSTM"})


def has_quantized_ops(model: onnx.ModelProto) -> bool:
    """Whether any node (subgraphs included) quantizes, dequantizes or computes on integers."""
    stack = [model.graph]
    while stack:
        graph = stack.pop()
        for node in graph.node:
            if node.op_type in _QUANT_OPS or node.op_type.startswith("QLinear"):
                return True
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    stack.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    stack.extend(attr.graphs)
    return False


def _probe_models() -> list[tuple[onnx.ModelProto, dict[str, np.ndarray], np.ndarray]]:
    """(model, feeds, exact result) pairs whose product pairs overflow int16."""
    cin, cout, hw = 16, 8, 4
    x = np.full((1, cin, hw, hw), 255, np.uint8)
    w = np.full((cout, cin, 1, 1), 127, np.int8)
    exact_sum = cin * 255 * 127                      # 518160: each pair is 64770 > 32767
    y_scale = np.float32(exact_sum / 200.0)          # exact output 200 (saturated pairs: 101)
    conv_inputs = [
        numpy_helper.from_array(np.array(1.0, np.float32), "xs"),
        numpy_helper.from_array(np.array(0, np.uint8), "xz"),
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.array(1.0, np.float32), "ws"),
        numpy_helper.from_array(np.array(0, np.int8), "wz"),
        numpy_helper.from_array(np.array(y_scale, np.float32), "ys"),
        numpy_helper.from_array(np.array(0, np.uint8), "yz"),
    ]
    conv = helper.make_graph(
        [helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])],
        "probe_conv", [helper.make_tensor_value_info("x", TensorProto.UINT8, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], conv_inputs)
    exact_conv = np.full((1, cout, hw, hw), 200, np.uint8)

    a = np.full((4, 64), 255, np.uint8)
    b = np.full((64, 16), 127, np.int8)
    mm = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])], "probe_matmul",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, list(a.shape))],
        [helper.make_tensor_value_info("c", TensorProto.INT32, None)],
        [numpy_helper.from_array(b, "b")])
    exact_mm = a.astype(np.int32) @ b.astype(np.int32)
    opset = [helper.make_opsetid("", 13)]
    return [(helper.make_model(conv, opset_imports=opset, ir_version=7), {"x": x}, exact_conv),
            (helper.make_model(mm, opset_imports=opset, ir_version=7), {"a": a}, exact_mm)]


@functools.lru_cache(maxsize=1)
def u8s8_saturates() -> bool:
    """Whether onnxruntime's u8 x s8 integer kernels saturate on this CPU (probed once).

    A probe that cannot run counts as saturating: the float path is always correct.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    try:
        for model, feeds, exact in _probe_models():
            sess = ort.InferenceSession(model.SerializeToString(), so,
                                        providers=["CPUExecutionProvider"])
            got = sess.run(None, feeds)[0]
            if not np.array_equal(got, exact):
                logger.info("onnxruntime's u8s8 integer kernels saturate on this CPU "
                            "(%s probe); quantized graphs run with QDQ unfused",
                            model.graph.name)
                return True
    except Exception as e:  # noqa: BLE001 - any failure means: do not trust the fused path
        logger.info("the u8s8 saturation probe could not run (%s); assuming it saturates", e)
        return True
    return False


def quantized_session_config(model: onnx.ModelProto, mode: str) -> tuple[str, dict[str, str]]:
    """(kernels used: "integer" / "float" / "none", onnxruntime session config entries) for one
    graph under the backend's ``quantized_kernels`` mode (see the module docstring)."""
    if not has_quantized_ops(model):
        return "none", {}
    if mode == "auto" and not u8s8_saturates():
        return "integer", {}
    return "float", {"session.disable_quant_qdq": "1", "session.x64quantprecision": "1"}
