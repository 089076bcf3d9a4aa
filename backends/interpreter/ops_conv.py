"""Convolution and pooling ONNX ops (Conv, ConvTranspose, MaxPool, AveragePool, GlobalAveragePool,
GlobalMaxPool) as vectorized numpy kernels over strided window views.

Conv is one matmul per chunk of output rows over an im2col matrix copied from a strided view of the
padded input; groups are a batched matmul, depthwise convs a sum over kernel taps of broadcast
multiplies, 1x1 convs a plain matmul. Python loops run only over chunks and kernel taps, never over
channels or pixels. The im2col buffer is bounded by the conv's own input, output and weight
bytes (see _MIN_COLUMNS), so memory follows the live tensors.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from aicc.conv_geometry import conv_geometry, pool_geometry

from .kernels import NodeSpec, register

__all__ = ["conv_geometry", "pool_geometry"]  # re-exported from aicc.conv_geometry

# im2col chunk size: at most half the conv's input + output + weight bytes, except that a chunk
# may grow to 1024 columns (an efficient GEMM) as long as it stays below that sum. Small chunks
# re-stream the weights once per chunk, so deep layers with big weights take few chunks.
_MIN_COLUMNS = 1024
_COLUMN_BUDGET_FRACTION = 0.5


def _ints(values, n: int, default: int) -> tuple[int, ...]:
    return tuple(int(v) for v in values) if values else (default,) * n


def _pad(x: np.ndarray, begin, end, value) -> np.ndarray:
    """``x`` with its spatial dims padded by ``begin``/``end`` (non-negative) with ``value``."""
    if not any(begin) and not any(end):
        return x
    shape = x.shape[:2] + tuple(s + b + e for s, b, e in zip(x.shape[2:], begin, end))
    out = np.full(shape, value, dtype=x.dtype)
    inner = (slice(None), slice(None)) + tuple(slice(b, b + s) for b, s in zip(begin, x.shape[2:]))
    out[inner] = x
    return out


def _windows(xp: np.ndarray, kernel, strides, dilations, out) -> np.ndarray:
    """Read-only view (N, C, *out, *kernel) of the sliding windows of a padded input."""
    st = xp.strides
    nd = len(kernel)
    shape = xp.shape[:2] + tuple(out) + tuple(kernel)
    strides_ = (st[0], st[1]) + tuple(st[2 + i] * strides[i] for i in range(nd)) + tuple(
        st[2 + i] * dilations[i] for i in range(nd))
    return as_strided(xp, shape, strides_, writeable=False)


def _tap(xp: np.ndarray, offset, strides, dilations, out) -> np.ndarray:
    """View (N, C, *out) of the input pixels that kernel tap ``offset`` sees."""
    idx = (slice(None), slice(None)) + tuple(
        slice(o * d, o * d + (n - 1) * s + 1, s)
        for o, d, n, s in zip(offset, dilations, out, strides))
    return xp[idx]


def _conv(x, w, strides, dilations, begin, end, out, group):
    n, c = x.shape[:2]
    m = w.shape[0]
    kernel = w.shape[2:]
    nd = len(kernel)
    cg, mg = c // group, m // group
    k = math.prod(kernel)
    p = math.prod(out)
    dtype = np.result_type(x, w)
    if all(v == 1 for v in kernel) and all(s == 1 for s in strides) and not any(begin + end):
        y = np.matmul(w.reshape(group, mg, cg), x.reshape(n, group, cg, p))
        return y.reshape((n, m) + tuple(out))
    xp = _pad(x, begin, end, 0)
    if cg == 1 and group > 1:  # depthwise (channel multiplier mg)
        wr = w.reshape(group, mg, k).astype(dtype, copy=False)
        y = np.zeros((n, group, mg) + tuple(out), dtype=dtype)
        tmp = np.empty_like(y)
        bshape = (1, group, mg) + (1,) * nd
        for t, offset in enumerate(itertools.product(*(range(v) for v in kernel))):
            view = _tap(xp, offset, strides, dilations, out).reshape((n, group, 1) + tuple(out))
            np.multiply(view, wr[:, :, t].reshape(bshape), out=tmp)
            y += tmp
        return y.reshape((n, m) + tuple(out))
    view = _windows(xp, kernel, strides, dilations, out)
    perm = (0, 1) + tuple(range(2 + nd, 2 + 2 * nd)) + tuple(range(2, 2 + nd))
    wr = w.reshape(group, mg, cg * k)
    y = np.empty((n, group, mg, p), dtype=dtype)
    rest = p // out[0] if out[0] else 0
    row_bytes = n * c * k * max(rest, 1) * dtype.itemsize
    io_bytes = x.nbytes + y.nbytes + w.nbytes
    budget = max(int(io_bytes * _COLUMN_BUDGET_FRACTION),
                 min(io_bytes, n * c * k * dtype.itemsize * min(p, _MIN_COLUMNS)))
    rows = max(1, budget // row_bytes)
    for r0 in range(0, out[0], rows):
        r1 = min(out[0], r0 + rows)
        cols = np.ascontiguousarray(view[:, :, r0:r1].transpose(perm))
        cols = cols.reshape(n, group, cg * k, (r1 - r0) * rest)
        np.matmul(wr, cols, out=y[..., r0 * rest:r1 * rest])
    return y.reshape((n, m) + tuple(out))


def _bias_shape(b: np.ndarray, nd: int) -> np.ndarray:
    return b.reshape((1, -1) + (1,) * nd)


@register("Conv", half_in_float32=True)
def _conv_op(spec: NodeSpec):
    auto_pad = spec.attr("auto_pad", "NOTSET")
    group = spec.attr("group", 1)
    pads = spec.attr("pads")
    cache: dict[tuple, tuple] = {}

    def run(x, w, b=None):
        key = (x.shape, w.shape)
        geo = cache.get(key)
        if geo is None:
            nd = x.ndim - 2
            if x.shape[1] != w.shape[1] * group:
                raise ValueError(f"input has {x.shape[1]} channels but the weight expects "
                                 f"{w.shape[1]} x group {group}")
            strides = _ints(spec.attr("strides"), nd, 1)
            dilations = _ints(spec.attr("dilations"), nd, 1)
            kernel = tuple(w.shape[2:])
            geo = (strides, dilations) + conv_geometry(x.shape[2:], kernel, strides, dilations,
                                                       pads, auto_pad)
            cache[key] = geo
        strides, dilations, begin, end, out = geo
        y = _conv(x, w, strides, dilations, begin, end, out, group)
        if b is not None:
            y += _bias_shape(b, len(out))
        return y

    return run


@register("ConvTranspose", half_in_float32=True)
def _conv_transpose(spec: NodeSpec):
    auto_pad = spec.attr("auto_pad", "NOTSET")
    group = spec.attr("group", 1)

    def run(x, w, b=None):
        n, c = x.shape[:2]
        in_sp = x.shape[2:]
        nd = len(in_sp)
        kernel = w.shape[2:]
        mg = w.shape[1]
        m, cg = mg * group, c // group
        strides = _ints(spec.attr("strides"), nd, 1)
        dilations = _ints(spec.attr("dilations"), nd, 1)
        out_pad = _ints(spec.attr("output_padding"), nd, 0)
        pads = spec.attr("pads")
        out_shape = spec.attr("output_shape")
        full = [(in_sp[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 for i in range(nd)]
        if out_shape or (auto_pad in ("SAME_UPPER", "SAME_LOWER") and not pads):
            target = (list(out_shape)[-nd:] if out_shape
                      else [in_sp[i] * strides[i] for i in range(nd)])
            begin = []
            for i in range(nd):
                total = full[i] + out_pad[i] - target[i]
                small = total // 2
                begin.append(small if auto_pad == "SAME_UPPER" else total - small)
        else:
            pads = pads or [0] * (2 * nd)
            begin = pads[:nd]
            target = [full[i] + out_pad[i] - pads[i] - pads[nd + i] for i in range(nd)]
        # columns: (N, G, Mg*K, P_in) = W^T X per group; then scatter-add each kernel tap
        k = math.prod(kernel)
        wt = w.reshape(group, cg, mg * k).transpose(0, 2, 1)
        cols = np.matmul(wt, x.reshape(n, group, cg, -1))
        cols = cols.reshape((n, m) + tuple(kernel) + tuple(in_sp))
        lo = [min(0, begin[i]) for i in range(nd)]
        canvas_len = [max(full[i], begin[i] + target[i]) - lo[i] for i in range(nd)]
        canvas = np.zeros((n, m) + tuple(canvas_len), dtype=cols.dtype)
        for offset in itertools.product(*(range(v) for v in kernel)):
            idx = (slice(None), slice(None)) + tuple(
                slice(o * d - lo[i], o * d - lo[i] + (in_sp[i] - 1) * s + 1, s)
                for i, (o, d, s) in enumerate(zip(offset, dilations, strides)))
            canvas[idx] += cols[(slice(None), slice(None)) + offset]
        crop = (slice(None), slice(None)) + tuple(
            slice(begin[i] - lo[i], begin[i] - lo[i] + target[i]) for i in range(nd))
        y = canvas[crop]
        if b is not None:
            y = y + _bias_shape(b, nd)
        return y

    return run


# --- pooling -----------------------------------------------------------------------------------

def _pool_setup(spec: NodeSpec, x: np.ndarray):
    nd = x.ndim - 2
    kernel = tuple(spec.attr("kernel_shape"))
    strides = _ints(spec.attr("strides"), nd, 1)
    dilations = _ints(spec.attr("dilations"), nd, 1)
    geo = pool_geometry(x.shape[2:], kernel, strides, dilations, spec.attr("pads"),
                        spec.attr("auto_pad", "NOTSET"), spec.attr("ceil_mode", 0))
    return (kernel, strides, dilations) + geo


def _lowest(dtype: np.dtype):
    if dtype.kind in "iu":
        return np.iinfo(dtype).min
    if dtype == np.bool_:
        return False
    return -np.inf


@register("MaxPool", min_version=8)
def _max_pool(spec: NodeSpec):
    want_indices = len(spec.outputs) > 1 and spec.outputs[1] != ""
    column_major = spec.attr("storage_order", 0) == 1
    cache: dict[tuple, tuple] = {}

    def run(x):
        geo = cache.get(x.shape)
        if geo is None:
            geo = cache[x.shape] = _pool_setup(spec, x)
        kernel, strides, dilations, begin, end, _, out = geo
        xp = _pad(x, begin, end, _lowest(x.dtype))
        taps = list(itertools.product(*(range(v) for v in kernel)))
        y = _tap(xp, taps[0], strides, dilations, out).copy()
        if not want_indices:
            for offset in taps[1:]:
                np.maximum(y, _tap(xp, offset, strides, dilations, out), out=y)
            return y
        best = np.zeros(y.shape, dtype=np.int64)
        for t, offset in enumerate(taps[1:], start=1):
            view = _tap(xp, offset, strides, dilations, out)
            better = view > y
            np.copyto(y, view, where=better)
            best[better] = t
        return y, _flat_indices(x.shape, best, taps, strides, dilations, begin, out, column_major)

    return run


def _flat_indices(shape, best, taps, strides, dilations, begin, out, column_major):
    """Flat input index of each window's maximum (MaxPool's Indices output)."""
    nd = len(out)
    n, c = shape[:2]
    sp = shape[2:]
    offsets = np.asarray(taps, dtype=np.int64)[best]  # (..., nd) tap coordinates
    coords = []
    for i in range(nd):
        pos = np.arange(out[i], dtype=np.int64).reshape((1, 1) + tuple(
            out[i] if j == i else 1 for j in range(nd))) * strides[i] - begin[i]
        coords.append(pos + offsets[..., i] * dilations[i])
    flat = np.zeros(best.shape, dtype=np.int64)
    order = range(nd - 1, -1, -1) if column_major else range(nd)
    for i in order:
        flat = flat * sp[i] + coords[i]
    base = np.arange(n * c, dtype=np.int64).reshape((n, c) + (1,) * nd) * math.prod(sp)
    return flat + base


@register("AveragePool", min_version=7, half_in_float32=True)
def _average_pool(spec: NodeSpec):
    include_pad = spec.attr("count_include_pad", 0) == 1
    cache: dict[tuple, tuple] = {}

    def run(x):
        geo = cache.get(x.shape)
        if geo is None:
            setup = _pool_setup(spec, x)
            geo = cache[x.shape] = setup + (_divisor(x.shape[2:], *setup, include_pad, x.dtype),)
        kernel, strides, dilations, begin, end, _, out, divisor = geo
        xp = _pad(x, begin, end, 0)
        taps = itertools.product(*(range(v) for v in kernel))
        y = _tap(xp, next(taps), strides, dilations, out).copy()
        for offset in taps:
            y += _tap(xp, offset, strides, dilations, out)
        y /= divisor
        return y

    return run


def _divisor(in_sp, kernel, strides, dilations, begin, end, declared_end, out, include_pad,
             dtype):
    """Number of counted window elements per output position (separable, so an outer product)."""
    nd = len(in_sp)
    counts = []
    for i in range(nd):
        lo, hi = (0, begin[i] + in_sp[i] + declared_end[i]) if include_pad else (
            begin[i], begin[i] + in_sp[i])
        pos = np.arange(out[i])[:, None] * strides[i] + np.arange(kernel[i])[None, :] * dilations[i]
        counts.append(((pos >= lo) & (pos < hi)).sum(axis=1))
    div = np.ones((1, 1) + (1,) * nd, dtype=np.float64)
    for i, cnt in enumerate(counts):
        div = div * cnt.reshape((1, 1) + tuple(out[i] if j == i else 1 for j in range(nd)))
    if np.all(div == div.flat[0]):
        return dtype.type(div.flat[0]) if dtype.kind == "f" else float(div.flat[0])
    return div.astype(dtype if dtype.kind == "f" else np.float64)


@register("GlobalAveragePool", half_in_float32=True)
def _global_average_pool(spec: NodeSpec):
    def run(x):
        return x.mean(axis=tuple(range(2, x.ndim)), keepdims=True)

    return run


@register("GlobalMaxPool")
def _global_max_pool(spec: NodeSpec):
    def run(x):
        return x.max(axis=tuple(range(2, x.ndim)), keepdims=True)

    return run
