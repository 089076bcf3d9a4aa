"""A small node emitter for passes that expand one node into many (lower-rnn, unroll-loops,
fold-if): unique names under a prefix, constants in a chosen dtype, and one op call per node.

Emitted intermediates carry no dtype or shape (so no stale value_info is exported); a pass that
emitted anything re-infers shapes once at its end (``aicc.ir.infer_shapes``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx_graphsurgeon as gs

__all__ = ["Emitter"]


class Emitter:
    """Creates nodes and tensors with names unique in ``graph`` (and the names it made)."""

    def __init__(self, graph: gs.Graph, prefix: str, dtype: np.dtype | None = None):
        self.prefix = prefix
        self.dtype = np.dtype(dtype) if dtype is not None else None
        self.nodes: list[gs.Node] = []
        self._taken = set(graph.tensors()) | {n.name for n in graph.nodes}
        self._count = 0
        self._shared: dict[str, gs.Constant] = {}

    def name(self, hint: str) -> str:
        base = f"{self.prefix}/{hint}"
        name = base
        while name in self._taken:
            self._count += 1
            name = f"{base}_{self._count}"
        self._taken.add(name)
        return name

    def const(self, hint: str, value: Any, dtype: Any = None) -> gs.Constant:
        """A constant; ``dtype`` defaults to the emitter's float dtype for float values."""
        arr = np.asarray(value)
        if dtype is not None:
            arr = arr.astype(dtype)
        elif self.dtype is not None and arr.dtype.kind == "f":
            arr = arr.astype(self.dtype)
        return gs.Constant(self.name(hint), np.array(arr, order="C"))

    def shared(self, hint: str, value: Any, dtype: Any = None) -> gs.Constant:
        """The constant made for ``hint`` the first time (weights every step reads)."""
        if hint not in self._shared:
            self._shared[hint] = self.const(hint, value, dtype)
        return self._shared[hint]

    def scalar(self, value: float) -> gs.Constant:
        """A 0-d constant in the emitter's float dtype, one per value."""
        return self.shared(f"c{value!r}".replace("-", "m").replace(".", "p"), np.array(value))

    def op(self, op: str, inputs: Sequence[gs.Tensor], hint: str, *,
           outputs: Sequence[gs.Tensor] | None = None, **attrs: Any) -> gs.Tensor:
        """Emit one node; returns its first output (a new Variable unless ``outputs`` given)."""
        outs = list(outputs) if outputs is not None else [gs.Variable(self.name(hint))]
        self.nodes.append(gs.Node(op, name=self.name(f"{hint}_{op}"), attrs=attrs,
                                  inputs=list(inputs), outputs=outs))
        return outs[0]
