"""QDQ lowering of one float graph: encodings decided per tensor in, QuantizeLinear/DequantizeLinear
nodes and quantized initializers out.

Not a plugin (nothing registers here): ``quantize`` plans the encodings (``passes/quantization/quantize.py``)
and this module does the graph surgery, linear in graph size (producer/consumer maps built once,
one cleanup and toposort at the end):

- an integer activation ``T`` gets ``T -> QuantizeLinear -> DequantizeLinear`` and every data
  reader reads the DequantizeLinear output; a graph output keeps its name (the float tensor before
  the pair is renamed ``T_prequant``);
- a float activation (an op kept in float) read by integer ops gets a pair for those readers only
  (the "convert" of mixed precision); float readers and the graph output keep ``T``;
- a weight, bias or constant operand becomes an integer initializer feeding a DequantizeLinear
  (per axis for per-channel encodings); each reading node gets its own copy, so an initializer
  shared by several layers is split before each is quantized, and the float original stays for
  readers that are not quantized (it disappears in the final cleanup when nothing reads it).
  4-bit values are stored in int8/uint8 initializers, or, packed, as ONNX INT4/UINT4
  (two per byte, first value in the low nibble: the same order as QNN's ``--pack_4_bit_weights``;
  ONNX packs the flattened tensor without per-channel padding).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import ml_dtypes
import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper

from aicc.errors import ModelError
from aicc.quant import Encoding
from aicc.passes.cleanup import remove_dead_nodes, sort_nodes

from aicc.graph_casts import Names

__all__ = ["QdqWriter", "DATA_MOVEMENT_OPS", "NON_DATA_INPUTS", "ensure_opset", "needs_opset21",
           "storage_numpy"]

logger = logging.getLogger(__name__)

#: Ops whose outputs hold values of their first input, rearranged or selected: the output shares
#: the input's encoding (no re-quantization).
DATA_MOVEMENT_OPS = frozenset({
    "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "MaxPool", "GlobalMaxPool",
    "Identity", "Slice", "Gather", "GatherElements", "GatherND", "Split", "Expand", "Tile",
    "DepthToSpace", "SpaceToDepth", "ReduceMax", "ReduceMin"})

#: Inputs that are parameters of an op rather than data (shapes, bounds, scales): never quantized.
NON_DATA_INPUTS = {
    "Clip": {1, 2}, "Reshape": {1}, "Expand": {1}, "Tile": {1}, "Pad": {1, 2, 3},
    "Slice": {1, 2, 3, 4}, "Resize": {1, 2, 3}, "Upsample": {1}, "TopK": {1},
    "Range": {0, 1, 2}, "ConstantOfShape": {0}, "Where": {0}, "Squeeze": {1},
    "Unsqueeze": {1}, "ReduceMax": {1}, "ReduceMin": {1}, "ReduceMean": {1}, "ReduceSum": {1},
    "Split": {1}, "Gather": {1}, "GatherElements": {1}, "GatherND": {1},
    "QuantizeLinear": {0, 1, 2}, "DequantizeLinear": {0, 1, 2}, "Shape": {0}, "Size": {0},
    "CumSum": {1}, "OneHot": {0, 1, 2}, "NonMaxSuppression": {2, 3, 4},
}

#: ONNX opset in which 4- and 16-bit QuantizeLinear/DequantizeLinear exist.
OPSET_INT4_INT16 = 21

# Ops whose schema changes between older opsets and 21 only add types or optional inputs or
# attributes with defaults that keep the old behaviour: bumping the opset leaves a node of these
# types meaning what it meant. Anything else that changed is refused (see ``ensure_opset``).
_SAFE_UPGRADES = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Relu", "LeakyRelu", "PRelu", "Where", "CumSum",
    "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "IsInf", "IsNaN",
    "BatchNormalization", "GRU", "LSTM", "RNN", "AveragePool", "LpPool", "Pad", "Resize",
    "Split", "ScatterElements", "ScatterND", "Cast", "CastLike", "Constant", "ConstantOfShape",
    "Identity", "Flatten", "Reshape", "Shape", "Size", "Squeeze", "Unsqueeze", "Transpose",
    "QuantizeLinear", "DequantizeLinear", "QLinearMatMul", "OptionalGetElement",
    "OptionalHasElement", "If", "Loop", "Scan"})
# Reduce ops moved ``axes`` from an attribute to an input at opset 18: safe only without it.
_AXES_TO_INPUT = frozenset({"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
                            "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd",
                            "ReduceSumSquare"})


def storage_numpy(enc: Encoding, packed: bool) -> np.dtype:
    """The numpy dtype of an encoding's stored integers (ml_dtypes int4/uint4 when ``packed``)."""
    if enc.bitwidth == 4 and packed:
        return np.dtype(ml_dtypes.int4 if enc.signed else ml_dtypes.uint4)
    return enc.numpy_dtype


def needs_opset21(enc: Encoding, *, activation: bool, packed: bool) -> bool:
    """Whether storing ``enc`` needs opset-21 QuantizeLinear/DequantizeLinear types."""
    if enc.is_float:
        return False
    if enc.bitwidth == 16:
        return True
    if enc.bitwidth == 4:
        return activation or packed
    return False


def _constant(name: str, values: np.ndarray) -> gs.Constant:
    values = np.array(values, order="C")         # (np.ascontiguousarray makes 0-d 1-d)
    if values.dtype in (np.dtype(ml_dtypes.int4), np.dtype(ml_dtypes.uint4)):
        # graphsurgeon would write one byte per value; let onnx pack two per byte
        return gs.Constant(name, gs.ir.tensor.LazyValues(numpy_helper.from_array(values, name)))
    return gs.Constant(name, values)


def _graphs(graph: gs.Graph) -> list[tuple[gs.Graph, str]]:
    """``graph`` and every subgraph in it (If/Loop/Scan bodies, at any depth), each with where it
    sits (``''`` for ``graph``, ``" in else_branch of 'if'"`` for a branch); iterative, so deep
    nesting does not exhaust the stack. Subgraphs read their nodes against the model's opset."""
    out, stack = [], [(graph, "")]
    while stack:
        g, place = stack.pop()
        out.append((g, place))
        for node in g.nodes:
            for key, value in node.attrs.items():
                for sub in (value if isinstance(value, list) else [value]):
                    if isinstance(sub, gs.Graph):
                        stack.append((sub, f" in {key} of '{node.name}'{place}"))
    return out


def _changed_meaning(node: gs.Node, old: int, opset: int) -> str | None:
    """Why ``node`` would mean something else read against ``opset`` instead of ``old``."""
    if node.domain not in (None, "", "ai.onnx"):
        return None
    try:
        before = onnx.defs.get_schema(node.op, old, "").since_version
        after = onnx.defs.get_schema(node.op, opset, "").since_version
    except onnx.defs.SchemaError:
        return f"{node.op}: no schema at opset {opset}"
    if before == after:
        return None
    gone = sorted(set(node.attrs) - set(onnx.defs.get_schema(node.op, opset, "").attributes))
    if gone:     # an attribute that became an input (Squeeze axes, Split split, ...)
        return f"{node.op} {before} -> {after}: attribute {', '.join(gone)}"
    if node.op in _AXES_TO_INPUT and "axes" not in node.attrs:
        return None
    if node.op not in _SAFE_UPGRADES:
        return f"{node.op} {before} -> {after}"
    return None


def ensure_opset(graph: gs.Graph, opset: int, *, where: str,
                 why: str = "4/16-bit QuantizeLinear/DequantizeLinear types",
                 instead: str = "use 8-bit (unpacked 4-bit weights work at any opset)") -> bool:
    """Raise the default-domain opset of ``graph`` to ``opset`` if it is lower; True if raised.

    Bumping changes the schema every existing node is read against, nodes of subgraphs
    (If/Loop/Scan bodies) included. That is safe for ops whose versions in between only extended
    types or added optional inputs/attributes with the old behaviour as default
    (``_SAFE_UPGRADES``); a node of any other op whose version changes, or a Reduce node with an
    ``axes`` attribute (an input since opset 18), is refused, naming it. ``why`` says what needs
    the opset (the error and the log name it), ``instead`` what the user can do short of
    re-exporting.
    """
    old = graph.opset or 1
    if old >= opset:
        return False
    graphs = _graphs(graph)
    problems = []
    for g, place in graphs:
        for node in g.nodes:
            problem = _changed_meaning(node, old, opset)
            if problem:
                problems.append(f"'{node.name}' ({problem}){place}")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more"
                                           if len(problems) > 5 else "")
        raise ModelError(f"opset {opset} is needed for {why}, but raising opset {old} would "
                         f"change the meaning of node(s) {shown}", where=where,
                         hint=f"export the model at opset {opset} or later, or {instead}")
    for g, _ in graphs:
        g.opset = opset
        domains = [d for d in (g.import_domains or []) if d.domain not in ("", "ai.onnx")]
        g.import_domains = [onnx.helper.make_opsetid("", opset)] + domains
    logger.info("%s: default-domain opset raised from %d to %d for %s", where, old, opset, why)
    return True


class QdqWriter:
    """Adds Q/DQ pairs and quantized initializers to one graph; ``finish`` sorts and cleans once."""

    def __init__(self, graph: gs.Graph, count: Callable[[str, int], None]):
        self.graph = graph
        self.count = count
        self.names = Names(graph)
        self.new_nodes: list[gs.Node] = []

    def name(self, base: str) -> str:
        """A fresh tensor/node name starting with ``base``."""
        return self.names.new(base)

    def _params(self, enc: Encoding, base: str, packed: bool) -> tuple[gs.Constant, gs.Constant]:
        scale = _constant(self.name(f"{base}_scale"), enc.scale_array(np.float32))
        zp = np.asarray(enc.zero_point).astype(storage_numpy(enc, packed))
        return scale, _constant(self.name(f"{base}_zero_point"), zp)

    @staticmethod
    def _axis_attrs(enc: Encoding) -> dict:
        return {"axis": int(enc.axis)} if enc.per_channel else {}

    def qdq(self, tensor: gs.Tensor, enc: Encoding, base: str) -> gs.Variable:
        """``tensor -> QuantizeLinear -> DequantizeLinear``; returns the float output."""
        scale, zp = self._params(enc, base, packed=True)
        q = gs.Variable(self.name(f"{base}_quantized"), dtype=enc.onnx_elem_type,
                        shape=tensor.shape)
        dq = gs.Variable(self.name(f"{base}_dequantized"), dtype=np.float32, shape=tensor.shape)
        attrs = self._axis_attrs(enc)
        self.new_nodes.append(gs.Node("QuantizeLinear", self.name(f"{base}_QuantizeLinear"),
                                      dict(attrs), [tensor, scale, zp], [q]))
        self.new_nodes.append(gs.Node("DequantizeLinear", self.name(f"{base}_DequantizeLinear"),
                                      dict(attrs), [q, scale, zp], [dq]))
        self.count("quantize/dequantize pairs inserted", 1)
        return dq

    def dequantized_constant(self, values: np.ndarray, enc: Encoding, base: str, *,
                             packed: bool = False, quantized: np.ndarray | None = None
                             ) -> gs.Variable:
        """An integer initializer of ``enc.quantize(values)`` (or of ``quantized``, integers a
        rounding algorithm chose for ``values``) feeding a DequantizeLinear."""
        if quantized is not None:
            q = np.asarray(quantized)
            if q.shape != values.shape or q.min() < enc.qmin or q.max() > enc.qmax:
                raise ValueError(f"{base}: learned integers do not fit the encoding")
            q = q.astype(storage_numpy(enc, packed))
        else:
            q = enc.quantize(values).astype(storage_numpy(enc, packed))
        const = _constant(self.name(f"{base}_quantized"), q)
        scale, zp = self._params(enc, base, packed)
        out = gs.Variable(self.name(f"{base}_dequantized"), dtype=np.float32,
                          shape=list(values.shape))
        self.new_nodes.append(gs.Node("DequantizeLinear", self.name(f"{base}_DequantizeLinear"),
                                      self._axis_attrs(enc), [const, scale, zp], [out]))
        self.count("initializers quantized", 1)
        return out

    def rewire(self, readers: Iterable[tuple[gs.Node, int]], new: gs.Tensor) -> None:
        for node, index in readers:
            node.inputs[index] = new

    def rename_output(self, tensor: gs.Variable, dq: gs.Variable) -> None:
        """Let the quantized value ``dq`` take over graph output ``tensor``'s name."""
        original = tensor.name
        self.names.used.discard(dq.name)
        tensor.name = self.name(f"{original}_prequant")
        dq.name = original
        self.graph.outputs = [dq if t is tensor else t for t in self.graph.outputs]

    def finish(self) -> None:
        self.graph.nodes.extend(self.new_nodes)
        self.new_nodes = []
        remove_dead_nodes(self.graph)
        sort_nodes(self.graph)
