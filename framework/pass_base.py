"""The pass contract: what a pass declares, and the context it runs in.

A pass is a class with a kebab-case ``name``, an ``Options`` dataclass, a ``scope`` (``graph``:
run once per graph, possibly with per-specialization options; ``program``: sees all graphs and may
add or remove them) and a ``semantics`` promise (``preserving`` within ``tolerance``,
``approximating`` or ``interface``). The pass manager checks what it can of that promise.

A pass returns a ``PassResult`` saying whether it modified the program (instruments skip dumping
and verifying passes that changed nothing) and which analyses stay valid; it shares facts with
other passes through ``ctx.analyses`` (``aicc.analyses``) and may run other passes with
``ctx.run_pipeline`` (inside the same instruments, checks and analysis cache).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import onnx_graphsurgeon as gs

from .analyses import Analysis, AnalysisCache
from .backend import Observers
from .options import NoOptions
from .program import Program

__all__ = ["Pass", "PassContext", "PassResult", "Scope", "Semantics", "Tolerance"]

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


@dataclass(frozen=True)
class PassResult:
    """What a pass did: ``modified`` (False: the program is exactly as it was), a new
    ``program`` replacing the input (None: changed in place), and the analyses that stay valid
    although it modified the program (besides the pass's declared ``preserves``)."""

    modified: bool = True
    program: Program | None = None
    preserved: tuple[Analysis | str, ...] = ()


@dataclass
class PassContext:
    """What a running pass gets besides the Program.

    ``options`` is the pass's validated Options instance; ``graph_name`` and ``spec_options`` are
    set for graph-scoped passes; ``analyses`` holds the facts passes share within one pipeline
    run (calibration profiles, BatchNorm statistics, samples the caller gave); ``counters`` are
    reported by ``--time-passes`` and verbose output; ``observers`` runs a graph on a backend, by
    name, while observing its tensors.
    """

    options: Any
    logger: logging.Logger
    observers: Observers = field(default_factory=Observers)
    registries: Any = None
    analyses: AnalysisCache = field(default_factory=AnalysisCache)
    graph_name: str | None = None
    spec_options: dict[str, Any] = field(default_factory=dict)
    counters: Counter = field(default_factory=Counter)
    #: set by the pass manager once the pass returned: whether it modified the program
    modified: bool = True
    #: runs a nested pipeline (set by the pass manager)
    _nested: Callable[[Sequence[Any], Program], Program] | None = field(default=None, repr=False)

    def count(self, what: str, n: int = 1) -> None:
        """Add ``n`` to a named counter (``pairs equalized``, ``casts inserted``, ...)."""
        self.counters[what] += n

    def run_pipeline(self, entries: Sequence[Any], program: Program) -> Program:
        """Run other passes (names or ``(name, options)`` pairs) over ``program`` now, inside this
        pipeline run: the same instruments, contract checks and analysis cache."""
        if self._nested is None:
            raise RuntimeError("ctx.run_pipeline is only available inside a pipeline run")
        return self._nested(entries, program)


class Pass:
    """Base class of every pass. Subclasses override ``run_graph`` or (program scope) ``run``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    scope: ClassVar[Scope] = "graph"
    semantics: ClassVar[Semantics] = "preserving"
    tolerance: ClassVar[Tolerance] = Tolerance()
    #: passes that, when present in the same pipeline, must run before this one ("*": every
    #: pass that does not itself say after "*"). Places the pass in generated pipelines.
    after: ClassVar[tuple[str, ...]] = ()
    #: passes that, when present in the same pipeline, must run after this one ("*": every pass
    #: that does not itself say before "*").
    before: ClassVar[tuple[str, ...]] = ()
    #: analyses that stay valid when this pass modifies the program
    preserves: ClassVar[tuple[Analysis | str, ...]] = ()
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

    def run(self, program: Program, ctx: PassContext) -> PassResult | Program | None:
        """Transform ``program``: in place (return a PassResult, or None: modified), or return a
        new Program."""
        modified = False
        for name, graph in list(program.graphs.items()):
            ctx.graph_name = name
            ctx.spec_options = program.spec_options.get(name, {})
            changed = self.run_graph(graph, program, ctx)
            modified = modified or changed is not False
        ctx.graph_name = None
        return PassResult(modified=modified)

    def run_graph(self, graph: gs.Graph, program: Program, ctx: PassContext) -> Any:
        """Transform one graph in place (graph-scoped passes); return False when it changed
        nothing (anything else is taken as changed)."""
        raise NotImplementedError(f"pass '{self.name}' implements neither run nor run_graph")
