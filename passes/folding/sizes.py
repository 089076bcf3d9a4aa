"""Size limits for ``fold-constants``: a node in, the bytes its output will take out, judged
before anything is allocated (from static shapes, or the constant inputs of the ops that make
large tensors from small ones).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.importers.onnx_importer import get_itemsize
from onnx_graphsurgeon.ir.tensor import SparseValues
from onnx_graphsurgeon.util import misc

__all__ = ["GROWING_OPS", "too_large_nodes", "planned_bytes"]

logger = logging.getLogger(__name__)

#: Ops whose output may be far larger than their inputs; unknown sizes are not folded.
GROWING_OPS = frozenset({"ConstantOfShape", "Expand", "Tile", "Range"})


def too_large_nodes(graph: gs.Graph, limit: int) -> frozenset[int]:
    """Ids of the nodes whose output, judged before evaluation, may exceed ``limit`` bytes."""
    out = set()
    for node in graph.nodes:
        for t in node.outputs:
            size = planned_bytes(node, t)
            if (size is None and node.op in GROWING_OPS) or (size is not None and size > limit):
                logger.debug("fold-constants: not evaluating '%s' (%s): output of %s bytes, "
                             "limit %d", node.name, node.op,
                             "unknown" if size is None else size, limit)
                out.add(id(node))
                break
    return frozenset(out)


def planned_bytes(node: gs.Node, t: gs.Tensor) -> int | None:
    """The byte size ``t`` will have: from its static shape, else from the constant inputs of
    a growing op; None when it cannot be known."""
    itemsize = get_itemsize(t.dtype) if t.dtype is not None else 4
    if t.shape is not None and not misc.is_dynamic_shape(t.shape):
        return int(np.prod([int(d) for d in t.shape], dtype=object)) * itemsize
    values = [i.values if isinstance(i, gs.Constant) and not isinstance(i._values, SparseValues)
              else None for i in node.inputs]
    try:
        if node.op == "ConstantOfShape" and values and values[0] is not None:
            return int(np.prod([int(v) for v in values[0].reshape(-1)], dtype=object)) * itemsize
        if node.op == "Expand" and len(values) == 2 and values[1] is not None and \
                node.inputs[0].shape is not None and \
                not misc.is_dynamic_shape(node.inputs[0].shape):
            dims = [max(int(v), 1) for v in values[1].reshape(-1)]
            rank = max(len(dims), len(node.inputs[0].shape))
            a = [1] * (rank - len(dims)) + dims
            b = [1] * (rank - len(node.inputs[0].shape)) + [int(d) for d in node.inputs[0].shape]
            return int(np.prod([max(x, y) for x, y in zip(a, b)], dtype=object)) * itemsize
        if node.op == "Tile" and len(values) == 2 and None not in values:
            count = int(np.prod([int(v) for v in values[1].reshape(-1)], dtype=object))
            return count * int(values[0].size) * itemsize
        if node.op == "Range" and len(values) == 3 and None not in values:
            start, stop, step = (float(v.reshape(-1)[0]) for v in values)
            return max(int(np.ceil((stop - start) / step)), 0) * itemsize if step else None
    except (TypeError, ValueError, OverflowError):
        return None
    return None
