"""AMP's quantizer groups: a float graph (BatchNorm folded, constants folded, nodes in topological
order) in; a partition of its computing nodes into groups that change precision together out.

A group starts at a weighted layer (Conv, ConvTranspose, Gemm, MatMul with a constant float
weight) and takes every computing node downstream of it up to the next weighted layer: the
activations, elementwise expressions, residual Adds, attention MatMuls of two activations,
Softmax, reshapes and transposes that the layer's output flows through. A node with several
producers (a residual ``Add(block, skip)``, a Concat) joins the group of the producer latest in
topological order, the one its own data came through last. A computing node none of whose
producers is in a group (the model's input arithmetic before its first layer) starts a group of
its own, named after it, which its downstream nodes join in the same way. A float32 graph input
that one group alone reads changes precision with it. Each group thus holds at
most one weighted layer, and choosing fp16 for it covers the quantization error of everything it
computes, not only of the layer's weight and output: on models built of elementwise expressions
and attention (PP-OCRv4's recognizer) that is where most of the int8 error sits.

Computing nodes are those with a float32 output that is not a shape computation (``Shape``/
``Size`` and what is computed from them alone); ``Constant`` nodes, integer-only nodes and shape
arithmetic belong to no group. The cost of a group is its work: a weighted layer's or a two-input
MatMul's multiply-accumulates, and one operation per output element for every other node.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_graphsurgeon as gs

from .. import ir
from .exact import shape_computations

__all__ = ["AmpGroup", "WEIGHTED", "amp_groups", "weighted_layer"]

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclasses.dataclass
class AmpGroup:
    """One quantizer group: its name (the first node's), the weighted layer if it has one, and
    every member node in graph order (the layer first)."""
    name: str
    layer: gs.Node | None
    nodes: list[gs.Node]
    work: int = 0
    #: float32 graph inputs only this group's nodes read
    inputs: list[str] = dataclasses.field(default_factory=list)

    def outputs(self) -> list[str]:
        """The float32 tensors the group's nodes compute."""
        return [t.name for n in self.nodes for t in n.outputs
                if t.name and ir.tensor_dtype(t) == np.float32]

    def activations(self) -> list[str]:
        """What changes precision with the group: the graph inputs only it reads, and its
        outputs."""
        return self.inputs + self.outputs()


def weighted_layer(node: gs.Node) -> bool:
    """A Conv/ConvTranspose/Gemm/MatMul whose second input is a float32 constant (its weight)."""
    return (node.op in WEIGHTED and len(node.inputs) > 1
            and isinstance(node.inputs[1], gs.Constant)
            and np.asarray(node.inputs[1].values).dtype == np.float32)


def _computing(node: gs.Node, shapes: set[str]) -> bool:
    if node.op == "Constant":
        return False
    return any(t.name and t.name not in shapes and ir.tensor_dtype(t) == np.float32
               for t in node.outputs)


def _elements(t: gs.Tensor) -> int:
    shape = t.shape or []
    return int(np.prod([d if isinstance(d, int) and d > 0 else 1 for d in shape]))


def node_work(node: gs.Node) -> int:
    """Multiply-accumulates of a Conv/Gemm/MatMul; output elements of any other node."""
    y = node.outputs[0] if node.outputs else None
    if y is None:
        return 0
    out = _elements(y)
    if node.op in ("Conv", "ConvTranspose") and len(node.inputs) > 1:
        w = node.inputs[1]
        dims = [d if isinstance(d, int) and d > 0 else 1 for d in (w.shape or [1, 1])]
        # output channels: dim 0 of a Conv's weight, dim 1 x group of a ConvTranspose's
        channels = dims[0] if node.op == "Conv" else dims[1] * int(node.attrs.get("group", 1))
        return out * max(1, int(np.prod(dims)) // max(1, channels))
    if node.op in ("MatMul", "Gemm") and node.inputs and node.inputs[0].shape:
        k = node.inputs[0].shape[-1]
        if node.op == "Gemm" and node.attrs.get("transA", 0) and len(node.inputs[0].shape) == 2:
            k = node.inputs[0].shape[0]
        return out * (k if isinstance(k, int) and k > 0 else 1)
    return out


def amp_groups(graph: gs.Graph) -> list[AmpGroup]:
    """The groups of ``graph`` (see the module docstring), in the order they start."""
    shapes = shape_computations(graph)
    order = {id(n): i for i, n in enumerate(graph.nodes)}
    group_of: dict[int, AmpGroup] = {}        # id(node) -> its group
    groups: list[AmpGroup] = []
    names: set[str] = set()

    def start(node: gs.Node, layer: gs.Node | None) -> AmpGroup:
        name = base = node.name or node.outputs[0].name
        count = 1
        while name in names:                    # unnamed or repeated node names
            count += 1
            name = f"{base}#{count}"
        names.add(name)
        groups.append(AmpGroup(name, layer, []))
        return groups[-1]
    for node in graph.nodes:
        if not _computing(node, shapes):
            continue
        if weighted_layer(node):
            group = start(node, node)
        else:
            producers = [t.inputs[0] for t in node.inputs
                         if t.name and not isinstance(t, gs.Constant) and t.name not in shapes
                         and t.inputs and id(t.inputs[0]) in group_of]
            if producers:
                latest = max(producers, key=lambda p: order[id(p)])
                group = group_of[id(latest)]
            else:
                group = start(node, None)
        group.nodes.append(node)
        group.work += node_work(node)
        group_of[id(node)] = group
    _claim_inputs(graph, group_of)
    return groups


def _claim_inputs(graph: gs.Graph, group_of: dict[int, AmpGroup]) -> None:
    """A float32 graph input read by one group's nodes alone goes with that group."""
    for t in graph.inputs:
        if ir.tensor_dtype(t) != np.float32:
            continue
        owners = {id(group_of.get(id(n))) for n in t.outputs}
        if len(owners) == 1 and t.outputs and id(t.outputs[0]) in group_of:
            group_of[id(t.outputs[0])].inputs.append(t.name)
