"""AMP (``aicc.quant.amp``, ``aicc quantize --auto_precision`` / ``--apply_algorithms amp``): the
search finds the cheapest point of its path that meets the target with every algorithm, phase 1 is
cached, the chosen model meets its target, and the node-precision + encodings files make ``aicc
compile`` reproduce the choice on the cpu and interpreter backends."""

from __future__ import annotations

import json
import math
import textwrap

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml

import aicc
from aicc.cli import main
from aicc.errors import ConfigError
from aicc.quant.amp import SEARCH_ALGOS, Candidate, front_table, parse_candidates, run_amp

from quant_builders import DIGITS, DIGITS_LABELS, DIGITS_LIST, DIGITS_TEST

DIM = ["--input_dim", "image", "1,1,8,8"]
HI, LO = Candidate(16, "float", 16, "float"), Candidate(8, "int", 8, "int")
GROUPS = ["a", "b", "c", "d", "e"]
HARM = {"a": 0.5, "b": 4.0, "c": 1.0, "d": 0.1, "e": 2.0}     # metric lost when lowered


def _metric(calls):
    def evaluate(choice):
        calls.append(dict(choice))
        return 10.0 - sum(HARM[g] for g, c in choice.items() if c == LO)
    return evaluate


@pytest.mark.parametrize("algo", SEARCH_ALGOS)
@pytest.mark.parametrize("reverse", [False, True])
def test_every_search_finds_the_cheapest_point_meeting_the_target(algo, reverse):
    calls = []
    macs = {g: 100 for g in GROUPS}
    res = run_amp(_metric(calls), _metric(calls), groups=GROUPS, macs=macs,
                  candidates=[HI, LO], target=8.3, baseline=10.0, algo=algo, reverse=reverse)
    lowered = {g for g, c in res.choice.items() if c == LO}
    assert lowered == {"a", "c", "d"}                      # 10 - 1.6 = 8.4 >= 8.3; +e fails
    assert res.met and res.metric == pytest.approx(8.4)
    assert res.cost == pytest.approx((3 * 64 + 2 * 256) / (5 * 256))
    assert "<- chosen" in front_table(res)


def test_phase1_is_cached_unless_clean_start(tmp_path):
    cache = tmp_path / "c.json"
    kw = dict(groups=GROUPS, macs={g: 1 for g in GROUPS}, candidates=[HI, LO], target=8.3,
              baseline=10.0, cache=cache, cache_key="k")
    first, second, third = [], [], []
    run_amp(_metric(first), _metric([]), **kw)
    res = run_amp(_metric(second), _metric([]), **kw)
    assert len(first) == 5 and second == [] and res.cached
    run_amp(_metric(third), _metric([]), clean_start=True, **kw)
    assert len(third) == 5
    res = run_amp(_metric(third), _metric([]), **{**kw, "cache_key": "other"})
    assert not res.cached


@pytest.mark.parametrize("data, message", [
    ([[[8, "int"], [8, "int"]]], "at least two"),
    ([[[8, "int"], [16, "float"]], [[8, "int"], [8, "int"]]], "mixes a float"),
    ([[[8, "int"], [8, "int"]], [[8, "int"], [8, "int"]]], "listed twice"),
    ([[8, "int"]], "expected"),
])
def test_bad_candidates(data, message):
    with pytest.raises(ConfigError, match=message):
        parse_candidates(data, where="c.yaml", field="amp.candidates")


def _quantize(argv, capsys):
    code = main(["quantize", "--input_model", str(DIGITS), "--input_list", str(DIGITS_LIST),
                 *DIM, *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def _run(model_path, x):
    s = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return np.concatenate([s.run(None, {"image": x[i:i + 1]})[0] for i in range(len(x))])


def _sqnr(ref, out):
    return 10 * math.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - out) ** 2))


@pytest.fixture(scope="module")
def auto_precision(tmp_path_factory):
    folder = tmp_path_factory.mktemp("amp")
    out = folder / "q.onnx"
    code = main(["quantize", "--input_model", str(DIGITS), "--input_list", str(DIGITS_LIST),
                 *DIM, "--output_model", str(out), "--weight_bw", "4",
                 "--use_per_channel_quantization", "--auto_precision", "25"])
    assert code == 0
    return out


def test_auto_precision_meets_its_target_and_writes_the_bridge(auto_precision, capsys):
    calib = np.concatenate([np.fromfile(DIGITS_LIST.parent / f"sample_{i:02d}.raw", "<f4")
                            .reshape(1, 1, 8, 8) for i in range(32)])
    ref, got = _run(DIGITS, calib), _run(auto_precision, calib)
    assert _sqnr(ref, got) >= 25.0
    folder = auto_precision.with_name("q_amp")
    npi = yaml.safe_load((folder / "node_precision.yaml").read_text())
    assert npi["FP16NodeInstanceNames"]                      # some layers had to go fp16
    assert "point" in (folder / "pareto.txt").read_text()
    code, out, err = _quantize(["--output_model", auto_precision, "--weight_bw", "4",
                                "--use_per_channel_quantization", "--auto_precision", "25"],
                               capsys)
    assert code == 0, err
    assert "phase 1 from cache" in out and "relative bit-ops" in out
    assert (folder / "pareto.png").read_bytes()[:4] == b"\x89PNG"   # `make test` installs plot


def test_amp_with_bias_correction_says_the_bridge_drops_the_corrected_biases(tmp_path, capsys):
    """The encodings file carries no biases: the printed compile command cannot reproduce a
    bias-corrected model, and the run says so rather than imply it does."""
    code, out, err = _quantize(["--output_model", tmp_path / "q.onnx", "--weight_bw", "4",
                                "--use_per_channel_quantization", "--auto_precision", "25",
                                "--bias_correction"], capsys)
    assert code == 0, err
    assert "amp: to compile this choice: aicc compile" in out
    assert "amp: note: the encodings file carries no biases; the compiled program has the " \
           "original ones, not the bias-corrected ones of this model" in out


def test_compile_reproduces_the_amp_choice_on_cpu_and_interpreter(auto_precision, tmp_path):
    folder = auto_precision.with_name("q_amp")
    x = np.load(DIGITS_TEST)[:40]
    amp_out, ref = _run(auto_precision, x), _run(DIGITS, x)
    results = {}
    for backend in ("cpu", "interpreter"):
        qpc = tmp_path / backend
        code = main(["compile", f"-m={DIGITS}", "--input-shape=image=1,1,8,8",
                     f"-node-precision-info={folder / 'node_precision.yaml'}",
                     f"-external-quantization={folder / 'encodings.json'}",
                     f"-input-list-file={DIGITS_LIST}",
                     "-quantization-schema-activations=asymmetric", f"--backend={backend}",
                     f"-aic-binary-dir={qpc}"])
        assert code == 0
        sess = aicc.load(qpc)
        results[backend] = np.concatenate([sess.run({"image": x[i:i + 1]})["logits"]
                                           for i in range(len(x))])
    # the two backends agree to float rounding (fp16 layers, same integer grid)
    np.testing.assert_allclose(results["cpu"], results["interpreter"], atol=0.2, rtol=0)
    for out in results.values():
        # the compile flow re-calibrates the fp16 -> int8 conversions (AIMET JSON holds one
        # encoding per tensor): within 1 dB of the AMP model, same predictions
        assert abs(_sqnr(ref, out) - _sqnr(ref, amp_out)) <= 1.0
        assert (out.argmax(1) == amp_out.argmax(1)).mean() >= 0.95



def _conversion_scales(model_path):
    """Tensor -> scale of the float -> integer conversions in a QDQ model (``<t>_converted``)."""
    m = onnx.load(str(model_path))
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    consts.update({n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t)
                   for n in m.graph.node if n.op_type == "Constant"})
    return {n.input[0]: float(consts[n.input[1]]) for n in m.graph.node
            if n.op_type == "QuantizeLinear" and n.output[0].endswith("_converted_quantized")}


def test_the_printed_compile_command_calibrates_conversions_as_amp_did(tmp_path, capsys):
    """The fp16 -> integer conversions are calibrated again by ``aicc compile``; the command AMP
    prints names the quantize run's range method (here percentile 99, which clips), so they
    equal the ones AMP scored (compile's default, min/max, made them wider: PP-OCRv4 rec kept
    54 % of its strings compiled where AMP's model, calibrated with ``Auto``, kept 85 %)."""
    out = tmp_path / "q.onnx"
    code, stdout, err = _quantize(["--output_model", out, "--weight_bw", "4",
                                   "--use_per_channel_quantization", "--auto_precision", "16",
                                   "--act_quantizer_calibration", "percentile",
                                   "--percentile_calibration_value", "99"], capsys)
    assert code == 0, err
    line = next(s for s in stdout.splitlines() if s.startswith("amp: to compile this choice: "))
    cmd = line.split("choice: ", 1)[1].split()
    assert cmd[:3] == ["aicc", "compile", "-m=MODEL"]
    assert "-quantization-calibration=Percentile" in cmd
    assert "-percentile-calibration-value=99" in cmd
    qpc = tmp_path / "qpc"
    assert main(["compile", f"-m={DIGITS}", *cmd[3:], "--backend=interpreter",
                 f"-aic-binary-dir={qpc}"]) == 0
    amp = _conversion_scales(out)
    assert amp                                   # the choice has fp16 -> int8 boundaries
    manifest = json.loads((qpc / "manifest.json").read_text())
    compiled = manifest["program"]["encodings"]["conversions"]
    for name, scale in amp.items():
        assert compiled[name]["scale"] == pytest.approx(scale, rel=1e-3), name



def test_amp_with_the_enhanced_quantizer_says_compile_calibrates_with_its_own_method(tmp_path,
                                                                                   capsys):
    """compile has no 'enhanced' range method: the printed command cannot reproduce the
    conversions exactly, and the report says so instead of implying it does."""
    out = tmp_path / "q.onnx"
    code, stdout, err = _quantize(["--output_model", out, "--weight_bw", "4",
                                   "--use_per_channel_quantization", "--auto_precision", "16",
                                   "--act_quantizer", "enhanced"], capsys)
    assert code == 0, err
    assert "amp: note: compile has no 'enhanced' range method" in stdout

LOADERS = f'''
import numpy as np

def labeled(count=12, batch=4):
    x, y = np.load({str(DIGITS_TEST)!r}), np.load({str(DIGITS_LABELS)!r})
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, count * batch, batch)]

def accuracy(output, target):
    return [float((np.asarray(output).argmax(1) == np.asarray(target)).mean())]

def phase1(model):
    import onnx
    assert isinstance(model, onnx.ModelProto)
    return 1.0
'''


def test_amp_from_the_seed_config(tmp_path, capsys):
    (tmp_path / "loaders.py").write_text(LOADERS)
    cfg = tmp_path / "amp.yaml"
    cfg.write_text(textwrap.dedent("""
        datasets:
            labeled:
                dataloader_callback: 'loaders.py:labeled'
                dataloader_kwargs: {count: 12, batch: 4}
        amp:
            dataset: labeled
            candidates:  [[[8, 'int'], [4, 'int']], [[16, 'float'], [16, 'float']]]
            allowed_accuracy_drop: 0.02
            eval_callback_for_phase2: 'loaders.py:accuracy'
            optional_amp_args:
                clean_start: true
                use_all_amp_candidates: true
                phase2_reverse: true
                amp_search_algo: Interpolation
    """))
    out = tmp_path / "q.onnx"
    code, stdout, err = _quantize(["--output_model", out, "--weight_bw", "4",
                                   "--use_per_channel_quantization", "--apply_algorithms", "amp",
                                   "--config", cfg], capsys)
    assert code == 0, err
    assert "(float 1.0000)" in stdout or "(float 0." in stdout
    x, y = np.load(DIGITS_TEST)[:48], np.load(DIGITS_LABELS)[:48]
    float_acc = (_run(DIGITS, x).argmax(1) == y).mean()
    assert (_run(out, x).argmax(1) == y).mean() >= float_acc - 0.02


@pytest.mark.parametrize("argv, message", [
    (["--auto_precision", "-3"], "positive number of dB"),
    (["--apply_algorithms", "amp"], "needs --config"),
    (["--auto_precision", "20", "--quantization_overrides", "{enc}"], "cannot be combined"),
])
def test_bad_amp_flags(tmp_path, capsys, argv, message):
    enc = tmp_path / "enc.json"
    enc.write_text('{"activation_encodings": {}, "param_encodings": {}}')
    out = tmp_path / "q.onnx"
    code, _, err = _quantize(["--output_model", out, *[a.replace("{enc}", str(enc))
                                                       for a in argv]], capsys)
    assert code == 2 and message in err and not out.exists()
