"""The pass contract's analysis cache and PassResult: a fact a pass provides reaches later passes,
is dropped once another pass modifies the program without preserving it, survives passes that
changed nothing or preserve it; facts about the run's inputs stay; instruments skip unchanged
passes; ctx.run_pipeline runs passes inside a pass with the same cache and instruments."""

from __future__ import annotations

import dataclasses
import types

import onnx
import pytest
from onnx import TensorProto, helper

from aicc import Pass, hookimpl, ir, option
from aicc.analyses import Analysis, AnalysisCache
from aicc.pass_base import PassResult
from aicc.pipeline import Instrument, Pipeline, run_pipeline
from aicc.plugins import load_registries
from aicc.program import Program

FACT = Analysis("test fact")
INPUT_FACT = Analysis("test input fact", program_bound=False)
seen: list[object] = []


class Provide(Pass):
    name = "provide"

    def run(self, program, ctx):
        ctx.analyses.put(FACT, "measured")
        return PassResult(modified=False)


class Read(Pass):
    name = "read"

    def run(self, program, ctx):
        seen.append((ctx.analyses.peek(FACT), ctx.analyses.peek(INPUT_FACT)))
        return PassResult(modified=False)


class Touch(Pass):
    """Modifies the program (renames the graph), preserving what it is told to."""
    name = "touch"

    @dataclasses.dataclass(frozen=True)
    class Options:
        preserve: bool = option(False, "declare FACT preserved")

    def run(self, program, ctx):
        for graph in program.graphs.values():
            graph.name = graph.name + "'"
        return PassResult(preserved=(FACT,) if ctx.options.preserve else ())


class Outer(Pass):
    name = "outer"

    def run(self, program, ctx):
        return PassResult(program=ctx.run_pipeline(["provide", "read"], program))


plugin = types.ModuleType("analyses_test_plugin")


@hookimpl
def aicc_register_passes(registry):
    for cls in (Provide, Read, Touch, Outer):
        registry.add(cls)


plugin.aicc_register_passes = aicc_register_passes


class Record(Instrument):
    def __init__(self):
        super().__init__()
        self.rows = []

    def after_pass(self, index, step, program, ctx):
        self.rows.append((step.name, ctx.modified))


@pytest.fixture(scope="module")
def regs():
    return load_registries(extra_plugins=[plugin])


def _program():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return Program.from_model(ir.load_model(model.SerializeToString()))


@pytest.mark.parametrize("passes,expected", [
    (["provide", "read"], "measured"),
    (["provide", "touch", "read"], None),                       # modified, not preserved
    (["provide", ("touch", {"preserve": True}), "read"], "measured"),
    (["provide", "read", "read"], "measured"),                  # unchanged passes keep it
])
def test_facts_live_until_a_pass_modifies_the_program(regs, passes, expected):
    seen.clear()
    record = Record()
    run_pipeline(Pipeline.build(passes, regs.passes), _program(), registries=regs,
                 instruments=[record], provided={INPUT_FACT: "samples"})
    assert seen[-1] == (expected, "samples")              # the caller's input facts stay
    assert [m for n, m in record.rows if n != "touch"] == [False] * (len(passes) - (
        1 if "touch" in str(passes) else 0))


def test_nested_passes_share_the_cache_and_the_instruments(regs):
    seen.clear()
    record, cache = Record(), AnalysisCache()
    run_pipeline(Pipeline.build(["outer", "read"], regs.passes), _program(), registries=regs,
                 instruments=[record], analyses=cache)
    assert [n for n, _ in record.rows] == ["outer/provide", "outer/read", "outer", "read"]
    assert seen == [("measured", None), ("measured", None)]
    assert cache.peek(FACT) == "measured"


def test_a_fact_nobody_provides_is_a_clear_error():
    with pytest.raises(Exception, match="no test fact is available"):
        AnalysisCache().get(FACT, program=None)
