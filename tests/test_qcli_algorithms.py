"""``aicc quantize --apply_algorithms/--config/--use_aimet_quantizer``: the seed's three YAML
templates parsed key by key; AdaRound run from a config dataset (callbacks as file paths or
module paths) or from the input list; every bad config refused with exit 2 naming file and key."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import onnx
import pytest

from aicc.cli import main
from aicc.errors import ConfigError
from aicc.quant.algo_config import load_algorithm_config

from quant_builders import DIGITS, DIGITS_LIST, DIGITS_TEST

DIM = ["--input_dim", "image", "1,1,8,8"]
LOADERS = f'''
import numpy as np

def digits(count=4, batch=1, shape=None):
    x = np.load({str(DIGITS_TEST)!r})
    if shape is not None:
        return [np.zeros(shape, np.float32)]
    return [x[i:i + batch] for i in range(0, count * batch, batch)]

def empty():
    return []

def broken():
    raise RuntimeError("no data today")
'''


@pytest.fixture()
def loaders(tmp_path):
    (tmp_path / "loaders.py").write_text(LOADERS)
    return tmp_path


def _config(folder, text):
    path = folder / "algo.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def _quantize(argv, capsys, out):
    code = main(["quantize", "--input_model", str(DIGITS), "--input_list", str(DIGITS_LIST),
                 *DIM, "--output_model", str(out), *map(str, argv)])
    stdout, err = capsys.readouterr()
    return code, stdout, err


ADAROUND = """
datasets:
    calib:
        dataloader_callback: 'loaders.py:digits'
        dataloader_kwargs: {count: 3, batch: 2}
adaround:
    dataset: calib
    num_batches: 2
    optional_adaround_args:
        default_param_bw: 4
        default_quant_scheme: post_training_tf
        default_num_iterations: 100
        default_reg_param: 3.0
        default_beta_range: [20, 2]
        default_warm_start: 0.2
"""

AMP = """
datasets:
    labeled:
        dataloader_callback: 'loaders.py:digits'
        dataloader_kwargs: {count: 2}
amp:
    dataset: labeled
    candidates:  [[[8, 'int'], [16, 'int']], [[16, 'float'], [16, 'float']]]
    allowed_accuracy_drop: 0.02
    eval_callback_for_phase2: 'loaders.py:digits'
    optional_amp_args:
        eval_callback_for_phase1: 'mypkg.metrics.phase1'
        clean_start: true
        forward_pass_callback: 'mypkg.metrics.forward'
        use_all_amp_candidates: false
        phase2_reverse: false
        amp_search_algo: Binary
"""

AUTOQUANT = """
datasets:
    unlabeled:
        dataloader_callback: 'loaders.py:digits'
        dataloader_kwargs: {count: 2}
    evalset:
        dataloader_callback: 'loaders.py:digits'
        dataloader_kwargs: {count: 2}
autoquant:
    dataset: unlabeled
    eval_callback: "qti.aisw.converters.aimet.aimet_utils.accuracy"
    eval_dataset: evalset
    allowed_accuracy_drop: 0.07
    amp_candidates: [[[16,'int'],[16,'int']], [[16,'int'],[8,'int']], [[8,'int'],[16,'int']], [[8,'int'],[8,'int']]]
    optional_autoquant_args: {param_bw: 8, output_bw: 8, quant_scheme: post_training_tf,
                              rounding_mode: nearest, config_file: cfg.json, cache_id: run1,
                              strict_validation: true}
    optional_amp_args: {num_samples_for_phase_1: 4, forward_fn: 'mypkg.f.forward',
                        num_samples_for_phase_2: 8}
    optional_adaround_args: {num_batches: 2, default_param_bw: 8}
"""


@pytest.mark.parametrize("text, section, checks", [
    (ADAROUND, "adaround", {"num_batches": 2, "dataset": "calib"}),
    (AMP, "amp", {"allowed_accuracy_drop": 0.02, "dataset": "labeled"}),
    (AUTOQUANT, "autoquant", {"allowed_accuracy_drop": 0.07, "eval_dataset": "evalset"}),
])
def test_the_seed_templates_parse_with_every_key(tmp_path, text, section, checks):
    cfg = load_algorithm_config(_config(tmp_path, text))
    sec = cfg.section(section)
    for key, value in checks.items():
        assert sec[key] == value
    if section == "amp":
        assert sec["optional_amp_args"]["amp_search_algo"] == "Binary"
        assert sec["candidates"][1] == [[16, "float"], [16, "float"]]
    if section == "autoquant":
        assert sec["optional_autoquant_args"]["cache_id"] == "run1"
        assert sec["optional_amp_args"]["num_samples_for_phase_2"] == 8
        assert len(sec["amp_candidates"]) == 4
    if section == "adaround":
        assert sec["optional_adaround_args"]["default_beta_range"] == [20, 2]
        assert cfg.datasets["calib"]["dataloader_kwargs"] == {"count": 3, "batch": 2}


def test_adaround_from_a_config_dataset(loaders, capsys):
    out = loaders / "q.onnx"
    code, stdout, err = _quantize(["--use_per_channel_quantization", "--apply_algorithms",
                                   "adaround", "--config", _config(loaders, ADAROUND),
                                   "--use_aimet_quantizer"], capsys, out)
    assert code == 0, err
    assert stdout.count("aicc is the quantizer") == 1
    assert "adaround: 6 layers" in stdout
    model = onnx.load(out)
    w = next(i for i in model.graph.initializer if i.name == "pw1_bnfold_w_quantized")
    assert w.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4,
                           onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    q = onnx.numpy_helper.to_array(w).astype(int)
    assert q.max() - q.min() <= 15                           # default_param_bw: 4 reached it


def test_adaround_default_mode_and_module_callbacks(loaders, capsys, monkeypatch):
    out = loaders / "q.onnx"
    code, stdout, err = _quantize(["--apply_algorithms", "adaround"], capsys, out)
    assert code == 0 and "adaround: 6 layers" in stdout, err
    monkeypatch.syspath_prepend(str(loaders))
    text = ADAROUND.replace("'loaders.py:digits'", "'loaders.digits'")
    code, stdout, err = _quantize(["--apply_algorithms", "adaround", "--config",
                                   _config(loaders, text)], capsys, out)
    assert code == 0 and "adaround: 6 layers" in stdout, err
    sys.modules.pop("loaders", None)


BAD = [
    ("adaround:\n  dataset: calib\n  num_batchs: 1\n", "adaround.num_batchs",
     "did you mean 'num_batches'"),
    ("adarond:\n  dataset: calib\n", "adarond", "did you mean 'adaround'"),
    ("datasets:\n  c: {dataloader_callback: 'loaders.py:digits'}\n"
     "adaround: {dataset: c, num_batches: '1'}\n", "adaround.num_batches", "expected an integer"),
    ("datasets:\n  c: {dataloader_callback: 'loaders.py:digits'}\n"
     "adaround: {dataset: c, num_batches: 0}\n", "adaround.num_batches", "at least 1"),
    ("datasets:\n  c: {dataloader_callback: 'loaders.py:digits'}\n"
     "adaround: {dataset: d, num_batches: 1}\n", "adaround.dataset", "not defined"),
    ("datasets:\n  c: {dataloader_callback: 'loaders.py:digits'}\n"
     "adaround: {dataset: c}\n", "adaround.num_batches", "required"),
    ("datasets:\n  c: {dataloader_kwargs: {}}\n", "datasets.c.dataloader_callback", "required"),
    ("datasets:\n  c: {dataloader_callback: 'not a path'}\n", "datasets.c.dataloader_callback",
     "import path"),
    ("datasets:\n  c: {dataloader_callback: 'loaders.py:digits'}\n"
     "adaround: {dataset: c, num_batches: 1}\nadaround: {dataset: c, num_batches: 2}\n",
     "line", "duplicate key"),
    ("a: &x [1]\nb: *x\n", "line", "aliases"),
    ("adaround: !!python/object/apply:os.system ['true']\n", "", "tag"),
    ("datasets:\n  c: {dataloader_callback: 'loaders.py:digits'}\n"
     "amp: {dataset: c, candidates: [[[8, 'int'], [16, 'int']]], allowed_accuracy_drop: 0.02, "
     "eval_callback_for_phase2: 'm.f', optional_amp_args: {amp_search_algo: binary}}\n",
     "amp.optional_amp_args.amp_search_algo", "did you mean 'Binary'"),
    ("datasets:\n  c: {dataloader_callback: 'loaders.py:digits'}\n"
     "amp: {dataset: c, candidates: [[[3, 'int'], [16, 'int']]], allowed_accuracy_drop: 0.02, "
     "eval_callback_for_phase2: 'm.f'}\n", "amp.candidates", "expected a list"),
    ("datasets:\n  c: {dataloader_callback: 'loaders.py:digits'}\n"
     "amp: {dataset: c, candidates: [[[8, 'int'], [16, 'int']]], allowed_accuracy_drop: 2, "
     "eval_callback_for_phase2: 'm.f'}\n", "amp.allowed_accuracy_drop", "fraction"),
    ("datasets:\n  c: {dataloader_callback: 'loaders.py:digits'}\n"
     "amp: {dataset: c, candidates: [[[8, 'int'], [16, 'int']]], allowed_accuracy_drop: .nan, "
     "eval_callback_for_phase2: 'm.f'}\n", "amp.allowed_accuracy_drop", "expected a number"),
    ("datasets:\n  c: {dataloader_callback: 'loaders.py:digits'}\n"
     "autoquant: {dataset: c, eval_callback: m.f, eval_dataset: c, allowed_accuracy_drop: 0.1, "
     "amp_candidates: [[[8, 'int'], [8, 'int']]], optional_autoquant_args: "
     "{strict_validation: no}}\n", "optional_autoquant_args.strict_validation", "true or false"),
    ("---\na: 1\n---\nb: 2\n", "", "2 YAML documents"),
    ("[1, 2]\n", "", "expected a mapping"),
]


@pytest.mark.parametrize("text, field, message", BAD)
def test_bad_configs_are_refused_naming_file_and_key(loaders, text, field, message):
    path = _config(loaders, text)
    with pytest.raises(ConfigError) as e:
        load_algorithm_config(path)
    assert str(path) in str(e.value) and field in str(e.value) and message in str(e.value)


def test_empty_and_non_utf8_configs(loaders):
    for data, message in ((b"", "empty"), (b"\xff\xfe: 1\n", "not UTF-8")):
        path = loaders / "algo.yaml"
        path.write_bytes(data)
        with pytest.raises(ConfigError, match=message):
            load_algorithm_config(path)


CLI_BAD = [
    (["--apply_algorithms", "adaroud"], "did you mean 'adaround'"),
    (["--apply_algorithms", "autoquant"], "needs --config"),
    (["--config", "{cfg}"], "--config configures --apply_algorithms"),
    (["--auto_precision", "20", "--dask", "local"], "AMP and AutoQuant re-quantize many"),
    (["--apply_algorithms", "adaround", "--config", "{cfg}", "--weight_bw", "8"],
     "default_param_bw: 4 contradicts --weight_bw 8"),
]


@pytest.mark.parametrize("argv, message", CLI_BAD)
def test_bad_algorithm_flags_exit_2(loaders, capsys, argv, message):
    cfg = _config(loaders, ADAROUND)
    out = loaders / "q.onnx"
    code, _, err = _quantize([a.replace("{cfg}", str(cfg)) for a in argv], capsys, out)
    assert code == 2 and message in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("dataset, kwargs, key, message", [
    ("'loaders.py:nothing'", "{}", "datasets.calib.dataloader_callback", "no function 'nothing'"),
    ("'missing.py:digits'", "{}", "datasets.calib.dataloader_callback", "not found"),
    ("'no_such_module_xyz.digits'", "{}", "datasets.calib.dataloader_callback",
     "cannot import callback"),
    ("'loaders.py:broken'", "{}", "datasets.calib.dataloader_callback", "no data today"),
    ("'loaders.py:empty'", "{}", "datasets.calib.dataloader_callback", "no samples"),
    ("'loaders.py:digits'", "{shape: [1, 3, 8, 8]}", "datasets.calib.dataloader_callback",
     "sample of shape [1, 3, 8, 8], the model takes [1, 1, 8, 8]"),
    ("'loaders.py:digits'", "{bogus: 1}", "datasets.calib.dataloader_callback",
     "unexpected keyword"),
])
def test_bad_loaders_exit_2_naming_file_and_key(loaders, capsys, dataset, kwargs, key, message):
    text = (f"datasets:\n  calib: {{dataloader_callback: {dataset}, dataloader_kwargs: {kwargs}}}\n"
            "adaround: {dataset: calib, num_batches: 1}\n")
    cfg = _config(loaders, text)
    out = loaders / "q.onnx"
    code, _, err = _quantize(["--apply_algorithms", "adaround", "--config", cfg], capsys, out)
    assert code == 2, err
    assert str(cfg) in err and key in err and message in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("key, value", [("param_bw_override_list", "[[conv0, 4]]"),
                                        ("ignore_quant_ops_list", "[Relu]"),
                                        ("default_config_file", "x.json")])
def test_unsupported_adaround_options_are_refused(loaders, capsys, key, value):
    text = ADAROUND.replace("default_param_bw: 4", f"{key}: {value}")
    code, _, err = _quantize(["--apply_algorithms", "adaround", "--config",
                              _config(loaders, text)], capsys, loaders / "q.onnx")
    assert code == 2 and f"adaround.optional_adaround_args.{key}" in err
