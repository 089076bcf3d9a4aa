"""Encoding math and QNN modes: every worked number of seeds/quantization.txt, and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto

from aicc.errors import ConfigError, DataError
from aicc.quant import (
    MIN_RANGE,
    Encoding,
    adjusted_encoding,
    bias_encoding,
    check_bitwidth,
    encoding_for_mode,
    enhanced_encoding,
    per_channel_encoding,
    symmetric_encoding,
    tf_encoding,
    weight_channel_axis,
)

# ------------------------------------------------------------------ the page's worked examples


def test_doc_quantization_example():
    # "input values = [-1.8, -1.0, 0, 0.5]": min -1.803922, max 0.496078, step 0.009020, offset 200
    x = np.array([-1.8, -1.0, 0.0, 0.5])
    enc = encoding_for_mode("tf", x)
    assert enc.min == pytest.approx(-1.803922, abs=5e-7)
    assert enc.max == pytest.approx(0.496078, abs=5e-7)
    assert enc.scale == pytest.approx(0.009020, abs=5e-7)
    assert enc.zero_point == 200            # ONNX uint8 zero point
    assert enc.aimet_offset == -200         # AIMET/QNN JSON convention: real = (q + offset) * scale
    assert enc.storage_dtype == "uint8"
    q = enc.quantize(x)
    assert q.tolist() == [0, 89, 200, 255]
    assert q.dtype == np.uint8


def test_doc_dequantization_example():
    enc = tf_encoding(-1.8, 0.5)
    q = np.array([0, 89, 200, 255], dtype=np.uint8)
    deq = enc.dequantize(q, dtype=np.float64)
    doc = [-1.8039, -1.0011, 0.0000, 0.4961]
    # exact values are [-1.803922, -1.001176, 0, 0.496078]; each is within one unit of the page's
    # 4th decimal, and zero is exact
    np.testing.assert_allclose(deq, doc, atol=1e-4)
    assert deq[2] == 0.0
    # the page printed min + q * step with its 6-decimal min and step, truncated to 4 decimals
    page = np.trunc((-1.803922 + q * 0.009020) * 1e4) / 1e4
    np.testing.assert_allclose(page, doc, atol=1e-12)


def test_doc_formula_matches_onnx_rounding():
    # the page's formula round(255 * (x - min) / (max - min)) gives the same integers
    enc = tf_encoding(-1.8, 0.5)
    x = np.array([-1.8, -1.0, 0.0, 0.5])
    page = np.clip(np.round(255 * (x - enc.min) / (enc.max - enc.min)), 0, 255)
    assert page.tolist() == enc.quantize(x).tolist()


@pytest.mark.parametrize("lo,hi,emin,emax,zp", [
    (5.0, 10.0, 0.0, 10.0, 0),          # strictly positive: min set to 0
    (-20.0, -6.0, -20.0, 0.0, 255),     # strictly negative: max set to 0, zero is 255
    (-5.1, 5.1, -5.12, 5.08, 128),      # mixed: shifted by -0.02, zero is 128
])
def test_doc_zero_cases(lo, hi, emin, emax, zp):
    enc = tf_encoding(lo, hi)
    assert enc.min == pytest.approx(emin, abs=1e-9)
    assert enc.max == pytest.approx(emax, abs=1e-9)
    assert enc.zero_point == zp
    assert enc.dequantize(enc.quantize(0.0)) == 0.0


def test_doc_step_of_mixed_case():
    enc = tf_encoding(-5.1, 5.1)
    assert enc.scale == pytest.approx(0.04)
    # "The closest values representable are -0.02 and +0.02" before the shift; now 0 is 128
    assert enc.quantize(0.0) == 128


def test_minimum_range_rule():
    enc = tf_encoding(2.0, 2.0)
    assert enc.max - enc.min >= MIN_RANGE
    enc = tf_encoding(-3e-5, 2e-5)            # max = max(max, min + 0.0001)
    assert enc.max - enc.min == pytest.approx(MIN_RANGE, rel=1e-6)


def test_signed_storage_of_tf():
    enc = tf_encoding(-1.8, 0.5, signed=True)
    assert enc.zero_point == 200 - 128
    assert enc.storage_dtype == "int8"
    assert enc.aimet_offset == -200
    assert enc.vendor_offset == 72
    x = np.array([-1.8, -1.0, 0.0, 0.5])
    assert (enc.quantize(x).astype(int) + 128).tolist() == [0, 89, 200, 255]


# ------------------------------------------------------------------ modes


def test_symmetric_mode_matches_doc_per_channel_examples():
    # seeds/quantization.txt case 2: max 0.7011175155639648 -> scale 0.005520610358771377,
    # min -0.7066381259227362, offset -128
    for mx, scale, mn in [(0.7011175155639648, 0.005520610358771377, -0.7066381259227362),
                          (0.5228064656257629, 0.004116586343509945, -0.5269230519692729),
                          (0.7368279099464417, 0.005801794566507415, -0.7426297045129491)]:
        enc = symmetric_encoding(-0.5 * mx, mx)
        assert enc.scale == pytest.approx(scale, rel=1e-12)
        assert enc.min == pytest.approx(mn, rel=1e-12)
        assert enc.max == pytest.approx(mx, rel=1e-12)
        assert enc.zero_point == 0 and enc.signed and enc.symmetric
        assert enc.aimet_offset == -128


def test_symmetric_mode_new_max_is_abs_max():
    enc = symmetric_encoding(-3.0, 1.0)
    assert enc.max == pytest.approx(3.0)
    assert enc.quantize(-3.0) == -127 and enc.quantize(3.0) == 127
    unsigned = symmetric_encoding(-3.0, 1.0, signed=False)
    assert unsigned.zero_point == 128 and unsigned.storage_dtype == "uint8"
    np.testing.assert_allclose(unsigned.fake_quantize([-3.0, 0.5]), enc.fake_quantize([-3.0, 0.5]))


def test_adjusted_mode_only_widens():
    tf = tf_encoding(-5.1, 5.1)
    adj = adjusted_encoding(-5.1, 5.1)
    assert tf.max < 5.1                       # tf shifts and cuts the top
    assert adj.min <= -5.1 and adj.max >= 5.1  # adjusted covers the whole true range
    assert adj.dequantize(adj.quantize(0.0)) == 0.0
    # one end is exact, the other expanded just enough
    assert math.isclose(adj.min, -5.1, rel_tol=1e-12) or math.isclose(adj.max, 5.1, rel_tol=1e-12)
    # strictly positive / negative ranges: same as tf
    assert adjusted_encoding(5, 10).isclose(tf_encoding(5, 10))


def test_enhanced_mode_clips_long_tails():
    # most values near 0, a few far out: at 4 bits the full range wastes most of the 15 steps
    rng = np.random.default_rng(1)
    body = rng.normal(0.0, 1.0, 100_000)
    tails = np.array([20.0, -18.0, 22.0, -25.0] * 8)
    data = np.concatenate([body, tails])
    enh = enhanced_encoding(data, 4)
    tf = encoding_for_mode("tf", data, bitwidth=4)
    assert tf.max > 20.0 and tf.min < -24.0
    assert enh.max < 10.0 and enh.min > -10.0         # the tails are left outside
    assert enh.dequantize(enh.quantize(0.0)) == 0.0
    assert enh.max - enh.min >= MIN_RANGE

    def mse(enc):
        return float(np.mean((enc.fake_quantize(data, dtype=np.float64) - data) ** 2))
    assert mse(enh) < mse(tf) / 2


def test_enhanced_mode_keeps_range_when_tails_matter():
    # at 8 bits three far outliers cost more clipped than the rounding they save: range kept
    rng = np.random.default_rng(1)
    data = np.concatenate([rng.uniform(-100, 1000, 20_000), [20_000.0, -9_000.0]])
    enh = enhanced_encoding(data, 8)
    assert enh.max >= 10_000


def test_enhanced_keeps_min_range_and_zero_on_constant_data():
    enc = enhanced_encoding(np.full(100, 3.0))
    assert enc.max - enc.min >= MIN_RANGE and enc.min == 0.0


def test_unknown_mode_refused():
    with pytest.raises(ConfigError, match="unknown quantization mode 'symetric'.*symmetric"):
        encoding_for_mode("symetric", np.zeros(3))


# ------------------------------------------------------------------ bitwidths and dtypes


@pytest.mark.parametrize("bw", [3, 64, 0, 12])
def test_unsupported_bitwidths_refused(bw):
    with pytest.raises(ConfigError, match=f"unsupported integer bitwidth {bw}"):
        tf_encoding(-1, 1, bw)
    with pytest.raises(ConfigError, match="bitwidth"):
        Encoding(bitwidth=bw)


def test_bitwidth_roles():
    assert check_bitwidth(32, role="bias") == 32
    with pytest.raises(ConfigError, match="unsupported weight integer bitwidth 32"):
        check_bitwidth(32, role="weight")
    with pytest.raises(ConfigError, match="float bitwidth 8"):
        check_bitwidth(8, dtype="float")
    with pytest.raises(ConfigError, match="must be an integer"):
        check_bitwidth("8")


@pytest.mark.parametrize("bw,signed,dtype,proto", [
    (4, True, "int4", TensorProto.INT4), (4, False, "uint4", TensorProto.UINT4),
    (8, True, "int8", TensorProto.INT8), (8, False, "uint8", TensorProto.UINT8),
    (16, True, "int16", TensorProto.INT16), (16, False, "uint16", TensorProto.UINT16),
])
def test_storage_types(bw, signed, dtype, proto):
    enc = tf_encoding(-1.0, 2.0, bw, signed=signed)
    assert enc.storage_dtype == dtype and enc.onnx_elem_type == proto
    q = enc.quantize(np.linspace(-1, 2, 11))
    assert q.min() >= enc.qmin and q.max() <= enc.qmax
    assert enc.zero_point_array().dtype == enc.numpy_dtype
    assert enc.scale_array().dtype == np.float32


def test_int32_is_signed_storage():
    enc = tf_encoding(-1.0, 2.0, 32)
    assert enc.signed and enc.storage_dtype == "int32" and enc.onnx_elem_type == TensorProto.INT32
    assert enc.dequantize(enc.quantize(0.0)) == 0.0


def test_float_encodings():
    enc = Encoding.float_(16)
    assert enc.is_float and enc.is_resolved and enc.storage_dtype == "float16"
    assert enc.onnx_elem_type == TensorProto.FLOAT16
    assert enc.quantize([1.0, 2.5]).dtype == np.float16
    with pytest.raises(ConfigError):
        Encoding.float_(8)


def test_unresolved_encoding_refuses_math():
    enc = Encoding(bitwidth=8)
    assert not enc.is_resolved
    with pytest.raises(ValueError, match="calibrate first"):
        enc.quantize([1.0])


def test_invalid_encodings_refused():
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        Encoding(bitwidth=8, scale=0.0, zero_point=0)
    with pytest.raises(ValueError, match="scale must be finite and > 0"):
        Encoding(bitwidth=8, scale=float("nan"), zero_point=0)
    with pytest.raises(ValueError, match="zero_point 300 outside"):
        Encoding(bitwidth=8, scale=0.1, zero_point=300)
    with pytest.raises(ValueError, match="channels"):
        Encoding(bitwidth=8, scale=(0.1, 0.2), zero_point=(0,), signed=True)


def test_nan_and_inf_quantize():
    enc = tf_encoding(-1.0, 1.0)
    q = enc.quantize([np.nan, np.inf, -np.inf])
    assert q.tolist() == [enc.zero_point, 255, 0]


# ------------------------------------------------------------------ per-channel, per-row, bias


def test_per_channel_symmetric_conv_weights():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3, 3, 3)) * np.array([1, 2, 0.5, 4])[:, None, None, None]
    enc = per_channel_encoding(w, axis=weight_channel_axis("Conv"))
    assert enc.per_channel and enc.num_channels == 4 and enc.axis == 0
    assert enc.symmetric and enc.signed and enc.zero_point == (0, 0, 0, 0)
    for c in range(4):
        assert enc.scale[c] == pytest.approx(np.abs(w[c]).max() / 127)
    fq = enc.fake_quantize(w)
    assert np.all(np.abs(fq - w) <= np.asarray(enc.scale)[:, None, None, None] / 2 + 1e-6)
    assert enc.scale_array().shape == (4,)


def test_per_channel_axes_of_ops():
    assert weight_channel_axis("ConvTranspose") == 1
    assert weight_channel_axis("Gemm") == 1 and weight_channel_axis("Gemm", trans_b=True) == 0
    assert weight_channel_axis("MatMul") == -1
    with pytest.raises(ValueError):
        weight_channel_axis("Relu")


def test_per_row_matmul_weights():
    w = np.array([[1.0, -10.0], [0.5, 2.0], [-0.25, 5.0]])   # [K=3, N=2]
    enc = per_channel_encoding(w, axis=-1)
    assert enc.axis == 1 and enc.num_channels == 2
    assert enc.scale[0] == pytest.approx(1.0 / 127) and enc.scale[1] == pytest.approx(10.0 / 127)
    fq = enc.fake_quantize(w)
    assert np.allclose(fq, w, atol=10.0 / 254 + 1e-9)


def test_per_channel_with_a_schema_and_all_zero_channel():
    w = np.zeros((2, 5))
    w[1] = np.linspace(-1, 1, 5)
    notes: list[str] = []
    enc = per_channel_encoding(w, axis=0, schema="symmetric_with_power2_scale", name="W",
                               notes=notes)
    assert all(s > 0 and math.isfinite(s) for s in enc.scale)
    assert any("W[channel 0]" in n and "degenerate" in n for n in notes)


def test_per_channel_channel_count_validation():
    enc = per_channel_encoding(np.ones((3, 2)), axis=0)
    enc.check_channels(3)
    with pytest.raises(ConfigError, match="3 entries but the tensor has 4 channels"):
        enc.check_channels(4, where="enc.json", field="tensor 'W'")
    with pytest.raises(DataError, match="channels along axis"):
        enc.quantize(np.ones((4, 2)))


def test_per_channel_needs_axis_for_math():
    enc = per_channel_encoding(np.ones((3, 2)), axis=0).with_axis(None)
    with pytest.raises(ValueError, match="axis"):
        enc.quantize(np.ones((3, 2)))


def test_bias_encoding():
    w = per_channel_encoding(np.array([[1.0, -2.0], [0.5, 0.25]]), axis=0)
    b = bias_encoding(0.02, w)
    assert b.storage_dtype == "int32" and b.zero_point == (0, 0) and b.axis == 0
    assert b.scale[0] == pytest.approx(0.02 * w.scale[0])
    bt = bias_encoding(0.5, tf_encoding(-1, 1))
    assert not bt.per_channel and bt.scale == pytest.approx(0.5 * tf_encoding(-1, 1).scale)
    with pytest.raises(DataError):
        bias_encoding(0.0, w, name="b")


# ------------------------------------------------------------------ properties

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
bitwidths = st.sampled_from([4, 8, 16])
MODE_FUNCS = [tf_encoding, adjusted_encoding, symmetric_encoding]


@settings(max_examples=200, deadline=None)
@given(a=finite, b=finite, bw=bitwidths, signed=st.booleans(), f=st.sampled_from(MODE_FUNCS))
def test_property_range_modes(a, b, bw, signed, f):
    lo, hi = min(a, b), max(a, b)
    enc = f(lo, hi, bw, signed=signed)
    assert enc.scale > 0 and math.isfinite(enc.scale)
    # zero exactly representable
    assert enc.qmin <= enc.zero_point <= enc.qmax
    assert enc.dequantize(enc.quantize(0.0), dtype=np.float64) == 0.0
    # minimum range honoured
    assert enc.max - enc.min >= MIN_RANGE * (1 - 1e-9)
    # error <= step / 2 inside the encoding range
    xs = np.linspace(enc.min, enc.max, 33)
    err = np.abs(enc.fake_quantize(xs, dtype=np.float64) - xs)
    assert np.all(err <= enc.scale / 2 * (1 + 1e-6) + 1e-12)


@settings(max_examples=60, deadline=None)
@given(data=hnp.arrays(np.float64, st.integers(1, 50),
                       elements=st.one_of(st.floats(-1e4, 1e4),
                                         st.sampled_from([np.nan, np.inf, -np.inf]))),
       mode=st.sampled_from(["tf", "symmetric", "enhanced", "adjusted"]), bw=bitwidths)
def test_property_any_data_gives_valid_encoding(data, mode, bw):
    enc = encoding_for_mode(mode, data, bitwidth=bw)
    assert enc.scale > 0 and math.isfinite(enc.scale)
    assert math.isfinite(enc.min) and math.isfinite(enc.max)
    assert enc.dequantize(enc.quantize(0.0), dtype=np.float64) == 0.0
    assert enc.max - enc.min >= MIN_RANGE * (1 - 1e-9)


@pytest.mark.parametrize("data", [np.zeros(10), np.full(7, -2.5), np.full(3, 1e30),
                                  np.array([np.nan, np.nan]), np.array([np.nan, 1.0, np.inf]),
                                  np.array([], dtype=np.float32)])
@pytest.mark.parametrize("mode", ["tf", "symmetric", "enhanced", "adjusted"])
def test_degenerate_data_never_gives_zero_or_nan_scale(data, mode):
    notes: list[str] = []
    enc = encoding_for_mode(mode, data, name="t0", notes=notes)
    assert enc.scale > 0 and math.isfinite(enc.scale)
    if data.size == 0 or np.ptp(data[np.isfinite(data)] if np.isfinite(data).any() else [0]) == 0:
        assert any("t0" in n for n in notes)


@settings(max_examples=100, deadline=None)
@given(lo=finite, width=st.floats(0, 1e5), bw=bitwidths)
def test_property_storage_change_keeps_values(lo, width, bw):
    enc = tf_encoding(lo, lo + width, bw)
    other = enc.with_storage(True)
    xs = np.linspace(enc.min, enc.max, 17)
    np.testing.assert_array_equal(enc.fake_quantize(xs), other.fake_quantize(xs))
    assert other.with_storage(False) == enc


@pytest.mark.parametrize("shape, axis", [((16, 3, 3, 3), 0), ((8, 5), 1), ((4, 6), -1)])
def test_per_channel_symmetric_fast_path_equals_channel_by_channel(shape, axis):
    # the vectorized symmetric per-channel path gives exactly the per-channel loop's encoding
    from aicc.quant.encodings import combine_channels
    from aicc.quant.modes import symmetric_encoding
    from aicc.quant.weights import per_channel_encoding
    rng = np.random.default_rng(0)
    k = shape[axis % len(shape)]
    spread = rng.uniform(0.001, 10, size=k).reshape(
        [-1 if i == axis % len(shape) else 1 for i in range(len(shape))])
    w = (rng.standard_normal(shape) * spread).astype(np.float32)
    rows = np.moveaxis(w, axis % w.ndim, 0).reshape(k, -1)
    loop = combine_channels([symmetric_encoding(float(r.min()), float(r.max()), 8) for r in rows],
                            axis=axis % w.ndim)
    assert per_channel_encoding(w, axis, 8) == loop
