"""Float -> 2/4-bit integer ``Cast``/``CastLike`` rewritten so onnxruntime computes onnx's rule.

onnxruntime's CPU Cast to INT4/UINT4/INT2/UINT2 rounds half away from zero and wraps values out
of range; onnx's reference (which the interpreter follows, see
``aicc.backends.interpreter.ops_elementwise.float_to_sub_byte``) truncates toward zero and gives 0
out of range from Cast-25 on, and rounds half to even and saturates in Cast-21..24. Each such
node of the main graph whose source type is known becomes the same rule in ops onnxruntime
computes exactly, in float64 (which holds every float16/bfloat16/float32 value):

* version 25 on: ``Where(low - 1 < x < high + 1, x, 0)`` -> Cast to int32 (truncates) -> target;
* versions 21-24: ``Round`` (half to even) -> ``Clip(low, high)`` -> NaN to 0 -> int32 -> target.

The int32 -> target Cast only ever sees values in range, where every implementation agrees.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["align_sub_byte_casts"]

_RANGES = {TensorProto.INT4: (-8, 7), TensorProto.UINT4: (0, 15), TensorProto.INT2: (-2, 1),
           TensorProto.UINT2: (0, 3)}
_FLOATS = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
_TRUNCATING = 25  # the Cast version from which float -> sub-byte casts truncate


def _elem_types(graph: onnx.GraphProto) -> dict[str, int]:
    types = {t.name: t.data_type for t in graph.initializer}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    return types


def _target(node: onnx.NodeProto, types: dict[str, int]) -> int | None:
    if node.op_type not in ("Cast", "CastLike") or node.domain not in ("", "ai.onnx") or \
            not node.input or types.get(node.input[0]) not in _FLOATS:
        return None
    if node.op_type == "Cast":
        to = next((a.i for a in node.attribute if a.name == "to"), None)
    elif node.op_type == "CastLike" and len(node.input) > 1:
        to = types.get(node.input[1])
    else:
        return None
    return to if to in _RANGES else None


def _rewrite(node: onnx.NodeProto, to: int, version: int,
             consts: list[onnx.TensorProto]) -> list[onnx.NodeProto]:
    out = node.output[0]
    p = f"{out}__aicc_subbyte"
    low, high = _RANGES[to]

    def const(name: str, value: float) -> str:
        consts.append(numpy_helper.from_array(np.array(value, np.float64), f"{p}_{name}"))
        return f"{p}_{name}"

    nodes = [helper.make_node("Cast", [node.input[0]], [f"{p}_x"], to=TensorProto.DOUBLE)]
    if version >= _TRUNCATING:
        nodes += [helper.make_node("Greater", [f"{p}_x", const("lo", low - 1.0)], [f"{p}_gt"]),
                  helper.make_node("Less", [f"{p}_x", const("hi", high + 1.0)], [f"{p}_lt"]),
                  helper.make_node("And", [f"{p}_gt", f"{p}_lt"], [f"{p}_ok"]),
                  helper.make_node("Where", [f"{p}_ok", f"{p}_x", const("zero", 0.0)],
                                   [f"{p}_v"])]
    else:
        nodes += [helper.make_node("Round", [f"{p}_x"], [f"{p}_r"]),
                  helper.make_node("Clip", [f"{p}_r", const("lo", low), const("hi", high)],
                                   [f"{p}_c"]),
                  helper.make_node("Equal", [f"{p}_c", f"{p}_c"], [f"{p}_ok"]),  # not NaN
                  helper.make_node("Where", [f"{p}_ok", f"{p}_c", const("zero", 0.0)],
                                   [f"{p}_v"])]
    nodes += [helper.make_node("Cast", [f"{p}_v"], [f"{p}_i"], to=TensorProto.INT32),
              helper.make_node("Cast", [f"{p}_i"], [out], to=to, name=node.name)]
    return nodes


def align_sub_byte_casts(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its float -> 2/4-bit casts computing onnx's rule on onnxruntime (a new
    proto), or ``model`` itself when it has none (or their source types are unknown)."""
    graph = model.graph
    types = _elem_types(graph)
    found = [(i, to) for i, n in enumerate(graph.node) if (to := _target(n, types)) is not None]
    if not found:
        return model
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    version = onnx.defs.get_schema("Cast", opset, "").since_version
    out = onnx.ModelProto()
    out.CopyFrom(model)
    targets = dict(found)
    consts: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    for i, node in enumerate(out.graph.node):
        nodes += _rewrite(node, targets[i], version, consts) if i in targets else [node]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(consts)
    return out
