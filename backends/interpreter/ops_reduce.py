"""Reductions and orderings (ReduceMean/Sum/SumSquare/Max/Min/Prod, ArgMax, ArgMin, TopK,
CumSum) as numpy kernels; sums keep integer dtypes (numpy would widen them) and accumulate fp16
in float32."""

from __future__ import annotations

import numpy as np

from .kernels import NodeSpec, is_float, normalize_axis, register

__all__: list[str] = []  # kernels register themselves

# op type -> first version whose axes come from an input instead of an attribute
_AXES_INPUT_SINCE = {"ReduceSum": 13, "ReduceMean": 18, "ReduceMax": 18, "ReduceMin": 18,
                     "ReduceProd": 18, "ReduceSumSquare": 18}


def _reduce_all_or(x: np.ndarray, axes) -> tuple[int, ...]:
    return tuple(range(x.ndim)) if axes is None else axes


def _extreme_initial(dtype: np.dtype, largest: bool):
    """Identity of max/min for an empty reduction (-inf/+inf, integer limits, False/True)."""
    if dtype == np.bool_:
        return not largest
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return info.max if not largest else info.min
    return -np.inf if largest else np.inf


@register("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceSumSquare",
          min_version=1, half_in_float32=True)
def _reduce(spec: NodeSpec):
    op = spec.op_type
    keepdims = spec.attr("keepdims", 1) == 1
    noop_empty = spec.attr("noop_with_empty_axes", 0) == 1
    axes_from_input = spec.version >= _AXES_INPUT_SINCE[op]
    attr_axes = spec.attr("axes")

    def run(x, axes_in=None):
        raw = (None if axes_in is None else list(np.asarray(axes_in).reshape(-1))
               ) if axes_from_input else attr_axes
        if raw is not None and len(raw) == 0:
            raw = None
        if raw is None and noop_empty:
            # no axes and noop: ReduceSumSquare still squares (its onnx function is Mul+ReduceSum)
            return x * x if op == "ReduceSumSquare" else x.copy()
        axes = _reduce_all_or(x, None if raw is None else tuple(
            sorted(normalize_axis(int(a), x.ndim, spec) for a in raw)))
        empty = any(x.shape[a] == 0 for a in axes)
        if op == "ReduceSum":
            return np.sum(x, axis=axes, keepdims=keepdims, dtype=x.dtype)
        if op == "ReduceSumSquare":
            return np.sum(x * x, axis=axes, keepdims=keepdims, dtype=x.dtype)
        if op == "ReduceProd":
            return np.prod(x, axis=axes, keepdims=keepdims, dtype=x.dtype)
        if op == "ReduceMean":
            if is_float(x.dtype):
                return np.mean(x, axis=axes, keepdims=keepdims, dtype=x.dtype)
            return np.mean(x, axis=axes, keepdims=keepdims).astype(x.dtype)
        fn = np.max if op == "ReduceMax" else np.min
        if empty:
            return fn(x, axis=axes, keepdims=keepdims,
                      initial=_extreme_initial(x.dtype, op == "ReduceMax"))
        return fn(x, axis=axes, keepdims=keepdims)

    return run


@register("ArgMax", "ArgMin")
def _arg_extreme(spec: NodeSpec):
    fn = np.argmax if spec.op_type == "ArgMax" else np.argmin
    axis_attr = spec.attr("axis", 0)
    keepdims = spec.attr("keepdims", 1) == 1
    last = spec.attr("select_last_index", 0) == 1

    def run(x):
        axis = normalize_axis(axis_attr, x.ndim, spec)
        if last:
            idx = x.shape[axis] - 1 - fn(np.flip(x, axis), axis=axis, keepdims=keepdims)
        else:
            idx = fn(x, axis=axis, keepdims=keepdims)
        return np.asarray(idx, dtype=np.int64)

    return run


@register("TopK", min_version=10)
def _top_k(spec: NodeSpec):
    axis_attr = spec.attr("axis", -1)
    largest = spec.attr("largest", 1) == 1

    def run(x, k):
        axis = normalize_axis(axis_attr, x.ndim, spec)
        kk = int(np.asarray(k).reshape(-1)[0])
        # a stable ascending sort of a key that reverses the order keeps ties in index order
        if largest:
            key = ~x if x.dtype.kind == "u" else (-x if x.dtype != np.bool_ else ~x)
        else:
            key = x
        order = np.argsort(key, axis=axis, kind="stable")
        idx = np.take(order, np.arange(kk), axis=axis)
        return np.take_along_axis(x, idx, axis=axis), idx.astype(np.int64)

    return run


@register("CumSum", half_in_float32=True)
def _cumsum(spec: NodeSpec):
    exclusive = spec.attr("exclusive", 0) == 1
    reverse = spec.attr("reverse", 0) == 1

    def run(x, axis):
        a = normalize_axis(int(np.asarray(axis).reshape(-1)[0]), x.ndim, spec)
        src = np.flip(x, a) if reverse else x
        y = np.cumsum(src, axis=a, dtype=x.dtype)
        if exclusive:
            shifted = np.zeros_like(y)
            body = [slice(None)] * x.ndim
            body[a] = slice(1, None)
            head = [slice(None)] * x.ndim
            head[a] = slice(0, -1)
            shifted[tuple(body)] = y[tuple(head)]
            y = shifted
        return np.flip(y, a) if reverse else y

    return run
