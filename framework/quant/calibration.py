"""Range selection: a tensor's calibration statistics (histogram) in, the (min, max) to encode out.

These are the vendor's ``-quantization-calibration`` methods. Each returns a real range that a
schema (``schemas.py``) or a QNN mode (``modes.py``) then turns into an Encoding; those apply the
minimum-range and exact-zero rules, so a method may return a degenerate range but never NaN.

- ``None`` (min/max): the true range.
- ``Percentile``: the two-sided percentile range: the ``(100 - p)``-th and ``p``-th percentiles of
  the data, ``p`` in [90, 100] (100 is the true range).
- ``KLMinimization`` (TensorRT-style entropy calibration, in onnxruntime's signed form): a
  threshold ``t`` chosen by the least KL(P || Q) over candidate windows. For data of both signs the
  window is ``[-t, t]`` on the signed histogram (re-binned symmetrically about zero); for data of
  one sign it is ``[0, t]`` on that side. P is the histogram clipped to the window, each outlier
  added to the end bin it is clipped to; Q is the window's own counts merged into as many bins as
  the integer grid has steps (2^b - 1) and spread back over P's non-empty bins; both are smoothed
  (``p + eps`` renormalised), so a window whose end bin holds only outliers costs a large but
  finite divergence. Range ``(-t, t)`` cut to the data; ``(0, t)`` or ``(-t, 0)`` for one-signed
  data. Two traps this avoids (issue 13): folding ``|x|`` piles one side's outliers onto the other
  side's spike (an image's background), where KL barely sees them; and the spike of exact zeros
  (ReLU outputs, padding), which the grid represents exactly, rewards ever narrower windows
  unless its bin is replaced by its neighbours' mean, as TensorRT's calibrator does.
- ``KLMinimizationV2``: the same divergence, with thresholds searched on the negative and the
  positive side separately (asymmetric ranges for skewed data, such as activations after a bias).
- ``MSE``: the candidate range minimising the expected squared quantization error, modelled on the
  histogram as ``step^2 / 12`` per value inside the range (rounding) plus ``(x - clip(x))^2`` per
  value outside (clipping). Candidates shrink each end of the true range on a grid.
- ``SQNR``: maximises signal-to-quantization-noise ratio ``sum(x^2) / noise``, where clipping noise
  weighs ``gamma`` times (default 3) as much as rounding noise: outliers carry more information than
  their count says. With ``gamma = 1`` it chooses the same range as ``MSE``.

- ``Auto`` (the default of ``aicc quantize``): per tensor, whichever of the min-max, percentile
  and MSE ranges has the least expected noise on that tensor's histogram under the SQNR noise
  model (clipping weighted ``AUTO_GAMMA`` = 3 times rounding, as QNN's enhanced mode weighs it):
  min-max where the tail carries signal, a clipped range where a few outliers would waste the
  grid. Chosen so no single fixed method has to fit every tensor of a real model.

QNN's ``enhanced`` mode (``modes.enhanced_encoding``) uses ``enhanced_range`` here: the SQNR noise
model scored after the tf adjustments (zero exactly representable), on a finer grid.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from ..errors import ConfigError, did_you_mean
from .histogram import Histogram, TensorStats

__all__ = [
    "CALIBRATION_METHODS",
    "DEFAULT_PERCENTILE",
    "parse_calibration_method",
    "check_percentile",
    "select_range",
    "minmax_range",
    "percentile_range",
    "kl_range",
    "kl_v2_range",
    "mse_range",
    "sqnr_range",
    "auto_range",
    "enhanced_range",
    "sqnr_db",
]

logger = logging.getLogger(__name__)

CALIBRATION_METHODS = ("None", "Percentile", "KLMinimization", "KLMinimizationV2", "MSE", "SQNR",
                       "Auto")
#: How much more ``Auto`` weighs clipping noise than rounding noise when it compares candidates.
AUTO_GAMMA = 3.0
DEFAULT_PERCENTILE = 99.99
_GRID = 128         # candidates per range end for MSE / SQNR
_ENHANCED_GRID = 128
_SMOOTH_EPS = 1e-4


def parse_calibration_method(text: Any, *, where: str | None = None,
                             field: str | None = "quantization-calibration") -> str:
    """Canonical method name from user text (case-insensitive; Python ``None`` means min/max)."""
    if text is None:
        return "None"
    if not isinstance(text, str):
        raise ConfigError(f"calibration method must be a string, got {text!r}", where=where,
                          field=field, hint=f"valid: {', '.join(CALIBRATION_METHODS)}")
    canon = {m.lower(): m for m in CALIBRATION_METHODS}
    canon.update({"minmax": "None", "min-max": "None", "kl": "KLMinimization"})
    key = text.strip().lower()
    if key in canon:
        return canon[key]
    raise ConfigError(f"unknown calibration method {text!r}", where=where, field=field,
                      hint=did_you_mean(text, CALIBRATION_METHODS))


def check_percentile(value: Any, *, where: str | None = None,
                     field: str | None = "percentile-calibration-value") -> float:
    """The percentile if it is a number in [90, 100], else ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"percentile must be a number, got {value!r}", where=where, field=field,
                          hint="a value in [90, 100], e.g. 99.99")
    value = float(value)
    if not math.isfinite(value) or not 90.0 <= value <= 100.0:
        raise ConfigError(f"percentile {value} is outside [90, 100]", where=where, field=field,
                          hint="e.g. 99.99; 100 keeps the full range")
    return value


def _hist(stats: TensorStats | Histogram) -> Histogram:
    return stats.histogram if isinstance(stats, TensorStats) else stats


def _note(notes: list[str] | None, name: str | None, msg: str) -> None:
    text = f"tensor '{name}': {msg}" if name else msg
    logger.info("%s", text)
    if notes is not None:
        notes.append(text)


def select_range(stats: TensorStats | Histogram, method: str | None = "None", *,
                 percentile: float = DEFAULT_PERCENTILE, bitwidth: int = 8,
                 symmetric: bool = False, gamma: float = 3.0, name: str | None = None,
                 notes: list[str] | None = None) -> tuple[float, float]:
    """Range to encode for one tensor, by calibration ``method`` (see the module docstring).

    ``symmetric=True`` tells MSE / SQNR the range will be encoded symmetrically, so they search
    symmetric candidates. Degenerate statistics (nothing seen, a constant) return their (min, max)
    and are noted; the encoding rules then widen them. Statistics without a histogram
    (``TensorStats.binned`` False) serve min-max only; other methods refuse them.
    """
    method = parse_calibration_method(method)
    if method != "None" and isinstance(stats, TensorStats):
        stats.require_histogram(f"calibration method '{method}'")
    h = _hist(stats)
    if name is None and isinstance(stats, TensorStats):
        name = stats.name
    if method == "Percentile":
        percentile = check_percentile(percentile)
    if h.total == 0:
        _note(notes, name, "no finite values observed; range [0, 0]")
        return 0.0, 0.0
    if h.width == 0:
        _note(notes, name, f"constant value {h.min!r}; degenerate range")
        return h.min, h.max
    if method == "None":
        return minmax_range(h)
    if method == "Percentile":
        return percentile_range(h, percentile)
    if method == "KLMinimization":
        return kl_range(h, bitwidth, name=name, notes=notes)
    if method == "KLMinimizationV2":
        return kl_v2_range(h, bitwidth, name=name, notes=notes)
    if method == "MSE":
        return mse_range(h, bitwidth, symmetric=symmetric)
    if method == "Auto":
        return auto_range(h, bitwidth, symmetric=symmetric, percentile=percentile)
    return sqnr_range(h, bitwidth, symmetric=symmetric, gamma=gamma)


def minmax_range(stats: TensorStats | Histogram) -> tuple[float, float]:
    h = _hist(stats)
    return h.min, h.max


def percentile_range(stats: TensorStats | Histogram, value: float) -> tuple[float, float]:
    """(the (100 - value)-th percentile, the value-th percentile), interpolated inside bins."""
    value = check_percentile(value)
    h = _hist(stats)
    if value == 100.0:
        return h.min, h.max
    q = value / 100.0
    return h.quantile(1.0 - q), h.quantile(q)


# ------------------------------------------------------------------------------ KL divergence
def _smooth(p: np.ndarray) -> np.ndarray:
    return (p + _SMOOTH_EPS) / (1.0 + _SMOOTH_EPS * p.size)


def _without_zero_spike(h: Histogram) -> Histogram:
    """``h`` with the count of the bin holding 0.0 replaced by its neighbours' mean.

    Exact zeros (a ReLU's negative half, zero padding) are exactly representable on every aicc
    grid, so they cost no quantization error; left in, their spike dominates the divergence (Q
    spreads it over its whole chunk), which rewards ever narrower windows. TensorRT's entropy
    calibrator neutralises the same spike the same way.
    """
    if h.width == 0 or not h.min <= 0.0 <= h.max:
        return h
    n = h.num_bins
    k = min(int((0.0 - h.min) / h.width * n), n - 1)
    neighbours = [j for j in (k - 1, k + 1) if 0 <= j < n]
    if not neighbours:
        return h
    out = h.copy()
    out.counts[k] = float(np.mean(out.counts[neighbours]))
    return out


def _kl_divergence(counts: np.ndarray, lo: int, hi: int, nq: int) -> float:
    """Smoothed KL(P || Q) of clipping ``counts`` to the window ``[lo, hi)`` and quantizing it
    to ``nq`` levels; ``inf`` when the window is empty.

    P is the window with the values left of it added to its first bin and those right of it to its
    last bin (each outlier lands at the end it was clipped to); Q is the window without outliers
    merged into ``nq`` chunks, each chunk's mass spread evenly over the bins where P is non-empty.
    """
    sliced = counts[lo:hi]
    p = sliced.astype(np.float64).copy()
    p[0] += counts[:lo].sum()
    p[-1] += counts[hi:].sum()
    if p.sum() <= 0:
        return math.inf
    nonzero = p > 0
    bounds = (np.arange(nq + 1) * sliced.size) // nq
    chunk_sum = np.add.reduceat(sliced, bounds[:-1])
    chunk_nz = np.add.reduceat(nonzero.astype(np.float64), bounds[:-1])
    per_bin = np.divide(chunk_sum, chunk_nz, out=np.zeros(nq), where=chunk_nz > 0)
    q = np.repeat(per_bin, np.diff(bounds)) * nonzero
    if q.sum() <= 0:
        return math.inf
    p = _smooth(p / p.sum())
    q = _smooth(q / q.sum())
    return float(np.sum(p * np.log(p / q)))


def _kl_best_index(counts: np.ndarray, nq: int, *, centered: bool = False) -> int | None:
    """The threshold, in bins, with the least KL(P || Q) (see ``_kl_divergence``).

    One-sided (``centered=False``): windows ``[0, i)`` for ``i`` from ``nq`` to ``len(counts)``.
    Centered: ``counts`` spans ``[-a, a]`` with zero at its middle edge; windows are
    ``[m - i, m + i)`` around the middle ``m`` for half-widths ``i`` whose window holds at least
    ``nq`` bins. Returns ``i``, or None when the histogram has too few bins.
    """
    n = counts.size // 2 if centered else counts.size
    first = (nq + 1) // 2 if centered else nq
    if n < first:
        return None
    # at most ~512 candidates: stride over large histograms
    stride = max(1, (n - first) // 512)
    candidates = list(range(first, n + 1, stride))
    if candidates[-1] != n:
        candidates.append(n)
    best_i, best_kl = None, math.inf
    for i in candidates:
        lo, hi = (n - i, n + i) if centered else (0, i)
        kl = _kl_divergence(counts, lo, hi, nq)
        if kl < best_kl - 1e-12:
            best_i, best_kl = i, kl
    return best_i


def kl_range(stats: TensorStats | Histogram, bitwidth: int = 8, *, name: str | None = None,
             notes: list[str] | None = None) -> tuple[float, float]:
    """TensorRT-style KL-divergence threshold (see the module docstring)."""
    h = _without_zero_spike(_hist(stats))
    levels = (1 << bitwidth) - 1
    if h.min >= 0 or h.max <= 0:
        # one-signed data: the window [0, t) of the data's own side
        side = h.side(positive=h.max > 0)
        i = _kl_best_index(side.counts, levels)
        if i is not None:
            t = side.max * i / side.num_bins
            return (0.0, min(t, h.max)) if h.max > 0 else (max(-t, h.min), 0.0)
        needed = levels
    else:
        # signed data: a symmetric window [-t, t) on the signed histogram, finer than or as fine
        # as the profile's bins; outliers pile up at the end they were clipped to
        amax = max(-h.min, h.max)
        centered = h.rebin(-amax, amax, 2 * h.num_bins)
        i = _kl_best_index(centered.counts, levels, centered=True)
        if i is not None:
            t = amax * i / h.num_bins
            return max(-t, h.min), min(t, h.max)
        needed = (levels + 1) // 2
    _note(notes, name, f"KLMinimization needs at least {needed} histogram bins for "
                       f"{bitwidth}-bit ({h.num_bins} given); using min/max")
    return h.min, h.max


def kl_v2_range(stats: TensorStats | Histogram, bitwidth: int = 8, *, name: str | None = None,
                notes: list[str] | None = None) -> tuple[float, float]:
    """Asymmetric, smoothed KL-divergence thresholds (see the module docstring)."""
    h = _without_zero_spike(_hist(stats))
    out = []
    for positive in (False, True):
        side = h.side(positive)
        if side.max == 0 or side.total == 0:
            out.append(0.0)
            continue
        nq = (1 << bitwidth) - 1 if (positive and h.min >= 0) or (not positive and h.max <= 0) \
            else 1 << (bitwidth - 1)
        i = _kl_best_index(side.counts, nq)
        if i is None:
            _note(notes, name, f"KLMinimizationV2 needs at least {nq} histogram bins for "
                               f"{bitwidth}-bit ({side.num_bins} given); using min/max")
            return h.min, h.max
        out.append(side.max * i / side.num_bins)
    # a side without values keeps the true range's own end (e.g. min 5 for data in [5, 10])
    lo = -out[0] if h.min < 0 else h.min
    hi = out[1] if h.max > 0 else h.max
    return lo, hi


# ------------------------------------------------------------------------------ MSE / SQNR
def _candidates(h: Histogram, grid: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    lo0, hi0 = min(h.min, 0.0), max(h.max, 0.0)
    fr = 1.0 - np.arange(grid) / grid   # 1, 1 - 1/grid, ..., 1/grid
    if symmetric:
        t = max(-lo0, hi0) * fr
        return (np.zeros_like(t) if lo0 == 0 else -t), t
    los = lo0 * fr if lo0 < 0 else np.zeros(1)
    his = hi0 * fr if hi0 > 0 else np.zeros(1)
    lo, hi = np.meshgrid(los, his, indexing="ij")
    return lo.ravel(), hi.ravel()


def _noise(h: Histogram, lo: np.ndarray, hi: np.ndarray, bitwidth: int, gamma: float,
           nudge: bool) -> np.ndarray:
    """Expected quantization noise of each candidate range over the histogram (values uniform
    inside each bin): ``step^2 / 12`` per value inside, ``gamma * (x - clip(x))^2`` per value
    outside, the part of a bin that a range end cuts off included. (Taking each bin's values at
    its center, a range cut inside the outermost bins clipped nothing: at 16 bits ``Auto`` chose
    such ranges, and clipping up to ~60 steps cost PP-OCRv4 rec 34 dB.)

    Prefix sums of n, n*c and n*c^2 make each candidate O(log bins).
    """
    levels = float((1 << bitwidth) - 1)
    step = (hi - lo) / levels
    step = np.where(step > 0, step, np.finfo(np.float64).tiny)
    if nudge:
        zp = np.clip(np.round(-lo / step), 0, levels)
        lo = -zp * step
        hi = lo + levels * step
    c, n, e = h.centers, h.counts, h.edges
    w2 = h.bin_width ** 2 / 12.0                   # a bin's own spread around its center
    p0 = np.concatenate([[0.0], np.cumsum(n)])
    p1 = np.concatenate([[0.0], np.cumsum(n * c)])
    p2 = np.concatenate([[0.0], np.cumsum(n * (c * c + w2))])
    k_lo = np.searchsorted(e[1:], lo, side="right")    # bins [0, k_lo) lie wholly below lo
    k_hi = np.searchsorted(e[:-1], hi, side="left")    # bins [k_hi, N) lie wholly above hi
    below = p2[k_lo] - 2 * lo * p1[k_lo] + lo * lo * p0[k_lo]
    above = (p2[-1] - p2[k_hi]) - 2 * hi * (p1[-1] - p1[k_hi]) + hi * hi * (p0[-1] - p0[k_hi])
    below = np.maximum(below, 0) + _cut(n, e, k_lo, lo - e[np.minimum(k_lo, n.size - 1)])
    above = np.maximum(above, 0) + _cut(n, e, k_hi - 1, e[np.maximum(k_hi, 1)] - hi)
    inside = p0[k_hi] - p0[k_lo]
    return inside * step ** 2 / 12.0 + gamma * (below + above)


def _cut(n: np.ndarray, e: np.ndarray, k: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Clipping noise of cutting ``depth`` off bin ``k`` (values uniform in it): n d^3 / (3 w)."""
    width = e[1] - e[0]
    ok = (k >= 0) & (k < n.size) & (depth > 0) & (depth < width)
    kk = np.clip(k, 0, n.size - 1)
    return np.where(ok, n[kk] * np.clip(depth, 0, width) ** 3 / (3 * width), 0.0)


def _search(h: Histogram, bitwidth: int, *, symmetric: bool, gamma: float, grid: int,
            nudge: bool) -> tuple[float, float]:
    lo, hi = _candidates(h, grid, symmetric)
    keep = hi - lo > 0
    if not np.any(keep):
        return h.min, h.max
    lo, hi = lo[keep], hi[keep]
    noise = _noise(h, lo, hi, bitwidth, gamma, nudge)
    k = int(np.argmin(noise))      # first minimum: the widest such candidate (grid order)
    return float(lo[k]), float(hi[k])


def mse_range(stats: TensorStats | Histogram, bitwidth: int = 8, *,
              symmetric: bool = False) -> tuple[float, float]:
    """The candidate range with the least expected quantization MSE."""
    return _search(_hist(stats), bitwidth, symmetric=symmetric, gamma=1.0, grid=_GRID,
                   nudge=False)


def sqnr_range(stats: TensorStats | Histogram, bitwidth: int = 8, *, symmetric: bool = False,
               gamma: float = 3.0) -> tuple[float, float]:
    """The candidate range with the best SQNR (clipping noise weighted by ``gamma``)."""
    if not gamma > 0:
        raise ConfigError(f"SQNR gamma must be > 0, got {gamma}")
    return _search(_hist(stats), bitwidth, symmetric=symmetric, gamma=gamma, grid=_GRID,
                   nudge=False)


def auto_range(stats: TensorStats | Histogram, bitwidth: int = 8, *, symmetric: bool = False,
               percentile: float = DEFAULT_PERCENTILE, gamma: float | None = None
               ) -> tuple[float, float]:
    """``Auto``: of the min-max, percentile and MSE ranges of this tensor, the one with the least
    expected quantization noise on its histogram, clipping weighted ``gamma`` (``AUTO_GAMMA``)
    times rounding (the SQNR noise model, after the tf zero-point adjustment for asymmetric
    encodings). Ties go to the wider range (min-max first): it never loses to the best of the
    three under that model, and falls back to the true range when clipping does not pay."""
    h = _hist(stats)
    if h.total == 0 or h.width == 0:
        return h.min, h.max
    cands = [minmax_range(h), percentile_range(h, percentile),
             mse_range(h, bitwidth, symmetric=symmetric)]
    if symmetric:
        cands = [(-m, m) for m in (max(abs(lo), abs(hi)) for lo, hi in cands)]
    lo = np.array([c[0] for c in cands], np.float64)
    hi = np.array([c[1] for c in cands], np.float64)
    keep = hi - lo > 0
    if not np.any(keep):
        return cands[0]
    noise = _noise(h, lo, hi, bitwidth, AUTO_GAMMA if gamma is None else gamma, not symmetric)
    noise = np.where(keep, noise, np.inf)
    k = int(np.argmin(noise))
    return float(lo[k]), float(hi[k])


def enhanced_range(stats: TensorStats | Histogram, bitwidth: int = 8, *,
                   gamma: float = 3.0) -> tuple[float, float]:
    """QNN ``enhanced``: the SQNR search, scoring each candidate after the tf zero adjustment."""
    h = _hist(stats)
    if h.total == 0 or h.width == 0:
        return h.min, h.max
    return _search(h, bitwidth, symmetric=False, gamma=gamma, grid=_ENHANCED_GRID, nudge=True)


def sqnr_db(stats: TensorStats | Histogram, lo: float, hi: float, bitwidth: int = 8,
            *, gamma: float = 1.0) -> float:
    """Modelled SQNR in dB of encoding the histogram's data with range [lo, hi]."""
    h = _hist(stats)
    signal = float((h.counts * h.centers ** 2).sum())
    noise = float(_noise(h, np.array([lo]), np.array([hi]), bitwidth, gamma, False)[0])
    if noise <= 0:
        return math.inf
    if signal <= 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)
