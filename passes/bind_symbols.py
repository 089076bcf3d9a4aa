"""``bind-symbols``: give symbolic input dimensions concrete values and re-infer shapes.

``symbols`` takes ``NAME=VALUE`` pairs (``-onnx-define-symbol=NAME,VALUE``). ``batchsize``
(``-batchsize=N``) sets dimension 0 of every graph input whose dimension 0 is symbolic or unknown;
when that dimension is a named symbol, every other use of the symbol gets the same value. Naming a
symbol the model lacks, a value that is not a positive integer (or is over 2^31 - 1, as for
network specializations), or a batch size for a model whose batch is fixed is an error, never
ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import onnx_graphsurgeon as gs

from aicc import ir
from aicc.errors import ConfigError
from aicc.hookspecs import hookimpl
from aicc.options import option
from aicc.pass_base import Pass, PassContext
from aicc.program import Program
from aicc.specconfig import MAX_SYMBOL_VALUE

__all__ = ["BindSymbols", "bind_graph", "parse_symbol_values"]


def parse_symbol_values(items: list[str], *, where: str = "-onnx-define-symbol") -> dict[str, int]:
    """``["batch=4", "seq,16"]`` -> ``{"batch": 4, "seq": 16}``, refusing bad or repeated values."""
    out: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=" if "=" in item else ",")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise ConfigError(f"{item!r} is not NAME,VALUE", where=where)
        if not (value.isascii() and value.isdigit()) or not 0 < int(value) <= MAX_SYMBOL_VALUE:
            raise ConfigError(f"symbol '{name}' has value {value!r}; expected a positive integer "
                              f"of at most {MAX_SYMBOL_VALUE}", where=where)
        if name in out and out[name] != int(value):
            raise ConfigError(f"symbol '{name}' is given twice ({out[name]} and {value})",
                              where=where)
        out[name] = int(value)
    return out


def bind_graph(graph: gs.Graph, values: Mapping[str, int], *, unnamed: Sequence[gs.Variable] = (),
               unnamed_value: int = 0, where: str = "graph", strict: bool = False) -> bool:
    """Give the named symbols of ``graph``'s inputs and outputs their ``values`` (and dimension 0
    of each tensor in ``unnamed`` the value ``unnamed_value``), then re-infer every intermediate
    shape. Returns whether any shape changed.

    Shared by ``bind-symbols`` and ``specialize`` so both bind the same way. Intermediate shapes
    are cleared before inference so no stale symbolic dimension survives; with ``strict``, shapes
    that cannot agree under these values are an error (``ModelError`` naming ``where``).
    """
    unnamed_ids = {id(t) for t in unnamed}
    bound_any = False
    for t in list(graph.inputs) + list(graph.outputs):
        if t.shape is None:
            continue
        new = [values.get(d, d) if isinstance(d, str) else d for d in t.shape]
        if id(t) in unnamed_ids:
            new[0] = unnamed_value
        if new != list(t.shape):
            bound_any = True
            t.shape = new
    if not bound_any:
        return False
    outputs = {id(t) for t in graph.outputs}
    for node in graph.nodes:
        for t in node.outputs:
            if id(t) not in outputs:
                t.shape = None
    ir.infer_shapes(graph, strict=strict, where=where)
    return True


class BindSymbols(Pass):
    name = "bind-symbols"
    description = "bind symbolic input dimensions (-onnx-define-symbol, -batchsize)"
    scope = "graph"
    before = ("*",)     # shapes bind before anything reads them
    semantics = "preserving"

    @dataclasses.dataclass(frozen=True)
    class Options:
        symbols: list[str] = option([], "NAME=VALUE pairs binding named symbolic dimensions")
        batchsize: int = option(0, "value for dimension 0 of inputs whose batch is symbolic "
                                   "or unknown (0: leave it)", minimum=0,
                                maximum=MAX_SYMBOL_VALUE)

    def run_graph(self, graph: gs.Graph, program: Program, ctx: PassContext) -> None:
        values = parse_symbol_values(ctx.options.symbols)
        known = ir.graph_symbols(graph)
        for name in values:
            if name not in known:
                have = ", ".join(sorted(known)) or "none"
                raise ConfigError(f"the model has no symbol '{name}'",
                                  where="-onnx-define-symbol", hint=f"its symbols: {have}")
        unnamed: list[gs.Variable] = []
        if ctx.options.batchsize:
            batch = ctx.options.batchsize
            for t in graph.inputs:
                if not t.shape:
                    continue
                d0 = t.shape[0]
                if isinstance(d0, str) and d0:
                    if values.setdefault(d0, batch) != batch:
                        raise ConfigError(f"-batchsize={batch} conflicts with symbol '{d0}'="
                                          f"{values[d0]}", where="-batchsize")
                elif d0 is None or (isinstance(d0, int) and d0 < 0):
                    unnamed.append(t)
            if not unnamed and not any(isinstance(t.shape[0], str) for t in graph.inputs
                                       if t.shape):
                shapes = "; ".join(f"{t.name}: {list(t.shape or [])}" for t in graph.inputs)
                raise ConfigError(f"no input has a symbolic first dimension ({shapes})",
                                  where="-batchsize", hint="the model's batch size is fixed")
        if not values and not unnamed:
            return
        bind_graph(graph, values, unnamed=unnamed, unnamed_value=ctx.options.batchsize,
                   where=f"graph '{ctx.graph_name}'")
        program.symbols.update(values)
        ctx.count("symbols bound", len(values) + len(unnamed))


@hookimpl
def aicc_register_passes(registry):
    registry.add(BindSymbols)
