"""What lowering produces: the tensor table (``TensorInfo``), the fused steps (``Step``, with the
integer kernel's parameters in ``IntPattern``) and the lowered graph (``Lowered``) that the
planner and the runner read; with the two range helpers they share."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

__all__ = ["TensorInfo", "IntPattern", "Step", "Lowered", "ceil_div", "pieces_of"]


@dataclass
class TensorInfo:
    """A tensor as the planner sees it: static shape, dtype, bytes and where it comes from."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    kind: str  # "input", "weight" or "activation"

    @functools.cached_property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @functools.cached_property
    def size(self) -> int:
        return math.prod(self.shape)  # the planner asks often: no numpy call per question


@dataclass
class IntPattern:
    """DQ(x), DQ(w)[, DQ(b)] -> Conv/Gemm/MatMul -> Q(y): what the integer kernel needs."""

    main: int          # node index of the Conv/Gemm/MatMul
    quant: int         # node index of the QuantizeLinear
    x: str             # int8/uint8 activation
    x_scale: float
    x_zero: int
    w: str             # int8/uint8 weight (initializer) or activation (MatMul)
    w_scale: np.ndarray  # per output channel (broadcast to N)
    w_zero: np.ndarray
    bias: np.ndarray | None  # int32 per output channel, in units of x_scale * w_scale
    y: str             # QuantizeLinear output
    y_scale: float
    y_zero: int
    y_dtype: np.dtype
    bias_rescaled: bool = False
    #: shapes the op reads (the integer tensors are reshaped to them, see ``integer.dq_of``)
    x_shape: tuple[int, ...] = ()
    w_shape: tuple[int, ...] = ()
    #: a Relu/Clip between the op and its QuantizeLinear, as bounds on the quantized output
    act: str | None = None
    act_lo: int | None = None
    act_hi: int | None = None

    @property
    def consumed(self) -> int:
        """How many of the step's nodes the integer kernel computes (op, activation, Q)."""
        return 3 if self.act else 2


@dataclass
class Step:
    """One fused unit of work, in schedule order."""

    index: int
    name: str
    op: str
    kind: str                 # "tensor", "vector" or "copy"
    precision: str            # "int8", "fp16" or "fp32"
    nodes: list[int]          # node indices run by this step, in order
    inputs: list[str]         # activation buffers read (behind virtual nodes)
    weights: list[str]        # initializers read (behind virtual nodes)
    outputs: list[str]        # buffers written
    macs: int = 0             # tensor-unit MACs (whole batch)
    vector_ops: int = 0       # vector-unit MAC-equivalents (whole batch)
    geometry: dict[str, Any] = field(default_factory=dict)
    fused: list[str] = field(default_factory=list)
    integer: IntPattern | None = None
    #: every raw tensor name the step's nodes (and the virtual nodes behind them) read
    reads: set[str] = field(default_factory=set)


@dataclass
class Lowered:
    """A graph lowered to steps, with the tensor table and the maps execution needs."""

    model: onnx.ModelProto
    nodes: list[onnx.NodeProto]
    tensors: dict[str, TensorInfo]
    constants: dict[str, np.ndarray]
    producer: dict[str, int]
    consumers: dict[str, list[int]]
    inputs: list[str]
    outputs: list[str]
    steps: list[Step]
    virtual: set[int]
    batch: int                # dim 0 shared by every activation (0: none)
    batch_separable: bool     # whether the graph can be split over dim 0

    def resolve(self, name: str) -> str:
        """The tensor behind ``name``, looking through virtual nodes (DQ, reshapes)."""
        seen = 0
        while name in self.producer and self.producer[name] in self.virtual and seen < 10_000:
            name = self.nodes[self.producer[name]].input[0]
            seen += 1
        return name


def ceil_div(a: int, b: int) -> int:
    """``a / b`` rounded up (integers)."""
    return -(-a // b)


def pieces_of(dim: int, pieces: int) -> list[tuple[int, int]]:
    """``dim`` cut into ``pieces`` near-equal, contiguous ranges (fewer if dim is smaller)."""
    pieces = max(1, min(pieces, dim))
    size = ceil_div(dim, pieces)
    return [(s, min(dim, s + size)) for s in range(0, dim, size)]

