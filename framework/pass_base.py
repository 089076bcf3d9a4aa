"""The pass contract: what a pass declares, and the context it runs in.

A pass is a class with a kebab-case ``name``, an ``Options`` dataclass, a ``scope`` (``graph``:
run once per graph, possibly with per-specialization options; ``program``: sees all graphs and may
add or remove them) and a ``semantics`` promise (``preserving`` within ``tolerance``,
``approximating`` or ``interface``). The pass manager checks what it can of that promise.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import onnx_graphsurgeon as gs

from .backend import Observers
from .options import NoOptions
from .program import Program

__all__ = ["Pass", "PassContext", "Scope", "Semantics", "Tolerance"]

Scope = Literal["graph", "program"]
Semantics = Literal["preserving", "approximating", "interface"]


@dataclass(frozen=True)
class Tolerance:
    """How close outputs must stay for a ``preserving`` pass.

    Each element must satisfy |a - b| <= atol + rtol * max(|b|, max|b| over the output): a pass
    that reassociates float arithmetic (folding, equalization) makes rounding errors that scale
    with the output's magnitude, not with each element's, which may be a near-zero cancellation.
    """

    rtol: float = 1e-4
    atol: float = 1e-5


@dataclass
class PassContext:
    """What a running pass gets besides the Program.

    ``options`` is the pass's validated Options instance; ``graph_name`` and ``spec_options`` are
    set for graph-scoped passes; ``scratch`` is shared by all passes of one pipeline run (e.g.
    calibration statistics); ``counters`` are reported by ``--time-passes`` and verbose output;
    ``observers`` runs a graph on a backend, by name, while observing its tensors.
    """

    options: Any
    logger: logging.Logger
    observers: Observers = field(default_factory=Observers)
    scratch: dict[str, Any] = field(default_factory=dict)
    graph_name: str | None = None
    spec_options: dict[str, Any] = field(default_factory=dict)
    counters: Counter = field(default_factory=Counter)

    def count(self, what: str, n: int = 1) -> None:
        """Add ``n`` to a named counter (``pairs equalized``, ``casts inserted``, ...)."""
        self.counters[what] += n


class Pass:
    """Base class of every pass. Subclasses override ``run_graph`` or (program scope) ``run``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    scope: ClassVar[Scope] = "graph"
    semantics: ClassVar[Semantics] = "preserving"
    tolerance: ClassVar[Tolerance] = Tolerance()
    #: passes that, when present in the same pipeline, must run before this one.
    after: ClassVar[tuple[str, ...]] = ()
    #: passes that must run before this one (the pipeline is refused otherwise).
    requires: ClassVar[tuple[str, ...]] = ()
    #: op types (default domain) this pass rewrites into other ops. The compile driver adds
    #: the pass to the default pipeline when the model has such an op and the backend's op
    #: table lacks it (see ``aicc.compiler.lowering_steps``); ``aicc ops`` lists it
    #: next to the backends that lack those ops.
    lowers: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def lowering_options(cls, missing: frozenset[str]) -> dict[str, Any]:
        """Options the driver gives this pass when the backend lacks the ``missing`` op types
        (of ``lowers``); the default is the pass's defaults."""
        return {}

    def run(self, program: Program, ctx: PassContext) -> Program | None:
        """Transform ``program`` in place (return None) or return a new Program."""
        for name, graph in list(program.graphs.items()):
            ctx.graph_name = name
            ctx.spec_options = program.spec_options.get(name, {})
            self.run_graph(graph, program, ctx)
        ctx.graph_name = None
        return None

    def run_graph(self, graph: gs.Graph, program: Program, ctx: PassContext) -> None:
        """Transform one graph in place (graph-scoped passes)."""
        raise NotImplementedError(f"pass '{self.name}' implements neither run nor run_graph")
