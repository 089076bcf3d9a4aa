"""Constants beyond fp16's range, found without sample data: which nodes ``convert-fp16`` keeps in
fp32 because of the constants they compute from or read.

Without samples the pass cannot know which activations leave the fp16 range, but constants it
can know. Two rules:

- A node whose every input is a constant (an initializer, a ``Constant`` node's value, or the
  output of another such node) is computed at compile time (``fold-constants``): it stays in
  fp32, so ``Sqrt(1e8)`` or ``1e5 * 1e-3`` fold to the model's values instead of fp16 ones
  (1e8 is inf in fp16).
- A node that reads a constant beyond +-65504 (given, or computed by the first rule) stays in
  fp32, with a warning naming it: in fp16 the constant would be inf or clipped, and a clipped
  divisor, scale or exponent changes the node's result everywhere (``x / 1e6`` became
  ``x / 65504``: 15x too large, exit 0). This is what the sample-based check does for a tensor
  that overflows. Exceptions, where a clipped constant only acts as a bound or a fill and the
  clip keeps the node's fp16 result (``_SENTINEL``: ``Clip``, ``Max``, ``Where``, ``Add`` of an
  attention mask of -1e9, comparisons), and a BatchNormalization, which ``convert-fp16`` rewrites
  as the same scale and shift: those go on in fp16 with the clipping warning.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs

from aicc import ir
from aicc.errors import BackendError
from aicc.pass_base import PassContext
from aicc.passes.folding.evaluate import evaluate
from aicc.passes.precision.overflow import FP16_MAX

__all__ = ["constant_values", "kept_for_constants"]

logger = logging.getLogger("aicc.passes.precision.convert_fp16")

#: ops where a constant clipped to +-65504 acts as the same bound or fill in fp16
_SENTINEL = frozenset({"Clip", "Max", "Min", "Where", "Add", "Sub", "Less", "LessOrEqual",
                       "Greater", "GreaterOrEqual", "Equal"})


def constant_values(t: gs.Tensor) -> np.ndarray | None:
    """The values of an initializer, or of a ``Constant`` node's ``value`` (how Paddle and other
    exporters hold weights); None for anything computed."""
    if isinstance(t, gs.Constant):
        return np.asarray(t.values)
    if len(t.inputs) == 1 and t.inputs[0].op == "Constant":
        value = t.inputs[0].attrs.get("value")
        if isinstance(value, gs.Constant):
            return np.asarray(value.values)
    return None


def _constant_only(graph: gs.Graph) -> list[gs.Node]:
    """Nodes (other than ``Constant``) whose every input is constant or computed from constants
    only, in graph order."""
    known: set[int] = set()
    found: list[gs.Node] = []
    changed = True
    while changed:
        changed = False
        for node in graph.nodes:
            if id(node) in known or node.op == "Constant" or not node.outputs or not node.inputs:
                continue
            if all(t.is_empty() or constant_values(t) is not None or
                   (len(t.inputs) == 1 and id(t.inputs[0]) in known) for t in node.inputs):
                known.add(id(node))
                found.append(node)
                changed = True
    order = {id(n): i for i, n in enumerate(graph.nodes)}
    return sorted(found, key=lambda n: order[id(n)])


def _beyond(values: np.ndarray | None) -> float:
    """The largest finite |x| beyond fp16's range in ``values`` (0.0 when none, or not float)."""
    if values is None or values.dtype.kind != "f" or not values.size:
        return 0.0
    big = np.abs(values[np.isfinite(values)])
    peak = float(big.max()) if big.size else 0.0
    return peak if peak > FP16_MAX else 0.0


def _computed_values(graph: gs.Graph, folded: list[gs.Node], wanted: list[gs.Tensor],
                     ctx: PassContext) -> dict[str, np.ndarray]:
    """The fp32 values of ``wanted`` (outputs of ``folded`` nodes), evaluated as fold-constants
    will; empty (with a debug note) when they cannot be evaluated here."""
    if not wanted:
        return {}
    constants = [n for n in graph.nodes if n.op == "Constant"]
    try:
        return evaluate(graph, constants + folded, wanted, {}, ctx.observers)
    except (BackendError, ValueError) as e:
        logger.debug("convert-fp16: constant subexpressions not checked for the fp16 range: %s", e)
        return {}


def kept_for_constants(graph: gs.Graph, selected: list[gs.Node], ctx: PassContext,
                       plans: set[str]) -> tuple[set[str], dict[str, str]]:
    """(nodes computed from constants only, nodes reading a constant beyond fp16 -> why) among
    ``selected``; ``plans`` names the selected nodes that have float computation to convert.
    Both stay in fp32 (see the module docstring)."""
    folded = _constant_only(graph)
    folded_ids = {id(n) for n in folded}
    chosen = [n for n in selected if n.name in plans]
    computed: dict[str, gs.Tensor] = {}
    for node in chosen:
        if id(node) in folded_ids:
            continue
        for t in node.inputs:
            if len(t.inputs) == 1 and id(t.inputs[0]) in folded_ids and \
                    getattr(ir.tensor_dtype(t), "kind", "") == "f":
                computed[t.name] = t
    values = _computed_values(graph, folded, list(computed.values()), ctx)
    readers: dict[str, str] = {}
    for node in chosen:
        if id(node) in folded_ids or node.op == "BatchNormalization":
            continue
        for t in node.inputs:
            given = constant_values(t)
            peak = _beyond(given if given is not None else values.get(t.name))
            if peak and (given is None or node.op not in _SENTINEL):
                readers.setdefault(node.name, f"it reads constant '{t.name}' (|x| up to "
                                              f"{peak:.4g})")
    return {n.name for n in chosen if id(n) in folded_ids}, readers
