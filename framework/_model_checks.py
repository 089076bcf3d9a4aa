"""The refusals of a parsed model: unsupported versions, tensors whose data disagrees with their
dims, tensors produced twice, cycles, what onnx's checker rejects and shapes that cannot agree.

Each is a one-line ``ModelError`` naming the file and the tensor or node. Part of
``aicc.ir.load_model`` (and ``verify_graph``).
"""

from __future__ import annotations

import math
from collections import deque
from pathlib import Path

import numpy as np
import onnx

from .errors import ModelError

__all__ = ["MAX_OPSET", "MIN_OPSET", "check_versions", "check_tensor_size", "check_topology",
           "check_onnx", "check_large", "strict_shapes"]

MAX_OPSET = onnx.defs.onnx_opset_version()
MIN_OPSET = 7


def check_versions(model: onnx.ModelProto, where: str) -> None:
    if model.ir_version <= 0:
        raise ModelError("not an ONNX model (no ir_version)", where=where,
                         hint="is this the right file?")
    if model.ir_version > onnx.IR_VERSION:
        raise ModelError(f"IR version {model.ir_version} is newer than supported "
                         f"({onnx.IR_VERSION})", where=where, hint="export with an older opset")
    if not model.opset_import:
        raise ModelError("the model declares no opset_import", where=where,
                         hint="re-export the model; every ONNX model names its opsets")
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            if op.version > MAX_OPSET:
                raise ModelError(f"opset {op.version} is newer than supported ({MAX_OPSET})",
                                 where=where, field="opset_import")
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise ModelError("the model has no graph", where=where, hint="is this the right file?")


_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data",
                 "uint64_data")


def check_tensor_size(tensor: onnx.TensorProto, what: str, where: str) -> None:
    if any(d < 0 for d in tensor.dims):
        raise ModelError(f"negative dimension in {list(tensor.dims)}", where=where, field=what)
    count = math.prod(tensor.dims)
    if tensor.data_type == onnx.TensorProto.STRING:
        return
    try:
        np_dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
    except (KeyError, TypeError, ValueError):
        np_dtype = None
    if tensor.data_type == onnx.TensorProto.UNDEFINED or np_dtype is None:
        raise ModelError(f"unknown tensor data_type {tensor.data_type}", where=where, field=what,
                         hint="the model is damaged or from a newer ONNX")
    if tensor.HasField("raw_data"):
        bits = 4 if tensor.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4) else \
            np.dtype(np_dtype).itemsize * 8
        expected = (count * bits + 7) // 8
        have = len(tensor.raw_data)
    else:
        have = sum(len(getattr(tensor, f)) for f in _TYPED_FIELDS)
        expected = count
        if tensor.data_type in (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128):
            expected = 2 * count
        if tensor.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
            expected = (count + 1) // 2
    if have != expected:
        raise ModelError(f"dims {list(tensor.dims)} declare {count} elements but the data holds "
                         f"{have} {'bytes' if tensor.HasField('raw_data') else 'values'} "
                         f"(expected {expected})", where=where, field=what)


def check_topology(graph: onnx.GraphProto, where: str,
                   outer: frozenset[str] = frozenset()) -> None:
    """Refuse tensors produced twice and graphs that are not sorted or contain cycles."""
    available = set(outer) | {i.name for i in graph.input} | {t.name for t in graph.initializer}
    available.add("")
    producer: dict[str, str] = {}
    for node in graph.node:
        for out in node.output:
            if not out:
                continue
            if out in producer:
                raise ModelError(f"tensor '{out}' is produced twice (by '{producer[out]}' and "
                                 f"'{node.name}')", where=where, field=f"node '{node.name}'")
            producer[out] = node.name or node.op_type
    for inp in graph.input:
        if inp.name in producer:
            raise ModelError(f"graph input '{inp.name}' is also produced by node "
                             f"'{producer[inp.name]}'", where=where)
    # Sortedness: walk nodes in order; an input produced later means unsorted or a cycle.
    unsorted = []
    for node in graph.node:
        for inp in node.input:
            if inp not in available and inp in producer:
                unsorted.append((node, inp))
            elif inp not in available and inp not in producer:
                raise ModelError(f"input '{inp}' of node '{node.name}' ({node.op_type}) is "
                                 "produced by nothing", where=where, field=f"node '{node.name}'")
        available.update(o for o in node.output if o)
    if unsorted and _has_cycle(graph):
        node, inp = unsorted[0]
        raise ModelError(f"the graph has a cycle through tensor '{inp}' (node '{node.name}')",
                         where=where)


def _has_cycle(graph: onnx.GraphProto) -> bool:
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    indegree = [0] * len(graph.node)
    consumers: dict[int, list[int]] = {}
    for i, node in enumerate(graph.node):
        for inp in set(node.input):
            if inp in producer:
                indegree[i] += 1
                consumers.setdefault(producer[inp], []).append(i)
    queue = deque(i for i, d in enumerate(indegree) if d == 0)
    seen = 0
    while queue:
        i = queue.popleft()
        seen += 1
        for c in consumers.get(i, ()):
            indegree[c] -= 1
            if indegree[c] == 0:
                queue.append(c)
    return seen != len(graph.node)


def check_onnx(model: onnx.ModelProto, where: str, data: bytes | None = None) -> None:
    """Topology (cycles, double producers) and the ONNX checker, as one-line ModelErrors.
    ``data``: ``model`` already serialized, if at hand (spares the checker serializing it)."""
    check_topology(model.graph, where)
    try:
        onnx.checker.check_model(model if data is None else data)
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0]
        raise ModelError(f"invalid ONNX: {first}", where=where) from None


def check_large(model: onnx.ModelProto, path: Path | None, base: Path | None, where: str,
                 check_shapes: bool) -> onnx.ModelProto:
    """Check a model past 2 GiB through its file (weights stay external there): onnx's checker
    and shape inference by path; the inferred shapes are copied into ``model``."""
    if path is None or base is None or base.resolve() != path.resolve().parent:
        raise ModelError("a model over 2 GiB must be loaded from its file, its external data "
                         "beside it", where=where, hint="pass the model's path")
    check_topology(model.graph, where)
    try:
        onnx.checker.check_model(str(path))
    except (onnx.checker.ValidationError, ValueError) as e:
        first = str(e).strip().splitlines()[0]
        raise ModelError(f"invalid ONNX: {first}", where=where) from None
    if not check_shapes:
        return model
    import tempfile
    with tempfile.TemporaryDirectory(prefix="aicc-shapes-") as tmp:
        out = Path(tmp) / "inferred.onnx"
        try:
            onnx.shape_inference.infer_shapes_path(str(path), str(out), check_type=True,
                                                   strict_mode=True, data_prop=True)
        except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as e:
            first = str(e).strip().splitlines()[0]
            raise ModelError(f"shapes do not agree: {first}", where=where) from None
        inferred = onnx.load(str(out), load_external_data=False)
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    del model.graph.output[:]
    model.graph.output.extend(inferred.graph.output)
    return model


def strict_shapes(model: onnx.ModelProto | bytes, where: str) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True,
                                                 data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as e:
        first = str(e).strip().splitlines()[0]
        raise ModelError(f"shapes do not agree: {first}", where=where) from None
