"""The quantization encoding: bitwidth, storage, range, scale and zero point, and the math on it.

Internally aicc uses ONNX's convention everywhere::

    real = (q - zero_point) * scale       q = saturate(round_half_even(real / scale) + zero_point)

The other two conventions are converted at the parsers that meet them (see ``aimet.py`` for the
AIMET/QNN JSON ``real = (q + offset) * scale``, and ``Encoding.vendor_offset`` for the vendor's
compile-side files, Glow lineage, ``real = (q - offset) * scale``).

Rounding: the QNN page writes ``round(...)`` without saying how ties go; aicc uses
round-half-to-even (``np.round``) because that is what ONNX ``QuantizeLinear`` does, so that
``Encoding.quantize`` and the QDQ graph the runtime executes agree bit for bit (up to the float32
rounding of the scale).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from onnx import TensorProto

from ..errors import ConfigError, DataError

__all__ = [
    "Encoding",
    "INT_BITWIDTHS",
    "FLOAT_BITWIDTHS",
    "ROLE_BITWIDTHS",
    "check_bitwidth",
    "combine_channels",
    "qrange",
]

logger = logging.getLogger(__name__)

#: Integer bitwidths an encoding may have. 32 is for biases (and AIMET INT32 overrides).
INT_BITWIDTHS = (4, 8, 16, 32)
#: Float "encodings" (AIMET ``dtype: float``) keep the tensor in float16 or float32.
FLOAT_BITWIDTHS = (16, 32)
#: What each role accepts when aicc computes an encoding itself.
ROLE_BITWIDTHS = {"weight": (4, 8, 16), "activation": (4, 8, 16), "bias": (8, 16, 32)}

_ONNX_INT = {(4, True): TensorProto.INT4, (4, False): TensorProto.UINT4,
             (8, True): TensorProto.INT8, (8, False): TensorProto.UINT8,
             (16, True): TensorProto.INT16, (16, False): TensorProto.UINT16,
             (32, True): TensorProto.INT32}
_NUMPY_INT = {(4, True): np.int8, (4, False): np.uint8, (8, True): np.int8, (8, False): np.uint8,
              (16, True): np.int16, (16, False): np.uint16, (32, True): np.int32}


def check_bitwidth(bitwidth: Any, *, dtype: str = "int", role: str | None = None,
                   where: str | None = None, field: str | None = None) -> int:
    """``bitwidth`` if it is supported for ``dtype`` (and ``role``), else a ConfigError."""
    if isinstance(bitwidth, float) and bitwidth.is_integer():
        bitwidth = int(bitwidth)
    if dtype == "float":
        allowed: tuple[int, ...] = FLOAT_BITWIDTHS
        what = "float"
    elif role is not None:
        allowed = ROLE_BITWIDTHS[role]
        what = f"{role} integer"
    else:
        allowed = INT_BITWIDTHS
        what = "integer"
    if isinstance(bitwidth, bool) or not isinstance(bitwidth, (int, np.integer)):
        raise ConfigError(f"bitwidth must be an integer, got {bitwidth!r}", where=where,
                          field=field, hint=f"{what} bitwidths: {', '.join(map(str, allowed))}")
    if int(bitwidth) not in allowed:
        raise ConfigError(f"unsupported {what} bitwidth {bitwidth}", where=where, field=field,
                          hint=f"supported: {', '.join(map(str, allowed))}")
    return int(bitwidth)


def qrange(bitwidth: int, signed: bool) -> tuple[int, int]:
    """The integer range of a ``bitwidth``-bit storage type: (-2^(b-1), 2^(b-1)-1) or (0, 2^b-1)."""
    if signed:
        return -(1 << (bitwidth - 1)), (1 << (bitwidth - 1)) - 1
    return 0, (1 << bitwidth) - 1


def _as_float(value: Any, name: str) -> float | tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        arr = np.asarray(value, dtype=np.float64).ravel()
        return tuple(float(v) for v in arr)
    return float(value)


def _as_int(value: Any, name: str) -> int | tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        arr = np.asarray(value).ravel()
        out = []
        for v in arr:
            if float(v) != int(v):
                raise ValueError(f"{name} must hold integers, got {v!r}")
            out.append(int(v))
        return tuple(out)
    if float(value) != int(value):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class Encoding:
    """How one tensor is (or is not) quantized.

    - ``dtype='float'``: the tensor stays float16/float32 (``bitwidth`` 16 or 32); no range fields.
    - ``dtype='int'`` without ``scale``: "integer, range still to be calibrated" (an AIMET override
      such as ``{"bitwidth": 8, "dtype": "int"}``); ``is_resolved`` is False.
    - ``dtype='int'`` with ``scale``: a complete encoding. Per-tensor fields are scalars;
      per-channel fields are tuples of equal length (one per channel) and ``axis`` says which
      axis of the tensor they run along (``None`` until the consumer decides, e.g. straight out
      of an AIMET file).

    ``signed`` is the storage type (int8 vs uint8, ...); ``zero_point`` is in that storage type's
    range (ONNX convention). ``min``/``max`` are the encoding range: the reals that the smallest and
    largest integers represent.
    """

    bitwidth: int
    dtype: str = "int"
    signed: bool = False
    min: float | tuple[float, ...] | None = None
    max: float | tuple[float, ...] | None = None
    scale: float | tuple[float, ...] | None = None
    zero_point: int | tuple[int, ...] | None = None
    symmetric: bool = False
    axis: int | None = None

    def __post_init__(self) -> None:
        if self.dtype not in ("int", "float"):
            raise ConfigError(f"encoding dtype must be 'int' or 'float', got {self.dtype!r}")
        bw = check_bitwidth(self.bitwidth, dtype=self.dtype)
        object.__setattr__(self, "bitwidth", bw)
        if self.dtype == "float":
            for f in ("min", "max", "scale", "zero_point", "axis"):
                object.__setattr__(self, f, None)
            object.__setattr__(self, "signed", True)
            object.__setattr__(self, "symmetric", False)
            return
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        for f in ("min", "max", "scale"):
            set_(f, _as_float(getattr(self, f), f))
        set_("zero_point", _as_int(self.zero_point, "zero_point"))
        set_("signed", bool(self.signed))
        set_("symmetric", bool(self.symmetric))
        if self.axis is not None:
            set_("axis", int(self.axis))
        if self.scale is None:
            if self.zero_point is not None:
                raise ValueError("an encoding with a zero_point needs a scale")
            if bw == 32 and not self.signed:
                set_("signed", True)
            return
        if self.zero_point is None:
            raise ValueError("an encoding with a scale needs a zero_point")
        per_channel = isinstance(self.scale, tuple)
        fields = {f: getattr(self, f) for f in ("min", "max", "scale", "zero_point")}
        for f, v in fields.items():
            if v is not None and isinstance(v, tuple) != per_channel:
                raise ValueError(f"{f} is {'not ' if per_channel else ''}per-channel but scale is"
                                 f"{'' if per_channel else ' not'}")
        if per_channel:
            n = len(self.scale)
            if n == 0:
                raise ValueError("a per-channel encoding needs at least one channel")
            for f, v in fields.items():
                if v is not None and len(v) != n:
                    raise ValueError(f"{f} has {len(v)} channels, scale has {n}")
        # Per-tensor fields are Python scalars here and are checked without numpy arrays
        # (per-channel quantization builds one per-tensor encoding per channel: thousands).
        if per_channel:
            scales = np.asarray(self.scale, dtype=np.float64)
            scale_ok = bool(np.all(np.isfinite(scales)) and np.all(scales > 0))
        else:
            scale_ok = math.isfinite(self.scale) and self.scale > 0
        if not scale_ok:
            raise ValueError(f"scale must be finite and > 0, got {self.scale}")
        if bw == 32 and not self.signed:
            # ONNX has no uint32 QuantizeLinear: 32-bit encodings are stored as int32.
            zp = np.asarray(self.zero_point, dtype=np.int64) - (1 << 31)
            set_("zero_point", _as_int(zp if per_channel else int(zp), "zero_point"))
            set_("signed", True)
        lo, hi = qrange(bw, self.signed)
        if per_channel:
            zps = np.asarray(self.zero_point, dtype=np.int64)
            zp_ok = not (np.any(zps < lo) or np.any(zps > hi))
        else:
            zp_ok = lo <= self.zero_point <= hi
        if not zp_ok:
            raise ValueError(f"zero_point {self.zero_point} outside [{lo}, {hi}] for "
                             f"{'' if self.signed else 'u'}int{bw} storage")
        if self.min is None or self.max is None:
            zps = np.atleast_1d(np.asarray(self.zero_point, dtype=np.int64))
            scales = np.atleast_1d(np.asarray(self.scale, dtype=np.float64))
            mins = (lo - zps) * scales
            maxs = (hi - zps) * scales
            set_("min", _as_float(mins if per_channel else float(mins[0]), "min"))
            set_("max", _as_float(maxs if per_channel else float(maxs[0]), "max"))

    # ----------------------------------------------------------------- constructors
    @classmethod
    def float_(cls, bitwidth: int = 32) -> Encoding:
        """Keep the tensor in float (float16 for 16, float32 for 32)."""
        return cls(bitwidth=bitwidth, dtype="float")

    @classmethod
    def from_scale_zero_point(cls, scale: Any, zero_point: Any, bitwidth: int = 8, *,
                              signed: bool = False, symmetric: bool = False,
                              axis: int | None = None) -> Encoding:
        """An encoding from ONNX-convention scale and zero point (scalars or per-channel lists)."""
        return cls(bitwidth=bitwidth, signed=signed, scale=scale, zero_point=zero_point,
                   symmetric=symmetric, axis=axis)

    # ----------------------------------------------------------------- properties
    @property
    def is_float(self) -> bool:
        return self.dtype == "float"

    @property
    def is_resolved(self) -> bool:
        """True for float encodings and for integer encodings that have a scale."""
        return self.is_float or self.scale is not None

    @property
    def per_channel(self) -> bool:
        return isinstance(self.scale, tuple)

    @property
    def num_channels(self) -> int | None:
        return len(self.scale) if self.per_channel else None

    @property
    def qmin(self) -> int:
        return qrange(self.bitwidth, self.signed)[0]

    @property
    def qmax(self) -> int:
        return qrange(self.bitwidth, self.signed)[1]

    @property
    def levels(self) -> int:
        """Number of steps between qmin and qmax (2^bw - 1)."""
        return (1 << self.bitwidth) - 1

    @property
    def onnx_elem_type(self) -> int:
        """The ONNX ``TensorProto`` element type to store the quantized tensor in."""
        if self.is_float:
            return TensorProto.FLOAT16 if self.bitwidth == 16 else TensorProto.FLOAT
        return _ONNX_INT[(self.bitwidth, self.signed)]

    @property
    def storage_dtype(self) -> str:
        """The ONNX dtype name: int4/uint4/int8/uint8/int16/uint16/int32, float16/float32."""
        if self.is_float:
            return "float16" if self.bitwidth == 16 else "float32"
        return f"{'' if self.signed else 'u'}int{self.bitwidth}"

    @property
    def numpy_dtype(self) -> np.dtype:
        """The numpy dtype of unpacked quantized values (4-bit values live in int8/uint8)."""
        if self.is_float:
            return np.dtype(np.float16 if self.bitwidth == 16 else np.float32)
        return np.dtype(_NUMPY_INT[(self.bitwidth, self.signed)])

    @property
    def aimet_offset(self) -> int | tuple[int, ...]:
        """The AIMET/QNN JSON offset: ``real = (q_u + offset) * scale`` with q_u the *unsigned*
        integer, so ``offset = -zero_point_of_the_unsigned_storage`` (0 or negative)."""
        self._need_range("aimet_offset")
        shift = (1 << (self.bitwidth - 1)) if self.signed else 0
        zps = np.atleast_1d(np.asarray(self.zero_point, dtype=np.int64)) + shift
        out = tuple(int(-z) for z in zps)
        return out if self.per_channel else out[0]

    @property
    def vendor_offset(self) -> int | tuple[int, ...]:
        """The vendor compile-side offset (custom I/O Scale/Offset, Glow lineage):
        ``real = (q - offset) * scale`` on the stored integer. It is the ONNX zero point of the
        same storage type; for the int8 activations custom I/O uses, ``offset == zero_point``."""
        self._need_range("vendor_offset")
        return self.zero_point

    # ----------------------------------------------------------------- arrays for ONNX
    def scale_array(self, dtype: Any = np.float32) -> np.ndarray:
        """Scale as a numpy array (0-d per-tensor, 1-d per-channel); float32 for ONNX by default."""
        self._need_range("scale_array")
        return np.asarray(self.scale, dtype=dtype)

    def zero_point_array(self) -> np.ndarray:
        """Zero point as a numpy array of the storage dtype (0-d per-tensor, 1-d per-channel)."""
        self._need_range("zero_point_array")
        return np.asarray(self.zero_point, dtype=self.numpy_dtype)

    # ----------------------------------------------------------------- math
    def _need_range(self, what: str) -> None:
        if self.is_float:
            raise ValueError(f"{what}: a float encoding has no scale")
        if self.scale is None:
            raise ValueError(f"{what}: this int{self.bitwidth} encoding has no range yet "
                             "(calibrate first)")

    def _broadcast(self, values: Any, ndim: int) -> np.ndarray:
        arr = np.asarray(values, dtype=np.float64)
        if not self.per_channel:
            return arr
        if self.axis is None:
            raise ValueError("per-channel encoding without an axis: call with_axis() first")
        axis = self.axis % ndim if ndim else 0
        shape = [1] * ndim
        shape[axis] = arr.size
        return arr.reshape(shape)

    def _check_channels_of(self, x: np.ndarray) -> None:
        if self.per_channel:
            if self.axis is None:
                raise ValueError("per-channel encoding without an axis: call with_axis() first")
            if x.ndim == 0 or not -x.ndim <= self.axis < x.ndim:
                raise DataError(f"per-channel axis {self.axis} does not exist in a tensor of "
                                f"shape {x.shape}")
            if x.shape[self.axis] != self.num_channels:
                raise DataError(f"tensor has {x.shape[self.axis]} channels along axis "
                                f"{self.axis}, encoding has {self.num_channels}")

    def quantize(self, x: Any) -> np.ndarray:
        """Real values -> stored integers (ONNX QuantizeLinear: round half to even, saturate).

        NaN maps to the zero point (the integer representing 0.0); ±Inf saturate. Float encodings
        just cast to float16/float32.
        """
        if self.is_float:
            return np.asarray(x).astype(self.numpy_dtype)
        self._need_range("quantize")
        x = np.asarray(x, dtype=np.float64)
        self._check_channels_of(x)
        scale = self._broadcast(self.scale, x.ndim)
        zp = self._broadcast(self.zero_point, x.ndim)
        with np.errstate(invalid="ignore", over="ignore"):
            q = np.round(x / scale) + zp
            q = np.where(np.isnan(q), zp, q)
        q = np.clip(q, self.qmin, self.qmax)
        return q.astype(self.numpy_dtype)

    def dequantize(self, q: Any, dtype: Any = np.float32) -> np.ndarray:
        """Stored integers -> reals: ``(q - zero_point) * scale`` (ONNX DequantizeLinear)."""
        if self.is_float:
            return np.asarray(q).astype(dtype)
        self._need_range("dequantize")
        q = np.asarray(q)
        self._check_channels_of(q)
        scale = self._broadcast(self.scale, q.ndim)
        zp = self._broadcast(self.zero_point, q.ndim)
        return ((q.astype(np.float64) - zp) * scale).astype(dtype)

    def fake_quantize(self, x: Any, dtype: Any = np.float32) -> np.ndarray:
        """``dequantize(quantize(x))``: what the quantized graph computes for ``x``."""
        return self.dequantize(self.quantize(x), dtype=dtype)

    # ----------------------------------------------------------------- variants
    def with_storage(self, signed: bool) -> Encoding:
        """The same grid stored signed (zero_point - 2^(b-1)) or unsigned (zero_point + 2^(b-1))."""
        if self.is_float or signed == self.signed:
            return self
        if self.scale is None:
            return dataclasses.replace(self, signed=signed)
        shift = -(1 << (self.bitwidth - 1)) if signed else (1 << (self.bitwidth - 1))
        zps = np.asarray(self.zero_point, dtype=np.int64) + shift
        return dataclasses.replace(self, signed=signed,
                                   zero_point=tuple(int(z) for z in zps) if self.per_channel
                                   else int(zps))

    def with_axis(self, axis: int | None) -> Encoding:
        """The same encoding with its per-channel axis set."""
        return dataclasses.replace(self, axis=axis)

    def channel(self, index: int) -> Encoding:
        """The per-tensor encoding of one channel of a per-channel encoding."""
        if not self.per_channel:
            raise ValueError("channel(): not a per-channel encoding")
        return dataclasses.replace(self, min=self.min[index], max=self.max[index],
                                   scale=self.scale[index], zero_point=self.zero_point[index],
                                   axis=None)

    def channels(self) -> list[Encoding]:
        """The per-tensor encodings of all channels (``[self]`` for a per-tensor encoding)."""
        if not self.per_channel:
            return [self]
        return [self.channel(i) for i in range(self.num_channels)]

    def check_channels(self, expected: int, *, where: str | None = None,
                       field: str | None = None) -> None:
        """Refuse a per-channel encoding whose channel count differs from ``expected``."""
        if self.per_channel and self.num_channels != expected:
            raise ConfigError(
                f"per-channel encoding has {self.num_channels} entries but the tensor has "
                f"{expected} channels", where=where, field=field,
                hint="give one encoding per output channel, or a single per-tensor encoding")

    def isclose(self, other: Encoding, *, rel_tol: float = 1e-9, abs_tol: float = 1e-12) -> bool:
        """Equal up to float rounding in min/max/scale (for round trips through text formats)."""
        if not isinstance(other, Encoding):
            return False
        exact = ("bitwidth", "dtype", "signed", "zero_point", "symmetric", "axis")
        if any(getattr(self, f) != getattr(other, f) for f in exact):
            return False
        for f in ("min", "max", "scale"):
            a, b = getattr(self, f), getattr(other, f)
            if (a is None) != (b is None):
                return False
            if a is None:
                continue
            a, b = np.atleast_1d(a), np.atleast_1d(b)
            if a.shape != b.shape or not np.allclose(a, b, rtol=rel_tol, atol=abs_tol):
                return False
        return True

    def describe(self) -> str:
        """A short human-readable form for logs and reports."""
        if self.is_float:
            return self.storage_dtype
        if self.scale is None:
            return f"{self.storage_dtype} (uncalibrated)"
        if self.per_channel:
            return (f"{self.storage_dtype} per-channel x{self.num_channels} axis={self.axis} "
                    f"{'sym' if self.symmetric else 'asym'}")
        return (f"{self.storage_dtype} [{self.min:.6g}, {self.max:.6g}] scale={self.scale:.6g} "
                f"zp={self.zero_point}{' sym' if self.symmetric else ''}")


def combine_channels(encodings: Sequence[Encoding], axis: int | None = None) -> Encoding:
    """Per-tensor encodings (one per channel) -> one per-channel encoding along ``axis``.

    All channels must share bitwidth and symmetric flag; if their storage differs (some signed,
    some unsigned), all are stored signed (any unsigned zero point shifts into the signed range).
    """
    if not encodings:
        raise ValueError("combine_channels: no channels")
    first = encodings[0]
    if any(e.is_float or not e.is_resolved or e.per_channel for e in encodings):
        raise ValueError("combine_channels: channels must be resolved per-tensor int encodings")
    for e in encodings[1:]:
        if e.bitwidth != first.bitwidth or e.symmetric != first.symmetric:
            raise ValueError("combine_channels: channels differ in bitwidth or symmetry")
    signed = any(e.signed for e in encodings)
    encs = [e.with_storage(signed) for e in encodings]
    return Encoding(bitwidth=first.bitwidth, signed=signed, symmetric=first.symmetric, axis=axis,
                    min=tuple(e.min for e in encs), max=tuple(e.max for e in encs),
                    scale=tuple(e.scale for e in encs),
                    zero_point=tuple(e.zero_point for e in encs))

