"""-dump-custom-IO-config-template: the template round-trips (dump, edit, apply), exits without
compiling, and fills Scale/Offset from a calibration profile."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

import aicc
from aicc.cli import main
from aicc.configfile import load_yaml
from aicc.quant import Histogram, Profile, TensorStats, dump_profile_yaml, schema_encoding
from precision_builders import save, seed_model


@pytest.fixture()
def seed_path(tmp_path):
    return save(seed_model(), tmp_path / "seed.onnx")


def test_template_lists_every_io_and_exits_without_compiling(tmp_path, seed_path, capsys):
    template = tmp_path / "custom_io.yaml"
    out = tmp_path / "never.qpc"
    assert main(["compile", f"-m={seed_path}", f"-dump-custom-IO-config-template={template}",
                 f"-aic-binary-dir={out}"]) == 0
    assert "wrote the custom I/O template" in capsys.readouterr().out
    assert not out.exists()
    text = template.read_text()
    assert text.startswith("# aicc custom I/O configuration template for seed.onnx")
    assert load_yaml(template) == [
        {"IOName": "input_0", "Layout": "NCHW", "Precision": "float"},
        {"IOName": "input_1", "Layout": "NCHW", "Precision": "float"},
        {"IOName": "input_2", "Layout": "NCHW"},          # int64: Precision cannot change
        {"IOName": "output_0", "Layout": "NCHW", "Precision": "float"},
        {"IOName": "output_1", "Precision": "float"},      # rank 2: no Layout
        {"IOName": "output_2"}]


def test_template_round_trip_dump_edit_apply(tmp_path, seed_path):
    template = tmp_path / "custom_io.yaml"
    assert main(["compile", f"-m={seed_path}",
                 f"-dump-custom-IO-config-template={template}"]) == 0
    # applied unchanged, it changes nothing
    same = tmp_path / "same.qpc"
    assert main(["compile", f"-m={seed_path}", f"-custom-IO-list-file={template}",
                 f"-aic-binary-dir={same}", "-compile-only", "-aic-preproc"]) == 0
    plain = aicc.Program.from_model(seed_model())
    session = aicc.load(same)
    assert [(d.name, d.dtype, d.shape) for d in session.inputs] == \
        [(d.name, d.dtype, d.shape) for d in plain.model_inputs]
    # edited: input_0 int8 NHWC, output_0 float16 NHWC
    entries = yaml.safe_load(template.read_text())
    entries[0].update(Layout="NHWC", Precision="int8", Scale=0.25, Offset=-2)
    entries[3].update(Layout="NHWC", Precision="float16")
    template.write_text(yaml.safe_dump(entries, sort_keys=False))
    edited = tmp_path / "edited.qpc"
    assert main(["compile", f"-m={seed_path}", f"-custom-IO-list-file={template}",
                 f"-aic-binary-dir={edited}", "-compile-only"]) == 0
    session = aicc.load(edited)
    assert (session.inputs[0].dtype, session.inputs[0].shape) == ("int8", [1, 4, 5, 3])
    assert (session.outputs[0].dtype, session.outputs[0].layout) == ("float16", "NHWC")
    feeds = {"input_0": np.full((1, 4, 5, 3), 6, np.int8),
             "input_1": np.zeros((1, 3, 4, 5), np.float32),
             "input_2": np.zeros((1, 3, 4, 5), np.int64)}
    out = session.run(feeds)
    np.testing.assert_array_equal(out["output_0"], np.full((1, 4, 5, 3), 2.0, np.float16))


def _profile(tmp_path, names_ranges):
    tensors = {}
    for name, (lo, hi) in names_ranges.items():
        values = np.linspace(lo, hi, 1000)
        tensors[name] = TensorStats(name, Histogram.from_values(values, 64), 0)
    prof = Profile("ab12", aicc.__version__, 64, tensors)
    path = tmp_path / "profile.yaml"
    path.write_text(dump_profile_yaml(prof))
    return path


def test_template_with_profile_fills_scale_and_offset(tmp_path, seed_path):
    ranges = {"input_0": (-2.0, 6.0), "input_1": (0.0, 3.0), "output_0": (0.0, 9.0),
              "output_1": (-1.0, 1.0)}
    profile = _profile(tmp_path, ranges)
    template = tmp_path / "custom_io.yaml"
    assert main(["compile", f"-m={seed_path}",
                 f"-dump-custom-IO-config-template={template},{profile}"]) == 0
    entries = {e["IOName"]: e for e in load_yaml(template)}
    for name, (lo, hi) in ranges.items():
        enc = schema_encoding("symmetric_with_uint8", lo, hi, 8).with_storage(True)
        assert entries[name]["Scale"] == pytest.approx(enc.scale)
        assert entries[name]["Offset"] == enc.zero_point
    assert entries["input_1"]["Offset"] == -128          # a uint8 grid stored as int8
    assert "Scale" not in entries["input_2"]              # int64: not quantizable
    # the filled template applies as int8 after editing the precision
    loaded = load_yaml(template)
    loaded[0]["Precision"] = "int8"
    template.write_text(yaml.safe_dump(loaded, sort_keys=False))
    assert main(["compile", f"-m={seed_path}", f"-custom-IO-list-file={template}",
                 f"-aic-binary-dir={tmp_path / 'q'}", "-compile-only"]) == 0
    assert aicc.load(tmp_path / "q").inputs[0].dtype == "int8"


def test_template_profile_must_cover_the_float_io(tmp_path, seed_path, capsys):
    profile = _profile(tmp_path, {"input_0": (-1.0, 1.0)})
    assert main(["compile", f"-m={seed_path}",
                 f"-dump-custom-IO-config-template={tmp_path / 't.yaml'},{profile}"]) == 2
    assert "the profile has no statistics for model 'input_1'" in capsys.readouterr().err
    assert not (tmp_path / "t.yaml").exists()


def test_template_profile_with_schema_and_calibration(tmp_path, seed_path):
    from aicc.features.custom_io import profile_qparams
    from aicc.quant import select_range

    profile = _profile(tmp_path, {n: (-3.0, 5.0) for n in
                                  ("input_0", "input_1", "output_0", "output_1")})
    program = aicc.Program.from_model(seed_model())
    got = profile_qparams(profile, program, schema="asymmetric", calibration="Percentile")
    from aicc.quant import parse_profile
    stats = parse_profile(load_yaml(profile), where="p")["input_0"]
    lo, hi = select_range(stats, "Percentile", symmetric=False)
    enc = schema_encoding("asymmetric", lo, hi, 8)
    assert got["input_0"] == (pytest.approx(enc.scale), enc.zero_point)
    with pytest.raises(aicc.AiccError, match="unknown quantization schema"):
        profile_qparams(profile, program, schema="symetric-ish")


@pytest.mark.parametrize("value,match", [
    ("a.yaml,b.yaml,c.yaml", "is not FILE or FILE,PROFILE"),
    ("a.yaml,", "is not FILE or FILE,PROFILE"),
    ("DIR", "is a directory"),
    ("a.yaml,MISSING", "calibration profile not found"),
])
def test_template_argument_errors(tmp_path, seed_path, capsys, value, match):
    value = value.replace("DIR", str(tmp_path)).replace("MISSING", str(tmp_path / "none.yaml"))
    value = value.replace("a.yaml", str(tmp_path / "a.yaml"))
    assert main(["compile", f"-m={seed_path}", f"-dump-custom-IO-config-template={value}"]) == 2
    assert match in capsys.readouterr().err


def test_template_refuses_flags_it_would_ignore(tmp_path, seed_path, capsys):
    assert main(["compile", f"-m={seed_path}", "-convert-to-fp16",
                 f"-dump-custom-IO-config-template={tmp_path / 't.yaml'}"]) == 2
    assert "-convert-to-fp16 would be ignored" in capsys.readouterr().err


def test_template_message_names_the_flag(tmp_path, capsys):
    from pathlib import Path
    model = Path(__file__).resolve().parent.parent / "examples" / "digits_mobilenet.onnx"
    assert main(["compile", f"-m={model}",
                 f"-dump-custom-IO-config-template={tmp_path / 't.yaml'}"]) == 0
    out = capsys.readouterr().out
    assert "edit it and compile with -custom-IO-list-file" in out and "\u2039" not in out
