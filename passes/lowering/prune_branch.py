"""For ``predicate-if``: find a branch of a data-dependent If that cannot run with the bound shapes,
keep the other branch only, and guard that choice at run time (``aicc.guards``).

Computing both branches side by side needs both to run with the bound shapes. When strict shape
inference finds a node of one branch that cannot (silero-vad given 512-sample frames: its 8 kHz
network feeds its LSTM a rank-5 tensor), onnxruntime fails on every input that takes that branch:
no input the model answers takes it. The If is then replaced by the other branch, and a boolean
graph output, true exactly when the inputs take the kept branch, lets the session refuse the
runs that would have taken the pruned one instead of answering them with the wrong network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from aicc import ir
from aicc.errors import ModelError
from aicc.guards import GUARD_PREFIX
from aicc.passes.cleanup import detach_nodes, remove_dead_nodes, sort_nodes
from aicc.passes.lowering.fold_if import inline_branch
from aicc.passes.lowering.inline import _fresh, all_names, body_nodes

__all__ = ["Unrunnable", "find_unrunnable", "prune"]

_BRANCHES = (("then", "then_branch"), ("else", "else_branch"))


@dataclass(frozen=True)
class Unrunnable:
    """Branch ``pruned`` of top-level If ``node`` of graph ``graph`` cannot run: ``reason``."""

    graph: str
    node: str
    pruned: str
    reason: str

    @property
    def kept(self) -> str:
        return "else_branch" if self.pruned == "then_branch" else "then_branch"


def _root_of(name: str, roots: list[str]) -> tuple[str, str, str] | None:
    """(root If, branch key, name inside that branch) for a node brought up from the branches
    of a root If (each inlining prefixes names with the If's name and the branch)."""
    for root in roots:
        for short, key in _BRANCHES:
            mark = f"{root}/{short}/"
            if name.startswith(mark):
                return root, key, name[name.rindex(mark) + len(mark):]
    return None


def find_unrunnable(graph: gs.Graph, graph_name: str, roots: list[str]) -> Unrunnable | None:
    """The branch of one of ``roots`` (the data-dependent Ifs predicated in ``graph``) holding a
    node that strict shape inference rejects for the bound shapes, if any."""
    try:
        ir.infer_shapes(graph, strict=True, fresh=True)
        return None
    except ModelError as e:
        found = re.search(r"\(op_type:(\w+), node name: ([^)]*)\): (.*)", e.message)
    origin = _root_of(found.group(2), roots) if found else None
    if origin is None:
        return None
    root, key, inner = origin
    why = found.group(3).split("[ShapeInferenceError]")[-1].strip()
    return Unrunnable(graph_name, root, key, f"node '{inner}' ({found.group(1)}): {why}")


def prune(graph: gs.Graph, u: Unrunnable) -> dict[str, str]:
    """Replace If ``u.node`` of ``graph`` by its kept branch and add its guard output (true when
    the inputs take the kept branch); return the guard's record for ``Program.guards``."""
    node = next(n for n in graph.nodes if n.op == "If" and n.name == u.node)
    cond = node.inputs[0]
    taken = all_names(graph)
    added = inline_branch(graph, node, node.attrs[u.kept], taken)
    if cond.shape is None or len(cond.shape) != 0:     # If takes any one-element tensor
        shape = gs.Constant(_fresh(f"{u.node}/guard_shape", taken), np.zeros(0, np.int64))
        scalar = gs.Variable(_fresh(f"{u.node}/guard_cond", taken), dtype=bool, shape=[])
        added.append(gs.Node("Reshape", name=_fresh(f"{u.node}/guard_reshape", taken),
                             inputs=[cond, shape], outputs=[scalar]))
        cond = scalar
    guard = gs.Variable(_fresh(f"{GUARD_PREFIX}{u.node}", taken), dtype=bool, shape=[])
    added.append(gs.Node("Identity" if u.kept == "then_branch" else "Not",
                         name=_fresh(f"{u.node}/guard", taken), inputs=[cond], outputs=[guard]))
    detach_nodes([node] + body_nodes(node))
    graph.nodes = [n for n in graph.nodes if n is not node] + added
    graph.outputs.append(guard)
    remove_dead_nodes(graph)
    sort_nodes(graph)
    return {"output": guard.name, "node": u.node, "kept": u.kept, "pruned": u.pruned,
            "reason": u.reason}
