"""Kernel internals that onnx's cases do not reach: the float32 erf's accuracy, blockwise evaluation
of non-contiguous and multi-block inputs, LeakyRelu/PRelu for every slope range, im2col chunks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from aicc.backends.interpreter import kernels
from aicc.backends.interpreter.erf import erf
from aicc.backends.interpreter.kernels import NodeSpec, lookup
from aicc.backends.interpreter.ops_conv import _conv, conv_geometry
from tolerance import assert_reordered_close


def _kernel(op, attrs=None, n_out=1, version=20):
    spec = NodeSpec(name="n", op_type=op, version=version, attrs=attrs or {}, inputs=("x",),
                    outputs=tuple(f"y{i}" for i in range(n_out)))
    entry = lookup(op)
    fn = entry.builder(spec)
    return kernels.in_float32(fn) if entry.half_in_float32 else fn


def test_float32_erf_is_within_three_ulp_everywhere():
    xs = np.concatenate([np.linspace(-6, 6, 400_001, dtype=np.float32),
                         np.geomspace(1e-38, 1, 20_000).astype(np.float32),
                         -np.geomspace(1e-38, 1, 2_000).astype(np.float32)])
    got = erf(xs).astype(np.float64)
    ref = np.array([math.erf(float(v)) for v in xs])
    ulp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - ref) / ulp) <= 3


def test_float32_erf_special_values():
    got = erf(np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45], np.float32))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got[:4], [0, 0, 1, -1])
    assert np.signbit(got[1]) and np.isnan(got[4]) and got[5] > 0


def test_erf_of_other_dtypes_is_exact():
    x = np.linspace(-3, 3, 101)
    np.testing.assert_allclose(erf(x), [math.erf(v) for v in x], rtol=1e-15, atol=1e-16)
    assert erf(x.astype(np.float16)).dtype == np.float16


@pytest.mark.parametrize("op", ["Erf", "Gelu"])
def test_blockwise_kernels_handle_views_and_many_blocks(op):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((9 * kernels.BLOCK_MAX // 64 + 7, 64)).astype(np.float32) * 2
    fn = _kernel(op)
    whole = fn(np.ascontiguousarray(base.T))
    view = fn(base.T)  # a transposed view: blocks must be read in C order
    assert view.shape == base.T.shape and view.dtype == np.float32
    np.testing.assert_array_equal(view, whole)
    x64 = base.T.astype(np.float64)
    ref = np.vectorize(math.erf)(x64 / math.sqrt(2) if op == "Gelu" else x64)
    if op == "Gelu":
        ref = 0.5 * x64 * (1 + ref)
    np.testing.assert_allclose(view, ref, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("slope", [0.01, 0.5, 1.0, 1.5, -0.3, 0.0])
def test_leaky_relu_matches_the_definition_for_any_slope(slope):
    x = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
    y = _kernel("LeakyRelu", {"alpha": slope})(x)
    np.testing.assert_array_equal(y, np.where(x < 0, x * np.float32(slope), x))


def test_prelu_with_mixed_per_channel_slopes():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    slope = np.array([[-0.5], [0.25], [2.0]], np.float32)
    y = _kernel("PRelu")(x, slope)
    np.testing.assert_array_equal(y, np.where(x < 0, x * slope, x))


def test_im2col_chunks_give_the_unchunked_result(monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 23, 19)).astype(np.float32)
    w = rng.standard_normal((7, 5, 3, 3)).astype(np.float32)
    begin, end, out = conv_geometry(x.shape[2:], (3, 3), (1, 2), (2, 1), [1, 2, 0, 1], "NOTSET")
    whole = _conv(x, w, (1, 2), (2, 1), begin, end, out, 1)
    import aicc.backends.interpreter.ops_conv as ops_conv

    monkeypatch.setattr(ops_conv, "_MIN_COLUMNS", 1)  # force one output row per chunk
    monkeypatch.setattr(ops_conv, "_COLUMN_BUDGET_FRACTION", 0.0)
    chunked = _conv(x, w, (1, 2), (2, 1), begin, end, out, 1)
    # the same products, summed by BLAS in chunks of another shape: equal up to summation order
    magnitude = _conv(np.abs(x), np.abs(w), (1, 2), (2, 1), begin, end, out, 1)
    assert_reordered_close(chunked, whole, terms=5 * 3 * 3, magnitude=magnitude, what="conv")
