"""The ``interpreter`` backend: an ONNX graph in, an Executable running it op by op in numpy out.

Exact ONNX semantics (fp16 and QDQ included) rather than speed; observers can see every tensor
(``InterpreterBackend.observation``), which calibration, the fp16 checks and ``--verify-each``'s
diagnosis rely on. Precision: each op computes in the dtypes the
graph gives it and returns the dtypes ONNX declares (integer ops stay integer, integer Div
truncates); fp16/bf16 matmuls, convolutions, reductions and composite activations accumulate in
float32 and round once per op (see ``kernels``). See ``engine`` for the executor.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import onnx

from aicc.backend import Backend, Executable, Observation, Observe
from aicc.hookspecs import hookimpl
from aicc.nonfinite import NonfiniteWatch, has_fp16
from aicc.options import option

from .engine import Interpreter
from .kernels import supported_op_types

__all__ = ["InterpreterBackend", "InterpreterExecutable", "InterpreterObservation", "Interpreter",
           "aicc_register_backends"]


@dataclasses.dataclass(frozen=True)
class InterpreterOptions:
    """Options of the interpreter backend."""

    check_types: bool = option(False, "check every produced tensor against the dtype and static "
                                      "shape the model declares for it (slow; for debugging)")
    profile: bool = option(False, "record the time spent per op type (reported by stats())")


class InterpreterExecutable(Executable):
    """A model prepared for the interpreter; ``interpreter`` gives observers and any tensor."""

    def __init__(self, interpreter: Interpreter, watch: NonfiniteWatch | None = None):
        self.interpreter = interpreter
        self.runs = 0
        #: fp16 programs: the first tensor holding inf/NaN (watched until one is found)
        self.watch = watch

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.runs += 1
        if self.watch is not None and self.watch.found is None:
            return self.interpreter.run(feeds, observe=self.watch)
        return self.interpreter.run(feeds)

    def first_nonfinite(self) -> dict[str, Any] | None:
        return dict(self.watch.found) if self.watch is not None and self.watch.found else None

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"runs": self.runs}
        if self.interpreter.profile:
            out["op_time_s"] = {op: round(t, 6) for op, (_, t) in
                                sorted(self.interpreter.op_times.items(), key=lambda kv: -kv[1][1])}
        return out


class InterpreterObservation(Observation):
    """Observers called as each tensor is produced, in execution order; intermediates are freed
    after their last use as in any run, so memory follows the live tensors, not ``names``."""

    in_order = True

    def __init__(self, interpreter: Interpreter, model: onnx.ModelProto,
                 names: Iterable[str] | None):
        self.interpreter = interpreter
        if names is None:          # what a run observing everything shows
            graph = model.graph
            every = [i.name for i in graph.input] + [o for n in graph.node for o in n.output if o]
            self.names = tuple(dict.fromkeys(every)) + tuple(interpreter.inner_tensor_names())
            self._observe_names: tuple[str, ...] | None = None
        else:
            known = set(interpreter.tensor_names()) | set(interpreter.inner_tensor_names())
            self.names = self._observe_names = tuple(n for n in dict.fromkeys(names)
                                                     if n in known)

    def run(self, feeds: Mapping[str, np.ndarray],
            observe: Observe | None = None) -> dict[str, np.ndarray]:
        if observe is None:
            return self.interpreter.run(feeds)
        return self.interpreter.run(feeds, observe=observe, observe_names=self._observe_names)


class InterpreterBackend(Backend):
    """numpy reference execution with ONNX semantics, op by op."""

    name = "interpreter"
    description = ("numpy, op by op, exact ONNX semantics incl. fp16 and QDQ; observers see every "
                   "tensor (calibration, debugging)")
    Options = InterpreterOptions
    fp16_compute = ("as the device does: every fp16 op's result is rounded to fp16 (matmuls, "
                    "convolutions and reductions accumulate in float32 and round once)")
    dtypes = frozenset({
        "float16", "bfloat16", "float32", "float64", "bool",
        "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
        "int4", "uint4", "int2", "uint2",
        "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
    })

    observes = True

    #: op types of the default ONNX domain that have a kernel
    op_types = supported_op_types()

    def unsupported_nodes(self, model: onnx.ModelProto) -> list[str]:
        return Interpreter.unsupported_nodes(model)

    def compile(self, model: onnx.ModelProto, *, program_meta: Mapping[str, Any],
                spec_options: Mapping[str, Any]) -> InterpreterExecutable:
        interp = Interpreter(model, check_types=self.options.check_types,
                             profile=self.options.profile)
        return InterpreterExecutable(interp, NonfiniteWatch(model) if has_fp16(model) else None)

    def observation(self, model: onnx.ModelProto,
                    names: Iterable[str] | None = None) -> InterpreterObservation:
        """Every tensor can be observed: graph inputs, Constant and node outputs, initializers
        when named, and tensors inside If/Loop/Scan bodies (``node/tensor``, once per
        iteration); with ``names`` None, all but initializers."""
        interp = Interpreter(model, check_types=self.options.check_types,
                             profile=self.options.profile)
        return InterpreterObservation(interp, model, names)


@hookimpl
def aicc_register_backends(registry):
    """Register the interpreter backend."""
    registry.add(InterpreterBackend)
