"""Lowering for the simulated AIC100: an ONNX graph with static shapes into fused *steps*, the units
one core (or a group of cores) runs one after another.

What a step is:

- a **tensor step** is a Conv, Gemm or MatMul on the tensor unit. When its data and weight come
  from DequantizeLinear of 8-bit integers (possibly through a Flatten/Reshape) and its only reader
  is a QuantizeLinear, directly or through a Relu/Clip (the QDQ form a quantizer writes), it is an
  *integer* step: int8 operands, int32 accumulators, requantized to the output's int8 grid, the
  Relu/Clip applied as bounds on that grid (see ``numerics``);
- a **vector step** is any other computing op on the vector unit;
- every step absorbs an *epilogue*: the QuantizeLinear after it and a chain of elementwise ops
  (Relu, Clip, Add of a residual, BatchNormalization, Cast, ... each behind its own DQ/Q pair in a
  quantized graph) whose input has no other reader, so those intermediates never reach memory.

DequantizeLinear and the reshaping ops (Reshape, Flatten, Squeeze, Unsqueeze, Identity) are
*virtual*: they cost nothing and own no memory; a step that reads their output reads the tensor
behind them (the int8 tensor, the weight initializer). Only when such a node's output is a graph
output does it become a step of its own.

The device computes floating point in fp16 (the vendor makes ``-convert-to-fp16`` mandatory): a
float32 computing op is refused, naming the nodes, unless it lies between the DQ and Q nodes of a
quantized program (its float inputs are dequantized or come from such an op, its float outputs are
quantized or go to such an op), where it is the vector unit's arithmetic on dequantized values.
aicc refuses rather than lowering precision behind the user's back.

Steps follow a topological order of the graph; every activation a step writes is a buffer whose
lifetime the memory plan tracks. The batch analysis says whether dim 0 of every activation is the
batch and no op mixes samples (no reduction, concatenation, transpose or softmax over dim 0), so
the planner may split the batch over data-parallel groups of cores.

Modules, in the order lowering uses them: ``ops`` (the op tables and the support check),
``shapes`` (constants and static shapes), ``precision`` (the float32 check), ``fusion`` (nodes into
steps), ``geometry`` (a tensor step's sizes), ``integer`` (the QDQ integer pattern), ``batch``
(whether the batch may be split); ``lowered`` holds what they produce.
"""

from __future__ import annotations

import heapq
import logging

import numpy as np
import onnx

from aicc.errors import BackendError, ModelError

from .batch import batch_analysis
from .fusion import build_steps
from .lowered import IntPattern, Lowered, Step, TensorInfo, ceil_div, pieces_of
from .ops import DTYPES, SUPPORTED_OPS, TENSOR_OPS, VIRTUAL_OPS, label, unsupported_nodes
from .precision import check_precision
from .shapes import check_static_inputs, constants_of, static_shapes

__all__ = ["Lowered", "Step", "TensorInfo", "IntPattern", "lower", "unsupported_nodes",
           "SUPPORTED_OPS", "TENSOR_OPS", "VIRTUAL_OPS", "DTYPES", "ceil_div", "pieces_of"]

logger = logging.getLogger(__name__)


def lower(model: onnx.ModelProto, fp32_nodes: frozenset[str] = frozenset()) -> Lowered:
    """Lower a model with static input shapes into steps (checks precision and op support).

    ``fp32_nodes``: nodes the program keeps in float32 on purpose (``node_precision``
    ``float32``/``original``: -keep-original-precision-for-nodes, or fp16 overflow found on
    samples); the device runs those in float32, as the vendor's flag does."""
    check_static_inputs(model)
    problems = unsupported_nodes(model)
    if problems:
        raise BackendError(f"{len(problems)} node(s) the AIC100 cannot run: "
                           + "; ".join(problems[:10]), where="backend 'aic100'",
                           hint="choose another backend with --backend")
    g = model.graph
    constants = constants_of(model)
    shapes = static_shapes(model, constants)
    all_nodes = list(g.node)
    graph_inputs = [vi.name for vi in g.input if vi.name not in constants]
    order = _order(all_nodes, set(constants) | set(graph_inputs))
    nodes = [all_nodes[i] for i in order if all_nodes[i].op_type != "Constant"]
    tensors = _tensor_table(shapes, constants, graph_inputs)
    _check_conv_rank(nodes, shapes)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for x in dict.fromkeys(n.input):
            if x:
                consumers.setdefault(x, []).append(i)
    outputs = [vi.name for vi in g.output]
    virtual = {i for i, n in enumerate(nodes) if n.op_type in VIRTUAL_OPS}
    low = Lowered(model=model, nodes=nodes, tensors=tensors, constants=constants,
                  producer=producer, consumers=consumers, inputs=graph_inputs, outputs=outputs,
                  steps=[], virtual=virtual, batch=0, batch_separable=False)
    check_precision(low, fp32_nodes)
    build_steps(low)
    low.batch, low.batch_separable = batch_analysis(low)
    return low


def _order(nodes: list[onnx.NodeProto], available: set[str]) -> list[int]:
    """A topological order of the nodes (the given order when it already is one)."""
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    waiting, users, ready = {}, {}, []
    for i, n in enumerate(nodes):
        missing = {x for x in n.input if x and x not in available and x in producer}
        for x in missing:
            users.setdefault(x, []).append(i)
        waiting[i] = len(missing)
        if not missing:
            ready.append(i)
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for o in nodes[i].output:
            for j in users.get(o, ()):
                waiting[j] -= 1
                if waiting[j] == 0:
                    heapq.heappush(ready, j)
    if len(order) != len(nodes):
        raise ModelError("the graph has a cycle", where="backend 'aic100'")
    return order


def _tensor_table(shapes: dict[str, tuple[tuple[int, ...], np.dtype]],
                  constants: dict[str, np.ndarray], graph_inputs: list[str]
                  ) -> dict[str, TensorInfo]:
    """Every tensor with its kind; refuses element types the device does not have."""
    odd = sorted({f"'{n}' ({dt})" for n, (_, dt) in shapes.items() if dt.name not in DTYPES})
    if odd:
        raise BackendError(f"{len(odd)} tensor(s) of a type the AIC100 does not have: "
                           + ", ".join(odd[:5]), where="backend 'aic100'",
                           hint=f"types it runs: {', '.join(sorted(DTYPES))}")
    tensors: dict[str, TensorInfo] = {}
    for name, (shape, dtype) in shapes.items():
        kind = "weight" if name in constants else "input" if name in graph_inputs else "activation"
        tensors[name] = TensorInfo(name, shape, dtype, kind)
    return tensors


def _check_conv_rank(nodes: list[onnx.NodeProto],
                     shapes: dict[str, tuple[tuple[int, ...], np.dtype]]) -> None:
    """Refuse convolutions over more than two spatial dimensions (or none)."""
    deep = [f"node '{label(n, i)}' (Conv, {len(shapes[n.input[1]][0]) - 2}-D)"
            for i, n in enumerate(nodes) if n.op_type == "Conv" and n.input[1] in shapes
            and len(shapes[n.input[1]][0]) not in (3, 4)]
    if deep:
        raise BackendError(f"{len(deep)} node(s) the AIC100 cannot run: " + "; ".join(deep[:10]),
                           where="backend 'aic100'", hint="only 1-D and 2-D convolutions")
