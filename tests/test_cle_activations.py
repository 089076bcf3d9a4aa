"""``cle`` with ``objective=activations`` (passes/equalization/activations.py): the float function
is kept, the activation between two layers gains per-tensor int8 SQNR, a depthwise layer 2's
per-channel weight codes do not move, a dense layer 2 takes the alpha of least estimated noise,
and ``aicc quantize --algorithms cle-activations`` runs it (plain ``cle`` is unchanged).

Numerics: aicc.testing.check_pass on both reference backends within cle's tolerance (rtol and
atol 1e-4); the quantized models run in onnxruntime against the original float model.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from aicc.errors import ConfigError
from aicc.passes.equalization.activations import ALPHAS, ChannelStats, output_noise, stretch
from aicc.passes.equalization.patterns import find_chains
from aicc.quantization import quantize_model, quantize_pipeline
from aicc.testing import check_pass
from cle_builders import cnn, mlp, run_cle
from quant_builders import run_unoptimized, samples, sqnr_db, write_input_list


def _spread_model(act: str | None = None, spread: float = 60.0) -> onnx.ModelProto:
    """Conv -> (act) -> depthwise Conv -> Conv, channel ranges of the first activation spread by
    up to ``spread`` either way (compensated in the depthwise weights)."""
    return cnn([{"out": 8, "bn": False, "act": act}, {"group": "dw", "bn": False, "act": None},
                {"out": 4, "bn": False, "act": None}], spread=spread, spatial=8, seed=3)


def _list(tmp_path, model, n=8, seed=1):
    return str(write_input_list(tmp_path / f"cal{seed}", samples(model, n, seed)))


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _weights(model: onnx.ModelProto, node_name: str) -> np.ndarray:
    node = next(n for n in model.graph.node if n.name == node_name)
    return _inits(model)[node.input[1]].astype(np.float64)


def _intermediate(model: onnx.ModelProto, name: str, feeds) -> np.ndarray:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.output[:]
    m.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return run_unoptimized(m, feeds)


def _per_tensor_int8(x: np.ndarray) -> np.ndarray:
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    step = (hi - lo) / 255
    return np.round((x - lo) / step) * step + lo


# ------------------------------------------------------------------------------ the float function
@pytest.mark.parametrize("act", [None, "Relu", "LeakyRelu", "Relu6"])
def test_activation_objective_keeps_the_float_function(tmp_path, act):
    model = _spread_model(act)
    opts = {"objective": "activations", "input_list": _list(tmp_path, model)}
    after = check_pass(model, "cle", opts, seeds=(0, 1, 2))
    _, counters = run_cle(model, opts)
    assert counters["activations equalized"] >= 1
    if act == "Relu6":  # the bound follows the channel: Relu -> Min with a per-channel constant
        assert "Min" in [n.op for n in after.graphs["default"].nodes]


def test_activation_objective_dense_layers_keep_the_float_function(tmp_path):
    model = mlp([{"out": 6, "act": None}, {"out": 5, "act": "Relu"}, {"out": 3, "act": None}],
                spread=50.0, batch=4)
    check_pass(model, "cle", {"objective": "activations",
                              "input_list": _list(tmp_path, model)})


# ------------------------------------------------------------------------------ what it buys
def test_intermediate_per_tensor_sqnr_improves(tmp_path):
    model = _spread_model()
    after = run_cle(model, {"objective": "activations",
                            "input_list": _list(tmp_path, model)})[0].to_model()
    held = samples(model, 4, seed=50)
    t_before = _intermediate(model, "y0", held)
    t_after = _intermediate(after, "y0", held)
    # the same tensor up to a per-channel factor; undo it to compare on one footing
    s = np.sqrt(np.sum(t_before ** 2, axis=(0, 2, 3)) / np.sum(t_after ** 2, axis=(0, 2, 3)))
    s = s.reshape(1, -1, 1, 1)
    np.testing.assert_allclose(t_after * s, t_before, rtol=1e-4, atol=1e-5)
    before_db = sqnr_db(t_before, _per_tensor_int8(t_before))
    after_db = sqnr_db(t_before, _per_tensor_int8(t_after) * s)
    assert after_db > before_db + 5.0, (before_db, after_db)


def test_quantize_per_channel_cle_gains_output_sqnr_against_onnxruntime(tmp_path):
    """The public path: ``quantize_model(per_channel=True, algorithms=["cle-activations"])``,
    the QDQ model in onnxruntime against the original float model on held-out samples."""
    model = _spread_model()
    cal, held = samples(model, 8, seed=1), samples(model, 4, seed=50)
    ref = run_unoptimized(model, held)
    plain, _ = quantize_model(model, samples=cal, per_channel=True, progress=False)
    equalized, _ = quantize_model(model, samples=cal, per_channel=True,
                                  algorithms=["cle-activations"], progress=False)
    plain_db = sqnr_db(ref, run_unoptimized(plain, held))
    eq_db = sqnr_db(ref, run_unoptimized(equalized, held))
    assert eq_db > plain_db + 6.0, (plain_db, eq_db)


def test_depthwise_consumer_weight_codes_unchanged(tmp_path):
    model = _spread_model()
    after = run_cle(model, {"objective": "activations",
                            "input_list": _list(tmp_path, model)})[0].to_model()
    w0, w1 = _weights(model, "conv1"), _weights(after, "conv1")
    assert not np.allclose(w0, w1)                     # it did scale the channels

    def codes(w):
        step = np.abs(w).reshape(w.shape[0], -1).max(axis=1) / 127
        return np.round(w / step.reshape(-1, 1, 1, 1))
    np.testing.assert_array_equal(codes(w0), codes(w1))


def test_dense_consumer_takes_the_alpha_of_least_estimated_noise():
    model = mlp([{"out": 6, "act": None}, {"out": 5, "act": None}], spread=50.0)
    from aicc import ir
    graph = ir.load_model(model.SerializeToString())
    import onnx_graphsurgeon as gs
    chains, _ = find_chains(gs.import_onnx(graph))
    link = chains[0][0]
    rng = np.random.default_rng(0)
    st = ChannelStats.empty(link.first.c_out)
    st.add(rng.standard_normal((64, 6)) * np.geomspace(0.02, 5.0, 6), axis=-1)
    t = stretch(st, link.second, 1000.0)
    assert np.all((t > 0) & (t <= 1)) and t.max() == 1.0
    noise = [output_noise(st, link.second, t ** a, 8, 8) for a in ALPHAS]
    from aicc.passes.equalization.activations import link_scales
    s, alpha, gain = link_scales(link, st, max_gain=1000.0, act_bits=8, weight_bits=8)
    assert alpha == ALPHAS[int(np.argmin(noise))]
    assert gain >= 0.0
    np.testing.assert_allclose(s, t ** alpha)


# ------------------------------------------------------------------------------ selection, refusals
def test_quantize_pipeline_cle_names():
    def cle_step(algo, **kw):
        return next(o for n, o in quantize_pipeline(algorithms=[algo], **kw) if n == "cle")
    assert cle_step("cle", input_list="l.txt") == {}                   # as the seed
    assert cle_step("cle", input_list="l.txt", per_channel=True) == {}  # unchanged
    step = cle_step("cle-activations", input_list="l.txt", per_channel=True, act_bitwidth=16)
    assert step["objective"] == "activations" and step["input_list"] == "l.txt"
    assert step["act_bitwidth"] == 16
    assert cle_step("cle-activations", calibrate=True, per_channel=True)["objective"] == \
        "activations"


def test_cle_activations_refusals():
    with pytest.raises(ConfigError, match="per-channel weights"):
        quantize_pipeline(algorithms=["cle-activations"], input_list="l.txt")
    with pytest.raises(ConfigError, match="none were given"):
        quantize_pipeline(algorithms=["cle-activations"], profile=["p.json"], per_channel=True)


def test_cli_cle_activations_refusals(tmp_path, capsys):
    from aicc.cli import main
    model = _spread_model()
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    out = tmp_path / "q.onnx"
    lst = _list(tmp_path, model)
    base = ["quantize", "--input_model", str(path), "--output_model", str(out)]
    assert main(base + ["--input_list", lst, "--algorithms", "cle-activations"]) == 2
    assert "--use_per_channel_quantization" in capsys.readouterr().err
    assert main(base + ["--use_per_channel_quantization", "--algorithms",
                        "cle-activations"]) == 2
    assert "--input_list" in capsys.readouterr().err
    assert not out.exists()
    assert main(base + ["--input_list", lst, "--use_per_channel_quantization",
                        "--algorithms", "cle-activations"]) == 0
    assert out.exists()


def test_weight_objective_refuses_activation_options(tmp_path):
    with pytest.raises(ConfigError, match="only applies to objective=activations"):
        run_cle(_spread_model(), {"input_list": _list(tmp_path, _spread_model())})


def test_activation_objective_refuses_weight_options(tmp_path):
    model = _spread_model()
    with pytest.raises(ConfigError, match="'max_iterations' only applies to objective=weights"):
        run_cle(model, {"objective": "activations", "input_list": _list(tmp_path, model),
                        "max_iterations": 5})


def test_activation_objective_without_samples_is_refused():
    with pytest.raises(ConfigError, match="no samples for cle"):
        run_cle(_spread_model(), {"objective": "activations"})


def test_activation_objective_rejects_a_bad_objective():
    with pytest.raises(ConfigError, match="objective"):
        run_cle(_spread_model(), {"objective": "ranges"})
