"""``cle`` with ``objective=activations``: equalize the *activation* between two layers, for models
whose weights are quantized per channel.

Why a second objective: with per-channel weights, Nagel's weight-range equalization buys nothing
for the weights (each output channel has its own scale) and can spread the channels of the
per-tensor activations between layers further apart, which is where per-channel models lose
accuracy. Here the scale of link layer 1 -> (homogeneous activation) -> layer 2 is chosen from the
intermediate tensor T (layer 2's data input) instead, measured on the calibration samples with the
float graph.

Channel i of T (calibrated range [lo_i, hi_i]; the tensor's range [L, U] = [min lo, max hi], with
0 in it) is divided by s_i and the weights of layer 2 reading it multiplied by s_i; the float
function is unchanged. The *stretch* t_i = max(hi_i / U, lo_i / L) <= 1 makes channel i touch an
end of [L, U]: every channel then fills the one per-tensor grid, whose range stays [L, U]. Layer
1's weight quantization is invariant to any s (its rows are scaled, each has its own scale); a
depthwise layer 2's is invariant too (one channel in, one out). A dense layer 2's is not: its
column i shrinks by s_i while T's channel grows by 1 / s_i. So s = t^alpha, with alpha in
``ALPHAS`` the one that minimises the estimated quantization noise at layer 2's output:

    per output o:  D_a^2 / 12 * sum_(i, taps) (W_oi s_i)^2          (T's rounding, step D_a)
                 + D_o^2 / 12 * taps * sum_i m_i / s_i^2             (weights', step D_o)

with D_a = (U - L) / (2^act_bits - 1) (fixed: the range stays [L, U]), D_o = max_i |W_oi s_i| /
(2^(weight_bits - 1) - 1) and m_i the mean square of channel i of T. For a depthwise layer 2 the
second term does not depend on s, so alpha = 1 (full stretch) always wins.

A stretch is bounded: s_i >= 1 / ``max_gain``, and layer 2's weights reading channel i keep a
range of at least ``MIN_WEIGHT_RANGE`` (the quantizer widens smaller ranges, and the bias of a
depthwise layer 2, whose scale is input scale x weight scale, would need ever more integer
range). Channels that never leave 0 on the samples keep s_i = 1.

It is its own algorithm (``aicc quantize --algorithms cle-activations``), not what ``cle`` does
under per-channel weights, because it did not pay end to end on the models measured (2026-12-05,
int8 per-channel, ``aicc quantize`` defaults, i.e. ``Auto`` calibration):

- PP-OCRv4 rec (``benchmarks/amp_ppocr.py --targets 0``): its three links are equalized; the
  output falls from 79.2 % strings / 15.93 dB to 58.3 % / 12.76 dB (plain ``cle``: 64.6 % /
  12.72 dB). Every string lost differs in spaces only (whitespace-normalized 100 % in all three);
  output SQNR on the steps where the float model reads blank 16.7 -> 12.6 dB, on the others
  14.4 -> 14.2 dB. Tensor by tensor (16 held-out lines) every quantized tensor gains up to
  p2o.Add.79 (the first activation 32.6 -> 44.5 dB, Conv.1's output 22.9 -> 34.8, p2o.Add.7
  22.9 -> 33.2, p2o.Add.79 13.2 -> 14.1), then Conv.12's output conv2d_191.tmp_0 falls 11.4 ->
  9.0 dB and everything after is worse (median -6 dB): the tensor where 16-bit first layers flip
  too (``benchmarks/amp_ppocr.py``'s docstring: errors coherent over the padded columns). Conv.12's
  input and output at 16 bits do not undo it (58.3 %, 12.6-12.7 dB).
- ``benchmarks/zoo_sqnr.py`` (4 held-out samples; its score is the worst output): ocr-cls 27.82 ->
  25.90 dB (plain ``cle`` 29.39), ocr-det 15.35 -> 15.48 (plain ``cle`` 15.39), layout-cdla 3.71
  -> 3.70, silero-vad-op15 10.41 -> 10.41 (three dense links); orientation, nudenet-320n,
  oww-embedding and magika have no link (HardSwish, SiLU, Max, Reshape between their layers).
  ocr-cls on 32 held-out samples: 25.86 -> 25.44 dB (plain ``cle`` 25.98), but 105 of its 120
  quantized tensors gain (median +0.8 dB; the logits 18.2 -> 19.0 dB); the softmax it scores
  loses 0.4 dB, and one squeeze-excite block (pool2d_1 -> hardsigmoid_1) 0.4-2.4 dB: its global
  average pool sums the errors' mean.
- With min-max calibration: ocr-cls (32 held-out) 26.35 -> 27.85 dB (plain ``cle`` 25.96);
  PP-OCRv4 rec 13.03 -> 12.37 dB (plain ``cle`` 10.73). ``Auto`` re-chooses a tensor's range
  after equalization on a histogram whose channels now all reach its ends, while the stretch aims
  at the min-max range; single links swing ocr-cls's score by -4 to +8 dB either way.
- Link by link (``benchmarks/cle_activations.py``) the estimate's alpha is checked against the
  noise it models.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from aicc.backend import Observers
from aicc.errors import PassError
from aicc.program import Program

from aicc.passes.equalization.patterns import Layer, Link

__all__ = ["ChannelStats", "collect_stats", "link_scales", "ALPHAS", "MIN_WEIGHT_RANGE"]

logger = logging.getLogger("aicc.passes.equalization.cle")

#: the exponents of the stretch tried for a dense layer 2 (0: no scaling, 1: full stretch)
ALPHAS = tuple(np.linspace(0.0, 1.0, 11))
#: the smallest per-input-channel weight range of layer 2 a scale may leave (10x the quantizer's
#: minimum range, 1e-4)
MIN_WEIGHT_RANGE = 1e-3


@dataclass
class ChannelStats:
    """Per-channel statistics of one tensor over the samples."""

    lo: np.ndarray
    hi: np.ndarray
    sq: np.ndarray        # sum of squares
    count: int = 0        # values per channel summed into sq

    @classmethod
    def empty(cls, channels: int) -> "ChannelStats":
        return cls(np.full(channels, np.inf), np.full(channels, -np.inf), np.zeros(channels))

    def add(self, array: np.ndarray, axis: int) -> None:
        a = np.moveaxis(np.asarray(array, np.float64), axis, 0).reshape(self.lo.size, -1)
        self.lo = np.minimum(self.lo, a.min(axis=1, initial=np.inf))
        self.hi = np.maximum(self.hi, a.max(axis=1, initial=-np.inf))
        self.sq += np.einsum("ij,ij->i", a, a)
        self.count += a.shape[1]

    @property
    def measured(self) -> bool:
        return self.count > 0 and bool(np.all(np.isfinite(self.lo)) and
                                       np.all(np.isfinite(self.hi)) and
                                       np.all(np.isfinite(self.sq)))


def collect_stats(program: Program, gname: str, links: list[Link],
                  samples: Iterable[Mapping[str, np.ndarray]], *, engine: str,
                  observers: Observers, limit: int = 0) -> dict[str, ChannelStats]:
    """Run the float graph ``gname`` on ``samples`` (at most ``limit``; 0: all) and gather the
    per-channel statistics of every link's intermediate tensor (layer 2's data input), by name."""
    from aicc.passes.quantization.runner import engine_observation

    wanted: dict[str, tuple[int, int]] = {}       # name -> (channel axis, channels)
    for link in links:
        t = link.second.node.inputs[0]
        wanted[t.name] = (1 if link.first.kind == "conv" else -1, link.first.c_out)
    stats = {name: ChannelStats.empty(c) for name, (_, c) in wanted.items()}
    runner = engine_observation(observers, program, gname, list(wanted), engine)

    def observe(name: str, array: np.ndarray) -> None:
        if name in stats:
            axis, channels = wanted[name]
            if np.ndim(array) < 2 or np.shape(array)[axis] != channels:
                raise PassError(f"cle: tensor '{name}' has shape {list(np.shape(array))} on "
                                f"the samples, not {channels} channels on axis {axis}",
                                where=f"graph '{gname}'")
            stats[name].add(array, axis)
    for feeds in itertools.islice(samples, limit or None):
        runner.run(feeds, observe)
    return stats


def stretch(st: ChannelStats, second: Layer, max_gain: float) -> np.ndarray:
    """t_i of the module docstring, bounded by ``max_gain`` and ``MIN_WEIGHT_RANGE``."""
    lo, hi = np.minimum(st.lo, 0.0), np.maximum(st.hi, 0.0)
    low, up = lo.min(), hi.max()
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.maximum(np.where(up > 0, hi / up, 0.0), np.where(low < 0, lo / low, 0.0))
        w_in = second.in_range()
        floor = np.where(w_in > MIN_WEIGHT_RANGE, MIN_WEIGHT_RANGE / w_in, 1.0)
    t = np.maximum(t, np.maximum(floor, 1.0 / max_gain))
    return np.where((hi - lo > 0) & np.isfinite(t), np.minimum(t, 1.0), 1.0)


def output_noise(st: ChannelStats, second: Layer, s: np.ndarray, act_bits: int,
                 weight_bits: int) -> float:
    """The estimated quantization noise power at layer 2's output (module docstring), summed
    over its output channels, when T's channel i is divided by ``s[i]``."""
    step_a = (max(st.hi.max(), 0.0) - min(st.lo.min(), 0.0)) / (2 ** act_bits - 1)
    g = second.group
    w = second._grouped()                                   # [g, out/g, in/g, taps]
    ws = w * s.reshape(g, 1, w.shape[2], 1)
    act = step_a ** 2 * float(np.sum(ws ** 2))
    step_w = np.abs(ws).max(axis=(2, 3)) / (2 ** (weight_bits - 1) - 1)    # [g, out/g]
    m = (st.sq / max(st.count, 1) / s ** 2).reshape(g, -1)                # [g, in/g]
    weight = float(np.sum(np.sum(step_w ** 2, axis=1) * w.shape[3] * m.sum(axis=1)))
    return (act + weight) / 12.0


def link_scales(link: Link, st: ChannelStats, *, max_gain: float, act_bits: int,
                weight_bits: int) -> tuple[np.ndarray, float, float]:
    """The scales s of one link, the alpha chosen, and the estimated noise change in dB."""
    t = stretch(st, link.second, max_gain)
    noise = [output_noise(st, link.second, t ** a, act_bits, weight_bits) for a in ALPHAS]
    best = int(np.argmin(noise))
    alpha = float(ALPHAS[best])
    gain_db = 10.0 * np.log10(noise[0] / noise[best]) if noise[best] > 0 else 0.0
    return t ** alpha, alpha, float(gain_db)
