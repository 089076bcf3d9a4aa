"""Backends expose observation (``Backend.observation`` / ``aicc.backend.Observers``): the
interpreter and cpu backends show the same intermediate tensors, passes reach them through the
registry given to the pipeline, and ``--verify-each=numeric`` uses them to say where a broken
promise starts.

Tolerance: the interpreter and onnxruntime sum convolutions and matmuls in their own order, so
their tensors agree up to a reordered float32 sum (``tests/tolerance.py``); small_cnn's longest
sums have 8 channels x 3 x 3 taps.
"""

from __future__ import annotations

import numpy as np
import pytest

import aicc
from aicc import ir
from aicc.backend import Observers
from aicc.errors import BackendError, ConfigError, PassError, PluginError
from aicc.instruments import VerifyEach
from aicc.options import build_options
from aicc.passes.quantization.calibrate import calibrate_program
from aicc.pipeline import Pipeline, run_pipeline
from aicc.plugins import load_registries
from aicc.program import Program
from aicc.quant import dump_profile_yaml
from aicc.testing import run_model, run_pass
from quant_builders import samples, small_cnn
from tolerance import assert_reordered_close

TERMS = 8 * 3 * 3
TENSORS = ["x", "c1", "r1", "mp", "c2", "r2", "res", "gap", "flat", "y"]


def _model():
    return ir.load_model(small_cnn().SerializeToString())


def _observe(observers, backend, model, feeds, names=None):
    shown: list[tuple[str, np.ndarray]] = []
    run = observers.observation(backend, model, names)
    outputs = run.run(feeds, lambda n, a: shown.append((n, a)))
    return run, shown, outputs


@pytest.mark.parametrize("names", [None, ["c2", "x", "flat"]])
def test_interpreter_and_cpu_show_the_same_tensors(registries, names):
    observers = Observers(registries.backends)
    model = _model()
    feeds = samples(model, 1)[0]
    seen = {}
    for backend in ("interpreter", "cpu"):
        run, shown, outputs = _observe(observers, backend, model, feeds, names)
        assert run.names == tuple(TENSORS if names is None else names)
        assert [n for n, _ in shown if n in run.names] == [n for n, _ in shown]
        assert sorted(n for n, _ in shown) == sorted(run.names)    # each once per run
        assert list(outputs) == ["y"]
        seen[backend] = dict(shown)
        exe = registries.backends.get(backend).cls().compile(model, program_meta={},
                                                             spec_options={})
        np.testing.assert_array_equal(outputs["y"], exe.run(feeds)["y"])
    for name, ref in seen["interpreter"].items():
        assert seen["cpu"][name].dtype == ref.dtype and seen["cpu"][name].shape == ref.shape
        assert_reordered_close(seen["cpu"][name], ref, terms=TERMS, what=name)


def test_interpreter_shows_tensors_in_execution_order(registries):
    model = _model()
    run, shown, _ = _observe(Observers(registries.backends), "interpreter", model,
                             samples(model, 1)[0])
    assert run.in_order
    position = {n: i for i, (n, _) in enumerate(shown)}
    for node in model.graph.node:
        for inp in node.input:
            if inp in position:
                assert all(position[inp] < position[out] for out in node.output), node.name


def test_names_a_backend_cannot_see_are_left_out(registries):
    observers = Observers(registries.backends)
    model = _model()
    asked = ["nope", "w1", "r1"]
    interp = observers.observation("interpreter", model, asked)
    cpu = observers.observation("cpu", model, asked)
    assert interp.names == ("w1", "r1")      # the interpreter shows an initializer when named
    assert cpu.names == ("r1",)
    shown: dict[str, np.ndarray] = {}
    cpu.run(samples(model, 1)[0], shown.__setitem__)
    assert list(shown) == ["r1"]


def test_only_the_interpreter_sees_inside_control_flow(registries):
    from control_builders import loop_model

    observers = Observers(registries.backends)
    model = loop_model()
    asked = ["loop_node/xi", "acc"]
    assert observers.observation("interpreter", model, asked).names == tuple(asked)
    assert observers.observation("cpu", model, asked).names == ("acc",)
    shown: list[str] = []
    run = observers.observation("interpreter", model)       # everything: bodies too
    run.run({"x": np.ones(3, np.float32)}, lambda n, a: shown.append(n))
    assert shown.count("loop_node/xi") == 4 and "loop_node/xi" in run.names


def test_backends_that_cannot_observe_are_refused_by_name(registries):
    observers = Observers(registries.backends)
    assert observers.can_observe("interpreter") and observers.can_observe("cpu")
    assert not observers.can_observe("aic100") and not observers.can_observe("gpu")
    with pytest.raises(BackendError, match="backend 'aic100' cannot observe.*interpreter"):
        observers.observation("aic100", _model())
    with pytest.raises(PluginError, match="unknown backend 'interpreterr'"):
        observers.observation("interpreterr", _model())
    with pytest.raises(ConfigError, match="optimization_level"):
        observers.observation("cpu", _model(), options={"optimization_level": "most"})


def _plugin(cls):
    class Plugin:
        @aicc.hookimpl
        def aicc_register_passes(self, registry):
            registry.add(cls)
    return Plugin()


def test_passes_observe_through_the_registry_the_pipeline_was_given():
    """``ctx.observers`` is the backend registry given to ``run_pipeline``, not another."""
    got = {}

    class Probe(aicc.Pass):
        name = "probe-observers"
        description = "records what it can observe on"

        def run_graph(self, graph, program, ctx):
            got["backends"] = ctx.observers.backends
            got["can"] = ctx.observers.can_observe("interpreter")

    regs = load_registries(extra_plugins=[_plugin(Probe)])
    run_pipeline(Pipeline.build(["probe-observers"], regs.passes),
                 Program.from_model(_model()), registries=regs)
    assert got == {"backends": regs.backends, "can": True}


def test_calibration_of_an_fp16_graph():
    """``auto`` calibrates a graph computing in fp16 on the interpreter (onnxruntime computes
    most fp16 ops in float32); ``cpu`` now runs it (it used to fail inside onnxruntime, which
    was told every observed tensor is float32)."""
    model = small_cnn()
    program = run_pass(model, "convert-fp16", {"all": True})
    feeds = samples(model, 4)
    ref = calibrate_program(program, feeds, progress=False, engine="interpreter")
    auto = calibrate_program(program, feeds, progress=False, engine="auto")
    assert dump_profile_yaml(auto) == dump_profile_yaml(ref)
    cpu = calibrate_program(program, feeds, progress=False, engine="cpu")
    assert set(cpu.tensors) == set(ref.tensors)
    for name in ("x", "y"):
        assert cpu[name].count == ref[name].count


class _ScaleFirstConv(aicc.Pass):
    """Claims to preserve outputs but doubles the first Conv's weights."""

    name = "scale-first-conv"
    description = "test pass that breaks its promise in the middle of the graph"
    semantics = "preserving"

    def run_graph(self, graph, program, ctx):
        conv = next(n for n in graph.nodes if n.op == "Conv")
        conv.inputs[1].values = conv.inputs[1].values * 2


@pytest.mark.parametrize("backend", ["interpreter", "cpu"])
def test_verify_each_names_where_a_broken_promise_starts(backend):
    regs = load_registries(extra_plugins=[_plugin(_ScaleFirstConv)])
    verify = VerifyEach(build_options(VerifyEach.Options,
                                      {"numeric": True, "backend": backend}, owner="v"), regs)
    with pytest.raises(PassError) as err:
        run_pipeline(Pipeline.build(["cleanup", "scale-first-conv"], regs.passes),
                     Program.from_model(_model()), registries=regs, instruments=[verify])
    text = str(err.value)
    assert "pass 'scale-first-conv'" in text and "output 'y' differs" in text
    assert "the first to differ (in execution order; a pass may rescale intermediates on " \
           "purpose) is tensor 'c1' differs" in text


def test_fold_constants_runs_on_the_cpu_backend_and_folds_bfloat16():
    """fold-constants evaluates on the cpu backend, which carries types onnxruntime's Python API
    cannot return: a bfloat16 constant subgraph folds (its own onnxruntime session failed)."""
    from onnx import TensorProto as TP
    from onnx import helper, numpy_helper

    nodes = [helper.make_node("Cast", ["c"], ["cb"], to=TP.BFLOAT16, name="to_bf16"),
             helper.make_node("Cast", ["x"], ["xb"], to=TP.BFLOAT16, name="x_bf16"),
             helper.make_node("Add", ["xb", "cb"], ["yb"], name="add"),
             helper.make_node("Cast", ["yb"], ["y"], to=TP.FLOAT, name="back")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TP.FLOAT, [3])],
        [numpy_helper.from_array(np.array([1.5, 2.25, -3.0], np.float32), "c")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folded = run_pass(ir.load_model(model.SerializeToString()), "fold-constants", {}).to_model()
    assert [n.op_type for n in folded.graph.node] == ["Cast", "Add", "Cast"]
    x = {"x": np.array([0.5, -1.0, 4.0], np.float32)}
    ref = run_model(model, x, backend="interpreter")["y"]
    np.testing.assert_array_equal(run_model(folded, x, backend="interpreter")["y"],
                                  ref)
