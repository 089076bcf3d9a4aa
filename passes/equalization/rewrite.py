"""Graph surgery for ``cle``: scaled layers and activations -> new private constants and nodes.

Every rewritten weight or bias becomes a new constant with a unique name, so a weight shared with
another node is split (the other reader keeps the original). Nodes are inserted after their
anchor in one pass over the graph at the end, followed by one cleanup.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs

from aicc.pass_base import PassContext
from aicc.passes.cleanup import remove_dead_nodes
from aicc.graph_casts import Names

from aicc.passes.equalization.patterns import Layer, Link, const_value

__all__ = ["Editor"]

logger = logging.getLogger("aicc.passes.equalization.cle")


class Editor:
    """Graph surgery for ``cle``: unique names, new constants, nodes inserted after others."""

    def __init__(self, graph: gs.Graph):
        self.graph = graph
        self.names = Names(graph)
        self.insert_after: dict[int, list[gs.Node]] = {}
        self.removed: set[int] = set()

    def name(self, base: str) -> str:
        """A fresh tensor/node name starting with ``base``."""
        return self.names.new(base)

    def const(self, base: str, values: np.ndarray) -> gs.Constant:
        return gs.Constant(self.name(base), np.array(values, order="C"))

    def activation(self, link: Link, bound: np.ndarray | None, replace: bool) -> int:
        """Rewrite a bounded ReLU for the new scales (``bound``: per channel) or, with
        ``replace``, into a plain Relu; returns 1 for a replacement."""
        act, first = link.act, link.first
        if act.bound is None:           # Relu, LeakyRelu, PRelu, Clip(0, inf): nothing to do
            return 0
        head = act.nodes[0]
        if head.op == "Clip":
            head.op = "Relu"
            head.attrs.clear()
            while len(head.inputs) > 1:
                head.inputs.pop()
        if replace:
            if len(act.nodes) == 2:     # Relu -> Min: drop the Min
                tail = act.nodes[1]
                out = tail.outputs[0]
                tail.inputs.clear()
                tail.outputs.clear()
                head.outputs[0] = out
                self.removed.add(id(tail))
            return 1
        shape = (-1,) + (1,) * (first.w.ndim - 2) if first.kind == "conv" else (-1,)
        values = bound.reshape(shape).astype(first.dtype)
        if len(act.nodes) == 2:         # Relu -> Min already: a new per-channel bound
            tail = act.nodes[1]
            idx = 1 if tail.inputs[0] is head.outputs[0] else 0
            tail.inputs[idx] = self.const(f"{tail.name}_cle_bound", values)
            return 0
        out = head.outputs[0]
        mid = gs.Variable(self.name(f"{head.name}_cle_relu"), dtype=out.dtype, shape=out.shape)
        head.outputs[0] = mid
        tail = gs.Node("Min", name=self.name(f"{head.name}_cle_min"),
                       inputs=[mid, self.const(f"{head.name}_cle_bound", values)], outputs=[out])
        self.insert_after.setdefault(id(head), []).append(tail)
        return 0

    def layer(self, layer: Layer, ctx: PassContext) -> None:
        """Write the layer's scaled weights and bias as new, private constants."""
        if not layer.changed:
            return
        node, dt = layer.node, layer.dtype
        old = node.inputs[1]
        if len(old.outputs) > 1:
            logger.debug("cle: weights '%s' are shared; '%s' gets its own copy", old.name,
                         node.name)
            ctx.count("shared weights split")
        want_bias = layer.has_bias or bool(np.any(layer.b))
        if node.op == "Conv":
            node.inputs[1] = self.const(f"{node.name}_cle_w", layer.w.astype(dt))
            if want_bias:
                _set_input(node, 2, self.const(f"{node.name}_cle_b", layer.b.astype(dt)))
            return
        if node.op == "Gemm":
            trans_b = int(node.attrs.get("transB", 0))
            node.inputs[1] = self.const(f"{node.name}_cle_w",
                                        (layer.w if trans_b else layer.w.T).astype(dt))
            node.attrs["alpha"] = 1.0
            if want_bias:
                _set_input(node, 2, self.const(f"{node.name}_cle_b", layer.b.astype(dt)))
                node.attrs["beta"] = 1.0
            return
        node.inputs[1] = self.const(f"{node.name}_cle_w", layer.w.T.astype(dt))
        if layer.bias_add is not None:
            add = layer.bias_add
            idx = 1 if add.inputs[0] is node.outputs[0] else 0
            rank = max(const_value(add.inputs[idx]).ndim, 1)
            add.inputs[idx] = self.const(f"{node.name}_cle_b",
                                         layer.b.reshape((1,) * (rank - 1) + (-1,)).astype(dt))
        elif want_bias:
            out = node.outputs[0]
            mid = gs.Variable(self.name(f"{node.name}_cle_mm"), dtype=out.dtype, shape=out.shape)
            node.outputs[0] = mid
            add = gs.Node("Add", name=self.name(f"{node.name}_cle_bias"),
                          inputs=[mid, self.const(f"{node.name}_cle_b", layer.b.astype(dt))],
                          outputs=[out])
            self.insert_after.setdefault(id(node), []).append(add)

    def finish(self) -> None:
        nodes = []
        for node in self.graph.nodes:
            if id(node) in self.removed:
                continue
            nodes.append(node)
            nodes.extend(self.insert_after.get(id(node), ()))
        self.graph.nodes = nodes
        remove_dead_nodes(self.graph)


def _set_input(node: gs.Node, index: int, tensor: gs.Tensor) -> None:
    while len(node.inputs) <= index:
        node.inputs.append(gs.Variable.empty())
    node.inputs[index] = tensor
