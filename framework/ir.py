"""ONNX files <-> onnx-graphsurgeon graphs, safely: loading, saving, shape inference, verification.

``load_model`` is the only door through which a model enters aicc. It refuses what has hurt onnx and
onnxruntime users (BAD_INPUTS.md 1-14): empty or non-ONNX files, unsupported IR/opset versions,
external data escaping the model's folder (``..``, absolute paths, symlinks, hard links), offsets
and lengths that do not fit the file, initializers whose dims disagree with their data, graphs
with cycles or tensors produced twice, and shapes that cannot agree. External data is read by aicc
itself, so no backend ever follows a path taken from a model.
"""

from __future__ import annotations

import logging
import math
import os
import stat
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from google.protobuf.message import DecodeError, EncodeError

from .errors import ModelError

__all__ = [
    "load_model", "save_model", "import_graph", "export_model", "infer_shapes",
    "verify_graph", "graph_symbols", "iter_tensors", "MAX_OPSET", "WEIGHTS_FILE",
    "tensor_dtype", "safe_file_name", "too_large_for_protobuf", "is_unnamed_dim",
]

logger = logging.getLogger(__name__)

MAX_OPSET = onnx.defs.onnx_opset_version()
MIN_OPSET = 7
WEIGHTS_FILE = "weights.bin"
_EXTERNAL_KEYS = {"location", "offset", "length", "checksum"}
#: Largest protobuf message; a model past it (less ``_SAVE_MARGIN``) is saved with external data
#: and checked by path. Tests lower it to exercise those paths without writing 2 GiB.
_TWO_GIB = 2**31 - 1
_SAVE_MARGIN = 64 * 1024 * 1024
#: Largest single read (``os.pread`` returns at most 2 GiB - 4 KiB on Linux).
_READ_CHUNK = 1 << 30


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


def _check_versions(model: onnx.ModelProto, where: str) -> None:
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


def _external_info(tensor: onnx.TensorProto, what: str, where: str) -> dict[str, object]:
    info: dict[str, object] = {}
    for entry in tensor.external_data:
        if entry.key not in _EXTERNAL_KEYS:
            raise ModelError(f"unknown external-data key '{entry.key}'", where=where, field=what)
        info[entry.key] = entry.value
    if "location" not in info or not info["location"]:
        raise ModelError("external data has no location", where=where, field=what)
    for key in ("offset", "length"):
        if key in info:
            text = str(info[key])
            if not (text.isascii() and text.isdigit()):  # not '²', '٣' or '-1'
                raise ModelError(f"external-data {key} {text!r} is not a non-negative integer",
                                 where=where, field=what)
            info[key] = int(text)
    return info


def _safe_external_path(base: Path, location: str, what: str, where: str) -> Path:
    """Resolve ``location`` inside ``base``, refusing anything that could leave it."""
    loc = Path(location)
    if loc.is_absolute() or location.startswith(("/", "\\")) or ":" in location:
        raise ModelError(f"external-data location {location!r} is an absolute path", where=where,
                         field=what, hint="external data must sit in the model's folder")
    if any(part == ".." for part in Path(os.path.normpath(location)).parts) or \
            any(part == ".." for part in loc.parts):
        raise ModelError(f"external-data location {location!r} escapes the model's folder",
                         where=where, field=what, hint="external data must sit in the model's folder")
    base_real = base.resolve()
    current = base_real
    for part in loc.parts:
        if part in ("", "."):
            continue
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            raise ModelError(f"external-data file {location!r} not found", where=where,
                             field=what) from None
        if stat.S_ISLNK(st.st_mode):
            raise ModelError(f"external-data location {location!r} goes through a symbolic link",
                             where=where, field=what, hint="copy the data file into the folder")
    st = os.lstat(current)
    if not stat.S_ISREG(st.st_mode):
        raise ModelError(f"external-data location {location!r} is not a regular file",
                         where=where, field=what)
    if st.st_nlink > 1:
        raise ModelError(f"external-data file {location!r} has {st.st_nlink} hard links",
                         where=where, field=what,
                         hint="a hard link may point outside the folder; copy the file instead")
    if base_real not in current.resolve().parents:
        raise ModelError(f"external-data location {location!r} escapes the model's folder",
                         where=where, field=what)
    return current


def _read_external(base: Path, tensor: onnx.TensorProto, what: str, where: str,
                   read_file: Callable[[Path], bytes] | None = None) -> None:
    info = _external_info(tensor, what, where)
    path = _safe_external_path(base, str(info["location"]), what, where)
    if read_file is not None:  # the whole file, verified by the caller, then sliced
        blob = read_file(path)
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else len(blob) - offset
        if offset > len(blob) or offset + length > len(blob):
            raise ModelError(f"external data [{offset}, {offset + length}) lies beyond the end of "
                             f"{info['location']!r} ({len(blob)} bytes)", where=where, field=what)
        _set_raw(tensor, blob[offset:offset + length])
        return
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
            raise ModelError(f"external-data file {info['location']!r} changed while opening",
                             where=where, field=what)
        offset = int(info.get("offset", 0))
        length = int(info["length"]) if "length" in info else st.st_size - offset
        if offset > st.st_size or offset + length > st.st_size:
            raise ModelError(f"external data [{offset}, {offset + length}) lies beyond the end of "
                             f"{info['location']!r} ({st.st_size} bytes)", where=where, field=what)
        data = _pread_all(fd, length, offset)
        if len(data) != length:
            raise ModelError(f"external-data file {info['location']!r} ended early ({len(data)} "
                             f"of {length} bytes read)", where=where, field=what)
    finally:
        os.close(fd)
    _set_raw(tensor, data)


def _set_raw(tensor: onnx.TensorProto, data: bytes) -> None:
    tensor.raw_data = data
    del tensor.external_data[:]
    tensor.data_location = onnx.TensorProto.DEFAULT


def too_large_for_protobuf(model: onnx.ModelProto, margin: int | None = None) -> bool:
    """Whether ``model`` serializes past 2 GiB less ``margin`` (default ``_SAVE_MARGIN``): then
    it cannot be serialized, checked or shape-inferred in memory. (protobuf cannot even size a
    message past 2 GiB; that failure means yes.)"""
    try:
        size = model.ByteSize()
    except EncodeError:
        return True
    return size >= _TWO_GIB - (_SAVE_MARGIN if margin is None else margin)


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    """``length`` bytes at ``offset``, read in chunks (one ``pread`` stops short of 2 GiB)."""
    if length <= _READ_CHUNK:
        return os.pread(fd, length, offset)
    parts = []
    done = 0
    while done < length:
        part = os.pread(fd, min(_READ_CHUNK, length - done), offset + done)
        if not part:
            break
        parts.append(part)
        done += len(part)
    return b"".join(parts)


_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data",
                 "uint64_data")


def _check_tensor_size(tensor: onnx.TensorProto, what: str, where: str) -> None:
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


def _check_topology(graph: onnx.GraphProto, where: str, outer: frozenset[str] = frozenset()) -> None:
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


def _check_onnx(model: onnx.ModelProto, where: str, data: bytes | None = None) -> None:
    """Topology (cycles, double producers) and the ONNX checker, as one-line ModelErrors.
    ``data``: ``model`` already serialized, if at hand (spares the checker serializing it)."""
    _check_topology(model.graph, where)
    try:
        onnx.checker.check_model(model if data is None else data)
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0]
        raise ModelError(f"invalid ONNX: {first}", where=where) from None


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
    _check_versions(model, where)
    for what, tensor in iter_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            if base is None:
                raise ModelError("the model refers to external data but was given as bytes "
                                 "with no folder", where=where, field=what,
                                 hint="load it by path, or pass base_dir")
            _read_external(base, tensor, what, where, read_file)
            data = None  # the model now differs from the bytes read
        _check_tensor_size(tensor, what, where)
    if too_large_for_protobuf(model, 0):
        if _default_opset(model) < MIN_OPSET:
            raise ModelError(f"opset {_default_opset(model)} is older than supported "
                             f"({MIN_OPSET}), and a model over 2 GiB is not converted",
                             where=where, field="opset_import",
                             hint="convert it with onnx.version_converter first")
        return _check_large(model, path, base, where, check_shapes)
    if _default_opset(model) < MIN_OPSET:
        model = _upgrade_opset(model, where)
        data = None
    # the checker and shape inference take the bytes read as they are (each would otherwise
    # serialize the model again: two copies of every weight)
    _check_onnx(model, where, data)
    if check_shapes:
        model = _strict_shapes(model if data is None else data, where)
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


def _check_large(model: onnx.ModelProto, path: Path | None, base: Path | None, where: str,
                 check_shapes: bool) -> onnx.ModelProto:
    """Check a model past 2 GiB through its file (weights stay external there): onnx's checker
    and shape inference by path; the inferred shapes are copied into ``model``."""
    if path is None or base is None or base.resolve() != path.resolve().parent:
        raise ModelError("a model over 2 GiB must be loaded from its file, its external data "
                         "beside it", where=where, hint="pass the model's path")
    _check_topology(model.graph, where)
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


def _strict_shapes(model: onnx.ModelProto | bytes, where: str) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True,
                                                 data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as e:
        first = str(e).strip().splitlines()[0]
        raise ModelError(f"shapes do not agree: {first}", where=where) from None


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


def infer_shapes(graph: gs.Graph, *, strict: bool = False, where: str = "graph") -> None:
    """Recompute intermediate shapes and dtypes in place (after binding symbols, say)."""
    model = export_model(graph)
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
        _check_onnx(export_model(graph), where)


def safe_file_name(name: str) -> str:
    """A tensor or graph name made safe to use as a file name (no separators, no dots first)."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    cleaned = cleaned.lstrip(".") or "_"
    return cleaned[:120]
