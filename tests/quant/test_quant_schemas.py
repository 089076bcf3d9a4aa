"""Vendor schemas (-quantization-schema-activations / -constants)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aicc.errors import ConfigError
from aicc.quant import (
    DEFAULT_SCHEMA,
    MIN_RANGE,
    SCHEMAS,
    TensorObserver,
    calibrated_encoding,
    parse_schema,
    schema_encoding,
)


def test_default_schema():
    assert DEFAULT_SCHEMA == "symmetric_with_uint8"


@pytest.mark.parametrize("text,canon", [
    ("asymmetric", "asymmetric"), ("Symmetric", "symmetric"),
    ("symmetric_with_uint8", "symmetric_with_uint8"),
    ("SymmetricWithUint8", "symmetric_with_uint8"),
    ("symmetric-with-power2-scale", "symmetric_with_power2_scale"),
    ("SymmetricWithUnsigned", "symmetric_with_uint8"),
])
def test_parse_schema_spellings(text, canon):
    assert parse_schema(text) == canon


def test_parse_schema_refuses_unknown():
    with pytest.raises(ConfigError, match="unknown quantization schema 'symmetric_with_int8'"
                                          ".*symmetric_with_uint8"):
        parse_schema("symmetric_with_int8", where="cmdline")
    with pytest.raises(ConfigError, match="must be a string"):
        parse_schema(8)


def test_asymmetric_is_tf_stored_signed():
    enc = schema_encoding("asymmetric", -1.8, 0.5)
    assert enc.storage_dtype == "int8"
    assert enc.zero_point == 200 - 128           # tf offset 200 moved into int8
    assert enc.vendor_offset == enc.zero_point   # Glow lineage: real = (q - offset) * scale
    assert enc.min == pytest.approx(-1.803922, abs=1e-6)


def test_symmetric_uses_whole_signed_range():
    enc = schema_encoding("symmetric", -1.0, 0.5)
    assert enc.zero_point == 0 and enc.signed and enc.symmetric
    assert enc.scale == pytest.approx(1.0 / 128)    # -1.0 lands on -128
    assert enc.quantize(-1.0) == -128
    enc = schema_encoding("symmetric", -0.5, 1.27)
    assert enc.scale == pytest.approx(0.01)          # 1.27 lands on 127
    assert enc.quantize(1.27) == 127


def test_symmetric_with_uint8():
    pos = schema_encoding("symmetric_with_uint8", 0.0, 2.55)
    assert pos.storage_dtype == "uint8" and pos.zero_point == 0
    assert pos.scale == pytest.approx(0.01)
    assert pos.quantize(2.55) == 255
    pos = schema_encoding("symmetric_with_uint8", 1.0, 2.55)   # never negative: still uint8 from 0
    assert pos.min == 0.0 and pos.storage_dtype == "uint8"
    neg = schema_encoding("symmetric_with_uint8", -0.01, 2.55)
    assert neg.storage_dtype == "int8" and neg.zero_point == 0
    assert neg.isclose(schema_encoding("symmetric", -0.01, 2.55))
    wide = schema_encoding("symmetric_with_uint8", 0.0, 1.0, 16)
    assert wide.storage_dtype == "uint16"


def test_symmetric_with_power2_scale():
    enc = schema_encoding("symmetric_with_power2_scale", -1.0, 3.0)
    base = schema_encoding("symmetric", -1.0, 3.0)
    assert enc.scale >= base.scale
    m, _ = math.frexp(enc.scale)
    assert m == 0.5                                   # a power of two
    assert enc.scale == 2.0 ** -5                     # 3/127 = 0.0236 -> 1/32
    assert enc.max >= 3.0 and enc.zero_point == 0
    exact = schema_encoding("symmetric_with_power2_scale", -1.0, 0.5)
    assert exact.scale == 2.0 ** -7                   # 1/128 is already a power of two


@settings(max_examples=200, deadline=None)
@given(a=st.floats(-1e5, 1e5), b=st.floats(-1e5, 1e5), schema=st.sampled_from(SCHEMAS),
       bw=st.sampled_from([4, 8, 16]))
def test_property_schemas(a, b, schema, bw):
    lo, hi = min(a, b), max(a, b)
    enc = schema_encoding(schema, lo, hi, bw)
    assert enc.scale > 0 and math.isfinite(enc.scale)
    assert enc.dequantize(enc.quantize(0.0), dtype=np.float64) == 0.0
    assert enc.max - enc.min >= MIN_RANGE * (1 - 1e-9)
    if schema != "asymmetric":
        # symmetric schemas cover the range they were given (no shift)
        assert enc.min <= min(lo, 0.0) * (1 - 1e-12) + 1e-300
        assert enc.max >= max(hi, 0.0) * (1 - 1e-12)
    xs = np.linspace(enc.min, enc.max, 21)
    err = np.abs(enc.fake_quantize(xs, dtype=np.float64) - xs)
    assert np.all(err <= enc.scale / 2 * (1 + 1e-6))


@pytest.mark.parametrize("schema", SCHEMAS)
def test_schemas_on_degenerate_ranges(schema):
    notes: list[str] = []
    for lo, hi in [(0.0, 0.0), (float("nan"), float("nan")), (-3.0, -3.0), (-math.inf, math.inf)]:
        enc = schema_encoding(schema, lo, hi, name="act", notes=notes)
        assert enc.scale > 0 and math.isfinite(enc.scale)
        assert math.isfinite(enc.min) and math.isfinite(enc.max)
    assert all("tensor 'act'" in n for n in notes) and len(notes) >= 4


def test_calibrated_encoding_from_stats():
    rng = np.random.default_rng(0)
    o = TensorObserver("relu3")
    for _ in range(10):
        o.update(np.maximum(rng.normal(size=1000), 0))
    stats = o.stats()
    enc = calibrated_encoding(stats)                  # defaults: min/max, symmetric_with_uint8
    assert enc.storage_dtype == "uint8" and enc.zero_point == 0
    assert enc.max == pytest.approx(stats.max)
    pct = calibrated_encoding(stats, "asymmetric", "Percentile", percentile=99.0)
    assert pct.storage_dtype == "int8" and pct.max < stats.max
    sq = calibrated_encoding(stats, "symmetric", "SQNR", 4)
    assert sq.zero_point == 0 and sq.storage_dtype == "int4"
    notes: list[str] = []
    empty = TensorObserver("dead")
    empty.update(np.array([np.nan]))
    enc = calibrated_encoding(empty.stats(), notes=notes)
    assert enc.scale > 0 and any("tensor 'dead'" in n for n in notes)
    with pytest.raises(ConfigError, match="unknown calibration method"):
        calibrated_encoding(stats, method="Entropy")
