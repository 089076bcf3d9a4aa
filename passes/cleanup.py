"""``cleanup``: remove dead nodes and tensors, then sort the graph topologically.

Graph inputs are kept even when unused: they are the model's interface, and removing one would
change what callers must feed. Outputs are never removed.
"""

from __future__ import annotations

import dataclasses

import onnx_graphsurgeon as gs

from aicc.hookspecs import hookimpl
from aicc.options import option
from aicc.pass_base import Pass, PassContext
from aicc.program import Program

__all__ = ["Cleanup"]


class Cleanup(Pass):
    name = "cleanup"
    description = "remove dead nodes and unused tensors, then sort topologically"
    scope = "graph"
    semantics = "preserving"

    @dataclasses.dataclass(frozen=True)
    class Options:
        remove_unused_inputs: bool = option(False, "also drop graph inputs nothing reads "
                                                   "(changes the program's interface)")

    def run_graph(self, graph: gs.Graph, program: Program, ctx: PassContext) -> None:
        before = len(graph.nodes)
        graph.cleanup(remove_unused_graph_inputs=ctx.options.remove_unused_inputs)
        graph.toposort()
        ctx.count("nodes removed", before - len(graph.nodes))


@hookimpl
def aicc_register_passes(registry):
    registry.add(Cleanup)
