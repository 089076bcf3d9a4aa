"""The batch analysis of a lowered graph: whether dim 0 of every activation is the batch (the
graph inputs' shared dim 0) and no op mixes samples along it (no reduction, concatenation,
transpose or softmax over dim 0, no computed shape), so the planner may split the batch over
data-parallel groups of cores."""

from __future__ import annotations

import numpy as np
import onnx

from .lowered import Lowered
from .ops import attrs

__all__ = ["batch_analysis"]

#: operands (by index) that parametrize an op rather than carry data
_PARAMETER_OPERANDS = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4), "Pad": (1, 2, 3),
    "Resize": (1, 2, 3), "Split": (1,), "Squeeze": (1,), "Unsqueeze": (1,), "TopK": (1,),
    "ReduceMean": (1,), "ReduceSum": (1,), "ReduceMax": (1,), "ReduceMin": (1,), "Clip": (1, 2),
    "ReduceProd": (1,), "ReduceSumSquare": (1,), "CumSum": (1,), "Trilu": (1,), "OneHot": (1, 2)}


def _axes_touch_zero(node: onnx.NodeProto, low: Lowered) -> bool:
    """Whether the node works along dim 0 (mixing samples, or moving the batch off dim 0)."""
    a = attrs(node)
    rank = len(low.tensors[node.input[0]].shape) if node.input and node.input[0] in low.tensors \
        else 0
    op = node.op_type
    if op == "Transpose":
        perm = a.get("perm") or list(range(rank))[::-1]
        return bool(perm) and perm[0] != 0
    if op == "Gather" and low.tensors.get(low.resolve(node.input[0])) is not None and \
            low.tensors[low.resolve(node.input[0])].kind == "weight":
        return False  # a table lookup: the indices carry the batch, the table has none
    if op in ("Concat", "Split", "Softmax", "LogSoftmax", "Gather", "GatherElements", "Flatten",
              "LayerNormalization"):
        axis = int(a.get("axis", 1 if op in ("Flatten",) else (-1 if op in (
            "Softmax", "LogSoftmax", "LayerNormalization") else 0)))
        return rank > 0 and axis % rank == 0 if op != "Flatten" else axis == 0
    if op == "OneHot":  # inserts the one-hot axis (default last) into an output of rank + 1
        return int(a.get("axis", -1)) % (rank + 1) == 0
    if op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd",
              "ReduceSumSquare", "Slice", "Squeeze", "Unsqueeze"):
        axes = a.get("axes")
        idx = {"Slice": 3, "Squeeze": 1, "Unsqueeze": 1}.get(op, 1)
        if axes is None and len(node.input) > idx and node.input[idx]:
            arr = low.constants.get(node.input[idx])
            if arr is None:
                return True
            axes = [int(v) for v in np.asarray(arr).reshape(-1)]
        if axes is None:
            return op.startswith("Reduce")
        r = rank + (len(axes) if op == "Unsqueeze" else 0)
        return any(int(v) % max(r, 1) == 0 for v in axes)
    if op == "MatMul":
        b = low.tensors.get(low.resolve(node.input[1]))
        return b is not None and b.kind != "weight" and len(b.shape) < 3
    if op == "Gemm":
        b = low.tensors.get(low.resolve(node.input[1]))
        return (b is not None and b.kind != "weight") or bool(a.get("transA", 0))
    return False


def batch_analysis(low: Lowered) -> tuple[int, bool]:
    """dim 0 of the graph inputs, and whether every op keeps samples apart along it."""
    if not low.inputs:
        return 0, False
    dims = {low.tensors[n].shape[0] if low.tensors[n].shape else 0 for n in low.inputs}
    if len(dims) != 1:
        return 0, False
    batch = dims.pop()
    if batch <= 1:
        return batch, False
    for name, info in low.tensors.items():
        if info.kind == "weight" or low.tensors[low.resolve(name)].kind == "weight":
            continue
        if not info.shape or info.shape[0] != batch:
            return batch, False
    for node in low.nodes:
        if node.op_type in ("Shape", "Size", "Range", "ConstantOfShape"):
            return batch, False
        if _axes_touch_zero(node, low):
            return batch, False
        # a computed shape, axes or size operand is not samples, whatever its length
        for idx in _PARAMETER_OPERANDS.get(node.op_type, ()):
            if idx < len(node.input) and node.input[idx] and \
                    low.tensors[low.resolve(node.input[idx])].kind != "weight":
                return batch, False
    return batch, True
