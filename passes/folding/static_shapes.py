"""Shape folding for ``fold-constants``: a ``Shape`` (and a ``Gather`` or ``Slice`` of one) whose
dims are static in, its value out, with nothing run.

Each function takes a tensor, the names known to be constant and the shapes folded so far, and
returns the tensor's value or None. A tensor folded here loses its producer, so ``_producer``
ignores it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.util import misc

__all__ = ["shape_of", "gathered_shape", "sliced_shape"]


def _producer(tensor: gs.Tensor, op: str, shapes: dict[str, np.ndarray]) -> gs.Node | None:
    if tensor.name in shapes or len(tensor.inputs) != 1 or tensor.inputs[0].op != op:
        return None
    return tensor.inputs[0]


def _unknown_input(node: gs.Node | None, known: dict[str, gs.Tensor]) -> gs.Tensor | None:
    if node is None:
        return None
    inp = node.inputs[0]
    return None if inp.name in known else inp


def _const_value(tensor: gs.Tensor, shapes: dict[str, np.ndarray]) -> np.ndarray | None:
    if tensor.name in shapes:
        return shapes[tensor.name]
    return tensor.values if isinstance(tensor, gs.Constant) else None


def _scalar(value: np.ndarray) -> Any:
    return value if not value.shape else list(value)[0]


def _shape_dims(tensor: gs.Tensor, known, shapes) -> list | None:
    """The dims a ``Shape`` node producing ``tensor`` returns (``start``/``end`` applied), or
    None when ``tensor`` is not such an output or its input's rank is unknown."""
    node = _producer(tensor, "Shape", shapes)
    inp = _unknown_input(node, known)
    if inp is None or inp.shape is None:
        return None
    rank = len(inp.shape)
    # Shape-15: start/end count from the back when negative and are clamped to [0, rank]
    start, end = node.attrs.get("start", 0), node.attrs.get("end", rank)
    start, end = (min(max(v + rank if v < 0 else v, 0), rank) for v in (start, end))
    return list(inp.shape[start:end])


def shape_of(tensor, known, shapes) -> np.ndarray | None:
    dims = _shape_dims(tensor, known, shapes)
    if dims is None or misc.is_dynamic_shape(dims):
        return None
    return np.array(dims, dtype=np.int64)


def gathered_shape(tensor, known, shapes) -> np.ndarray | None:
    gather = _producer(tensor, "Gather", shapes)
    if gather is None:
        return None
    dims = _shape_dims(gather.inputs[0], known, shapes)
    if dims is None:
        return None
    indices = _const_value(gather.inputs[1], shapes)
    if indices is None or np.any((indices < -len(dims)) | (indices >= len(dims))):
        return None  # out of range: onnxruntime reports it when the model runs
    if not indices.shape:
        shape = dims[int(indices)]
        if misc.is_dynamic_dimension(shape):
            return None
    else:
        shape = [dims[int(i)] for i in indices.reshape(-1)]
        if misc.is_dynamic_shape(shape):
            return None
        return np.array(shape, dtype=np.int64).reshape(indices.shape)
    return np.array(shape, dtype=np.int64)


def sliced_shape(tensor, known, shapes) -> np.ndarray | None:
    node = _producer(tensor, "Slice", shapes)
    if node is None:
        return None
    if len(node.inputs) >= 3:
        bounds = [_const_value(t, shapes) for t in node.inputs[1:3]]
        if any(b is None for b in bounds):
            return None
        starts, ends = (_scalar(b) for b in bounds)
    elif "starts" in node.attrs and "ends" in node.attrs:
        starts, ends = node.attrs["starts"][0], node.attrs["ends"][0]
    else:
        return None
    dims = _shape_dims(node.inputs[0], known, shapes)
    if dims is None:
        return None
    if len(node.inputs) > 3:  # a shape tensor can only be sliced along axis 0
        axes = _const_value(node.inputs[3], shapes)
        if axes is None or _scalar(axes) != 0:
            return None
    elif "axes" in node.attrs and node.attrs["axes"][0] != 0:
        return None
    steps = 1
    if len(node.inputs) > 4:
        value = _const_value(node.inputs[4], shapes)
        if value is None:
            return None
        steps = _scalar(value)
    elif "steps" in node.attrs:
        steps = node.attrs["steps"][0]
    if steps == 0:
        return None  # invalid; onnxruntime reports it when the model runs
    shape = dims[int(starts):int(ends):int(steps)]
    if misc.is_dynamic_shape(shape):
        return None
    return np.array(shape, dtype=np.int64)
