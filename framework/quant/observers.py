"""Streaming tensor statistics: batches of values in, min / max / fixed-bin histogram out.

A ``TensorObserver`` sees a tensor's values batch after batch (calibration runs the model over many
samples) and keeps only the true min, the true max and a histogram of ``num_bins`` bins spanning
exactly ``[min, max]`` (the layout of Glow's profiles), so its memory does not depend on how many
samples it saw. When a batch widens the range, the existing histogram is re-binned onto the wider
range: each old bin's count is spread over the new bins it overlaps, in proportion to the overlap
(values are taken as uniform inside a bin), which keeps the total count exact and makes counts
floats. NaN and ±Inf are not data for the statistics: they are counted and reported, never binned.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np

__all__ = ["Histogram", "TensorStats", "TensorObserver", "DEFAULT_NUM_BINS", "FLOAT32_MAX",
           "finite_range", "LatticeHistogram", "LATTICE_FACTOR"]

logger = logging.getLogger(__name__)

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
        v, _ = _finite_values(values)
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
    non-finite values (NaN, ±Inf) it saw and left out."""

    name: str
    histogram: Histogram
    nonfinite: int = 0

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
        return TensorStats(self.name, self.histogram.merge(other.histogram),
                           self.nonfinite + other.nonfinite)


def _finite_values(values: Any) -> tuple[np.ndarray, dict[str, int]]:
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
    v, bad = _finite_values(values)
    n_bad = sum(bad.values())
    if v.size == 0:
        return 0.0, 0.0, n_bad
    return float(v.min()), float(v.max()), n_bad


#: Lattice bins kept per output bin (see ``LatticeHistogram``).
LATTICE_FACTOR = 4
#: Finest lattice level: bins of 2^-160, below float32's smallest subnormal (2^-149), so ranges
#: of float64 data narrower than that still have a level whose scale 2^160 is finite.
_MIN_LEVEL = -160


def _level_fits(lo: float, hi: float, e: int, size: int) -> bool:
    w = math.ldexp(1.0, e)
    return math.floor(hi / w) - math.floor(lo / w) < size


def _level(lo: float, hi: float, size: int) -> int:
    """The smallest power-of-two exponent ``e >= _MIN_LEVEL`` whose bins ``[j 2^e, (j+1) 2^e)`` cover
    ``[lo, hi]`` with at most ``size`` bins (``lo < hi``)."""
    e = max(math.frexp((hi - lo) / (size - 1))[1], _MIN_LEVEL)
    while not _level_fits(lo, hi, e, size):
        e += 1
    while e > _MIN_LEVEL and _level_fits(lo, hi, e - 1, size):
        e -= 1
    return e


class LatticeHistogram:
    """Exact counts on a fixed lattice of power-of-two bins: the same data gives the same state
    whatever the order, batching or sharding it arrived in.

    Bin ``j`` at level ``e`` is ``[j 2^e, (j+1) 2^e)``; the state keeps ``size`` consecutive bins
    starting at ``j0 = floor(min / 2^e)``, with ``e`` the smallest level at which ``[min, max]``
    fits. Level ``e+1`` bins are unions of two level-``e`` bins, so widening the range (or merging
    another state) moves whole integer counts, never splits them: the counts are exactly "how
    many values fell in each bin" for the union range, a function of the multiset of values only.
    Bin indices are computed by scaling with a power of two (exact in binary floating point).
    ``to_histogram`` gives the Glow layout (``num_bins`` equal bins over exactly ``[min, max]``),
    a deterministic function of this state.
    """

    __slots__ = ("size", "min", "max", "level", "j0", "counts", "point")

    def __init__(self, size: int):
        self.size = size
        self.min = math.inf
        self.max = -math.inf
        self.level = 0
        self.j0 = 0
        self.counts = np.zeros(size, dtype=np.int64)
        self.point = 0          # values seen while min == max (no lattice yet)

    @property
    def seen(self) -> bool:
        return self.min <= self.max

    @property
    def total(self) -> int:
        return int(self.point + self.counts.sum())

    def _relevel(self, lo: float, hi: float) -> None:
        """Move to the canonical level and window of the range ``[lo, hi]`` (``lo < hi``)."""
        e = _level(lo, hi, self.size)
        w = math.ldexp(1.0, e)
        j0 = math.floor(lo / w)
        counts = np.zeros(self.size, dtype=np.int64)
        if self.point:                      # a point mass at self.min (== self.max)
            counts[math.floor(self.min / w) - j0] += self.point
            self.point = 0
        elif self.min < self.max:
            k = e - self.level
            absolute = self.j0 + np.arange(self.size, dtype=np.int64)
            nz = np.nonzero(self.counts)[0]
            np.add.at(counts, (absolute[nz] >> k) - j0, self.counts[nz])
        self.level, self.j0, self.counts = e, j0, counts

    def widen(self, lo: float, hi: float) -> None:
        lo, hi = min(self.min, lo), max(self.max, hi)
        if lo == hi:
            self.min = self.max = lo
            return
        if (lo, hi) != (self.min, self.max):
            old = self.level if self.min < self.max else None
            if old is None or not (_level_fits(lo, hi, old, self.size) and
                                   (old == _MIN_LEVEL or
                                    not _level_fits(lo, hi, old - 1, self.size)) and
                                   math.floor(lo / math.ldexp(1.0, old)) == self.j0):
                self._relevel(lo, hi)
            self.min, self.max = lo, hi

    def add(self, v: np.ndarray, lo: float, hi: float) -> None:
        """Add finite values ``v`` whose min and max are ``lo`` and ``hi``."""
        if v.size == 0:
            return
        self.widen(lo, hi)
        if self.min == self.max:
            self.point += int(v.size)
            return
        scale = math.ldexp(1.0, -self.level)
        if v.dtype.itemsize > 4 or not 2.0 ** -120 < scale < 2.0 ** 120 or \
                max(abs(self.min), abs(self.max)) * scale > 1e30:
            t = v.astype(np.float64) * scale
        else:
            t = v * np.float32(scale)
        np.floor(t, out=t)
        t -= self.j0
        idx = t.astype(np.intp)
        self.counts += np.bincount(idx, minlength=self.size)[:self.size]

    def merge(self, other: LatticeHistogram) -> None:
        """Fold another state (same ``size``) into this one, exactly."""
        if not other.seen:
            return
        o = other.copy()
        lo, hi = min(self.min, o.min), max(self.max, o.max)
        if lo == hi:
            self.min = self.max = lo
            self.point += o.point
            return
        o.widen(lo, hi)
        self.widen(lo, hi)
        self.counts += o.counts

    def copy(self) -> LatticeHistogram:
        c = LatticeHistogram(self.size)
        c.min, c.max, c.level, c.j0, c.point = self.min, self.max, self.level, self.j0, self.point
        c.counts = self.counts.copy()
        return c

    def to_histogram(self, num_bins: int) -> Histogram:
        """``num_bins`` equal bins over ``[min, max]``: the lattice's cumulative counts (values
        uniform inside a lattice bin) read at the new edges and rounded to whole counts, so
        counts are integers, the total is exact and no bin is off by more than one count from
        the proportional split."""
        out = np.zeros(num_bins)
        if not self.seen:
            return Histogram.empty(num_bins)
        if self.min == self.max:
            out[0] = self.point
            return Histogram(self.min, self.max, out)
        last = int(np.nonzero(self.counts)[0][-1])
        w = math.ldexp(1.0, self.level)
        xp = np.clip((self.j0 + np.arange(last + 2)) * w, self.min, self.max)
        fp = np.concatenate([[0.0], np.cumsum(self.counts[:last + 1], dtype=np.float64)])
        if xp[-1] == xp[-2]:                # max sits on a lattice edge: a point mass there
            xp, fp = xp[:-1], fp[:-1]
        # interpolate in [0, 1] coordinates: a subnormal width would make np.interp's slopes inf
        width = self.max - self.min
        cdf = np.round(np.interp(np.linspace(0.0, 1.0, num_bins + 1), (xp - self.min) / width,
                                 fp))
        cdf[0], cdf[-1] = 0.0, float(self.counts.sum())
        return Histogram(self.min, self.max, np.maximum(np.diff(cdf), 0.0))


class TensorObserver:
    """Accumulates min, max and a histogram of one tensor over many batches.

    The histogram is kept as a ``LatticeHistogram`` of ``LATTICE_FACTOR * num_bins`` exact
    counts, so statistics do not depend on how values were batched, ordered or split across
    processes (sharded calibration merges observers exactly), and read as ``num_bins`` bins over
    ``[min, max]``. Memory is one fixed array plus a few counters, whatever the number of batches.
    """

    def __init__(self, name: str, num_bins: int = DEFAULT_NUM_BINS):
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
            raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}")
        self.name = name
        self.num_bins = num_bins
        self.lattice = LatticeHistogram(max(2, LATTICE_FACTOR * num_bins))
        self.batches = 0
        self.nan = 0
        self.posinf = 0
        self.neginf = 0

    @property
    def seen(self) -> bool:
        return self.lattice.seen

    @property
    def histogram(self) -> Histogram:
        """The ``num_bins``-bin histogram over ``[min, max]`` (computed from the lattice)."""
        return self.lattice.to_histogram(self.num_bins)

    @property
    def nonfinite(self) -> int:
        return self.nan + self.posinf + self.neginf

    @property
    def min(self) -> float | None:
        return self.lattice.min if self.seen else None

    @property
    def max(self) -> float | None:
        return self.lattice.max if self.seen else None

    def nbytes(self) -> int:
        """Bytes of array state held (constant in the number of batches)."""
        return int(self.lattice.counts.nbytes)

    def update(self, values: Any) -> None:
        """Fold one batch of values into the statistics."""
        a = np.asarray(values)
        if a.dtype.kind == "f" and a.dtype.itemsize <= 4 and a.size:
            # fast path: finite min and max mean every value is finite (NaN propagates)
            bmin, bmax = float(a.min()), float(a.max())
            if np.isfinite(bmin) and np.isfinite(bmax):
                self.batches += 1
                self.lattice.add(a.ravel(), bmin, bmax)
                return
        v, bad = _finite_values(a)
        self.batches += 1
        self.nan += bad["nan"]
        self.posinf += bad["posinf"]
        self.neginf += bad["neginf"]
        if v.size:
            self.lattice.add(v, float(v.min()), float(v.max()))

    def merge(self, other: TensorObserver) -> None:
        """Fold another observer of the same tensor (e.g. from another shard) into this one;
        exact: the result is the observer of both data sets, in any order."""
        if other.num_bins != self.num_bins:
            raise ValueError(f"tensor '{self.name}': cannot merge {other.num_bins} bins into "
                             f"{self.num_bins}")
        self.lattice.merge(other.lattice)
        self.batches += other.batches
        self.nan += other.nan
        self.posinf += other.posinf
        self.neginf += other.neginf

    def stats(self) -> TensorStats:
        """A snapshot of the statistics (independent of later updates)."""
        if self.nonfinite:
            logger.warning("tensor '%s': %d non-finite values (NaN %d, +Inf %d, -Inf %d) left "
                           "out of the calibration statistics", self.name, self.nonfinite,
                           self.nan, self.posinf, self.neginf)
        return TensorStats(self.name, self.histogram, self.nonfinite)

    def report(self) -> list[str]:
        """Human-readable notes about data that calibration could not use as-is."""
        notes = []
        if self.nonfinite:
            notes.append(f"tensor '{self.name}': {self.nonfinite} non-finite values ignored "
                         f"(NaN {self.nan}, +Inf {self.posinf}, -Inf {self.neginf})")
        if not self.seen:
            notes.append(f"tensor '{self.name}': no finite values observed")
        elif self.lattice.min == self.lattice.max:
            notes.append(f"tensor '{self.name}': constant value {self.lattice.min!r} "
                         "(degenerate range)")
        return notes
