"""Shape and data-movement ONNX ops (Reshape, Transpose, Slice, Gather, OneHot, Pad, Concat,
Split, ...) as numpy kernels; where ONNX moved an attribute to an input across opsets, both forms
are read."""

from __future__ import annotations

import numpy as np

from .kernels import NodeSpec, is_float, normalize_axis, register

__all__ = ["constant_value"]


def _int_list(v) -> list[int]:
    return [int(i) for i in np.asarray(v).reshape(-1)]


@register("Identity")
def _identity(spec: NodeSpec):
    return lambda x: x


@register("Reshape", min_version=5)
def _reshape(spec: NodeSpec):
    allow_zero = spec.attr("allowzero", 0) == 1

    def run(x, shape):
        dims = _int_list(shape)
        if not allow_zero:
            dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
        return x.reshape(dims)

    return run


@register("Flatten")
def _flatten(spec: NodeSpec):
    axis_attr = spec.attr("axis", 1)

    def run(x):
        axis = axis_attr + x.ndim if axis_attr < 0 else axis_attr
        rows = int(np.prod(x.shape[:axis], dtype=np.int64))
        cols = int(np.prod(x.shape[axis:], dtype=np.int64))
        return x.reshape(rows, cols)

    return run


@register("Transpose")
def _transpose(spec: NodeSpec):
    perm = spec.attr("perm")

    def run(x):
        return np.transpose(x, perm)

    return run


def _axes_from(spec: NodeSpec, first_input_version: int, axes_input):
    """Axes from the attribute (older opsets) or from the optional input (newer ones)."""
    if spec.version < first_input_version:
        return spec.attr("axes")
    return None if axes_input is None else _int_list(axes_input)


@register("Squeeze")
def _squeeze(spec: NodeSpec):
    def run(x, axes=None):
        axes = _axes_from(spec, 13, axes)
        if axes is None:
            return np.squeeze(x)
        return np.squeeze(x, axis=tuple(normalize_axis(a, x.ndim, spec) for a in axes))

    return run


@register("Unsqueeze")
def _unsqueeze(spec: NodeSpec):
    def run(x, axes=None):
        axes = _axes_from(spec, 13, axes)
        rank = x.ndim + len(axes)
        axes = sorted(normalize_axis(a, rank, spec) for a in axes)
        shape = list(x.shape)
        for a in axes:
            shape.insert(a, 1)
        return x.reshape(shape)

    return run


@register("Concat", min_version=4)
def _concat(spec: NodeSpec):
    axis = spec.attr("axis")

    def run(*xs):
        return np.concatenate(xs, axis=normalize_axis(axis, xs[0].ndim, spec))

    return run


@register("Split", min_version=2)
def _split(spec: NodeSpec):
    axis_attr = spec.attr("axis", 0)
    n_out = len(spec.outputs)
    num_outputs = spec.attr("num_outputs")

    def run(x, split=None):
        axis = normalize_axis(axis_attr, x.ndim, spec)
        dim = x.shape[axis]
        sizes = spec.attr("split") if spec.version < 13 else (
            None if split is None else _int_list(split))
        if sizes is None:
            if num_outputs is not None:  # opset 18: last chunk may be smaller
                chunk = -(-dim // num_outputs)
                sizes = [min(chunk, max(0, dim - i * chunk)) for i in range(num_outputs)]
            else:
                if dim % n_out:
                    raise ValueError(f"{spec.describe()}: dim {dim} does not split into "
                                     f"{n_out} equal parts")
                sizes = [dim // n_out] * n_out
        bounds = np.cumsum(sizes)[:-1]
        return tuple(np.split(x, bounds, axis=axis))

    return run


@register("Slice", min_version=1)
def _slice(spec: NodeSpec):
    def run(x, starts=None, ends=None, axes=None, steps=None):
        if spec.version < 10:
            starts, ends, axes = spec.attr("starts"), spec.attr("ends"), spec.attr("axes")
            steps = None
        starts, ends = _int_list(starts), _int_list(ends)
        axes = list(range(len(starts))) if axes is None else _int_list(axes)
        steps = [1] * len(starts) if steps is None else _int_list(steps)
        index = [slice(None)] * x.ndim
        for s, e, a, st in zip(starts, ends, axes, steps):
            a = normalize_axis(a, x.ndim, spec)
            index[a] = _slice_of(s, e, st, x.shape[a])
        return x[tuple(index)]

    return run


def _slice_of(start: int, end: int, step: int, dim: int) -> slice:
    """ONNX Slice clamping for one axis as a Python slice (-1 end on a negative step = 'past 0')."""
    if step == 0:
        raise ValueError("Slice step cannot be 0")
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    start = min(max(start, 0), dim - 1)
    end = min(max(end, -1), dim - 1)
    return slice(start, None if end < 0 else end, step)


@register("Gather")
def _gather(spec: NodeSpec):
    axis_attr = spec.attr("axis", 0)

    def run(x, indices):
        axis = normalize_axis(axis_attr, x.ndim, spec)
        return np.take(x, indices.astype(np.intp, copy=False), axis=axis)

    return run


@register("OneHot", min_version=9)
def _one_hot(spec: NodeSpec):
    """Indices (any numeric type) become a new ``depth``-long axis at ``axis`` holding
    ``values[1]`` at the index and ``values[0]`` elsewhere; an index in [-depth, -1] counts from
    the end, one outside [-depth, depth - 1] gives an all-off row."""
    axis_attr = spec.attr("axis", -1)

    def run(indices, depth, values):
        d = int(np.asarray(depth).reshape(-1)[0])
        if d < 1:
            raise ValueError(f"{spec.describe()}: depth must be at least 1, got {d}")
        vals = np.asarray(values).reshape(-1)
        if vals.size != 2:
            raise ValueError(f"{spec.describe()}: values must hold [off_value, on_value], "
                             f"got {vals.size} elements")
        idx = np.asarray(indices)
        # float indices are compared as they are: a fractional one matches no position (as in
        # onnxruntime and onnx's reference)
        idx = idx.astype(np.float64 if is_float(idx.dtype) else np.int64)
        idx = np.where(idx < 0, idx + d, idx)  # still negative (or >= d) when out of range
        axis = normalize_axis(axis_attr, idx.ndim + 1, spec)
        targets = np.arange(d, dtype=np.int64).reshape((d,) + (1,) * (idx.ndim - axis))
        hot = np.expand_dims(idx, axis) == targets
        return np.where(hot, vals[1], vals[0]).astype(vals.dtype)

    return run


@register("GatherElements")
def _gather_elements(spec: NodeSpec):
    axis_attr = spec.attr("axis", 0)

    def run(x, indices):
        axis = normalize_axis(axis_attr, x.ndim, spec)
        idx = np.where(indices < 0, indices + x.shape[axis], indices).astype(np.intp)
        return np.take_along_axis(x, idx, axis=axis)

    return run


_SCATTER_UFUNCS = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


@register("ScatterND")
def _scatter_nd(spec: NodeSpec):
    reduction = spec.attr("reduction", "none")
    if reduction != "none" and reduction not in _SCATTER_UFUNCS:
        raise ValueError(f"{spec.describe()}: unknown reduction {reduction!r}")

    def run(data, indices, updates):
        out = data.copy()
        k = indices.shape[-1]
        idx = indices.reshape(-1, k).astype(np.intp)
        idx = np.where(idx < 0, idx + np.asarray(data.shape[:k]), idx)
        where = tuple(idx.T)
        upd = updates.reshape((idx.shape[0],) + data.shape[k:])
        if reduction == "none":
            out[where] = upd
        else:
            _SCATTER_UFUNCS[reduction].at(out, where, upd)
        return out

    return run


@register("Expand")
def _expand(spec: NodeSpec):
    def run(x, shape):
        target = np.broadcast_shapes(x.shape, tuple(_int_list(shape)))
        return np.array(np.broadcast_to(x, target))

    return run


@register("Tile")
def _tile(spec: NodeSpec):
    def run(x, repeats):
        return np.tile(x, _int_list(repeats))

    return run


@register("Shape")
def _shape(spec: NodeSpec):
    start = spec.attr("start", 0)
    end = spec.attr("end")

    def run(x):
        return np.array(x.shape[start:end], dtype=np.int64)

    return run


@register("Size")
def _size(spec: NodeSpec):
    return lambda x: np.array(x.size, dtype=np.int64)


@register("ConstantOfShape")
def _constant_of_shape(spec: NodeSpec):
    value = spec.attr("value")
    value = np.zeros(1, dtype=np.float32) if value is None else value.reshape(-1)

    def run(shape):
        return np.full(_int_list(shape), value[0], dtype=value.dtype)

    return run


@register("Range")
def _range(spec: NodeSpec):
    def run(start, limit, delta):
        s, lim, d = (np.asarray(v).item() for v in (start, limit, delta))
        n = max(int(np.ceil((lim - s) / d)), 0)
        if start.dtype.kind in "iu":
            return (s + np.arange(n, dtype=np.int64) * d).astype(start.dtype)
        return (float(s) + np.arange(n, dtype=np.float64) * float(d)).astype(start.dtype)

    return run


def constant_value(spec: NodeSpec) -> np.ndarray:
    """The tensor a Constant node produces, from whichever value attribute it carries."""
    for name, conv in (("value", None),
                       ("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64),
                       ("value_string", object), ("value_strings", object)):
        if name in spec.attrs:
            v = spec.attrs[name]
            return np.asarray(v) if conv is None else np.array(v, dtype=conv)
    if "sparse_value" in spec.attrs:
        from onnx import numpy_helper

        sp = spec.attrs["sparse_value"]
        dense = numpy_helper.to_array(sp.values)
        out = np.zeros(tuple(sp.dims), dtype=dense.dtype)
        idx = numpy_helper.to_array(sp.indices)
        if idx.ndim == 1:
            out.reshape(-1)[idx] = dense
        else:
            out[tuple(idx.T)] = dense
        return out
    raise ValueError(f"{spec.describe()}: Constant has no value attribute")


@register("Constant")
def _constant(spec: NodeSpec):
    value = constant_value(spec)
    value.setflags(write=False)
    return lambda: value


@register("Pad", min_version=2)
def _pad(spec: NodeSpec):
    mode = spec.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise ValueError(f"{spec.describe()}: unknown mode {mode!r}")

    def run(x, pads=None, value=None, axes=None):
        if spec.version < 11:
            pads, value = spec.attr("pads"), spec.attr("value", 0.0)
        pads = _int_list(pads)
        axes = list(range(x.ndim)) if axes is None else [
            normalize_axis(a, x.ndim, spec) for a in _int_list(axes)]
        n = len(axes)
        begin, end = [0] * x.ndim, [0] * x.ndim
        for i, a in enumerate(axes):
            begin[a], end[a] = pads[i], pads[n + i]
        # negative pads crop first
        crop = tuple(slice(max(0, -b), x.shape[i] - max(0, -e))
                     for i, (b, e) in enumerate(zip(begin, end)))
        x = x[crop]
        width = [(max(0, b), max(0, e)) for b, e in zip(begin, end)]
        if mode == "constant":
            flat = np.asarray(0 if value is None else value).reshape(-1)
            fill = flat[0] if flat.size else 0
            return np.pad(x, width, mode="constant", constant_values=fill)
        return np.pad(x, width, mode="wrap" if mode == "wrap" else mode)

    return run


@register("Trilu")
def _trilu(spec: NodeSpec):
    upper = spec.attr("upper", 1) == 1

    def run(x, k=None):
        kk = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
        return np.triu(x, kk) if upper else np.tril(x, kk)

    return run

