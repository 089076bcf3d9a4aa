"""``adaround``: calibration samples in, the input statistics of every Conv/Gemm/MatMul layer out
(graphs unchanged); the ``quantize`` pass after it then rounds those layers' weights with AdaRound
(``aicc.quant.adaround``) instead of to nearest.

Which inputs: each layer's input is taken from the **float** model on the calibration samples
(one forward pass observes every layer at once). AIMET's variant feeds each layer the output of
the already quantized layers before it, which needs one pass per layer; the float form keeps the
cost at one pass, makes layers independent (so the result does not depend on the order they are
rounded in) and is the objective of Nagel et al.'s first formulation. What is kept per layer is
the second moment ``G = E[x x^T]`` of its input patches (a Conv's im2col rows, a Gemm/MatMul's
rows; at most ``max_rows`` rows per sample, a seeded choice), so memory does not grow with the
number of samples.

Measured on PP-OCRv4 rec (int8 per-channel, 64 calibration lines; ``benchmarks/
amp_sensitivity.py``): on its worst weight, the depthwise ``conv2d_157``, AdaRound reaches the
exact optimum (every one of the 2^9 roundings per channel tried): layer output SQNR 38.3 dB
nearest, 43.5 dB learned, and alone in the float model 18.7 -> 27.8 dB at the output; every weight
learned, activations float: 17.4 -> 23.3 dB. With the activations int8 as well the gain is gone
(16.7 -> 16.4 dB), because the layers' int8 *inputs* dominate: ``conv2d_157``'s output with its
int8 input is at 19.4 dB even with float weights (19.3 nearest, 19.4 learned). Feeding the
quantized input to the objective (AIMET's variant, tried on that layer: min E||W~ x_q - W x||^2)
is no better (the model's output: 16.2 dB with it, 16.4 with the float-input rounding, 16.7 with
nearest, the other layers nearest).

The statistics go to the analysis ``ADAROUND_ROUNDING`` as an ``AdaRounder``; ``quantize`` calls it with
the encoding it chose for each weight (overrides, per-channel, bitwidths: every quantize option
still applies) and writes the integers it returns. Weights changed between the two passes, grouped
ConvTranspose, Gemm with ``transA`` and batched MatMul weights keep nearest rounding (counted).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

from aicc.backend import Observers
from aicc.conv_geometry import conv_geometry
from aicc.errors import ConfigError
from aicc.hookspecs import hookimpl
from aicc.options import option
from aicc.pass_base import Pass, PassContext, PassResult
from aicc.program import Program
from aicc.quant import Encoding
from aicc.quant.adaround import AdaRoundParams, adaround_matrix, gram_factor

from aicc.passes.quantization.runner import ENGINES
from aicc.passes.quantization.analyses import ADAROUND_ROUNDING, ADAROUND_SAMPLES, CALIBRATION_SAMPLES
from aicc.passes.quantization.calibrate import input_list_samples

__all__ = ["AdaRound", "AdaRounder", "layer_matrix", "weighted_layers", "weight_digest",
           "input_sum", "pass_samples"]

logger = logging.getLogger(__name__)



# ------------------------------------------------------------------------------ layer forms
def layer_matrix(node: gs.Node, w: np.ndarray) -> tuple[np.ndarray, int, str | None]:
    """A weight as (groups, rows, K), the weight axis that indexes rows (the output channel),
    or a reason why the layer has no such form here."""
    if node.op == "Conv":
        g = int(node.attrs.get("group", 1))
        if w.ndim < 3 or w.shape[0] % g:
            return w, 0, "weight shape"
        return w.reshape(g, w.shape[0] // g, -1), 0, None
    if node.op == "Gemm":
        if int(node.attrs.get("transA", 0)):
            return w, 0, "Gemm with transA"
        if w.ndim != 2:
            return w, 0, "weight rank"
        return (w[None] if int(node.attrs.get("transB", 0)) else w.T[None]), \
            (0 if int(node.attrs.get("transB", 0)) else 1), None
    if node.op == "MatMul":
        if w.ndim != 2:
            return w, 0, "batched MatMul weight"
        return w.T[None], 1, None
    return w, 0, f"{node.op} is not a Conv, Gemm or MatMul"


def _from_matrix(node: gs.Node, q: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if node.op == "Conv":
        return q.reshape(shape)
    m = q[0]
    return m if node.op == "Gemm" and int(node.attrs.get("transB", 0)) else m.T


def _conv_windows(node: gs.Node, x: np.ndarray, w_shape: tuple[int, ...]) -> np.ndarray:
    """A Conv's input patches as a strided view (N, *out, C, *kernel) of the padded input."""
    nd = x.ndim - 2
    kernel = tuple(int(k) for k in w_shape[2:])
    strides = tuple(node.attrs.get("strides") or (1,) * nd)
    dil = tuple(node.attrs.get("dilations") or (1,) * nd)
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    begin, end, out = conv_geometry(x.shape[2:], kernel, strides, dil,
                                    list(node.attrs.get("pads") or []), auto_pad)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)])
    eff = tuple((k - 1) * d + 1 for k, d in zip(kernel, dil))
    win = np.lib.stride_tricks.sliding_window_view(xp, eff, axis=tuple(range(2, 2 + nd)))
    sel = (slice(None), slice(None)) + tuple(slice(0, o * s, s) for o, s in zip(out, strides)) \
        + tuple(slice(None, None, d) for d in dil)
    return np.moveaxis(win[sel], 1, 1 + nd)                      # (N, *out, C, *kernel)


def _conv_rows(node: gs.Node, x: np.ndarray, w_shape: tuple[int, ...], max_rows: int,
               rng: np.random.Generator) -> np.ndarray:
    """Input patches (rows, groups, K) of a Conv, at most ``max_rows`` of them."""
    win = _conv_windows(node, x, w_shape)
    nd = x.ndim - 2
    total = int(np.prod(win.shape[:1 + nd]))
    pick = np.arange(total) if total <= max_rows else np.sort(rng.choice(total, max_rows,
                                                                         replace=False))
    rows = win[np.unravel_index(pick, win.shape[:1 + nd])]       # (S, C, *kernel)
    g = int(node.attrs.get("group", 1))
    return rows.reshape(len(pick), g, -1)


def input_sum(node: gs.Node, x: np.ndarray, w_shape: tuple[int, ...]) -> tuple[np.ndarray, int]:
    """The sum over every input row of a layer (groups, K) -- every patch of a Conv (zero
    padding included), every row of a Gemm/MatMul input -- and the number of rows."""
    if node.op != "Conv":
        rows = x.reshape(-1, x.shape[-1])
        return rows.sum(axis=0)[None], len(rows)
    win = _conv_windows(node, x, w_shape)
    nd = x.ndim - 2
    total = int(np.prod(win.shape[:1 + nd]))
    g = int(node.attrs.get("group", 1))
    return win.sum(axis=tuple(range(1 + nd))).reshape(g, -1), total


def _dense_rows(x: np.ndarray, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    rows = x.reshape(-1, x.shape[-1])
    if len(rows) > max_rows:
        rows = rows[np.sort(rng.choice(len(rows), max_rows, replace=False))]
    return rows[:, None, :]


def weight_digest(w: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(w).tobytes(), digest_size=16).hexdigest()


@dataclasses.dataclass
class _Layer:
    node: str
    weight: str
    digest: str
    gram: np.ndarray
    rows: int = 0


# ------------------------------------------------------------------------------ the rounder
class AdaRounder:
    """Per layer input statistics; ``round(node, values, enc)`` -> integer weights or None."""

    def __init__(self, layers: dict[str, _Layer], params: AdaRoundParams):
        self.layers = layers
        self.params = params
        self.report: dict[str, dict[str, Any]] = {}

    def round(self, node: gs.Node, values: np.ndarray, enc: Encoding) -> np.ndarray | None:
        layer = self.layers.get(node.name)
        if layer is None or enc.is_float or layer.rows == 0:
            return None
        if weight_digest(np.asarray(values)) != layer.digest:
            logger.warning("adaround: weights of '%s' changed after adaround collected its "
                           "inputs; nearest rounding kept", node.name)
            return None
        w, out_axis, why = layer_matrix(node, np.asarray(values, np.float64))
        if why is not None:
            return None
        scale = np.asarray(enc.scale, np.float64)
        zp = np.asarray(enc.zero_point, np.float64)
        if enc.per_channel:
            if enc.axis is None or enc.axis % values.ndim != out_axis:
                return None
            scale, zp = scale.reshape(w.shape[0], w.shape[1], 1), zp.reshape(w.shape[0],
                                                                              w.shape[1], 1)
        start = time.perf_counter()
        factor = gram_factor(layer.gram / layer.rows, self.params.rank_tol)
        res = adaround_matrix(w, scale, zp, enc.qmin, enc.qmax, factor, self.params)
        self.report[node.name] = {"nearest_error": res.nearest_error, "error": res.error,
                                  "improved": res.improved, "rank": factor.shape[2],
                                  "seconds": time.perf_counter() - start}
        return _from_matrix(node, res.q, values.shape)


# ------------------------------------------------------------------------------ the pass
def weighted_layers(program: Program, owner: str = "adaround"
                    ) -> tuple[str, dict[str, tuple[gs.Node, np.ndarray]], int]:
    """The one graph's name, its Conv/Gemm/MatMul layers with a constant float32 weight in a
    form ``layer_matrix`` knows (by node name), and how many others were skipped."""
    if len(program.graphs) != 1:
        raise ConfigError(f"{owner} runs on a model with one graph (no specializations)",
                          field=f"pass '{owner}'")
    name, graph = next(iter(program.graphs.items()))
    found: dict[str, tuple[gs.Node, np.ndarray]] = {}
    skipped = 0
    for node in graph.nodes:
        if node.op not in ("Conv", "Gemm", "MatMul") or len(node.inputs) < 2:
            continue
        w = node.inputs[1]
        if not isinstance(w, gs.Constant) or np.asarray(w.values).dtype != np.float32:
            continue
        why = layer_matrix(node, np.asarray(w.values))[2]
        if why is not None or not node.inputs[0].name:
            logger.debug("%s: '%s' skipped: %s", owner, node.name, why)
            skipped += 1
            continue
        found[node.name] = (node, np.asarray(w.values))
    return name, found, skipped


class AdaRound(Pass):
    name = "adaround"
    description = "collect Conv/Gemm/MatMul input statistics so that quantize rounds their " \
                  "weights with AdaRound (graphs unchanged)"
    scope = "program"
    after = ("calibrate",)
    before = ("quantize",)
    semantics = "preserving"

    @dataclasses.dataclass(frozen=True)
    class Options:
        input_list: str = option("", "a QNN input list of samples (else the Python API's "
                                     "samples)")
        num_batches: int = option(0, "use at most this many samples (0: all)", minimum=0)
        iterations: int = option(2000, "Adam steps per layer", minimum=1)
        learning_rate: float = option(0.01, "Adam learning rate", minimum=0.0)
        reg_param: float = option(3.0, "weight of the rounding regulariser (relative to the "
                                       "normalised reconstruction error)", minimum=0.0)
        beta_start: float = option(20.0, "regulariser beta at the start of annealing",
                                   minimum=0.0)
        beta_end: float = option(2.0, "regulariser beta at the end", minimum=0.0)
        warm_start: float = option(0.2, "fraction of steps without the regulariser",
                                   minimum=0.0, maximum=0.99)
        refine_sweeps: int = option(4, "coordinate-descent sweeps after Adam (0: none)",
                                    minimum=0)
        max_rows: int = option(1024, "input rows kept per sample and layer", minimum=1)
        seed: int = option(0, "seed of the row sub-sampling", minimum=0)
        engine: str = option("interpreter", "what runs the samples: the numpy interpreter "
                                            "(also for auto), or cpu (onnxruntime)",
                             choices=ENGINES)

    def run(self, program: Program, ctx: PassContext) -> PassResult:
        o = ctx.options
        params = AdaRoundParams(iterations=o.iterations, learning_rate=o.learning_rate,
                                reg_param=o.reg_param, beta_range=(o.beta_start, o.beta_end),
                                warm_start=o.warm_start, refine_sweeps=o.refine_sweeps
                                ).check("pass 'adaround'")
        gname, found, skipped = weighted_layers(program)
        ctx.count("adaround layers skipped", skipped)
        samples = self._samples(program, ctx)
        start = time.perf_counter()
        layers = collect(program, gname, found, samples, max_rows=o.max_rows,
                         limit=o.num_batches, seed=o.seed, engine=o.engine,
                         backends=ctx.observers)
        ctx.count("adaround layers", len(layers))
        logger.info("adaround: input statistics of %d layers in %.2fs", len(layers),
                    time.perf_counter() - start)
        ctx.analyses.put(ADAROUND_ROUNDING, AdaRounder(layers, params))
        return PassResult(modified=False)     # it measures; quantize applies the rounding

    @staticmethod
    def _samples(program: Program, ctx: PassContext) -> Iterable[Mapping[str, np.ndarray]]:
        return pass_samples(program, ctx, ctx.analyses.peek(ADAROUND_SAMPLES), "adaround")


def pass_samples(program: Program, ctx: PassContext, own: Any,
                 owner: str) -> Iterable[Mapping[str, np.ndarray]]:
    """The samples of a measuring pass: its own (``own``), its ``input_list`` option, or the
    Python API's calibration samples (read into a list: ``calibrate`` reads them again)."""
    o = ctx.options
    if own is not None:
        if o.input_list:
            raise ConfigError(f"{owner} was given both an input list and samples",
                              field=f"pass '{owner}'", hint="give one")
        return own
    if o.input_list:
        from aicc.data import program_input_descs
        _, factory = input_list_samples(o.input_list,
                                        program_input_descs(program, interface=True))
        return factory()
    given = ctx.analyses.peek(CALIBRATION_SAMPLES)
    if given is None:
        raise ConfigError(f"no samples for {owner}", field=f"pass '{owner}'",
                          hint="give input_list or samples through the Python API")
    if not isinstance(given, (list, tuple)):
        given = list(given)            # calibrate reads them again after us
        ctx.analyses.put(CALIBRATION_SAMPLES, given)
    return given


def collect(program: Program, gname: str, found: dict[str, tuple[gs.Node, np.ndarray]],
            samples: Iterable[Mapping[str, np.ndarray]], *, max_rows: int, limit: int,
            seed: int, engine: str = "interpreter",
            backends: Observers | None = None) -> dict[str, _Layer]:
    """Run the float graph on ``samples`` and accumulate each layer's input second moment.

    The samples run on the backend named ``engine`` (``auto``: the interpreter), observing the
    layers' inputs, found in ``backends`` (default: the built-in backends)."""
    by_input: dict[str, list[gs.Node]] = {}
    layers: dict[str, _Layer] = {}
    for name, (node, w) in found.items():
        by_input.setdefault(node.inputs[0].name, []).append(node)
        k = w.reshape(w.shape[0], -1).shape[1] if node.op == "Conv" else \
            layer_matrix(node, w)[0].shape[2]
        g = int(node.attrs.get("group", 1)) if node.op == "Conv" else 1
        layers[name] = _Layer(name, node.inputs[1].name, weight_digest(w),
                              np.zeros((g, k, k), np.float64))
    runner = (backends or Observers()).observation(
        "cpu" if engine == "cpu" else "interpreter", program.to_model(gname), list(by_input))
    rng = np.random.default_rng(seed)

    def observe(tensor: str, array: np.ndarray) -> None:
        for node in by_input.get(tensor, ()):
            x = np.asarray(array, np.float64)
            rows = _conv_rows(node, x, found[node.name][1].shape, max_rows, rng) \
                if node.op == "Conv" else _dense_rows(x, max_rows, rng)
            layer = layers[node.name]
            layer.gram += np.einsum("sgk,sgl->gkl", rows, rows)
            layer.rows += len(rows)
    for i, feeds in enumerate(samples):
        if limit and i >= limit:
            break
        runner.run(feeds, observe)
    return layers


@hookimpl
def aicc_register_passes(registry):
    registry.add(AdaRound)
