"""``cle``: equalization of pairs, depthwise triplets and longer chains (Conv, grouped Conv, Gemm,
MatMul), ReLU6 modes, skipped candidates, shared weights, refusals and options.

Numerics: aicc.testing.check_pass on both reference backends within the pass's tolerance
(rtol 1e-4); high-bias absorption is off here (its own tests are in test_cle_hba.py).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from aicc.errors import ConfigError, PassError
from aicc.pipeline import Pipeline
from aicc.testing import check_pass, run_pass
from cle_builders import cnn, layer_ranges, mlp, run_cle

NO_HBA = {"high_bias_absorption": False}
CLE_LOG = "aicc.passes.equalization.cle"


def ops(program):
    return [n.op for n in program.graphs["default"].nodes]


def assert_equalized(model, first, second, rtol=1e-5):
    r = layer_ranges(model)
    np.testing.assert_allclose(r[first][0], r[second][1], rtol=rtol)


# ------------------------------------------------------------------------------ pairs
@pytest.mark.parametrize("bn", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_cle_conv_pair_preserves_and_equalizes(bn, bias):
    model = cnn([{"out": 6, "bn": bn, "bias": bias}, {"out": 5, "bn": bn, "bias": bias}],
                spread=30.0)
    before = layer_ranges(model)
    after = check_pass(model, "cle", NO_HBA)
    out = after.to_model()
    assert "BatchNormalization" not in ops(after)
    r = layer_ranges(out)
    if not bn:  # with BN the ranges before are of the unfolded weights
        expect = np.sqrt(before["conv0"][0] * before["conv1"][1])
        np.testing.assert_allclose(r["conv0"][0], expect, rtol=1e-5)
    assert_equalized(out, "conv0", "conv1")
    _, counters = run_cle(model, NO_HBA)
    assert counters["pairs equalized"] == 1
    assert counters.get("triplets equalized", 0) == 0
    assert counters.get("batchnorms folded", 0) == (2 if bn else 0)


@pytest.mark.parametrize("act", ["Relu", "LeakyRelu", "PRelu", None, "Clip-min-only"])
def test_cle_homogeneous_activations(act):
    model = cnn([{"out": 4, "act": act}, {"out": 3, "act": act}], spread=10.0)
    out = check_pass(model, "cle", NO_HBA).to_model()
    assert_equalized(out, "conv0", "conv1")


def test_cle_grouped_conv_pairs():
    """A grouped Conv (group 2, not depthwise) is equalized per group: exact and balanced."""
    model = cnn([{"out": 8}, {"out": 6, "group": 2}, {"out": 4, "group": 2}], cin=4, spread=20.0)
    out = check_pass(model, "cle", NO_HBA).to_model()
    assert_equalized(out, "conv0", "conv1", rtol=1e-4)
    assert_equalized(out, "conv1", "conv2", rtol=1e-4)


def test_cle_conv1d_and_conv3d():
    for rank in (3, 5):
        model = cnn([{"out": 4}, {"out": 3}], rank=rank, spatial=4, spread=10.0)
        out = check_pass(model, "cle", NO_HBA).to_model()
        assert_equalized(out, "conv0", "conv1")


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("bias", [True, False])
def test_cle_gemm_pair(trans_b, bias):
    model = mlp([{"out": 6, "bias": bias}, {"out": 4, "bias": bias}], trans_b=trans_b,
                spread=30.0, alpha=0.7)
    after = check_pass(model, "cle", NO_HBA)
    out = after.to_model()
    assert_equalized(out, "fc0", "fc1")
    gemm = next(n for n in after.graphs["default"].nodes if n.name == "fc0")
    assert gemm.attrs["alpha"] == 1.0


def test_cle_gemm_with_batchnorm():
    model = mlp([{"out": 6, "bn": True}, {"out": 4, "bn": True}], spread=10.0)
    after = check_pass(model, "cle", NO_HBA)
    assert ops(after) == ["Gemm", "Relu", "Gemm", "Relu"]


@pytest.mark.parametrize("bias", [True, False])
def test_cle_matmul_pair(bias):
    model = mlp([{"out": 6, "bias": bias}, {"out": 4, "bias": bias}, {"out": 3, "bias": bias}],
                op="MatMul", spread=30.0)
    out = check_pass(model, "cle", NO_HBA).to_model()
    assert_equalized(out, "mm0", "mm1", rtol=1e-4)
    assert_equalized(out, "mm1", "mm2", rtol=1e-4)


# ------------------------------------------------------------------------------ triplets, chains
def test_cle_depthwise_triplet_cube_root():
    model = cnn([{"out": 6, "bn": False}, {"group": "dw", "bn": False},
                 {"out": 5, "k": 1, "bn": False}], spread=50.0)
    before = layer_ranges(model)
    after = check_pass(model, "cle", NO_HBA)
    r = layer_ranges(after.to_model())
    expect = np.cbrt(before["conv0"][0] * before["conv1"][0] * before["conv2"][1])
    for name, side in (("conv0", 0), ("conv1", 0), ("conv2", 1)):
        np.testing.assert_allclose(r[name][side], expect, rtol=1e-5)
    _, counters = run_cle(model, NO_HBA)
    assert counters["triplets equalized"] == 1 and counters.get("pairs equalized", 0) == 0


def test_cle_long_chain_converges():
    """Conv x5 with mismatched ranges: sweeps repeat until every link is balanced."""
    layers = [{"out": 5}, {"out": 7}, {"out": 4}, {"out": 6}, {"out": 3}]
    model = cnn(layers, spread=40.0)
    out = check_pass(model, "cle", NO_HBA).to_model()
    for i in range(4):
        assert_equalized(out, f"conv{i}", f"conv{i + 1}", rtol=1e-4)
    _, counters = run_cle(model, NO_HBA)
    assert counters["pairs equalized"] == 4


def test_cle_mobilenet_like_chain_two_triplets():
    layers = [{"out": 6}, {"group": "dw"}, {"out": 8, "k": 1}, {"group": "dw"},
              {"out": 5, "k": 1}]
    model = cnn(layers, spread=30.0)
    out = check_pass(model, "cle", NO_HBA).to_model()
    r = layer_ranges(out)
    np.testing.assert_allclose(r["conv0"][0], r["conv1"][0], rtol=1e-4)
    np.testing.assert_allclose(r["conv1"][0], r["conv2"][1], rtol=1e-4)
    np.testing.assert_allclose(r["conv2"][0], r["conv4"][1], rtol=1e-4)
    _, counters = run_cle(model, NO_HBA)
    assert counters["triplets equalized"] == 2


def test_cle_max_iterations_reports_no_convergence(caplog):
    model = cnn([{"out": 5}, {"out": 7}, {"out": 4}, {"out": 6}], spread=40.0)
    with caplog.at_level(logging.INFO, logger=CLE_LOG):
        check_pass(model, "cle", {**NO_HBA, "max_iterations": 1})
    assert "did not converge in 1 sweeps" in caplog.text


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c0=st.integers(1, 9), c1=st.integers(1, 9), c2=st.integers(1, 9),
       spread=st.floats(1.0, 1e3), seed=st.integers(0, 2**16), dw=st.booleans(),
       bias=st.booleans(), act=st.sampled_from(["Relu", "Relu6", "LeakyRelu", None]))
def test_cle_hypothesis_channels_and_scales(c0, c1, c2, spread, seed, dw, bias, act):
    layers = [{"out": c0, "bias": bias, "act": act},
              {"group": "dw"} if dw else {"out": c1, "bias": bias, "act": act},
              {"out": c2, "k": 1, "bias": bias, "act": act}]
    model = cnn(layers, spread=spread, seed=seed)
    out = check_pass(model, "cle", NO_HBA, seeds=(seed,)).to_model()
    r = layer_ranges(out)
    np.testing.assert_allclose(r["conv0"][0], r["conv1"][1], rtol=1e-4)


# ------------------------------------------------------------------------------ ReLU6
@pytest.mark.parametrize("act", ["Relu6", "Relu6-const", "Relu6-attr"])
def test_cle_relu6_exact_keeps_function(act):
    model = cnn([{"out": 6, "act": act}, {"out": 4, "act": act}], spread=20.0,
                opset=10 if act == "Relu6-attr" else 17)
    # big inputs so that many activations exceed 6 and the bound matters
    rng = np.random.default_rng(3)
    feeds = [{"x": (10 * rng.standard_normal((2, 3, 6, 6))).astype(np.float32)}]
    after = check_pass(model, "cle", NO_HBA, feeds=feeds)
    assert ops(after).count("Min") == 1 and "Clip" in ops(after)  # the last Clip is untouched
    _, counters = run_cle(model, NO_HBA)
    assert counters["bounded relus kept exact"] == 1


def test_cle_relu6_replace_changes_float_and_reports(caplog):
    model = cnn([{"out": 6, "act": "Relu6"}, {"out": 4, "act": "Relu6"}], spread=20.0)
    rng = np.random.default_rng(3)
    feeds = [{"x": (10 * rng.standard_normal((2, 3, 6, 6))).astype(np.float32)}]
    with caplog.at_level(logging.WARNING, logger=CLE_LOG):
        with pytest.raises(PassError, match="not preserving"):
            check_pass(model, "cle", {**NO_HBA, "relu6_mode": "replace"}, feeds=feeds, seeds=())
    assert "replaced 1 ReLU6/Clip activation(s) by Relu" in caplog.text
    program, counters = run_cle(model, {**NO_HBA, "relu6_mode": "replace"})
    assert counters["relu6 replaced by relu"] == 1
    assert ops(program) == ["Conv", "Relu", "Conv", "Clip"]


def test_cle_runs_again_on_its_own_output():
    """Relu -> Min(per-channel) written by exact mode is recognised: a second run is a no-op."""
    model = cnn([{"out": 6, "act": "Relu6"}, {"group": "dw", "act": "Relu6"},
                 {"out": 4, "k": 1, "act": "Relu6"}], spread=20.0)
    first = run_pass(model, "cle", NO_HBA).to_model()
    second, counters = run_cle(first, NO_HBA)
    assert counters["triplets equalized"] == 1
    assert ops(second).count("Min") == 2
    for name, r in layer_ranges(second.to_model()).items():
        np.testing.assert_allclose(r[0], layer_ranges(first)[name][0], rtol=1e-5)
    check_pass(first, "cle", NO_HBA)


# ------------------------------------------------------------------------------ skips
def _skip_case(name):
    if name == "sigmoid":
        return cnn([{"out": 4, "act": "Sigmoid"}, {"out": 3}]), "'act0' (Sigmoid) is not a " \
            "positively homogeneous activation"
    if name == "clip-neg":
        return cnn([{"out": 4, "act": "Clip-neg"}, {"out": 3}]), "has min -1, not 0"
    if name == "two-readers":
        model = cnn([{"out": 4}, {"out": 3}])
        model.graph.node.append(helper.make_node("Relu", ["a0"], ["side"], name="side"))
        model.graph.output.append(helper.make_tensor_value_info("side", TensorProto.FLOAT,
                                                                [2, 4, 6, 6]))
        return model, "'a0' has 2 readers"
    if name == "graph-output":
        model = cnn([{"out": 4}, {"out": 3}])
        model.graph.output.append(helper.make_tensor_value_info("a0", TensorProto.FLOAT,
                                                                [2, 4, 6, 6]))
        return model, "'a0' is a graph output"
    if name == "dynamic-weights":
        model = cnn([{"out": 4}, {"out": 3, "bias": False}])
        w1 = next(t for t in model.graph.initializer if t.name == "w1")
        model.graph.initializer.remove(w1)
        model.graph.input.append(helper.make_tensor_value_info("w1", TensorProto.FLOAT,
                                                               list(w1.dims)))
        return model, "its weights 'w1' are not constant"
    if name == "unfoldable-bn":
        model = cnn([{"out": 4}, {"out": 3}])
        mean = next(t for t in model.graph.initializer if t.name == "mean0")
        model.graph.initializer.remove(mean)
        model.graph.input.append(helper.make_tensor_value_info("mean0", TensorProto.FLOAT, [4]))
        return model, "BatchNormalization 'bn0' after it could not be folded"
    if name == "gemm-transA":
        rng = np.random.default_rng(0)
        inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
                 for name, shape in (("w0", (4, 5)), ("b0", (4,)), ("w1", (3, 2)))]
        graph = helper.make_graph(
            [helper.make_node("Gemm", ["x", "w0", "b0"], ["h"], name="fc0", transB=1),
             helper.make_node("Relu", ["h"], ["a"], name="relu"),
             helper.make_node("Gemm", ["a", "w1"], ["y"], name="fc1", transA=1)], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 2])], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        return model, "next layer 'fc1': Gemm with transA=1"
    raise ValueError(name)


@pytest.mark.parametrize("case", ["sigmoid", "clip-neg", "two-readers", "graph-output",
                                  "dynamic-weights", "unfoldable-bn", "gemm-transA"])
def test_cle_skips_and_says_why(case, caplog):
    model, reason = _skip_case(case)
    with caplog.at_level(logging.DEBUG, logger=CLE_LOG):
        after = check_pass(model, "cle", NO_HBA)
    assert reason in caplog.text, caplog.text
    assert "cle: no candidate" in caplog.text
    _, counters = run_cle(model, NO_HBA)
    assert counters.get("pairs equalized", 0) == 0
    assert counters["candidates skipped"] >= 1
    assert "Min" not in ops(after)


def test_cle_no_candidate_logs_info(caplog):
    model = cnn([{"out": 4}])
    with caplog.at_level(logging.INFO, logger=CLE_LOG):
        run_pass(model, "cle")
    assert any(r.levelno == logging.INFO and "cle: no candidate" in r.getMessage()
               for r in caplog.records)


def test_cle_shared_weights_are_split():
    model = cnn([{"out": 4, "bn": False}, {"out": 4, "bn": False}], cin=4, spread=10.0)
    w0 = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w0"))
    # a side branch reads the same weights from the graph input
    model.graph.node.append(helper.make_node("Conv", ["x", "w0"], ["twin"], name="twin",
                                             pads=[1, 1, 1, 1]))
    model.graph.output.append(helper.make_tensor_value_info("twin", TensorProto.FLOAT,
                                                            [2, 4, 6, 6]))
    after = check_pass(model, "cle", NO_HBA)
    twin = next(n for n in after.graphs["default"].nodes if n.name == "twin")
    conv0 = next(n for n in after.graphs["default"].nodes if n.name == "conv0")
    np.testing.assert_array_equal(twin.inputs[1].values, w0)
    assert twin.inputs[1] is not conv0.inputs[1]
    _, counters = run_cle(model, NO_HBA)
    assert counters["shared weights split"] == 1


# ------------------------------------------------------------------------------ refusals, options
def test_cle_refuses_qdq_model():
    model = cnn([{"out": 4, "bn": False}, {"out": 3, "bn": False}])
    w = next(t for t in model.graph.initializer if t.name == "w1")
    values = numpy_helper.to_array(w)
    model.graph.initializer.remove(w)
    model.graph.initializer.extend([
        numpy_helper.from_array(np.round(values * 20).astype(np.int8), "w1_q"),
        numpy_helper.from_array(np.array(0.05, np.float32), "w1_s"),
        numpy_helper.from_array(np.array(0, np.int8), "w1_z")])
    model.graph.node.insert(0, helper.make_node("DequantizeLinear", ["w1_q", "w1_s", "w1_z"],
                                                ["w1"], name="w1_dq"))
    with pytest.raises(PassError, match="node 'w1_dq' \\(DequantizeLinear\\) is quantized"):
        run_pass(model, "cle")


def test_cle_refuses_fp16_weights():
    model = cnn([{"out": 4, "bn": False}, {"out": 3, "bn": False}], cin=2)
    graph = model.graph
    for t in list(graph.initializer):
        if t.name == "w1":
            graph.initializer.remove(t)
            graph.initializer.append(numpy_helper.from_array(
                numpy_helper.to_array(t).astype(np.float16), "w1"))
    conv1 = next(n for n in graph.node if n.name == "conv1")
    graph.node.insert(list(graph.node).index(conv1), helper.make_node(
        "Cast", ["a0"], ["a0h"], name="to16", to=TensorProto.FLOAT16))
    conv1.input[0] = "a0h"
    conv1.input.pop()  # bias
    graph.node.append(helper.make_node("Cast", ["a1"], ["out"], name="to32", to=TensorProto.FLOAT))
    graph.output[0].name = "out"
    del graph.value_info[:]
    with pytest.raises(PassError, match="node 'conv1' \\(Conv\\) has float16 constant 'w1'"):
        run_pass(model, "cle")


@pytest.mark.parametrize("options,field", [
    ({"relu6_mode": "relu"}, "relu6_mode"), ({"max_iterations": 0}, "max_iterations"),
    ({"high_bias_absortion": True}, "high_bias_absorption"), ({"convergence": -1.0}, "convergence")])
def test_cle_options_are_checked(options, field, registries):
    with pytest.raises(ConfigError, match=field):
        Pipeline.build([("cle", options)], registries.passes)


def test_cle_pipeline_text_round_trip(registries):
    text = "cle{relu6_mode=replace high_bias_absorption=false max_iterations=5}"
    pipeline = Pipeline.from_text(text, registries.passes)
    assert pipeline.to_text() == text
    assert "cle" in registries.passes.names()
