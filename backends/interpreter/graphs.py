"""Reading a model before running it: the default opset, local functions inlined, the graphs
nested in If/Loop/Scan nodes and the outer names they read, and which nodes have a kernel.
"""

from __future__ import annotations

import onnx
import onnx.inliner

from .kernels import lookup

__all__ = ["node_label", "default_opset", "inline", "subgraphs", "outer_names", "resolve",
           "unsupported_nodes"]


def node_label(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"#{index}"


def default_opset(model: onnx.ModelProto) -> int:
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            return op.version
    return onnx.defs.onnx_opset_version()


def inline(model: onnx.ModelProto) -> onnx.ModelProto:
    return onnx.inliner.inline_local_functions(model) if len(model.functions) else model


def subgraphs(node: onnx.NodeProto) -> list[tuple[str, onnx.GraphProto]]:
    """The (attribute name, graph) pairs of a node's graph attributes (If, Loop, Scan)."""
    found = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            found.append((a.name, a.g))
        elif a.type == onnx.AttributeProto.GRAPHS:
            found.extend((a.name, g) for g in a.graphs)
    return found


def outer_names(graph: onnx.GraphProto) -> list[str]:
    """The names ``graph`` (with its nested subgraphs) reads from enclosing scopes, in first-use
    order: referenced by a node or listed as an output, defined neither as an input, an
    initializer nor a node output of the graph."""
    order, stack = [], [graph]  # every nested graph, parents before their bodies (iterative:
    while stack:                 # deep nesting must not exhaust Python's stack)
        g = stack.pop()
        order.append(g)
        for node in g.node:
            stack.extend(body for _, body in subgraphs(node))
    free: dict[int, list[str]] = {}
    for g in reversed(order):  # bodies before the graphs that hold them
        defined = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
        for node in g.node:
            defined.update(node.output)
        found: dict[str, None] = {}
        for node in g.node:
            refs = list(node.input)
            for _, body in subgraphs(node):
                refs += free[id(body)]
            found.update((n, None) for n in refs if n not in defined)
        found.update((o.name, None) for o in g.output if o.name not in defined)
        free[id(g)] = list(found)
    return free[id(graph)]


def resolve(node: onnx.NodeProto, index: int, opset: int):
    """(registry entry, op version, problem text or None) for one node."""
    label = f"node '{node_label(node, index)}' ({node.op_type})"
    if node.domain not in ("", "ai.onnx"):
        return None, 0, f"node '{node_label(node, index)}' ({node.domain}.{node.op_type})"
    entry = lookup(node.op_type)
    if entry is None:
        return None, 0, label
    try:
        version = onnx.defs.get_schema(node.op_type, opset, "").since_version
    except onnx.defs.SchemaError:
        return None, 0, f"{label}: not an operator of opset {opset}"
    if version < entry.min_version:
        return None, 0, (f"{label}: opset {opset} selects version {version}; the interpreter "
                         f"implements {node.op_type} from version {entry.min_version}")
    return entry, version, None


def unsupported_nodes(model: onnx.ModelProto) -> list[str]:
    """Every node the interpreter cannot run, as ``"node 'NAME' (OpType)"``.

    A node whose opset selects an op version older than the kernel's gets the reason appended.
    """
    model = inline(model)
    opset = default_opset(model)
    problems = []
    stack = [("", model.graph)]  # (prefix of qualified names, graph), nested If/Loop/Scan
    while stack:
        prefix, graph = stack.pop()
        for i, node in enumerate(graph.node):
            _, _, problem = resolve(node, i, opset)
            if problem:
                problems.append(problem.replace("node '", f"node '{prefix}", 1))
            label = prefix + node_label(node, i)
            stack.extend((f"{label}/", g) for _, g in reversed(subgraphs(node)))
    return problems
