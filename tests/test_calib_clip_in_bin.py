"""Calibration's noise model (``aicc.quant.calibration``) counts the clipping of a range end cut
inside a histogram's outermost bin: with each bin's values taken at its center such a cut looked
free, and ``Auto`` at 16 bits clipped a swish output's minimum by ~60 steps (PP-OCRv4 rec at 16
bits: 21 dB instead of 55 dB)."""

from __future__ import annotations

import numpy as np

from aicc.quant.calibration import auto_range, minmax_range, sqnr_db
from aicc.quant.histogram import Histogram


def _swish() -> Histogram:
    x = np.random.default_rng(0).standard_normal(200_000)
    return Histogram.from_values(x / (1 + np.exp(-x)))     # many values near the minimum


def test_auto_at_16_bits_keeps_the_true_range_of_a_crowded_end():
    h = _swish()
    assert auto_range(h, 16) == minmax_range(h)


def test_a_cut_inside_the_outermost_bin_costs_noise():
    h = _swish()
    cut = h.min + 0.6 * h.bin_width                # inside bin 0, past its center
    assert sqnr_db(h, cut, h.max, 16) < sqnr_db(h, h.min, h.max, 16) - 10
    # and a cut before the center costs too, less than one past it
    near = h.min + 0.3 * h.bin_width
    assert sqnr_db(h, cut, h.max, 16) < sqnr_db(h, near, h.max, 16) < sqnr_db(h, h.min, h.max, 16)
