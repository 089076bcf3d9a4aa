"""The graph the cpu backend hands onnxruntime when onnxruntime refuses a graph with control flow
for its bound shapes: the same graph with free dims on its inputs and outputs and no value_info.

onnxruntime infers types through *every* branch of an If (and every Loop/Scan body) when it
loads a graph, including branches the bound shapes make dead. Exporters guard shape-specific
code with If on a shape (Silero VAD: ``if x.dim() == 2``, ``if state.size(1) == 1``): with the
input dims left free, both branches type-check; once ``--input-shape`` binds them, a dead branch
(a Squeeze of a dim that is now 512, an Unsqueeze to rank 4) no longer does, and onnxruntime
refuses a graph it runs fine. What the graph computes does not depend on the declared shapes,
and aicc's session only ever feeds the bound ones (it matches feeds against the container's
shapes), so onnxruntime may type-check the graph as if the shapes were not bound.
"""

from __future__ import annotations

import onnx

__all__ = ["has_subgraphs", "with_free_shapes"]


def _subgraphs(graph: onnx.GraphProto):
    """Every graph nested in ``graph``'s nodes' attributes, at any depth."""
    stack = [graph]
    while stack:
        g = stack.pop()
        for node in g.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    stack.append(attr.g)
                    yield attr.g
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    stack.extend(attr.graphs)
                    yield from attr.graphs


def has_subgraphs(model: onnx.ModelProto) -> bool:
    """Whether the model holds control flow (a node with a graph attribute)."""
    return next(_subgraphs(model.graph), None) is not None


def with_free_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose graph inputs and outputs have a free dim (its own symbol) where
    they had a fixed one, and whose graphs (main and nested) carry no value_info, so that
    onnxruntime infers every shape from the free inputs again."""
    free = onnx.ModelProto()
    free.CopyFrom(model)
    count = 0
    for vi in list(free.graph.input) + list(free.graph.output):
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        for dim in vi.type.tensor_type.shape.dim:
            if dim.HasField("dim_value"):
                dim.dim_param = f"aicc_free_{count}"  # clears dim_value (a oneof)
                count += 1
    for g in [free.graph, *_subgraphs(free.graph)]:
        del g.value_info[:]
    return free
