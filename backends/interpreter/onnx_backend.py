"""An ``onnx.backend.base.Backend`` adapter: onnx's backend test runner in, interpreter runs out.

Usage with onnx's runner::

    import onnx.backend.test
    from aicc.backends.interpreter.onnx_backend import InterpreterOnnxBackend
    tests = onnx.backend.test.BackendTest(InterpreterOnnxBackend, __name__)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

from .engine import Interpreter

__all__ = ["InterpreterOnnxBackend", "InterpreterRep"]


class InterpreterRep(BackendRep):
    """A prepared model: ``run`` takes inputs positionally (or by name) and returns a tuple."""

    def __init__(self, model: onnx.ModelProto):
        self.interpreter = Interpreter(model)
        self._feed_names = [s.name for s in self.interpreter.inputs]

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            feeds = dict(zip(self._feed_names, inputs))
        outputs = self.interpreter.run(feeds)
        return tuple(outputs[n] for n in self.interpreter.output_names)


class InterpreterOnnxBackend(Backend):
    """CPU-only numpy backend for onnx's backend API."""

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return device == "CPU" and not Interpreter.unsupported_nodes(model)

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> InterpreterRep:
        return InterpreterRep(model)

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU",
                  **kwargs: Any) -> tuple[Any, ...]:
        return cls.prepare(model, device).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Sequence[Any], device: str = "CPU",
                 outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None,
                 **kwargs: Any) -> tuple[Any, ...]:
        """Run one node by wrapping it in a model whose I/O types come from the inputs given."""
        arrays = [np.asarray(x) for x in inputs]
        names = [n for n in node.input if n]
        graph_inputs = [onnx.helper.make_tensor_value_info(
            n, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for n, a in zip(names, arrays)]
        graph_outputs = [onnx.helper.make_empty_tensor_value_info(n) for n in node.output if n]
        graph = onnx.helper.make_graph([node], "run_node", graph_inputs, graph_outputs)
        opset = kwargs.get("opset_version", onnx.defs.onnx_opset_version())
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
        return cls.prepare(model, device).run(dict(zip(names, arrays)))

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return Device(device).type == DeviceType.CPU
