"""Dense and normalization ONNX ops (MatMul, Gemm, Einsum, BatchNormalization, LayerNormalization,
Softmax, LogSoftmax) as numpy kernels built on BLAS-backed matmul."""

from __future__ import annotations

import numpy as np

from .kernels import NodeSpec, normalize_axis, register

__all__: list[str] = []  # kernels register themselves


@register("MatMul", half_in_float32=True)
def _matmul(spec: NodeSpec):
    return np.matmul


@register("Gemm", min_version=7, half_in_float32=True)
def _gemm(spec: NodeSpec):
    alpha = spec.attr("alpha", 1.0)
    beta = spec.attr("beta", 1.0)
    trans_a = spec.attr("transA", 0)
    trans_b = spec.attr("transB", 0)

    def run(a, b, c=None):
        y = np.matmul(a.T if trans_a else a, b.T if trans_b else b)
        if alpha != 1.0:
            y = _scaled(y, alpha)
        if c is not None and beta != 0.0:
            y += c if beta == 1.0 else _scaled(c, beta)
        return y

    return run


def _scaled(x: np.ndarray, factor: float) -> np.ndarray:
    if x.dtype.kind == "f":
        return x * x.dtype.type(factor)
    return (x * factor).astype(x.dtype)


@register("Einsum", half_in_float32=True)
def _einsum(spec: NodeSpec):
    equation = spec.attr("equation").replace(" ", "")

    def run(*xs):
        y = np.einsum(equation, *xs, optimize=len(xs) > 2)
        return np.asarray(y, dtype=xs[0].dtype)

    return run


@register("BatchNormalization", min_version=9, half_in_float32=True)
def _batch_norm(spec: NodeSpec):
    eps = spec.attr("epsilon", 1e-5)
    momentum = spec.attr("momentum", 0.9)
    training = bool(spec.attr("training_mode", 0)) and spec.version >= 14

    def channel(v, rank):
        return v.reshape((1, -1) + (1,) * (rank - 2))

    def run(x, scale, bias, mean, var):
        if training:
            axes = (0,) + tuple(range(2, x.ndim))
            cur_mean = x.mean(axis=axes)
            cur_var = x.var(axis=axes)
            mul = scale / np.sqrt(cur_var + eps)
            add = bias - cur_mean * mul
        else:
            mul = scale / np.sqrt(var + eps)
            add = bias - mean * mul
        y = x * channel(mul.astype(x.dtype, copy=False), x.ndim)
        y += channel(add.astype(x.dtype, copy=False), x.ndim)
        if not training:
            return y
        run_mean = (mean * momentum + cur_mean * (1 - momentum)).astype(mean.dtype, copy=False)
        run_var = (var * momentum + cur_var * (1 - momentum)).astype(var.dtype, copy=False)
        return y, run_mean, run_var

    return run


@register("LayerNormalization", min_version=17)
def _layer_norm(spec: NodeSpec):
    axis_attr = spec.attr("axis", -1)
    eps = spec.attr("epsilon", 1e-5)
    stash = np.float64 if spec.attr("stash_type", 1) == 11 else np.float32

    def run(x, scale, bias=None):
        axis = normalize_axis(axis_attr, x.ndim, spec)
        stats_shape = x.shape[:axis] + (1,) * (x.ndim - axis)
        cols = int(np.prod(x.shape[axis:], dtype=np.int64))
        work = np.float64 if x.dtype == np.float64 else stash
        rows2d = x.astype(work, copy=False).reshape(-1, cols)
        mean = rows2d.mean(axis=1, keepdims=True)
        d = rows2d - mean
        # sum of squares without a full-size temporary
        var = np.einsum("ij,ij->i", d, d)[:, None] / cols if cols else np.zeros_like(mean)
        inv_std = np.reciprocal(np.sqrt(var + eps))
        d *= inv_std
        y = d.reshape(x.shape)
        y *= scale
        if bias is not None:
            y += bias
        return (y.astype(x.dtype, copy=False), mean.reshape(stats_shape).astype(stash, copy=False),
                inv_std.reshape(stats_shape).astype(stash, copy=False))

    return run


@register("Softmax", "LogSoftmax", half_in_float32=True)
def _softmax(spec: NodeSpec):
    log = spec.op_type == "LogSoftmax"
    legacy = spec.version < 13  # before 13: coerce to 2-D at `axis` (default 1)
    axis_attr = spec.attr("axis", 1 if legacy else -1)

    def along(x, axis):
        y = x - x.max(axis=axis, keepdims=True)
        if log:
            y -= np.log(np.exp(y).sum(axis=axis, keepdims=True))
            return y
        np.exp(y, out=y)
        y /= y.sum(axis=axis, keepdims=True)
        return y

    def run(x):
        axis = normalize_axis(axis_attr, x.ndim, spec)
        if not legacy:
            return along(x, axis)
        rows = int(np.prod(x.shape[:axis], dtype=np.int64))
        return along(x.reshape(rows, -1), 1).reshape(x.shape)

    return run
