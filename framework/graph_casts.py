"""Graph helpers shared by the precision passes: names, dtypes, Cast pairs and the Cast checks.

Not a plugin (nothing registers here). ``custom-io``, ``convert-fp16`` and ``int32-sandwich`` use
these to create uniquely named tensors and nodes, to find which inputs of a node share a type
with float computation (from the op's ONNX schema), to fold exact Cast round trips they create
(``Cast(fp16 -> fp32) -> Cast(fp32 -> fp16)`` is the identity) and to check, after they ran,
that every Cast's ``to`` agrees with the type declared for its output and that the graph still
type-checks under strict ONNX inference.
"""

from __future__ import annotations

import logging
import numpy as np
import onnx
import onnx_graphsurgeon as gs

from aicc import ir
from aicc.errors import PassError

__all__ = ["Names", "onnx_type", "np_dtype", "fold_cast_pairs", "check_casts", "verify_types",
           "schema_of", "type_slots", "has_subgraph", "LOSSLESS_WIDENING"]

logger = logging.getLogger(__name__)

#: (narrow, wide) pairs for which Cast(narrow -> wide) -> Cast(wide -> narrow) is the identity.
LOSSLESS_WIDENING = frozenset({
    ("float16", "float32"), ("float16", "float64"), ("float32", "float64"),
    ("int8", "int16"), ("int8", "int32"), ("int8", "int64"), ("int16", "int32"),
    ("int16", "int64"), ("int32", "int64"), ("uint8", "int16"), ("uint8", "int32"),
    ("uint8", "int64"), ("uint8", "uint16"), ("uint8", "uint32"), ("uint8", "uint64"),
    ("uint16", "int32"), ("uint16", "int64"), ("uint16", "uint32"), ("uint16", "uint64"),
    ("uint32", "int64"), ("uint32", "uint64"), ("bool", "int32"), ("bool", "int64"),
})


_VARIADIC = onnx.defs.OpSchema.FormalParameterOption.Variadic


class Names:
    """Fresh tensor and node names for one graph (collected once; linear in graph size)."""

    def __init__(self, graph: gs.Graph):
        self.used: set[str] = set(graph.tensors().keys())
        self.used.update(n.name for n in graph.nodes if n.name)

    def new(self, base: str) -> str:
        name, n = base, 1
        while name in self.used:
            name = f"{base}_{n}"
            n += 1
        self.used.add(name)
        return name


def onnx_type(dtype: str | np.dtype) -> int:
    """ONNX element type of a numpy dtype (or dtype name)."""
    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def np_dtype(elem_type: int) -> np.dtype:
    """numpy dtype of an ONNX element type."""
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))


def _cast_source(t: gs.Tensor) -> tuple[gs.Node, gs.Tensor] | None:
    """(Cast node, its input) if ``t`` is produced by a Cast, else None."""
    if isinstance(t, gs.Variable) and len(t.inputs) == 1 and t.inputs[0].op == "Cast" \
            and t.inputs[0].inputs:
        return t.inputs[0], t.inputs[0].inputs[0]
    return None


def fold_cast_pairs(graph: gs.Graph) -> int:
    """Bypass ``Cast(narrow -> wide) -> Cast(wide -> narrow)`` round trips (exact identities).

    Readers of the second Cast's output read the first Cast's input instead; a second Cast whose
    output is a graph output (its name is the interface) becomes an Identity of that input. Dead
    Casts are left for the caller's one cleanup. Returns the number of pairs folded.
    """
    outputs = {id(t) for t in graph.outputs}
    folded = 0
    for node in graph.nodes:
        if node.op != "Cast" or not node.inputs or not node.outputs:
            continue
        found = _cast_source(node.inputs[0])
        if found is None:
            continue
        _, origin = found
        narrow = ir.tensor_dtype(origin)
        wide = ir.tensor_dtype(node.inputs[0])
        target = np_dtype(int(node.attrs["to"]))
        if narrow is None or wide is None or narrow != target or \
                (narrow.name, wide.name) not in LOSSLESS_WIDENING:
            continue
        out = node.outputs[0]
        if id(out) in outputs:
            node.op = "Identity"
            node.attrs = {}
            node.inputs[0] = origin
        else:
            for reader in list(out.outputs):
                for i, t in enumerate(reader.inputs):
                    if t is out:
                        reader.inputs[i] = origin
        folded += 1
    return folded


def check_casts(graph: gs.Graph, *, who: str) -> None:
    """Every Cast's ``to`` must agree with the dtype declared for its output (STYLE.md traps)."""
    for node in graph.nodes:
        if node.op != "Cast":
            continue
        declared = ir.tensor_dtype(node.outputs[0]) if node.outputs else None
        to = np_dtype(int(node.attrs["to"]))
        if declared is not None and declared != to:
            raise PassError(f"{who}: Cast '{node.name}' converts to {to} but its output "
                            f"'{node.outputs[0].name}' is declared {declared}",
                            hint="a pass declared the wrong type; report this as a bug")


def verify_types(graph: gs.Graph, *, who: str, ir_version: int | None = None) -> None:
    """Casts agree with their outputs, and strict ONNX type inference accepts the graph."""
    check_casts(graph, who=who)
    model = ir.export_model(graph, ir_version=ir_version)
    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as e:
        first = str(e).strip().splitlines()[0]
        raise PassError(f"{who}: the graph no longer type-checks: {first}") from e


def has_subgraph(node: gs.Node) -> bool:
    return any(isinstance(v, gs.Graph) or (isinstance(v, list) and v and isinstance(v[0], gs.Graph))
               for v in node.attrs.values())


def schema_of(node: gs.Node, opset: int) -> onnx.defs.OpSchema | None:
    """The ONNX schema of a default-domain node at ``opset``, or None."""
    if node.domain not in (None, "", "ai.onnx"):
        return None
    try:
        return onnx.defs.get_schema(node.op, opset, "")
    except onnx.defs.SchemaError:
        return None


def type_slots(node: gs.Node, schema: onnx.defs.OpSchema
               ) -> tuple[dict[str, list[tuple[str, int]]], dict[str, set[str]]]:
    """Which actual inputs/outputs of ``node`` share each type variable of its schema.

    Returns ``({type_var: [("in"|"out", index), ...]}, {type_var: allowed type strings})``.
    Slots with a fixed type (``tensor(int64)``) are under their type string and allow only it.
    """
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    slots: dict[str, list[tuple[str, int]]] = {}
    for kind, formals, actuals in (("in", schema.inputs, node.inputs),
                                   ("out", schema.outputs, node.outputs)):
        for i, t in enumerate(actuals):
            if t.is_empty():
                continue
            if i < len(formals):
                formal = formals[i]
            elif formals and formals[-1].option == _VARIADIC:
                formal = formals[-1]
            else:
                continue
            key = formal.type_str
            allowed.setdefault(key, {key})
            slots.setdefault(key, []).append((kind, i))
    return slots, allowed
