"""The integer pattern of a tensor step: DQ(x), DQ(w)[, DQ(b)] -> Conv/ConvTranspose/Gemm/MatMul
[-> Relu/Clip] -> Q(y), the QDQ form a quantizer writes, recognised as what the integer kernel
needs (``IntPattern``): 8-bit operands with constant scales and zero points (per-tensor for the
activation and output, per output channel for the weight), an int32 bias in units of
``x_scale * w_scale`` (rescaled when the model's is not), and the activation as bounds on the
output's grid. Anything else returns None and the step runs in float (see ``numerics``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ..transposed import weight_channel_axis
from .lowered import IntPattern, Lowered, TensorInfo
from .ops import ALIAS_OPS, attrs

__all__ = ["int_pattern", "dq_of"]

_EIGHT_BIT = (np.dtype(np.int8), np.dtype(np.uint8))

#: (scale as float64, zero point as int64, axis) of a Q/DQ node
QParams = tuple[np.ndarray, np.ndarray, int]


@dataclass
class _Operands:
    """The quantized operands around a tensor op: its DQ inputs, its Q output, their params."""

    dq_x: onnx.NodeProto
    dq_w: onnx.NodeProto
    x: QParams
    w: QParams
    y: QParams
    w_info: TensorInfo
    y_info: TensorInfo


def int_pattern(low: Lowered, members: list[int]) -> IntPattern | None:
    """The integer form of a tensor step, or None (then it runs in float, see numerics)."""
    fused = _fused_nodes(low, members)
    if fused is None:
        return None
    main, act, quant = fused
    ops = _operands(low, main, quant)
    if ops is None:
        return None
    out = low.tensors[main.output[0]]
    n = out.shape[1] if main.op_type in ("Conv", "ConvTranspose") else out.shape[-1]
    weights = _weight_params(low, main, ops, n)
    if weights is None:
        return None
    ws, wz = weights
    xs, xz, _ = ops.x
    bias = _bias(low, main, float(xs.reshape(-1)[0]) * ws, n)
    if bias is None:
        return None
    act_lo = act_hi = None
    if act is not None:
        bounds = _act_range(low, act, ops.y, ops.y_info.dtype)
        if bounds is None:
            return None
        act_lo, act_hi = bounds
    ys, yz, _ = ops.y
    return IntPattern(main=members[0], quant=members[2] if act is not None else members[1],
                      x=ops.dq_x.input[0], x_shape=low.tensors[main.input[0]].shape,
                      w_shape=low.tensors[main.input[1]].shape,
                      act=act.op_type if act is not None else None,
                      act_lo=act_lo, act_hi=act_hi,
                      x_scale=float(xs.reshape(-1)[0]), x_zero=int(xz.reshape(-1)[0]),
                      w=ops.dq_w.input[0], w_scale=np.asarray(ws, np.float64),
                      w_zero=np.asarray(wz, np.int64), bias=bias[0], y=quant.output[0],
                      y_scale=float(ys.reshape(-1)[0]), y_zero=int(yz.reshape(-1)[0]),
                      y_dtype=ops.y_info.dtype, bias_rescaled=bias[1])


def _fused_nodes(low: Lowered, members: list[int]
                 ) -> tuple[onnx.NodeProto, onnx.NodeProto | None, onnx.NodeProto] | None:
    """(op, Relu/Clip or None, QuantizeLinear) when the step's nodes have the pattern's form."""
    nodes = low.nodes
    main = nodes[members[0]]
    if len(members) > 2 and nodes[members[1]].op_type in ("Relu", "Clip") and \
            nodes[members[2]].op_type == "QuantizeLinear":
        act, quant = nodes[members[1]], nodes[members[2]]
    elif len(members) > 1 and nodes[members[1]].op_type == "QuantizeLinear":
        act, quant = None, nodes[members[1]]
    else:
        return None
    a = attrs(main)
    if main.op_type == "Gemm" and (a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0
                                   or a.get("transA", 0)):
        return None
    return main, act, quant


def _operands(low: Lowered, main: onnx.NodeProto, quant: onnx.NodeProto) -> _Operands | None:
    """The DQ nodes feeding the op's data and weight and the Q params, when all are 8-bit with
    constant parameters (per-tensor for the data and the output)."""
    dq_x, dq_w = dq_of(low, main.input[0]), dq_of(low, main.input[1])
    if dq_x is None or dq_w is None:
        return None
    px, pw, py = _qparams(low, dq_x), _qparams(low, dq_w), _qparams(low, quant)
    if px is None or pw is None or py is None:
        return None
    if px[0].size != 1 or py[0].size != 1:
        return None
    x_info, w_info = low.tensors.get(dq_x.input[0]), low.tensors.get(dq_w.input[0])
    y_info = low.tensors.get(quant.output[0])
    if x_info is None or w_info is None or y_info is None:
        return None
    if x_info.dtype not in _EIGHT_BIT or w_info.dtype not in _EIGHT_BIT or \
            y_info.dtype not in _EIGHT_BIT:
        return None
    return _Operands(dq_x, dq_w, px, pw, py, w_info, y_info)


def _weight_params(low: Lowered, main: onnx.NodeProto, ops: _Operands, n: int
                   ) -> tuple[np.ndarray, np.ndarray] | None:
    """The weight's scale and zero point per output channel (``n`` of them), or None when its
    quantization axis is not the op's output-channel axis."""
    a = attrs(main)
    pw, w_info = ops.w, ops.w_info
    w_rank = len(w_info.shape)
    if main.op_type == "ConvTranspose":
        if int(a.get("group", 1)) != 1 and pw[0].size > 1:
            return None  # per-channel scales of a grouped transposed weight: run in float
        ch_axis = weight_channel_axis()
    elif main.op_type == "Conv":
        ch_axis = 0
    elif main.op_type == "Gemm":
        ch_axis = 0 if a.get("transB", 0) else 1
    else:
        ch_axis = w_rank - 1
    if pw[0].size > 1 and w_info.shape != low.tensors[main.input[1]].shape:
        return None  # a per-channel axis behind a reshape
    ws = _per_channel(pw[0], pw[2], ch_axis, w_rank, n)
    wz = _per_channel(pw[1], pw[2], ch_axis, w_rank, n)
    if ws is None or wz is None:
        return None
    if main.op_type == "MatMul" and w_info.kind != "weight" and (ws.min() != ws.max()
                                                                 or wz.min() != wz.max()):
        return None
    return ws, wz


def _bias(low: Lowered, main: onnx.NodeProto, unit: np.ndarray, n: int
          ) -> tuple[np.ndarray | None, bool] | None:
    """(int32 bias in units of ``unit`` = x_scale * w_scale, whether it was rescaled); (None,
    False) without a bias; None when the bias is not a constant DQ of the right length."""
    if len(main.input) <= 2 or not main.input[2]:
        return None, False
    dq_b = dq_of(low, main.input[2])
    b_raw = low.constants.get(dq_b.input[0]) if dq_b is not None else None
    pb = _qparams(low, dq_b) if dq_b is not None else None
    if b_raw is None or pb is None or b_raw.ndim != 1 or b_raw.size not in (1, n):
        return None
    bs = _per_channel(pb[0], pb[2], 0, 1, n)
    bz = _per_channel(pb[1], pb[2], 0, 1, n)
    if bs is None or bz is None:
        return None
    raw = np.broadcast_to(b_raw.astype(np.int64), (n,))
    if b_raw.dtype == np.int32 and np.all(bz == 0) and np.allclose(bs, unit, rtol=1e-6, atol=0):
        return raw.copy(), False
    real = (raw - bz) * bs
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.rint(np.where(unit > 0, real / unit, 0.0)).astype(np.int64), True


def _act_range(low: Lowered, act: onnx.NodeProto, py: QParams, y_dtype: np.dtype
               ) -> tuple[int, int] | None:
    """A Relu/Clip as (low, high) bounds on the quantized output's grid."""
    bounds = _act_bounds(low, act)
    if bounds is None:
        return None
    ys, yz = float(py[0].reshape(-1)[0]), int(py[1].reshape(-1)[0])
    info = np.iinfo(y_dtype)
    lo, hi = bounds
    act_lo = info.min if lo is None else int(np.clip(np.rint(lo / ys) + yz, info.min, info.max))
    act_hi = info.max if hi is None else int(np.clip(np.rint(hi / ys) + yz, info.min, info.max))
    return act_lo, act_hi


def dq_of(low: Lowered, name: str) -> onnx.NodeProto | None:
    """The DequantizeLinear behind ``name``, looking through reshapes (which only relabel the
    dims of a tensor in memory order, so the integer tensor can be reshaped instead)."""
    p = low.producer.get(name)
    while p is not None and low.nodes[p].op_type in ALIAS_OPS:
        p = low.producer.get(low.nodes[p].input[0])
    if p is None or low.nodes[p].op_type != "DequantizeLinear":
        return None
    return low.nodes[p]


def _qparams(low: Lowered, node: onnx.NodeProto) -> QParams | None:
    """(scale, zero point, axis) of a Q/DQ node with constant parameters and no blocking."""
    a = attrs(node)
    if a.get("block_size", 0):
        return None
    scale = low.constants.get(node.input[1]) if node.input[1] else None
    if scale is None:
        return None
    zp_name = node.input[2] if len(node.input) > 2 else ""
    zero = low.constants.get(zp_name) if zp_name else None
    if zp_name and zero is None:
        return None
    if zero is None:
        zero = np.zeros(scale.shape, np.uint8 if node.op_type == "QuantizeLinear" else np.int32)
    return scale.astype(np.float64), zero.astype(np.int64), int(a.get("axis", 1))


def _per_channel(values: np.ndarray, axis: int, expected_axis: int, rank: int, n: int
                 ) -> np.ndarray | None:
    """``values`` as ``n`` per-channel values: a scalar broadcast, or a 1-D array along the
    expected axis; None otherwise."""
    if values.size == 1:
        return np.full(n, float(values.reshape(-1)[0])) if values.dtype.kind == "f" else \
            np.full(n, int(values.reshape(-1)[0]), np.int64)
    if values.ndim != 1 or values.size != n or (axis % rank) != expected_axis:
        return None
    return values


def _act_bounds(low: Lowered, node: onnx.NodeProto) -> tuple[float | None, float | None] | None:
    """The real-valued (low, high) bounds of a Relu or a Clip with constant bounds."""
    if node.op_type == "Relu":
        return 0.0, None
    a = attrs(node)
    lo, hi = a.get("min"), a.get("max")
    for idx in (1, 2):
        if len(node.input) > idx and node.input[idx]:
            value = low.constants.get(node.input[idx])
            if value is None or value.size != 1:
                return None
            if idx == 1:
                lo = float(value.reshape(-1)[0])
            else:
                hi = float(value.reshape(-1)[0])
    return lo, hi
