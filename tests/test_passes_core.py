"""cleanup, fold-constants, fold-batchnorm and bind-symbols: structure, numerics, no-ops, errors.

Numerics use aicc.testing.check_pass, which compares outputs before and after the pass on seeded
random inputs with every registered reference backend (the interpreter and onnxruntime).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from aicc import ir
from aicc.errors import ConfigError
from aicc.program import Program
from aicc.testing import check_pass, run_model, run_pass
from builders import add_model, conv_bn_model


def ops(program, name="default"):
    return [n.op for n in program.graphs[name].nodes]


@pytest.mark.parametrize("layer,group,channels,out", [
    ("Conv", 1, 4, 6), ("Conv", 2, 4, 6), ("Conv", 4, 4, 4), ("ConvTranspose", 1, 4, 6),
    ("ConvTranspose", 2, 4, 6), ("Gemm", 1, 5, 7)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_fold_batchnorm_preserves(layer, group, channels, out, with_bias):
    model = conv_bn_model(layer=layer, group=group, channels=channels, out_channels=out,
                          with_bias=with_bias)
    after = check_pass(model, "fold-batchnorm")
    assert "BatchNormalization" not in ops(after)


@pytest.mark.parametrize("transpose_b", [0, 1])
def test_fold_batchnorm_gemm_transposes(transpose_b):
    after = check_pass(conv_bn_model(layer="Gemm", channels=3, out_channels=4,
                                     transpose_b=transpose_b), "fold-batchnorm")
    assert ops(after) == ["Gemm", "Relu"]


def test_fold_batchnorm_example_model(example_model_path):
    images = np.load(example_model_path.parent / "data" / "digits_test_images.npy")[:16]
    model = ir.load_model(example_model_path)
    after = check_pass(model, "fold-batchnorm", feeds=[{"image": images}])
    assert ops(after).count("BatchNormalization") == 0
    assert ops(after).count("Conv") == 5


def test_fold_batchnorm_skips_shared_conv_output():
    model = conv_bn_model(act=None)
    # A second reader of the conv output: folding would change what it sees.
    model.graph.node.append(helper.make_node("Relu", ["y"], ["y2"], name="other"))
    model.graph.output.append(helper.make_tensor_value_info("y2", TensorProto.FLOAT,
                                                            [1, 6, 5, 5]))
    after = check_pass(model, "fold-batchnorm")
    assert "BatchNormalization" in ops(after)


def test_fold_batchnorm_splits_shared_weights():
    model = conv_bn_model(act=None)
    model.graph.node.append(helper.make_node("Conv", ["x", "w"], ["y3"], name="twin",
                                             pads=[1, 1, 1, 1]))
    model.graph.output.append(helper.make_tensor_value_info("y3", TensorProto.FLOAT,
                                                            [1, 6, 5, 5]))
    after = check_pass(model, "fold-batchnorm")
    twin = next(n for n in after.graphs["default"].nodes if n.name == "twin")
    np.testing.assert_array_equal(twin.inputs[1].values,
                                  numpy_helper.to_array(model.graph.initializer[0]))


def test_fold_batchnorm_noop_without_batchnorm():
    program = run_pass(add_model(), "fold-batchnorm")
    assert ops(program) == ["Add"]


def _constant_subgraph_model():
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Mul", ["a", "b"], ["ab"], name="mul"),
         helper.make_node("Add", ["ab", "a"], ["c"], name="add"),
         helper.make_node("Shape", ["x"], ["shape"], name="shape"),
         helper.make_node("Reshape", ["x", "shape"], ["xr"], name="reshape"),
         helper.make_node("Add", ["xr", "c"], ["y"], name="out"),
         helper.make_node("Neg", ["x"], ["dead"], name="dead")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(rng.standard_normal((2, 3)).astype(np.float32), "a"),
         numpy_helper.from_array(rng.standard_normal((2, 3)).astype(np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_fold_constants_folds_and_preserves():
    after = check_pass(_constant_subgraph_model(), "fold-constants")
    assert "Mul" not in ops(after) and "Shape" not in ops(after)


def test_cleanup_removes_dead_nodes_keeps_inputs():
    model = _constant_subgraph_model()
    model.graph.input.append(helper.make_tensor_value_info("unused", TensorProto.FLOAT, [1]))
    after = check_pass(model, "cleanup")
    assert "Neg" not in ops(after)
    assert [t.name for t in after.graphs["default"].inputs] == ["x", "unused"]
    after = run_pass(model, "cleanup", {"remove_unused_inputs": True})
    assert [t.name for t in after.graphs["default"].inputs] == ["x"]


# -- hypothesis: random Conv/BN/activation chains ------------------------------------------------

@st.composite
def conv_chains(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    channels = in_channels = draw(st.integers(1, 6))
    size = draw(st.integers(3, 7))
    nodes, inits, cur = [], [], "x"
    for i in range(draw(st.integers(1, 4))):
        out = draw(st.integers(1, 6))
        group = channels if draw(st.booleans()) and out == channels else 1
        w = rng.standard_normal((out, channels // group, 3, 3)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        ins = [cur, f"w{i}"]
        if draw(st.booleans()):
            inits.append(numpy_helper.from_array(rng.standard_normal(out).astype(np.float32), f"b{i}"))
            ins.append(f"b{i}")
        nodes.append(helper.make_node("Conv", ins, [f"c{i}"], name=f"conv{i}", group=group,
                                      pads=[1, 1, 1, 1]))
        cur = f"c{i}"
        if draw(st.booleans()):
            for p, v in (("g", rng.uniform(0.1, 3, out)), ("be", rng.standard_normal(out)),
                         ("m", rng.standard_normal(out)), ("v", rng.uniform(0.01, 4, out))):
                inits.append(numpy_helper.from_array(v.astype(np.float32), f"{p}{i}"))
            nodes.append(helper.make_node("BatchNormalization", [cur, f"g{i}", f"be{i}", f"m{i}",
                                                                 f"v{i}"], [f"n{i}"], name=f"bn{i}"))
            cur = f"n{i}"
        act = draw(st.sampled_from(["Relu", "Sigmoid", None]))
        if act:
            nodes.append(helper.make_node(act, [cur], [f"a{i}"], name=f"act{i}"))
            cur = f"a{i}"
        channels = out
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             [1, in_channels, size, size])],
                              [helper.make_tensor_value_info(cur, TensorProto.FLOAT, None)], inits)
    return _finish(graph)


def _finish(graph):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=conv_chains(), name=st.sampled_from(["fold-batchnorm", "fold-constants", "cleanup"]))
def test_core_passes_preserve_random_conv_chains(model, name):
    check_pass(model, name)


# -- bind-symbols -----------------------------------------------------------------------------

def test_bind_symbols_by_name_and_batchsize():
    program = run_pass(add_model(), "bind-symbols", {"symbols": ["batch=4"]})
    g = program.graphs["default"]
    assert g.inputs[0].shape == [4, 3] and g.outputs[0].shape == [4, 3]
    assert program.symbols == {"batch": 4}
    program = run_pass(add_model(), "bind-symbols", {"batchsize": 8})
    assert program.graphs["default"].inputs[0].shape == [8, 3]
    out = run_model(program.to_model(), {"x": np.ones((8, 3), np.float32)})
    np.testing.assert_array_equal(out["y"], np.ones((8, 3)) + np.arange(3))


def test_bind_symbols_errors():
    with pytest.raises(ConfigError, match="no symbol 'seq'.*its symbols: batch"):
        run_pass(add_model(), "bind-symbols", {"symbols": ["seq=4"]})
    with pytest.raises(ConfigError, match="expected a positive integer"):
        run_pass(add_model(), "bind-symbols", {"symbols": ["batch=four"]})
    with pytest.raises(ConfigError, match="expected a positive integer"):
        run_pass(add_model(), "bind-symbols", {"symbols": ["batch=0"]})
    with pytest.raises(ConfigError, match="batch size is fixed"):
        run_pass(add_model(shape=(2, 3)), "bind-symbols", {"batchsize": 4})
    with pytest.raises(ConfigError, match="conflicts"):
        run_pass(add_model(), "bind-symbols", {"symbols": ["batch=2"], "batchsize": 4})


def test_bind_symbols_example_model(example_model_path):
    model = ir.load_model(example_model_path)
    after = check_pass(model, "bind-symbols", {"batchsize": 3})
    assert after.graphs["default"].outputs[0].shape == [3, 10]


def test_program_copy_is_independent():
    program = Program.from_model(ir.load_model(conv_bn_model().SerializeToString()))
    other = program.copy()
    other.graphs["default"].nodes.clear()
    assert len(program.graphs["default"].nodes) == 3
    assert isinstance(program.to_model(), onnx.ModelProto)


def _constant_node_model(attr: str):
    """y = x + Constant(value_* attribute), the forms exporters emit."""
    values = {"value_float": 2.0, "value_floats": [1.0, 2.0, 3.0]}
    node = helper.make_node("Constant", [], ["c"], name="const", **{attr: values[attr]})
    graph = helper.make_graph(
        [node, helper.make_node("Add", ["x", "c"], ["y"], name="add")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("attr", ["value_float", "value_floats"])
def test_constant_nodes_compile_and_fold(tmp_path, attr):
    import aicc
    model = _constant_node_model(attr)
    check_pass(model, "fold-constants")
    session = aicc.load(aicc.compile(model, output=tmp_path / "q"))
    x = np.ones((2, 3), np.float32)
    ref = run_model(model, {"x": x})["y"]
    np.testing.assert_array_equal(session.run({"x": x})["y"], ref)


def test_omitted_optional_outputs_and_repeated_names():
    # Dropout with its mask output omitted twice, and nodes sharing one name.
    graph = helper.make_graph(
        [helper.make_node("Dropout", ["x"], ["a", ""], name="same"),
         helper.make_node("Dropout", ["a"], ["b", ""], name="same"),
         helper.make_node("Relu", ["b"], ["y"], name="same")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    program = Program.from_model(ir.load_model(model.SerializeToString()))
    g = program.graphs["default"]
    ir.verify_graph(g, full=True)
    assert [n.name for n in g.nodes] == ["same", "same_1", "same_2"]
