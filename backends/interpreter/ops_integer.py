"""Integer and quantized-linear ONNX ops (MatMulInteger, ConvInteger, DynamicQuantizeLinear,
QLinearMatMul, QLinearConv) as numpy kernels: the models onnxruntime's dynamic quantization and
older exporters write.

Integer products accumulate exactly: zero points are subtracted in int32 and products summed in
float64 (exact for 8-bit operands up to 2^53 / 2^16 terms) before the int32 result. The QLinear ops
requantize acc * (a_scale * b_scale / y_scale) in float64, round half to even, add the output zero
point and saturate, as onnxruntime's reference path does.
"""

from __future__ import annotations

import numpy as np

from .kernels import NodeSpec, register
from .ops_conv import _conv_op  # the float Conv kernel, reused on exact float64 integers

__all__: list[str] = []  # kernels register themselves


def _centered(x: np.ndarray, zp: np.ndarray | None, zp_axis: int | None = None) -> np.ndarray:
    """``x - zp`` as float64; a 1-D zero point runs along ``zp_axis`` of ``x``."""
    v = x.astype(np.float64)
    if zp is None:
        return v
    z = np.asarray(zp).astype(np.float64)
    if z.ndim == 1 and z.size > 1 and zp_axis is not None:
        shape = [1] * x.ndim
        shape[zp_axis] = -1
        z = z.reshape(shape)
    elif z.size == 1:
        z = z.reshape(())
    return v - z


def _saturate(v: np.ndarray, dtype: np.dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.rint(v), info.min, info.max).astype(dtype)


def _matmul_centered(a, a_zp, b, b_zp) -> np.ndarray:
    # a's zero point runs along its rows (axis -2), b's along its columns (last axis)
    ac = _centered(a, a_zp, a.ndim - 2 if a.ndim >= 2 else None)
    bc = _centered(b, b_zp, b.ndim - 1)
    return np.matmul(ac, bc)


@register("MatMulInteger", min_version=10)
def _matmul_integer(spec: NodeSpec):
    def run(a, b, a_zp=None, b_zp=None):
        return _matmul_centered(a, a_zp, b, b_zp).astype(np.int32)

    return run


def _float_conv(spec: NodeSpec):
    """The Conv kernel for this node's attributes (the QLinear/Integer attrs are Conv's)."""
    return _conv_op(NodeSpec(name=spec.name, op_type="Conv", version=11, attrs=spec.attrs,
                             inputs=spec.inputs[:2], outputs=spec.outputs))


@register("ConvInteger", min_version=10)
def _conv_integer(spec: NodeSpec):
    conv = _float_conv(spec)

    def run(x, w, x_zp=None, w_zp=None):
        # padding after centering pads with the zero point, as ONNX says
        return conv(_centered(x, x_zp), _centered(w, w_zp, 0)).astype(np.int32)

    return run


@register("DynamicQuantizeLinear", min_version=11)
def _dynamic_quantize(spec: NodeSpec):
    def run(x):
        x32 = x.astype(np.float32)
        lo = min(0.0, float(x32.min())) if x32.size else 0.0
        hi = max(0.0, float(x32.max())) if x32.size else 0.0
        scale = np.float32((hi - lo) / 255.0)
        if scale == 0:  # all zeros: scale 1 (never 0), as onnxruntime does
            return np.zeros(x.shape, np.uint8), np.array(1.0, np.float32), np.array(0, np.uint8)
        zp = np.uint8(np.clip(np.rint(np.float32(0 - lo) / scale), 0, 255))
        y = np.clip(np.rint(x32 / scale) + np.float32(zp), 0, 255).astype(np.uint8)
        return y, np.asarray(scale, np.float32), np.asarray(zp, np.uint8)

    return run


def _requantize(acc: np.ndarray, a_scale, b_scale, y_scale, y_zp, b_axis: int) -> np.ndarray:
    bs = np.asarray(b_scale).astype(np.float64)
    if bs.ndim == 1 and bs.size > 1:
        shape = [1] * acc.ndim
        shape[b_axis] = -1
        bs = bs.reshape(shape)
    else:
        bs = bs.reshape(())
    ys = np.asarray(y_scale).astype(np.float64).reshape(())
    v = acc * (np.asarray(a_scale).astype(np.float64).reshape(()) * bs / ys)
    zp_dtype = np.dtype(np.uint8) if y_zp is None else np.asarray(y_zp).dtype
    zp = 0.0 if y_zp is None else float(np.asarray(y_zp).reshape(-1)[0])
    return _saturate(np.rint(v) + zp, zp_dtype)


@register("QLinearMatMul", min_version=10)
def _qlinear_matmul(spec: NodeSpec):
    def run(a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp):
        acc = _matmul_centered(a, a_zp, b, b_zp)
        return _requantize(acc, a_scale, b_scale, y_scale, y_zp, acc.ndim - 1)

    return run


@register("QLinearConv", min_version=10)
def _qlinear_conv(spec: NodeSpec):
    conv = _float_conv(spec)

    def run(x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, b=None):
        acc = conv(_centered(x, x_zp), _centered(w, w_zp, 0))
        if b is not None:
            acc = acc + b.astype(np.float64).reshape((1, -1) + (1,) * (acc.ndim - 2))
        return _requantize(acc, x_scale, w_scale, y_scale, y_zp, 1)

    return run
