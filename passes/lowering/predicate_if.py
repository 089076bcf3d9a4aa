"""``predicate-if``: an If whose condition is data (not a constant once shapes are bound) becomes
both branches computed side by side and a ``Where`` per output selecting the taken one.

This is if-conversion, as device compilers do for small branches: a device without control flow
runs the graph, at the cost of computing the branch not taken. It is exact when both branches
give each output the same static shape and type (ONNX ops have no side effects, and ``Where``
ignores the values it does not select, so a NaN or inf in the untaken branch cannot leak).
``lower`` runs it after ``fold-if``, for the Ifs that could not be folded (openWakeWord's
verifier heads: a score decides whether a second model runs; silero-vad: the sample rate input
picks one of two networks).

Branches may hold Ifs of their own (silero-vad's: conditions on shapes inside each network).
The pass works from the outside in, one nesting level per round: the data-dependent Ifs of the
top level are predicated, which brings their branches' Ifs to the top level; those whose
conditions the now-known shapes decide are folded (``fold-constants`` and ``fold-if`` as nested
passes, shapes inferred afresh), and the rest are predicated in the next round. Once no If is
left, each ``Where`` is checked: its two values must agree on one static shape and type (a
nested If can decide a shape, so the check waits for all of them). An If whose branches hold a
Loop or Scan (at any depth) is refused naming both nodes, as is one whose branches disagree.

A branch that cannot run at all with the bound shapes (a node strict shape inference rejects:
silero-vad's 8 kHz network given 16 kHz frames) is what onnxruntime fails on for every input
taking it: that If keeps its other branch only, guarded at run time (``prune_branch``,
``aicc.guards``), with a warning, and the predication starts over.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs

from aicc import Pass, hookimpl, ir
from aicc.errors import ModelError, PassError
from aicc.pass_base import PassContext, PassResult
from aicc.passes.cleanup import detach_nodes, remove_dead_nodes, sort_nodes
from aicc.passes.lowering.fold_if import fold_ifs_to_fixed_point, if_count
from aicc.passes.lowering.inline import _fresh, all_names, body_nodes, inline_body
from aicc.passes.lowering.prune_branch import Unrunnable, find_unrunnable, prune
from aicc.program import Program

__all__ = ["PredicateIf"]

logger = logging.getLogger(__name__)

_LOOPS = frozenset({"Loop", "Scan"})
_HINT = "a branch chosen by the data needs a backend that runs If (interpreter, cpu)"


class PredicateIf(Pass):
    name = "predicate-if"
    description = "compute both branches of a data-dependent If and select them with Where"
    scope = "program"
    semantics = "preserving"
    lowers = ("If",)

    def run(self, program: Program, ctx: PassContext) -> PassResult:
        if not if_count(program):
            return PassResult(modified=False)
        pristine = program.copy()
        prunes: list[Unrunnable] = []
        while True:     # each round prunes another If: finitely many rounds
            work = pristine.copy() if prunes else program
            guards: dict[str, list[dict[str, str]]] = {}
            for u in prunes:
                guards.setdefault(u.graph, []).append(prune(work.graphs[u.graph], u))
            if prunes:      # the kept branches' Ifs that the shapes decide
                work = fold_ifs_to_fixed_point(work, ctx)
            try:
                work = _predicate_all(work, ctx)
                break
            except _BranchCannotRun as e:
                if e.found in prunes:       # its kept branch cannot run either
                    raise e.error from None
                logger.warning("predicate-if: node '%s' (If): its %s cannot run with the bound "
                               "shapes (%s); the program keeps the %s only and refuses at run "
                               "time the inputs that take the other (onnxruntime fails on "
                               "them)", e.found.node, e.found.pruned, e.found.reason,
                               e.found.kept)
                prunes.append(e.found)
        for name, records in guards.items():
            work.guards.setdefault(name, []).extend(records)
        ctx.count("If branches pruned (guarded at run time)", len(prunes))
        return PassResult(program=work)


class _BranchCannotRun(Exception):
    """A check failed because a branch cannot run (``found``); ``error`` is the check's."""

    def __init__(self, found: Unrunnable, error: PassError):
        super().__init__(found.reason)
        self.found, self.error = found, error


def _predicate_all(program: Program, ctx: PassContext) -> Program:
    """Predicate every If of ``program``, level by level (see the module docstring)."""
    selects: dict[str, dict[str, str]] = {name: {} for name in program.graphs}
    roots = {name: [n.name for n in g.nodes if _is_if(n)]
             for name, g in program.graphs.items()}
    while if_count(program):    # one nesting level per round: finitely many rounds
        for name, graph in program.graphs.items():
            ctx.count("If nodes predicated", _predicate_level(graph, selects[name]))
        if if_count(program):       # Ifs brought up from the branches
            program = fold_ifs_to_fixed_point(program, ctx)
    for name, graph in program.graphs.items():
        _infer(graph, name, sorted(set(selects[name].values())))
        try:
            _check_selects(graph, selects[name])
        except PassError as e:
            found = find_unrunnable(graph, name, roots[name])
            if found is None:
                raise
            raise _BranchCannotRun(found, e) from None
    return program


def _is_if(node: gs.Node) -> bool:
    return node.op == "If" and (node.domain or "") in ("", "ai.onnx")


def _predicate_level(graph: gs.Graph, selects: dict[str, str]) -> int:
    """Predicate the Ifs of ``graph``'s top level, in place; record each Where's name -> the
    If it replaces in ``selects``; return how many Ifs."""
    ifs = [n for n in graph.nodes if _is_if(n)]
    if not ifs:
        return 0
    taken = all_names(graph)
    for node in ifs:
        _refuse_loops(node)
        nodes = _predicate(graph, node, taken)
        selects.update((n.name, node.name) for n in nodes if n.op == "Where")
        # in the graph at once: a later If's body may read this If's outputs, which the copy
        # of that body must see as outer tensors (inline_body), now produced by the Wheres
        graph.nodes.extend(nodes)
    detach_nodes(ifs + [n for node in ifs for n in body_nodes(node)])
    gone = {id(n) for n in ifs}
    graph.nodes = [n for n in graph.nodes if id(n) not in gone]
    remove_dead_nodes(graph)
    sort_nodes(graph)
    return len(ifs)


def _refuse_loops(node: gs.Node) -> None:
    """A Loop or Scan anywhere in the branches: unrolling runs before predication, so one
    brought up by it would reach a backend that lacks it."""
    for key in ("then_branch", "else_branch"):
        stack = [node.attrs[key]]
        while stack:
            g = stack.pop()
            for inner in g.nodes:
                if inner.op in _LOOPS:
                    raise PassError(f"predicate-if: node '{node.name}' (If): its {key} holds "
                                    f"node '{inner.name}' ({inner.op}); a loop inside a branch "
                                    "chosen by the data is not computed side by side",
                                    hint=_HINT)
                stack.extend(v for v in inner.attrs.values() if isinstance(v, gs.Graph))


def _predicate(graph: gs.Graph, node: gs.Node, taken: set[str]) -> list[gs.Node]:
    """Both branches inlined and a Where per used output: the nodes to add."""
    then_branch, else_branch = node.attrs["then_branch"], node.attrs["else_branch"]
    if not len(then_branch.outputs) == len(else_branch.outputs) == len(node.outputs):
        raise PassError(f"predicate-if: node '{node.name}' (If): its branches have "
                        f"{len(then_branch.outputs)} and {len(else_branch.outputs)} outputs, "
                        f"the node {len(node.outputs)}")
    nodes_t, results_t = inline_body(graph, then_branch, f"{node.name}/then", {}, taken)
    nodes_e, results_e = inline_body(graph, else_branch, f"{node.name}/else", {}, taken)
    nodes = nodes_t + nodes_e
    cond = _scalar_condition(graph, node, nodes, taken)
    targets = list(node.outputs)
    node.outputs.clear()
    for i, (target, a, b) in enumerate(zip(targets, results_t, results_e)):
        if not target.is_empty():
            nodes.append(gs.Node("Where", name=_fresh(f"{node.name}/select{i}", taken),
                                 inputs=[cond, a, b], outputs=[target]))
    return nodes


def _scalar_condition(graph: gs.Graph, node: gs.Node, nodes: list[gs.Node],
                      taken: set[str]) -> gs.Tensor:
    """The If's condition as a rank-0 tensor: If accepts a one-element tensor of any rank, and
    a condition of shape [1] would broadcast a scalar output of Where to [1]."""
    cond = node.inputs[0]
    if cond.shape is not None and len(cond.shape) == 0:
        return cond
    shape = gs.Constant(_fresh(f"{node.name}/scalar_shape", taken), np.zeros(0, np.int64))
    scalar = gs.Variable(_fresh(f"{node.name}/cond_scalar", taken), dtype=np.bool_, shape=[])
    nodes.append(gs.Node("Reshape", name=_fresh(f"{node.name}/cond_reshape", taken),
                         inputs=[cond, shape], outputs=[scalar]))
    return scalar


def _infer(graph: gs.Graph, name: str, ifs: list[str]) -> None:
    try:
        ir.infer_shapes(graph, where=f"graph '{name}' after predicate-if", fresh=True)
    except ModelError as e:
        raise PassError(f"predicate-if: the branches of {', '.join(repr(n) for n in ifs)} do "
                        f"not both type-check for the bound shapes: {e.message}",
                        hint=_HINT) from None


def _check_selects(graph: gs.Graph, selects: dict[str, str]) -> None:
    """Each Where's two values must have one static shape and type: Where would otherwise
    broadcast them into a shape neither branch gives. (A Where whose output nothing reads was
    removed, and needs no check.)"""
    for where in graph.nodes:
        if where.op != "Where" or where.name not in selects:
            continue
        target, (_, a, b) = where.outputs[0], where.inputs
        shapes, types = (a.shape, b.shape), (a.dtype, b.dtype)
        static = all(s is not None and all(isinstance(d, int) and d >= 0 for d in s)
                     for s in shapes)
        if not static or list(shapes[0]) != list(shapes[1]) or types[0] != types[1]:
            raise PassError(f"predicate-if: node '{selects[where.name]}' (If): output "
                            f"'{target.name}' is {types[0]} {shapes[0]} from the then branch "
                            f"and {types[1]} {shapes[1]} from the else branch; both branches "
                            "can only be computed side by side when they agree and are static",
                            hint=_HINT)


@hookimpl
def aicc_register_passes(registry):
    registry.add(PredicateIf)
