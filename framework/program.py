"""The Program: the named graphs that passes transform, plus the metadata that travels with them.

Before specialization a Program holds one graph, ``default``; the ``specialize`` pass may replace it
by one graph per network specialization. The metadata (model and custom I/O, symbol bindings,
encodings, node precisions, compile options, per-specialization options) is plain JSON-able data,
so that it goes into the container's manifest and comes back unchanged.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from . import ir

__all__ = ["Program", "TensorDesc", "describe_tensor"]


@dataclass
class TensorDesc:
    """Name, dtype (numpy name) and shape (ints, symbol names, or None) of one graph I/O."""

    name: str
    dtype: str
    shape: list[int | str | None] | None
    layout: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TensorDesc":
        return cls(name=data["name"], dtype=data["dtype"], shape=data["shape"],
                   layout=data.get("layout"))

    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)


def describe_tensor(t: gs.Tensor) -> TensorDesc:
    dtype = ir.tensor_dtype(t)
    shape = None if t.shape is None else [d if isinstance(d, (int, str)) or d is None else int(d)
                                          for d in t.shape]
    if shape is not None:
        shape = [int(d) if isinstance(d, (int, np.integer)) else (d or None) for d in shape]
    return TensorDesc(t.name, dtype.name if dtype is not None else "unknown", shape)


@dataclass
class Program:
    """Named ONNX graphs plus program-wide metadata. Every graph is valid ONNX at every step."""

    graphs: dict[str, gs.Graph]
    ir_version: int = 8
    model_inputs: list[TensorDesc] = field(default_factory=list)
    model_outputs: list[TensorDesc] = field(default_factory=list)
    custom_io: list[dict[str, Any]] = field(default_factory=list)
    symbols: dict[str, int] = field(default_factory=dict)
    encodings: dict[str, Any] = field(default_factory=dict)
    node_precision: dict[str, str] = field(default_factory=dict)
    compile_options: dict[str, Any] = field(default_factory=dict)
    spec_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    spec_symbols: dict[str, dict[str, int]] = field(default_factory=dict)
    repeated_outputs: list[str] = field(default_factory=list)
    #: graph -> run-time guards on input values (``aicc.guards``)
    guards: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def from_model(cls, model: onnx.ModelProto) -> "Program":
        """A single-graph (``default``) Program of a loaded, validated model."""
        graph = ir.import_graph(model)
        names = [t.name for t in graph.outputs]
        repeated = sorted(n for n, k in Counter(names).items() if k > 1)
        return cls(graphs={"default": graph}, ir_version=model.ir_version,
                   model_inputs=[describe_tensor(t) for t in graph.inputs],
                   model_outputs=[describe_tensor(t) for t in graph.outputs],
                   repeated_outputs=repeated)

    # -- graphs -------------------------------------------------------------------------------
    def graph(self, name: str = "default") -> gs.Graph:
        return self.graphs[name]

    def to_model(self, name: str = "default") -> onnx.ModelProto:
        """The ONNX model of one graph, as it stands now."""
        return ir.export_model(self.graphs[name], ir_version=self.ir_version)

    def copy(self) -> "Program":
        """A deep copy (graphs included) that passes may change freely."""
        graphs = {n: ir.import_graph(ir.export_model(g, ir_version=self.ir_version))
                  for n, g in self.graphs.items()}
        other = copy.deepcopy(dataclasses.replace(self, graphs={}))
        other.graphs = graphs
        return other

    # -- metadata -----------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        """All metadata as JSON-able data (graphs excluded): what the manifest records."""
        return {
            "ir_version": self.ir_version,
            "model_inputs": [t.to_json() for t in self.model_inputs],
            "model_outputs": [t.to_json() for t in self.model_outputs],
            "custom_io": copy.deepcopy(self.custom_io),
            "symbols": dict(self.symbols),
            "encodings": copy.deepcopy(self.encodings),
            "node_precision": dict(self.node_precision),
            "compile_options": copy.deepcopy(self.compile_options),
            "spec_options": copy.deepcopy(self.spec_options),
            "spec_symbols": copy.deepcopy(self.spec_symbols),
            "repeated_outputs": list(self.repeated_outputs),
            "guards": copy.deepcopy(self.guards),
        }

    @classmethod
    def from_meta(cls, graphs: dict[str, gs.Graph], meta: dict[str, Any]) -> "Program":
        return cls(
            graphs=graphs,
            ir_version=int(meta.get("ir_version", 8)),
            model_inputs=[TensorDesc.from_json(t) for t in meta.get("model_inputs", [])],
            model_outputs=[TensorDesc.from_json(t) for t in meta.get("model_outputs", [])],
            custom_io=copy.deepcopy(meta.get("custom_io", [])),
            symbols=dict(meta.get("symbols", {})),
            encodings=copy.deepcopy(meta.get("encodings", {})),
            node_precision=dict(meta.get("node_precision", {})),
            compile_options=copy.deepcopy(meta.get("compile_options", {})),
            spec_options=copy.deepcopy(meta.get("spec_options", {})),
            spec_symbols=copy.deepcopy(meta.get("spec_symbols", {})),
            repeated_outputs=list(meta.get("repeated_outputs", [])),
            guards=copy.deepcopy(meta.get("guards", {})),
        )
