"""ONNX files <-> onnx-graphsurgeon graphs, safely: loading, saving, shape inference, verification.

``load_model`` is the only door through which a model enters aicc. It refuses what has hurt onnx and
onnxruntime users (BAD_INPUTS.md 1-14): empty or non-ONNX files, unsupported IR/opset versions,
external data escaping the model's folder (``..``, absolute paths, symlinks, hard links), offsets
and lengths that do not fit the file, initializers whose dims disagree with their data, graphs
with cycles or tensors produced twice, and shapes that cannot agree. External data is read by aicc
itself, so no backend ever follows a path taken from a model (``_external_data``); the refusals of
a parsed model live in ``_model_checks``.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from google.protobuf.message import DecodeError, EncodeError

from ._external_data import read_external
from ._model_checks import (MAX_OPSET, MIN_OPSET, check_large, check_onnx, check_tensor_size,
                            check_versions, strict_shapes)
from .errors import ModelError

__all__ = [
    "load_model", "save_model", "import_graph", "export_model", "infer_shapes",
    "verify_graph", "graph_symbols", "iter_tensors", "MAX_OPSET", "WEIGHTS_FILE",
    "tensor_dtype", "safe_file_name", "too_large_for_protobuf", "is_unnamed_dim",
]

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.bin"
#: Largest protobuf message; a model past it (less ``_SAVE_MARGIN``) is saved with external data
#: and checked by path. Tests lower it to exercise those paths without writing 2 GiB.
_TWO_GIB = 2**31 - 1
_SAVE_MARGIN = 64 * 1024 * 1024


def iter_tensors(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    """Every TensorProto in the model (initializers, Constant attributes, subgraphs), iteratively."""
    stack = [model.graph]
    while stack:
        graph = stack.pop()
        for t in graph.initializer:
            yield f"initializer '{t.name}'", t
        for t in graph.sparse_initializer:
            yield f"sparse initializer '{t.values.name}'", t.values
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    yield f"node '{node.name or node.output[0]}' attribute '{attr.name}'", attr.t
                elif attr.type == onnx.AttributeProto.TENSORS:
                    for t in attr.tensors:
                        yield f"node '{node.name}' attribute '{attr.name}'", t
                elif attr.type == onnx.AttributeProto.GRAPH:
                    stack.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    stack.extend(attr.graphs)


def too_large_for_protobuf(model: onnx.ModelProto, margin: int | None = None) -> bool:
    """Whether ``model`` serializes past 2 GiB less ``margin`` (default ``_SAVE_MARGIN``): then
    it cannot be serialized, checked or shape-inferred in memory. (protobuf cannot even size a
    message past 2 GiB; that failure means yes.)"""
    try:
        size = model.ByteSize()
    except EncodeError:
        return True
    return size >= _TWO_GIB - (_SAVE_MARGIN if margin is None else margin)


def load_model(source: str | Path | bytes, *, base_dir: str | Path | None = None,
               check_shapes: bool = True,
               read_file: Callable[[Path], bytes] | None = None) -> onnx.ModelProto:
    """Load and validate an ONNX model from a path or bytes; external data is read safely.

    A model given as bytes that refers to external data needs ``base_dir``, the folder the data
    lives in. With ``check_shapes``, strict shape inference runs so shapes that cannot agree are
    refused here rather than deep inside a backend. Returns the model with inferred shapes.
    ``read_file``, when given, reads the model file and every external-data file (the container
    passes one that checks each file's SHA-256 as it reads it). Models past 2 GiB are checked
    by path (the checker and shape inference cannot take them in memory).
    """
    path = None
    if isinstance(source, (bytes, bytearray)):
        where = "<model bytes>"
        data = bytes(source)
        base = Path(base_dir) if base_dir is not None else None
    else:
        path = Path(source)
        where = str(path)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise ModelError("model file not found", where=where) from None
        if not stat.S_ISREG(st.st_mode):
            raise ModelError("model path is not a regular file", where=where)
        if st.st_size == 0:
            raise ModelError("model file is empty", where=where)
        data = read_file(path) if read_file is not None else path.read_bytes()
        base = Path(base_dir) if base_dir is not None else path.parent
    if not data:
        raise ModelError("model is empty", where=where)
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelError(f"not an ONNX model (protobuf parse failed: {e})", where=where,
                         hint="is this the right file, and is it complete?") from None
    check_versions(model, where)
    for what, tensor in iter_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            if base is None:
                raise ModelError("the model refers to external data but was given as bytes "
                                 "with no folder", where=where, field=what,
                                 hint="load it by path, or pass base_dir")
            read_external(base, tensor, what, where, read_file)
            data = None  # the model now differs from the bytes read
        check_tensor_size(tensor, what, where)
    if too_large_for_protobuf(model, 0):
        if _default_opset(model) < MIN_OPSET:
            raise ModelError(f"opset {_default_opset(model)} is older than supported "
                             f"({MIN_OPSET}), and a model over 2 GiB is not converted",
                             where=where, field="opset_import",
                             hint="convert it with onnx.version_converter first")
        return check_large(model, path, base, where, check_shapes)
    if _default_opset(model) < MIN_OPSET:
        model = _upgrade_opset(model, where)
        data = None
    # the checker and shape inference take the bytes read as they are (each would otherwise
    # serialize the model again: two copies of every weight)
    check_onnx(model, where, data)
    if check_shapes:
        model = strict_shapes(model if data is None else data, where)
    return model


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), MIN_OPSET)


def _upgrade_opset(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """A model below the supported opsets, converted to ``MIN_OPSET`` by onnx's version
    converter (with a warning); ModelError when the converter cannot."""
    old = _default_opset(model)
    try:
        from onnx import version_converter

        converted = version_converter.convert_version(model, MIN_OPSET)
    except Exception as e:  # the converter raises RuntimeError/ValueError/its own types
        raise ModelError(f"opset {old} is older than supported ({MIN_OPSET}) and onnx's version "
                         f"converter cannot convert it: {str(e).strip().splitlines()[0][:200]}",
                         where=where, field="opset_import",
                         hint="re-export the model at a newer opset") from None
    logger.warning("%s: opset %d is older than supported; converted to opset %d with onnx's "
                   "version converter", where, old, MIN_OPSET)
    return converted


def save_model(model: onnx.ModelProto, path: str | Path) -> list[str]:
    """Save ``model`` to ``path`` durably (``aicc.fileio``); past 2 GiB the weights go to a file
    named by aicc, ``<stem>.weights.bin``, and ``model`` is changed in place to refer to it.

    Returns the names of the files written (relative to ``path``'s folder).
    """
    from .fileio import write_bytes

    path = Path(path)
    if not too_large_for_protobuf(model):
        write_bytes(path, model.SerializeToString(deterministic=True))
        return [path.name]
    weights = f"{path.stem}.{WEIGHTS_FILE}"
    chunks: list[bytes] = []
    offset = 0
    for _, tensor in iter_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or \
                not tensor.HasField("raw_data") or len(tensor.raw_data) < 1024:
            continue
        data = tensor.raw_data
        pad = (-offset) % 64
        if pad:
            chunks.append(b"\0" * pad)
            offset += pad
        chunks.append(data)
        tensor.ClearField("raw_data")
        del tensor.external_data[:]
        for key, value in (("location", weights), ("offset", str(offset)),
                           ("length", str(len(data)))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        tensor.data_location = onnx.TensorProto.EXTERNAL
        offset += len(data)
    write_bytes(path.parent / weights, chunks)
    write_bytes(path, model.SerializeToString(deterministic=True))
    return [path.name, weights]


def import_graph(model: onnx.ModelProto) -> gs.Graph:
    """An onnx-graphsurgeon graph of ``model``, with every node given a unique name.

    A graph input or output keeps its declared shape even when a ``value_info`` entry of the same
    name has none (onnxruntime's quantizer writes such entries; graphsurgeon would let the entry
    win and export an output without a shape, which the checker refuses)."""
    graph = gs.import_onnx(model)
    declared = {vi.name: vi for vi in list(model.graph.input) + list(model.graph.output)}
    for t in list(graph.inputs) + list(graph.outputs):
        vi = declared.get(t.name)
        if isinstance(t, gs.Variable) and t.shape is None and vi is not None \
                and vi.type.tensor_type.HasField("shape"):
            t.shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                       for d in vi.type.tensor_type.shape.dim]
    for t in graph.tensors().values():
        if isinstance(t, gs.Variable) and t.shape and any(map(is_unnamed_dim, t.shape)):
            t.shape = [None if is_unnamed_dim(d) else d for d in t.shape]
    seen: set[str] = set()
    next_suffix: dict[str, int] = {}  # per base name, so many repeats stay linear
    for i, node in enumerate(graph.nodes):
        name = node.name or (node.outputs[0].name if node.outputs else f"{node.op}_{i}")
        if name in seen:
            base, n = name, next_suffix.get(name, 1)
            while f"{base}_{n}" in seen:
                n += 1
            next_suffix[base] = n + 1
            name = f"{base}_{n}"
        node.name = name
        seen.add(name)
    return graph


def is_unnamed_dim(d: object) -> bool:
    """True for a dimension that names no symbol: ``?`` (paddle2onnx), ``-1`` or another
    placeholder without a letter or digit, or a negative value. Each such dimension is its own
    unknown (aicc keeps it as None), never one symbol shared by every ``?`` of the model."""
    if isinstance(d, str):
        return d.strip() == "-1" or not any(c.isalnum() for c in d)
    return isinstance(d, int) and d < 0


def export_model(graph: gs.Graph, *, ir_version: int | None = None) -> onnx.ModelProto:
    """A valid ONNX ModelProto of ``graph`` (deterministic; the IR version kept when given)."""
    model = gs.export_onnx(graph, do_type_check=False)
    if ir_version:
        model.ir_version = ir_version
    model.producer_name = "aicc"
    return model


def tensor_dtype(t: gs.Tensor) -> np.dtype | None:
    """The numpy dtype of a graph-surgeon tensor, or None when unknown.

    graph-surgeon keeps ONNX's enum (an int) for types it has no numpy dtype for (bfloat16 and
    the float8 types); onnx maps those to ml_dtypes' numpy dtypes.
    """
    if t.dtype is None:
        return None
    if isinstance(t.dtype, int) and not isinstance(t.dtype, bool):
        try:
            return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.dtype))
        except (KeyError, TypeError, ValueError):
            return None
    try:
        return np.dtype(t.dtype)
    except TypeError:
        return None


def infer_shapes(graph: gs.Graph, *, strict: bool = False, where: str = "graph",
                 fresh: bool = False) -> None:
    """Recompute intermediate shapes and dtypes in place (after binding symbols, say).

    ONNX inference keeps what a tensor already declares where it cannot prove it wrong, so an
    exporter's symbolic dimension (``sequence``) survives even where the bound inputs now fix it;
    ``fresh`` infers from the graph inputs alone (intermediate declarations dropped first)."""
    model = export_model(graph)
    if fresh:
        del model.graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=strict, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as e:
        first = str(e).strip().splitlines()[0]
        raise ModelError(f"shapes do not agree: {first}", where=where) from None
    info = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    tensors = graph.tensors()
    for name, vi in info.items():
        t = tensors.get(name)
        if not isinstance(t, gs.Variable) or t in graph.inputs:
            continue
        tt = vi.type.tensor_type
        if tt.elem_type:
            t.dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if tt.HasField("shape"):
            t.shape = [d.dim_value if d.HasField("dim_value") else
                       (d.dim_param or None) for d in tt.shape.dim]


def graph_symbols(graph: gs.Graph) -> dict[str, list[tuple[str, int]]]:
    """Symbolic dimension names of the graph inputs -> the (input, axis) pairs that use them."""
    out: dict[str, list[tuple[str, int]]] = {}
    for t in graph.inputs:
        for axis, d in enumerate(t.shape or []):
            if isinstance(d, str) and d:
                out.setdefault(d, []).append((t.name, axis))
    return out


def verify_graph(graph: gs.Graph, *, full: bool = False, where: str = "graph",
                 allowed_repeated_outputs: frozenset[str] = frozenset()) -> None:
    """Check structure: one producer per tensor name, no dangling edges, no cycles, distinct
    graph outputs (except ones repeated in the input model). ``full`` adds the ONNX checker."""
    names: dict[str, gs.Tensor] = {}
    producers: dict[str, str] = {}
    graph_inputs = {t.name for t in graph.inputs}
    for node in graph.nodes:
        for t in node.outputs:
            if not t.name:  # an omitted optional output
                continue
            if t.name in producers:
                raise ModelError(f"tensor '{t.name}' is produced by both '{producers[t.name]}' "
                                 f"and '{node.name}'", where=where)
            producers[t.name] = node.name
    for node in graph.nodes:
        for tensors in (node.inputs, node.outputs):
            for t in tensors:
                if not t.name:
                    continue
                other = names.setdefault(t.name, t)
                if other is not t:
                    raise ModelError(f"two different tensors share the name '{t.name}'",
                                     where=where, field=f"node '{node.name}'")
        for t in node.inputs:
            if isinstance(t, gs.Variable) and t.name and t.name not in producers \
                    and t.name not in graph_inputs:
                raise ModelError(f"input '{t.name}' of node '{node.name}' ({node.op}) is produced "
                                 "by nothing", where=where, hint="a pass left a dangling edge")
    seen_out: set[str] = set()
    for t in graph.outputs:
        if t.name in seen_out and t.name not in allowed_repeated_outputs:
            raise ModelError(f"graph output '{t.name}' is listed twice", where=where)
        seen_out.add(t.name)
        if isinstance(t, gs.Variable) and t.name not in producers and t.name not in graph_inputs:
            raise ModelError(f"graph output '{t.name}' is produced by nothing", where=where)
    if full:
        check_onnx(export_model(graph), where)


def safe_file_name(name: str) -> str:
    """A tensor or graph name made safe to use as a file name (no separators, no dots first)."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    cleaned = cleaned.lstrip(".") or "_"
    return cleaned[:120]
