"""``fold-constants``: evaluate subgraphs whose inputs are all constant and store the results.

Folding runs the constant subgraphs on onnxruntime (through onnx-graphsurgeon) and also folds
shape computations whose result is known from static shapes. Results larger than
``size_threshold`` bytes stay as computations, so folding never inflates the model.
"""

from __future__ import annotations

import dataclasses
import logging

import onnx_graphsurgeon as gs

from aicc.hookspecs import hookimpl
from aicc.options import option
from aicc.pass_base import Pass, PassContext
from aicc.program import Program

__all__ = ["FoldConstants"]

logger = logging.getLogger(__name__)


class FoldConstants(Pass):
    name = "fold-constants"
    description = "evaluate constant subgraphs (and known shapes) once, at compile time"
    scope = "graph"
    semantics = "preserving"

    @dataclasses.dataclass(frozen=True)
    class Options:
        size_threshold: int = option(16 * 1024 * 1024, "largest folded tensor in bytes",
                                     minimum=0)
        fold_shapes: bool = option(True, "fold Shape/Size of tensors whose shapes are static")

    def run_graph(self, graph: gs.Graph, program: Program, ctx: PassContext) -> None:
        before = len(graph.nodes)
        if not any(_foldable(node) for node in graph.nodes):
            logger.debug("fold-constants: graph '%s' has no node with only constant inputs",
                         ctx.graph_name)
            return
        graph.fold_constants(fold_shapes=ctx.options.fold_shapes,
                             size_threshold=ctx.options.size_threshold, error_ok=False)
        graph.cleanup(remove_unused_graph_inputs=False)
        folded = before - len(graph.nodes)
        ctx.count("nodes folded", folded)
        if not folded:
            logger.debug("fold-constants: nothing folded in graph '%s'", ctx.graph_name)


def _foldable(node: gs.Node) -> bool:
    if node.op == "Constant":
        return True
    if node.op in ("Shape", "Size"):
        return True
    return bool(node.inputs) and all(isinstance(t, gs.Constant) or not t.name
                                     for t in node.inputs)


@hookimpl
def aicc_register_passes(registry):
    registry.add(FoldConstants)
