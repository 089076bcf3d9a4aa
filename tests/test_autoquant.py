"""``aicc quantize --apply_algorithms autoquant``: AIMET's order (BN folding + quantization, CLE,
AdaRound, AMP) stopping at the allowed drop, each step reported; its options used or refused."""

from __future__ import annotations

import textwrap

import pytest

from aicc.cli import main

from quant_builders import DIGITS, DIGITS_LABELS, DIGITS_LIST, DIGITS_TEST

LOADERS = f'''
import numpy as np

def labeled(count=10, batch=4):
    x, y = np.load({str(DIGITS_TEST)!r}), np.load({str(DIGITS_LABELS)!r})
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, count * batch, batch)]

def unlabeled(count=4):
    x = np.load({str(DIGITS_TEST)!r})[200:]
    return [x[i:i + 1] for i in range(count)]

def accuracy(output, target):
    return float((np.asarray(output).argmax(1) == np.asarray(target)).mean())
'''

CONFIG = """
datasets:
    unlabeled: {{dataloader_callback: 'loaders.py:unlabeled', dataloader_kwargs: {{count: 4}}}}
    evalset: {{dataloader_callback: 'loaders.py:labeled', dataloader_kwargs: {{count: 10}}}}
autoquant:
    dataset: unlabeled
    eval_callback: 'loaders.py:accuracy'
    eval_dataset: evalset
    allowed_accuracy_drop: {drop}
    amp_candidates: [[[16,'float'],[16,'float']], [[8,'int'],[4,'int']]]
    optional_autoquant_args: {{param_bw: 4, strict_validation: {strict}{extra}}}
    optional_amp_args: {{num_samples_for_phase_1: 8, num_samples_for_phase_2: 10}}
    optional_adaround_args: {{num_batches: 4, default_num_iterations: 100}}
"""


def _run(tmp_path, capsys, drop, strict="true", extra="", argv=()):
    (tmp_path / "loaders.py").write_text(LOADERS)
    cfg = tmp_path / "aq.yaml"
    cfg.write_text(textwrap.dedent(CONFIG.format(drop=drop, strict=strict, extra=extra)))
    out = tmp_path / "q.onnx"
    code = main(["quantize", "--input_model", str(DIGITS), "--input_list", str(DIGITS_LIST),
                 "--input_dim", "image", "1,1,8,8", "--output_model", str(out),
                 "--use_per_channel_quantization", "--apply_algorithms", "autoquant",
                 "--config", str(cfg), *argv])
    stdout, err = capsys.readouterr()
    return code, stdout, err, out


def test_autoquant_stops_at_the_first_step_within_the_drop(tmp_path, capsys):
    code, out, err, model = _run(tmp_path, capsys, drop=0.5)
    assert code == 0, err
    assert "BN folding + quantization: metric" in out
    assert "target met after 'BN folding + quantization'" in out and "+ CLE" not in out
    assert model.is_file()


def test_autoquant_goes_through_every_step_when_needed(tmp_path, capsys):
    # 4-bit activations and no drop allowed: no step before AMP reaches the float accuracy
    # (min-max ranges and 8-bit biases: with the default auto ranges or int32 biases AdaRound
    # already reaches float accuracy)
    code, out, err, model = _run(tmp_path, capsys, drop=0.0, strict="false",
                                 extra=", output_bw: 4, cache_id: run1",
                                 argv=("--act_quantizer_calibration", "min-max",
                                       "--bias_bw", "8"))
    assert code == 0, err
    for step in ("BN folding + quantization", "+ CLE", "+ AdaRound", "+ AMP"):
        assert f"autoquant: {step}" in out
    assert (tmp_path / "q_amp" / "phase1_cache_run1.json").is_file()
    assert ("amp: chose" in out or "target NOT met; keeping the best" in out) and model.is_file()


@pytest.mark.parametrize("extra, argv, message", [
    (", rounding_mode: stochastic", (), "unknown rounding mode"),
    (", cache_id: '../x'", (), "cannot name a cache file"),
    (", config_file: q.json", (), "optional_autoquant_args.config_file"),
    ("", ("--apply_algorithms", "adaround"), "give it alone"),
    ("", ("--weight_bw", "8"), "param_bw: 4 contradicts --weight_bw 8"),
])
def test_bad_autoquant_settings(tmp_path, capsys, extra, argv, message):
    code, _, err, out = _run(tmp_path, capsys, drop=0.1, extra=extra, argv=argv)
    assert code == 2 and message in err and not out.exists()
