"""Streaming statistics (TensorObserver, Histogram) and the calibration range-selection methods."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from aicc.errors import ConfigError
from aicc.quant import (
    CALIBRATION_METHODS,
    Histogram,
    TensorObserver,
    check_percentile,
    kl_range,
    kl_v2_range,
    mse_range,
    parse_calibration_method,
    percentile_range,
    schema_encoding,
    select_range,
    sqnr_db,
    sqnr_range,
)


def _stats(values, bins=512, batches=1):
    o = TensorObserver("t", bins)
    for b in np.array_split(np.asarray(values), batches):
        o.update(b)
    return o.stats()


def _gauss_with_outliers(seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0, 1, 100_000), rng.normal(0, 1, 20) * 30])


# ------------------------------------------------------------------ observer


def test_observer_streaming_matches_one_shot():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50_000)
    one = _stats(x)
    # first batch already holds the extremes: no re-binning, identical histogram
    order = np.argsort(np.abs(x))[::-1]
    streamed = _stats(x[order], batches=100)
    assert streamed.min == one.min and streamed.max == one.max
    np.testing.assert_allclose(streamed.histogram.counts, one.histogram.counts)


def test_observer_rebins_when_range_widens():
    rng = np.random.default_rng(1)
    x = np.sort(rng.normal(size=20_000))[::-1].copy()    # range widens downward batch by batch
    rng.shuffle(x[:10_000])
    streamed = _stats(x, batches=40)
    one = _stats(x)
    assert streamed.min == one.min and streamed.max == one.max
    assert streamed.count == pytest.approx(x.size, rel=1e-12)
    # re-binning smears counts by less than a couple of bins: the CDFs stay close
    edges = one.histogram.edges
    gap = np.abs(streamed.histogram.cdf(edges) - one.histogram.cdf(edges)).max()
    assert gap < 0.01 * x.size
    for q in (0.01, 0.5, 0.99):
        assert streamed.histogram.quantile(q) == pytest.approx(np.quantile(x, q), abs=0.05)


def test_observer_memory_does_not_grow():
    o = TensorObserver("t", 256)
    rng = np.random.default_rng(2)
    o.update(rng.normal(size=100))
    before = (o.nbytes(), sys.getsizeof(o.__dict__), sorted(vars(o)))
    for i in range(2000):
        o.update(rng.normal(size=64) * (1 + i / 100))      # keeps widening
    after = (o.nbytes(), sys.getsizeof(o.__dict__), sorted(vars(o)))
    assert before == after
    assert o.histogram.counts.shape == (256,)
    assert o.stats().count == pytest.approx(100 + 2000 * 64)


def test_observer_counts_and_reports_nonfinite():
    o = TensorObserver("act3")
    o.update(np.array([1.0, np.nan, np.inf, -np.inf, 2.0], dtype=np.float32))
    o.update(np.array([np.nan]))
    assert (o.nan, o.posinf, o.neginf) == (2, 1, 1)
    st_ = o.stats()
    assert st_.nonfinite == 4 and st_.min == 1.0 and st_.max == 2.0 and st_.count == 2
    assert any("act3" in n and "4 non-finite" in n for n in o.report())


def test_observer_degenerate_data():
    o = TensorObserver("zeros")
    o.update(np.zeros(1000))
    assert o.min == 0.0 and o.max == 0.0
    assert any("constant value" in n for n in o.report())
    o.update(np.array([0.5]))            # a point mass re-binned onto a real range
    assert o.histogram.total == 1001 and o.histogram.counts[0] == 1000
    empty = TensorObserver("nothing")
    empty.update(np.array([np.nan]))
    assert empty.min is None and any("no finite values" in n for n in empty.report())
    assert empty.stats().count == 0
    ints = TensorObserver("ints")
    ints.update(np.arange(10, dtype=np.int64))
    assert ints.max == 9.0


def test_observer_refuses_bad_bins():
    with pytest.raises(ValueError):
        TensorObserver("t", 0)
    with pytest.raises(ValueError):
        TensorObserver("t", True)


def test_histogram_fold_and_sides():
    h = Histogram.from_values(np.array([-3.0, -1.0, 1.0, 2.0]), 6)
    a = h.fold_abs(3)
    assert a.min == 0 and a.max == 3.0 and a.total == pytest.approx(4)
    pos, neg = h.side(True), h.side(False)
    assert pos.total + neg.total == pytest.approx(4)
    assert neg.max == 3.0 and pos.max == 2.0


@settings(max_examples=80, deadline=None)
@given(a=hnp.arrays(np.float64, st.integers(1, 200), elements=st.floats(-1e3, 1e3)),
       b=hnp.arrays(np.float64, st.integers(1, 200), elements=st.floats(-1e3, 1e3)))
def test_property_histogram_merge_totals(a, b):
    ha, hb = Histogram.from_values(a, 64), Histogram.from_values(b, 64)
    m = ha.merge(hb)
    assert m.min == min(a.min(), b.min()) and m.max == max(a.max(), b.max())
    assert m.total == pytest.approx(a.size + b.size)
    assert np.all(m.counts >= 0)


# ------------------------------------------------------------------ method names and percentile


def test_parse_calibration_method():
    assert parse_calibration_method(None) == "None"
    assert parse_calibration_method("klminimization") == "KLMinimization"
    assert parse_calibration_method("KLMinimizationV2") == "KLMinimizationV2"
    assert parse_calibration_method("sqnr") == "SQNR"
    with pytest.raises(ConfigError, match="unknown calibration method 'Percentil'.*Percentile"):
        parse_calibration_method("Percentil", where="cmdline")


@pytest.mark.parametrize("bad", [89.99, 100.01, -1, float("nan"), "99.9", True, None])
def test_percentile_outside_90_100_refused(bad):
    with pytest.raises(ConfigError, match="percentile"):
        check_percentile(bad)
    with pytest.raises(ConfigError):
        select_range(_stats([1.0, 2.0]), "Percentile", percentile=bad)


def test_percentile_range():
    x = np.linspace(0, 100, 100_001)
    s = _stats(x, bins=1000)
    assert percentile_range(s, 100) == (0.0, 100.0)
    lo, hi = percentile_range(s, 99.0)
    assert lo == pytest.approx(1.0, abs=0.05) and hi == pytest.approx(99.0, abs=0.05)
    lo, hi = select_range(s, "Percentile", percentile=90)
    assert lo == pytest.approx(10.0, abs=0.1) and hi == pytest.approx(90.0, abs=0.1)


# ------------------------------------------------------------------ methods


def test_minmax():
    s = _stats(np.array([-2.0, 1.0, 5.0]))
    assert select_range(s, "None") == (-2.0, 5.0)
    assert select_range(s, None) == (-2.0, 5.0)


def test_kl_symmetric_clips_outliers():
    x = _gauss_with_outliers()
    s = _stats(x, bins=2048)
    lo, hi = kl_range(s)
    assert lo == -hi                  # both tails reach beyond the threshold
    assert 3.0 < hi < 0.5 * np.abs(x).max()
    relu = _stats(np.maximum(x, 0), bins=2048)
    lo, hi = kl_range(relu)
    assert lo == 0.0 and 3.0 < hi < 0.5 * x.max()


def test_kl_keeps_the_tail_of_discrete_asymmetric_data():
    # issue 13: the example's input (17 pixel levels, half of them background at -0.81) was cut
    # at +0.82: folding |x| piled the bright pixels onto the background's spike, which hid them
    rng = np.random.default_rng(0)
    levels = (np.arange(17) / 16 - 0.3053) / 0.3760
    x = levels[rng.choice(17, size=2048, p=np.r_[0.5, np.full(16, 0.5 / 16)])]
    for bins in (512, 2048):
        lo, hi = kl_range(_stats(x, bins=bins))
        assert lo == x.min() and hi >= 0.9 * x.max(), (bins, lo, hi)


def test_kl_ignores_the_zero_spike_of_relu_outputs():
    # issue 13: half of a ReLU's outputs are exact zeros (exactly representable); their spike
    # made ever narrower windows look better (at 2048 bins the threshold fell to half the range)
    x = np.maximum(np.random.default_rng(0).normal(0, 1, 32768), 0)
    for bins in (512, 2048):
        lo, hi = kl_range(_stats(x, bins=bins))
        assert lo == 0.0 and 3.0 < hi <= x.max(), (bins, hi)
        lo2, hi2 = kl_v2_range(_stats(x, bins=bins))
        assert lo2 == 0.0 and 3.0 < hi2 <= x.max(), (bins, hi2)


def test_kl_v2_is_asymmetric():
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.exponential(1.0, 100_000) - 0.5, -rng.exponential(0.1, 20) * 40])
    s = _stats(x, bins=2048)
    lo, hi = kl_v2_range(s)
    assert lo < 0 < hi and not math.isclose(-lo, hi, rel_tol=0.05)
    assert s.min <= lo and hi <= s.max
    # sparse histograms still give a threshold (smoothing instead of skipping)
    sparse = _stats(np.array([-1.0, 0.0, 0.1, 7.0] * 10), bins=512)
    lo, hi = kl_v2_range(sparse)
    assert math.isfinite(lo) and math.isfinite(hi) and lo <= 0 <= hi


def test_kl_needs_enough_bins():
    notes: list[str] = []
    s = _stats(np.random.default_rng(0).normal(size=1000), bins=512)
    assert select_range(s, "KLMinimization", bitwidth=16, notes=notes) == (s.min, s.max)
    assert select_range(s, "KLMinimizationV2", bitwidth=16, notes=notes) == (s.min, s.max)
    assert len(notes) == 2 and "histogram bins" in notes[0]


def _measured_mse(x, lo, hi, bw=4):
    enc = schema_encoding("asymmetric", lo, hi, bw)
    return float(np.mean((enc.fake_quantize(x, dtype=np.float64) - x) ** 2))


def test_mse_beats_minmax_on_long_tails():
    x = _gauss_with_outliers(5)
    s = _stats(x, bins=2048)
    lo, hi = mse_range(s, 4)
    assert s.min < lo < 0 < hi < s.max
    assert _measured_mse(x, lo, hi) < _measured_mse(x, s.min, s.max) / 2
    slo, shi = mse_range(s, 4, symmetric=True)
    assert slo == -shi


def test_sqnr_maximises_modelled_sqnr():
    x = _gauss_with_outliers(6)
    s = _stats(x, bins=2048)
    lo, hi = sqnr_range(s, 4)
    assert sqnr_db(s, lo, hi, 4, gamma=3.0) >= sqnr_db(s, s.min, s.max, 4, gamma=3.0)
    # clipping weighs more than in MSE, so SQNR keeps at least as wide a range
    mlo, mhi = mse_range(s, 4)
    assert hi - lo >= mhi - mlo
    # with gamma = 1 it is the MSE choice
    assert sqnr_range(s, 4, gamma=1.0) == pytest.approx(mse_range(s, 4))
    with pytest.raises(ConfigError):
        sqnr_range(s, 4, gamma=0)


@pytest.mark.parametrize("method", CALIBRATION_METHODS)
@pytest.mark.parametrize("values", [np.zeros(50), np.full(9, -4.0), np.array([np.nan, np.inf]),
                                    np.array([0.0, 1e-9])])
def test_methods_on_degenerate_data(method, values):
    notes: list[str] = []
    s = _stats(values)
    lo, hi = select_range(s, method, percentile=99.9, notes=notes)
    assert math.isfinite(lo) and math.isfinite(hi) and lo <= hi
    enc = schema_encoding("symmetric_with_uint8", lo, hi, name="t", notes=notes)
    assert enc.scale > 0 and math.isfinite(enc.scale)
    assert notes and all("tensor 't'" in n for n in notes)


@settings(max_examples=40, deadline=None)
@given(x=hnp.arrays(np.float64, st.integers(2, 300), elements=st.floats(-1e3, 1e3)),
       method=st.sampled_from(CALIBRATION_METHODS), bw=st.sampled_from([4, 8]))
def test_property_methods_stay_in_range(x, method, bw):
    s = _stats(x, bins=256)
    lo, hi = select_range(s, method, bitwidth=bw)
    assert math.isfinite(lo) and math.isfinite(hi) and lo <= hi
    tol = 1e-9 * (1 + abs(s.min) + abs(s.max))
    assert min(s.min, 0.0) - tol <= lo and hi <= max(s.max, 0.0) + tol
    enc = schema_encoding("asymmetric", lo, hi, bw)
    assert enc.scale > 0 and math.isfinite(enc.scale)


def test_observer_state_does_not_depend_on_order_batching_or_sharding():
    # the lattice keeps exact counts: any split and merge gives the same state and profile
    rng = np.random.default_rng(7)
    x = (rng.normal(size=40_000) * rng.uniform(0.1, 10, size=40_000)).astype(np.float32)
    whole = TensorObserver("t", 64)
    whole.update(x)
    perm = x[rng.permutation(x.size)]
    a, b = TensorObserver("t", 64), TensorObserver("t", 64)
    for part in np.array_split(perm[:25_000], 13):
        a.update(part)
    for part in np.array_split(perm[25_000:], 3):
        b.update(part)
    b.merge(a)
    assert (b.min, b.max) == (whole.min, whole.max)
    np.testing.assert_array_equal(b.lattice.counts, whole.lattice.counts)
    np.testing.assert_array_equal(b.histogram.counts, whole.histogram.counts)
    h = whole.histogram
    assert h.total == x.size and np.all(h.counts == np.round(h.counts))
    ref = np.histogram(x, bins=64, range=(h.min, h.max))[0]
    assert np.abs(np.cumsum(ref) - np.cumsum(h.counts)).max() <= 0.005 * x.size
