"""The accuracy check of ``convert-fp16``: with sample inputs, run the program with the chosen
nodes in fp16 against the float program, and when the output error exceeds the tolerance, find a
small set of nodes to keep in fp32 so that it does not.

**Metric.** For each floating-point graph output, ``max |y16 - y32| / max |y32|`` with both
maxima taken over every element of every sample (the reference's largest finite magnitude, at
least 1e-6); the error of a program is the largest over the outputs, and ``inf`` when the fp16
run gives a non-finite value where the float one is finite. On one sample this is the model
zoo's relative error (``benchmarks/zoo_lib.relative_error``). The scale is the output's over all
samples, not each sample's own: a sample whose output is small (a voice detector's probability
on silence, a detector's map of a blank page) is judged against what the output can be, not
against its own near-zero magnitude. Integer and boolean outputs are not compared.

**Where it runs.** Both programs run on the ``interpreter`` backend, which computes an fp16
program as the device does (operands in fp16, fp32 accumulation, one rounding per op), on at
most ``SEARCH_SAMPLES`` samples; the float outputs are those the overflow check's run on the
same samples returned (``convert-fp16`` passes them), so only fp16 programs run here. When the
interpreter cannot run the model the check is skipped with a warning (onnxruntime computes some
fp16 ops in fp32 and would hide the error).

**Search.** fp16 error in a deep network is usually born everywhere a little (every op rounds
once) and amplified near the outputs, so no single node is to blame and single-node rankings are
noisy. The candidates (the nodes going to fp16, less those the user named as fp16 instances,
which are never overridden) are put in three orders, and for each the smallest k whose first k
nodes kept in fp32 meet the tolerance is bisected: the vector-unit nodes (elementwise, pooling,
resizing) before the tensor-unit layers (Conv, ConvTranspose, Gemm, MatMul), since a layer in
fp32 costs the device far more than an elementwise op; graph order (stopping the error where it
is born); graph order reversed (searching from the outputs backward). The set with the fewest
tensor-unit layers, then the fewest nodes, wins, and a later bisection stops as soon as it
cannot beat the best so far. A bisection only chooses a program it measured, so the result meets
the tolerance on the samples even where the error is not monotonic in k. Bisecting to within
n/32 nodes, that is at most 3 * 5 + 1 runs of a converted program over the samples (18 on
PP-OCRv4 det and rec before the pruning, 13 and 10 with it). Measured on the shared 2-core
machine, 4 samples: PP-OCRv4 det compiles in 41 s instead of 4.7 s (2.8 s a trial), the CDLA
layout model (800x608, within tolerance: one trial) in 26 s instead of 8.7 s.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from aicc import ir
from aicc.errors import BackendError, PluginError, option_ref, render_options
from aicc.pass_base import PassContext
from aicc.program import Program

__all__ = ["SEARCH_SAMPLES", "output_error", "accuracy_check"]

logger = logging.getLogger("aicc.passes.precision.convert_fp16")

#: samples the search runs on (the first ones of the list); each candidate program runs on all
SEARCH_SAMPLES = 8
#: the layers the tensor unit computes (multiply-accumulate); the rest runs on the vector unit
TENSOR_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
#: a bisection stops within 1/RESOLUTION of the candidates (or one node) of the shortest head:
#: half the runs of an exact one, for a few nodes more in fp32
RESOLUTION = 32
#: nodes a warning names before "and N more" (all are in ``Program.node_precision``)
_SHOWN = 8

Convert = Callable[[gs.Graph, list[gs.Node], Any], object]


def output_error(got: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]],
                 ref: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]]) -> float:
    """``max |got - ref| / max |ref|`` per floating-point output of ``ref``, the largest over the
    outputs; ``got``/``ref`` are one run's outputs or a list of runs (one per sample), whose
    maxima are taken over all of them (see the module docstring). ``inf`` for a non-finite value
    where the reference is finite."""
    gots = [got] if isinstance(got, Mapping) else list(got)
    refs = [ref] if isinstance(ref, Mapping) else list(ref)
    diff: dict[str, float] = {}
    scale: dict[str, float] = {}
    for g, r_all in zip(gots, refs):
        for name, r in r_all.items():
            r = np.asarray(r)
            if r.dtype.kind != "f" or not r.size:
                continue
            r64, g64 = r.astype(np.float64), np.asarray(g[name]).astype(np.float64)
            ok = np.isfinite(r64)
            if (~np.isfinite(g64) & ok).any():
                return math.inf
            scale[name] = max(scale.get(name, 0.0), float(np.abs(r64[ok]).max(initial=0.0)))
            diff[name] = max(diff.get(name, 0.0),
                             float(np.abs(g64[ok] - r64[ok]).max(initial=0.0)))
    return max((d / max(scale[n], 1e-6) for n, d in diff.items()), default=0.0)


class _Uncounted:
    """The part of a PassContext that ``convert_nodes`` uses, counting nothing: trial
    conversions must not add to the pass's counters."""

    def count(self, what: str, n: int = 1) -> None:
        pass


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Trial conversions repeat the warnings the real conversion gives once (clipped constants,
    rewritten BatchNormalizations): silence this pass's logger meanwhile."""
    was = logger.disabled
    logger.disabled = True
    try:
        yield
    finally:
        logger.disabled = was


def _key(node: gs.Node) -> str:
    """A node's identity across copies of the graph: its first output's name."""
    return node.outputs[0].name


class _Probe:
    """Measures the output error of the graph with a set of nodes in fp16, on the samples."""

    def __init__(self, program: Program, graph: gs.Graph, samples: Sequence[dict],
                 ctx: PassContext, convert: Convert, reference: Sequence[dict] | None):
        self.ir_version = program.ir_version
        self.model = ir.export_model(graph, ir_version=program.ir_version)
        self.samples = list(samples)
        self.observers = ctx.observers
        self.convert = convert
        self.trials = 0
        self.reference = (list(reference) if reference is not None
                          else self._outputs(self.model))
        self._seen: dict[frozenset[str], float] = {}

    def _outputs(self, model: onnx.ModelProto) -> list[dict[str, np.ndarray]]:
        run = self.observers.observation("interpreter", model, [])
        return [run.run(dict(feeds)) for feeds in self.samples]

    def error(self, fp16: frozenset[str]) -> float:
        """The error with the nodes keyed ``fp16`` (first output names) in fp16."""
        if fp16 not in self._seen:
            graph = gs.import_onnx(self.model)
            chosen = [n for n in graph.nodes if n.outputs and _key(n) in fp16]
            with _quiet():
                self.convert(graph, chosen, _Uncounted())
            got = self._outputs(ir.export_model(graph, ir_version=self.ir_version))
            self.trials += 1
            self._seen[fp16] = output_error(got, self.reference)
            logger.debug("convert-fp16: accuracy trial: %d node(s) in fp16: error %.3g",
                         len(fp16), self._seen[fp16])
        return self._seen[fp16]


def _cost(kept: Sequence[str], by_key: Mapping[str, gs.Node]) -> tuple[int, int]:
    """How much a set kept in fp32 costs on the device: its tensor-unit layers first (fp32 MACs
    run at a fraction of the fp16 rate), then its node count."""
    return sum(by_key[k].op in TENSOR_OPS for k in kept), len(kept)


def _bisect(order: list[str], everyone: frozenset[str], probe: _Probe, tolerance: float,
            by_key: Mapping[str, gs.Node], bound: tuple[int, int] | None) -> list[str] | None:
    """The shortest head of ``order`` whose nodes kept in fp32 meet the tolerance, by bisection
    to within ``len(order) / RESOLUTION`` nodes (``order`` whole is known to meet it); None as
    soon as every head it could still return costs at least ``bound``."""
    lo, hi = 0, len(order)
    while hi - lo > max(1, len(order) // RESOLUTION):
        if bound is not None and _cost(order[:lo + 1], by_key) >= bound:
            return None
        mid = (lo + hi) // 2
        if probe.error(everyone - frozenset(order[:mid])) <= tolerance:
            hi = mid
        else:
            lo = mid
    if bound is not None and _cost(order[:hi], by_key) >= bound:
        return None
    return order[:hi]


def _search(candidates: list[str], everyone: frozenset[str], probe: _Probe, tolerance: float,
            by_key: Mapping[str, gs.Node]) -> list[str]:
    """The cheapest (``_cost``) of the fp32 sets found with the vector-unit nodes before the
    tensor-unit layers, from the inputs on, and from the outputs backward; a later bisection
    stops once it cannot beat the best set so far."""
    vector_first = ([k for k in candidates if by_key[k].op not in TENSOR_OPS]
                    + [k for k in candidates if by_key[k].op in TENSOR_OPS])
    best: list[str] | None = None
    for order in (vector_first, candidates, candidates[::-1]):
        found = _bisect(order, everyone, probe, tolerance, by_key,
                        None if best is None else _cost(best, by_key))
        if found is not None:
            best = found
    chosen = set(best or candidates)
    return [k for k in candidates if k in chosen]


def accuracy_check(program: Program, gname: str, graph: gs.Graph, selected: list[gs.Node],
                   protected: set[str], samples: Sequence[dict], ctx: PassContext,
                   convert: Convert, reference: Sequence[dict] | None = None) -> set[str]:
    """Names of the ``selected`` nodes to keep in fp32 so that the output error on ``samples``
    is at most ``ctx.options.tolerance`` (see the module docstring); the nodes named in
    ``protected`` (the fp16 instances the user asked for) are never among them.
    ``convert(graph, nodes, ctx)`` converts a trial copy; ``reference``, the float program's
    outputs on ``samples`` when already known (else it runs). Warns when nodes are kept, and
    when the tolerance cannot be met."""
    tolerance = float(ctx.options.tolerance)
    by_key = {_key(n): n for n in selected if n.outputs}
    everyone = frozenset(by_key)
    if not everyone:
        return set()
    try:
        probe = _Probe(program, graph, samples[:SEARCH_SAMPLES], ctx, convert,
                       None if reference is None else reference[:SEARCH_SAMPLES])
        before = probe.error(everyone)
    except (BackendError, PluginError) as e:
        logger.warning("convert-fp16: graph '%s': the fp16 accuracy check is skipped: the "
                       "interpreter cannot run the model (%s)", gname, e)
        return set()
    used = min(len(samples), SEARCH_SAMPLES)
    ctx.count("samples checked for fp16 accuracy", used)
    if before <= tolerance:
        logger.info("convert-fp16: graph '%s': fp16 output error %.3g on %d sample(s), within "
                    "the tolerance %g", gname, before, used, tolerance)
        return set()
    candidates = [k for k, n in by_key.items() if n.name not in protected]
    # with no named instance, every candidate in fp32 is the float program itself: error 0
    floor = (0.0 if len(candidates) == len(everyone) else
             probe.error(everyone - frozenset(candidates)) if candidates else before)
    if floor > tolerance:
        names = ", ".join(sorted(protected)[:_SHOWN]) or "none"
        logger.warning("convert-fp16: graph '%s': fp16 output error %.3g on %d sample(s) "
                       "exceeds the tolerance %g, and keeping every other node in fp32 still "
                       "gives %.3g (the fp16 instances you named stay fp16: %s); nothing is "
                       "kept in fp32 for accuracy", gname, before, used, tolerance, floor, names)
        ctx.count("fp16 accuracy checks over tolerance")
        return set()
    kept = _search(candidates, everyone, probe, tolerance, by_key)
    after = probe.error(everyone - frozenset(kept))
    names = [f"'{by_key[k].name}' ({by_key[k].op})" for k in kept]
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    logger.warning("convert-fp16: graph '%s': fp16 output error %.3g on %d sample(s) exceeds the "
                   "tolerance %g (max |fp16 - fp32| / max |fp32| per output); %d of %d node(s) "
                   "stay in fp32, error now %.3g: %s%s. %s", gname, before, used, tolerance,
                   len(kept), len(everyone), after, ", ".join(names[:_SHOWN]), more,
                   render_options(f"A looser {option_ref('fp16_tolerance')} keeps fewer in "
                                  "fp32; 'off' keeps every node fp16"))
    logger.info("convert-fp16: graph '%s': kept in fp32 for accuracy: %s (%d trial programs)",
                gname, ", ".join(names), probe.trials)
    ctx.count("nodes kept in fp32 (fp16 accuracy)", len(kept))
    ctx.count("fp16 accuracy trial programs", probe.trials)
    return {by_key[k].name for k in kept}
