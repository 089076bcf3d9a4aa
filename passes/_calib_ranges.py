"""Min-max calibration on onnxruntime with the reductions inside the graph.

When only each activation's min and max are needed (min-max calibration: one histogram bin), the
tensors need not leave onnxruntime at all: for every float32/float64 activation the graph gets
``ReduceMin``, ``ReduceMax``, ``ReduceSum`` and ``Size`` nodes whose scalar results are the
outputs. No activation is copied out (and onnxruntime keeps reusing its buffers), so a sample
costs about one inference and memory does not grow with the model's activations. The sum is only
a guard: it is finite exactly when the tensor holds no NaN or infinity (or overflows float), and
a tensor whose sum, min or max is not finite is observed in full through a second, ordinary
session built on demand, so NaN/Inf are left out and counted as the interpreter (the reference)
does. Graph inputs and tensors of other or unknown types are observed as plain outputs.

Not a plugin: ``_calib_runner`` uses :class:`RangeEngine` for ``engine=cpu|auto`` with one bin.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from aicc.errors import DataError
from aicc.ort_compat import for_onnxruntime

__all__ = ["RangeEngine"]

_REDUCED_TYPES = (TensorProto.FLOAT, TensorProto.DOUBLE)
_SUFFIXES = ("min", "max", "sum", "size")


def _out(name: str, kind: str) -> str:
    return f"{name}::aicc_{kind}"


class RangeEngine:
    """``run(feeds, observe=, observe_names=)`` where ``observe`` also has
    ``add_range(name, lo, hi, count)`` (the runner's collector)."""

    def __init__(self, model: onnx.ModelProto, names: list[str], dtypes: Mapping[str, int]):
        import onnxruntime as ort

        self._full_model = model.SerializeToString()
        self._full: Any = None
        self._names = list(names)
        inputs = {vi.name for vi in model.graph.input}
        outputs = {vi.name for vi in model.graph.output}
        self.fed = [n for n in names if n in inputs]
        self.reduced = [n for n in names if n not in inputs and dtypes.get(n) in _REDUCED_TYPES]
        plain = [n for n in names if n not in inputs and n not in self.reduced]
        for n in self.reduced:
            t = dtypes[n]
            for op, kind in (("ReduceMin", "min"), ("ReduceMax", "max"), ("ReduceSum", "sum")):
                model.graph.node.append(helper.make_node(op, [n], [_out(n, kind)], keepdims=0,
                                                         name=_out(n, kind)))
                model.graph.output.append(helper.make_tensor_value_info(_out(n, kind), t, []))
            model.graph.node.append(helper.make_node("Size", [n], [_out(n, "size")],
                                                     name=_out(n, "size")))
            model.graph.output.append(helper.make_tensor_value_info(_out(n, "size"),
                                                                    TensorProto.INT64, []))
        for n in plain:
            if n not in outputs:
                model.graph.output.append(helper.make_tensor_value_info(n, TensorProto.FLOAT,
                                                                        None))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(for_onnxruntime(model).SerializeToString(), options,
                                            providers=["CPUExecutionProvider"])
        self.produced = [o.name for o in self.session.get_outputs()]
        self.run_options = ort.RunOptions()
        self.run_options.log_severity_level = 4
        reduced = set(self.reduced)
        self.plain = [n for n in self.produced if "::aicc_" not in n and n not in reduced]

    def tensor_names(self) -> list[str]:
        return sorted(set(self.fed) | set(self.reduced) | set(self.plain))

    def _full_engine(self) -> Any:
        if self._full is None:
            from ._calib_runner import _OrtEngine
            self._full = _OrtEngine(onnx.ModelProto.FromString(self._full_model), self._names)
        return self._full

    def run(self, feeds: Mapping[str, np.ndarray], *, observe: Callable[[str, np.ndarray], None],
            observe_names: Iterable[str]) -> None:
        wanted = set(observe_names)
        for n in self.fed:
            if n in wanted:
                observe(n, np.asarray(feeds[n]))
        try:
            results = dict(zip(self.produced,
                               self.session.run(self.produced, dict(feeds), self.run_options)))
        except Exception as e:
            raise DataError(f"onnxruntime could not run a calibration sample: "
                            f"{str(e).splitlines()[0]}") from None
        for n in self.plain:
            if n in wanted:
                observe(n, results[n])
        redo = []
        for n in self.reduced:
            if n not in wanted:
                continue
            lo, hi, total, size = (results[_out(n, k)] for k in _SUFFIXES)
            if int(size) == 0:
                continue
            lo, hi, total = float(lo), float(hi), float(total)
            if math.isfinite(lo) and math.isfinite(hi) and math.isfinite(total):
                observe.add_range(n, lo, hi, int(size))
            else:
                redo.append(n)
        if redo:    # NaN or infinity somewhere: those tensors in full, as the reference sees them
            self._full_engine().run(feeds, observe=observe, observe_names=redo)
