"""QuantizeLinear / DequantizeLinear (per-tensor, per-axis and blocked; 8/16-bit, 4/2-bit and float8
types) as numpy kernels with ONNX's real = (q - zero_point) * scale convention.

Quantizing divides in float32 (float64 for float64 inputs), rounds half to even, adds the zero point
and saturates to the target range; float8 targets saturate to the largest finite value unless
``saturate=0``.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

from .kernels import SUB_BYTE_INTS, NodeSpec, is_float, onnx_dtype, register

__all__ = ["broadcast_quant_param"]

_FLOAT8 = frozenset(np.dtype(getattr(ml_dtypes, n)) for n in (
    "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz"))


def broadcast_quant_param(p: np.ndarray, shape: tuple, axis: int, block: int) -> np.ndarray:
    """A scale or zero point shaped to broadcast against the tensor it applies to.

    A scalar (or one-element 1-D) parameter is per tensor; a 1-D one runs along ``axis``; with
    ``block`` > 0 it has the tensor's rank and each entry covers ``block`` elements along ``axis``.
    """
    if p.ndim == 0 or p.size == 1 and p.ndim == 1 and block <= 0:
        return p.reshape(())
    axis = axis + len(shape) if axis < 0 else axis
    if not 0 <= axis < len(shape):
        raise ValueError(f"axis {axis} is out of range for rank {len(shape)}")
    if block > 0:
        return np.repeat(p, block, axis=axis)[
            (slice(None),) * axis + (slice(0, shape[axis]),)]
    if p.ndim == 1:
        if p.shape[0] != shape[axis]:
            raise ValueError(f"per-axis parameter has {p.shape[0]} entries but axis {axis} has "
                             f"{shape[axis]}")
        return p.reshape((1,) * axis + (-1,) + (1,) * (len(shape) - axis - 1))
    return p


def _int_range(dtype: np.dtype) -> tuple[int, int]:
    info = ml_dtypes.iinfo(dtype) if dtype in SUB_BYTE_INTS else np.iinfo(dtype)
    return int(info.min), int(info.max)


def _work_dtype(*arrays) -> np.dtype:
    return np.dtype(np.float64) if any(a.dtype == np.float64 for a in arrays) else np.dtype(
        np.float32)


@register("QuantizeLinear", min_version=10)
def _quantize(spec: NodeSpec):
    axis_attr = spec.attr("axis", 1)
    block = spec.attr("block_size", 0)
    saturate = spec.attr("saturate", 1) == 1
    declared = spec.attr("output_dtype", 0)

    def run(x, scale, zero_point=None):
        if zero_point is not None:
            out = zero_point.dtype
        else:
            out = onnx_dtype(declared) if declared else np.dtype(np.uint8)
        axis = axis_attr
        work = _work_dtype(x, scale)
        v = x.astype(work) / broadcast_quant_param(scale, x.shape, axis, block).astype(work)
        zp = None if zero_point is None else broadcast_quant_param(
            zero_point, x.shape, axis, block).astype(work)
        if is_float(out):
            if zp is not None:
                v += zp
            if out in _FLOAT8 and saturate:
                big = float(ml_dtypes.finfo(out).max)
                np.clip(v, -big, big, out=v)
            return v.astype(out)
        np.rint(v, out=v)
        if zp is not None:
            v += zp
        lo, hi = _int_range(out)
        np.clip(v, lo, hi, out=v)
        return v.astype(np.int32).astype(out) if out in SUB_BYTE_INTS else v.astype(out)

    return run


@register("DequantizeLinear", min_version=10)
def _dequantize(spec: NodeSpec):
    axis_attr = spec.attr("axis", 1)
    block = spec.attr("block_size", 0)
    declared = spec.attr("output_dtype", 0)

    def run(x, scale, zero_point=None):
        out = onnx_dtype(declared) if declared else scale.dtype
        axis = axis_attr
        work = np.dtype(np.float64) if out == np.float64 else np.dtype(np.float32)
        if is_float(x.dtype):  # float8 / float4: the zero point must be 0
            dx = x.astype(work)
        else:
            wide = np.int64 if x.dtype in (np.dtype(np.int32), np.dtype(np.uint32)) else np.int32
            dx = x.astype(wide)
            if zero_point is not None:
                dx = dx - broadcast_quant_param(zero_point, x.shape, axis, block).astype(wide)
            dx = dx.astype(work)
        dx *= broadcast_quant_param(scale, x.shape, axis, block).astype(work)
        return dx.astype(out, copy=False)

    return run

