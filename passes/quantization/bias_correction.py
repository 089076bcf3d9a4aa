"""``bias-correction``: calibration samples in, the mean input of every Conv/Gemm layer with a
constant bias out (graphs unchanged); the ``quantize`` pass after it then shifts each such
layer's bias so that, on the calibration data, the layer's mean output with quantized weights
equals its mean output with float weights.

Why: rounding a weight row moves the layer's output by ``(W~ - W) x``; its mean over the data,
``(W~ - W) mu`` with ``mu`` the mean input patch, is a systematic per-channel offset that every
later layer inherits. Kernels whose taps nearly cancel (PP-OCRv4 rec's depthwise ``Conv.1``, taps
up to +-6.7 with sums near 0) see it as a gain error on smooth inputs: there, rounding to nearest
with 43-49 dB of weight SQNR costs the output more than any other weight. The correction is
``b' = b - (W~ - W) mu`` per output channel, computed with the integers ``quantize`` writes
(nearest, or AdaRound's when ``adaround`` ran), so the layer's mean output error on the
calibration data becomes 0 up to the int32 bias grid.

This is the empirical bias correction of Nagel et al. 2019 (data-free quantization, section 4.2)
restricted to the weights' error, measured on the **float** model's inputs (one forward pass; the
layers are independent). AIMET's variant also corrects the mean error that quantized activations
upstream carry into the layer, which needs the quantized model run once per layer; measured on
PP-OCRv4 rec it made the int8 model worse (``benchmarks/amp_sensitivity.py``), and it is not
done here. Layers without a constant bias (MatMul, a Conv without one), a bias shared by several
layers, and weights changed between the two passes are left as they are (counted).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from aicc.backend import Observers
from aicc.hookspecs import hookimpl
from aicc.options import option
from aicc.pass_base import Pass, PassContext, PassResult
from aicc.program import Program
from aicc.quant import Encoding

from aicc.passes.quantization.adaround import (input_sum, layer_matrix, pass_samples,
                                               weight_digest, weighted_layers)
from aicc.passes.quantization.analyses import BIAS_CORRECTION
from aicc.passes.quantization.runner import ENGINES, engine_observation

__all__ = ["BiasCorrection", "BiasCorrector", "bias_shift"]

logger = logging.getLogger(__name__)


def bias_shift(node: gs.Node, w: np.ndarray, w_hat: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``(W~ - W) mu`` per output channel of ``node`` (the bias's shape): ``w``/``w_hat`` the
    float and dequantized weights as stored, ``mean`` the mean input row (groups, K)."""
    d, _, why = layer_matrix(node, np.asarray(w_hat, np.float64) - np.asarray(w, np.float64))
    if why is not None:
        raise ValueError(f"{node.name}: {why}")
    return np.einsum("grk,gk->gr", d, mean).reshape(-1)


@dataclasses.dataclass
class _Means:
    digest: str
    total: np.ndarray
    rows: int = 0


class BiasCorrector:
    """Per layer mean inputs; ``correct(node, weights, enc, q)`` shifts the node's bias."""

    def __init__(self, means: dict[str, _Means]):
        self.means = means
        self.report: dict[str, dict[str, Any]] = {}

    def correct(self, node: gs.Node, values: np.ndarray, enc: Encoding,
                q: np.ndarray | None) -> bool:
        """Shift the bias of ``node`` for its weights ``values`` stored as ``q`` (None: the
        nearest integers of ``enc``); False when the layer is left as it is."""
        m = self.means.get(node.name)
        if m is None or m.rows == 0 or enc.is_float or len(node.inputs) < 3:
            return False
        bias = node.inputs[2]
        if not isinstance(bias, gs.Constant) or len(bias.outputs) != 1:
            return False
        if weight_digest(np.asarray(values)) != m.digest:
            logger.warning("bias-correction: weights of '%s' changed after bias-correction "
                           "measured its inputs; bias kept", node.name)
            return False
        w_hat = enc.dequantize(enc.quantize(values) if q is None else q, dtype=np.float64)
        shift = bias_shift(node, values, w_hat, m.total / m.rows)
        b = np.asarray(bias.values)
        if b.shape != shift.shape:
            return False
        if not np.all(np.isfinite(shift)):
            logger.warning("bias-correction: '%s': the mean input on the samples is not finite "
                           "(NaN or Inf in the data); bias kept", node.name)
            return False
        bias.values = (b.astype(np.float64) - shift).astype(b.dtype)
        self.report[node.name] = {"max_shift": float(np.abs(shift).max(initial=0.0)),
                                  "channels": int(shift.size)}
        return True


class BiasCorrection(Pass):
    name = "bias-correction"
    description = "measure each Conv/Gemm layer's mean input so that quantize shifts its bias " \
                  "by the mean output error of its quantized weights (graphs unchanged)"
    scope = "program"
    after = ("calibrate", "adaround")
    before = ("quantize",)
    semantics = "preserving"

    @dataclasses.dataclass(frozen=True)
    class Options:
        input_list: str = option("", "a QNN input list of samples (else the Python API's "
                                     "samples)")
        num_batches: int = option(0, "use at most this many samples (0: all)", minimum=0)
        engine: str = option("auto", "what runs the samples: auto (onnxruntime where it runs "
                                     "the graph, else the interpreter), interpreter or cpu",
                             choices=ENGINES)

    def run(self, program: Program, ctx: PassContext) -> PassResult:
        o = ctx.options
        gname, found, skipped = weighted_layers(program, "bias-correction")
        with_bias = {k: v for k, v in found.items()
                     if len(v[0].inputs) > 2 and isinstance(v[0].inputs[2], gs.Constant)}
        ctx.count("bias-correction layers skipped (no constant bias, or a weight form "
                  "adaround's layer_matrix does not know)", skipped + len(found) - len(with_bias))
        samples = pass_samples(program, ctx, None, "bias-correction")
        means = collect_means(program, gname, with_bias, samples, limit=o.num_batches,
                              engine=o.engine, backends=ctx.observers)
        ctx.count("bias-correction layers", len(means))
        ctx.analyses.put(BIAS_CORRECTION, BiasCorrector(means))
        return PassResult(modified=False)     # it measures; quantize shifts the biases


def collect_means(program: Program, gname: str,
                  found: dict[str, tuple[gs.Node, np.ndarray]],
                  samples: Iterable[Mapping[str, np.ndarray]], *, limit: int,
                  engine: str = "auto",
                  backends: Observers | None = None) -> dict[str, _Means]:
    """Run the float graph on ``samples`` and sum each layer's input rows (every one)."""
    by_input: dict[str, list[gs.Node]] = {}
    means: dict[str, _Means] = {}
    for name, (node, w) in found.items():
        by_input.setdefault(node.inputs[0].name, []).append(node)
        k = layer_matrix(node, w)[0]
        means[name] = _Means(weight_digest(w), np.zeros((k.shape[0], k.shape[2])))
    runner = engine_observation(backends or Observers(), program, gname, list(by_input), engine)

    def observe(tensor: str, array: np.ndarray) -> None:
        for node in by_input.get(tensor, ()):
            total, rows = input_sum(node, np.asarray(array, np.float64), found[node.name][1].shape)
            means[node.name].total += total
            means[node.name].rows += rows
    for feeds in itertools.islice(samples, limit or None):
        runner.run(feeds, observe)
    return means


@hookimpl
def aicc_register_passes(registry):
    registry.add(BiasCorrection)
