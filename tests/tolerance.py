"""Tolerances for float results that legitimately differ between machines, and why.

Float32 sums (dot products, convolutions, reductions) come out differently when BLAS sums in
another order, and it does: with the batch size, how a convolution is chunked, the thread count
and the CPU kernel it picked (AVX2, AVX-512, SSE). For a sum of ``terms`` products the
reordering error is bounded by about ``terms * eps * sum(|products|)`` (Higham, "Accuracy and
Stability of Numerical Algorithms", §3.1); ``eps`` is float32's machine epsilon. Tests compare
such results with that bound, never bit for bit. Exactness stays where it is the promise:
integer arithmetic, container bytes, round-trips, and merging statistics of identical runs.

Run the suite under other BLAS kernels with ``make test-blas`` to see what would move elsewhere.
"""

from __future__ import annotations

import numpy as np

__all__ = ["F32_EPS", "reorder_bound", "assert_reordered_close"]

F32_EPS = float(np.finfo(np.float32).eps)


def reorder_bound(terms: int, magnitude) -> np.ndarray | float:
    """The largest difference two summation orders of ``terms`` float32 products can give, for
    products whose absolute values sum to ``magnitude`` (a scalar or an array per element)."""
    return 2.0 * terms * F32_EPS * np.asarray(magnitude, dtype=np.float64)


def assert_reordered_close(actual, expected, *, terms: int, magnitude=None, what: str = ""):
    """``actual`` equals ``expected`` up to summation order of ``terms`` products.

    ``magnitude`` is the sum of absolute products per element (or one scale for all); without
    it, the largest ``|expected|`` stands in, which is right for results whose inputs are of the
    same size as their outputs (chained layers of a small network).
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if magnitude is None:
        magnitude = np.max(np.abs(expected)) if expected.size else 0.0
    bound = reorder_bound(terms, magnitude)
    excess = np.abs(actual - expected) - bound
    worst = int(np.argmax(excess)) if excess.size else 0
    assert excess.size == 0 or excess.flat[worst] <= 0, (
        f"{what}: differs by {np.abs(actual - expected).flat[worst]:.3g} at flat index {worst} "
        f"({actual.flat[worst]!r} vs {expected.flat[worst]!r}); a reordered sum of {terms} "
        f"products may differ by {np.broadcast_to(bound, actual.shape).flat[worst]:.3g}")
