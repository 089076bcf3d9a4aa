"""Flags with an explicit pipeline (issue 13 items 3 and 5): a flag configures its pass inside the
given pipeline or is refused naming the pass; the printed pipeline runs again as printed."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aicc
from aicc.cli import main
from aicc.errors import ConfigError
from aicc.options import format_value, parse_text_value
from aicc.pipeline import parse_pipeline_text

from quant_builders import DIGITS, DIGITS_LIST


def _manifest(qpc) -> dict:
    return json.loads((qpc / "manifest.json").read_text())


def _input_shape(qpc) -> list:
    return _manifest(qpc)["specializations"][0]["inputs"][0]["shape"]


def _print(argv, capsys) -> str:
    assert main(["compile", f"-m={DIGITS}", *argv, "--print-pipeline"]) == 0
    return capsys.readouterr().out.strip()


def test_symbols_configure_bind_symbols_in_the_given_pipeline(tmp_path, capsys):
    qpc = tmp_path / "q"
    assert main(["compile", f"-m={DIGITS}", "-onnx-define-symbol=batch,4", "--passes",
                 "bind-symbols,fold-constants,cleanup", f"-aic-binary-dir={qpc}",
                 "-compile-only"]) == 0
    assert _input_shape(qpc) == [4, 1, 8, 8]
    assert _manifest(qpc)["pipeline"] == "bind-symbols{symbols=[batch=4]},fold-constants,cleanup"
    qpc2 = tmp_path / "b"
    assert main(["compile", f"-m={DIGITS}", "-batchsize=3", "--passes", "bind-symbols,cleanup",
                 f"-aic-binary-dir={qpc2}", "-compile-only"]) == 0
    assert _input_shape(qpc2) == [3, 1, 8, 8]


def test_api_symbols_with_a_pipeline_list(tmp_path):
    qpc = aicc.compile(DIGITS, symbols={"batch": 4}, output=tmp_path / "q",
                       pipeline=["bind-symbols", "fold-constants", "cleanup"])
    assert _input_shape(qpc) == [4, 1, 8, 8]
    with pytest.raises(ConfigError, match=r"add bind-symbols\{symbols=\[batch=4\]\}"):
        aicc.compile(DIGITS, symbols={"batch": 4}, output=tmp_path / "r",
                     pipeline=["fold-constants"])


def test_flags_without_their_pass_are_refused_naming_it(tmp_path, capsys):
    code = main(["compile", f"-m={DIGITS}", "-onnx-define-symbol=batch,4", "--passes",
                 "fold-constants,cleanup", f"-aic-binary-dir={tmp_path / 'q'}"])
    err = capsys.readouterr().err
    assert code == 2 and "add bind-symbols{symbols=[batch=4]} to the pipeline" in err
    assert not (tmp_path / "q").exists()
    code = main(["compile", f"-m={DIGITS}", "-convert-to-fp16", "--passes", "fold-constants"])
    assert code == 2 and "add convert-fp16{all=true}" in capsys.readouterr().err


def test_conflicts_and_ambiguity_are_refused(capsys):
    code = main(["compile", f"-m={DIGITS}", "-onnx-define-symbol=batch,4", "--passes",
                 "bind-symbols{symbols=[batch=2]},cleanup", "--print-pipeline"])
    assert code == 2 and "is [batch=2] in the pipeline but [batch=4]" in capsys.readouterr().err
    # the same value in both places is not a conflict
    assert _print(["-onnx-define-symbol=batch,4", "--passes",
                   "bind-symbols{symbols=[batch=4]},cleanup"], capsys) == \
        "bind-symbols{symbols=[batch=4]},cleanup"
    code = main(["compile", f"-m={DIGITS}", "-convert-to-fp16", "--passes",
                 "convert-fp16,cleanup,convert-fp16", "--print-pipeline"])
    assert code == 2 and "2 times" in capsys.readouterr().err


def test_feature_flags_configure_their_pass_in_the_pipeline(capsys):
    text = _print(["-onnx-define-symbol=batch,1", "-convert-to-fp16", "--passes",
                   "bind-symbols,convert-fp16,fold-constants,cleanup"], capsys)
    assert text == ("bind-symbols{symbols=[batch=1]},convert-fp16{all=true},fold-constants,"
                    "cleanup")


@pytest.mark.parametrize("flags", [
    ["-onnx-define-symbol=batch,1"],
    ["-onnx-define-symbol=batch=2", "-convert-to-fp16"],
    ["-batchsize=3"],
    ["-onnx-define-symbol=batch,1", f"-input-list-file={DIGITS_LIST}", "-convert-to-quantize",
     "-quantization-calibration=Percentile", "-percentile-calibration-value=99.9",
     "-enable-channelwise"],
])
def test_print_pipeline_runs_again_as_printed(flags, capsys):
    printed = _print(flags, capsys)
    assert _print(["--passes", printed], capsys) == printed


def test_manifest_pipeline_compiles_again(tmp_path, capsys):
    odd = tmp_path / "a dir with {odd} [chars]"
    odd.mkdir()
    profile = odd / "p q.yaml"
    assert main(["compile", f"-m={DIGITS}", "-onnx-define-symbol=batch,1",
                 f"-input-list-file={DIGITS_LIST}", f"-dump-profile={profile}"]) == 0
    first = tmp_path / "one"
    assert main(["compile", f"-m={DIGITS}", "-onnx-define-symbol=batch,1",
                 f"-load-profile={profile}", f"-aic-binary-dir={first}", "-compile-only"]) == 0
    text = _manifest(first)["pipeline"]
    assert str(profile) in json.dumps(parse_pipeline_text(text))
    second = tmp_path / "two"
    assert main(["compile", f"-m={DIGITS}", "--passes", text, f"-aic-binary-dir={second}",
                 "-compile-only"]) == 0
    assert _manifest(second)["pipeline"] == text
    assert _manifest(second)["program"]["encodings"]["activations"] == \
        _manifest(first)["program"]["encodings"]["activations"]
    capsys.readouterr()


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.lists(st.text(), max_size=4), st.integers(), st.booleans()))
def test_option_text_round_trips(value):
    assert parse_text_value(format_value(value)) == value
    body = f"x={format_value(value)} y=1"
    (entry,) = parse_pipeline_text(f"pass-a{{{body}}}")
    assert entry["options"] == {"x": value, "y": 1}
