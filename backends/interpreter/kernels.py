"""The kernel registry: ONNX op types mapped to builders that turn one node into a numpy function.

A *builder* runs once per node when an ``Interpreter`` is constructed. It reads the node's
attributes (already parsed into Python values in a ``NodeSpec``) and the op version in effect, and
returns a *kernel*: a plain function taking the node's inputs as numpy arrays (``None`` for an
omitted optional input) and returning one array, or a tuple of arrays for multi-output ops. All
attribute parsing and validation happens in the builder, so a run pays only for the numpy work.

Precision policy (shared by every kernel): an op computes in the dtype the graph gives it and
returns the dtype ONNX declares for it. Kernels registered with ``half_in_float32=True`` compute
16-bit float inputs (float16, bfloat16) in float32 and round each result once to the 16-bit type,
so an fp16 Conv, MatMul, reduction or composite activation accumulates in float32 and rounds once
per op. Single numpy ufuncs (Add, Mul, Exp, ...) already round once per op on fp16, so they run
directly in fp16.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np
import onnx
from onnx import numpy_helper

__all__ = [
    "NodeSpec",
    "Kernel",
    "Builder",
    "register",
    "lookup",
    "supported_op_types",
    "HALF_DTYPES",
    "in_float32",
    "normalize_axis",
    "onnx_dtype",
    "parse_attribute",
    "is_float",
    "SUB_BYTE_INTS",
    "blockwise",
]

Kernel = Callable[..., Any]

#: 16-bit float dtypes whose ops compute in float32 and round once per op.
HALF_DTYPES = frozenset({np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)})
_F32 = np.dtype(np.float32)
#: ml_dtypes floating types (numpy kind "V", so ``dtype.kind == "f"`` misses them).
_ML_FLOATS = frozenset(np.dtype(getattr(ml_dtypes, n)) for n in (
    "bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
    "float8_e8m0fnu", "float4_e2m1fn"))
#: ml_dtypes sub-byte integer types.
SUB_BYTE_INTS = frozenset(np.dtype(getattr(ml_dtypes, n))
                          for n in ("int4", "uint4", "int2", "uint2"))


def is_float(dtype: np.dtype) -> bool:
    """True for numpy floats and the ml_dtypes float types (bfloat16, float8, float4)."""
    return dtype.kind == "f" or dtype in _ML_FLOATS


@dataclasses.dataclass
class NodeSpec:
    """What a builder knows about one node: its attributes, version and arity.

    ``version`` is the ``since_version`` of the op definition the node's opset selects (Split at
    opset 15 has version 13), so builders branch on the definitions they implement.
    """

    name: str
    op_type: str
    version: int
    attrs: dict[str, Any]
    #: input names as written in the node; "" marks an omitted optional input
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    #: outer-scope names the node's subgraphs read (If/Loop/Scan); appended to ``inputs`` so
    #: the engine keeps them alive until the node runs and passes them after the real inputs
    captured: tuple[str, ...] = ()
    #: the default-domain opset of the model (subgraphs are built with it)
    opset: int = 0
    #: builds the executor of one of the node's graph attributes (If/Loop/Scan bodies): graph ->
    #: (nested interpreter, the outer names it reads); the engine gives it, so control-flow kernels
    #: never import the engine that imports them
    body: Callable[[onnx.GraphProto], tuple[Any, list[str]]] | None = dataclasses.field(
        default=None, repr=False, compare=False)

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def has_input(self, index: int) -> bool:
        return index < len(self.inputs) and self.inputs[index] != ""

    def describe(self) -> str:
        return f"node '{self.name}' ({self.op_type})"


Builder = Callable[[NodeSpec], Kernel]


@dataclasses.dataclass(frozen=True)
class _Entry:
    builder: Builder
    min_version: int
    half_in_float32: bool


_BUILDERS: dict[str, _Entry] = {}


def register(*op_types: str, min_version: int = 1, half_in_float32: bool = False):
    """Register a builder for ``op_types`` (default ONNX domain).

    ``min_version`` is the oldest op definition the builder implements; nodes whose opset selects
    an older one are reported as unsupported. ``half_in_float32`` applies the fp16 policy above.
    """

    def deco(builder: Builder) -> Builder:
        for op in op_types:
            if op in _BUILDERS:
                raise RuntimeError(f"interpreter kernel for {op} registered twice")
            _BUILDERS[op] = _Entry(builder, min_version, half_in_float32)
        return builder

    return deco


def lookup(op_type: str) -> _Entry | None:
    """The registry entry for an op type of the default domain, or None."""
    return _BUILDERS.get(op_type)


def supported_op_types() -> frozenset[str]:
    return frozenset(_BUILDERS)


def in_float32(kernel: Kernel) -> Kernel:
    """Wrap ``kernel`` so 16-bit float inputs compute in float32 and float32 results round once."""

    def run(*args):
        half = None
        for a in args:
            dt = getattr(a, "dtype", None)
            if dt is not None and dt in HALF_DTYPES:
                half = dt
                break
        if half is None:
            return kernel(*args)
        res = kernel(*[a.astype(np.float32) if getattr(a, "dtype", None) == half else a
                       for a in args])
        if isinstance(res, tuple):
            return tuple(_round(r, half) for r in res)
        return _round(res, half)

    run.__wrapped__ = kernel
    return run


def _round(value: Any, half: np.dtype) -> Any:
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype == _F32:
        return np.asarray(value).astype(half)
    return value


#: elements per block for composite elementwise kernels: an eighth of the tensor, within
#: [4 Ki, 64 Ki] (temporaries stay small next to the tensor; blocks stay big enough for numpy)
BLOCK_MIN, BLOCK_MAX = 1 << 12, 1 << 16


def blockwise(fn: Callable[[np.ndarray, np.ndarray], None], x: np.ndarray) -> np.ndarray:
    """An elementwise ``fn(block, out)`` applied to ``x`` in flat blocks, writing into ``out``.

    A composite activation (erf, Gelu) makes several full-size temporaries; run per block they
    stay block-sized and cache-resident, so peak memory is input + output and it runs faster.
    ``fn`` gets 1-D C-ordered blocks of ``x`` and the matching slice of the result to fill.
    """
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty(flat.shape, x.dtype)
    block = min(BLOCK_MAX, max(BLOCK_MIN, flat.size // 8))
    for start in range(0, flat.size, block):
        fn(flat[start:start + block], out[start:start + block])
    return out.reshape(x.shape)


def normalize_axis(axis: int, rank: int, spec: NodeSpec | None = None) -> int:
    """Map a possibly negative axis into [0, rank); raise naming the node when out of range."""
    if not -rank <= axis < max(rank, 1):
        where = f"{spec.describe()}: " if spec else ""
        raise ValueError(f"{where}axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def onnx_dtype(elem_type: int) -> np.dtype:
    """The numpy dtype for an ONNX element type (ml_dtypes types for bfloat16, float8, int4...)."""
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))


def parse_attribute(attr: onnx.AttributeProto) -> Any:
    """An attribute as a Python value: ints, floats, str, lists, or numpy arrays for tensors."""
    A = onnx.AttributeProto
    t = attr.type
    if t == A.INT:
        return int(attr.i)
    if t == A.FLOAT:
        return float(attr.f)
    if t == A.STRING:
        return attr.s.decode("utf-8")
    if t == A.INTS:
        return [int(v) for v in attr.ints]
    if t == A.FLOATS:
        return [float(v) for v in attr.floats]
    if t == A.STRINGS:
        return [s.decode("utf-8") for s in attr.strings]
    if t == A.TENSOR:
        return numpy_helper.to_array(attr.t)
    if t == A.TENSORS:
        return [numpy_helper.to_array(v) for v in attr.tensors]
    if t == A.GRAPH:
        return attr.g
    if t == A.GRAPHS:
        return list(attr.graphs)
    if t == A.SPARSE_TENSOR:
        return attr.sparse_tensor
    return onnx.helper.get_attribute_value(attr)
