"""The opset a quantized graph needs, reached before quantization plans anything.

Per-channel and per-row weights need DequantizeLinear's ``axis`` (opset 13); 4- and 16-bit
activations, 16-bit weights or biases and packed 4-bit weights need opset 21. A graph at an older
opset is first raised in place when every node, those of If/Loop/Scan bodies included, means
the same at the new opset (``qdq.ensure_opset``'s safe bump, no rewriting), else converted with
onnx's version converter (which rewrites the nodes whose schema changed: Squeeze's ``axes``
attribute becomes an input, and so on); either is logged as a warning naming both opsets. When
conversion fails too, per-channel and per-row fall back to per-tensor weights with a warning; the
4/16-bit types have no fallback and the error says what needed the opset and why it could not be
had. Messages name the cause: 4/16-bit types or per-channel ``axis``. Encodings given in an
overrides table (AMP's integer candidates, ``-external-quantization``) count as much as the
settings: a 16-bit activation or weight given there needs opset 21 on an 8-bit run
(``table_needs_opset21``).

Not a plugin: the ``quantize`` pass calls :func:`prepare_opset` on each graph.
"""

from __future__ import annotations

import dataclasses
import logging

import onnx
import onnx_graphsurgeon as gs

from aicc import ir

from aicc.errors import ModelError

from aicc.passes.cleanup import remove_dead_nodes
from aicc.passes.folding.fold_constants import lower_constant_nodes
from aicc.passes.quantization.qdq import OPSET_INT4_INT16, ensure_opset, needs_opset21

__all__ = ["prepare_opset", "needs_new_opset", "table_needs_opset21", "OPSET_AXIS"]

logger = logging.getLogger(__name__)

#: DequantizeLinear/QuantizeLinear gained ``axis`` (per-channel scales) at opset 13.
OPSET_AXIS = 13


def table_needs_opset21(table, s) -> bool:
    """Whether an overrides table (``EncodingTable``) gives an integer encoding whose type needs
    opset 21 (16-bit, 4-bit activations, packed 4-bit weights under settings ``s``)."""
    return table is not None and (
        any(needs_opset21(e, activation=True, packed=True) for e in table.activations.values())
        or any(needs_opset21(e, activation=False, packed=s.pack_4bit)
               for e in table.params.values()))


def _needed(s, wide: bool = False) -> tuple[int, str, str]:
    """(opset the settings need, why, what else the user can do); (0, '', '') when any opset
    will do. ``wide``: the overrides give 4/16-bit encodings."""
    if wide:
        return (OPSET_INT4_INT16, "the 4/16-bit encodings the overrides give",
                "give those tensors 8-bit encodings")
    if s.act_bw in (4, 16) or s.weight_bw == 16 or s.bias_bw == 16 or \
            (s.weight_bw == 4 and s.pack_4bit):
        return (OPSET_INT4_INT16, "4/16-bit QuantizeLinear/DequantizeLinear types",
                "use 8-bit (unpacked 4-bit weights work at any opset)")
    if s.per_channel or s.per_row:
        return (OPSET_AXIS, "per-channel DequantizeLinear (its 'axis' attribute)",
                "quantize weights per tensor")
    return 0, "", ""


def _convert(graph: gs.Graph, opset: int, ir_version: int) -> gs.Graph:
    """``graph`` converted by onnx's version converter to ``opset`` (a new graph object)."""
    from onnx import version_converter

    model = ir.export_model(graph, ir_version=max(ir_version, 7))
    converted = version_converter.convert_version(model, opset)
    onnx.checker.check_model(converted)
    new = ir.import_graph(converted)
    # the converter spells new constant inputs (ReduceMean's axes from opset 18) as Constant
    # nodes; the planner reads constants as tensors, as fold-constants left the rest of the graph
    # (otherwise a LayerNorm's ReduceMean reads a second "source" and its expression no longer
    # fuses: PP-OCRv4 rec at 16 bits lost fusion and quantized tensors calibration had skipped)
    lower_constant_nodes(new)
    remove_dead_nodes(new)
    return new


def needs_new_opset(graph: gs.Graph, s) -> bool:
    """Whether quantizing ``graph`` under settings ``s`` raises or converts its opset."""
    opset = _needed(s)[0]
    return bool(opset) and (graph.opset or 1) < opset


def prepare_opset(graph: gs.Graph, s, *, where: str, ir_version: int = 8, quiet: bool = False,
                  wide: bool = False):
    """(graph to quantize, settings to use): ``graph`` itself or its conversion to the opset that
    ``s`` needs (opset 21 with ``wide``: the overrides give 4/16-bit encodings), and ``s`` itself
    or, if per-channel weights cannot be had, per-tensor settings. ``quiet`` logs what was done
    at debug level (a preview of what ``quantize`` will do)."""
    opset, why, instead = _needed(s, wide)
    old = graph.opset or 1
    if not opset or old >= opset:
        return graph, s
    log = logger.debug if quiet else logger.warning
    try:
        if ensure_opset(graph, opset, where=where, why=why, instead=instead):
            log("%s: opset raised from %d to %d for %s (every node means the same there)",
                where, old, opset, why)
            return graph, s
    except ModelError:
        pass
    try:
        new = _convert(graph, opset, ir_version)
    except Exception as e:       # the converter's own errors are of many types
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if opset == OPSET_AXIS:
            log("%s: per-channel weights need opset %d and onnx's version converter could not "
                "convert this opset-%d model (%s): weights quantized per tensor", where, opset,
                old, reason)
            return graph, dataclasses.replace(s, per_channel=False, per_row=False)
        raise ModelError(f"opset {opset} is needed for {why}, and onnx's version converter could "
                         f"not convert this opset-{old} model: {reason}", where=where,
                         hint=f"export the model at opset {opset} or later, or {instead}"
                         ) from None
    log("%s: converted from opset %d to %d with onnx's version converter for %s", where, old,
        opset, why)
    return new, s
