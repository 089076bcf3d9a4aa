"""``predicate-if``: an If whose condition is data (not a constant once shapes are bound) becomes
both branches computed side by side and a ``Where`` per output selecting the taken one.

This is if-conversion, as device compilers do for small branches: a device without control flow
runs the graph, at the cost of computing the branch not taken. It is exact when both branches
give each output the same static shape and type (ONNX ops have no side effects, and ``Where``
ignores the values it does not select, so a NaN or inf in the untaken branch cannot leak); an If
whose branches disagree on a shape, or hold control flow themselves, is refused naming the node
and the reason. ``lower`` runs it after ``fold-if``, for the Ifs that could not be folded
(openWakeWord's verifier heads: a score decides whether a second model runs).
"""

from __future__ import annotations

import onnx_graphsurgeon as gs

from aicc import Pass, hookimpl, ir
from aicc.errors import ModelError, PassError
from aicc.pass_base import PassContext
from aicc.passes.cleanup import detach_nodes, remove_dead_nodes, sort_nodes
from aicc.passes.lowering.inline import _fresh, all_names, body_nodes, inline_body
from aicc.program import Program

__all__ = ["PredicateIf"]

_CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})


class PredicateIf(Pass):
    name = "predicate-if"
    description = "compute both branches of a data-dependent If and select them with Where"
    scope = "graph"
    semantics = "preserving"
    lowers = ("If",)

    def run_graph(self, graph: gs.Graph, program: Program, ctx: PassContext) -> bool:
        ifs = [n for n in graph.nodes if n.op == "If" and (n.domain or "") in ("", "ai.onnx")]
        if not ifs:
            return False
        taken = all_names(graph)
        added: list[gs.Node] = []
        pairs: list[tuple[gs.Node, list[tuple[gs.Tensor, gs.Tensor, gs.Tensor]]]] = []
        for node in ifs:
            _refuse_nested(node)
            nodes, selected = _predicate(graph, node, taken)
            added += nodes
            pairs.append((node, selected))
        detach_nodes(ifs + [n for node in ifs for n in body_nodes(node)])
        gone = {id(n) for n in ifs}
        graph.nodes = [n for n in graph.nodes if id(n) not in gone] + added
        remove_dead_nodes(graph)
        sort_nodes(graph)
        where = f"graph '{ctx.graph_name}' after predicate-if"
        try:
            ir.infer_shapes(graph, where=where, fresh=True)
        except ModelError as e:
            raise PassError(f"predicate-if: the branches of {', '.join(repr(n.name) for n in ifs)}"
                            f" do not both type-check for the bound shapes: {e.message}",
                            hint="a branch chosen by the data needs a backend that runs If "
                                 "(interpreter, cpu)") from None
        for node, selected in pairs:
            _check_same(node, selected)
        ctx.count("If nodes predicated", len(ifs))
        return True


def _refuse_nested(node: gs.Node) -> None:
    for key in ("then_branch", "else_branch"):
        inner = sorted({n.op for n in node.attrs[key].nodes if n.op in _CONTROL_FLOW})
        if inner:
            raise PassError(f"predicate-if: node '{node.name}' (If): its {key} holds "
                            f"{', '.join(inner)}; only branches without control flow are "
                            "computed side by side",
                            hint="a branch chosen by the data needs a backend that runs If "
                                 "(interpreter, cpu)")


def _predicate(graph: gs.Graph, node: gs.Node, taken: set[str]
               ) -> tuple[list[gs.Node], list[tuple[gs.Tensor, gs.Tensor, gs.Tensor]]]:
    """Both branches inlined and a Where per output: (nodes, (target, then, else) per output)."""
    then_branch, else_branch = node.attrs["then_branch"], node.attrs["else_branch"]
    if not len(then_branch.outputs) == len(else_branch.outputs) == len(node.outputs):
        raise PassError(f"predicate-if: node '{node.name}' (If): its branches have "
                        f"{len(then_branch.outputs)} and {len(else_branch.outputs)} outputs, "
                        f"the node {len(node.outputs)}")
    nodes_t, results_t = inline_body(graph, then_branch, f"{node.name}/then", {}, taken)
    nodes_e, results_e = inline_body(graph, else_branch, f"{node.name}/else", {}, taken)
    nodes, selected = nodes_t + nodes_e, []
    cond = node.inputs[0]
    targets = list(node.outputs)
    node.outputs.clear()
    for i, (target, a, b) in enumerate(zip(targets, results_t, results_e)):
        if target.is_empty():
            continue
        nodes.append(gs.Node("Where", name=_fresh(f"{node.name}/select{i}", taken),
                             inputs=[cond, a, b], outputs=[target]))
        selected.append((target, a, b))
    return nodes, selected


def _check_same(node: gs.Node, selected: list[tuple[gs.Tensor, gs.Tensor, gs.Tensor]]) -> None:
    """Each output's two branch values must have one static shape and type: Where would
    otherwise broadcast them into a shape neither branch gives."""
    for target, a, b in selected:
        shapes, types = (a.shape, b.shape), (a.dtype, b.dtype)
        static = all(s is not None and all(isinstance(d, int) and d >= 0 for d in s)
                     for s in shapes)
        if not static or list(shapes[0]) != list(shapes[1]) or types[0] != types[1]:
            raise PassError(f"predicate-if: node '{node.name}' (If): output '{target.name}' is "
                            f"{types[0]} {shapes[0]} from the then branch and {types[1]} "
                            f"{shapes[1]} from the else branch; both branches can only be "
                            "computed side by side when they agree and are static",
                            hint="a branch chosen by the data needs a backend that runs If "
                                 "(interpreter, cpu)")


@hookimpl
def aicc_register_passes(registry):
    registry.add(PredicateIf)
