"""Fusion: the lowered graph's nodes grouped into steps, in topological order.

A step starts at a computing node (or a virtual node whose output is a graph output) and absorbs
its *epilogue*: a QuantizeLinear after it, and a chain of elementwise ops (each possibly behind its
own DequantizeLinear) whose input has no other reader, so those intermediates never reach memory.
Each step then gets its operands (looking through virtual nodes), its precision, its geometry
(tensor steps, see ``geometry``) or element count, and its vector-unit work."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx

from .geometry import tensor_geometry
from .integer import int_pattern
from .lowered import Lowered, Step
from .ops import EPILOGUE_OPS, REDUCING, TENSOR_OPS, VECTOR_COST, VIRTUAL_OPS, attrs, label

__all__ = ["build_steps"]


def build_steps(low: Lowered) -> None:
    """Group the nodes into ``low.steps``: each computing node (and each virtual node writing a
    graph output) not yet absorbed starts a step, which takes its epilogue."""
    out_set = set(low.outputs)
    assigned: set[int] = set()
    done: set[int] = set(low.virtual)  # virtual nodes are available wherever they are read
    for i, node in enumerate(low.nodes):
        if i in assigned:
            continue
        if i in low.virtual and not any(o in out_set for o in node.output):
            continue
        members, fused = _with_epilogue(low, i, assigned, done)
        assigned.update(members)
        done.update(members)
        low.steps.append(_make_step(low, len(low.steps), members, fused))


def _with_epilogue(low: Lowered, first: int, assigned: set[int], done: set[int]
                   ) -> tuple[list[int], list[str]]:
    """Node ``first`` and the chain after it that its step absorbs (the node indices, and the
    absorbed op types): each next node is the tail's only reader, not yet in a step, and a
    QuantizeLinear, or an elementwise op (possibly behind a DequantizeLinear) whose other inputs
    are ready. The chain stops at a graph output."""
    nodes, consumers = low.nodes, low.consumers
    out_set = set(low.outputs)
    members = [first]
    fused: list[str] = []
    tail = nodes[first].output[0] if nodes[first].output else ""
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
        elif c.op_type == "DequantizeLinear" and c.input[0] == tail:
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
        elif c.op_type != "DequantizeLinear" and _elementwise_ok(low, c, tail,
                                                                 done | set(members)):
            members.append(j)
            fused.append(c.op_type)
            tail = c.output[0]
        else:
            break
    return members, fused


def _elementwise_ok(low: Lowered, node: onnx.NodeProto, via: str, done: set[int]) -> bool:
    """Whether ``node`` may join a step whose tail is ``via``: an epilogue op with one output
    of ``via``'s shape whose other inputs are computed by steps already done."""
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


def _make_step(low: Lowered, index: int, members: list[int], fused: list[str]) -> Step:
    """The step of these nodes: operands behind virtual nodes, the outputs read outside it,
    unit, precision, geometry and vector work."""
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
    step = Step(index=index, name=label(main, members[0]), op=main.op_type, kind=kind,
                precision="fp32", nodes=list(members), inputs=inputs, weights=weights,
                outputs=outputs, fused=fused, reads=_reads(low, raw))
    if kind == "tensor":
        step.integer = int_pattern(low, members)
        tensor_geometry(low, step, main)
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


def _reads(low: Lowered, names: Iterable[str]) -> set[str]:
    """``names`` and every tensor behind them through virtual nodes (what the runner keeps)."""
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


def _float_precision(low: Lowered, name: str) -> str:
    """A float tensor step's precision, from its data operand's type."""
    info = low.tensors.get(low.resolve(name))
    raw = low.tensors.get(name)
    dtype = raw.dtype if raw is not None else (info.dtype if info else np.dtype(np.float32))
    return "fp16" if dtype == np.float16 else "fp32"


def _vector_precision(low: Lowered, name: str | None) -> str:
    """A vector step's precision, from its first data operand's type."""
    if name is None:
        return "fp32"
    dtype = low.tensors[name].dtype
    if dtype == np.float16:
        return "fp16"
    if dtype.itemsize == 1:
        return "int8"
    return "fp32"


def _elements(low: Lowered, node: onnx.NodeProto) -> int:
    """The size of the node's largest output."""
    sizes = [low.tensors[o].size for o in node.output if o in low.tensors]
    return max(sizes) if sizes else 0


def _vector_work(low: Lowered, node: onnx.NodeProto) -> int:
    """Vector-unit MAC-equivalents of one node (see ``ops.VECTOR_COST`` and ``REDUCING``)."""
    op = node.op_type
    a = attrs(node)
    if op in ("MaxPool", "AveragePool"):
        return _elements(low, node) * int(np.prod(a.get("kernel_shape", [1])))
    if op in REDUCING:
        return low.tensors[node.input[0]].size * REDUCING[op] if node.input[0] in low.tensors \
            else 0
    return _elements(low, node) * VECTOR_COST.get(op, 1)

