"""Declared graph-output shapes checked against the shapes the graph computes, at compile time.

Exporters sometimes declare an output shape the graph does not produce (a CRNN declares
``[1, seqlen]`` and computes ``[20, 1, 8210]``). onnxruntime ignores the declaration; a backend that
trusts it refuses the run. ``aicc compile`` therefore infers each output's shape once the inputs
are bound: ONNX shape inference first, and, when that cannot resolve an output and every input is a
static float tensor, the ``cpu`` backend (onnxruntime) runs on zeros and on ones (skipped for
graphs with integer inputs, which may carry shapes, and for ops whose shapes depend on values:
control flow, NonZero, ...; an output whose shape differs between the two runs is left as
declared). A computed shape that contradicts the declaration replaces it with a warning (the
container records the computed one); one that only makes a symbolic or unknown dimension concrete
replaces it silently.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from . import ir
from .backend import Observers

__all__ = ["correct_output_shapes"]

logger = logging.getLogger(__name__)

#: ops whose output shapes can depend on input values (so a run on zeros proves nothing)
_VALUE_DEPENDENT = frozenset({
    "If", "Loop", "Scan", "NonZero", "Unique", "Compress", "NonMaxSuppression", "TopK",
    "StringSplit", "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
    "Multinomial", "Bernoulli",
})

Shape = list  # list[int | str | None]


def correct_output_shapes(graph: gs.Graph, *, where: str, ir_version: int | None = None,
                          backends: Observers | None = None) -> list[str]:
    """Replace graph-output shapes that disagree with what ``graph`` computes (in place).

    Returns the names of the outputs whose declaration was contradicted (each also logged as a
    warning naming the declared and computed shapes). The runs, when needed, use the ``cpu``
    backend found in ``backends`` (default: the built-in backends).
    """
    computed = _inferred(graph, ir_version)
    unresolved = [t.name for t in graph.outputs if not _static(computed.get(t.name))]
    if unresolved and _runnable(graph):
        computed.update(_run_zeros(graph, ir_version, where, backends or Observers()))
    contradicted = []
    for t in graph.outputs:
        shape = computed.get(t.name)
        if not isinstance(t, gs.Variable) or shape is None or shape == t.shape:
            continue
        if _contradicts(t.shape, shape):
            logger.warning("%s: output '%s' is declared %s but the graph computes %s; the "
                           "container records the computed shape", where, t.name,
                           _fmt(t.shape), _fmt(shape))
            contradicted.append(t.name)
            t.shape = list(shape)
        elif _refines(t.shape, shape):
            t.shape = list(shape)
    return contradicted


def _fmt(shape: Shape | None) -> str:
    return "?" if shape is None else "[" + ", ".join("?" if d is None else str(d)
                                                      for d in shape) + "]"


def _static(shape: Shape | None) -> bool:
    return shape is not None and all(isinstance(d, int) and d >= 0 for d in shape)


def _contradicts(declared: Shape | None, computed: Shape) -> bool:
    if declared is None:
        return False
    if len(declared) != len(computed):
        return True
    return any(isinstance(d, int) and isinstance(c, int) and d != c
               for d, c in zip(declared, computed))


def _refines(declared: Shape | None, computed: Shape) -> bool:
    """Every computed dimension is at least as concrete as the declared one."""
    if declared is None:
        return True
    return all(d == c or (not isinstance(d, int) and c is not None)
               for d, c in zip(declared, computed))


def _inferred(graph: gs.Graph, ir_version: int | None) -> dict[str, Shape]:
    """Output shapes by ONNX shape inference, ignoring what the outputs declare."""
    model = ir.export_model(graph, ir_version=ir_version)
    for out in model.graph.output:
        out.type.tensor_type.ClearField("shape")
    names = {o.name for o in model.graph.output}
    kept = [vi for vi in model.graph.value_info if vi.name not in names]
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as e:  # inference is best effort here: the run below may still resolve it
        logger.debug("output shapes: ONNX shape inference failed: %s", e)
        return {}
    out = {}
    for vi in inferred.graph.output:
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                            for d in tt.shape.dim]
    return out


def _runnable(graph: gs.Graph) -> bool:
    """Static float inputs only: an integer or bool input may carry shapes (Slice starts,
    Unsqueeze axes, Tile repeats), which no run on made-up values can stand for."""
    if not all(_static(t.shape) and ir.tensor_dtype(t) is not None
               and ir.tensor_dtype(t).kind == "f" for t in graph.inputs):
        return False
    return not any(n.op in _VALUE_DEPENDENT for n in graph.nodes)


def _run_zeros(graph: gs.Graph, ir_version: int | None, where: str,
               backends: Observers) -> dict[str, Shape]:
    """Output shapes of cpu-backend runs on zeros and on ones ({} if onnxruntime cannot run
    the graph); an output whose shape differs between the two depends on values: left out."""
    model = ir.export_model(graph, ir_version=ir_version)
    shapes: list[dict[str, tuple[int, ...]]] = []
    try:
        run = backends.observation("cpu", model, ())
        for fill in (np.zeros, np.ones):
            feeds = {t.name: fill(t.shape, ir.tensor_dtype(t)) for t in graph.inputs}
            shapes.append({n: np.shape(r) for n, r in run.run(feeds).items()})
    except Exception as e:  # the backend reports its own failure later, with its own words
        logger.debug("%s: output shapes: onnxruntime could not run the graph: %s", where,
                     str(e).splitlines()[0] if str(e) else type(e).__name__)
        return {}
    return {n: [int(d) for d in shape] for n, shape in shapes[0].items()
            if shapes[1][n] == shape}
