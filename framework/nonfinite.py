"""Which node first produced a non-finite value: the diagnosis a run of an fp16 program gets
when its outputs hold inf or NaN although its inputs were finite.

Compiled without sample inputs, ``-convert-to-fp16`` cannot know which nodes leave the fp16 range;
a run can. The interpreter computes every fp16 op in fp16, as the device does, so running the
lowered graph on the same feeds with an observer finds the first tensor (in execution order) that
holds a non-finite value, and its producer is the node to keep in fp32.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx

from .backend import Observers
from .errors import option_ref, render_options

__all__ = ["NonfiniteWatch", "first_nonfinite", "has_fp16", "nonfinite_outputs", "describe"]

logger = logging.getLogger(__name__)


def nonfinite_outputs(arrays: Mapping[str, Any]) -> dict[str, int]:
    """Name -> count of inf/NaN values, for the floating-point arrays that have any."""
    out = {}
    for name, arr in arrays.items():
        if isinstance(arr, np.ndarray) and arr.dtype.kind == "f" and arr.size:
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            if bad:
                out[name] = bad
    return out


class NonfiniteWatch:
    """An observer (on a backend observing in execution order, the interpreter) that records
    the first produced tensor holding inf/NaN.

    ``found`` is ``{"node", "op", "tensor", "count", "max_abs_input"}`` (the largest finite
    magnitude among that node's float inputs) once one is seen; the watch then stops looking.
    """

    def __init__(self, model: onnx.ModelProto):
        self.producer = {o: n for n in model.graph.node for o in n.output if o}
        self.seen: dict[str, float] = {}
        self.found: dict[str, Any] | None = None

    def __call__(self, name: str, arr: Any) -> None:
        if self.found is not None or not isinstance(arr, np.ndarray) or arr.dtype.kind != "f" \
                or not arr.size:
            return
        finite = np.isfinite(arr)
        if finite.all():
            self.seen[name] = float(np.abs(arr).max())
            return
        vals = np.abs(arr[finite])
        self.seen[name] = float(vals.max()) if vals.size else 0.0
        node = self.producer.get(name)
        if node is not None:
            self.found = {"node": node.name or name, "op": node.op_type, "tensor": name,
                          "count": int(arr.size - np.count_nonzero(finite)),
                          "max_abs_input": max((self.seen.get(i, 0.0) for i in node.input if i),
                                               default=0.0)}


def has_fp16(model: onnx.ModelProto) -> bool:
    """True if the graph computes anything in fp16 (a Cast to fp16 or an fp16 initializer)."""
    f16 = onnx.TensorProto.FLOAT16
    return any(t.data_type == f16 for t in model.graph.initializer) or any(
        n.op_type == "Cast" and any(a.name == "to" and a.i == f16 for a in n.attribute)
        for n in model.graph.node)


def first_nonfinite(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], *,
                    backends: Observers | None = None) -> dict[str, Any] | None:
    """Run ``model`` on the interpreter backend (found in ``backends``; default: the built-in
    ones), observing every tensor in execution order; the first node whose output holds inf/NaN
    (see ``NonfiniteWatch.found``), None if every tensor stayed finite. Raises the
    interpreter's error when it cannot run the model."""
    watch = NonfiniteWatch(model)
    (backends or Observers()).observation("interpreter", model).run(dict(feeds), watch)
    return watch.found


def describe(where: str, outputs: Mapping[str, int], first: dict[str, Any] | None,
             error: str | None = None) -> str:
    """The warning text for non-finite values in a run of an fp16 program (in its outputs, or,
    when ``outputs`` is empty, only inside it)."""
    shown = ", ".join(f"'{n}' ({c})" for n, c in list(outputs.items())[:4])
    text = (f"{where}: the fp16 program produced non-finite values in output(s) {shown}"
            if outputs else f"{where}: the fp16 program produced non-finite values inside "
                            "(its outputs are finite but may be wrong)")
    if first is not None:
        text += (f"; the first node to produce one is '{first['node']}' ({first['op']}, output "
                 f"'{first['tensor']}', {first['count']} value(s); its inputs reach |x| = "
                 f"{first['max_abs_input']:.4g}, fp16's max is 65504)")
    elif error:
        text += f"; the interpreter could not trace it ({error})"
    text += (f"; compile with sample inputs ({option_ref('input_list')} or "
             f"{option_ref('json_input_file')}) so nodes leaving the fp16 range stay in fp32, "
             f"or keep the op type with {option_ref('keep_original_precision')}")
    return render_options(text)     # a warning, not an error: rendered here
