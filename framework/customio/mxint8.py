"""The mxint8 codec in numpy: float tensors in, block-scaled bytes out, and back.

The byte layout and the rounding are the package's (``aicc.customio``): blocks of ``MX_BLOCK``
values along the last axis, each one exponent byte (E8M0) then the int8 mantissas with 6 fraction
bits. The ``custom-io`` pass builds the same arithmetic as graph nodes from the tables below.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .vocabulary import MX_BLOCK

__all__ = ["mx_step_table", "mx_scale_table", "mx_encode", "mx_decode"]


def mx_step_table() -> np.ndarray:
    """float32[256]: ``2^(E - 133)``, the mantissa step of exponent byte E (exact powers of 2)."""
    return np.ldexp(np.float64(1.0), np.arange(256) - 133).astype(np.float32)


def mx_scale_table() -> np.ndarray:
    """float32[256]: ``2^(E - 127)`` (E = 255 gives +inf: never produced)."""
    with np.errstate(over="ignore"):
        return np.ldexp(np.float64(1.0), np.arange(256) - 127).astype(np.float32)


def mx_encode(x: np.ndarray, block: int = MX_BLOCK) -> np.ndarray:
    """float [..., L] -> uint8 [..., ceil(L / block), 1 + block] (see the package docstring)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 0:
        raise DataError("mxint8 needs a tensor of rank >= 1")
    length = x.shape[-1]
    nb = -(-length // block)
    pad = nb * block - length
    if pad:
        x = np.concatenate([x, np.zeros(x.shape[:-1] + (pad,), np.float32)], axis=-1)
    xb = x.reshape(x.shape[:-1] + (nb, block))
    amax = np.abs(xb).max(axis=-1, keepdims=True)
    _, e = np.frexp(amax)                      # amax = m * 2^e, m in [0.5, 1)
    exp = np.where(amax > 0, e.astype(np.int64) - 1 + 127, 0)
    exp = np.clip(exp, 0, 254)
    step = mx_step_table()[exp]
    m = np.clip(np.rint(xb / step), -127, 127).astype(np.int8)
    out = np.concatenate([exp.astype(np.uint8), m.view(np.uint8)], axis=-1)
    return np.ascontiguousarray(out)


def mx_decode(data: np.ndarray, length: int, block: int = MX_BLOCK) -> np.ndarray:
    """uint8 [..., blocks, 1 + block] -> float32 [..., length]."""
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim < 2 or data.shape[-1] != block + 1:
        raise DataError(f"an mxint8 tensor is uint8 [..., blocks, {block + 1}], got {data.dtype} "
                        f"{list(data.shape)}")
    step = mx_step_table()[data[..., :1].astype(np.int64)]
    m = np.ascontiguousarray(data[..., 1:]).view(np.int8).astype(np.float32)
    values = (m * step).reshape(data.shape[:-2] + (data.shape[-2] * block,))
    return np.ascontiguousarray(values[..., :length])
