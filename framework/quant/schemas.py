"""Vendor quantization schemas: (min, max, bitwidth) in, an Encoding out.

These are the values of qaic-compile's ``-quantization-schema-activations`` and
``-quantization-schema-constants``. The vendor compiler is of Glow lineage; its schemas map a range
onto a signed storage type, ``real = (q - offset) * scale`` with ``offset`` the stored zero point,
which is exactly ONNX's convention (so ``Encoding.vendor_offset == zero_point``). Every schema first
applies the QNN rules shared across aicc: the minimum range 0.0001 and a range that contains 0.

- ``asymmetric``: the whole range ``[min(min, 0), max(max, 0)]`` on the signed grid with a
  zero point nudged to an integer (the same arithmetic as QNN ``tf``, stored int8: zero_point =
  tf offset - 2^(b-1)).
- ``symmetric``: zero point 0, signed. The step is the smallest that fits both ends on the
  asymmetric integer range of a signed type: ``max(-min / 2^(b-1), max / (2^(b-1) - 1))``, so a
  negative end may use -128 (QNN's ``symmetric`` mode instead divides max(|min|, |max|) by 127).
- ``symmetric_with_uint8`` (the default): ``symmetric`` for data with negative values; for data that
  is never negative (after ReLU, Sigmoid, ...), unsigned storage (uint8 for 8 bits) with zero point
  0 and step ``max / (2^b - 1)``, which doubles the resolution a signed type would give.
- ``symmetric_with_power2_scale``: ``symmetric`` with the step rounded *up* to a power of two, so
  that rescaling is a shift (the range only grows; nothing new is clipped).
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import ConfigError, did_you_mean
from .calibration import DEFAULT_PERCENTILE, select_range
from .encodings import Encoding, check_bitwidth
from .modes import prepare_range, tf_encoding
from .histogram import Histogram, TensorStats

__all__ = [
    "SCHEMAS",
    "DEFAULT_SCHEMA",
    "parse_schema",
    "schema_encoding",
    "calibrated_encoding",
    "asymmetric",
    "symmetric",
    "symmetric_with_uint8",
    "symmetric_with_power2_scale",
]

SCHEMAS = ("asymmetric", "symmetric", "symmetric_with_uint8", "symmetric_with_power2_scale")
DEFAULT_SCHEMA = "symmetric_with_uint8"
_ALIASES = {"asymmetric": "asymmetric", "symmetric": "symmetric",
            "symmetricwithuint8": "symmetric_with_uint8",
            "symmetricwithunsigned": "symmetric_with_uint8",
            "symmetricwithpower2scale": "symmetric_with_power2_scale"}


def parse_schema(text: Any, *, where: str | None = None,
                 field: str | None = "quantization-schema") -> str:
    """Canonical schema name from user text (case, ``-`` and ``_`` do not matter)."""
    if not isinstance(text, str):
        raise ConfigError(f"quantization schema must be a string, got {text!r}", where=where,
                          field=field, hint=f"valid: {', '.join(SCHEMAS)}")
    key = text.strip().lower().replace("_", "").replace("-", "")
    if key in _ALIASES:
        return _ALIASES[key]
    raise ConfigError(f"unknown quantization schema {text!r}", where=where, field=field,
                      hint=did_you_mean(text, SCHEMAS))


def _zero_range(lo: Any, hi: Any, name: str | None, notes: list[str] | None) -> tuple[float, float]:
    lo, hi = prepare_range(lo, hi, name=name, notes=notes)
    return min(lo, 0.0), max(hi, 0.0)


def asymmetric(lo: Any, hi: Any, bitwidth: int = 8, *, name: str | None = None,
               notes: list[str] | None = None) -> Encoding:
    """Full range with an integer zero point, signed storage."""
    return tf_encoding(lo, hi, bitwidth, signed=True, name=name, notes=notes)


def symmetric(lo: Any, hi: Any, bitwidth: int = 8, *, name: str | None = None,
              notes: list[str] | None = None) -> Encoding:
    """Zero point 0, signed; the smallest step covering both ends."""
    bitwidth = check_bitwidth(bitwidth)
    lo, hi = _zero_range(lo, hi, name, notes)
    half = 1 << (bitwidth - 1)
    scale = max(-lo / half, hi / (half - 1))
    return Encoding(bitwidth=bitwidth, signed=True, scale=scale, zero_point=0, symmetric=True,
                    min=-half * scale, max=(half - 1) * scale)


def symmetric_with_uint8(lo: Any, hi: Any, bitwidth: int = 8, *, name: str | None = None,
                         notes: list[str] | None = None) -> Encoding:
    """Unsigned with zero point 0 for data that is never negative, else ``symmetric``."""
    bitwidth = check_bitwidth(bitwidth)
    lo, hi = _zero_range(lo, hi, name, notes)
    if lo < 0 or bitwidth == 32:
        return symmetric(lo, hi, bitwidth, name=name)
    scale = hi / ((1 << bitwidth) - 1)
    return Encoding(bitwidth=bitwidth, signed=False, scale=scale, zero_point=0, symmetric=True,
                    min=0.0, max=hi)


def _power2_ceil(x: float) -> float:
    m, e = math.frexp(x)           # x = m * 2**e, 0.5 <= m < 1
    return math.ldexp(1.0, e - 1) if m == 0.5 else math.ldexp(1.0, e)


def symmetric_with_power2_scale(lo: Any, hi: Any, bitwidth: int = 8, *, name: str | None = None,
                                notes: list[str] | None = None) -> Encoding:
    """``symmetric`` with the step rounded up to a power of two."""
    base = symmetric(lo, hi, bitwidth, name=name, notes=notes)
    scale = _power2_ceil(base.scale)
    half = 1 << (base.bitwidth - 1)
    return Encoding(bitwidth=base.bitwidth, signed=True, scale=scale, zero_point=0,
                    symmetric=True, min=-half * scale, max=(half - 1) * scale)


_FUNCS = {"asymmetric": asymmetric, "symmetric": symmetric,
          "symmetric_with_uint8": symmetric_with_uint8,
          "symmetric_with_power2_scale": symmetric_with_power2_scale}


def schema_encoding(schema: str, lo: Any, hi: Any, bitwidth: int = 8, *, name: str | None = None,
                    notes: list[str] | None = None, where: str | None = None) -> Encoding:
    """Encode the range ``[lo, hi]`` with a vendor schema (any spelling ``parse_schema`` takes)."""
    return _FUNCS[parse_schema(schema, where=where)](lo, hi, bitwidth, name=name, notes=notes)


def calibrated_encoding(stats: TensorStats | Histogram, schema: str = DEFAULT_SCHEMA,
                        method: str | None = "None", bitwidth: int = 8, *,
                        percentile: float = DEFAULT_PERCENTILE, name: str | None = None,
                        notes: list[str] | None = None, where: str | None = None) -> Encoding:
    """Calibration statistics -> Encoding: range by ``method`` (``-quantization-calibration``),
    then ``schema`` (``-quantization-schema-activations``). MSE / SQNR search symmetric ranges when
    the schema is symmetric (every schema but ``asymmetric``)."""
    schema = parse_schema(schema, where=where)
    if name is None and isinstance(stats, TensorStats):
        name = stats.name
    lo, hi = select_range(stats, method, percentile=percentile, bitwidth=bitwidth,
                          symmetric=schema != "asymmetric", name=name, notes=notes)
    return schema_encoding(schema, lo, hi, bitwidth, name=name, notes=notes, where=where)
