"""Quantization settings and the encoder: the ``quantize`` pass options in, validated
``QuantSettings`` out; calibration statistics or constant values in, Encodings (by QNN mode or
vendor schema, as the settings say) out.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from aicc.errors import ConfigError
from aicc.quant import (Encoding, TensorStats, adjusted_encoding, calibrated_encoding,
                        check_percentile, encoding_for_mode, enhanced_encoding, finite_range,
                        parse_calibration_method, parse_schema, per_channel_encoding,
                        schema_encoding, select_range, symmetric_encoding, tf_encoding)

__all__ = ["QuantSettings", "Encoder"]


@dataclasses.dataclass(frozen=True)
class QuantSettings:
    """Validated quantization settings (built from the pass options)."""

    act_schema: str
    const_schema: str
    act_mode: str
    param_mode: str
    method: str
    percentile: float
    act_bw: int
    weight_bw: int
    bias_bw: int
    per_channel: bool
    per_row: bool
    pack_4bit: bool
    float_bw: int
    float_bias_bw: int
    fuse_activations: bool = True
    #: intermediates of elementwise expressions left unquantized (``fusion``)
    fuse_elementwise: bool = True
    #: only what overrides cover is quantized; every other tensor stays float (no calibration)
    float_fallback: bool = False
    #: op types whose nodes keep their original (float) precision
    keep_op_types: tuple[str, ...] = ()

    @property
    def histogram_reader(self) -> str | None:
        """What reads activation histograms under these settings (for an error naming it), or
        None when each activation's range is enough (min-max calibration)."""
        if self.act_mode == "enhanced":
            return "act_quantizer 'enhanced'"
        return None if self.method == "None" else f"calibration method '{self.method}'"

    @classmethod
    def from_options(cls, o: Any) -> QuantSettings:
        where = "pass 'quantize'"
        method = parse_calibration_method(o.calibration, where=where, field="calibration")
        if o.act_quantizer == "enhanced" and method != "None":
            raise ConfigError(f"act_quantizer 'enhanced' searches its own range; calibration "
                              f"{method} cannot be combined with it", where=where,
                              hint="drop the calibration method, or use tf/symmetric")
        return cls(act_schema=parse_schema(o.activation_schema, where=where,
                                           field="activation_schema"),
                   const_schema=parse_schema(o.constant_schema, where=where,
                                             field="constant_schema"),
                   act_mode=o.act_quantizer, param_mode=o.param_quantizer, method=method,
                   percentile=check_percentile(o.percentile, where=where, field="percentile"),
                   act_bw=o.act_bitwidth, weight_bw=o.weight_bitwidth, bias_bw=o.bias_bitwidth,
                   per_channel=o.per_channel, per_row=o.per_row, pack_4bit=o.pack_4bit,
                   float_bw=o.float_bitwidth, float_bias_bw=o.float_bias_bitwidth,
                   fuse_activations=o.fuse_activations,
                   fuse_elementwise=o.fuse_elementwise, float_fallback=o.float_fallback,
                   keep_op_types=tuple(o.keep_op_types))


class Encoder:
    """Calibration statistics or constant values -> Encodings, by the settings."""

    def __init__(self, s: QuantSettings, notes: list[str]):
        self.s = s
        self.notes = notes

    def activation(self, stats: TensorStats, name: str, bitwidth: int | None = None,
                   symmetric: bool = False) -> Encoding:
        s, bw = self.s, bitwidth or self.s.act_bw
        if s.act_mode:
            mode = "symmetric" if symmetric else s.act_mode
            if mode == "enhanced":
                return enhanced_encoding(stats=stats, bitwidth=bw, name=name, notes=self.notes)
            lo, hi = select_range(stats, s.method, percentile=s.percentile, bitwidth=bw,
                                  symmetric=mode == "symmetric", name=name, notes=self.notes)
            make = {"tf": tf_encoding, "symmetric": symmetric_encoding,
                    "adjusted": adjusted_encoding}[mode]
            return make(lo, hi, bw, name=name, notes=self.notes)
        schema = "symmetric" if symmetric and s.act_schema == "asymmetric" else s.act_schema
        return calibrated_encoding(stats, schema, s.method, bw, percentile=s.percentile,
                                   name=name, notes=self.notes)

    def constant(self, values: np.ndarray, name: str, *, axis: int | None = None,
                 bitwidth: int | None = None, symmetric: bool = False) -> Encoding:
        s, bw = self.s, bitwidth or self.s.weight_bw
        if axis is not None:
            if s.param_mode:  # QNN: per-channel encodings are symmetric
                return per_channel_encoding(values, axis, bw, mode="symmetric", name=name,
                                            notes=self.notes)
            return per_channel_encoding(values, axis, bw, schema=s.const_schema, name=name,
                                        notes=self.notes)
        if s.param_mode:
            mode = "symmetric" if symmetric else s.param_mode
            return encoding_for_mode(mode, values, bitwidth=bw, name=name, notes=self.notes)
        lo, hi, _ = finite_range(values)
        schema = "symmetric" if symmetric and s.const_schema == "asymmetric" else s.const_schema
        return schema_encoding(schema, lo, hi, bw, name=name, notes=self.notes)
