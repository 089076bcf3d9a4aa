"""Exact, order-independent histogram state: values in, integer counts on a lattice of
power-of-two bins out, read back as the Glow layout (``to_histogram``).

``TensorObserver`` keeps its statistics this way so that calibration gives the same profile however
the samples were batched, ordered or sharded across processes.
"""

from __future__ import annotations

import math

import numpy as np

from .histogram import Histogram

__all__ = ["LatticeHistogram", "LATTICE_FACTOR"]


#: Lattice bins kept per output bin (see ``LatticeHistogram``).
LATTICE_FACTOR = 4
#: Finest lattice level: bins of 2^-160, below float32's smallest subnormal (2^-149), so ranges
#: of float64 data narrower than that still have a level whose scale 2^160 is finite.
_MIN_LEVEL = -160


def _level_fits(lo: float, hi: float, e: int, size: int) -> bool:
    w = math.ldexp(1.0, e)
    return math.floor(hi / w) - math.floor(lo / w) < size


def _level(lo: float, hi: float, size: int) -> int:
    """The smallest power-of-two exponent ``e >= _MIN_LEVEL`` whose bins ``[j 2^e, (j+1) 2^e)``
    cover ``[lo, hi]`` with at most ``size`` bins (``lo < hi``)."""
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
