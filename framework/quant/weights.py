"""Per-channel weight and bias encodings: a weight tensor (or a bias and its operands' encodings)
in, an Encoding out.

QNN quantizes weights per output channel (per row of a Gemm ``B``) with its ``symmetric`` mode;
the vendor compiler takes a ``-quantization-schema-constants`` schema instead. Both are accepted
here, on top of ``modes`` (QNN) and ``schemas`` (vendor), which know nothing of channels. A bias
is int32 with zero point 0 and the product of its input's and weight's scales.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..errors import DataError
from .encodings import Encoding, check_bitwidth, combine_channels
from .modes import MIN_RANGE, MODES, range_encoding, encoding_for_mode
from .histogram import finite_range
from .schemas import schema_encoding

__all__ = ["per_channel_encoding", "weight_channel_axis", "bias_encoding",
           "widen_for_bias"]


def per_channel_encoding(weights: Any, axis: int, bitwidth: int = 8, *, mode: str = "symmetric",
                         schema: str | None = None, signed: bool | None = None,
                         name: str | None = None, notes: list[str] | None = None) -> Encoding:
    """One encoding per slice of ``weights`` along ``axis`` (QNN per-channel / per-row).

    ``mode`` is a QNN mode (default ``symmetric``, what QNN requires for per-channel); or give a
    vendor ``schema`` name instead (``schemas.SCHEMAS``). ``axis`` may be negative; the returned
    encoding carries it normalised to non-negative.
    """
    w = np.asarray(weights)
    if w.ndim == 0:
        raise DataError("per-channel quantization needs a tensor of rank >= 1",
                        field=f"tensor '{name}'" if name else None)
    if not -w.ndim <= axis < w.ndim:
        raise DataError(f"axis {axis} out of range for a tensor of rank {w.ndim}",
                        field=f"tensor '{name}'" if name else None)
    axis = axis % w.ndim
    rows = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    # Range-only modes on float32/float16 rows with no NaN/Inf: every row's range in one
    # reduction (the same values finite_range gives row by row; no clamping can apply).
    ranges = None
    if schema is None and mode != "enhanced" and mode in MODES and rows.size and \
            rows.dtype in (np.float32, np.float16):
        lows, highs = rows.min(axis=1), rows.max(axis=1)
        if np.isfinite(lows).all() and np.isfinite(highs).all():
            fast = _symmetric_channels(lows, highs, bitwidth, axis) \
                if mode == "symmetric" and signed in (None, True) else None
            if fast is not None:
                return fast
            ranges = zip(lows.tolist(), highs.tolist())
    encs = []
    for c, row in enumerate(rows):
        cname = f"{name}[channel {c}]" if name else f"channel {c}"
        if ranges is not None:
            lo, hi = next(ranges)
            encs.append(range_encoding(mode, lo, hi, bitwidth, signed, cname, notes))
        elif schema is not None:
            lo, hi, _ = finite_range(row)
            encs.append(schema_encoding(schema, lo, hi, bitwidth, name=cname, notes=notes))
        else:
            encs.append(encoding_for_mode(mode, row, bitwidth=bitwidth, signed=signed, name=cname,
                                          notes=notes))
    return combine_channels(encs, axis=axis)


def _symmetric_channels(lows: np.ndarray, highs: np.ndarray, bitwidth: int,
                        axis: int) -> Encoding | None:
    """``symmetric_encoding`` of every channel at once (the same float64 arithmetic), combined;
    None when a channel's range is narrower than ``MIN_RANGE`` (widened, with a note, one by
    one by the caller's loop)."""
    lo, hi = lows.astype(np.float64), highs.astype(np.float64)
    if np.any(hi - lo < MIN_RANGE):
        return None
    bitwidth = check_bitwidth(bitwidth)
    half = 1 << (bitwidth - 1)
    m = np.maximum(np.maximum(np.abs(lo), np.abs(hi)), MIN_RANGE / 2)
    scale = m / (half - 1)
    return Encoding(bitwidth=bitwidth, signed=True, symmetric=True, axis=axis,
                    min=tuple((-half * scale).tolist()), max=tuple(m.tolist()),
                    scale=tuple(scale.tolist()), zero_point=(0,) * len(m))


def weight_channel_axis(op_type: str, *, trans_b: bool = False) -> int:
    """The output-channel axis of a weight input, for per-channel / per-row quantization.

    Conv ``[M, C/g, k...]`` -> 0; ConvTranspose ``[C, M/g, k...]`` -> 1; Gemm ``B`` -> 1, or 0 with
    ``transB=1`` (per-row of ``[N, K]``); MatMul ``B [..., K, N]`` -> -1 (per output column).
    """
    if op_type == "Conv":
        return 0
    if op_type == "ConvTranspose":
        return 1
    if op_type == "Gemm":
        return 0 if trans_b else 1
    if op_type == "MatMul":
        return -1
    raise ValueError(f"no per-channel weight axis for op type {op_type!r}")


def bias_encoding(input_scale: float, weight: Encoding, *, bitwidth: int = 32,
                  name: str | None = None) -> Encoding:
    """The bias encoding of a Conv/Gemm: int32, zero point 0, scale = input scale x weight scale
    (per channel when the weights are, along axis 0 of the 1-D bias)."""
    bitwidth = check_bitwidth(bitwidth, role="bias")
    if weight.is_float or not weight.is_resolved:
        raise ValueError("bias_encoding needs a resolved integer weight encoding")
    scales = float(input_scale) * np.atleast_1d(np.asarray(weight.scale, dtype=np.float64))
    if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        raise DataError(f"bias scale {scales.tolist()} is not finite and positive "
                        f"(input scale {input_scale} x weight scale)",
                        field=f"tensor '{name}'" if name else None)
    half = 1 << (bitwidth - 1)
    if weight.per_channel:
        return Encoding(bitwidth=bitwidth, signed=True, scale=tuple(scales.tolist()),
                        zero_point=(0,) * scales.size, symmetric=True, axis=0,
                        min=tuple((-half * scales).tolist()),
                        max=tuple(((half - 1) * scales).tolist()))
    s = float(scales[0])
    return Encoding(bitwidth=bitwidth, signed=True, scale=s, zero_point=0, symmetric=True,
                    min=-half * s, max=(half - 1) * s)


def widen_for_bias(weight: Encoding, bias: np.ndarray, input_scale: float, *,
                   bitwidth: int = 32) -> tuple[Encoding, int]:
    """``(weight encoding, channels widened)``: each channel's weight scale raised just enough
    that its bias fits the ``bitwidth`` grid of scale ``input_scale x weight scale``. With fine
    weight grids (16-bit weights: scales ~1e-5) and a fine input grid, a bias of 1 needs more
    than 2^31 steps; clipping it instead moves the channel's output (PP-OCRv4 rec, 16-bit
    weights: one Conv's bias clipped, 15 points of decoded strings lost). The integer endpoints
    of the weight grid stay, so its range grows by the same factor; only channels that need it
    change. onnxruntime and QNN make the same adjustment."""
    if weight.is_float or not weight.is_resolved:
        return weight, 0
    scales = np.atleast_1d(np.asarray(weight.scale, dtype=np.float64))
    b = np.abs(np.asarray(bias, dtype=np.float64).reshape(-1))
    if scales.size not in (1, b.size):
        return weight, 0
    steps = float((1 << (bitwidth - 1)) - 1)
    need = (b if scales.size == b.size else b.max(initial=0.0)) / (steps * float(input_scale))
    new = np.where(need > scales, need * (1 + 1e-6), scales)
    widened = int(np.count_nonzero(new != scales))
    if not widened:
        return weight, 0
    factor = new / scales
    lo = np.atleast_1d(np.asarray(weight.min, dtype=np.float64)) * factor
    hi = np.atleast_1d(np.asarray(weight.max, dtype=np.float64)) * factor
    if weight.per_channel:
        return dataclasses.replace(weight, scale=tuple(new.tolist()), min=tuple(lo.tolist()),
                                   max=tuple(hi.tolist())), widened
    return dataclasses.replace(weight, scale=float(new[0]), min=float(lo[0]),
                               max=float(hi[0])), widened
