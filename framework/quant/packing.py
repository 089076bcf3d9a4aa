"""Packed 4-bit storage: 4-bit integers (one per int8/uint8) in, two per byte out, and back.

The QNN layout (``--pack_4_bit_weights``): values are packed in order, the first of each pair in
the low nibble and the second in the high nibble, so (10, 4) -> ``0b0100_1010``. For per-channel /
per-row tensors the values of each channel are packed together and each channel starts on a byte
boundary: a (3, 3, 3, 32) weight with 32 channels on the last axis holds 27 values per channel,
which pack into ceil(27 / 2) = 14 bytes per channel (an odd count is padded with a zero nibble).

(ONNX's own int4/uint4 tensors pack the whole flattened tensor the same way but without per-channel
padding; use ``onnx.helper`` for those.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DataError

__all__ = ["pack_4bit", "unpack_4bit", "packed_size"]


def _rows(values: np.ndarray, axis: int | None) -> np.ndarray:
    if axis is None:
        return values.reshape(1, -1)
    if values.ndim == 0 or not -values.ndim <= axis < values.ndim:
        raise DataError(f"axis {axis} out of range for a tensor of shape {values.shape}")
    return np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)


def packed_size(shape: tuple[int, ...], axis: int | None = None) -> int:
    """Bytes needed to pack a tensor of ``shape`` (per channel along ``axis`` if given)."""
    n = int(np.prod(shape, dtype=np.int64))
    if axis is None:
        return (n + 1) // 2
    channels = shape[axis]
    per = n // channels if channels else 0
    return channels * ((per + 1) // 2)


def pack_4bit(values: Any, *, signed: bool, axis: int | None = None) -> np.ndarray:
    """Pack 4-bit integers two per byte.

    ``values`` must lie in [-8, 7] (``signed``) or [0, 15]. With ``axis=None`` the whole tensor is
    one row and the result has shape ``(ceil(n / 2),)``; with an ``axis`` each channel along it is a
    row and the result has shape ``(channels, ceil(per_channel / 2))``.
    """
    q = np.asarray(values)
    if q.dtype.kind not in "iu":
        raise DataError(f"4-bit packing needs integer values, got dtype {q.dtype}")
    lo, hi = (-8, 7) if signed else (0, 15)
    if q.size and (int(q.min()) < lo or int(q.max()) > hi):
        raise DataError(f"values outside [{lo}, {hi}] cannot be packed as "
                        f"{'' if signed else 'u'}int4 (got [{int(q.min())}, {int(q.max())}])")
    rows = _rows(q.astype(np.int16), axis)
    n = rows.shape[1]
    if n % 2:
        rows = np.concatenate([rows, np.zeros((rows.shape[0], 1), dtype=rows.dtype)], axis=1)
    nib = (rows & 0xF).astype(np.uint8)
    packed = nib[:, 0::2] | (nib[:, 1::2] << 4)
    return packed[0] if axis is None else packed


def unpack_4bit(packed: Any, count: int, *, signed: bool, shape: tuple[int, ...] | None = None,
                axis: int | None = None) -> np.ndarray:
    """Inverse of ``pack_4bit``: ``count`` values per row (the whole tensor, or per channel).

    Returns int8 (``signed``, sign-extended) or uint8 values, reshaped to ``shape`` when given
    (with the channel axis moved back to ``axis``).
    """
    p = np.asarray(packed)
    if p.dtype != np.uint8:
        raise DataError(f"packed 4-bit data must be uint8, got {p.dtype}")
    rows = p.reshape(1, -1) if axis is None else p.reshape(p.shape[0], -1)
    need = (count + 1) // 2
    if rows.shape[1] != need:
        raise DataError(f"{rows.shape[1]} packed bytes per row, expected {need} for {count} values")
    out = np.empty((rows.shape[0], need * 2), dtype=np.uint8)
    out[:, 0::2] = rows & 0xF
    out[:, 1::2] = rows >> 4
    out = out[:, :count]
    if signed:
        out = ((out.astype(np.int16) ^ 8) - 8).astype(np.int8)
    if shape is None:
        return out[0] if axis is None else out
    if axis is None:
        return out.reshape(shape)
    moved = (shape[axis],) + tuple(d for i, d in enumerate(shape) if i != axis % len(shape))
    return np.moveaxis(out.reshape(moved), 0, axis)
