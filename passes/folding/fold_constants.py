"""``fold-constants``: evaluate subgraphs whose inputs are all constant and store the results.

Folding runs the constant subgraphs on the ``cpu`` backend (onnxruntime, found by name through
``ctx.observers``) and also folds shape computations whose result
is known from static shapes (``Shape``, and ``Gather``/``Slice`` of a ``Shape``). Results larger
than ``size_threshold`` bytes stay as computations, so folding never inflates the model.

The steps are those of onnx-graphsurgeon's ``Graph.fold_constants`` (lower ``Constant`` nodes;
with ``fold_shapes``, elide int -> float -> int ``Cast`` pairs around shape arithmetic; find the
nodes whose inputs are all constant; fold static shapes; evaluate), done in time linear in the
graph: no copy of the graph is made, and the constant subgraphs are evaluated in batches of
independent components of at most ``evaluate.BATCH_NODES`` nodes, because onnxruntime's session
creation grows faster than linearly with the number of nodes in one session.

No node is evaluated whose output would exceed ``max_intermediate_bytes`` (default 1 GiB, as
onnxruntime's own folding), judged before anything is allocated from the static shapes or, for
the ops that make large tensors from small inputs (``ConstantOfShape``, ``Expand``, ``Tile``,
``Range``), from their constant inputs; when that size cannot be known, they are not folded. So a
176-byte model that reduces a ``ConstantOfShape`` of [30000, 30000] to a scalar compiles without
allocating 3.6 GB. (A graph with control flow, folded by graph-surgeon, is not folded at all when
such a node would be evaluated.) Graphs that hold control-flow
subgraphs or local functions are folded by onnx-graphsurgeon's ``fold_constants`` itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterable, Iterator

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.exporters.onnx_exporter import dtype_to_onnx
from onnx_graphsurgeon.ir.tensor import SparseValues

from aicc.backend import Observers
from aicc.errors import BackendError
from aicc.hookspecs import hookimpl
from aicc.ir import export_model
from aicc.options import option
from aicc.ort_compat import for_onnxruntime, restamp_suffices
from aicc.pass_base import Pass, PassContext
from aicc.passes.cleanup import remove_dead_nodes
from aicc.program import Program

from .evaluate import batches, evaluate, should_evaluate
from .sizes import too_large_nodes
from .static_shapes import gathered_shape, shape_of, sliced_shape

__all__ = ["FoldConstants", "lower_constant_nodes"]

logger = logging.getLogger(__name__)

_NO_FOLD_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
_CONSTANT_ATTRS = frozenset({"value", "value_float", "value_floats", "value_int", "value_ints"})
#: ops whose output type is their input type, so Cast(int -> float) -> op -> Cast(float -> int)
#: can compute in the int type (comparisons are not among them: they return bool, and their
#: Cast(bool -> int) is no round trip to rebind)
_CAST_ELISION_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Concat"})


class FoldConstants(Pass):
    name = "fold-constants"
    description = "evaluate constant subgraphs (and known shapes) once, at compile time"
    scope = "graph"
    after = ("specialize", "lower")     # fold with shapes bound and the ops that will run
    semantics = "preserving"

    @dataclasses.dataclass(frozen=True)
    class Options:
        size_threshold: int = option(16 * 1024 * 1024, "largest folded tensor in bytes",
                                     minimum=0)
        fold_shapes: bool = option(True, "fold Shape/Size of tensors whose shapes are static")
        max_intermediate_bytes: int = option(1 << 30, "largest tensor evaluated while folding, "
                                                      "results and intermediates alike",
                                             minimum=0)

    def run_graph(self, graph: gs.Graph, program: Program, ctx: PassContext) -> None:
        before = len(graph.nodes)
        if not any(_foldable(node) for node in graph.nodes):
            logger.debug("fold-constants: graph '%s' has no node with only constant inputs",
                         ctx.graph_name)
            return
        if graph.functions or any(True for _ in graph.subgraphs()):
            lower_constant_nodes(graph)  # with ONNX's dtypes, before graph-surgeon's own
            risky = _too_large_foldable(graph, ctx.options.max_intermediate_bytes)
            if risky:  # graph-surgeon's folding cannot leave one node out: fold nothing
                logger.warning("fold-constants: graph '%s' not folded: node '%s' (%s) would "
                               "evaluate a tensor over %d bytes", ctx.graph_name, risky.name,
                               risky.op, ctx.options.max_intermediate_bytes)
                return
            with _stamped_for_onnxruntime(graph) as loadable:
                if loadable:
                    # subgraphs are left as they are: graph-surgeon's folding inside If
                    # branches can leave a branch reading a tensor nothing produces (onnx's
                    # AffineGrid function cases), and so can its inlining of constant Ifs;
                    # fold-if and unroll-loops handle control flow
                    graph.fold_constants(fold_shapes=ctx.options.fold_shapes and
                                         not _sliced_shapes(graph),
                                         size_threshold=ctx.options.size_threshold,
                                         recurse_subgraphs=False, flatten_subgraphs=False,
                                         error_ok=False)
        else:
            sessions = _fold(graph, fold_shapes=ctx.options.fold_shapes,
                             size_threshold=ctx.options.size_threshold,
                             limit=ctx.options.max_intermediate_bytes, backends=ctx.observers)
            ctx.count("onnxruntime sessions", sessions)
        remove_dead_nodes(graph)
        folded = before - len(graph.nodes)
        ctx.count("nodes folded", folded)
        if not folded:
            logger.debug("fold-constants: nothing folded in graph '%s'", ctx.graph_name)


@contextlib.contextmanager
def _stamped_for_onnxruntime(graph: gs.Graph) -> Iterator[bool]:
    """graph-surgeon's own folding runs onnxruntime on the graph as stamped: lower its IR version
    and opset meanwhile when that alone makes it loadable (``ort_compat``); yields False (and
    nothing is folded) when the graph needs more than a new stamp."""
    model = export_model(graph)
    if not restamp_suffices(model):
        logger.debug("fold-constants: not folding graph '%s': onnxruntime needs it converted "
                     "to an older opset", graph.name)
        yield False
        return
    try:
        lowered = for_onnxruntime(model)
    except BackendError as e:
        logger.debug("fold-constants: not folding graph '%s': %s", graph.name, e)
        yield False
        return
    # graph-surgeon folds each subgraph on its own, exporting it with the subgraph's own stamps
    # (none: onnx's newest IR version), so every graph gets the loadable stamps, changed or not
    graphs = [graph, *graph.subgraphs(recursive=True)]
    saved = [(g.ir_version, g.opset, g.import_domains) for g in graphs]
    for g in graphs:
        g.ir_version = lowered.ir_version
        g.opset = _default_opset(lowered)
        g.import_domains = list(lowered.opset_import)
    try:
        yield True
    finally:
        for g, (ir_version, opset, domains) in zip(graphs, saved):
            g.ir_version, g.opset, g.import_domains = ir_version, opset, domains


def _sliced_shapes(graph: gs.Graph) -> bool:
    """Whether a Shape node takes ``start``/``end``: graph-surgeon's shape folding ignores them
    (it would fold ``Shape(start=1)`` of a [3, 4, 5] tensor to [3, 4, 5]), so such graphs are
    folded without it."""
    return any(node.op == "Shape" and ("start" in node.attrs or "end" in node.attrs)
               for node in graph.nodes)


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _foldable(node: gs.Node) -> bool:
    if node.op == "Constant":
        return True
    if node.op in ("Shape", "Size"):
        return True
    return bool(node.inputs) and all(isinstance(t, gs.Constant) or not t.name
                                     for t in node.inputs)


# -- the folding itself (a graph without subgraphs or functions) ----------------------------------

def _fold(graph: gs.Graph, *, fold_shapes: bool, size_threshold: int | None,
          limit: int = 1 << 30, backends: Observers | None = None) -> int:
    """Fold ``graph`` in place (dead nodes stay for cleanup); return the sessions created."""
    lower_constant_nodes(graph)
    too_large = too_large_nodes(graph, limit)
    if fold_shapes:
        outputs = {t.name for t in graph.outputs}
        for node in list(graph.nodes):
            _elide_casts(node, outputs)
    tensors = graph.tensors()
    # name -> tensor of everything known to be constant: initializers, then foldable outputs.
    known: dict[str, gs.Tensor] = {n: t for n, t in tensors.items() if isinstance(t, gs.Constant)}
    _add_foldable_outputs(graph.nodes, known, too_large)
    shapes: dict[str, np.ndarray] = {}  # tensors folded from static shapes
    if fold_shapes:
        # In a sorted graph one pass in node order reaches the fixpoint, so after shape folding
        # only the readers of what it folded need a look; an unsorted graph gets full passes.
        in_order = _is_sorted(graph.nodes)
        candidates = [t for t in tensors.values()
                      if t.inputs and t.inputs[0].op in ("Gather", "Slice", "Shape")]
        for fold in (gathered_shape, sliced_shape, shape_of):
            folded = []
            for tensor in candidates:
                value = fold(tensor, known, shapes)
                if value is not None:
                    known[tensor.name] = tensor
                    shapes[tensor.name] = value
                    folded.append(tensor)
            if not in_order:
                _add_foldable_outputs(graph.nodes, known, too_large)
            elif folded:
                _add_foldable_readers(folded, known, too_large)
    wanted = [t for t in known.values()
              if should_evaluate(t, known, shapes, size_threshold)]
    values: dict[str, np.ndarray] = dict(shapes)
    sessions = 0
    for nodes, outputs in batches(graph, wanted, shapes):
        try:
            values.update(evaluate(graph, nodes, outputs, shapes, backends or Observers()))
        except BackendError as e:  # onnxruntime cannot load these nodes (ort_compat says why)
            logger.debug("fold-constants: not folding %d node(s): %s", len(nodes), e)
            continue
        sessions += 1
    large: dict[str, int] = {}
    for name, value in values.items():
        tensor = tensors[name]
        if isinstance(tensor, gs.Constant):
            continue
        if size_threshold is not None and value.nbytes > size_threshold:
            logger.debug("fold-constants: not folding '%s': %d bytes exceed the size threshold "
                         "(%d)", name, value.nbytes, size_threshold)
            continue
        if size_threshold is None and value.nbytes > (1 << 20):
            large[name] = value.nbytes
        tensor.to_constant(value)
        tensor.inputs.clear()
    if large:
        logger.warning("fold-constants: folded large tensors: %s",
                       ", ".join(f"{n} ({b >> 20} MiB)" for n, b in large.items()))
    return sessions


_CONSTANT_DTYPES = {"value_float": np.float32, "value_floats": np.float32,
                    "value_int": np.int64, "value_ints": np.int64}


def lower_constant_nodes(graph: gs.Graph) -> None:
    """Turn the output of every ``Constant`` node into a Constant tensor."""
    for node in list(graph.nodes):
        if node.op != "Constant":
            continue
        for tensor in list(node.outputs):
            if len(tensor.inputs) != 1:
                continue
            if len(node.attrs) != 1:
                logger.warning("fold-constants: Constant node '%s' must have exactly one "
                               "attribute", node.name)
                continue
            attr_name, attr_val = next(iter(node.attrs.items()))
            if attr_name not in _CONSTANT_ATTRS:
                logger.warning("fold-constants: Constant node '%s': unsupported attribute '%s'",
                               node.name, attr_name)
                continue
            if isinstance(attr_val, gs.Node.AttributeRef):
                continue
            if isinstance(attr_val, gs.Constant):
                arr = attr_val._values
            else:  # ONNX fixes these types; numpy would pick float64 for value_float(s)
                arr = np.array(attr_val, dtype=_CONSTANT_DTYPES.get(attr_name))
            tensor.to_constant(arr)
            tensor.inputs.clear()


def _elide_casts(node: gs.Node, graph_outputs: set[str]) -> None:
    """Cast(int -> float) -> arithmetic -> Cast(back to int): compute in the int type instead."""
    if node.op not in _CAST_ELISION_OPS:
        return
    for out in node.outputs:
        if out.name in graph_outputs or any(c.op != "Cast" for c in out.outputs):
            return
    in_casts = [p for t in node.inputs for p in t.inputs
                if p.op == "Cast" and p.attrs["to"] == onnx.TensorProto.FLOAT]
    if not in_casts:
        return
    in_types = {dtype_to_onnx(c.inputs[0].dtype) for c in in_casts}
    if len(in_types) != 1:
        return
    final_type = in_types.pop()
    out_casts = [c for t in node.outputs for c in t.outputs
                 if c.op == "Cast" and c.attrs["to"] in (onnx.TensorProto.INT32,
                                                         onnx.TensorProto.INT64)]
    if not out_casts:
        return
    if len({c.attrs["to"] for c in out_casts}) != 1 or out_casts[0].attrs["to"] != final_type:
        return
    # Every other input must be a constant the int type holds exactly: Mul(Cast(x), 0.5) must
    # not become Mul(x, 0), nor Add(Cast(x), y) an int + float Add.
    cast_outputs = {id(c.outputs[0]) for c in in_casts}
    for inp in node.inputs:
        if id(inp) in cast_outputs:
            continue
        if not isinstance(inp, gs.Constant) or isinstance(inp._values, SparseValues):
            return
        values = np.asarray(inp.values)
        info = np.iinfo(onnx.helper.tensor_dtype_to_np_dtype(final_type))
        if values.dtype.kind not in "iuf" or not np.all(np.isfinite(values)) or \
                np.any(values != np.trunc(values)) or np.any(values < info.min) or \
                np.any(values > info.max):
            return
    for index, inp in enumerate(node.inputs):
        if isinstance(inp, gs.Constant):
            inp.values = inp.values.astype(onnx.helper.tensor_dtype_to_np_dtype(final_type))
        for cast in in_casts:
            if cast.outputs[0] == inp:
                node.inputs[index] = cast.inputs[0]
    for index, out in enumerate(node.outputs):
        for cast in out_casts:
            if cast.inputs[0] == out:
                cast_out = cast.outputs[0]
                cast_out.inputs.clear()
                node.outputs[index] = cast_out


def _add_foldable_outputs(nodes: Iterable[gs.Node], known: dict[str, gs.Tensor],
                         too_large: frozenset[int] = frozenset()) -> None:
    """One pass in node order: a node whose inputs are all known makes its outputs known."""
    for node in nodes:
        if node.op in _NO_FOLD_OPS or id(node) in too_large:
            continue
        if any(isinstance(v, gs.Node.AttributeRef) for v in node.attrs.values()):
            continue
        if all(t.name in known for t in node.inputs if not t.is_empty()):
            known.update((t.name, t) for t in node.outputs if not t.is_empty())


def _add_foldable_readers(tensors: Iterable[gs.Tensor], known: dict[str, gs.Tensor],
                          too_large: frozenset[int] = frozenset()) -> None:
    """What ``_add_foldable_outputs`` adds to a fixpoint after ``tensors`` became known."""
    stack = list(tensors)
    while stack:
        for node in stack.pop().outputs:
            if node.op in _NO_FOLD_OPS or id(node) in too_large or any(
                    isinstance(v, gs.Node.AttributeRef) for v in node.attrs.values()):
                continue
            if all(t.name in known for t in node.inputs if not t.is_empty()):
                for t in node.outputs:
                    if not t.is_empty() and t.name not in known:
                        known[t.name] = t
                        stack.append(t)


def _too_large_foldable(graph: gs.Graph, limit: int) -> gs.Node | None:
    """A node that folding would evaluate and whose output may exceed ``limit``, if any."""
    too_large = too_large_nodes(graph, limit)
    if not too_large:
        return None
    known = {n: t for n, t in graph.tensors().items() if isinstance(t, gs.Constant)}
    _add_foldable_outputs(graph.nodes, known)
    for node in graph.nodes:
        if id(node) in too_large and all(t.name in known for t in node.inputs if not t.is_empty()):
            return node
    return None


def _is_sorted(nodes: list[gs.Node]) -> bool:
    """Whether every node comes after the producers of its inputs."""
    position = {id(node): i for i, node in enumerate(nodes)}
    return all(position.get(id(p), -1) < i for i, node in enumerate(nodes)
               for t in node.inputs for p in t.inputs)


@hookimpl
def aicc_register_passes(registry):
    registry.add(FoldConstants)
