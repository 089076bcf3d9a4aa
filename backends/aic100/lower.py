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
"""

from __future__ import annotations

import functools
import heapq
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from aicc.errors import BackendError, ModelError, option_ref

from .transposed import convtranspose_geometry, weight_channel_axis

__all__ = ["Lowered", "Step", "TensorInfo", "IntPattern", "lower", "unsupported_nodes",
           "SUPPORTED_OPS", "TENSOR_OPS", "VIRTUAL_OPS", "DTYPES", "ceil_div", "pieces_of"]

logger = logging.getLogger(__name__)

TENSOR_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
#: element types of the tensors a program may hold: fp16 and fp32 (between DQ and Q), and the
#: integers the vector unit handles (4- and 16-bit ones for QDQ programs of those widths, which
#: run dequantized). No float64, bfloat16, float8 or 2-bit types: the AIC100 has none of them.
DTYPES = frozenset({"float16", "float32", "int4", "uint4", "int8", "uint8", "int16", "uint16",
                    "int32", "uint32", "int64", "uint64", "bool"})
#: ops that only rename or reinterpret a tensor: no cycles, no memory of their own
ALIAS_OPS = frozenset({"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze"})
VIRTUAL_OPS = ALIAS_OPS | {"DequantizeLinear"}
#: ops that move or convert data without floating-point arithmetic (allowed in any precision)
MOVEMENT_OPS = ALIAS_OPS | frozenset({
    "Transpose", "Concat", "Split", "Slice", "Gather", "Expand", "Tile", "Pad", "Shape", "Size",
    "Constant", "ConstantOfShape", "Cast", "QuantizeLinear",
    "DequantizeLinear", "Range", "Where", "Equal", "Less", "Greater", "LessOrEqual",
    "GreaterOrEqual", "Not", "And", "Or", "Xor"})
#: vector-unit work per output element (MAC-equivalents); pooling adds its window
_VECTOR_COST = {
    "Relu": 1, "Clip": 1, "LeakyRelu": 2, "PRelu": 2, "Add": 1, "Sub": 1, "Mul": 1, "Div": 4,
    "Max": 1, "Min": 1, "Neg": 1, "Abs": 1, "Sqrt": 4, "Reciprocal": 4, "Pow": 8, "Exp": 8,
    "Log": 8, "Sigmoid": 8, "Tanh": 8, "Erf": 8, "Gelu": 10, "HardSigmoid": 2, "HardSwish": 3,
    "BatchNormalization": 2, "Cast": 1, "QuantizeLinear": 2,
    "DequantizeLinear": 1, "Softmax": 6, "LogSoftmax": 6, "LayerNormalization": 8,
    "ReduceMean": 1, "ReduceSum": 1, "ReduceMax": 1, "ReduceMin": 1,
    "MaxPool": 0, "AveragePool": 0, "GlobalAveragePool": 0, "GlobalMaxPool": 0, "Resize": 4,
    "Transpose": 1, "Concat": 1, "Split": 1, "Slice": 1, "Gather": 1, "Expand": 1, "Tile": 1,
    "Pad": 1, "Where": 1, "Equal": 1, "Less": 1, "Greater": 1, "LessOrEqual": 1,
    "GreaterOrEqual": 1, "Not": 1, "And": 1, "Or": 1, "Xor": 1,
    "Identity": 1, "Reshape": 1, "Flatten": 1, "Squeeze": 1, "Unsqueeze": 1, "Shape": 0,
    "Size": 0, "Constant": 0, "ConstantOfShape": 1, "Range": 1,
}
#: elementwise ops a step may absorb as its epilogue (one data input from the step)
EPILOGUE_OPS = frozenset({
    "Relu", "Clip", "LeakyRelu", "PRelu", "Add", "Sub", "Mul", "Div", "Max", "Min", "Neg", "Abs",
    "Sqrt", "Sigmoid", "Tanh", "Erf", "Gelu", "HardSigmoid", "HardSwish",
    "BatchNormalization", "Cast", "Exp"})
SUPPORTED_OPS = TENSOR_OPS | frozenset(_VECTOR_COST)
_REDUCING = frozenset({"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceSum",
                       "ReduceMax", "ReduceMin"})


@dataclass
class TensorInfo:
    """A tensor as the planner sees it: static shape, dtype, bytes and where it comes from."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    kind: str  # "input", "weight" or "activation"

    @functools.cached_property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @functools.cached_property
    def size(self) -> int:
        return math.prod(self.shape)  # the planner asks often: no numpy call per question


@dataclass
class IntPattern:
    """DQ(x), DQ(w)[, DQ(b)] -> Conv/Gemm/MatMul -> Q(y): what the integer kernel needs."""

    main: int          # node index of the Conv/Gemm/MatMul
    quant: int         # node index of the QuantizeLinear
    x: str             # int8/uint8 activation
    x_scale: float
    x_zero: int
    w: str             # int8/uint8 weight (initializer) or activation (MatMul)
    w_scale: np.ndarray  # per output channel (broadcast to N)
    w_zero: np.ndarray
    bias: np.ndarray | None  # int32 per output channel, in units of x_scale * w_scale
    y: str             # QuantizeLinear output
    y_scale: float
    y_zero: int
    y_dtype: np.dtype
    bias_rescaled: bool = False
    #: shapes the op reads (the integer tensors are reshaped to them, see ``_dq_of``)
    x_shape: tuple[int, ...] = ()
    w_shape: tuple[int, ...] = ()
    #: a Relu/Clip between the op and its QuantizeLinear, as bounds on the quantized output
    act: str | None = None
    act_lo: int | None = None
    act_hi: int | None = None

    @property
    def consumed(self) -> int:
        """How many of the step's nodes the integer kernel computes (op, activation, Q)."""
        return 3 if self.act else 2


@dataclass
class Step:
    """One fused unit of work, in schedule order."""

    index: int
    name: str
    op: str
    kind: str                 # "tensor", "vector" or "copy"
    precision: str            # "int8", "fp16" or "fp32"
    nodes: list[int]          # node indices run by this step, in order
    inputs: list[str]         # activation buffers read (behind virtual nodes)
    weights: list[str]        # initializers read (behind virtual nodes)
    outputs: list[str]        # buffers written
    macs: int = 0             # tensor-unit MACs (whole batch)
    vector_ops: int = 0       # vector-unit MAC-equivalents (whole batch)
    geometry: dict[str, Any] = field(default_factory=dict)
    fused: list[str] = field(default_factory=list)
    integer: IntPattern | None = None
    #: every raw tensor name the step's nodes (and the virtual nodes behind them) read
    reads: set[str] = field(default_factory=set)


@dataclass
class Lowered:
    """A graph lowered to steps, with the tensor table and the maps execution needs."""

    model: onnx.ModelProto
    nodes: list[onnx.NodeProto]
    tensors: dict[str, TensorInfo]
    constants: dict[str, np.ndarray]
    producer: dict[str, int]
    consumers: dict[str, list[int]]
    inputs: list[str]
    outputs: list[str]
    steps: list[Step]
    virtual: set[int]
    batch: int                # dim 0 shared by every activation (0: none)
    batch_separable: bool     # whether the graph can be split over dim 0

    def resolve(self, name: str) -> str:
        """The tensor behind ``name``, looking through virtual nodes (DQ, reshapes)."""
        seen = 0
        while name in self.producer and self.producer[name] in self.virtual and seen < 10_000:
            name = self.nodes[self.producer[name]].input[0]
            seen += 1
        return name


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _label(node: onnx.NodeProto, index: int) -> str:
    return node.name or (node.output[0] if node.output else f"#{index}")


def unsupported_nodes(model: onnx.ModelProto) -> list[str]:
    """Every node the simulated AIC100 cannot run, as ``node 'NAME' (OpType)``."""
    problems = []
    for i, node in enumerate(model.graph.node):
        if node.domain not in ("", "ai.onnx"):
            problems.append(f"node '{_label(node, i)}' ({node.domain}.{node.op_type})")
        elif node.op_type not in SUPPORTED_OPS:
            problems.append(f"node '{_label(node, i)}' ({node.op_type})")
    return problems


# --- shapes -----------------------------------------------------------------------------------

def _static(vi: onnx.ValueInfoProto) -> tuple[tuple[int, ...], np.dtype] | None:
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not tt.elem_type or not tt.HasField("shape"):
        return None
    dims = []
    for d in tt.shape.dim:
        if not d.HasField("dim_value"):
            return None
        dims.append(int(d.dim_value))
    return tuple(dims), np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))


def _check_static_inputs(model: onnx.ModelProto) -> None:
    inits = {i.name for i in model.graph.initializer}
    for vi in list(model.graph.input) + list(model.graph.output):
        if vi.name not in inits and not vi.type.HasField("tensor_type"):
            kind = (vi.type.WhichOneof("value") or "untyped").replace("_type", "")
            raise BackendError(f"'{vi.name}' is {'an' if kind[0] in 'aeiou' else 'a'} {kind}, "
                               "not a tensor; the AIC100 runs tensors only",
                               where="backend 'aic100'",
                               hint="choose another backend with --backend")
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = vi.type.tensor_type.shape.dim
        for axis, d in enumerate(dims):
            if not d.HasField("dim_value") or d.dim_value < 0:  # 0: an empty tensor, static
                sym = d.dim_param or "?"
                raise BackendError(
                    f"input '{vi.name}' has symbolic dimension '{sym}' (axis {axis}); the AIC100 "
                    "runs static shapes", where="backend 'aic100'",
                    hint=f"bind it with {option_ref('batchsize')}=N or {option_ref('symbols')}={sym},N")


_LIGHT_BYTES = 1 << 16


def _light(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model for shape inference: initializers over 64 KiB become typed graph inputs, so
    onnx does not serialize hundreds of MB of weights to learn their (declared) shapes. Small
    ones stay: shape computations may read their values."""
    g = model.graph
    big = [t for t in g.initializer if len(t.raw_data) > _LIGHT_BYTES]
    if not big:
        return model
    light = onnx.ModelProto(ir_version=model.ir_version)
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    lg = light.graph
    lg.name = g.name
    lg.node.extend(g.node)
    declared = {vi.name for vi in g.input}
    lg.input.extend(g.input)
    lg.input.extend(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                    for t in big if t.name not in declared)
    big_names = {t.name for t in big}
    lg.initializer.extend(t for t in g.initializer if t.name not in big_names)
    lg.output.extend(g.output)
    lg.value_info.extend(g.value_info)
    return light


def _shapes(model: onnx.ModelProto, constants: dict[str, np.ndarray]
            ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Static shape and dtype of every tensor: ONNX shape inference, else one interpreter run."""
    try:
        inferred = onnx.shape_inference.infer_shapes(_light(model), strict_mode=False,
                                                     data_prop=True)
    except Exception as e:  # onnx raises several exception types here
        raise ModelError(f"shape inference failed: {str(e).strip().splitlines()[0]}",
                         where="backend 'aic100'") from None
    known: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        s = _static(vi)
        if s is not None:
            known[vi.name] = s
    for name, arr in constants.items():
        known[name] = (tuple(arr.shape), arr.dtype)
    needed = [o for n in model.graph.node for o in n.output if o and o not in known]
    if needed:
        from aicc.backends.interpreter.engine import Interpreter

        feeds = {}
        for vi in model.graph.input:
            if vi.name in constants:
                continue
            shape, dtype = _static(vi)
            feeds[vi.name] = np.zeros(shape, dtype)
        seen: dict[str, tuple[tuple[int, ...], np.dtype]] = {}

        def observe(name: str, value: np.ndarray) -> None:
            if isinstance(value, np.ndarray):
                seen[name] = (tuple(value.shape), value.dtype)

        Interpreter(model).run(feeds, observe=observe, observe_names=needed)
        known.update(seen)
        missing = [n for n in needed if n not in known]
        if missing:
            raise BackendError(f"no static shape for tensor '{missing[0]}'",
                               where="backend 'aic100'")
    return known


# --- lowering ---------------------------------------------------------------------------------

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


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    out = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    from aicc.backends.interpreter.kernels import NodeSpec, parse_attribute
    from aicc.backends.interpreter.ops_shape import constant_value

    for node in model.graph.node:
        if node.op_type == "Constant":
            spec = NodeSpec(name=node.name, op_type="Constant", version=13,
                            attrs={a.name: parse_attribute(a) for a in node.attribute},
                            inputs=tuple(node.input), outputs=tuple(node.output))
            out[node.output[0]] = constant_value(spec)
    return out


def _scalar(constants: dict[str, np.ndarray], name: str) -> np.ndarray | None:
    return constants.get(name) if name else None


def lower(model: onnx.ModelProto, fp32_nodes: frozenset[str] = frozenset()) -> Lowered:
    """Lower a model with static input shapes into steps (checks precision and op support).

    ``fp32_nodes``: nodes the program keeps in float32 on purpose (``node_precision``
    ``float32``/``original``: -keep-original-precision-for-nodes, or fp16 overflow found on
    samples); the device runs those in float32, as the vendor's flag does."""
    _check_static_inputs(model)
    problems = unsupported_nodes(model)
    if problems:
        raise BackendError(f"{len(problems)} node(s) the AIC100 cannot run: "
                           + "; ".join(problems[:10]), where="backend 'aic100'",
                           hint="choose another backend with --backend")
    g = model.graph
    constants = _constants(model)
    shapes = _shapes(model, constants)
    all_nodes = list(g.node)
    graph_inputs = [vi.name for vi in g.input if vi.name not in constants]
    order = _order(all_nodes, set(constants) | set(graph_inputs))
    nodes = [all_nodes[i] for i in order if all_nodes[i].op_type != "Constant"]
    odd = sorted({f"'{n}' ({dt})" for n, (_, dt) in shapes.items() if dt.name not in DTYPES})
    if odd:
        raise BackendError(f"{len(odd)} tensor(s) of a type the AIC100 does not have: "
                           + ", ".join(odd[:5]), where="backend 'aic100'",
                           hint=f"types it runs: {', '.join(sorted(DTYPES))}")
    tensors: dict[str, TensorInfo] = {}
    for name, (shape, dtype) in shapes.items():
        kind = "weight" if name in constants else "input" if name in graph_inputs else "activation"
        tensors[name] = TensorInfo(name, shape, dtype, kind)
    deep = [f"node '{_label(n, i)}' (Conv, {len(shapes[n.input[1]][0]) - 2}-D)"
            for i, n in enumerate(nodes) if n.op_type == "Conv" and n.input[1] in shapes
            and len(shapes[n.input[1]][0]) not in (3, 4)]
    if deep:
        raise BackendError(f"{len(deep)} node(s) the AIC100 cannot run: " + "; ".join(deep[:10]),
                           where="backend 'aic100'", hint="only 1-D and 2-D convolutions")
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
    _check_precision(low, fp32_nodes)
    _build_steps(low)
    low.batch, low.batch_separable = _batch_analysis(low)
    return low


def _dequantized(low: Lowered, name: str) -> bool:
    """Whether ``name`` is a DequantizeLinear output (looking through reshapes)."""
    while name in low.producer:
        node = low.nodes[low.producer[name]]
        if node.op_type == "DequantizeLinear":
            return True
        if node.op_type not in ALIAS_OPS:
            return False
        name = node.input[0]
    return False


#: operands (by index) that ONNX types float32 whatever the data's type: parameters of the op
#: (Resize's roi and scales), read as numbers by the planner, not computed on
_FLOAT32_PARAMETERS = {"Resize": (1, 2), "Upsample": (1,)}

#: outputs (by index) that ONNX types float32 whatever the data's type: the statistics an op
#: accumulates (LayerNormalization's Mean and InvStdDev, ``stash_type`` float32 or bfloat16,
#: never fp16), which the device's fp32 accumulators hold anyway
_FLOAT32_STATISTICS = {"LayerNormalization": (1, 2)}


def _float_compute(low: Lowered, node: onnx.NodeProto) -> bool:
    """Whether the node does float32 (or float64) arithmetic."""
    if node.op_type in MOVEMENT_OPS:
        return False
    wide = (np.float32, np.float64)
    params = _FLOAT32_PARAMETERS.get(node.op_type, ())
    data = [x for i, x in enumerate(node.input) if i not in params]
    stash = _FLOAT32_STATISTICS.get(node.op_type, ())
    outputs = [x for i, x in enumerate(node.output) if i not in stash]
    return any(x in low.tensors and low.tensors[x].dtype in wide
               for x in data + outputs if x)


def _check_precision(low: Lowered, fp32_nodes: frozenset[str] = frozenset()) -> None:
    """Refuse float32 computation outside a quantized region.

    A float32 op may run (on the vector unit, as the quantized program's float arithmetic) when
    it sits between DequantizeLinear and QuantizeLinear: every float input it reads is
    dequantized or comes from such an op that feeds nothing else, and every float output it
    writes is quantized or feeds such an op. Anything else would compute in float32, which the
    device does not do.
    """
    wide = (np.float32, np.float64)
    cand = {i for i, n in enumerate(low.nodes) if _float_compute(low, n)}
    out_set = set(low.outputs)

    def inputs_ok(i: int) -> bool:
        for x in low.nodes[i].input:
            info = low.tensors.get(x) if x else None
            if info is None or info.kind == "weight" or info.dtype not in wide:
                continue
            if _dequantized(low, x):
                continue
            p = low.producer.get(x)
            if p is None or p not in cand or len(low.consumers.get(x, [])) != 1:
                return False
        return any(x and x in low.tensors and low.tensors[x].kind != "weight"
                   for x in low.nodes[i].input)

    def readers(name: str) -> list[int] | None:
        """Consumers of ``name`` looking through reshapes; None if it reaches a graph output."""
        out, stack = [], [name]
        while stack:
            t = stack.pop()
            if t in out_set:
                return None
            for c in low.consumers.get(t, []):
                if low.nodes[c].op_type in ALIAS_OPS:
                    stack.extend(o for o in low.nodes[c].output if o)
                else:
                    out.append(c)
        return out

    def outputs_ok(i: int) -> bool:
        for o in low.nodes[i].output:
            info = low.tensors.get(o) if o else None
            if info is None or info.dtype not in wide:
                continue
            found = readers(o)
            if found is None or any(low.nodes[c].op_type != "QuantizeLinear" and c not in cand
                                    for c in found):
                return False
        return True

    allowed = set(cand)
    changed = True
    while changed:
        changed = False
        for i in sorted(allowed):
            if not inputs_ok(i) or not outputs_ok(i):
                allowed.discard(i)
                cand.discard(i)
                changed = True
    bad = [f"node '{_label(low.nodes[i], i)}' ({low.nodes[i].op_type})"
           for i in sorted(set(range(len(low.nodes))) - allowed)
           if _float_compute(low, low.nodes[i]) and low.nodes[i].name not in fp32_nodes]
    if bad:
        shown = "; ".join(bad[:8]) + (f"; and {len(bad) - 8} more" if len(bad) > 8 else "")
        raise BackendError(f"{len(bad)} node(s) compute in float32, which the AIC100 does not: "
                           f"{shown}", where="backend 'aic100'",
                           hint=f"compile with {option_ref('fp16')} (the vendor makes it mandatory) "
                                "or quantize the model")


def _elementwise_ok(low: Lowered, node: onnx.NodeProto, via: str, done: set[int]) -> bool:
    if node.op_type not in EPILOGUE_OPS or len([o for o in node.output if o]) != 1:
        return False
    out = low.tensors.get(node.output[0])
    src = low.tensors.get(via)
    if out is None or src is None or out.shape != src.shape:
        return False
    for x in node.input:
        if not x or x == via:
            continue
        base = low.resolve(x)
        if base in low.producer and low.producer[base] not in done:
            return False
    return True


def _build_steps(low: Lowered) -> None:
    nodes, consumers = low.nodes, low.consumers
    out_set = set(low.outputs)
    assigned: dict[int, int] = {}
    done: set[int] = set(low.virtual)  # virtual nodes are available wherever they are read
    for i, node in enumerate(nodes):
        if i in assigned:
            continue
        if i in low.virtual and not any(o in out_set for o in node.output):
            continue
        members = [i]
        fused: list[str] = []
        tail = node.output[0] if node.output else ""
        while tail and tail not in out_set:
            cons = consumers.get(tail, [])
            if len(cons) != 1 or cons[0] in assigned:
                break
            j = cons[0]
            c = nodes[j]
            if c.op_type == "QuantizeLinear" and c.input[0] == tail:
                members.append(j)
                fused.append("QuantizeLinear")
                tail = c.output[0]
                continue
            if c.op_type == "DequantizeLinear" and c.input[0] == tail:
                dq_out = c.output[0]
                nxt = consumers.get(dq_out, [])
                if dq_out in out_set or len(nxt) != 1 or nxt[0] in assigned:
                    break
                e = nodes[nxt[0]]
                if not _elementwise_ok(low, e, dq_out, done | set(members)):
                    break
                members += [j, nxt[0]]
                fused += ["DequantizeLinear", e.op_type]
                tail = e.output[0]
                continue
            if c.op_type != "DequantizeLinear" and _elementwise_ok(low, c, tail,
                                                                   done | set(members)):
                members.append(j)
                fused.append(c.op_type)
                tail = c.output[0]
                continue
            break
        index = len(low.steps)
        for m in members:
            assigned[m] = index
            done.add(m)
        low.steps.append(_make_step(low, index, members, fused))


def _reads(low: Lowered, names: Iterable[str]) -> set[str]:
    out: set[str] = set()
    stack = [n for n in names if n]
    while stack:
        n = stack.pop()
        if n in out:
            continue
        out.add(n)
        p = low.producer.get(n)
        if p is not None and p in low.virtual:
            stack.extend(x for x in low.nodes[p].input if x)
    return out


def _make_step(low: Lowered, index: int, members: list[int], fused: list[str]) -> Step:
    nodes = low.nodes
    main = nodes[members[0]]
    member_set = set(members)
    produced = {o for m in members for o in nodes[m].output if o}
    inputs, weights = [], []
    raw = [x for m in members for x in nodes[m].input if x and x not in produced]
    for x in raw:
        base = low.resolve(x)
        info = low.tensors.get(base)
        if info is None:
            continue
        target = weights if info.kind == "weight" else inputs
        if base not in target:
            target.append(base)
    outputs = []
    out_set = set(low.outputs)
    for m in members:
        for o in nodes[m].output:
            if o and (o in out_set or any(c not in member_set for c in low.consumers.get(o, ()))):
                outputs.append(o)
    kind = "tensor" if main.op_type in TENSOR_OPS else (
        "copy" if main.op_type in VIRTUAL_OPS else "vector")
    step = Step(index=index, name=_label(main, members[0]), op=main.op_type, kind=kind,
                precision="fp32", nodes=list(members), inputs=inputs, weights=weights,
                outputs=outputs, fused=fused, reads=_reads(low, raw))
    if kind == "tensor":
        step.integer = _int_pattern(low, members)
        _tensor_geometry(low, step, main)
        step.precision = "int8" if step.integer else _float_precision(low, main.input[0])
    else:
        data = next((x for x in main.input if x and x in low.tensors), None)
        step.precision = _vector_precision(low, data)
        step.geometry = {"split": "elements", "elements": _elements(low, main)}
    # vector work: the main op (vector steps) plus every epilogue op, per output element
    work = 0
    for m in members:
        n = nodes[m]
        if m == members[0] and kind == "tensor":
            continue
        work += _vector_work(low, n)
    step.vector_ops = work
    return step


def _float_precision(low: Lowered, name: str) -> str:
    info = low.tensors.get(low.resolve(name))
    raw = low.tensors.get(name)
    dtype = raw.dtype if raw is not None else (info.dtype if info else np.dtype(np.float32))
    return "fp16" if dtype == np.float16 else "fp32"


def _vector_precision(low: Lowered, name: str | None) -> str:
    if name is None:
        return "fp32"
    dtype = low.tensors[name].dtype
    if dtype == np.float16:
        return "fp16"
    if dtype.itemsize == 1:
        return "int8"
    return "fp32"


def _elements(low: Lowered, node: onnx.NodeProto) -> int:
    sizes = [low.tensors[o].size for o in node.output if o in low.tensors]
    return max(sizes) if sizes else 0


def _vector_work(low: Lowered, node: onnx.NodeProto) -> int:
    op = node.op_type
    a = _attrs(node)
    if op in ("MaxPool", "AveragePool"):
        return _elements(low, node) * int(np.prod(a.get("kernel_shape", [1])))
    if op in _REDUCING:
        return low.tensors[node.input[0]].size if node.input[0] in low.tensors else 0
    return _elements(low, node) * _VECTOR_COST.get(op, 1)


def _tensor_geometry(low: Lowered, step: Step, node: onnx.NodeProto) -> None:
    t = low.tensors
    a = _attrs(node)
    out = t[node.output[0]]
    x = t[node.input[0]]
    if node.op_type == "ConvTranspose":
        w = t[node.input[1]]
        step.macs, step.geometry = convtranspose_geometry(
            x.shape, x.nbytes, w.shape, w.nbytes, out.shape, out.nbytes, node)
        return
    if node.op_type == "Conv":
        w = t[node.input[1]]
        group = int(a.get("group", 1))
        k = w.shape[2:]
        cin = x.shape[1]
        cout = w.shape[0]
        reduce = (cin // group) * int(np.prod(k))
        osp = out.shape[2:]
        strides = a.get("strides", [1] * len(k))
        dil = a.get("dilations", [1] * len(k))
        eff = (k[0] - 1) * dil[0] + 1 if k else 1
        rows = out.shape[0] * (osp[0] if osp else 1)
        step.macs = out.size * reduce
        step.geometry = {
            "split": "conv", "rows": rows, "channels": cout, "reduce": reduce, "groups": group,
            "depthwise": group > 1 and group == cin and cout % cin == 0,
            "n_per_group": cout // group, "halo_rows": max(eff - strides[0], 0) if k else 0,
            "in_row_bytes": x.nbytes // max(1, x.shape[0] * (x.shape[2] if len(x.shape) > 2
                                                              else 1)),
            "out_row_bytes": out.nbytes // max(1, rows),
            "in_unit_bytes": (x.nbytes // max(1, x.shape[0] * (x.shape[2] if len(x.shape) > 2
                                                               else 1))) * eff,
            "w_unit_bytes": (w.nbytes // max(1, cout)), "spatial": len(k)}
    else:
        trans_a = node.op_type == "Gemm" and int(a.get("transA", 0))
        trans_b = node.op_type == "Gemm" and int(a.get("transB", 0))
        b = t[node.input[1]]
        k_dim = x.shape[0] if trans_a else x.shape[-1]
        # a 1-D right operand (MatMul) drops the output's last dim: one output channel (a
        # vector by a vector gives a scalar)
        n_dim = out.shape[-1] if out.shape and len(b.shape) > 1 else 1
        rows = out.size // max(1, n_dim)
        b_weight = low.tensors[low.resolve(node.input[1])].kind == "weight"
        step.macs = out.size * k_dim
        step.geometry = {
            "split": "gemm", "rows": rows, "channels": n_dim, "reduce": k_dim, "groups": 1,
            "depthwise": False, "n_per_group": n_dim, "halo_rows": 0,
            "in_row_bytes": k_dim * x.dtype.itemsize, "out_row_bytes": n_dim * out.dtype.itemsize,
            "in_unit_bytes": k_dim * x.dtype.itemsize,
            "w_unit_bytes": k_dim * b.dtype.itemsize, "b_is_weight": b_weight,
            "trans_b": bool(trans_b)}


# --- the integer pattern ----------------------------------------------------------------------

def _dq_of(low: Lowered, name: str) -> onnx.NodeProto | None:
    """The DequantizeLinear behind ``name``, looking through reshapes (which only relabel the
    dims of a tensor in memory order, so the integer tensor can be reshaped instead)."""
    p = low.producer.get(name)
    while p is not None and low.nodes[p].op_type in ALIAS_OPS:
        p = low.producer.get(low.nodes[p].input[0])
    if p is None or low.nodes[p].op_type != "DequantizeLinear":
        return None
    return low.nodes[p]


def _qparams(low: Lowered, node: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(scale, zero point, axis) of a Q/DQ node with constant parameters and no blocking."""
    a = _attrs(node)
    if a.get("block_size", 0):
        return None
    scale = _scalar(low.constants, node.input[1])
    if scale is None:
        return None
    zp_name = node.input[2] if len(node.input) > 2 else ""
    zero = low.constants.get(zp_name) if zp_name else None
    if zp_name and zero is None:
        return None
    if zero is None:
        zero = np.zeros(scale.shape, np.uint8 if node.op_type == "QuantizeLinear" else np.int32)
    return scale.astype(np.float64), zero.astype(np.int64), int(a.get("axis", 1))


_EIGHT_BIT = (np.dtype(np.int8), np.dtype(np.uint8))


def _per_channel(values: np.ndarray, axis: int, expected_axis: int, rank: int, n: int
                 ) -> np.ndarray | None:
    if values.size == 1:
        return np.full(n, float(values.reshape(-1)[0])) if values.dtype.kind == "f" else \
            np.full(n, int(values.reshape(-1)[0]), np.int64)
    if values.ndim != 1 or values.size != n or (axis % rank) != expected_axis:
        return None
    return values


def _int_pattern(low: Lowered, members: list[int]) -> IntPattern | None:
    """The integer form of a tensor step, or None (then it runs in float, see numerics)."""
    nodes = low.nodes
    main = nodes[members[0]]
    act = None
    if len(members) > 2 and nodes[members[1]].op_type in ("Relu", "Clip") and \
            nodes[members[2]].op_type == "QuantizeLinear":
        act = nodes[members[1]]
        quant = nodes[members[2]]
    elif len(members) > 1 and nodes[members[1]].op_type == "QuantizeLinear":
        quant = nodes[members[1]]
    else:
        return None
    a = _attrs(main)
    if main.op_type == "Gemm" and (a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0
                                   or a.get("transA", 0)):
        return None
    dq_x, dq_w = _dq_of(low, main.input[0]), _dq_of(low, main.input[1])
    if dq_x is None or dq_w is None:
        return None
    px, pw, py = _qparams(low, dq_x), _qparams(low, dq_w), _qparams(low, quant)
    if px is None or pw is None or py is None:
        return None
    xs, xz, _ = px
    if xs.size != 1 or py[0].size != 1:
        return None
    x_info, w_info = low.tensors.get(dq_x.input[0]), low.tensors.get(dq_w.input[0])
    y_info = low.tensors.get(quant.output[0])
    if x_info is None or w_info is None or y_info is None:
        return None
    if x_info.dtype not in _EIGHT_BIT or w_info.dtype not in _EIGHT_BIT or \
            y_info.dtype not in _EIGHT_BIT:
        return None
    out = low.tensors[main.output[0]]
    n = out.shape[1] if main.op_type in ("Conv", "ConvTranspose") else out.shape[-1]
    w_rank = len(w_info.shape)
    if main.op_type == "ConvTranspose":
        if int(a.get("group", 1)) != 1 and pw[0].size > 1:
            return None  # per-channel scales of a grouped transposed weight: run in float
        ch_axis = weight_channel_axis()
    elif main.op_type == "Conv":
        ch_axis = 0
    elif main.op_type == "Gemm":
        ch_axis = 0 if a.get("transB", 0) else 1
    else:
        ch_axis = w_rank - 1
    if pw[0].size > 1 and w_info.shape != low.tensors[main.input[1]].shape:
        return None  # a per-channel axis behind a reshape
    ws = _per_channel(pw[0], pw[2], ch_axis, w_rank, n)
    wz = _per_channel(pw[1], pw[2], ch_axis, w_rank, n)
    if ws is None or wz is None:
        return None
    if main.op_type == "MatMul" and w_info.kind != "weight" and (ws.min() != ws.max()
                                                                 or wz.min() != wz.max()):
        return None
    bias = None
    rescaled = False
    if len(main.input) > 2 and main.input[2]:
        dq_b = _dq_of(low, main.input[2])
        b_raw = low.constants.get(dq_b.input[0]) if dq_b is not None else None
        pb = _qparams(low, dq_b) if dq_b is not None else None
        if b_raw is None or pb is None or b_raw.ndim != 1 or b_raw.size not in (1, n):
            return None
        bs = _per_channel(pb[0], pb[2], 0, 1, n)
        bz = _per_channel(pb[1], pb[2], 0, 1, n)
        if bs is None or bz is None:
            return None
        real = (np.broadcast_to(b_raw.astype(np.int64), (n,)) - bz) * bs
        unit = float(xs.reshape(-1)[0]) * ws
        if b_raw.dtype == np.int32 and np.all(bz == 0) and np.allclose(bs, unit, rtol=1e-6,
                                                                        atol=0):
            bias = np.broadcast_to(b_raw.astype(np.int64), (n,)).copy()
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                bias = np.rint(np.where(unit > 0, real / unit, 0.0)).astype(np.int64)
            rescaled = True
    act_lo = act_hi = None
    if act is not None:
        bounds = _act_bounds(low, act)
        if bounds is None:
            return None
        ys, yz = float(py[0].reshape(-1)[0]), int(py[1].reshape(-1)[0])
        info = np.iinfo(y_info.dtype)
        lo, hi = bounds
        act_lo = info.min if lo is None else int(np.clip(np.rint(lo / ys) + yz, info.min,
                                                         info.max))
        act_hi = info.max if hi is None else int(np.clip(np.rint(hi / ys) + yz, info.min,
                                                         info.max))
    return IntPattern(main=members[0], quant=members[2] if act is not None else members[1],
                      x=dq_x.input[0], x_shape=low.tensors[main.input[0]].shape,
                      w_shape=low.tensors[main.input[1]].shape, act=act.op_type if act is not None else None,
                      act_lo=act_lo, act_hi=act_hi,
                      x_scale=float(xs.reshape(-1)[0]), x_zero=int(xz.reshape(-1)[0]),
                      w=dq_w.input[0], w_scale=np.asarray(ws, np.float64),
                      w_zero=np.asarray(wz, np.int64), bias=bias, y=quant.output[0],
                      y_scale=float(py[0].reshape(-1)[0]), y_zero=int(py[1].reshape(-1)[0]),
                      y_dtype=y_info.dtype, bias_rescaled=rescaled)


def _act_bounds(low: Lowered, node: onnx.NodeProto) -> tuple[float | None, float | None] | None:
    """The real-valued (low, high) bounds of a Relu or a Clip with constant bounds."""
    if node.op_type == "Relu":
        return 0.0, None
    a = _attrs(node)
    lo, hi = a.get("min"), a.get("max")
    for idx in (1, 2):
        if len(node.input) > idx and node.input[idx]:
            value = low.constants.get(node.input[idx])
            if value is None or value.size != 1:
                return None
            if idx == 1:
                lo = float(value.reshape(-1)[0])
            else:
                hi = float(value.reshape(-1)[0])
    return lo, hi


# --- batch ------------------------------------------------------------------------------------

def _axes_touch_zero(node: onnx.NodeProto, low: Lowered) -> bool:
    a = _attrs(node)
    rank = len(low.tensors[node.input[0]].shape) if node.input and node.input[0] in low.tensors \
        else 0
    op = node.op_type
    if op == "Transpose":
        perm = a.get("perm") or list(range(rank))[::-1]
        return bool(perm) and perm[0] != 0
    if op == "Gather" and low.tensors.get(low.resolve(node.input[0])) is not None and \
            low.tensors[low.resolve(node.input[0])].kind == "weight":
        return False  # a table lookup: the indices carry the batch, the table has none
    if op in ("Concat", "Split", "Softmax", "LogSoftmax", "Gather", "GatherElements", "Flatten",
              "LayerNormalization"):
        axis = int(a.get("axis", 1 if op in ("Flatten",) else (-1 if op in (
            "Softmax", "LogSoftmax", "LayerNormalization") else 0)))
        return rank > 0 and axis % rank == 0 if op != "Flatten" else axis == 0
    if op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "Slice", "Squeeze",
              "Unsqueeze"):
        axes = a.get("axes")
        idx = {"Slice": 3, "Squeeze": 1, "Unsqueeze": 1}.get(op, 1)
        if axes is None and len(node.input) > idx and node.input[idx]:
            arr = low.constants.get(node.input[idx])
            if arr is None:
                return True
            axes = [int(v) for v in np.asarray(arr).reshape(-1)]
        if axes is None:
            return op.startswith("Reduce")
        r = rank + (len(axes) if op == "Unsqueeze" else 0)
        return any(int(v) % max(r, 1) == 0 for v in axes)
    if op == "MatMul":
        b = low.tensors.get(low.resolve(node.input[1]))
        return b is not None and b.kind != "weight" and len(b.shape) < 3
    if op == "Gemm":
        b = low.tensors.get(low.resolve(node.input[1]))
        return (b is not None and b.kind != "weight") or bool(a.get("transA", 0))
    return False


def _batch_analysis(low: Lowered) -> tuple[int, bool]:
    """dim 0 of the graph inputs, and whether every op keeps samples apart along it."""
    if not low.inputs:
        return 0, False
    dims = {low.tensors[n].shape[0] if low.tensors[n].shape else 0 for n in low.inputs}
    if len(dims) != 1:
        return 0, False
    batch = dims.pop()
    if batch <= 1:
        return batch, False
    for name, info in low.tensors.items():
        if info.kind == "weight" or low.tensors[low.resolve(name)].kind == "weight":
            continue
        if not info.shape or info.shape[0] != batch:
            return batch, False
    for node in low.nodes:
        if node.op_type in ("Shape", "Size", "Range", "ConstantOfShape"):
            return batch, False
        if _axes_touch_zero(node, low):
            return batch, False
        # a computed shape, axes or size operand is not samples, whatever its length
        for idx in _PARAMETER_OPERANDS.get(node.op_type, ()):
            if idx < len(node.input) and node.input[idx] and \
                    low.tensors[low.resolve(node.input[idx])].kind != "weight":
                return batch, False
    return batch, True


#: operands (by index) that parametrize an op rather than carry data
_PARAMETER_OPERANDS = {
    "Reshape": (1,), "Expand": (1,), "Tile": (1,), "Slice": (1, 2, 3, 4), "Pad": (1, 2, 3),
    "Resize": (1, 2, 3), "Split": (1,), "Squeeze": (1,), "Unsqueeze": (1,), "TopK": (1,),
    "ReduceMean": (1,), "ReduceSum": (1,), "ReduceMax": (1,), "ReduceMin": (1,), "Clip": (1, 2),
    "CumSum": (1,), "Trilu": (1,)}


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def pieces_of(dim: int, pieces: int) -> list[tuple[int, int]]:
    """``dim`` cut into ``pieces`` near-equal, contiguous ranges (fewer if dim is smaller)."""
    pieces = max(1, min(pieces, dim))
    size = ceil_div(dim, pieces)
    return [(s, min(dim, s + size)) for s in range(0, dim, size)]

