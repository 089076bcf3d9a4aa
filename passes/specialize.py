"""``specialize``: one graph in, one graph per network specialization out (symbols bound, shapes
inferred), sharing weights.

The ``config`` option names a network specialization config (``-network-specialization-config``,
parsed by ``aicc.specconfig``). Each entry becomes a graph named after the entry (its ``name``, or
``spec0-batch1-height56-width56``); the passes after this one run once per graph, and backends
compile each graph with that entry's options (``Program.spec_options[name]``, e.g. ``{"ols": 2}``),
while ``Program.spec_symbols[name]`` records its symbol values.

Clones keep every tensor and node name, so calibration statistics, encodings and profiles apply to
the same tensor in every specialization. Weights are shared, not copied: the clones' Constants point
at the same arrays, which are made read-only, so a pass that would change a weight in place for one
specialization fails loudly instead of changing it for all (passes must put new Constants in place,
as ``fold-batchnorm`` does).

Every symbol of the model's inputs must be bound by each entry or beforehand by
``-onnx-define-symbol`` / ``-batchsize`` (``bind-symbols``); an entry that names a symbol the model
lacks, or contradicts ``-onnx-define-symbol``, is refused naming the file and the entry.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import onnx_graphsurgeon as gs

from aicc import ir
from aicc.errors import ConfigError, ModelError, option_ref
from aicc.hookspecs import hookimpl
from aicc.options import option
from aicc.pass_base import Pass, PassContext
from aicc.passes.bind_symbols import bind_graph
from aicc.program import Program
from aicc.specconfig import SpecEntry, SpecializationFile

__all__ = ["Specialize", "clone_graph"]

logger = logging.getLogger(__name__)


def clone_graph(graph: gs.Graph) -> gs.Graph:
    """A copy of ``graph`` with new nodes and tensors but the same weight storage.

    Constant values are loaded once (numeric dtypes numpy can hold; others stay lazily in their
    ONNX proto, which the clones share) and frozen read-only, so no clone can change a weight
    under the others.
    """
    for t in graph.tensors().values():
        if not isinstance(t, gs.Constant):
            continue
        if isinstance(t._values, gs.ir.tensor.LazyValues) and \
                isinstance(t._values.dtype, np.dtype) and t._values.dtype.kind in "biuf":
            t.values = t._values.load()  # load once, here, so every clone shares this array
        if isinstance(t._values, np.ndarray):
            t._values.flags.writeable = False
    return graph.copy()


class Specialize(Pass):
    name = "specialize"
    description = "one graph per network specialization (the specializations option)"
    scope = "program"
    semantics = "preserving"
    after = ("bind-symbols", "input-shape")

    @dataclasses.dataclass(frozen=True)
    class Options:
        config: SpecializationFile | None = option(
            None, "the network specialization config (JSON)", path=True)

    def run(self, program: Program, ctx: PassContext) -> None:
        if ctx.options.config is None:
            raise ConfigError("no config given", where="pass 'specialize'",
                              hint=f"set specialize{{config=FILE}} or "
                                   f"{option_ref('specializations')}")
        path, entries = ctx.options.config.path, ctx.options.config.value
        if len(program.graphs) != 1:
            raise ConfigError(f"the program already has {len(program.graphs)} graphs "
                              f"({', '.join(program.graphs)}); it can be specialized once",
                              where=path)
        ((base_name, base),) = program.graphs.items()
        known = ir.graph_symbols(base)
        unnamed = [f"{t.name}[{axis}]" for t in base.inputs
                   for axis, d in enumerate(t.shape or []) if not isinstance(d, (int, str))
                   or (isinstance(d, int) and d < 0)]
        if unnamed:
            raise ConfigError(f"input dimension(s) {', '.join(unnamed)} are unknown and unnamed; "
                              "a specialization can only bind named symbols", where=path,
                              hint="give the model named symbolic dimensions, or bind the batch "
                                   f"with {option_ref('batchsize')}")
        for entry in entries:
            self._check_entry(entry, known, program.symbols, path)
        graphs: dict[str, gs.Graph] = {}
        for i, entry in enumerate(entries):
            graph = base if i == len(entries) - 1 else clone_graph(base)
            values = {k: v for k, v in entry.symbols.items() if k in known}
            try:
                bind_graph(graph, values, where=f"{path}: {entry.label()}", strict=True)
            except ModelError as e:
                raise ConfigError(e.message, where=path, field=entry.label(),
                                  hint="these symbol values do not fit the model") from None
            graph.name = entry.name
            graphs[entry.name] = graph
            program.spec_symbols[entry.name] = dict(entry.symbols)
            if entry.options:
                program.spec_options[entry.name] = dict(entry.options)
            ctx.count("specializations")
        # The last clone reused the base graph itself; entries were cloned from it before binding.
        program.graphs = graphs
        program.spec_options.pop(base_name, None)
        program.spec_symbols.pop(base_name, None)
        logger.debug("specialize: %d specializations of graph '%s': %s", len(graphs), base_name,
                     ", ".join(graphs))

    @staticmethod
    def _check_entry(entry: SpecEntry, known: dict, fixed: dict[str, int], path: str) -> None:
        have = ", ".join(sorted(known)) or "none"
        for sym, value in entry.symbols.items():
            if sym in known:
                continue
            if sym in fixed:
                if fixed[sym] != value:
                    raise ConfigError(f"symbol '{sym}' is {value} here but "
                                      f"-onnx-define-symbol/-batchsize binds it to {fixed[sym]}",
                                      where=path, field=entry.label(),
                                      hint="drop it from one of the two")
                continue
            raise ConfigError(f"the model has no symbol '{sym}'", where=path,
                              field=entry.label(), hint=f"its unbound symbols: {have}")
        missing = [s for s in known if s not in entry.symbols]
        if missing:
            raise ConfigError(f"symbol(s) {', '.join(sorted(missing))} are not bound", where=path,
                              field=entry.label(),
                              hint="bind every symbol in each entry, or for all of them with "
                                   "-onnx-define-symbol")


@hookimpl
def aicc_register_passes(registry):
    registry.add(Specialize)
