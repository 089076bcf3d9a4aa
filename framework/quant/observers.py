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

import logging
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
        v, bad = finite_values(a)
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
