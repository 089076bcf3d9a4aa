"""``int32-sandwich``: INT32 overrides (AIMET encodings JSON) in; the overridden ops computing in
int32 between ``Cast(INT32)`` and ``Cast(back)`` out.

The QNN quantization page: "To support running an op in INT32 precision, INT32 overrides should be
provided for all of its inputs and outputs. This will inject a Dequantize op followed by a Cast
(to: INT32) op at the inputs of the op and a Cast (to: FP32) op followed by a Quantize op at the
output of the op for a quantized model." In aicc's IR a quantized program is QDQ, so the op's
inputs already come out of DequantizeLinear and its outputs go into QuantizeLinear: the pass adds
the Casts between them (``DQ -> Cast(INT32) -> op -> Cast(FLOAT) -> Q``). In a float program the
sandwich is just ``Cast(INT32) -> op -> Cast(FLOAT)``. Outputs keep their names (through the Cast
back to their original type), so readers and the graph's outputs do not change. Chained int32 ops
hand int32 tensors to each other directly (the Cast pair between them, which this pass would have
created, is not inserted; it would only round values beyond 2^24 through float32).

What an INT32 override is: an ``activation_encodings`` entry with ``dtype: int`` and
``bitwidth: 32`` (0.6.1 dict form) or ``dtype: INT`` and ``bw: 32`` (1.0.0 list form); the file is
read once with ``aicc.quant.EncodingsFile`` (both forms, strictly). Other entries are
quantization's business and are not used here. Rules, each refused with a clear error:

- every input and output of the op must carry an override (a tensor with an override that no
  fully-overridden op reads or writes is an error naming it and why);
- "INT32 overrides are only supported for ops which do not have weights and bias": a float
  constant input refuses the op; integer constants (shape-like: axes, starts, shapes) are fine;
- the op's schema must accept int32 for those tensors at the model's opset;
- int64 constants of a type the op accepts as int32 (Slice starts/ends/axes/steps) are narrowed
  to int32: the "to the end" sentinels INT64_MAX / INT64_MIN in Slice starts and ends become
  INT32_MAX / INT32_MIN (same meaning: Slice clamps to the dimension), any other value outside
  int32 is refused (narrowing would wrap it, e.g. INT64_MAX to -1).

Cast(float -> int32) truncates toward zero, so the program computes on integers from there:
``semantics = approximating``. In the CLI, INT32 overrides arrive with external quantization
(-external-quantization, read by ``quant-overrides`` into ``Program.encodings["int32"]``, which
this pass uses when its ``overrides`` option is empty); from pipelines it also takes the file
itself: ``--passes int32-sandwich{overrides=enc.json}``.
"""

from __future__ import annotations

import dataclasses
import logging
import numpy as np
import onnx
import onnx_graphsurgeon as gs

from aicc import ir
from aicc.errors import ConfigError
from aicc.hookspecs import hookimpl
from aicc.options import option
from aicc.pass_base import Pass, PassContext
from aicc.program import Program
from aicc.quant import EncodingsFile, EncodingsTable
from aicc.passes.cleanup import remove_dead_nodes, sort_nodes

from aicc.graph_casts import Names, has_subgraph, schema_of, type_slots, verify_types

__all__ = ["Int32Sandwich", "int32_overrides", "narrow_int64"]

logger = logging.getLogger(__name__)

INT32_MIN, INT32_MAX = int(np.iinfo(np.int32).min), int(np.iinfo(np.int32).max)
INT64_MIN, INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)
#: (op, input index) whose INT64_MAX / INT64_MIN mean "to the end / to the start"
_SENTINEL_SLOTS = {("Slice", 1), ("Slice", 2)}
_SEED_REASON = "INT32 overrides are only supported for ops which do not have weights and bias"


def int32_overrides(table: EncodingsTable, where: str) -> list[str]:
    """Names of the activations an encodings table overrides to INT32 (in file order)."""
    names = [n for n, e in table.activations.items() if not e.is_float and e.bitwidth == 32]
    others = len(table) - len(names)
    if others:
        logger.info("int32-sandwich: %d non-INT32 encodings in %s are left to quantization",
                    others, where)
    return names


def narrow_int64(values: np.ndarray, *, op: str, index: int, where: str) -> np.ndarray:
    """An int64 constant as int32: known sentinels clamped, other out-of-range values refused."""
    values = np.asarray(values, dtype=np.int64)
    out = values.copy()
    if (op, index) in _SENTINEL_SLOTS:
        out[values == INT64_MAX] = INT32_MAX
        out[values == INT64_MIN] = INT32_MIN
    bad = (out > INT32_MAX) | (out < INT32_MIN)
    if bad.any():
        raise ConfigError(f"int64 constant value {int(out[bad].flat[0])} does not fit int32",
                          where=where, hint="only INT64_MAX/INT64_MIN in Slice starts/ends are "
                                            "known sentinels; narrowing would wrap this value")
    return out.astype(np.int32)


class Int32Sandwich(Pass):
    name = "int32-sandwich"
    description = "run ops whose inputs and outputs carry INT32 overrides in int32"
    scope = "program"
    after = ("custom-io", "convert-fp16", "fold-batchnorm", "cle")
    semantics = "approximating"

    @dataclasses.dataclass(frozen=True)
    class Options:
        overrides: EncodingsFile | None = option(None, "AIMET encodings JSON with INT32 "
                                                       "overrides (dtype int, bitwidth 32)",
                                                 path=True)

    def run(self, program: Program, ctx: PassContext) -> None:
        given = ctx.options.overrides
        if given is not None:
            path = given.path
            wanted = int32_overrides(given.value, path)
        elif program.encodings.get("int32") is not None:   # read by quant-overrides
            wanted = list(program.encodings["int32"])
            path = str((program.encodings.get("overrides") or {}).get("file")
                       or "quantization overrides")
        else:
            raise ConfigError("needs the overrides file", field="pass 'int32-sandwich': option "
                              "'overrides'", hint="int32-sandwich{overrides=encodings.json}, or "
                                                  "quant-overrides before it")
        if not wanted:
            raise ConfigError("no INT32 overrides (dtype int, bitwidth 32) in "
                              "activation_encodings", where=path)
        for gname, graph in program.graphs.items():
            done = _sandwich(graph, list(wanted), path, ctx, where=f"graph '{gname}'")
            for name in done:
                program.node_precision[name] = "int32"
            verify_types(graph, who=f"pass 'int32-sandwich' (graph '{gname}')",
                         ir_version=program.ir_version)


def _is_data(t: gs.Tensor) -> bool:
    """A non-constant input (constants are weights, biases, or shape-like integers)."""
    return not t.is_empty() and not isinstance(t, gs.Constant)


def _sandwich(graph: gs.Graph, order: list[str], path: str, ctx: PassContext, *,
              where: str) -> list[str]:
    wanted = set(order)
    tensors = graph.tensors()
    missing = [n for n in order if n not in tensors]
    if missing:
        raise ConfigError(f"INT32 override for '{missing[0]}', which is not a tensor of the "
                          "model", where=path, field=f"activation_encodings['{missing[0]}']")
    if any(ir.tensor_dtype(t) is None for t in tensors.values() if isinstance(t, gs.Variable)):
        ir.infer_shapes(graph, where=where)
    sort_nodes(graph)
    chosen: list[gs.Node] = []
    why_not: dict[str, str] = {}
    for node in graph.nodes:
        ios = [t for t in list(node.inputs) + list(node.outputs) if not t.is_empty()]
        if not any(t.name in wanted for t in ios):
            continue
        label = f"node '{node.name}' ({node.op})"
        lacking = [t.name for t in node.inputs if _is_data(t) and t.name not in wanted] + \
            [t.name for t in node.outputs if not t.is_empty() and t.name not in wanted]
        if lacking:   # a neighbour of int32 ops (their producer or reader), not one of them
            reason = f"{label} also reads or writes '{lacking[0]}', which has no INT32 override"
            for t in ios:
                why_not.setdefault(t.name, reason)
            continue
        weights = [t for t in node.inputs if isinstance(t, gs.Constant)
                   and np.asarray(t.values).dtype.kind == "f"]
        if weights:
            raise ConfigError(f"{label} cannot run in INT32: {_SEED_REASON} (it reads the "
                              f"constant '{weights[0].name}')", where=path)
        _check_schema(node, graph.opset, path, label)
        chosen.append(node)
    used = {t.name for n in chosen for t in list(n.inputs) + list(n.outputs)}
    for name in order:
        if name not in used:
            reason = why_not.get(name, "no node reads or writes it")
            raise ConfigError(f"the INT32 override of '{name}' applies to no op: {reason}",
                              where=path, field=f"activation_encodings['{name}']",
                              hint="an op runs in INT32 only when all its inputs and outputs "
                                   "carry INT32 overrides")
    _insert(graph, chosen, path, ctx)
    return [n.name for n in chosen]


def _check_schema(node: gs.Node, opset: int, path: str, label: str) -> None:
    if has_subgraph(node):
        raise ConfigError(f"{label} holds subgraphs and cannot run in INT32", where=path)
    schema = schema_of(node, opset)
    if schema is None:
        raise ConfigError(f"{label}: no ONNX schema at opset {opset}", where=path)
    slots, allowed = type_slots(node, schema)
    for tv, refs in slots.items():
        data = [i for kind, i in refs if kind == "out" or _is_data(node.inputs[i])]
        if data and "tensor(int32)" not in allowed.get(tv, ()):
            raise ConfigError(f"{label} cannot run in INT32: {node.op} does not take int32 "
                              f"({tv}) at opset {opset}", where=path)
        for kind, i in refs:
            t = node.inputs[i] if kind == "in" else node.outputs[i]
            if kind == "in" and ir.tensor_dtype(t) in (np.dtype(np.int8), np.dtype(np.uint8)) \
                    and _is_data(t):
                raise ConfigError(f"{label}: input '{t.name}' is a quantized {ir.tensor_dtype(t)} "
                                  "tensor; INT32 needs it dequantized first", where=path,
                                  hint="give the op a DequantizeLinear input (QDQ form)")


def _insert(graph: gs.Graph, chosen: list[gs.Node], path: str, ctx: PassContext) -> None:
    names = Names(graph)
    new_nodes: list[gs.Node] = []
    cache: dict[int, gs.Tensor] = {}
    ours: dict[int, gs.Tensor] = {}   # id(float output of our Cast back) -> its int32 source

    def to_int32(t: gs.Tensor) -> gs.Tensor:
        if ir.tensor_dtype(t) == np.int32:
            return t
        if id(t) in ours:
            return ours[id(t)]
        if id(t) not in cache:
            out = gs.Variable(names.new(f"{t.name}_int32"), dtype=np.int32, shape=t.shape)
            new_nodes.append(gs.Node("Cast", names.new(f"Cast_{out.name}"),
                                     {"to": onnx.TensorProto.INT32}, [t], [out]))
            ctx.count("casts inserted")
            cache[id(t)] = out
        return cache[id(t)]

    narrowed: dict[int, gs.Constant] = {}
    for node in chosen:
        label = f"node '{node.name}' ({node.op})"
        schema = schema_of(node, graph.opset)
        slots, allowed = type_slots(node, schema)
        for tv, refs in slots.items():
            int32_ok = "tensor(int32)" in allowed.get(tv, ())
            for kind, i in refs:
                if kind != "in":
                    continue
                t = node.inputs[i]
                if isinstance(t, gs.Constant):
                    if int32_ok and np.asarray(t.values).dtype == np.int64:
                        if id(t) not in narrowed:
                            narrowed[id(t)] = gs.Constant(
                                names.new(f"{t.name}_int32"),
                                narrow_int64(t.values, op=node.op, index=i,
                                             where=f"{path}: {label}: input '{t.name}'"))
                            ctx.count("int64 constants narrowed")
                        node.inputs[i] = narrowed[id(t)]
                elif int32_ok and ir.tensor_dtype(t) != np.int32 and (
                        ir.tensor_dtype(t) is not None and ir.tensor_dtype(t).kind in "fiu"):
                    node.inputs[i] = to_int32(t)
        for i, o in enumerate(list(node.outputs)):
            if o.is_empty():
                continue
            original = ir.tensor_dtype(o)
            if original == np.int32:
                continue
            o32 = gs.Variable(names.new(f"{o.name}_int32"), dtype=np.int32, shape=o.shape)
            node.outputs[i] = o32
            new_nodes.append(gs.Node("Cast", names.new(f"Cast_{o.name}"),
                                     {"to": onnx.helper.np_dtype_to_tensor_dtype(original)},
                                     [o32], [o]))
            ours[id(o)] = o32
            ctx.count("casts inserted")
        ctx.count("ops in int32")
    graph.nodes.extend(new_nodes)
    remove_dead_nodes(graph)
    sort_nodes(graph)


@hookimpl
def aicc_register_passes(registry):
    registry.add(Int32Sandwich)
