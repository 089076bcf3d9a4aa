"""``fold-if``: an If whose condition is a constant replaced by the nodes of the branch it takes.

Run after ``fold-constants`` (and ``bind-symbols``), conditions computed from shapes or
constants are constants, and a backend without If runs the model. The taken branch is copied into
the graph (its reads of outer values stay as they are; its tensors and nodes are renamed under the
If's name), and an Identity per output gives the If's output tensors their producer, so names
the rest of the graph (and the graph outputs) use do not change. The other branch is dropped.

With ``strict`` (what the compile driver sets for a backend that lacks If), an If whose
condition is not a constant is refused, naming it and what computes the condition.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx_graphsurgeon as gs

from aicc import ir
from aicc.errors import ModelError, PassError, option_ref
from aicc.hookspecs import hookimpl
from aicc.options import option
from aicc.pass_base import Pass, PassContext
from aicc.passes.lowering.inline import _fresh, all_names, body_nodes, inline_body
from aicc.passes.cleanup import detach_nodes, remove_dead_nodes, sort_nodes
from aicc.program import Program

__all__ = ["FoldIf", "fold_ifs_to_fixed_point", "if_count", "inline_branch"]

logger = logging.getLogger(__name__)


class FoldIf(Pass):
    name = "fold-if"
    description = "replace an If with a constant condition by the branch it takes"
    scope = "graph"
    semantics = "preserving"
    lowers = ("If",)

    @classmethod
    def lowering_options(cls, missing: frozenset[str]) -> dict:
        return {"strict": True}

    @dataclasses.dataclass(frozen=True)
    class Options:
        strict: bool = option(False, "refuse an If whose condition is not a constant "
                                     "(instead of leaving it)")

    def run_graph(self, graph: gs.Graph, program: Program, ctx: PassContext) -> None:
        ifs = [n for n in graph.nodes if n.op == "If" and (n.domain or "") in ("", "ai.onnx")]
        if not ifs:
            return
        taken = all_names(graph)
        folded = []
        for node in ifs:
            cond = _constant_node_value(node.inputs[0])
            if not isinstance(cond, gs.Constant):
                why, data = _why_dynamic(cond)
                if ctx.options.strict:
                    raise PassError(f"fold-if: node '{node.name}' (If): {why}",
                                    hint="a branch chosen by the data needs a backend that runs "
                                         "If (interpreter, cpu)" if data else
                                         f"bind the symbols it depends on "
                                         f"({option_ref('symbols')}), or use a backend that "
                                         "runs If (interpreter, cpu)")
                logger.debug("fold-if: skip '%s': %s", node.name, why)
                ctx.count("skipped")
                continue
            values = np.asarray(cond.values)
            if values.size != 1:
                raise PassError(f"fold-if: node '{node.name}' (If): the condition "
                                f"'{cond.name}' has {values.size} values, not one")
            branch = node.attrs["then_branch" if bool(values.reshape(-1)[0]) else "else_branch"]
            # in the graph at once: a later If's body may read this If's outputs (inline_body
            # must see them as outer tensors, now produced by the branch's Identities)
            graph.nodes.extend(inline_branch(graph, node, branch, taken))
            folded.append(node)
            ctx.count("If nodes folded")
        if folded:
            detach_nodes(folded + [n for node in folded for n in body_nodes(node)])
            gone = {id(n) for n in folded}
            graph.nodes = [n for n in graph.nodes if id(n) not in gone]
            remove_dead_nodes(graph)
            sort_nodes(graph)
            ir.infer_shapes(graph, where=f"graph '{ctx.graph_name}' after fold-if")


def _constant_node_value(cond: gs.Tensor) -> gs.Tensor:
    """The condition, or the value of the ``Constant`` node producing it."""
    if isinstance(cond, gs.Variable) and len(cond.inputs) == 1 and \
            cond.inputs[0].op == "Constant":
        value = cond.inputs[0].attrs.get("value")
        if isinstance(value, gs.Constant):
            return value
    return cond


def _why_dynamic(cond: gs.Tensor) -> tuple[str, bool]:
    """Why the condition is not a constant, and whether it depends on the values (not only the
    shapes) of graph inputs: then no binding of symbols makes it one."""
    data = _value_sources(cond)
    tail = (f"; it depends on the values of input(s) {', '.join(repr(n) for n in data[:3])}"
            if data else "")
    if cond.inputs:
        p = cond.inputs[0]
        return (f"the condition '{cond.name}' is not a constant (computed by node '{p.name}' "
                f"({p.op})){tail}", bool(data))
    return f"the condition '{cond.name}' is not a constant (a graph input)", True


def _value_sources(tensor: gs.Tensor) -> list[str]:
    """The graph inputs whose values (not only shapes: Shape and Size read none) reach
    ``tensor``, by name."""
    found: dict[str, None] = {}
    seen: set[int] = set()
    stack = [tensor]
    while stack:
        t = stack.pop()
        if id(t) in seen or isinstance(t, gs.Constant):
            continue
        seen.add(id(t))
        if not t.inputs:
            found[t.name] = None
            continue
        producer = t.inputs[0]
        if producer.op not in ("Shape", "Size"):
            stack.extend(producer.inputs)
    return sorted(found)


def inline_branch(graph: gs.Graph, node: gs.Node, branch: gs.Graph, taken: set[str]
                  ) -> list[gs.Node]:
    """The nodes that replace If ``node`` by ``branch``: its copy and an Identity per output
    (the If's output tensors keep their names); ``node`` loses its outputs."""
    if len(branch.outputs) != len(node.outputs):
        raise PassError(f"fold-if: node '{node.name}' (If): the branch has "
                        f"{len(branch.outputs)} outputs, the node {len(node.outputs)}")
    nodes, results = inline_body(graph, branch, node.name, {}, taken)
    targets = list(node.outputs)
    node.outputs.clear()
    for i, (target, result) in enumerate(zip(targets, results)):
        if target.is_empty():
            continue
        nodes.append(gs.Node("Identity", name=_fresh(f"{node.name}/out{i}", taken),
                             inputs=[result], outputs=[target]))
    return nodes


#: most rounds of folding an If that makes another's condition constant
MAX_IF_ROUNDS = 16


def if_count(program: Program) -> int:
    """How many Ifs (default domain) the program's graphs hold at their top level."""
    return sum(1 for g in program.graphs.values() for n in g.nodes
               if n.op == "If" and (n.domain or "") in ("", "ai.onnx"))


def fold_ifs_to_fixed_point(program: Program, ctx: PassContext) -> Program:
    """Fold the Ifs whose conditions shapes decide, to a fixed point: an If's taken branch can
    fix the shape another If's condition reads (silero-vad's decoder), and a Pad's pads that
    folding made constant fix the shapes after it. Each round infers shapes afresh from the
    bound inputs, folds constants and folds the Ifs that became constant (as nested passes of
    the running pipeline), until a round changes nothing; the Ifs left have conditions the
    data decides (or need more than ``MAX_IF_ROUNDS`` rounds)."""
    before = None
    for _ in range(MAX_IF_ROUNDS):
        _infer_fresh(program)
        program = ctx.run_pipeline([("fold-constants", {}), ("fold-if", {"strict": False})],
                                   program)
        after = (if_count(program), sum(len(g.nodes) for g in program.graphs.values()))
        if after[0] == 0 or after == before:
            break
        before = after
    return program


def _infer_fresh(program: Program) -> None:
    for name, graph in program.graphs.items():
        try:
            ir.infer_shapes(graph, where=f"graph '{name}'", fresh=True)
        except ModelError as e:       # keep the declared shapes; fold-if says what is left
            logger.debug("fold-if: fresh shape inference failed: %s", e)


@hookimpl
def aicc_register_passes(registry):
    registry.add(FoldIf)
