"""Float tensors that quantization keeps exact: their values index, size or count, so an 8-bit
grid would change what they mean, not only how precise they are. Shared by the quantize planner
(``passes/quantization/plan.py``) and AMP's grouping (``amp_groups.py``)."""

from __future__ import annotations

from collections.abc import Callable, Collection

import numpy as np
import onnx
import onnx_graphsurgeon as gs

__all__ = ["shape_computations", "integer_reads", "exact_helper"]

_T = onnx.TensorProto
#: ONNX element types a Cast reads its input as integers into
_INTEGER_TYPES = frozenset({_T.BOOL, _T.INT8, _T.UINT8, _T.INT16, _T.UINT16, _T.INT32, _T.UINT32,
                            _T.INT64, _T.UINT64, _T.INT4, _T.UINT4})


def shape_computations(graph: gs.Graph) -> set[str]:
    """Tensors computed from shapes only: outputs of Shape/Size and of every node whose
    non-constant inputs all are such tensors (Shape -> Cast -> Div -> Concat -> Reshape chains).
    They index and size, so they stay exact (float) whatever their dtype. ``graph.nodes`` must be
    in topological order."""
    derived: set[str] = set()
    for node in graph.nodes:
        if node.op in ("Shape", "Size"):
            derived.update(t.name for t in node.outputs if t.name)
            continue
        variables = [t for t in node.inputs if t.name and not isinstance(t, gs.Constant)]
        if variables and all(t.name in derived for t in variables):
            derived.update(t.name for t in node.outputs if t.name)
    return derived


def integer_reads(graph: gs.Graph, quantized_anyway: Collection[str],
                  has_override: Callable[[str], bool]) -> set[str]:
    """Float tensors a Cast reads as integers (or booleans): ids, byte values, counts in a float
    tensor (tf2onnx's byte classifiers feed ``Cast(float bytes -> int32) -> OneHot``). Cast
    truncates, so a quantized 65.0 that dequantizes to 64.78 becomes byte 64, and values past
    the calibrated range clip to another id: they stay exact. Not those in ``quantized_anyway``
    (the tensors ``int32-sandwich`` casts on purpose) nor any with an override: those are
    quantized."""
    found: set[str] = set()
    for node in graph.nodes:
        if node.op != "Cast" or not node.inputs or not node.inputs[0].name:
            continue
        name = node.inputs[0].name
        if node.attrs.get("to") in _INTEGER_TYPES and name not in quantized_anyway \
                and not has_override(name):
            found.add(name)
    return found


def exact_helper(values: np.ndarray) -> bool:
    """A constant operand of an elementwise op that is a scalar (``x * 6``, ``x + 3``: a
    broadcast helper, exact in float and meaningless as an 8-bit range of one value) or holds
    only integers (masks, counts, index arithmetic): kept exact, not quantized."""
    if values.size <= 1:
        return True
    finite = np.isfinite(values)
    return bool(finite.all() and np.array_equal(values, np.round(values)))
