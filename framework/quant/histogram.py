"""Histograms and tensor statistics: values in, a fixed-bin histogram over exactly ``[min, max]``
out (the layout of Glow's profiles), and the statistics calibration keeps per tensor.

Re-binning onto a wider range spreads each old bin's count over the new bins it overlaps, in
proportion to the overlap (values are taken as uniform inside a bin), which keeps the total count
exact and makes counts floats. NaN and ±Inf are not data: they are counted, never binned.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..errors import ConfigError, option_ref

__all__ = ["Histogram", "TensorStats", "DEFAULT_NUM_BINS", "FLOAT32_MAX", "finite_range",
           "finite_values"]

#: The vendor's ``-num-histogram-bins`` default.
DEFAULT_NUM_BINS = 512
#: Ranges are clamped to float32's finite range (ONNX scales are float32).
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclasses.dataclass(eq=False)
class Histogram:
    """``counts[i]`` values fell in bin ``i`` of ``len(counts)`` equal bins over ``[min, max]``.

    A zero-width histogram (``min == max``) is a point mass at ``min``: its whole total is kept in
    bin 0. ``counts`` are float64 (re-binning splits counts).
    """

    min: float
    max: float
    counts: np.ndarray

    def __post_init__(self) -> None:
        self.min = float(self.min)
        self.max = float(self.max)
        self.counts = np.asarray(self.counts, dtype=np.float64)
        if self.counts.ndim != 1 or self.counts.size == 0:
            raise ValueError("histogram counts must be a non-empty 1-D array")
        if not self.min <= self.max:
            raise ValueError(f"histogram min {self.min} > max {self.max}")

    @classmethod
    def empty(cls, num_bins: int = DEFAULT_NUM_BINS) -> Histogram:
        return cls(0.0, 0.0, np.zeros(num_bins))

    @classmethod
    def from_values(cls, values: Any, num_bins: int = DEFAULT_NUM_BINS) -> Histogram:
        """A histogram of the finite values in ``values`` over their own [min, max]."""
        v, _ = finite_values(values)
        if v.size == 0:
            return cls.empty(num_bins)
        lo, hi = float(v.min()), float(v.max())
        h = cls(lo, hi, np.zeros(num_bins))
        h._add(v)
        return h

    # ---------------------------------------------------------------- geometry
    @property
    def num_bins(self) -> int:
        return int(self.counts.size)

    @property
    def width(self) -> float:
        return self.max - self.min

    @property
    def bin_width(self) -> float:
        return self.width / self.num_bins

    @property
    def total(self) -> float:
        return float(self.counts.sum())

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(self.min, self.max, self.num_bins + 1)

    @property
    def centers(self) -> np.ndarray:
        e = self.edges
        return (e[:-1] + e[1:]) / 2

    def copy(self) -> Histogram:
        return Histogram(self.min, self.max, self.counts.copy())

    # ---------------------------------------------------------------- cumulative view
    def cdf(self, x: Any) -> np.ndarray:
        """Count of values <= x, taking values as uniform inside each bin."""
        x = np.asarray(x, dtype=np.float64)
        if self.width == 0:
            return np.where(x >= self.min, self.total, 0.0)
        cum = np.concatenate([[0.0], np.cumsum(self.counts)])
        return np.interp(x, self.edges, cum)

    def quantile(self, q: float) -> float:
        """The value below which a fraction ``q`` (0..1) of the counts lies."""
        if self.width == 0 or self.total == 0:
            return self.min
        cum = np.concatenate([[0.0], np.cumsum(self.counts)])
        target = min(max(q, 0.0), 1.0) * cum[-1]
        # cum is non-decreasing; interpolate the inverse on the strictly increasing part.
        idx = int(np.searchsorted(cum, target, side="left"))
        if idx == 0:
            return self.min
        if idx > self.num_bins:
            return self.max
        c0, c1 = cum[idx - 1], cum[idx]
        e = self.edges
        frac = 0.0 if c1 == c0 else (target - c0) / (c1 - c0)
        return float(e[idx - 1] + frac * (e[idx] - e[idx - 1]))

    # ---------------------------------------------------------------- re-binning and merging
    def rebin(self, lo: float, hi: float, num_bins: int | None = None) -> Histogram:
        """This histogram's counts redistributed onto ``num_bins`` bins over ``[lo, hi]``.

        Proportional to overlap; mass outside ``[lo, hi]`` is folded into the end bins so the total
        is preserved (aicc only ever widens, where nothing is outside).
        """
        n = num_bins or self.num_bins
        lo, hi = float(lo), float(hi)
        out = np.zeros(n)
        if hi == lo:
            out[0] = self.total
            return Histogram(lo, hi, out)
        if self.width == 0:
            idx = int(np.clip(np.floor((self.min - lo) / (hi - lo) * n), 0, n - 1))
            out[idx] = self.total
            return Histogram(lo, hi, out)
        edges = np.linspace(lo, hi, n + 1)
        f = self.cdf(edges)
        out = np.diff(f)
        out[0] += f[0]                  # mass below lo
        out[-1] += self.total - f[-1]   # mass above hi
        return Histogram(lo, hi, np.maximum(out, 0.0))

    def merge(self, other: Histogram) -> Histogram:
        """The histogram of both data sets: each re-binned onto the union range, then summed."""
        if other.total == 0:
            return self.copy()
        if self.total == 0:
            return other.rebin(other.min, other.max, self.num_bins)
        lo, hi = min(self.min, other.min), max(self.max, other.max)
        a = self.rebin(lo, hi, self.num_bins)
        b = other.rebin(lo, hi, self.num_bins)
        return Histogram(lo, hi, a.counts + b.counts)

    def fold_abs(self, num_bins: int | None = None) -> Histogram:
        """The histogram of ``|x|`` over ``[0, max(|min|, |max|)]``."""
        n = num_bins or self.num_bins
        amax = max(abs(self.min), abs(self.max))
        if amax == 0 or self.total == 0:
            out = np.zeros(n)
            out[0] = self.total
            return Histogram(0.0, amax, out)
        if self.width == 0:
            out = np.zeros(n)
            out[min(int(abs(self.min) / amax * n), n - 1)] = self.total
            return Histogram(0.0, amax, out)
        e = np.linspace(0.0, amax, n + 1)
        # mass(|x| in [a, b]) = mass(x in [a, b]) + mass(x in [-b, -a])
        pos = np.diff(self.cdf(e))
        neg = np.diff(self.cdf(-e[::-1]))[::-1]
        return Histogram(0.0, amax, np.maximum(pos + neg, 0.0))

    def side(self, positive: bool, num_bins: int | None = None) -> Histogram:
        """The histogram of the positive values over [0, max], or of ``-x`` for the negative
        values over [0, -min] (empty when that side has no extent)."""
        n = num_bins or self.num_bins
        extent = self.max if positive else -self.min
        if extent <= 0 or self.total == 0:
            return Histogram(0.0, 0.0, np.zeros(n))
        e = np.linspace(0.0, extent, n + 1)
        if self.width == 0:
            out = np.zeros(n)
            out[-1] = self.total
            return Histogram(0.0, extent, out)
        out = np.diff(self.cdf(e)) if positive else np.diff(self.cdf(-e[::-1]))[::-1]
        return Histogram(0.0, extent, np.maximum(out, 0.0))

    # ---------------------------------------------------------------- internals
    def _add(self, v: np.ndarray) -> None:
        """Add finite values that lie inside [min, max]."""
        if v.size == 0:
            return
        if self.width == 0 or self.num_bins == 1:    # (one bin: min-max only, no binning)
            self.counts[0] += v.size
            return
        # The bin index computed directly (what np.histogram does for equal bins, without its
        # range mask and edge re-checks, ~8x faster): the values are known to lie in [min, max];
        # max itself goes to the last bin. A value within float rounding of an inner edge may
        # land one bin off np.histogram's choice, which no range method can notice.
        # In place on one float buffer, clamped before the integer cast (values are >= min, so
        # only the top needs clamping; the cast truncates a rounding-negative index to 0).
        n = self.num_bins
        scale = n / self.width
        if scale == float("inf") or max(abs(self.min), abs(self.max)) > 1e37:
            # a subnormal width or values near float32's limits: divide in float64
            f = (v.astype(np.float64) - self.min) / self.width * n
        else:
            f = np.subtract(v, self.min, dtype=np.result_type(v.dtype, np.float32))
            np.multiply(f, scale, out=f)
        np.minimum(f, n - 1, out=f)
        idx = f.astype(np.int32 if n < (1 << 31) else np.intp)
        self.counts += np.bincount(idx, minlength=n)[:n]


@dataclasses.dataclass(eq=False)
class TensorStats:
    """What calibration learned about one tensor: its histogram (hence min and max) and how many
    non-finite values (NaN, ±Inf) it saw and left out.

    ``binned=False``: calibrated without histograms (min-max calibration needs none); the
    histogram is then one bin over ``[min, max]`` holding the count, the range and count are
    exact, and range methods that read the distribution refuse it (``require_histogram``).
    """

    name: str
    histogram: Histogram
    nonfinite: int = 0
    binned: bool = True

    @property
    def min(self) -> float:
        return self.histogram.min

    @property
    def max(self) -> float:
        return self.histogram.max

    @property
    def count(self) -> int:
        """Number of finite values seen: the histogram's total, which re-binning (merging shards,
        widening the range) preserves up to float rounding of the redistributed bins."""
        return int(round(self.histogram.total))

    def merge(self, other: TensorStats) -> TensorStats:
        """The statistics of both data sets; range only unless both have histograms."""
        if self.binned and other.binned:
            return TensorStats(self.name, self.histogram.merge(other.histogram),
                               self.nonfinite + other.nonfinite)
        parts = [h for h in (self.histogram, other.histogram) if h.total]
        lo = min((h.min for h in parts), default=0.0)
        hi = max((h.max for h in parts), default=0.0)
        return TensorStats(self.name, Histogram(lo, hi, [sum(h.total for h in parts)]),
                           self.nonfinite + other.nonfinite, binned=False)

    def require_histogram(self, needed_by: str, where: str | None = None) -> None:
        """ConfigError unless these statistics have a histogram (``needed_by`` names what reads
        it: a range method or a QNN mode)."""
        if self.binned:
            return
        raise ConfigError(f"tensor '{self.name}': the calibration profile has only its range "
                          f"(calibrated without histograms), and {needed_by} needs its "
                          "histogram", where=where, field=f"tensor '{self.name}'",
                          hint="calibrate again with histograms (a profile written with "
                               f"{option_ref('quantization.dump_profile')} has them), or use "
                               "min-max calibration")


def finite_values(values: Any) -> tuple[np.ndarray, dict[str, int]]:
    """Flattened finite values (float64, clamped to float32's range) and non-finite counts."""
    a = np.asarray(values)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"cannot observe values of dtype {a.dtype}")
    a = a.ravel()
    if a.dtype.kind != "f":
        return a.astype(np.float64), {"nan": 0, "posinf": 0, "neginf": 0}
    finite = np.isfinite(a)
    n_bad = int(a.size - np.count_nonzero(finite))
    counts = {"nan": 0, "posinf": 0, "neginf": 0}
    if n_bad:
        counts["nan"] = int(np.count_nonzero(np.isnan(a)))
        counts["posinf"] = int(np.count_nonzero(a == np.inf))
        counts["neginf"] = int(np.count_nonzero(a == -np.inf))
        a = a[finite]
    v = a.astype(np.float64, copy=False)
    if v.size and (v.min() < -FLOAT32_MAX or v.max() > FLOAT32_MAX):
        v = np.clip(v, -FLOAT32_MAX, FLOAT32_MAX)
    return v, counts


def finite_range(values: Any) -> tuple[float, float, int]:
    """(min, max, number of non-finite values) of an array, ignoring NaN/±Inf.

    An array with no finite value gives (0.0, 0.0, n): a degenerate range that the encoding rules
    then widen (minimum range), never a NaN.
    """
    v, bad = finite_values(values)
    n_bad = sum(bad.values())
    if v.size == 0:
        return 0.0, 0.0, n_bad
    return float(v.min()), float(v.max()), n_bad
