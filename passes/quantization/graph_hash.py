"""The hash a calibration profile carries: a graph (or a Program) in, a sha256 of what decides
its activation statistics out, so that a profile made for another graph is refused."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from aicc.program import Program

__all__ = ["graph_hash", "program_hash"]


def _dtype_text(t: Any) -> str:
    dtype = getattr(t, "dtype", None)
    try:
        return np.dtype(dtype).name if dtype is not None else "?"
    except TypeError:
        return str(dtype)


def _value_bytes(v: Any) -> bytes:
    """A canonical byte form of an attribute value (graphsurgeon's Python form)."""
    if isinstance(v, gs.Constant):
        arr = np.asarray(v.values)
        return b"T" + f"{arr.dtype}{list(arr.shape)}".encode() + np.ascontiguousarray(arr).tobytes()
    if isinstance(v, gs.Graph):
        return b"G" + graph_hash(v).encode()
    if isinstance(v, np.ndarray):
        return b"A" + f"{v.dtype}{list(v.shape)}".encode() + np.ascontiguousarray(v).tobytes()
    if isinstance(v, (list, tuple)):
        return b"[" + b",".join(_value_bytes(x) for x in v) + b"]"
    if isinstance(v, bool):
        return b"b1" if v else b"b0"
    if isinstance(v, (int, np.integer)):
        return b"i" + str(int(v)).encode()
    if isinstance(v, (float, np.floating)):
        return b"f" + float(v).hex().encode()
    if isinstance(v, str):
        return b"s" + v.encode()
    if isinstance(v, bytes):
        return b"y" + v
    return b"r" + repr(v).encode()


def graph_hash(graph: gs.Graph) -> str:
    """sha256 of what decides a graph's activation statistics, in a fixed order.

    Covered: graph input and output names and element types; every node's op type, domain,
    attributes, input and output tensor names, in graph order; every initializer's name and
    element type, and the *values* of floating-point initializers (the weights: a retrained model
    of the same architecture has other activation ranges, so its profile is refused too).
    Not covered: shapes and integer initializer values (binding a batch size or specializing
    changes those without changing a tensor's value distribution), node names (renamed freely on
    import) and metadata. So the same model, through the same passes, always hashes the same.
    Computed on the graph itself (no export), one weight at a time.
    """
    h = hashlib.sha256(b"aicc-graph-hash-v2\0")
    for label, tensors in ((b"|inputs|", graph.inputs), (b"|outputs|", graph.outputs)):
        h.update(label)
        for t in tensors:
            h.update(t.name.encode() + b"\0" + _dtype_text(t).encode() + b";")
    h.update(b"|nodes|")
    constants: dict[str, gs.Constant] = {}
    for node in graph.nodes:
        h.update(f"{node.domain or ''}::{node.op}(".encode())
        h.update("\0".join(t.name for t in node.inputs).encode() + b")->(")
        h.update("\0".join(t.name for t in node.outputs).encode() + b")")
        for key in sorted(node.attrs):
            h.update(key.encode() + b"=" + _value_bytes(node.attrs[key]) + b"\0")
        h.update(b";")
        for t in node.inputs:
            if isinstance(t, gs.Constant) and t.name:
                constants.setdefault(t.name, t)
    h.update(b"|initializers|")
    for name in sorted(constants):
        t = constants[name]
        kind = _dtype_text(t)
        h.update(name.encode() + b"\0" + kind.encode() + b":")
        if kind in ("float16", "float32", "float64", "bfloat16"):
            h.update(np.ascontiguousarray(np.asarray(t.values)).tobytes())
        h.update(b";")
    return h.hexdigest()


def program_hash(program: Program) -> str:
    """The hash a profile of ``program`` carries: ``graph_hash`` of its graph, or, with several
    specializations, sha256 of their distinct graph hashes in sorted order."""
    hashes = sorted({graph_hash(g) for g in program.graphs.values()})
    if len(hashes) == 1:
        return hashes[0]
    return hashlib.sha256(("aicc-program-hash-v1\0" + "\0".join(hashes)).encode()).hexdigest()
