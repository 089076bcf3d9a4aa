"""``cle``: cross-layer equalization -- a float model -> the same function with per-channel weight
ranges equalized across layers (Nagel et al. 2019, arXiv 1906.04721), plus high-bias absorption.

BatchNormalization is folded first (by ``fold-batchnorm``'s own code, which keeps each BN's gamma
and beta in the analysis ``FOLDED_BATCHNORM``). Chains of layers joined by positively homogeneous
activations (``_cle_patterns``) are then equalized: for a pair, output channel i of layer 1 is
divided by s_i = sqrt(r1_i / r2_i) and input channel i of layer 2 multiplied by it, so both ranges
become sqrt(r1_i * r2_i); a Conv -> depthwise Conv -> Conv triplet gets the closed form in which all
three ranges become cbrt(r1_i * r2_i * r3_i). Longer chains repeat these sweeps until no scale
moves by more than ``convergence`` (at most ``max_iterations`` sweeps).

ReLU6 (``Clip(0, 6)``): in ``relu6_mode=exact`` the bound of channel i becomes 6 / s_i, written as
``Relu -> Min(per-channel constant)``, so the float function is unchanged; ``relu6_mode=replace``
does what the vendor tools do, Relu instead (this changes the float model wherever an activation
exceeded 6; it is counted and logged as a warning).

High-bias absorption (paper section 4.2): when layer 1 carries BN statistics, its pre-activation
in channel i is taken to be N(beta_i, gamma_i^2) (scaled by 1 / s_i after equalization), so it is
>= c_i = max(0, beta_i - 3 |gamma_i|) for all but ~0.13% of values. Then f(x) = f(x - c) + c for
the supported activations, hence b1 -= c and b2 += W2 c (bounded activations: bound -= c). This is
exact wherever the pre-activation is >= c; elsewhere the input of layer 2 changes by at most c_i in
that channel. It is skipped for layer 2 convolutions with zero padding unless
``absorb_into_padded`` (their border outputs would read 0 instead of c). The statistics as cle
leaves them (scaled, shifted by c) are kept per graph in the analysis ``CLE_STATISTICS``
[graph][layer], so a later cle in the same pipeline starts from them; ``folded_batchnorm`` itself,
shared by all graphs, is never changed.

``objective=activations`` (``aicc quantize --algorithms cle-activations``, for weights quantized
per channel; see ``activations.py``) chooses each link's scales from the per-channel ranges of the
activation between the two layers, measured on samples (``input_list``, else the Python API's
calibration samples), instead of from the weights: per-channel weights gain nothing from weight
equalization, the per-tensor activations do from this. It equalizes every link on its own (no
triplets, no sweeps) and absorbs no bias (the measured ranges are what it equalizes).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Literal

import numpy as np
import onnx_graphsurgeon as gs

from aicc.analyses import Analysis
from aicc.errors import ConfigError
from aicc.hookspecs import hookimpl
from aicc.options import option
from aicc.pass_base import Pass, PassContext, PassResult, Tolerance
from aicc.program import Program

from aicc.passes.equalization.activations import collect_stats, link_scales
from aicc.passes.equalization.patterns import Layer, Link, find_chains, refuse_non_float
from aicc.passes.equalization.rewrite import Editor
from aicc.passes.fold_batchnorm import FOLDED_BATCHNORM

#: the BatchNorm statistics as cle left them, by graph and layer (scaled, shifted by c)
CLE_STATISTICS = Analysis("BatchNorm statistics after cle")

__all__ = ["CrossLayerEqualization", "RELU6_MODES"]

logger = logging.getLogger(__name__)

RELU6_MODES = ("exact", "replace")
OBJECTIVES = ("weights", "activations")
ENGINES = ("auto", "interpreter", "cpu")
#: options that only one objective reads, with their defaults (another value is refused with
#: the other objective)
_ONLY = {"activations": {"input_list": "", "engine": "auto", "num_batches": 0, "max_gain": 1000.0,
                         "act_bitwidth": 8, "weight_bitwidth": 8},
         "weights": {"absorb_into_padded": False, "max_iterations": 100, "convergence": 1e-6}}


class CrossLayerEqualization(Pass):
    name = "cle"
    description = ("cross-layer equalization: fold BN, equalize per-channel weight ranges (or "
                   "with objective=activations the activations between layers) across "
                   "Conv/Gemm/MatMul chains, absorb high biases")
    scope = "graph"
    semantics = "preserving"
    # Scales are applied in float64 and written back as float32 (relative rounding ~6e-8 per
    # weight); what remains is float32 re-association noise, which grows with the magnitude of
    # the summed terms rather than of each output, hence an absolute floor as large as rtol.
    tolerance = Tolerance(rtol=1e-4, atol=1e-4)
    after = ("fold-constants", "fold-batchnorm")

    @dataclasses.dataclass(frozen=True)
    class Options:
        relu6_mode: Literal["exact", "replace"] = option(
            "exact", "ReLU6/Clip(0,M) on equalized links: 'exact' keeps the float function "
                     "(Relu -> Min with a per-channel bound); 'replace' turns it into Relu as "
                     "the vendor tools do (changes the float model)")
        high_bias_absorption: bool = option(
            True, "move c = max(0, beta - 3|gamma|) from layer 1's bias into layer 2's "
                  "(needs BatchNorm statistics; exact where the pre-activation is >= c; "
                  "objective=weights only)")
        absorb_into_padded: bool = option(
            False, "also absorb into convolutions with zero padding (their border outputs shift)")
        max_iterations: int = option(
            100, "most equalization sweeps over one chain of more than one pair/triplet",
            minimum=1, maximum=100000)
        convergence: float = option(
            1e-6, "a chain has converged when no scale of a sweep differs from 1 by more than "
                  "this", minimum=0.0, maximum=1.0)
        objective: Literal["weights", "activations"] = option(
            "weights", "'weights': equalize per-channel weight ranges (Nagel 2019); "
                       "'activations': equalize the channels of the activation between the "
                       "layers on samples (for per-channel weight quantization)",
            choices=OBJECTIVES)
        input_list: str = option("", "activations: a QNN input list of samples (else the Python "
                                     "API's calibration samples)", path=True)
        engine: str = option("auto", "activations: what runs the samples (auto: onnxruntime "
                                     "where it runs the graph, else the interpreter)",
                             choices=ENGINES)
        num_batches: int = option(0, "activations: use at most this many samples (0: all)",
                                  minimum=0)
        max_gain: float = option(1000.0, "activations: the most a channel of an activation is "
                                         "magnified", minimum=1.0, maximum=1e6)
        act_bitwidth: int = option(8, "activations: the activation bitwidth the noise estimate "
                                      "assumes", choices=(4, 8, 16))
        weight_bitwidth: int = option(8, "activations: the weight bitwidth the noise estimate "
                                         "assumes", choices=(4, 8, 16))

    def run(self, program: Program, ctx: PassContext) -> PassResult:
        """Refuse non-float graphs, fold BatchNormalization (a nested ``fold-batchnorm``, which
        records the statistics high-bias absorption needs), then equalize each graph."""
        o = ctx.options
        other = "weights" if o.objective == "activations" else "activations"
        given = [k for k, v in _ONLY[other].items() if getattr(o, k) != v]
        if given:
            raise ConfigError(f"option '{given[0]}' only applies to objective={other}",
                              field="pass 'cle'", hint=f"add objective={other}, or drop "
                              f"'{given[0]}'")
        for name, graph in program.graphs.items():
            refuse_non_float(graph, f"graph '{name}'")
        program = ctx.run_pipeline(["fold-batchnorm"], program)
        super().run(program, ctx)
        return PassResult(program=program)

    def run_graph(self, graph: gs.Graph, program: Program, ctx: PassContext) -> None:
        where = f"graph '{ctx.graph_name}'"
        chains, skipped = find_chains(graph)
        for node_name, reason in skipped:
            logger.debug("cle: skip '%s': %s", node_name, reason)
            ctx.count("candidates skipped")
        if not chains:
            logger.info("cle: no candidate in %s (%d layer(s) looked at; --debug shows why)",
                        where, len(skipped))
            return
        editor = Editor(graph)
        replace = ctx.options.relu6_mode == "replace"
        if ctx.options.objective == "activations":
            replaced = self._equalize_activations(chains, program, ctx, editor, replace)
        else:
            replaced = self._equalize_weights(chains, stats_of(ctx), ctx, editor, replace)
        for layer in _layers(chains):
            editor.layer(layer, ctx)
        editor.finish()
        if replaced:
            ctx.count("relu6 replaced by relu", replaced)
            logger.warning("cle: replaced %d ReLU6/Clip activation(s) by Relu in %s "
                           "(relu6_mode=replace): float outputs change wherever an activation "
                           "exceeded its bound", replaced, where)

    def _equalize_weights(self, chains: list[list[Link]], stats: dict, ctx: PassContext,
                          editor: Editor, replace: bool) -> int:
        """Weight-range equalization and high-bias absorption; returns the ReLU6 replaced."""
        replaced = exact = 0
        for chain in chains:
            totals = self._equalize(chain, ctx)
            for link, total in zip(chain, totals):
                bound = self._new_bound(link, total, replace)
                bound = self._absorb(link, total, bound, stats, ctx)
                replaced += editor.activation(link, bound, replace)
                exact += bound is not None
        if exact:
            ctx.count("bounded relus kept exact", exact)
        return replaced

    # ------------------------------------------------------------------ equalization
    @staticmethod
    def _equalize(chain: list[Link], ctx: PassContext) -> list[np.ndarray]:
        """Scale the chain's layers in place; return the total scale s of every link."""
        totals = [np.ones(link.first.c_out) for link in chain]
        sets: list[tuple[int, int]] = []  # (first link, number of links: 1 pair, 2 triplet)
        k = 0
        while k < len(chain):
            width = 2 if k + 1 < len(chain) and chain[k].second.depthwise else 1
            sets.append((k, width))
            k += width
        sweeps, change = 0, 0.0
        for sweeps in range(1, ctx.options.max_iterations + 1):
            change = 0.0
            for k, width in sets:
                for i, s in enumerate(_scales(chain, k, width)):
                    totals[k + i] *= s
                    change = max(change, float(np.max(np.abs(s - 1.0), initial=0.0)))
            if len(sets) == 1 or change <= ctx.options.convergence:
                break
        names = " -> ".join([chain[0].first.node.name] + [lk.second.node.name for lk in chain])
        pairs = sum(1 for _, w in sets if w == 1)
        ctx.count("pairs equalized", pairs)
        ctx.count("triplets equalized", len(sets) - pairs)
        if len(sets) > 1 and change > ctx.options.convergence:
            logger.info("cle: chain %s did not converge in %d sweeps (last change %.3g)",
                        names, sweeps, change)
        else:
            logger.debug("cle: equalized %s (%d pair(s), %d triplet(s), %d sweep(s))", names,
                         pairs, len(sets) - pairs, sweeps)
        return totals

    # ------------------------------------------------------------------ objective=activations
    def _equalize_activations(self, chains: list[list[Link]], program: Program,
                              ctx: PassContext, editor: Editor, replace: bool) -> int:
        """Scale every link from its intermediate activation's statistics (``activations.py``);
        returns the ReLU6 replaced."""
        from aicc.passes.quantization.adaround import pass_samples

        o = ctx.options
        links = [link for chain in chains for link in chain]
        samples = pass_samples(program, ctx, None, "cle")
        stats = collect_stats(program, ctx.graph_name, links, samples, engine=o.engine,
                              observers=ctx.observers, limit=o.num_batches)
        replaced = exact = equalized = 0
        for link in links:
            st = stats[link.second.node.inputs[0].name]
            if not st.measured:
                logger.info("cle: '%s' -> '%s' left as it is: its input was not measured "
                            "(no samples, or non-finite values)", link.first.node.name,
                            link.second.node.name)
                continue
            s, alpha, gain = link_scales(link, st, max_gain=o.max_gain,
                                         act_bits=o.act_bitwidth, weight_bits=o.weight_bitwidth)
            if alpha == 0.0 or np.all(s == 1.0):
                continue
            link.first.scale_out(1.0 / s)
            link.second.scale_in(s)
            bound = self._new_bound(link, s, replace)
            replaced += editor.activation(link, bound, replace)
            exact += bound is not None
            equalized += 1
            logger.debug("cle: activation '%s' -> '%s': alpha %.1f, largest gain %.3g, "
                         "estimated noise at the output -%.2f dB", link.first.node.name,
                         link.second.node.name, alpha, float(1.0 / s.min()), gain)
        ctx.count("activations equalized", equalized)
        if exact:
            ctx.count("bounded relus kept exact", exact)
        logger.info("cle: equalized the activations of %d of %d link(s) in graph '%s' "
                    "(objective=activations)", equalized, len(links), ctx.graph_name)
        return replaced

    # ------------------------------------------------------------------ activations and HBA
    @staticmethod
    def _new_bound(link: Link, total: np.ndarray, replace: bool) -> np.ndarray | None:
        """The bounded activation's per-channel bound after scaling (None: unbounded)."""
        if link.act.bound is None or replace:
            return None
        return link.act.bound / total

    @staticmethod
    def _absorb(link: Link, total: np.ndarray, bound: np.ndarray | None, stats: dict,
                ctx: PassContext) -> np.ndarray | None:
        """High-bias absorption on one link (module docstring); returns the activation's bound
        after it. Also records layer 1's pre-activation statistics after scaling."""
        first, second = link.first, link.second
        st = stats["graph"].get(first.node.name) or stats["folded"].get(first.node.name)
        if st is None:
            if ctx.options.high_bias_absorption:
                logger.debug("cle: no high-bias absorption '%s' -> '%s': no BatchNorm statistics "
                             "for '%s'", first.node.name, second.node.name, first.node.name)
            return bound
        gamma = np.asarray(st["gamma"], dtype=np.float64)
        beta = np.asarray(st["beta"], dtype=np.float64)
        if gamma.shape != (first.c_out,) or beta.shape != (first.c_out,):
            logger.debug("cle: no high-bias absorption after '%s': statistics of %d channels",
                         first.node.name, gamma.size)
            return bound
        gamma, beta = gamma / total, beta / total
        st = stats["graph"][first.node.name] = {"gamma": gamma.tolist(), "beta": beta.tolist()}
        if not ctx.options.high_bias_absorption:
            return bound
        if second.zero_padded() and not ctx.options.absorb_into_padded:
            logger.debug("cle: no high-bias absorption into '%s': it reads zero padding "
                         "(absorb_into_padded=true allows it)", second.node.name)
            return bound
        c = np.maximum(0.0, beta - 3.0 * np.abs(gamma))
        if bound is not None:
            c = np.minimum(c, bound)
        if not np.any(c > 0):
            return bound
        first.b -= c
        first.changed = True
        second.b += second.input_bias_effect(c)
        second.changed = True
        st["beta"] = (beta - c).tolist()
        ctx.count("bias channels absorbed", int(np.count_nonzero(c)))
        return None if bound is None else bound - c


def _scales(chain: list[Link], k: int, width: int) -> list[np.ndarray]:
    """Apply one pair (width 1) or depthwise triplet (width 2) equalization; return its scales."""
    def ratio(num: np.ndarray, den: np.ndarray, ok: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(ok, num / np.where(ok, den, 1.0), 1.0)
        return np.where(np.isfinite(out) & (out > 0), out, 1.0)

    first = chain[k].first
    if width == 1:
        second = chain[k].second
        r1, r2 = first.out_range(), second.in_range()
        s = np.sqrt(ratio(r1, r2, (r1 > 0) & (r2 > 0)))
        first.scale_out(1.0 / s)
        second.scale_in(s)
        return [s]
    mid, last = chain[k].second, chain[k + 1].second
    r1, r2, r3 = first.out_range(), mid.out_range(), last.in_range()
    ok = (r1 > 0) & (r2 > 0) & (r3 > 0)
    t = np.cbrt(r1 * r2 * r3)
    s1, s2 = ratio(r1, t, ok), ratio(t, r3, ok)
    first.scale_out(1.0 / s1)
    mid.scale_in(s1)
    mid.scale_out(1.0 / s2)
    last.scale_in(s2)
    return [s1, s2]


def stats_of(ctx: PassContext) -> dict:
    """BN statistics: as folded (shared by all graphs), and as cle left them in this graph."""
    if CLE_STATISTICS not in ctx.analyses:
        ctx.analyses.put(CLE_STATISTICS, {})
    return {"folded": ctx.analyses.peek(FOLDED_BATCHNORM, {}),
            "graph": ctx.analyses.peek(CLE_STATISTICS).setdefault(ctx.graph_name, {})}


def _layers(chains: list[list[Link]]) -> list[Layer]:
    seen: dict[int, Layer] = {}
    for chain in chains:
        for link in chain:
            for layer in (link.first, link.second):
                seen.setdefault(id(layer), layer)
    return list(seen.values())


@hookimpl
def aicc_register_passes(registry):
    registry.add(CrossLayerEqualization)
