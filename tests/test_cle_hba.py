"""``cle`` high-bias absorption: what moves where, exactness where its condition holds, the stated
bound where it does not, and when it is skipped.

Rule: channel i of layer 1 with BN statistics (gamma_i, beta_i), scaled by 1/s_i, gets
c_i = max(0, beta_i - 3|gamma_i|) / s_i; b1 -= c, b2 += W2 c. Exact while the pre-activation is
>= c (checked here with check_pass on such inputs); otherwise layer 2's input moves by at most c_i
per channel, so |delta y_o| <= sum_i |W2[o, i]| c_i for a linear layer 2 (checked here too).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from aicc.analyses import AnalysisCache
from aicc.passes.equalization.cle import CLE_STATISTICS
from aicc.passes.fold_batchnorm import FOLDED_BATCHNORM
from aicc.errors import PassError
from aicc.testing import check_pass, run_model
from cle_builders import cnn, initializer, run_cle

BETA = [5.0, 4.0, 0.2, -1.0]
GAMMA = [0.5, -0.4, 1.0, 1.0]          # a negative gamma: its spread is |gamma|
C = np.maximum(0.0, np.array(BETA) - 3 * np.abs(GAMMA))   # [3.5, 2.8, 0, 0]


def hba_model(act="Relu", k2=1, second_act="Relu", second_bn=True):
    """conv0 -> BN(high beta in channels 0, 1) -> act -> conv1 (1x1 by default) [-> BN -> act];
    conv0's bias equals the BN mean, so the pre-activation is beta + gamma/sigma * conv(x)."""
    model = cnn([{"out": 4, "beta": BETA, "gamma": GAMMA, "act": act},
                 {"out": 3, "k": k2, "bn": second_bn, "act": second_act}], spread=4.0)
    b0 = next(t for t in model.graph.initializer if t.name == "b0")
    b0.CopyFrom(numpy_helper.from_array(initializer(model, "mean0"), "b0"))
    return model


def small_feeds(n=3, scale=0.05):
    rng = np.random.default_rng(7)
    return [{"x": (scale * rng.standard_normal((2, 3, 6, 6))).astype(np.float32)}
            for _ in range(n)]


def pre_activation(model, feeds):
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_tensor_value_info("bn0", TensorProto.FLOAT,
                                                            [2, 4, 6, 6]))
    return [run_model(probe, f)["bn0"] for f in feeds]


def node(program, name):
    return next(n for n in program.graphs["default"].nodes if n.name == name)


@pytest.mark.parametrize("act", ["Relu", "Relu6", "LeakyRelu"])
def test_cle_hba_exact_when_preactivation_is_above_c(act):
    model = hba_model(act)
    feeds = small_feeds()
    for pre in pre_activation(model, feeds):      # the exactness condition holds for these
        assert np.all(pre[:, :2] >= C[:2].reshape(1, 2, 1, 1))
    after = check_pass(model, "cle", feeds=feeds, seeds=())
    ops = [n.op for n in after.graphs["default"].nodes]
    assert ops.count("Min") == (1 if act == "Relu6" else 0)
    assert run_cle(model)[1]["bias channels absorbed"] == 2


def test_cle_hba_moves_c_from_b1_to_b2():
    plain_scratch, hba_scratch = AnalysisCache(), AnalysisCache()
    plain, _ = run_cle(hba_model(), {"high_bias_absorption": False}, analyses=plain_scratch)
    hba, counters = run_cle(hba_model(), analyses=hba_scratch)
    assert counters["bias channels absorbed"] == 2
    st = plain_scratch.peek(CLE_STATISTICS)["default"]["conv0"]
    beta_s, gamma_s = np.array(st["beta"]), np.array(st["gamma"])   # after scaling by 1/s
    c = np.maximum(0.0, beta_s - 3 * np.abs(gamma_s))
    assert np.count_nonzero(c) == 2 and np.all(c[2:] == 0)
    b1_plain, b1_hba = (node(p, "conv0").inputs[2].values for p in (plain, hba))
    np.testing.assert_allclose(b1_plain - b1_hba, c, rtol=1e-5, atol=1e-6)
    w2 = node(plain, "conv1").inputs[1].values.astype(np.float64)
    b2_plain, b2_hba = (node(p, "conv1").inputs[2].values for p in (plain, hba))
    np.testing.assert_allclose(b2_hba - b2_plain, w2[:, :, 0, 0] @ c, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(hba_scratch.peek(CLE_STATISTICS)["default"]["conv0"]["beta"],
                               beta_s - c, rtol=1e-12)
    # as folded, untouched
    np.testing.assert_allclose(hba_scratch.peek(FOLDED_BATCHNORM)["conv0"]["beta"], BETA, rtol=1e-7)


def test_cle_hba_general_case_stays_within_stated_bound():
    """Large inputs break the condition: outputs move, but by at most sum_i |W2[o,i]| c_i."""
    model = hba_model(second_act=None, second_bn=False)
    rng = np.random.default_rng(1)
    feeds = {"x": (20 * rng.standard_normal((2, 3, 6, 6))).astype(np.float32)}
    assert np.any(pre_activation(model, [feeds])[0][:, :2] < C[:2].reshape(1, 2, 1, 1))
    with pytest.raises(PassError, match="not preserving"):
        check_pass(model, "cle", feeds=[feeds], seeds=())
    before = run_model(model, feeds)["y1"]
    after = run_model(run_cle(model)[0].to_model(), feeds)["y1"]
    w2 = np.abs(initializer(model, "w1")[:, :, 0, 0].astype(np.float64))
    bound = (w2 @ C).reshape(1, 3, 1, 1)
    assert np.any(np.abs(after - before) > 1e-3)
    assert np.all(np.abs(after - before) <= bound * (1 + 1e-4) + 1e-4)


def test_cle_hba_skips_padded_second_layer_unless_asked(caplog):
    model = hba_model(k2=3)
    with caplog.at_level(logging.DEBUG, logger="aicc.passes.equalization.cle"):
        check_pass(model, "cle", feeds=small_feeds(), seeds=())
    assert "no high-bias absorption into 'conv1': it reads zero padding" in caplog.text
    _, counters = run_cle(model)
    assert "bias channels absorbed" not in counters
    _, counters = run_cle(model, {"absorb_into_padded": True})
    assert counters["bias channels absorbed"] == 2


def test_cle_hba_needs_batchnorm_statistics(caplog):
    model = cnn([{"out": 4, "bn": False}, {"out": 3, "k": 1}])
    with caplog.at_level(logging.DEBUG, logger="aicc.passes.equalization.cle"):
        check_pass(model, "cle")
    assert "no BatchNorm statistics for 'conv0'" in caplog.text


def test_cle_hba_uses_statistics_of_an_earlier_fold_batchnorm():
    _, counters = run_cle(hba_model(), passes=["fold-batchnorm", "cle"])
    assert counters["bias channels absorbed"] == 2
    assert "batchnorms folded" not in counters     # fold-batchnorm already did it


def test_cle_hba_gemm_into_matmul_without_bias_adds_one():
    """Gemm -> BN -> Relu -> MatMul (no bias): absorption gives the MatMul an Add bias."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(v.astype(np.float32), n) for n, v in (
        ("w0", rng.standard_normal((4, 5)) * [[1], [8], [0.1], [1]]), ("b0", np.zeros(4)),
        ("g", np.array(GAMMA)), ("be", np.array(BETA)), ("m", np.zeros(4)), ("v", np.ones(4)),
        ("w1", rng.standard_normal((4, 3))))]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w0", "b0"], ["h"], name="fc0", transB=1),
         helper.make_node("BatchNormalization", ["h", "g", "be", "m", "v"], ["n"], name="bn"),
         helper.make_node("Relu", ["n"], ["a"], name="relu"),
         helper.make_node("MatMul", ["a", "w1"], ["y"], name="mm1")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = [{"x": (0.02 * rng.standard_normal((3, 5))).astype(np.float32)}]
    after = check_pass(model, "cle", feeds=feeds, seeds=())
    assert [n.op for n in after.graphs["default"].nodes] == ["Gemm", "Relu", "MatMul", "Add"]
    assert run_cle(model)[1]["bias channels absorbed"] == 2


def test_cle_hba_twice_in_a_pipeline_absorbs_once():
    """The second cle reads the statistics the first left (beta - c): nothing more to absorb."""
    model = hba_model()
    once, _ = run_cle(model)
    twice, counters = run_cle(model, passes=["cle", "cle"])
    assert "bias channels absorbed" not in counters
    for name in ("conv0", "conv1"):
        np.testing.assert_allclose(node(twice, name).inputs[2].values,
                                   node(once, name).inputs[2].values, rtol=1e-5, atol=1e-6)


def test_cle_hba_same_result_in_every_graph():
    """Statistics are kept per graph: a second specialization is not scaled twice."""
    from aicc import ir
    from aicc.pipeline import Pipeline, run_pipeline
    from aicc.plugins import load_registries
    from aicc.program import Program
    registries = load_registries()
    program = Program.from_model(ir.load_model(hba_model().SerializeToString()))
    program.graphs["second"] = program.graphs["default"].copy()
    program = run_pipeline(Pipeline.build(["fold-batchnorm", "cle"], registries.passes), program,
                           registries=registries)
    first, second = (next(n for n in program.graphs[g].nodes if n.name == "conv0")
                     for g in ("default", "second"))
    np.testing.assert_array_equal(first.inputs[2].values, second.inputs[2].values)
