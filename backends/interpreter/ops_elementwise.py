"""Elementwise ONNX ops (arithmetic, comparisons, logic, activations, Cast) as numpy kernels.

Binary ops follow numpy broadcasting, which is ONNX's multidirectional broadcasting. Integer
division truncates toward zero as ONNX says (numpy floors); Pow returns the base's dtype.
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from .erf import erf, erf32
from .kernels import SUB_BYTE_INTS, NodeSpec, blockwise, is_float, onnx_dtype, register

__all__: list[str] = []  # kernels register themselves; nothing to import from here

# --- unary -------------------------------------------------------------------------------------

_UNARY = {
    "Abs": np.abs,
    "Neg": np.negative,
    "Sqrt": np.sqrt,
    "Exp": np.exp,
    "Log": np.log,
    "Tanh": np.tanh,
    "Not": np.logical_not,
    "Floor": np.floor,
    "Ceil": np.ceil,
}


def _unary(spec: NodeSpec):
    return _UNARY[spec.op_type]


for _op in _UNARY:
    register(_op)(_unary)


@register("Reciprocal")
def _reciprocal(spec: NodeSpec):
    def run(x):
        return np.reciprocal(x) if x.dtype.kind == "f" else np.divide(1, x).astype(x.dtype)

    return run


@register("Erf", half_in_float32=True)
def _erf_op(spec: NodeSpec):
    return erf


@register("Relu")
def _relu(spec: NodeSpec):
    def run(x):
        return np.maximum(x, x.dtype.type(0))

    return run


def _leaky(x: np.ndarray, slope) -> np.ndarray:
    """x for x >= 0, x * slope below; exact, and much faster than np.where on mixed signs.

    max(x, slope * x) when every slope is in [0, 1], min(x, slope * x) when all are >= 1 (one
    output buffer either way); max(x, 0) + min(x, 0) * slope otherwise.
    """
    lo, hi = np.min(slope), np.max(slope)
    y = x * slope
    if y.shape == x.shape and 0 <= lo and hi <= 1:
        return np.maximum(y, x, out=y)
    if y.shape == x.shape and lo >= 1:
        return np.minimum(y, x, out=y)
    y = np.minimum(x, x.dtype.type(0))
    y *= slope
    y += np.maximum(x, x.dtype.type(0))
    return y


@register("LeakyRelu")
def _leaky_relu(spec: NodeSpec):
    alpha = spec.attr("alpha", 0.01)

    def run(x):
        return _leaky(x, x.dtype.type(alpha))

    return run


@register("PRelu")
def _prelu(spec: NodeSpec):
    def run(x, slope):
        return _leaky(x, slope.astype(x.dtype, copy=False))

    return run


@register("Sigmoid", half_in_float32=True)
def _sigmoid(spec: NodeSpec):
    def run(x):
        # exp(-x) overflows to inf for very negative x, giving 1/inf = 0: the right limit.
        y = np.negative(x)
        np.exp(y, out=y)
        y += 1
        return np.reciprocal(y, out=y)

    return run


@register("HardSigmoid", half_in_float32=True)
def _hard_sigmoid(spec: NodeSpec):
    alpha = spec.attr("alpha", 0.2)
    beta = spec.attr("beta", 0.5)

    def run(x):
        y = x * x.dtype.type(alpha)
        y += x.dtype.type(beta)
        return np.clip(y, 0, 1, out=y)

    return run


@register("HardSwish", half_in_float32=True)
def _hard_swish(spec: NodeSpec):
    def run(x):
        y = x * x.dtype.type(1 / 6)
        y += x.dtype.type(0.5)
        np.clip(y, 0, 1, out=y)
        y *= x
        return y

    return run


@register("Gelu", half_in_float32=True)
def _gelu(spec: NodeSpec):
    approximate = spec.attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise ValueError(f"{spec.describe()}: approximate={approximate!r} is not 'none' or 'tanh'")

    def gelu(x, out):
        t = x.dtype.type
        if approximate == "tanh":
            np.multiply(x, x, out=out)
            out *= t(0.044715)
            out += t(1)
            out *= x
            out *= t(math.sqrt(2 / math.pi))
            np.tanh(out, out=out)
        elif x.dtype == np.float32:
            erf32(x * t(1 / math.sqrt(2)), out, owned=True)
        else:
            out[...] = erf(x * t(1 / math.sqrt(2)))
        out += t(1)
        out *= x
        out *= t(0.5)

    return lambda x: blockwise(gelu, x)


@register("Clip")
def _clip(spec: NodeSpec):
    if spec.version < 11:
        lo_attr = spec.attr("min")
        hi_attr = spec.attr("max")

        def run_attrs(x):
            y = x
            if lo_attr is not None:
                y = np.maximum(y, x.dtype.type(lo_attr))
            if hi_attr is not None:
                y = np.minimum(y, x.dtype.type(hi_attr))
            return y if y is not x else x.copy()

        return run_attrs

    def run(x, lo=None, hi=None):
        y = x
        if lo is not None:
            y = np.maximum(y, lo)
        if hi is not None:
            y = np.minimum(y, hi)
        return y.astype(x.dtype, copy=False)

    return run


# --- binary ------------------------------------------------------------------------------------

def _div(a, b):
    if is_float(a.dtype):
        return np.divide(a, b)
    if a.dtype.kind == "u":
        return np.floor_divide(a, b)
    # signed integers: truncate toward zero (C semantics), not floor as numpy does
    rem = np.fmod(a, b)
    return np.floor_divide(a - rem, b)


def _pow(a, b):
    # The result has the base's dtype; mixed types and negative integer exponents go via float64.
    if a.dtype == b.dtype and (is_float(a.dtype) or not (b < 0).any()):
        return np.power(a, b)
    return np.power(a.astype(np.float64), b.astype(np.float64)).astype(a.dtype)


_BINARY = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": _div,
    "Pow": _pow,
    "Less": np.less,
    "LessOrEqual": np.less_equal,
    "Greater": np.greater,
    "GreaterOrEqual": np.greater_equal,
    "And": np.logical_and,
    "Or": np.logical_or,
    "Xor": np.logical_xor,
}


def _binary(spec: NodeSpec):
    return _BINARY[spec.op_type]


for _op in _BINARY:
    register(_op)(_binary)


@register("Equal")
def _equal(spec: NodeSpec):
    def run(a, b):
        if a.dtype == object or b.dtype == object:
            return np.asarray(a == b, dtype=bool)
        return np.equal(a, b)

    return run


@register("Max", "Min")
def _max_min(spec: NodeSpec):
    fn = np.maximum if spec.op_type == "Max" else np.minimum

    def run(*xs):
        y = xs[0]
        for x in xs[1:]:
            y = fn(y, x)
        return y if len(xs) > 1 else y.copy()

    return run


@register("Sum", "Mean", half_in_float32=True)
def _sum_mean(spec: NodeSpec):
    mean = spec.op_type == "Mean"

    def run(*xs):
        y = xs[0].copy() if len(xs) == 1 else xs[0] + xs[1]
        for x in xs[2:]:
            y = y + x
        if mean:
            y = (y / len(xs)).astype(xs[0].dtype, copy=False)
        return y

    return run


@register("Where")
def _where(spec: NodeSpec):
    return np.where


# --- Cast --------------------------------------------------------------------------------------

_FLOAT8 = {TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E4M3FNUZ, TensorProto.FLOAT8E5M2,
           TensorProto.FLOAT8E5M2FNUZ}
_SUB_BYTE_INT = {TensorProto.INT4: 4, TensorProto.UINT4: 4, TensorProto.INT2: 2,
                 TensorProto.UINT2: 2}


#: The Cast/CastLike version from which float -> 2/4-bit integer casts truncate (see below).
_SUB_BYTE_TRUNCATING = 25


def float_to_sub_byte(x: np.ndarray, to: int, version: int) -> np.ndarray:
    """Float -> INT4/UINT4/INT2/UINT2 as the Cast definition ``version`` computes it.

    The operator text leaves out-of-range float -> integer casts undefined in every version, so
    the rule is that of onnx's reference implementation for the version:

    * versions 21-24 (INT4/UINT4 arrived in Cast-21): round half to even, then saturate to the
      type's range; NaN gives 0 (onnx's reference of those opsets, ``subbyte``'s
      ``float32_to_4bit_unpacked``, and the node tests generated with it);
    * version 25 on (Cast-25 added INT2/UINT2; Cast-28 and CastLike-25 behave the same): truncate
      toward zero like any float -> integer cast; a value whose truncation falls outside the
      range, and NaN and +-inf, give 0 (onnx 1.23's reference, computed by ml_dtypes, and the
      node tests it generates).
    """
    dtype = onnx_dtype(to)
    bits = _SUB_BYTE_INT[to]
    signed = to in (TensorProto.INT4, TensorProto.INT2)
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    wide = x.astype(np.float64)
    finite = np.isfinite(wide)
    if version < _SUB_BYTE_TRUNCATING:
        value = np.clip(np.rint(np.where(np.isnan(wide), 0.0, wide)), low, high)
    else:
        value = np.trunc(np.where(finite, wide, 0.0))
        value = np.where((value < low) | (value > high), 0.0, value)
    return value.astype(np.int8).astype(dtype)


def cast_array(x: np.ndarray, to: int, *, saturate: bool = True, round_mode: str = "up",
               version: int = _SUB_BYTE_TRUNCATING) -> np.ndarray:
    """Convert ``x`` to the ONNX element type ``to`` with Cast's rules.

    float8 targets saturate to the largest finite value when ``saturate`` (inf too); integer
    sources wrap around into sub-byte integer targets like wider integer casts, and float sources
    follow ``float_to_sub_byte`` for ``version`` (the Cast/CastLike definition the model's opset
    selects); float8e8m0 rounds as ``round_mode``.
    """
    if to == TensorProto.STRING:
        return x.astype(np.str_).astype(object)
    dtype = onnx_dtype(to)
    if x.dtype == dtype:
        return x.copy()
    if x.dtype == object:  # strings to numbers
        return x.astype(np.float64).astype(dtype)
    if to in _FLOAT8 and saturate and is_float(x.dtype):
        big = float(ml_dtypes.finfo(dtype).max)
        return np.clip(x.astype(np.float32), -big, big).astype(dtype)
    if to == TensorProto.FLOAT8E8M0:
        return numpy_helper.to_float8e8m0(x, saturate, round_mode).astype(dtype)
    if to in _SUB_BYTE_INT and is_float(x.dtype):
        return float_to_sub_byte(x, to, version)
    if to in _SUB_BYTE_INT:
        bits = _SUB_BYTE_INT[to]
        wide = x.astype(np.int64)
        wide &= (1 << bits) - 1
        if to in (TensorProto.INT4, TensorProto.INT2):
            wide = np.where(wide >= (1 << (bits - 1)), wide - (1 << bits), wide)
        return wide.astype(dtype)
    if x.dtype in SUB_BYTE_INTS and dtype.kind in "iub":
        return x.astype(np.int64).astype(dtype)
    return x.astype(dtype)


@register("Cast")
def _cast(spec: NodeSpec):
    to = spec.attr("to")
    onnx_dtype(to)  # fail at build time for an unknown type
    saturate = bool(spec.attr("saturate", 1))
    round_mode = spec.attr("round_mode", "up")

    def run(x):
        return cast_array(x, to, saturate=saturate, round_mode=round_mode, version=spec.version)

    return run


@register("CastLike")
def _cast_like(spec: NodeSpec):
    saturate = bool(spec.attr("saturate", 1))
    round_mode = spec.attr("round_mode", "up")

    def run(x, like):
        to = onnx.helper.np_dtype_to_tensor_dtype(like.dtype)
        return cast_array(x, to, saturate=saturate, round_mode=round_mode,
                          version=spec.version)

    return run
