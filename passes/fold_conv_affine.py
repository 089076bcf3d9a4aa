"""``fold-conv-affine``: fold a constant scale and shift after a Conv (``Mul``/``Div`` by, ``Add``/
``Sub`` of a constant that is a scalar or one value per output channel) into the Conv's weights
and bias, when the Conv's output has no other reader.

Exporters write such chains for layers that are a convolution followed by a learnable affine
(PP-LCNetV3's "learnable affine blocks", a BatchNormalization exported as Mul and Add): PP-OCRv4's
text detector has 28 of them. Device compilers fold them into the convolution, as
``fold-batchnorm`` does for a BatchNormalization (and as onnxruntime's Conv/Mul and Conv/Add
fusions do), so the device runs one convolution that rounds its result once instead of three ops
that each round to fp16: on PP-OCRv4 det in fp16 this halves the error against float (relative
error 5.5e-2 -> 3.1e-2 on the zoo's sample). The aic100 target adds the pass to its compile.

With s and d per output channel: Conv(x)·s + d = Conv'(x) with W'[o] = W[o]·s[o] and
b'[o] = b[o]·s[o] + d[o] (Div by c is Mul by 1/c; Sub of c is Add of -c), computed in float64
and stored in the weights' dtype. The folded Conv takes the name of the last folded op's output,
so names the rest of the graph uses do not change; weights are always new constants, so a weight
another layer shares is never changed under it.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs

from aicc.hookspecs import hookimpl
from aicc.pass_base import Pass, PassContext, Tolerance
from aicc.passes.cleanup import detach_nodes, remove_dead_nodes
from aicc.program import Program

__all__ = ["FoldConvAffine"]

logger = logging.getLogger(__name__)

_OPS = frozenset({"Mul", "Div", "Add", "Sub"})


class FoldConvAffine(Pass):
    name = "fold-conv-affine"
    description = "fold a constant scale/shift after a Conv into its weights and bias"
    scope = "graph"
    after = ("fold-constants", "fold-batchnorm")
    before = ("calibrate", "quantize")
    semantics = "preserving"
    tolerance = Tolerance(rtol=1e-4, atol=1e-5)

    def run_graph(self, graph: gs.Graph, program: Program, ctx: PassContext) -> bool:
        graph_outputs = {t.name for t in graph.outputs}
        removed: list[gs.Node] = []
        for conv in graph.nodes:
            if conv.op != "Conv":
                continue
            while True:     # Mul then Add: one op per round, while the next one folds
                op = _next_foldable(conv, graph_outputs)
                if op is None or not _fold(conv, op):
                    break
                conv.outputs[0] = op.outputs[0]
                op.outputs.clear()
                removed.append(op)
                ctx.count("ops folded into convolutions")
        if removed:
            detach_nodes(removed)
            gone = {id(n) for n in removed}
            graph.nodes = [n for n in graph.nodes if id(n) not in gone]
            remove_dead_nodes(graph)
        return bool(removed)


def _const(t: gs.Tensor) -> np.ndarray | None:
    return np.asarray(t.values) if isinstance(t, gs.Constant) else None


def _next_foldable(conv: gs.Node, graph_outputs: set[str]) -> gs.Node | None:
    """The Mul/Div/Add/Sub reading the Conv's output with a constant, if it is the only reader."""
    y = conv.outputs[0]
    if len(y.outputs) != 1 or y.name in graph_outputs:
        return None
    op = y.outputs[0]
    if op.op not in _OPS or len(op.inputs) != 2 or op.inputs[0] is op.inputs[1]:
        return None
    if op.op in ("Div", "Sub") and op.inputs[0] is not y:     # c / y, c - y: not affine in y
        return None
    return op


def _per_channel(c: np.ndarray, out_rank: int, channels: int) -> np.ndarray | None:
    """``c`` as one value per output channel, if broadcasting it against the Conv's output
    [N, C, ...] neither changes that shape nor varies along another axis."""
    if c.ndim > out_rank:
        return None
    shaped = c.reshape((1,) * (out_rank - c.ndim) + c.shape)
    if any(d != 1 for i, d in enumerate(shaped.shape) if i != 1) or \
            shaped.shape[1] not in (1, channels):
        return None
    return np.broadcast_to(shaped.reshape(-1), (channels,)).astype(np.float64)


def _fold(conv: gs.Node, op: gs.Node) -> bool:
    """Fold ``op`` into ``conv``'s weights and bias (False, and nothing changed, if it cannot)."""
    w = _const(conv.inputs[1])
    has_bias = len(conv.inputs) > 2 and bool(conv.inputs[2].name)
    b = _const(conv.inputs[2]) if has_bias else None
    other = op.inputs[1] if op.inputs[0] is conv.outputs[0] else op.inputs[0]
    c = _const(other)
    if w is None or (has_bias and b is None) or c is None or c.dtype != w.dtype:
        return False
    v = _per_channel(c, w.ndim, w.shape[0])
    if v is None or (op.op == "Div" and not np.all(v != 0)):
        return False
    bias = b.astype(np.float64) if b is not None else np.zeros(w.shape[0])
    if op.op in ("Mul", "Div"):
        scale = v if op.op == "Mul" else 1.0 / v
        w_new = w.astype(np.float64) * scale.reshape((-1,) + (1,) * (w.ndim - 1))
        bias = bias * scale
    else:
        w_new, bias = w, bias + (v if op.op == "Add" else -v)
    conv.inputs[1] = gs.Constant(f"{conv.name}_affine_w_{op.name}", np.array(w_new, w.dtype))
    while len(conv.inputs) < 3:
        conv.inputs.append(gs.Variable.empty())
    conv.inputs[2] = gs.Constant(f"{conv.name}_affine_b_{op.name}", np.array(bias, w.dtype))
    return True


@hookimpl
def aicc_register_passes(registry):
    registry.add(FoldConvAffine)
