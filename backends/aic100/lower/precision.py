"""The precision check of the aic100 lowering: the device computes floating point in fp16, so a
float32 computing op is refused, naming the nodes, unless it lies between the DequantizeLinear and
QuantizeLinear nodes of a quantized program (the vector unit's arithmetic on dequantized values)
or the program keeps it in float32 on purpose."""

from __future__ import annotations

import numpy as np
import onnx

from aicc.errors import BackendError, option_ref

from .lowered import Lowered
from .ops import ALIAS_OPS, MOVEMENT_OPS, label

__all__ = ["check_precision"]


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


def check_precision(low: Lowered, fp32_nodes: frozenset[str] = frozenset()) -> None:
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
    bad = [f"node '{label(low.nodes[i], i)}' ({low.nodes[i].op_type})"
           for i in sorted(set(range(len(low.nodes))) - allowed)
           if _float_compute(low, low.nodes[i]) and low.nodes[i].name not in fp32_nodes]
    if bad:
        shown = "; ".join(bad[:8]) + (f"; and {len(bad) - 8} more" if len(bad) > 8 else "")
        raise BackendError(f"{len(bad)} node(s) compute in float32, which the AIC100 does not: "
                           f"{shown}", where="backend 'aic100'",
                           hint=f"compile with {option_ref('fp16')} (the vendor makes it "
                                "mandatory) or quantize the model")

