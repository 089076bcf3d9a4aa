"""``fold-batchnorm``: fold an inference BatchNormalization into the Conv, ConvTranspose or Gemm
that feeds it, when that layer's output has no other reader.

With s = gamma / sqrt(var + eps), BN(y) = s * y + (beta - mean * s), so the layer's weights are
scaled by s along the output channel and its bias becomes bias * s + beta - mean * s. Weights are
always replaced by new constants, so a weight shared with another layer is never changed under it.
The BN parameters (gamma, beta) of every fold are kept in the pipeline's analysis cache as
``FOLDED_BATCHNORM`` for passes that need them later (high-bias absorption in CLE).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs

from aicc.analyses import Analysis
from aicc.hookspecs import hookimpl
from aicc.pass_base import Pass, PassContext, Tolerance
from aicc.passes.cleanup import detach_nodes, remove_dead_nodes
from aicc.program import Program

__all__ = ["FoldBatchNorm", "FOLDED_BATCHNORM", "fold_into_layer"]

logger = logging.getLogger(__name__)

_LAYERS = ("Conv", "ConvTranspose", "Gemm")


def _const(t: gs.Tensor) -> np.ndarray | None:
    return np.asarray(t.values) if isinstance(t, gs.Constant) else None


#: BN parameters (gamma, beta, ...) of every fold by the folded node's name: CLE's high-bias
#: absorption reads them (valid while the program is as fold-batchnorm left it)
FOLDED_BATCHNORM = Analysis("folded BatchNormalization statistics")


class FoldBatchNorm(Pass):
    name = "fold-batchnorm"
    description = "fold BatchNormalization into a preceding Conv/ConvTranspose/Gemm"
    scope = "graph"
    after = ("fold-constants",)  # BatchNormalization parameters computed from constants
    #: the statistics of earlier folds stay true: folding more BatchNormalizations adds to them
    preserves = (FOLDED_BATCHNORM,)
    semantics = "preserving"
    tolerance = Tolerance(rtol=1e-4, atol=1e-5)

    def run_graph(self, graph: gs.Graph, program: Program, ctx: PassContext) -> bool:
        graph_outputs = {t.name for t in graph.outputs}
        removed: list[gs.Node] = []
        kept = ctx.analyses.peek(FOLDED_BATCHNORM)
        if kept is None:
            kept = {}
            ctx.analyses.put(FOLDED_BATCHNORM, kept)
        for bn in graph.nodes:
            if bn.op != "BatchNormalization":
                continue
            folded = fold_into_layer(bn, graph_outputs)
            if isinstance(folded, str):
                logger.debug("fold-batchnorm: skip '%s': %s", bn.name, folded)
                ctx.count("skipped")
                continue
            kept.update(folded)
            removed.append(bn)
            ctx.count("batchnorms folded")
        if removed:
            # The BNs leave their inputs' reader lists in one sweep (see detach_nodes); no later
            # decision above looks at those lists: a folded BN was its input's only reader.
            detach_nodes(removed)
            gone = {id(bn) for bn in removed}
            graph.nodes = [n for n in graph.nodes if id(n) not in gone]
            remove_dead_nodes(graph)
        return bool(removed)

    @staticmethod
    def _why_not(bn: gs.Node, graph_outputs: set[str]) -> str | None:
        if len([t for t in bn.outputs if t.name]) != 1 or int(bn.attrs.get("training_mode", 0)):
            return "training-mode BatchNormalization"
        if any(_const(t) is None for t in bn.inputs[1:5]):
            return "scale, bias, mean or variance is not a constant"
        x = bn.inputs[0]
        if not x.inputs or x.inputs[0].op not in _LAYERS:
            return "not fed by Conv, ConvTranspose or Gemm"
        if len(x.outputs) != 1:
            return f"'{x.name}' has {len(x.outputs)} readers"
        if x.name in graph_outputs:
            return f"'{x.name}' is a graph output"
        layer = x.inputs[0]
        if layer.op == "Gemm" and (x.shape is None or len(x.shape) != 2):
            return "Gemm output rank is unknown"
        return None

    @staticmethod
    def _fold_into(layer: gs.Node, scale: np.ndarray, shift: np.ndarray) -> bool:
        w = _const(layer.inputs[1])
        if w is None or (len(layer.inputs) > 2 and layer.inputs[2].name
                         and _const(layer.inputs[2]) is None):
            return False
        dtype = w.dtype
        n_out = scale.shape[0]
        if layer.op == "Conv":
            new_w = w.astype(np.float64) * scale.reshape((-1,) + (1,) * (w.ndim - 1))
            bias_shape = (n_out,)
        elif layer.op == "ConvTranspose":
            group = int(layer.attrs.get("group", 1))
            shaped = w.astype(np.float64).reshape((group, w.shape[0] // group, w.shape[1])
                                                  + w.shape[2:])
            per_group = scale.reshape(group, 1, w.shape[1], *([1] * (w.ndim - 2)))
            new_w = (shaped * per_group).reshape(w.shape)
            bias_shape = (n_out,)
        else:  # Gemm: Y = alpha * A @ B' + beta * C, BN over axis 1 (N)
            trans_b = int(layer.attrs.get("transB", 0))
            axis_shape = (-1, 1) if trans_b else (1, -1)
            new_w = w.astype(np.float64) * scale.reshape(axis_shape)
            beta_attr = float(layer.attrs.get("beta", 1.0))
            c = _const(layer.inputs[2]) if len(layer.inputs) > 2 and layer.inputs[2].name else None
            new_c = shift if c is None else beta_attr * c.astype(np.float64) * scale + shift
            layer.attrs["beta"] = 1.0
            _set_input(layer, 1, f"{layer.name}_bnfold_w", new_w.astype(dtype))
            _set_input(layer, 2, f"{layer.name}_bnfold_c", new_c.astype(dtype))
            return True
        old_b = (_const(layer.inputs[2]) if len(layer.inputs) > 2 and layer.inputs[2].name
                 else np.zeros(bias_shape))
        new_b = old_b.astype(np.float64) * scale + shift
        _set_input(layer, 1, f"{layer.name}_bnfold_w", new_w.astype(dtype))
        _set_input(layer, 2, f"{layer.name}_bnfold_b", new_b.astype(dtype))
        return True


def fold_into_layer(bn: gs.Node, graph_outputs: set[str]) -> dict[str, dict] | str:
    """Fold ``bn`` into the Conv, ConvTranspose or Gemm that feeds it, in float64 from the
    parameters as they are: the layer takes the BN's output tensor and ``bn`` is left with no
    outputs (the caller removes it). Returns the ``FOLDED_BATCHNORM`` entry
    ``{layer name: {"gamma", "beta", "bn"}}``, or why it cannot fold."""
    reason = FoldBatchNorm._why_not(bn, graph_outputs)
    if reason:
        return reason
    layer = bn.inputs[0].inputs[0]
    gamma, beta, mean, var = (_const(t).astype(np.float64) for t in bn.inputs[1:5])
    eps = float(bn.attrs.get("epsilon", 1e-5))
    scale = gamma / np.sqrt(var + eps)
    shift = beta - mean * scale
    if not FoldBatchNorm._fold_into(layer, scale, shift):
        return f"layer '{layer.name}' has non-constant weights"
    layer.outputs[0] = bn.outputs[0]
    bn.outputs.clear()
    return {layer.name: {"gamma": gamma.tolist(), "beta": beta.tolist(), "bn": bn.name}}


def _set_input(node: gs.Node, index: int, name: str, values: np.ndarray) -> None:
    const = gs.Constant(name, np.array(values, order="C"))
    while len(node.inputs) <= index:
        node.inputs.append(gs.Variable.empty())
    node.inputs[index] = const


@hookimpl
def aicc_register_passes(registry):
    registry.add(FoldBatchNorm)
