"""Streaming tensor statistics: batches of values in, min / max / fixed-bin histogram out.

A ``TensorObserver`` sees a tensor's values batch after batch (calibration runs the model over many
samples) and keeps only the true min, the true max and a histogram of ``num_bins`` bins spanning
exactly ``[min, max]`` (the layout of Glow's profiles), so its memory does not depend on how many
samples it saw. When a batch widens the range, the existing histogram is re-binned onto the wider
range: each old bin's count is spread over the new bins it overlaps, in proportion to the overlap
(values are taken as uniform inside a bin), which keeps the total count exact and makes counts
floats. NaN and ±Inf are not data for the statistics: they are counted and reported, never binned.

With ``binned=False`` an observer keeps only the range and the count of finite values (what
min-max calibration reads): no binning pass over the values, and its ``TensorStats`` says it has
no histogram, so a range method that needs one refuses it instead of reading a one-bin histogram.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from .histogram import DEFAULT_NUM_BINS, Histogram, TensorStats, finite_values
from .lattice import LATTICE_FACTOR, LatticeHistogram

__all__ = ["TensorObserver"]

logger = logging.getLogger(__name__)


class TensorObserver:
    """Accumulates min, max and a histogram of one tensor over many batches.

    The histogram is kept as a ``LatticeHistogram`` of ``LATTICE_FACTOR * num_bins`` exact
    counts, so statistics do not depend on how values were batched, ordered or split across
    processes (sharded calibration merges observers exactly), and read as ``num_bins`` bins over
    ``[min, max]``. Memory is one fixed array plus a few counters, whatever the number of batches.
    """

    def __init__(self, name: str, num_bins: int = DEFAULT_NUM_BINS, *, binned: bool = True):
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
            raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}")
        self.name = name
        self.num_bins = num_bins
        self.binned = binned
        self.lattice = LatticeHistogram(max(2, LATTICE_FACTOR * num_bins)) if binned else None
        # range only: the least and greatest finite value and how many there were
        self.lo, self.hi, self.finite = math.inf, -math.inf, 0
        self.batches = 0
        self.nan = 0
        self.posinf = 0
        self.neginf = 0

    @property
    def seen(self) -> bool:
        return self.lattice.seen if self.binned else self.lo <= self.hi

    @property
    def histogram(self) -> Histogram:
        """The ``num_bins``-bin histogram over ``[min, max]`` (computed from the lattice); range
        only: one bin over ``[min, max]`` holding every finite value."""
        if not self.binned:
            if not self.seen:
                return Histogram.empty(1)
            return Histogram(self.lo, self.hi, [float(self.finite)])
        return self.lattice.to_histogram(self.num_bins)

    @property
    def nonfinite(self) -> int:
        return self.nan + self.posinf + self.neginf

    @property
    def min(self) -> float | None:
        if not self.seen:
            return None
        return self.lattice.min if self.binned else self.lo

    @property
    def max(self) -> float | None:
        if not self.seen:
            return None
        return self.lattice.max if self.binned else self.hi

    def nbytes(self) -> int:
        """Bytes of array state held (constant in the number of batches)."""
        return int(self.lattice.counts.nbytes) if self.binned else 0

    def update(self, values: Any) -> None:
        """Fold one batch of values into the statistics."""
        a = np.asarray(values)
        if a.dtype.kind == "f" and a.dtype.itemsize <= 4 and a.size:
            # fast path: finite min and max mean every value is finite (NaN propagates)
            bmin, bmax = float(a.min()), float(a.max())
            if np.isfinite(bmin) and np.isfinite(bmax):
                self.batches += 1
                self._add(a.ravel(), bmin, bmax)
                return
        v, bad = finite_values(a)
        self.batches += 1
        self.nan += bad["nan"]
        self.posinf += bad["posinf"]
        self.neginf += bad["neginf"]
        if v.size:
            self._add(v, float(v.min()), float(v.max()))

    def _add(self, v: np.ndarray, lo: float, hi: float) -> None:
        if self.binned:
            self.lattice.add(v, lo, hi)
        else:
            self._widen(lo, hi, int(v.size))

    def _widen(self, lo: float, hi: float, count: int) -> None:
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        self.finite += count

    def merge(self, other: TensorObserver) -> None:
        """Fold another observer of the same tensor (e.g. from another shard) into this one;
        exact: the result is the observer of both data sets, in any order."""
        if other.num_bins != self.num_bins or other.binned != self.binned:
            raise ValueError(f"tensor '{self.name}': cannot merge {other.num_bins} bins "
                             f"({'binned' if other.binned else 'range only'}) into "
                             f"{self.num_bins} ({'binned' if self.binned else 'range only'})")
        if self.binned:
            self.lattice.merge(other.lattice)
        else:
            self._widen(other.lo, other.hi, other.finite)
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
        return TensorStats(self.name, self.histogram, self.nonfinite, binned=self.binned)

    def report(self) -> list[str]:
        """Human-readable notes about data that calibration could not use as-is."""
        notes = []
        if self.nonfinite:
            notes.append(f"tensor '{self.name}': {self.nonfinite} non-finite values ignored "
                         f"(NaN {self.nan}, +Inf {self.posinf}, -Inf {self.neginf})")
        if not self.seen:
            notes.append(f"tensor '{self.name}': no finite values observed")
        elif self.min == self.max:
            notes.append(f"tensor '{self.name}': constant value {self.min!r} "
                         "(degenerate range)")
        return notes
