"""QNN quantization modes: a real range (or the data) in, an Encoding out.

The four modes of the QNN quantization page (``seeds/quantization.txt``), exactly as it describes
them (per-channel weights and bias encodings build on them in ``weights``):

- ``tf`` (default): the true range, then (1) minimum range 0.0001: ``max = max(max, min + 0.0001)``,
  (2) zero exactly representable: data >= 0 -> ``min = 0``; data <= 0 -> ``max = 0``; mixed signs ->
  keep the step ``(max - min) / (2^b - 1)``, set ``offset = round(-min / step)`` and shift the range
  to ``[-offset * step, (2^b - 1 - offset) * step]``. Stored unsigned by default (zero_point =
  offset), or signed (zero_point = offset - 2^(b-1)).
- ``symmetric``: ``new_max = max(|min|, |max|)``, range (-new_max, new_max) on the signed grid the
  way AIMET/QNN encode it: ``step = new_max / (2^(b-1) - 1)``, zero_point 0 in int8 storage (AIMET
  offset -2^(b-1)), encoding range ``[-2^(b-1) * step, new_max]``; this reproduces the per-channel
  examples of the QNN page (e.g. max 0.7011175 -> scale 0.0055206, min -0.7066381).
- ``enhanced``: searches the range with the least quantization noise on the data's histogram
  (``calibration.enhanced_range``: long tails may be clipped), then applies the ``tf`` rules, so it
  still honours the minimum range and exact zero.
- ``adjusted`` (QNN: weights, 8-bit): aicc's reading of "the max will be expanded or the min will
  be decreased if necessary": where ``tf`` *shifts* both ends to put zero on the grid (which can
  leave up to half a step of the true range outside, e.g. 5.1 -> 5.08), ``adjusted`` only ever
  *widens*: it picks the integer zero point whose smallest covering step is least, then lowers min
  or raises max so that the encoding range still contains the whole true range. The page reserves
  it for 8-bit weights; aicc accepts 4/8/16 bits.

A degenerate or non-finite range is never an error here: NaN ends are dropped, infinite ends are
clamped to float32's range and a zero-width range gets the minimum range; each such fix is logged
and, when a ``notes`` list is given, recorded there naming the tensor.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ..errors import ConfigError, DataError, did_you_mean
from .calibration import enhanced_range
from .encodings import Encoding, check_bitwidth
from .histogram import DEFAULT_NUM_BINS, FLOAT32_MAX, Histogram, TensorStats, finite_range

__all__ = [
    "MIN_RANGE",
    "MODES",
    "prepare_range",
    "tf_encoding",
    "symmetric_encoding",
    "adjusted_encoding",
    "enhanced_encoding",
    "encoding_for_mode",
    "range_encoding",
]

logger = logging.getLogger(__name__)

MIN_RANGE = 1e-4
MODES = ("tf", "symmetric", "enhanced", "adjusted")


def _note(notes: list[str] | None, name: str | None, msg: str, level: int = logging.INFO) -> None:
    """Log ``msg`` about tensor ``name``; with a ``notes`` list the caller reports it (as one
    summary for many tensors), so it is logged at DEBUG level only and appended."""
    text = f"tensor '{name}': {msg}" if name else msg
    logger.log(level if notes is None else logging.DEBUG, "%s", text)
    if notes is not None:
        notes.append(text)


def prepare_range(lo: Any, hi: Any, *, name: str | None = None,
                  notes: list[str] | None = None) -> tuple[float, float]:
    """A finite range with ``hi - lo >= MIN_RANGE`` (the QNN rule ``max = max(max, min + 0.0001)``).

    NaN ends are replaced (by the other end, or 0), infinite ends clamped to float32's range;
    ``lo > hi`` is refused. Every change is noted, naming the tensor.
    """
    lo, hi = float(lo), float(hi)
    if math.isnan(lo) or math.isnan(hi):
        if math.isnan(lo) and math.isnan(hi):
            lo = hi = 0.0
        elif math.isnan(lo):
            lo = hi
        else:
            hi = lo
        _note(notes, name, f"NaN range end replaced; range [{lo!r}, {hi!r}]", logging.WARNING)
    if abs(lo) > FLOAT32_MAX or abs(hi) > FLOAT32_MAX:
        lo = min(max(lo, -FLOAT32_MAX), FLOAT32_MAX)
        hi = min(max(hi, -FLOAT32_MAX), FLOAT32_MAX)
        _note(notes, name, "range clamped to float32's finite range", logging.WARNING)
    if lo > hi:
        raise DataError(f"range min {lo!r} > max {hi!r}",
                        field=f"tensor '{name}'" if name else None)
    if hi - lo < MIN_RANGE:
        new_hi = max(hi, lo + MIN_RANGE)
        if hi == lo:
            _note(notes, name, f"degenerate range [{lo!r}, {hi!r}] (constant or no data) widened "
                               f"to [{lo!r}, {new_hi!r}] (minimum range {MIN_RANGE})",
                  logging.WARNING)
        else:
            _note(notes, name, f"range [{lo!r}, {hi!r}] narrower than {MIN_RANGE}; max raised to "
                               f"{new_hi!r}")
        hi = new_hi
    return lo, hi


def _signed_default(signed: bool | None, default: bool) -> bool:
    return default if signed is None else bool(signed)


def tf_encoding(lo: Any, hi: Any, bitwidth: int = 8, *, signed: bool = False,
                name: str | None = None, notes: list[str] | None = None) -> Encoding:
    """QNN ``tf``: true range, minimum range, zero exactly representable (module docstring)."""
    bitwidth = check_bitwidth(bitwidth)
    lo, hi = prepare_range(lo, hi, name=name, notes=notes)
    levels = (1 << bitwidth) - 1
    if lo >= 0:            # strictly positive: 0 is the smallest integer
        lo, scale, offset = 0.0, hi / levels, 0
    elif hi <= 0:          # strictly negative: 0 is the largest integer
        hi, scale, offset = 0.0, -lo / levels, levels
    else:                  # mixed: keep the step, shift so zero lands on an integer
        scale = (hi - lo) / levels
        offset = int(min(max(round(-lo / scale), 0), levels))
        lo = -offset * scale
        hi = (levels - offset) * scale
    zp = offset - (1 << (bitwidth - 1)) if signed else offset
    return Encoding(bitwidth=bitwidth, signed=signed, min=lo, max=hi, scale=scale, zero_point=zp)


def symmetric_encoding(lo: Any, hi: Any, bitwidth: int = 8, *, signed: bool = True,
                       name: str | None = None, notes: list[str] | None = None) -> Encoding:
    """QNN ``symmetric``: range (-m, m), m = max(|min|, |max|), on the signed grid (zp 0)."""
    bitwidth = check_bitwidth(bitwidth)
    lo, hi = prepare_range(lo, hi, name=name, notes=notes)
    m = max(abs(lo), abs(hi), MIN_RANGE / 2)
    half = 1 << (bitwidth - 1)
    scale = m / (half - 1)
    return Encoding(bitwidth=bitwidth, signed=True, min=-half * scale, max=m, scale=scale,
                    zero_point=0, symmetric=True).with_storage(signed)


def adjusted_encoding(lo: Any, hi: Any, bitwidth: int = 8, *, signed: bool = False,
                      name: str | None = None, notes: list[str] | None = None) -> Encoding:
    """QNN ``adjusted``: like ``tf`` but only widening (lower min / raise max) to put zero on the
    grid, so the encoding range always contains the true range (module docstring)."""
    bitwidth = check_bitwidth(bitwidth)
    lo, hi = prepare_range(lo, hi, name=name, notes=notes)
    if lo >= 0 or hi <= 0:
        return tf_encoding(lo, hi, bitwidth, signed=signed, name=name)
    levels = (1 << bitwidth) - 1
    ideal = levels * (-lo) / (hi - lo)
    best = None
    for zp in {math.floor(ideal), math.ceil(ideal)}:
        zp = min(max(zp, 1), levels - 1)
        step = max(-lo / zp, hi / (levels - zp))
        if best is None or step < best[1] or (step == best[1] and zp < best[0]):
            best = (zp, step)
    offset, scale = best
    new_lo, new_hi = -offset * scale, (levels - offset) * scale
    # float rounding must not cut the true range
    if new_lo > lo or new_hi < hi:
        scale = math.nextafter(scale, math.inf)
        new_lo, new_hi = -offset * scale, (levels - offset) * scale
    zp = offset - (1 << (bitwidth - 1)) if signed else offset
    return Encoding(bitwidth=bitwidth, signed=signed, min=new_lo, max=new_hi, scale=scale,
                    zero_point=zp)


def _histogram_of(values: Any = None, stats: TensorStats | Histogram | None = None,
                  num_bins: int = DEFAULT_NUM_BINS) -> Histogram:
    if isinstance(stats, TensorStats):
        stats.require_histogram("the enhanced mode")
        return stats.histogram
    if stats is not None:
        return stats
    return Histogram.from_values(values, num_bins)


def enhanced_encoding(values: Any = None, bitwidth: int = 8, *,
                      stats: TensorStats | Histogram | None = None, signed: bool = False,
                      num_bins: int = 2048, name: str | None = None,
                      notes: list[str] | None = None) -> Encoding:
    """QNN ``enhanced``: the least-noise range on the data's (or the stats') histogram, then tf."""
    bitwidth = check_bitwidth(bitwidth)
    h = _histogram_of(values, stats, num_bins)
    lo, hi = enhanced_range(h, bitwidth)
    if (lo, hi) != (h.min, h.max) and h.total:
        _note(notes, name, f"enhanced range [{lo:.6g}, {hi:.6g}] of true [{h.min:.6g}, "
                           f"{h.max:.6g}]", logging.DEBUG)
    return tf_encoding(lo, hi, bitwidth, signed=signed, name=name, notes=notes)


def encoding_for_mode(mode: str, values: Any = None, *,
                      stats: TensorStats | Histogram | None = None, bitwidth: int = 8,
                      signed: bool | None = None, name: str | None = None,
                      notes: list[str] | None = None, where: str | None = None) -> Encoding:
    """Encode a tensor's ``values`` (or its calibration ``stats``) with a QNN mode.

    ``signed`` defaults to unsigned storage for tf/enhanced/adjusted and signed for symmetric.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown quantization mode {mode!r}", where=where, field="mode",
                          hint=did_you_mean(str(mode), MODES))
    if mode == "enhanced":
        return enhanced_encoding(values, bitwidth, stats=stats,
                                 signed=_signed_default(signed, False), name=name, notes=notes)
    if stats is not None:
        lo, hi = (stats.min, stats.max)
    else:
        lo, hi, bad = finite_range(values)
        if bad:
            _note(notes, name, f"{bad} non-finite values ignored", logging.WARNING)
    return range_encoding(mode, lo, hi, bitwidth, signed, name, notes)


def range_encoding(mode: str, lo: float, hi: float, bitwidth: int, signed: bool | None,
                    name: str | None, notes: list[str] | None) -> Encoding:
    """The encoding of a known range with a range-only mode (tf, adjusted, symmetric)."""
    if mode == "tf":
        return tf_encoding(lo, hi, bitwidth, signed=_signed_default(signed, False), name=name,
                           notes=notes)
    if mode == "adjusted":
        return adjusted_encoding(lo, hi, bitwidth, signed=_signed_default(signed, False),
                                 name=name, notes=notes)
    return symmetric_encoding(lo, hi, bitwidth, signed=_signed_default(signed, True), name=name,
                              notes=notes)
