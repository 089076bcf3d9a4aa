"""Conv/ConvTranspose/Gemm + BatchNormalization pairs that both go to fp16, folded by
``convert-fp16`` in float64 from their float32 parameters before anything is cast, as the device
compiler folds them (the mixed-precision seed: mark both so they fuse).

Folding after the cast (``fold-batchnorm`` later in the pipeline) would first round gamma, beta,
mean and variance to fp16 and then the folded weights again: the shift ``beta - mean * scale``
cancels when the mean is large, and its rounded terms leave a per-channel error ten times the
device's (a Conv + BatchNormalization with means of 20-40 and outputs near 1: 4.3e-3 against
4.0e-4 relative, ``tests/test_fp16_batchnorm_fold.py``).
"""

from __future__ import annotations

import logging

import onnx_graphsurgeon as gs

from aicc.graph_casts import Names
from aicc.pass_base import PassContext
from aicc.passes.cleanup import detach_nodes
from aicc.passes.fold_batchnorm import fold_into_layer
from aicc.passes.precision.constant_range import constant_values

__all__ = ["fold_fp16_pairs"]

logger = logging.getLogger("aicc.passes.precision.convert_fp16")

_LAYERS = ("Conv", "ConvTranspose", "Gemm")


def _materialize(node: gs.Node, indices: range, names: Names) -> None:
    """Inputs computed by Constant nodes become initializers of the same values, so the fold
    reads them (the Constant node stays for its other readers; dead ones are removed later)."""
    for i in indices:
        t = node.inputs[i]
        if isinstance(t, gs.Constant) or not t.name:
            continue
        values = constant_values(t)
        if values is not None:
            node.inputs[i] = gs.Constant(names.new(t.name), values)


def fold_fp16_pairs(graph: gs.Graph, selected: list[gs.Node], ctx: PassContext
                    ) -> tuple[list[gs.Node], dict[str, str]]:
    """Fold the pairs whose layer and BatchNormalization are both in ``selected``. Returns
    ``selected`` less the folded BatchNormalizations, and ``{BN name: layer name}``."""
    chosen = {id(n) for n in selected}
    outputs = {t.name for t in graph.outputs}
    names = Names(graph)
    folded: dict[str, str] = {}
    gone: list[gs.Node] = []
    for bn in graph.nodes:
        if bn.op != "BatchNormalization" or id(bn) not in chosen or len(bn.inputs) < 5:
            continue
        x = bn.inputs[0]
        if len(x.inputs) != 1 or x.inputs[0].op not in _LAYERS or id(x.inputs[0]) not in chosen:
            continue
        layer = x.inputs[0]
        _materialize(bn, range(1, 5), names)
        _materialize(layer, range(1, len(layer.inputs)), names)
        result = fold_into_layer(bn, outputs)
        if isinstance(result, str):
            logger.debug("convert-fp16: '%s' is not folded into '%s' before the cast: %s",
                         bn.name, layer.name, result)
            continue
        folded[bn.name] = layer.name
        gone.append(bn)
        ctx.count("batchnorms folded in float32 before fp16")
    if gone:
        detach_nodes(gone)
        ids = {id(n) for n in gone}
        graph.nodes = [n for n in graph.nodes if id(n) not in ids]
        selected = [n for n in selected if id(n) not in ids]
    return selected, folded
