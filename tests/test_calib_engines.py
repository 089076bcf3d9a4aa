"""Calibration engines and range choice (issue 14): onnxruntime under aicc's observers (the
default where it runs the graph) against the interpreter (the reference); min-max calibration
without histogram binning; the ``Auto`` range method."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from aicc import ir
from aicc.passes.quantization.calibrate import calibrate_program
from aicc.program import Program
from aicc.quant import TensorObserver
from aicc.quant.calibration import (AUTO_GAMMA, _noise, auto_range, minmax_range, mse_range,
                                    percentile_range, select_range)
from aicc.quantization import quantize_model
from quant_builders import samples, small_cnn
from tolerance import assert_reordered_close


def _program(model):
    return Program.from_model(ir.load_model(model.SerializeToString()))


@pytest.mark.parametrize("batch", [1, 0])
def test_engines_give_the_same_profile(batch):
    model = small_cnn()
    feeds = samples(model, 6)
    ref = calibrate_program(_program(model), feeds, progress=False, engine="interpreter",
                            batch=batch)
    for engine in ("cpu", "auto"):
        got = calibrate_program(_program(model), feeds, progress=False, engine=engine,
                                batch=batch)
        assert set(got.tensors) == set(ref.tensors)
        for name in ref.tensors:
            a, b = ref[name], got[name]
            # the engines sum in their own order (tests/tolerance.py)
            assert_reordered_close([b.min, b.max], [a.min, a.max], terms=8 * 3 * 3, what=name)
            assert a.count == b.count
            # same histogram up to values moving one bin at float rounding of an edge
            diff = np.abs(a.histogram.counts - b.histogram.counts).sum()
            assert diff <= 0.002 * a.count + 2, name


def _transposed_batch_model():
    """x [N, 4] -> Transpose -> [4, N] -> Relu: the batch axis moves to axis 1."""
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
             helper.make_node("Relu", ["t"], ["y"])]
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, "N"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_samples_stack_when_the_batch_axis_moves(caplog):
    import logging
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((1, 4)).astype(np.float32)} for _ in range(8)]
    model = _transposed_batch_model()
    with caplog.at_level(logging.DEBUG, logger="aicc.passes.quantization.runner"):
        stacked = calibrate_program(_program(model), feeds, progress=False, engine="cpu")
    assert "calibration stacks up to" in caplog.text
    single = calibrate_program(_program(model), feeds, progress=False, engine="cpu", batch=1)
    for name in single.tensors:
        assert (stacked[name].min, stacked[name].max) == (single[name].min, single[name].max)
        np.testing.assert_allclose(stacked[name].histogram.counts,
                                   single[name].histogram.counts)


def test_minmax_quantization_skips_histograms_and_keeps_the_encodings():
    model = small_cnn()
    feeds = samples(model, 8)
    _, fast = quantize_model(model, samples=feeds, progress=False)                # 1 bin
    _, full = quantize_model(model, samples=feeds, progress=False, num_bins=512)
    assert fast.encodings["activations"] == full.encodings["activations"]


def _skewed_histogram():
    obs = TensorObserver("t", 512)
    rng = np.random.default_rng(1)
    obs.update(np.concatenate([rng.standard_normal(1000000), [30.0, -20.0]]).astype(np.float32))
    return obs.stats().histogram


@pytest.mark.parametrize("symmetric", [False, True])
def test_auto_range_never_loses_to_the_fixed_methods(symmetric):
    h = _skewed_histogram()
    lo, hi = auto_range(h, 8, symmetric=symmetric)
    best = _noise(h, np.array([lo]), np.array([hi]), 8, AUTO_GAMMA, not symmetric)[0]
    for cand in (minmax_range(h), percentile_range(h, 99.99), mse_range(h, 8,
                                                                        symmetric=symmetric)):
        c_lo, c_hi = cand
        if symmetric:
            m = max(abs(c_lo), abs(c_hi))
            c_lo, c_hi = -m, m
        assert best <= _noise(h, np.array([c_lo]), np.array([c_hi]), 8, AUTO_GAMMA,
                              not symmetric)[0] + 1e-12
    assert (lo, hi) != minmax_range(h)          # two outliers: clipping them pays
    assert select_range(h, "auto") == auto_range(h, 8)


def test_auto_is_the_cli_default():
    from aicc.cli.flags import FlagParser
    from aicc.cli.quantize_cmd import QUANTIZE_FLAGS, _options
    args = FlagParser("quantize", QUANTIZE_FLAGS).parse(["-i", "m.onnx", "-o", "q.onnx"])
    assert _options(args)["calibration"] == "Auto"
    args = FlagParser("quantize", QUANTIZE_FLAGS).parse(["--act_quantizer", "enhanced"])
    assert "calibration" not in _options(args)          # enhanced searches its own range


def test_identical_first_samples_do_not_prove_stacking_safe():
    """A graph that mixes samples (x minus the mean of the flattened batch) looks unchanged when
    stacked if the first two samples are equal; the statistics must still be those of one
    sample at a time (the stacking check refuses to decide from identical samples)."""
    from onnx import TensorProto, helper

    from onnx import numpy_helper

    # the batch is flattened away by a Reshape before the mean: no axis names it any more
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "flat"], ["f"]),
         helper.make_node("ReduceMean", ["f"], ["m"], axes=[1], keepdims=1),
         helper.make_node("Sub", ["x", "m"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.array([1, -1], np.int64), "flat")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    rng = np.random.default_rng(0)
    same = rng.standard_normal((1, 4)).astype(np.float32)
    feeds = [{"x": same}, {"x": same.copy()}] + \
        [{"x": rng.standard_normal((1, 4)).astype(np.float32)} for _ in range(6)]
    profile = calibrate_program(_program(model), feeds, progress=False, engine="interpreter")
    # one sample at a time: y = x - mean(x) of that sample alone
    expected = np.concatenate([(f["x"] - f["x"].mean()).ravel() for f in feeds])
    assert profile["y"].min == pytest.approx(float(expected.min()), rel=1e-6)
    assert profile["y"].max == pytest.approx(float(expected.max()), rel=1e-6)
