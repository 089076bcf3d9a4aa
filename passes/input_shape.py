"""``input-shape``: ``NAME=D0,D1,...`` per input in, those inputs' dynamic dimensions bound and
all shapes re-inferred out (``--input-shape`` of ``aicc compile``, ``--input_dim`` of
``aicc quantize``).

A shape must have the input's rank and agree with every fixed dimension; a dimension that is a
named symbol binds that symbol (recorded in ``Program.symbols``, and it must get the same value
everywhere it appears); an unnamed or unknown dimension just takes the value. An input the model
lacks, a dimension that contradicts the model, or a value that is not a positive integer is an
error naming the input.
"""

from __future__ import annotations

import dataclasses

import onnx_graphsurgeon as gs

from aicc import ir
from aicc.errors import ConfigError, did_you_mean
from aicc.hookspecs import hookimpl
from aicc.options import option
from aicc.pass_base import Pass, PassContext
from aicc.program import Program

__all__ = ["InputShape", "parse_input_shapes"]

_MAX_DIM = 2**31 - 1


def parse_input_shapes(items: list[str], *, where: str = "--input-shape") -> dict[str, list[int]]:
    """``["x=1,3,224,224"]`` -> ``{"x": [1, 3, 224, 224]}``, refusing malformed or repeated ones."""
    out: dict[str, list[int]] = {}
    for item in items:
        name, sep, dims = item.rpartition("=")
        if not sep or not name:
            raise ConfigError(f"{item!r} is not NAME=D0,D1,...", where=where)
        values = []
        for d in dims.split(","):
            d = d.strip()
            if not d.isdigit() or not 0 < int(d) <= _MAX_DIM:
                raise ConfigError(f"input '{name}': dimension {d!r} is not a positive integer",
                                  where=where)
            values.append(int(d))
        if name in out and out[name] != values:
            raise ConfigError(f"input '{name}' is given two shapes ({out[name]} and {values})",
                              where=where)
        out[name] = values
    return out


class InputShape(Pass):
    name = "input-shape"
    description = "bind the dynamic dimensions of named inputs (--input-shape, --input_dim)"
    scope = "graph"
    before = ("*",)     # shapes bind before anything reads them
    semantics = "preserving"

    @dataclasses.dataclass(frozen=True)
    class Options:
        shapes: list[str] = option([], "NAME=D0,D1,... per input")

    def run_graph(self, graph: gs.Graph, program: Program, ctx: PassContext) -> None:
        where = "--input-shape"
        shapes = parse_input_shapes(ctx.options.shapes, where=where)
        inputs = {t.name: t for t in graph.inputs}
        symbols: dict[str, int] = dict(program.symbols)
        changed = False
        for name, dims in shapes.items():
            t = inputs.get(name)
            if t is None:
                raise ConfigError(f"the model has no input '{name}'", where=where,
                                  hint=did_you_mean(name, inputs))
            old = list(t.shape) if t.shape is not None else [None] * len(dims)
            if len(old) != len(dims):
                raise ConfigError(f"input '{name}' has rank {len(old)} ({old}); {dims} has rank "
                                  f"{len(dims)}", where=where)
            for axis, (d, v) in enumerate(zip(old, dims)):
                if isinstance(d, int) and d >= 0 and d != v:
                    raise ConfigError(f"input '{name}' dimension {axis} is fixed at {d}, not {v}",
                                      where=where, hint=f"the model's shape is {old}")
                if isinstance(d, str) and d:
                    if symbols.setdefault(d, v) != v:
                        raise ConfigError(f"input '{name}' dimension {axis} is symbol '{d}', "
                                          f"already {symbols[d]}, not {v}", where=where)
            if old != dims:
                changed = True
        if not changed:
            return
        bound = {k: v for k, v in symbols.items() if k not in program.symbols}
        for t in list(graph.inputs) + list(graph.outputs):
            if t.shape is None:
                continue
            t.shape = [bound.get(d, d) if isinstance(d, str) else d for d in t.shape]
        for name, dims in shapes.items():
            inputs[name].shape = list(dims)
        outputs = {id(t) for t in graph.outputs}
        for node in graph.nodes:
            for t in node.outputs:
                if id(t) not in outputs:
                    t.shape = None
        ir.infer_shapes(graph, where=f"graph '{ctx.graph_name}'")
        program.symbols.update(bound)
        ctx.count("inputs reshaped", len(shapes))


@hookimpl
def aicc_register_passes(registry):
    registry.add(InputShape)
