"""The `specialize` pass: one graph per entry with symbols bound and shapes inferred, the same
tensor names everywhere, shared read-only weights, numerics of the original model, and clear
errors for symbols that do not fit the model."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from aicc import ir
from aicc.compiler import CompileRequest, compile_model
from aicc.pass_order import Requested
from aicc.errors import ConfigError, PassError
from aicc.instruments import random_feeds
from aicc.pipeline import Pipeline, run_pipeline
from aicc.program import Program
from aicc.testing import check_pass, run_model, run_pass
from builders import add_model
from spec_helpers import SEED_CONFIG, SEED_NAMES, load_example, write_json


@pytest.fixture(scope="module")
def cnn():
    return load_example("dynamic_cnn").build()


@pytest.fixture
def seed_config(tmp_path):
    return write_json(tmp_path / "spec.json", SEED_CONFIG)


def test_one_graph_per_entry_with_bound_shapes(cnn, seed_config, registries):
    program = run_pass(cnn, "specialize", {"config": str(seed_config)}, registries=registries)
    assert list(program.graphs) == SEED_NAMES
    shapes = [program.graphs[n].inputs[0].shape for n in SEED_NAMES]
    assert shapes == [[1, 3, 56, 56], [1, 3, 112, 112], [2, 3, 56, 56]]
    assert [program.graphs[n].outputs[0].shape for n in SEED_NAMES] == [[1, 10], [1, 10], [2, 10]]
    for graph in program.graphs.values():  # every intermediate shape is static now
        for node in graph.nodes:
            for t in node.outputs:
                assert t.shape is not None and all(isinstance(d, int) for d in t.shape), t
    assert program.spec_symbols[SEED_NAMES[1]] == {"batch": 1, "height": 112, "width": 112}
    assert program.spec_options == {}
    assert program.model_inputs[0].shape == ["batch", 3, "height", "width"]


def test_names_are_identical_across_specializations(cnn, seed_config, registries):
    program = run_pass(cnn, "specialize", {"config": str(seed_config)}, registries=registries)
    graphs = list(program.graphs.values())
    tensor_names = [sorted(g.tensors()) for g in graphs]
    node_names = [[n.name for n in g.nodes] for g in graphs]
    assert all(t == tensor_names[0] for t in tensor_names)
    assert all(n == node_names[0] for n in node_names)


def test_weights_are_shared_and_read_only(cnn, seed_config, registries):
    program = run_pass(cnn, "specialize", {"config": str(seed_config)}, registries=registries)
    consts = [{t.name: t for t in g.tensors().values() if isinstance(t, gs.Constant)}
              for g in program.graphs.values()]
    for name, first in consts[0].items():
        for other in consts[1:]:
            assert other[name] is not first  # separate tensors per graph...
            assert other[name].values is first.values  # ...over one weight array
        assert not first.values.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        consts[0]["conv2.w"].values *= 2


def test_weight_changing_passes_leave_other_specializations_alone(cnn, seed_config, registries):
    """fold-batchnorm writes new constants; the originals (shared) stay as they were."""
    program = Program.from_model(ir.load_model(cnn.SerializeToString()))
    pipeline = Pipeline.build([("specialize", {"config": str(seed_config)}), "fold-batchnorm"],
                              registries.passes)
    program = run_pipeline(pipeline, program, registries=registries)
    original = numpy_helper.to_array(next(t for t in cnn.graph.initializer if t.name == "conv1.w"))
    for graph in program.graphs.values():
        conv = next(n for n in graph.nodes if n.name == "conv1")
        assert conv.inputs[1].name == "conv1_bnfold_w"
        assert not any(n.op == "BatchNormalization" for n in graph.nodes)
    folded = [next(n for n in g.nodes if n.name == "conv1").inputs[1].values
              for g in program.graphs.values()]
    assert all(np.array_equal(f, folded[0]) for f in folded)
    assert not np.array_equal(folded[0], original)


def test_preserving_on_interpreter_and_cpu(cnn, seed_config, registries):
    check_pass(cnn, "specialize", {"config": str(seed_config)}, registries=registries)


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.integers(1, 3), height=st.integers(4, 20), width=st.integers(4, 20))
def test_any_values_match_onnxruntime_on_the_original(cnn, registries, tmp_path, batch, height,
                                                      width):
    path = write_json(tmp_path / "h.json", {"specializations": [
        {"batch": batch, "height": height, "width": width}]})
    program = run_pass(cnn, "specialize", {"config": str(path)}, registries=registries)
    (name,) = program.graphs
    feeds = random_feeds(program, name, seed=batch + height)
    assert feeds["image"].shape == (batch, 3, height, width)
    got = run_model(program.to_model(name), feeds, registries=registries)["logits"]
    ref = run_model(cnn, feeds, registries=registries)["logits"]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_options_and_symbols_reach_backends_and_graph_passes(cnn, tmp_path, registries,
                                                           monkeypatch):
    path = write_json(tmp_path / "o.json", {"specializations": [
        {"name": "small", "symbols": {"batch": 1, "height": 8, "width": 8},
         "compile_opts": "-ols=2"},
        {"name": "big", "symbols": {"batch": 1, "height": 16, "width": 16}}]})
    seen = {}
    from aicc.backends.cpu import CpuBackend

    original = CpuBackend.compile

    def compile_spy(self, model, *, program_meta, spec_options):
        seen[model.graph.name] = dict(spec_options)
        return original(self, model, program_meta=program_meta, spec_options=spec_options)

    monkeypatch.setattr(CpuBackend, "compile", compile_spy)
    _, program, _ = compile_model(CompileRequest(
        model=cnn, passes=[Requested("specialize", {"config": str(path)})]),
        registries)
    assert seen == {"small": {"ols": 2}, "big": {}}
    assert program.spec_options == {"small": {"ols": 2}}
    assert program.spec_symbols == {"small": {"batch": 1, "height": 8, "width": 8},
                                    "big": {"batch": 1, "height": 16, "width": 16}}
    from aicc.pass_base import Pass, PassContext

    class Probe(Pass):
        name = "probe"

        def run_graph(self, graph, program, ctx: PassContext):
            seen[("probe", ctx.graph_name)] = dict(ctx.spec_options)

    Probe().run(program, PassContext(options=None, logger=None))
    assert seen[("probe", "small")] == {"ols": 2} and seen[("probe", "big")] == {}


def test_define_symbol_binds_first(cnn, tmp_path, registries):
    path = write_json(tmp_path / "hw.json", {"specializations": [
        {"height": "8", "width": "8"}, {"height": "16", "width": "16", "batch": "2"}]})
    _, program, _ = compile_model(CompileRequest(
        model=cnn, symbols=["batch=2"],
        passes=[Requested("specialize", {"config": str(path)})]), registries)
    assert [g.inputs[0].shape for g in program.graphs.values()] == [[2, 3, 8, 8], [2, 3, 16, 16]]
    assert program.symbols == {"batch": 2}


@pytest.mark.parametrize("entries, symbols, message", [
    ([{"batch": 1, "height": 8, "width": 8, "depth": 3}], [],
     "entry 1: the model has no symbol 'depth' (its unbound symbols: batch, height, width)"),
    ([{"batch": 1, "height": 8, "width": 8}, {"batch": 1, "height": 8}], [],
     "entry 2: symbol(s) width are not bound"),
    ([{"batch": 1, "height": 8, "width": 8}], ["batch=2"],
     "entry 1: symbol 'batch' is 1 here but -onnx-define-symbol/-batchsize binds it to 2"),
    ([{"name": "x", "symbols": {"height": 8}}], ["batch=2"],
     "entry 1 ('x'): symbol(s) width are not bound"),
])
def test_entries_that_do_not_fit_the_model(cnn, tmp_path, registries, entries, symbols, message):
    path = write_json(tmp_path / "bad.json", {"specializations": entries})
    with pytest.raises(ConfigError) as info:
        compile_model(CompileRequest(model=cnn, symbols=symbols, passes=[
            Requested("specialize", {"config": str(path)})]), registries)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_same_value_as_define_symbol_is_accepted(cnn, tmp_path, registries):
    path = write_json(tmp_path / "ok.json", {"specializations": [
        {"batch": 2, "height": 8, "width": 8}]})
    _, program, _ = compile_model(CompileRequest(model=cnn, symbols=["batch=2"], passes=[
        Requested("specialize", {"config": str(path)})]), registries)
    assert list(program.graphs.values())[0].inputs[0].shape == [2, 3, 8, 8]


def test_values_whose_shapes_cannot_agree(tmp_path, registries):
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "c"], ["y"], name="add")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(np.ones(4, np.float32), "c")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = write_json(tmp_path / "n.json", {"specializations": [
        {"batch": 1, "n": 4}, {"batch": 1, "n": 5}]})
    with pytest.raises(ConfigError) as info:
        run_pass(model, "specialize", {"config": str(path)}, registries=registries)
    assert "entry 2: shapes do not agree" in str(info.value)
    assert "these symbol values do not fit the model" in str(info.value)


def test_unnamed_dynamic_dimension_is_refused(tmp_path, registries):
    model = add_model(shape=(None, 3))
    path = write_json(tmp_path / "u.json", {"specializations": [{"batch": 1}]})
    with pytest.raises(ConfigError, match=r"x\[0\] are unknown and unnamed.*bind the batch with batchsize"):
        run_pass(model, "specialize", {"config": str(path)}, registries=registries)


def test_no_config_and_double_specialization(cnn, seed_config, registries):
    with pytest.raises(ConfigError, match="no config given"):
        run_pass(cnn, "specialize", {}, registries=registries)
    program = run_pass(cnn, "specialize", {"config": str(seed_config)}, registries=registries)
    with pytest.raises(ConfigError, match="already has 3 graphs"):
        run_pass(program, "specialize", {"config": str(seed_config)}, registries=registries)


def test_pipeline_text_round_trip_and_verify_each(cnn, seed_config, registries):
    text = f"specialize{{config={seed_config}}},fold-constants,fold-batchnorm,cleanup"
    pipeline = Pipeline.from_text(text, registries.passes)
    assert pipeline.to_text() == text
    _, program, executables = compile_model(CompileRequest(
        model=cnn, pipeline_text=text, instruments=[("verify-each", {"numeric": True})]),
        registries)
    assert list(executables) == SEED_NAMES


def test_verify_each_catches_a_broken_clone(cnn, seed_config, registries, monkeypatch):
    """--verify-each=numeric compares each new specialization with the graph it came from."""
    import aicc.passes.specialize as mod

    real = mod.clone_graph

    def broken(graph):
        clone = real(graph)
        relu = next(n for n in clone.nodes if n.name == "relu2")
        relu.op = "Sigmoid"
        return clone

    monkeypatch.setattr(mod, "clone_graph", broken)
    with pytest.raises(PassError, match="pass 'specialize'.*broke its 'preserving' promise on "
                                        "graph 'spec0"):
        compile_model(CompileRequest(model=cnn, pipeline=[("specialize", {"config": str(
            seed_config)})], instruments=[("verify-each", {"numeric": True})]), registries)


def test_bind_symbols_still_binds_through_the_shared_helper(registries):
    program = run_pass(add_model(), "bind-symbols", {"symbols": ["batch=4"]},
                       registries=registries)
    assert program.graph().inputs[0].shape == [4, 3]
    assert program.graph().outputs[0].shape == [4, 3]
    assert program.symbols == {"batch": 4}
