"""Copy a control-flow body into its enclosing graph (for ``fold-if`` and ``unroll-loops``).

``inline_body`` copies a graph-surgeon subgraph so that its outer-scope references stay the
enclosing graph's tensors, gives every tensor and node it created a name under a prefix (each
unrolled iteration gets its own), and binds the body's inputs: to constants (a Loop's iteration
number and condition) or, through an Identity, to tensors of the enclosing graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

__all__ = ["inline_body", "unsqueeze", "all_names", "body_nodes"]


def _outer_tensors(graph: gs.Graph) -> dict[str, gs.Tensor]:
    return graph.tensors()


def inline_body(graph: gs.Graph, body: gs.Graph, prefix: str,
                bind: Mapping[int, Any], taken: set[str]) -> tuple[list[gs.Node], list[gs.Tensor]]:
    """(nodes to add to ``graph``, the body's outputs) for one copy of ``body``.

    ``bind`` maps a body input index to a numpy value (the input becomes that constant) or to a
    tensor of ``graph`` (an Identity feeds the input from it). ``taken`` holds the names in use
    and receives the new ones.
    """
    outer = _outer_tensors(graph)
    copy = body.copy(tensor_map=outer)
    outer_ids = {id(t) for t in outer.values()}
    local = [t for t in copy.tensors().values() if id(t) not in outer_ids]
    done: set[int] = set()
    for t in local:
        _rename(t, prefix, taken, done)
    nodes = list(copy.nodes)
    for node in nodes:
        node.name = _fresh(f"{prefix}/{node.name or node.op}", taken)
    _rename_nested(nodes, prefix, taken, done, outer_ids)
    for index, value in bind.items():
        inp = copy.inputs[index]
        if isinstance(value, gs.Tensor):
            nodes.insert(0, gs.Node("Identity", name=_fresh(f"{prefix}/bind{index}", taken),
                                    inputs=[value], outputs=[inp]))
        else:
            inp.to_constant(np.asarray(value))
    return nodes, list(copy.outputs)


def _rename(t: gs.Tensor, prefix: str, taken: set[str], done: set[int]) -> None:
    done.add(id(t))
    t.name = _fresh(f"{prefix}/{t.name}", taken)
    if isinstance(t, gs.Constant):  # copies share a lazily loaded TensorProto, whose name
        t.values = np.array(t.values)  # the exporter would write for all of them


def _rename_nested(nodes: list[gs.Node], prefix: str, taken: set[str], done: set[int],
                   outer_ids: set[int]) -> None:
    """Copies of nested bodies (an If inside a Loop body) get prefixed names too: each copy
    of the enclosing body has its own, so unrolled copies never share a name."""
    stack = [v for n in nodes for v in n.attrs.values() if isinstance(v, gs.Graph)]
    while stack:
        g = stack.pop()
        tensors = list(g.inputs) + list(g.outputs)
        for node in g.nodes:
            node.name = _fresh(f"{prefix}/{node.name or node.op}", taken)
            tensors += list(node.inputs) + list(node.outputs)
            stack.extend(v for v in node.attrs.values() if isinstance(v, gs.Graph))
        for t in tensors:
            if t.name and id(t) not in done and id(t) not in outer_ids:
                _rename(t, prefix, taken, done)


def _fresh(name: str, taken: set[str]) -> str:
    base, n = name, 0
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name


def unsqueeze(graph: gs.Graph, x: gs.Tensor, axis: int, name: str, taken: set[str]
              ) -> tuple[gs.Node, gs.Tensor]:
    """An Unsqueeze of ``x`` at ``axis`` written for the graph's opset (axes input from 13)."""
    out = gs.Variable(_fresh(name, taken))
    node_name = _fresh(f"{name}_Unsqueeze", taken)
    if (graph.opset or 13) >= 13:
        axes = gs.Constant(_fresh(f"{name}_axes", taken), np.array([axis], np.int64))
        return gs.Node("Unsqueeze", name=node_name, inputs=[x, axes], outputs=[out]), out
    return gs.Node("Unsqueeze", name=node_name, attrs={"axes": [axis]}, inputs=[x],
                   outputs=[out]), out


def all_names(graph: gs.Graph) -> set[str]:
    """Every tensor and node name of ``graph`` and its nested bodies."""
    names: set[str] = set()
    stack = [graph]
    while stack:
        g = stack.pop()
        names.update(g.tensors())
        for node in g.nodes:
            names.add(node.name)
            for value in node.attrs.values():
                if isinstance(value, gs.Graph):
                    stack.append(value)
                elif isinstance(value, list):
                    stack.extend(v for v in value if isinstance(v, gs.Graph))
    return names


def body_nodes(node: gs.Node) -> list[gs.Node]:
    """The nodes of ``node``'s bodies, nested ones included: once the node is replaced, they
    must leave the reader lists of the outer tensors they read (``detach_nodes``)."""
    found: list[gs.Node] = []
    stack = [v for v in node.attrs.values() if isinstance(v, gs.Graph)]
    while stack:
        g = stack.pop()
        for n in g.nodes:
            found.append(n)
            stack.extend(v for v in n.attrs.values() if isinstance(v, gs.Graph))
    return found
