"""Bias correction (``bias-correction`` pass, ``quantize_model(bias_correction=...)``,
``aicc quantize --bias_correction``): with quantized weights and biases (activations float), each
corrected layer's mean output error on the calibration samples goes to ~0 -- with nearest
rounding and with AdaRound's -- while without it the error is the weights' rounding offset; the
patch means it uses are every patch's (padding, strides, dilations, groups); bad inputs refused."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import aicc.quantization as q
from aicc.cli import main
from aicc.errors import AiccError, ConfigError

from quant_builders import DIGITS, DIGITS_LIST, DIGITS_TEST, write_input_list

SHAPE = ["x=1,4,8,8"]


def _model(seed: int = 0) -> onnx.ModelProto:
    """x[1,4,8,8] -> depthwise 3x3 Conv (taps that nearly cancel, as PP-OCRv4 rec's Conv.1) ->
    1x1 Conv -> GlobalAveragePool -> Flatten -> Gemm -> MatMul (no bias) -> y[1,3]."""
    rng = np.random.default_rng(seed)
    dw = rng.normal(size=(4, 1, 3, 3)) * 2
    dw -= dw.mean(axis=(1, 2, 3), keepdims=True) * 0.97          # sums near 0
    inits = {"w_dw": dw, "b_dw": rng.normal(size=4) * 0.1,
             "w_pw": rng.normal(size=(6, 4, 1, 1)), "b_pw": rng.normal(size=6) * 0.1,
             "w_fc": rng.normal(size=(5, 6)), "b_fc": rng.normal(size=5) * 0.1,
             "w_mm": rng.normal(size=(5, 3))}
    nodes = [
        helper.make_node("Conv", ["x", "w_dw", "b_dw"], ["c_dw"], name="dw", group=4,
                         pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c_dw", "w_pw", "b_pw"], ["c_pw"], name="pw"),
        helper.make_node("GlobalAveragePool", ["c_pw"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
        helper.make_node("Gemm", ["flat", "w_fc", "b_fc"], ["fc"], name="fc", transB=1),
        helper.make_node("MatMul", ["fc", "w_mm"], ["y"], name="mm"),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _samples(n: int = 12, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)     # far from zero mean: the offset (W~ - W) mu matters
    return [{"x": (1.5 + 0.3 * rng.normal(size=(1, 4, 8, 8))).astype(np.float32)}
            for _ in range(n)]


def _dequantized(qmodel: onnx.ModelProto, node: str) -> tuple[np.ndarray, ...]:
    """The weight and bias a node of a QDQ model reads (its DequantizeLinear of constants), and
    the bias's scale."""
    inits = {i.name: numpy_helper.to_array(i) for i in qmodel.graph.initializer}
    producer = {o: n for n in qmodel.graph.node for o in n.output}
    layer = next(n for n in qmodel.graph.node if n.name == node)
    out = []
    for name in layer.input[1:3]:
        dq = producer[name]
        x = inits[dq.input[0]].astype(np.float64)
        s = inits[dq.input[1]].astype(np.float64)
        z = inits[dq.input[2]].astype(np.float64) if len(dq.input) > 2 else np.zeros_like(s)
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        if s.size > 1:
            shape = [1] * x.ndim
            shape[axis] = -1
            s, z = s.reshape(shape), z.reshape(shape)
        out.append((x - z) * s)
        scale = s.reshape(-1)
    return out[0], out[1], scale


def _layer_mean_error(model: onnx.ModelProto, qmodel: onnx.ModelProto, node: str,
                      samples) -> np.ndarray:
    """Per output channel, the mean over ``samples`` of the layer's output with the QDQ model's
    weight and bias minus its float output, the layer's input being the float model's."""
    layer = next(n for n in model.graph.node if n.name == node)
    w, b, _ = _dequantized(qmodel, node)
    means = []
    for replace in (False, True):
        m = onnx.ModelProto.FromString(model.SerializeToString())
        if replace:
            for init in m.graph.initializer:
                if init.name in (layer.input[1], layer.input[2]):
                    value = w if init.name == layer.input[1] else b
                    init.CopyFrom(numpy_helper.from_array(value.astype(np.float32), init.name))
        m.graph.output.append(helper.make_tensor_value_info(layer.output[0], TensorProto.FLOAT,
                                                            None))
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        outs = np.concatenate([s.run([layer.output[0]], f)[0] for f in samples])
        axes = (0,) + tuple(range(2, outs.ndim))
        means.append(outs.astype(np.float64).mean(axis=axes))
    return means[1] - means[0]


OPTS = dict(input_shapes=SHAPE, weight_bitwidth=4, per_channel=True, param_quantizer="tf",
            act_quantizer="tf", progress=False)


@pytest.mark.parametrize("adaround", [None, {"iterations": 200}])
def test_a_corrected_layers_mean_output_error_goes_to_zero(adaround):
    model, cal = _model(), _samples()
    plain, _ = q.quantize_model(model, samples=cal, adaround=adaround, **OPTS)
    fixed, program = q.quantize_model(model, samples=cal, adaround=adaround,
                                      bias_correction={}, **OPTS)
    assert set(program.encodings["bias_correction"]["layers"]) == {"dw", "pw", "fc"}
    for node in ("dw", "pw", "fc"):
        before = np.abs(_layer_mean_error(model, plain, node, cal))
        after = np.abs(_layer_mean_error(model, fixed, node, cal))
        # left: rounding to the int32 bias grid (input scale x weight scale), float32 sums
        half_step = 0.5 * _dequantized(fixed, node)[2]
        assert np.all(after <= half_step * (1 + 1e-6) + 1e-6), (node, after, half_step)
        assert before.max() > 4 * half_step.max(), (node, before)   # there was an offset
    # the weights are the same integers; only biases moved
    w_plain, b_plain, _ = _dequantized(plain, "dw")
    w_fixed, b_fixed, _ = _dequantized(fixed, "dw")
    np.testing.assert_array_equal(w_plain, w_fixed)
    assert np.abs(b_plain - b_fixed).max() > 1e-3


def test_adaround_integers_are_the_ones_corrected_for():
    """With adaround the shift is for the learned integers, not nearest rounding's."""
    model, cal = _model(), _samples()
    ada, program = q.quantize_model(model, samples=cal, adaround={"iterations": 200},
                                    bias_correction=True, **OPTS)
    near, _ = q.quantize_model(model, samples=cal, bias_correction=True, **OPTS)
    assert program.encodings["rounding"]["layers"]["pw"]["improved"]
    assert not np.array_equal(_dequantized(ada, "pw")[0], _dequantized(near, "pw")[0])
    half_step = 0.5 * _dequantized(ada, "pw")[2]
    assert np.all(np.abs(_layer_mean_error(model, ada, "pw", cal)) <= half_step + 1e-6)


def test_without_a_bias_a_layer_is_left_alone_and_the_float_model_is_unchanged():
    model, cal = _model(), _samples()
    fixed, program = q.quantize_model(model, samples=cal, bias_correction={}, **OPTS)
    assert "mm" not in program.encodings["bias_correction"]["layers"]
    mm = next(n for n in fixed.graph.node if n.name == "mm")
    assert len(mm.input) == 2                                  # no bias added
    assert model.SerializeToString() == _model().SerializeToString()   # the caller's model


@pytest.mark.parametrize("attrs, shape", [
    ({"pads": [1, 1, 1, 1]}, (3, 2, 3, 3)),
    ({"strides": [2, 1], "pads": [0, 1, 2, 0]}, (3, 2, 3, 2)),
    ({"dilations": [2, 2], "auto_pad": "SAME_UPPER"}, (3, 2, 3, 3)),
    ({"group": 2, "pads": [1, 0, 1, 0]}, (4, 1, 3, 1)),
])
def test_input_sum_is_the_sum_of_every_patch(attrs, shape):
    import onnx_graphsurgeon as gs
    from aicc.passes.quantization.adaround import _conv_rows, input_sum
    node = gs.Node("Conv", name="c", attrs=attrs)
    x = np.random.default_rng(0).normal(size=(2, 2, 7, 6)) + 1.0
    total, rows = input_sum(node, x, shape)
    every = _conv_rows(node, x, shape, 10 ** 9, np.random.default_rng(0))
    assert rows == len(every)
    np.testing.assert_allclose(total, every.sum(axis=0), rtol=1e-12, atol=1e-12)


def test_digits_with_4bit_weights_gains_output_sqnr():
    """The bundled example: measured 11.4 dB nearest, 17.0 dB with bias correction."""
    from test_adaround import _logits, _sqnr
    x = np.load(DIGITS_TEST)
    ref = _logits(onnx.load(DIGITS), x)
    opts = dict(input_list=DIGITS_LIST, input_shapes=["image=1,1,8,8"], weight_bitwidth=4,
                per_channel=True, param_quantizer="tf", act_quantizer="tf", progress=False)
    nearest, _ = q.quantize_model(DIGITS, **opts)
    fixed, _ = q.quantize_model(DIGITS, bias_correction={}, **opts)
    assert _sqnr(ref, _logits(fixed, x)) >= _sqnr(ref, _logits(nearest, x)) + 3.0


# ------------------------------------------------------------------------------ bad inputs
def test_without_samples_it_is_refused():
    with pytest.raises(AiccError, match="no samples for bias-correction"):
        q.quantize_model(_model(), input_shapes=SHAPE, progress=False, bias_correction={})


def test_an_unknown_option_is_refused_naming_it():
    with pytest.raises(ConfigError, match="bogus"):
        q.quantize_model(_model(), samples=_samples(2), bias_correction={"bogus": 1}, **OPTS)


def test_a_value_that_is_not_options_is_refused():
    with pytest.raises(ConfigError, match="bias_correction"):
        q.quantize_model(_model(), samples=_samples(2), bias_correction="yes", **OPTS)


def test_cli_needs_an_input_list(tmp_path, capsys):
    code = main(["quantize", "--input_model", DIGITS, "--output_model",
                 str(tmp_path / "q.onnx"), "--bias_correction"])
    err = capsys.readouterr().err
    assert code == 2 and "--bias_correction" in err and "--input_list" in err
    assert "Traceback" not in err and not (tmp_path / "q.onnx").exists()


def test_cli_corrects_and_says_so(tmp_path, capsys):
    model, cal = _model(), _samples(4)
    onnx.save(model, tmp_path / "m.onnx")
    lst = write_input_list(tmp_path, cal)
    code = main(["quantize", "--input_model", str(tmp_path / "m.onnx"), "--input_list",
                 str(lst), "--input_dim", "x", "1,4,8,8", "--output_model",
                 str(tmp_path / "q.onnx"), "--bias_correction", "--weight_bw", "4",
                 "--use_per_channel_quantization"])
    out = capsys.readouterr().out
    assert code == 0 and "bias correction: 3 layers" in out
    qmodel = onnx.load(tmp_path / "q.onnx")
    half_step = 0.5 * _dequantized(qmodel, "dw")[2]
    assert np.all(np.abs(_layer_mean_error(model, qmodel, "dw", cal)) <= half_step + 1e-6)


def test_compile_option_adds_the_pass_and_says_what_it_did(tmp_path, capsys):
    import json
    qpc = tmp_path / "qpc"
    assert main(["compile", f"-m={DIGITS}", "--input-shape=image=1,1,8,8",
                 f"-input-list-file={DIGITS_LIST}", "-convert-to-quantize", "-bias-correction",
                 f"-aic-binary-dir={qpc}", "-compile-only"]) == 0
    manifest = json.loads((qpc / "manifest.json").read_text())
    assert "bias-correction{" in manifest["pipeline"]
    layers = manifest["program"]["encodings"]["bias_correction"]["layers"]
    assert {"conv0", "fc"} <= set(layers)


def test_compile_option_without_calibration_is_refused(tmp_path, capsys):
    code = main(["compile", f"-m={DIGITS}", "--input-shape=image=1,1,8,8", "-bias-correction",
                 f"-aic-binary-dir={tmp_path / 'qpc'}"])
    err = capsys.readouterr().err
    assert code == 2 and "-bias-correction" in err and "-convert-to-quantize" in err
    assert "Traceback" not in err and not (tmp_path / "qpc").exists()


def test_non_finite_samples_keep_the_biases_and_say_so(caplog):
    model, cal = _model(), _samples(4)
    cal[1]["x"][0, 0, 0, 0] = np.nan
    plain, _ = q.quantize_model(model, samples=cal, **OPTS)
    with caplog.at_level("WARNING"):
        fixed, program = q.quantize_model(model, samples=cal, bias_correction={}, **OPTS)
    assert program.encodings["bias_correction"]["layers"] == {}
    assert "the mean input on the samples is not finite" in caplog.text
    np.testing.assert_array_equal(_dequantized(plain, "dw")[1], _dequantized(fixed, "dw")[1])
