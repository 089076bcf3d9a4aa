"""``aicc quantize``: QNN-quantizer flags in, a QDQ ONNX model that onnxruntime runs out; every bad
input refused with one line and exit 2, leaving no output behind."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from aicc.backends.interpreter.engine import Interpreter
from aicc.cli import main

from quant_builders import DIGITS, DIGITS_LABELS, DIGITS_LIST, DIGITS_TEST, small_cnn, samples, \
    write_input_list

DIM = ["--input_dim", "image", "1,1,8,8"]


def _run(argv, capsys):
    code = main(["quantize", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_quantize_runs_in_onnxruntime_and_matches_the_interpreter(tmp_path, capsys):
    out, enc = tmp_path / "q.onnx", tmp_path / "enc.json"
    code, stdout, err = _run(["--input_model", DIGITS, "--input_list", DIGITS_LIST, *DIM,
                              "--output_model", out, "--export_encodings", enc,
                              "--use_per_channel_quantization", "--bias_bw", "32"], capsys)
    assert code == 0, err
    assert "quantized" in stdout and "encodings written" in stdout
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    engine = Interpreter(model)
    x, y = np.load(DIGITS_TEST), np.load(DIGITS_LABELS)
    scale = json.loads(enc.read_text())["activation_encodings"]["logits"][0]["scale"]
    correct = 0
    for i in range(0, 360, 9):
        feed = {"image": x[i:i + 1]}
        a = session.run(None, feed)[0]
        b = engine.run(feed)["logits"]
        assert np.max(np.abs(a - b)) <= scale * 1.01       # within one quantization step
        correct += int(a.argmax() == y[i])
    assert correct >= 38                                     # 40 images, float gets 39-40
    assert not list(tmp_path.glob(".q.onnx*"))             # written atomically


def test_qnn_options_reach_the_encodings(tmp_path, capsys):
    out, enc = tmp_path / "q.onnx", tmp_path / "enc.json"
    code, _, err = _run(["--input_model", DIGITS, "--input_list", DIGITS_LIST, *DIM,
                         "--output_model", out, "--export_encodings", enc, "--weight_bw", "4",
                         "--pack_4_bit_weights", "--act_quantizer", "symmetric",
                         "--act_quantizer_calibration", "percentile",
                         "--percentile_calibration_value", "99.5", "--num_histogram_bins",
                         "256"], capsys)
    assert code == 0, err
    model = onnx.load(out)
    assert model.opset_import[0].version == 21
    # tf (the QNN default for weights) is asymmetric: packed unsigned 4-bit
    assert any(t.data_type == onnx.TensorProto.UINT4 for t in model.graph.initializer)
    table = json.loads(enc.read_text())
    image = table["activation_encodings"]["image"][0]
    assert image["is_symmetric"] == "True" and image["offset"] == -128
    assert table["param_encodings"]["fc.weight"][0]["bitwidth"] == 4
    ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])


def test_overrides_partial_and_float(tmp_path, capsys):
    ov = tmp_path / "ov.json"
    ov.write_text(json.dumps({"activation_encodings": {"bn2": [{"bitwidth": 32,
                                                                "dtype": "float"}]},
                              "param_encodings": {}, "excluded_layers": ["fc"]}))
    out = tmp_path / "q.onnx"
    code, stdout, err = _run(["--input_model", DIGITS, "--input_list", DIGITS_LIST, *DIM,
                              "--output_model", out, "--quantization_overrides", ov,
                              "--float_bw", "16", "--float_bias_bw", "32"], capsys)
    assert code == 0, err
    assert "2 float ops" in stdout
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.load(DIGITS_TEST)[:1]
    ref = ort.InferenceSession(str(DIGITS), providers=["CPUExecutionProvider"])
    assert np.argmax(session.run(None, {"image": x})[0]) == np.argmax(ref.run(None,
                                                                              {"image": x})[0])


def test_algorithms_cle(tmp_path, capsys, registries):
    out = tmp_path / "q.onnx"
    argv = ["--input_model", DIGITS, "--input_list", DIGITS_LIST, *DIM, "--output_model", out,
            "--algorithms", "cle"]
    code, _, err = _run(argv, capsys)
    if "cle" in registries.passes:
        assert code == 0, err
        ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    else:
        assert code == 2 and "'cle' pass, which is not registered" in err
    code, _, err = _run(argv[:-1] + ["adaround"], capsys)
    assert code == 2 and "--algorithms: unknown algorithm 'adaround' (supported: cle, cle-activations)" in err


def _bad_list(tmp_path, kind):
    model = small_cnn()
    lst = write_input_list(tmp_path / "data", samples(model, 2))
    if kind == "empty":
        lst.write_text("# nothing\n\n")
    elif kind == "size":
        (lst.parent / "x_1.raw").write_bytes(b"\0" * 10)
    elif kind == "missing":
        lst.write_text("x_0.raw\nnope.raw\n")
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    return path, lst


@pytest.mark.parametrize("extra, message", [
    (["--act_bw", "3"],
     "--act_bw: unsupported activation integer bitwidth 3 (supported: 4, 8, 16)"),
    (["--weight_bw", "64"], "--weight_bw: unsupported weight integer bitwidth 64"),
    (["--bias_bw", "4"], "--bias_bw: unsupported bias integer bitwidth 4"),
    (["--act_quantizer_calibration", "percentile", "--percentile_calibration_value", "85"],
     "--percentile_calibration_value: percentile 85.0 is outside [90, 100]"),
    (["--act_quantizer_calibration", "mse", "--percentile_calibration_value", "99"],
     "needs --act_quantizer_calibration percentile"),
    (["--act_quantizer_calibration", "bogus"], "unknown calibration 'bogus'"),
    (["--act_quantizer", "fancy"], "--act_quantizer: unknown quantizer 'fancy'"),
    (["--act_quantizer", "enhanced", "--act_quantizer_calibration", "mse"],
     "enhanced chooses its own range"),
    (["--pack_4_bit_weights"], "--pack_4_bit_weights: --pack_4_bit_weights packs 4-bit weights"),
    (["--float_bw", "16"], "--float_bw: --float_bw sets the precision"),
    (["--act_quantizer_calibration", "min-max", "--num_histogram_bins", "64"],
     "only matters for histogram calibrations"),
])
def test_flag_errors(tmp_path, capsys, extra, message):
    model, lst = _bad_list(tmp_path, None)
    out = tmp_path / "q.onnx"
    code, _, err = _run(["--input_model", model, "--input_list", lst, "--output_model", out,
                         *extra], capsys)
    assert code == 2, err
    assert message in err and err.count("\n") == 1, err
    assert not out.exists()


@pytest.mark.parametrize("kind, message", [
    ("empty", "list.txt: input list has no samples"),
    ("size", "list.txt: line 2: '{folder}/x_1.raw' has 10 bytes; input 'x' (float32, "
             "[1, 3, 8, 8]) needs 768"),
    ("missing", "list.txt: line 2: data file 'nope.raw' not found"),
])
def test_input_list_errors(tmp_path, capsys, kind, message):
    model, lst = _bad_list(tmp_path, kind)
    out = tmp_path / "q.onnx"
    code, _, err = _run(["--input_model", model, "--input_list", lst, "--output_model", out],
                        capsys)
    assert code == 2
    assert message.format(folder=lst.parent) in err and err.count("\n") == 1, err
    assert not out.exists() and not list(tmp_path.glob(".q.onnx*"))


def test_override_and_usage_errors(tmp_path, capsys):
    model, lst = _bad_list(tmp_path, None)
    out = tmp_path / "q.onnx"
    base = ["--input_model", model, "--input_list", lst, "--output_model", out]
    ov = tmp_path / "ov.json"
    ov.write_text(json.dumps({"activation_encodings": {"nope": [{"bitwidth": 8}]},
                              "param_encodings": {}}))
    code, _, err = _run(base + ["--quantization_overrides", ov], capsys)
    assert code == 2 and f"{ov}: tensor 'nope': tensor 'nope' is not in the graph" in err
    chan = [{"bitwidth": 8, "is_symmetric": "True", "min": -1.0, "max": 1.0}] * 5
    ov.write_text(json.dumps({"activation_encodings": {}, "param_encodings": {"w2": chan}}))
    code, _, err = _run(base + ["--quantization_overrides", ov], capsys)
    assert code == 2 and "tensor 'w2': per-channel encoding has 5 entries but the tensor has " \
                         "8 channels" in err
    ov.write_text(json.dumps({"activation_encodings": {"r1": [{"bitwidth": 64}]},
                              "param_encodings": {}}))
    code, _, err = _run(base + ["--quantization_overrides", ov], capsys)
    assert code == 2 and "unsupported integer bitwidth 64" in err
    code, _, err = _run(["--input_model", model, "--output_model", out], capsys)
    assert code == 2 and "nothing to quantize with" in err
    code, _, err = _run(["--input_model", model, "--input_list", lst], capsys)
    assert code == 2 and "--output_model is required" in err
    code, _, err = _run(base + ["--input_dim", "x"], capsys)
    assert code == 2 and "--input_dim takes two values" in err
    code, _, err = _run(base + ["--input_dim", "x", "1,3,9,9"], capsys)
    assert code == 2 and "input 'x' dimension 2 is fixed at 8, not 9" in err
    sym = tmp_path / "sym.onnx"
    onnx.save(small_cnn(batch="N"), sym)
    code, _, err = _run(["--input_model", sym, "--input_list", lst, "--output_model", out],
                        capsys)
    assert code == 2 and "symbolic shape" in err and "--input_dim" in err
    assert not out.exists()
    assert _run(["--help"], capsys)[0] == 0
