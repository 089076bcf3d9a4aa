"""The seeds' own commands (issue 13 item 6): mixed precision with -keep-original-precision-for-
nodes, -input-list-file with -load-profile, and the QAIRT quantizer's float fallback."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import aicc
from aicc.cli import main

from quant_builders import DIGITS, DIGITS_LABELS, DIGITS_LIST, DIGITS_TEST

SYM = "-onnx-define-symbol=batch,1"


def _run(argv, capsys):
    code = main([*map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def npi(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seed")
    path = folder / "node_precision.yaml"
    path.write_text("FP16NodeInstanceNames: [pw2, bn4, relu4]\n")
    profile = folder / "pgq.yaml"
    # mixed-precision seed, step 1
    assert main(["compile", f"-m={DIGITS}", SYM, f"-input-list-file={DIGITS_LIST}",
                 f"-node-precision-info={path}", f"-dump-profile={profile}"]) == 0
    return path, profile


def _accuracy(qpc, backend):
    x, y = np.load(DIGITS_TEST), np.load(DIGITS_LABELS)
    s = aicc.load(qpc, backend=backend)
    logits = np.concatenate([s.run({"image": x[i:i + 1]})["logits"] for i in range(0, 360, 4)])
    return float((logits.argmax(1) == y[::4]).mean() * 100)


def test_mixed_precision_seed_with_keep_original_precision(npi, tmp_path, capsys):
    path, profile = npi
    qpc = tmp_path / "mixed"
    # step 2 verbatim, plus -keep-original-precision-for-nodes (fp32 / fp16 / int8 together)
    code, out, err = _run(["compile", f"-m={DIGITS}", SYM, f"-input-list-file={DIGITS_LIST}",
                           f"-node-precision-info={path}", f"-load-profile={profile}",
                           "-keep-original-precision-for-nodes=Gemm",
                           f"-aic-binary-dir={qpc}"], capsys)
    assert code == 0, err
    meta = json.loads((qpc / "manifest.json").read_text())["program"]
    assert meta["encodings"]["float_ops"] == {"fc": 32}
    assert meta["node_precision"]["pw2"] == "float16" and meta["node_precision"]["fc"] == "original"
    assert "fc.weight" not in meta["encodings"]["params"]
    assert abs(_accuracy(qpc, "cpu") - _accuracy(qpc, "interpreter")) <= 1.2
    assert _accuracy(qpc, "interpreter") >= 95


def test_keep_original_precision_with_pgq_only(npi, tmp_path, capsys):
    _, profile = npi
    qpc = tmp_path / "keep"
    code, _, err = _run(["compile", f"-m={DIGITS}", SYM, f"-load-profile={profile}",
                         "-keep-original-precision-for-nodes=Gemm", f"-aic-binary-dir={qpc}",
                         "-compile-only", f"-node-precision-info={npi[0]}"], capsys)
    assert code == 0, err
    code, _, err = _run(["compile", f"-m={DIGITS}", SYM, "-keep-original-precision-for-nodes=Gemm"],
                        capsys)
    assert code == 2 and "nothing is lowered" in err and "has not landed" not in err
    code, _, err = _run(["compile", f"-m={DIGITS}", SYM, f"-load-profile={npi[1]}",
                         f"-node-precision-info={npi[0]}",
                         "-keep-original-precision-for-nodes=LSTM", "-compile-only",
                         f"-aic-binary-dir={tmp_path / 'x'}"], capsys)
    assert code == 2 and "no LSTM node" in err


def test_input_list_with_load_profile_runs_the_listed_inputs(tmp_path, capsys):
    profile = tmp_path / "pgq.yaml"
    assert main(["compile", f"-m={DIGITS}", SYM, f"-input-list-file={DIGITS_LIST}",
                 f"-dump-profile={profile}"]) == 0
    capsys.readouterr()
    code, out, err = _run(["compile", f"-m={DIGITS}", SYM, f"-input-list-file={DIGITS_LIST}",
                           f"-load-profile={profile}", f"-aic-binary-dir={tmp_path / 'q'}"],
                          capsys)
    assert code == 0, err
    runs = [line for line in out.splitlines() if line.startswith("ran graph")]
    assert len(runs) == 32 and f"sample 32 of {DIGITS_LIST}" in runs[-1]
    assert "random data" not in out
    code, _, err = _run(["compile", f"-m={DIGITS}", SYM, f"-input-list-file={DIGITS_LIST}",
                         f"-load-profile={profile}", f"-aic-binary-dir={tmp_path / 'r'}",
                         "-compile-only"], capsys)
    assert code == 2 and "-compile-only runs nothing" in err


@pytest.fixture()
def partial(tmp_path):
    path = tmp_path / "partial.json"
    path.write_text(json.dumps({
        "activation_encodings": {"relu4": [{"bitwidth": 8, "min": 0.0, "max": 6.0}],
                                 "flatten": [{"bitwidth": 8, "min": 0.0, "max": 3.2}]},
        "param_encodings": {"fc.weight": [{"bitwidth": 8, "min": -1.0, "max": 1.0}]}}))
    return path


def test_float_fallback_quantizes_only_what_the_overrides_cover(partial, tmp_path, capsys):
    out = tmp_path / "ff.onnx"
    base = ["quantize", "--input_model", DIGITS, "--input_dim", "image", "1,1,8,8",
            "--quantization_overrides", partial]
    code, stdout, err = _run([*base, "--output_model", out], capsys)
    assert code == 2 and "--enable_float_fallback" in err    # partial, no data: says how
    code, stdout, err = _run([*base, "--enable_float_fallback", "--output_model", out], capsys)
    assert code == 0, err
    assert "tensors left in float" in stdout
    model = onnx.load(out)
    quantized = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert quantized == {"relu4", "gap", "flatten"}      # gap shares flatten's encoding
    assert not any(n.op_type == "DequantizeLinear" and n.input[0].startswith("conv0")
                   for n in model.graph.node)
    x, y = np.load(DIGITS_TEST), np.load(DIGITS_LABELS)
    session = ort.InferenceSession(str(out))
    pred = [session.run(None, {"image": x[i:i + 1]})[0].argmax() for i in range(0, 360, 3)]
    assert np.mean(np.array(pred) == y[::3]) >= 0.95
    code, _, err = _run([*base, "--enable_float_fallback", "--input_list", DIGITS_LIST,
                         "--output_model", out], capsys)
    assert code == 2 and "exclude each other" in err
    code, _, err = _run(["quantize", "--input_model", DIGITS, "--enable_float_fallback",
                         "--output_model", out], capsys)
    assert code == 2 and "no overrides file" in err


def test_ignore_quantization_overrides(partial, tmp_path, capsys):
    base = ["quantize", "--input_model", DIGITS, "--input_dim", "image", "1,1,8,8",
            "--input_list", DIGITS_LIST]
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    assert _run([*base, "--output_model", a], capsys)[0] == 0
    assert _run([*base, "--ignore_quantization_overrides", "--output_model", b], capsys)[0] == 0
    assert a.read_bytes() == b.read_bytes()
    code, _, err = _run([*base, "--ignore_quantization_overrides", "--quantization_overrides",
                         partial, "--output_model", b], capsys)
    assert code == 2 and "both given" in err


@pytest.mark.parametrize("flags", [
    [], ["--use_per_channel_quantization"], ["--act_bw", "16"], ["--weight_bw", "4"],
    ["--weight_bw", "4", "--pack_4_bit_weights"], ["--act_bw", "4"], ["--bias_bw", "32"],
    ["--act_bw", "16", "--weight_bw", "16"], ["--act_quantizer", "enhanced"],
    ["--algorithms", "cle", "--use_per_channel_quantization"],
])
def test_every_quantize_output_loads_in_onnxruntime_or_says_why(flags, tmp_path, capsys):
    """Issue 13 item 7: each kind of output loads with onnxruntime's default settings, or the
    command warns naming the reason and the way to load it (which then works)."""
    out = tmp_path / "q.onnx"
    code, _, err = _run(["quantize", "--input_model", DIGITS, "--input_dim", "image", "1,1,8,8",
                         "--input_list", DIGITS_LIST, *flags, "--output_model", out], capsys)
    assert code == 0, err
    x = np.load(DIGITS_TEST)[:1]
    try:
        session = ort.InferenceSession(str(out))
    except Exception:  # noqa: BLE001
        assert "warning:" in err and "ORT_ENABLE_BASIC" in err, err
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        session = ort.InferenceSession(str(out), so)
    else:
        assert "warning" not in err, err
    assert session.run(None, {"image": x})[0].shape == (1, 10)


def test_keep_original_precision_with_node_precision_info_only(npi, tmp_path, capsys):
    """The mixed-precision seed's FP32/FP16 mix: named instances in fp16, kept types recorded
    as original; an op type both kept and sent to fp16 is refused."""
    qpc = tmp_path / "fp16mix"
    code, _, err = _run(["compile", f"-m={DIGITS}", SYM, f"-node-precision-info={npi[0]}",
                         "-keep-original-precision-for-nodes=Gemm", f"-aic-binary-dir={qpc}",
                         "-compile-only"], capsys)
    assert code == 0, err
    meta = json.loads((qpc / "manifest.json").read_text())["program"]
    assert meta["node_precision"] == {"pw2": "float16", "bn4": "float16", "relu4": "float16",
                                      "fc": "original"}
    code, _, err = _run(["compile", f"-m={DIGITS}", SYM, "-execute-nodes-in-fp16=Gemm",
                         "-keep-original-precision-for-nodes=Gemm", "-compile-only",
                         f"-aic-binary-dir={tmp_path / 'y'}"], capsys)
    assert code == 2 and "both kept in its original precision and run in fp16" in err


def test_custom_io_seed_profile_load_step_verbatim(tmp_path, capsys, monkeypatch):
    """The custom-I/O seed's PGQ steps: profile dumped and loaded with int8 NHWC inputs; the
    load step (-input-list-file with -load-profile) runs the program on the listed files."""
    x = np.load(DIGITS_TEST)[:4]
    lo, hi = float(x.min()), float(x.max())
    scale = (hi - lo) / 255
    offset = int(round(-128 - lo / scale))
    (tmp_path / "custom_IO_config.yaml").write_text(
        f"- IOName: image\n  Layout: NHWC\n  Precision: int8\n  Scale: {scale!r}\n"
        f"  Offset: {offset}\n")
    q = np.clip(np.rint(x / np.float32(scale)) + offset, -128, 127).astype(np.int8)
    for i, sample in enumerate(q.transpose(0, 2, 3, 1)):
        sample[None].tofile(tmp_path / f"s{i}.raw")
    (tmp_path / "list.txt").write_text("".join(f"s{i}.raw\n" for i in range(4)))
    monkeypatch.chdir(tmp_path)
    common = [f"-m={DIGITS}", SYM, "-input-list-file=list.txt",
              "-custom-IO-list-file=custom_IO_config.yaml"]
    code, _, err = _run(["compile", *common, "-dump-profile=pgq_profile_custom_IO.yaml"], capsys)
    assert code == 0, err
    code, out, err = _run(["compile", *common, "-load-profile=pgq_profile_custom_IO.yaml",
                           "-quantization-schema-activations=asymmetric",
                           "-quantization-calibration=None",
                           "-quantization-schema-constants=symmetric"], capsys)
    assert code == 0, err
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("ran")] == \
        [f"ran graph 'default' once on sample {i} of list.txt" for i in range(1, 5)]
