"""Ops kept in float inside a quantized graph: fp16 ops lowered through convert-fp16's Casts, fp16
biases of fp32 ops cast up, and an fp32 bias of an fp16 op moved to an fp32 Add after it.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from aicc.pass_base import PassContext

from .qdq import QdqWriter

__all__ = ["lower_float_ops"]


def lower_float_ops(graph: gs.Graph, float_ops: dict[int, int], bias_bits: dict[int, int],
                    ctx: PassContext, where: str) -> None:
    """fp16 ops through convert-fp16's Cast lowering; fp16 biases of fp32 ops.

    ``float_ops``: id(node) -> the float bitwidth it keeps; ``bias_bits``: id(node) -> its bias's.
    """
    fp16 = [n for n in graph.nodes if float_ops.get(id(n)) == 16]
    bias16 = [n for n in graph.nodes if float_ops.get(id(n)) == 32
              and bias_bits.get(id(n)) == 16]
    split = [n for n in fp16 if bias_bits.get(id(n)) == 32]
    if not (fp16 or bias16):
        return
    w = QdqWriter(graph, ctx.count)
    for node in bias16:
        b = node.inputs[2]
        if isinstance(b, gs.Constant):
            half = gs.Constant(w.name(f"{b.name}_fp16"),
                               np.asarray(b.values).astype(np.float16))
            out = gs.Variable(w.name(f"{b.name}_from_fp16"), dtype=np.float32,
                              shape=list(half.shape))
            w.new_nodes.append(gs.Node("Cast", w.name(f"Cast_{out.name}"),
                                       {"to": 1}, [half], [out]))
            node.inputs[2] = out
    for node in split:   # fp16 op with an fp32 bias: the bias moves to an fp32 Add after it
        b = node.inputs[2]
        if not isinstance(b, gs.Constant):
            continue
        values = np.asarray(b.values)
        if node.op == "Gemm":
            values = values * float(node.attrs.get("beta", 1.0))
        else:
            rank = len(node.inputs[1].shape)
            values = values.reshape((-1,) + (1,) * (rank - 2))
        y = node.outputs[0]
        y0 = gs.Variable(w.name(f"{y.name}_nobias"), dtype=np.float32, shape=y.shape)
        node.outputs[0] = y0
        node.inputs.pop(2)
        w.new_nodes.append(gs.Node("Add", w.name(f"{node.name}_bias_fp32"), {},
                                   [y0, gs.Constant(w.name(f"{b.name}_fp32"),
                                                    values.astype(np.float32))], [y]))
    if w.new_nodes:
        w.finish()
    if fp16:
        from aicc.passes.precision.convert_fp16 import convert_nodes
        convert_nodes(graph, fp16, ctx, where=where)
