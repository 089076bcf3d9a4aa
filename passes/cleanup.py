"""``cleanup``: remove dead nodes and tensors, then sort the graph topologically.

Graph inputs are kept even when unused: they are the model's interface, and removing one would
change what callers must feed. Outputs are never removed.

``remove_dead_nodes`` is the helper the other built-in passes use too: it gives the result of
onnx-graphsurgeon's ``Graph.cleanup()`` in time linear in the graph's edges. (graph-surgeon
detaches each dead node from a tensor's reader list with ``list.remove``, which compares nodes
with their costly ``__eq__`` against every reader before it: quadratic when a tensor such as a
shared constant has many readers and only some of them die.) ``sort_nodes`` gives the order of
``Graph.toposort()`` without its recursion, which fails once a chain of nodes listed after their
readers is a few hundred nodes long.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import onnx_graphsurgeon as gs
from onnx_graphsurgeon.util.exception import OnnxGraphSurgeonException

from aicc.hookspecs import hookimpl
from aicc.options import option
from aicc.pass_base import Pass, PassContext
from aicc.program import Program

__all__ = ["Cleanup", "remove_dead_nodes", "detach_nodes", "sort_nodes"]


class Cleanup(Pass):
    name = "cleanup"
    description = "remove dead nodes and unused tensors, then sort topologically"
    scope = "graph"
    after = ("*",)      # tidies what every other pass left
    semantics = "preserving"

    @dataclasses.dataclass(frozen=True)
    class Options:
        remove_unused_inputs: bool = option(False, "also drop graph inputs nothing reads "
                                                   "(changes the program's interface)")

    def run_graph(self, graph: gs.Graph, program: Program, ctx: PassContext) -> None:
        removed = remove_dead_nodes(graph, remove_unused_inputs=ctx.options.remove_unused_inputs)
        sort_nodes(graph)
        ctx.count("nodes removed", removed)


def remove_dead_nodes(graph: gs.Graph, *, remove_unused_inputs: bool = False) -> int:
    """Remove the nodes no graph output depends on (and, with ``remove_unused_inputs``, the graph
    inputs nothing reads); return how many nodes were removed.

    The result is that of ``graph.cleanup(remove_unused_graph_inputs=...)``; graphs with
    control-flow subgraphs or local functions are handed to that method itself.
    """
    if graph.functions or any(True for _ in graph.subgraphs()):
        before = len(graph.nodes)
        graph.cleanup(remove_unused_graph_inputs=remove_unused_inputs)
        return before - len(graph.nodes)
    for inp in graph.inputs:  # a graph input has no producer
        if inp.inputs:
            inp.inputs.clear()
    local = {t.name for node in graph.nodes for t in node.outputs if not t.is_empty()}
    local.update(t.name for t in graph.inputs)
    # Walk back from the outputs; like graph-surgeon, follow only tensors of this graph.
    seen: set[str] = set()
    used: set[int] = set()
    stack: list[gs.Tensor] = []

    def visit(tensors: Iterable[gs.Tensor]) -> None:
        for t in tensors:
            if t.is_empty():
                stack.append(t)
            elif (t.name in local or isinstance(t, gs.Constant)) and t.name not in seen:
                seen.add(t.name)
                stack.append(t)

    visit(graph.outputs)
    while stack:
        for node in stack.pop().inputs:
            if id(node) not in used:
                used.add(id(node))
                visit(node.inputs)
    if remove_unused_inputs:
        graph.inputs = [t for t in graph.inputs if t.name in seen]
    dead = [n for n in graph.nodes if id(n) not in used]
    if dead:
        detach_nodes(dead)
        graph.nodes = [n for n in graph.nodes if id(n) in used]
    return len(dead)


def detach_nodes(nodes: Iterable[gs.Node]) -> None:
    """Disconnect ``nodes`` from every tensor they read or write, in one linear sweep.

    Equivalent to ``node.inputs.clear(); node.outputs.clear()`` for each node, without
    graph-surgeon's per-edge ``list.remove``. The nodes stay in ``graph.nodes``; drop them there.
    """
    nodes = list(nodes)
    gone = {id(n) for n in nodes}
    touched: dict[int, gs.Tensor] = {}
    for node in nodes:
        for t in node.inputs:
            touched[id(t)] = t
        for t in node.outputs:
            touched[id(t)] = t
    # graph-surgeon keeps both sides of an edge in SynchronizedLists; the plain ``list`` methods
    # below change one side without touching the other (as graph-surgeon's own code does).
    for t in touched.values():
        for side in (t.inputs, t.outputs):
            if any(id(n) in gone for n in side):
                kept = [n for n in side if id(n) not in gone]
                list.clear(side)
                list.extend(side, kept)
    for node in nodes:
        list.clear(node.inputs)
        list.clear(node.outputs)


def sort_nodes(graph: gs.Graph) -> None:
    """Sort ``graph.nodes`` topologically, in place, as ``graph.toposort()`` does: by depth (a
    node's depth is one more than its deepest producer's), ties in the order the depths were
    found. Graphs with control-flow subgraphs or local functions are handed to that method."""
    if graph.functions or any(True for _ in graph.subgraphs()):
        graph.toposort()
        return
    local = {t.name for node in graph.nodes for t in node.outputs if not t.is_empty()}
    local.update(t.name for t in graph.inputs)
    in_graph = {id(node) for node in graph.nodes}

    def producers(node: gs.Node) -> list[gs.Node]:
        found: dict[int, gs.Node] = {}
        for t in node.inputs:
            if t.name in local or isinstance(t, gs.Constant):
                for p in t.inputs:
                    if id(p) not in in_graph:
                        raise OnnxGraphSurgeonException(
                            f"node '{p.name}' produces '{t.name}' but is not in the graph")
                    found.setdefault(id(p), p)
        return list(found.values())

    depth: dict[int, int] = {}
    found_order: list[gs.Node] = []
    for root in graph.nodes:
        if id(root) in depth:
            continue
        # Depth-first, producers before readers, as graph-surgeon's recursion visits them.
        path = {id(root)}
        stack = [[root, iter(producers(root)), -1]]
        while stack:
            frame = stack[-1]
            for p in frame[1]:
                if id(p) in depth:
                    frame[2] = max(frame[2], depth[id(p)])
                    continue
                if id(p) in path:
                    raise OnnxGraphSurgeonException(
                        f"cycle detected in the graph at node '{p.name}'; are there tensors "
                        "with duplicate names?")
                path.add(id(p))
                stack.append([p, iter(producers(p)), -1])
                break
            else:
                node, _, deepest = stack.pop()
                path.discard(id(node))
                depth[id(node)] = deepest + 1
                found_order.append(node)
                if stack:
                    stack[-1][2] = max(stack[-1][2], deepest + 1)
    graph.nodes = sorted(found_order, key=lambda n: depth[id(n)])


@hookimpl
def aicc_register_passes(registry):
    registry.add(Cleanup)
