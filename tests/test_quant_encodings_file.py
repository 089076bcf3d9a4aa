"""The AIMET encodings file of ``quantization.encodings`` (``-external-quantization``) is read once
per compile (#15: each input file parsed once into a typed value the passes receive), whether it
feeds ``quant-overrides``, ``int32-sandwich``, ``quantize`` or ``custom-io``; the pipeline still
prints its path and runs again as printed. The model chains two INT32 ops (Add -> Slice), whose
shared tensor the sandwich removes: ``quantize`` must not then refuse that INT32 name as missing."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import onnx
import pytest

import aicc
from aicc.cli import main
from aicc.errors import ConfigError

from quant_builders import write_input_list
from test_int32_sandwich import add_slice_model


def _encodings(tmp_path):
    """INT32 overrides for the Add/Slice pair, int8 for the output; the float inputs of the
    sandwich are calibrated (a partial override)."""
    acts = {n: [{"bitwidth": 32, "dtype": "int"}] for n in ("x", "y", "s", "z")}
    acts["out"] = [{"bitwidth": 8, "dtype": "int", "min": 0.0, "max": 5.1}]
    path = tmp_path / "enc.json"
    path.write_text(json.dumps({"version": "0.6.1", "activation_encodings": acts,
                                "param_encodings": {}}))
    return path


@pytest.fixture
def reads(monkeypatch):
    """Count how often each file is read (every aicc loader reads through Path.read_bytes)."""
    counts: dict[str, int] = {}
    original = pathlib.Path.read_bytes

    def counting(self):
        counts[self.name] = counts.get(self.name, 0) + 1
        return original(self)

    monkeypatch.setattr(pathlib.Path, "read_bytes", counting)
    return counts


def _inputs(tmp_path):
    """The model, the encodings, a custom I/O list (int8 output) and calibration samples."""
    enc = _encodings(tmp_path)
    cio = tmp_path / "io.yaml"
    cio.write_text("- IOName: out\n  Precision: int8\n")
    model = tmp_path / "m.onnx"
    model.write_bytes(add_slice_model().SerializeToString())
    rng = np.random.default_rng(0)
    feeds = [{n: rng.uniform(0, 2, (2, 6)).astype(np.float32) for n in "xy"} for _ in range(3)]
    samples = write_input_list(tmp_path / "data", feeds, named=True)
    return model, enc, cio, samples


def test_aicc_compile_reads_the_encodings_file_once(tmp_path, reads):
    model, enc, cio, samples = _inputs(tmp_path)
    out = tmp_path / "qpc"
    aicc.compile(str(model), output=str(out), quantization=dict(encodings=str(enc)),
                 custom_io=str(cio), input_list=str(samples))
    assert reads.get("enc.json") == 1
    assert reads.get("io.yaml") == 1
    session = aicc.load(out)
    meta = session.program_meta
    assert meta["node_precision"] == {"add": "int32", "slice": "int32"}
    assert meta["custom_io"][0]["dtype"] == "int8"
    x = np.full((2, 6), 1.3, np.float32)
    got = session.run({"x": x, "y": x})["out"]
    # int32 Add of 1 + 1 = 2, Slice keeps 5 columns; out as int8 with scale 5.1/255, offset -128
    scale = 5.1 / 255
    np.testing.assert_array_equal(got, np.full((2, 5), round(2.0 / scale) - 128, np.int8))


def test_pipeline_prints_the_path_and_runs_again_as_printed(tmp_path, capsys, monkeypatch,
                                                            reads):
    monkeypatch.chdir(tmp_path)
    model, enc, cio, samples = _inputs(tmp_path)
    flags = ["compile", "-m=m.onnx", "-external-quantization=enc.json", "-custom-IO-list-file="
             "io.yaml", f"-input-list-file={samples.relative_to(tmp_path)}"]
    assert main(flags + ["--print-pipeline"]) == 0
    text = capsys.readouterr().out.strip()
    for step in ("quant-overrides{file=enc.json}", "int32-sandwich{overrides=enc.json}",
                 "custom-io{config=io.yaml encodings=enc.json}"):
        assert step in text
    assert main(flags + ["-aic-binary-dir=q1", "-compile-only"]) == 0
    reads.clear()
    assert main(["compile", "-m=m.onnx", "--passes", text, "-aic-binary-dir=q2",
                 "-compile-only"]) == 0
    assert reads["enc.json"] == 1          # three passes name it: one read for the pipeline
    for a in sorted((tmp_path / "q1").rglob("*")):
        b = tmp_path / "q2" / a.relative_to(tmp_path / "q1")
        assert a.is_dir() or a.read_bytes() == b.read_bytes(), a


def test_a_bad_encodings_file_fails_before_any_work(tmp_path, capsys):
    model, enc, cio, samples = _inputs(tmp_path)
    enc.write_text('{"activation_encodings": {}, "activation_encodings": {}}')
    with pytest.raises(ConfigError, match="enc.json.*duplicate key"):
        aicc.compile(str(model), output=str(tmp_path / "q"), input_list=str(samples),
                     quantization=dict(encodings=str(enc)))
    assert not (tmp_path / "q").exists()
    # named in a pipeline: read when the pipeline is built, and the error names the file
    assert main(["compile", f"-m={model}", "--passes", f"quant-overrides{{file={enc}}}",
                 "--print-pipeline"]) == 2
    assert f"error: {enc}: " in capsys.readouterr().err


def test_aicc_quantize_reads_the_overrides_file_once(tmp_path, capsys, reads):
    model, enc, cio, samples = _inputs(tmp_path)
    out = tmp_path / "q.onnx"
    assert main(["quantize", f"--input_model={model}", f"--output_model={out}",
                 f"--input_list={samples}", f"--quantization_overrides={enc}"]) == 0, \
        capsys.readouterr().err
    assert reads.get("enc.json") == 1
    assert any(n.op_type == "Cast" for n in onnx.load(out).graph.node)   # the sandwich ran
