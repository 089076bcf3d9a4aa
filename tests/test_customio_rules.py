"""Every rule of the custom I/O file, each refused with one line naming the file and the entry;
plus what is accepted with a note (merged repeats, ignored Scale/Offset) and int8 model I/O."""

from __future__ import annotations

import numpy as np
import pytest

import aicc
from aicc.cli import main
from aicc.customio import load_custom_io, parse_custom_io
from aicc.errors import ConfigError
from aicc.testing import run_model, run_pass
from precision_builders import kv_model, qdq_io_model, seed_model

SEED = aicc.Program.from_model(seed_model())


def check(tmp_path, text, **kw):
    path = tmp_path / "custom_io.yaml"
    path.write_text(text)
    return load_custom_io(path, SEED.model_inputs, SEED.model_outputs, **kw)


@pytest.mark.parametrize("text,match", [
    # Layout: rank 4 only, NCHW or NHWC only
    ("- IOName: output_1\n  Layout: NHWC\n", "entry 1 \\(IOName 'output_1'\\): Layout applies "
     "only to rank-4 tensors; 'output_1' has rank 2"),
    ("- IOName: input_0\n  Layout: NCWH\n", "Layout 'NCWH' is not supported \\(NCHW or NHWC"),
    ("- IOName: input_0\n  Layout: nhwc\n", "Layout 'nhwc' is not supported"),
    # Precision only where the model I/O is float, float16 or int8
    ("- IOName: input_2\n  Precision: float\n", "Precision can change only for float, float16 or "
     "int8 model I/O; 'input_2' is int64"),
    ("- IOName: output_2\n  Precision: float16\n", "'output_2' is int64"),
    # int8 needs Scale and Offset
    ("- IOName: input_0\n  Precision: int8\n  Scale: 0.1\n", "int8 needs Scale and Offset; "
     "Offset missing"),
    ("- IOName: input_0\n  Precision: int8\n  Offset: 1\n", "Scale missing"),
    ("- IOName: input_0\n  Precision: int8\n", "Scale and Offset missing"),
    # refused precisions
    ("- IOName: input_0\n  Precision: uint8\n", "uint8 is not supported with custom I/O"),
    ("- IOName: input_0\n  Precision: int64\n", "int64, int32 and int16 are not supported"),
    ("- IOName: input_0\n  Precision: int32\n", "int64, int32 and int16 are not supported"),
    ("- IOName: input_0\n  Precision: int16\n", "int64, int32 and int16 are not supported"),
    ("- IOName: input_0\n  Precision: fp16\n", "'fp16' is not supported"),
    ("- IOName: input_0\n  Precision: 8\n", "Precision must be a string"),
    # names
    ("- IOName: input_9\n", "entry 1 \\(IOName 'input_9'\\): no such model input or output "
     "\\(did you mean 'input_2'\\? inputs are input_0, input_1, input_2; outputs are output_0, "
     "output_1, output_2\\)"),
    ("- IOName: 123\n", "IOName must be a non-empty string"),
    ("- Layout: NHWC\n", "entry 1: missing IOName"),
    # repeats with different settings
    ("- IOName: input_1\n  Layout: NHWC\n- IOName: input_1\n  Layout: NCHW\n",
     "entry 2 \\(IOName 'input_1'\\): 'input_1' is listed twice with different settings "
     "\\(entry 1: Layout NHWC; entry 2: Layout NCHW\\)"),
    # keys and types
    ("- IOName: input_0\n  Precison: float16\n", "unknown key 'Precison' \\(did you mean "
     "'Precision'\\?\\)"),
    ("- ioname: input_0\n", "unknown key 'ioname' \\(did you mean 'IOName'\\? keys are "
     "case-sensitive\\)"),
    ("- IOName: input_0\n  Precision: int8\n  Scale: '0.12'\n  Offset: 3\n",
     "Scale must be a number, got str '0.12'"),
    ("- IOName: input_0\n  Precision: int8\n  Scale: 0\n  Offset: 3\n",
     "Scale must be a positive finite number, got 0.0"),
    ("- IOName: input_0\n  Precision: int8\n  Scale: -0.5\n  Offset: 3\n", "got -0.5"),
    ("- IOName: input_0\n  Precision: int8\n  Scale: .inf\n  Offset: 3\n", "got inf"),
    ("- IOName: input_0\n  Precision: int8\n  Scale: .nan\n  Offset: 3\n", "got nan"),
    ("- IOName: input_0\n  Precision: int8\n  Scale: true\n  Offset: 3\n", "got bool True"),
    ("- IOName: input_0\n  Precision: int8\n  Scale: 0.1\n  Offset: 3.5\n",
     "Offset must be an integer, got float 3.5"),
    ("- IOName: input_0\n  Precision: int8\n  Scale: 0.1\n  Offset: 128\n",
     "Offset 128 is outside the int8 range \\[-128, 127\\]"),
    ("- IOName: input_0\n  Precision: int8\n  Scale: 0.1\n  Offset: -129\n", "Offset -129"),
    # file shapes
    ("IOName: input_0\n", "expected a list of entries"),
    ("[]\n", "the file lists no entries"),
    ("- input_0\n", "entry 1: expected a mapping"),
    ("- IOName: input_0\n  IOName: input_1\n", "duplicate key 'IOName' on lines 1 and 2"),
    ("- IOName: !!python/object/apply:os.system [echo]\n", "python/object"),
    ("- &a {IOName: input_0}\n- *a\n", "YAML aliases"),
])
def test_custom_io_rules_are_refused(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match) as info:
        check(tmp_path, text)
    assert str(tmp_path / "custom_io.yaml") in str(info.value)


def test_identical_repeats_merge_with_a_note(tmp_path):
    notes: list[str] = []
    entries = check(tmp_path, "- IOName: input_1\n  Layout: NHWC\n"
                              "- IOName: input_1\n  Layout: NHWC\n", notes=notes)
    assert [(e.name, e.layout, e.entry) for e in entries] == [("input_1", "NHWC", 1)]
    assert any("entry 2 (IOName 'input_1'): repeats entry 1" in n for n in notes)


def test_scale_offset_ignored_for_other_precisions_with_a_note(tmp_path):
    notes: list[str] = []
    (entry,) = check(tmp_path, "- IOName: input_1\n  Precision: float16\n  Scale: 0.5\n"
                               "  Offset: 1\n", notes=notes)
    assert (entry.precision, entry.scale, entry.offset) == ("float16", None, None)
    assert any("Scale/Offset ignored" in n for n in notes)


def test_external_quantization_supplies_int8_parameters(tmp_path):
    notes: list[str] = []
    (entry,) = check(tmp_path, "- IOName: input_0\n  Precision: int8\n", external_quantization=True)
    assert entry.precision == "int8" and entry.scale is None
    (entry,) = check(tmp_path, "- IOName: input_0\n  Precision: int8\n  Scale: 0.5\n"
                               "  Offset: 1\n", external_quantization=True, notes=notes)
    assert entry.scale is None and "external quantization supplies them" in notes[0]


def test_mxint8_rules(tmp_path):
    with pytest.raises(ConfigError, match="'input_2' is int64"):
        check(tmp_path, "- IOName: input_2\n  Precision: mxint8\n")
    program = aicc.Program.from_model(qdq_io_model())
    with pytest.raises(ConfigError, match="mxint8 applies to float or float16 tensors"):
        parse_custom_io([{"IOName": "q_in", "Precision": "mxint8"}], "c.yaml",
                        program.model_inputs, program.model_outputs)
    program = aicc.Program.from_model(kv_model(length="head"))
    with pytest.raises(ConfigError, match="mxint8 needs a static size along the blocked"):
        parse_custom_io([{"IOName": "past_key.0", "Precision": "mxint8"}], "c.yaml",
                        program.model_inputs, program.model_outputs)


def test_int8_model_io_converts_through_its_qdq_parameters(tmp_path):
    model = qdq_io_model()
    (tmp_path / "c.yaml").write_text("- IOName: q_in\n  Precision: float\n"
                                     "- IOName: q_out\n  Precision: float16\n")
    program = run_pass(model, "custom-io", {"config": str(tmp_path / "c.yaml"),
                                            "conversions": "device"})
    steps = {r["name"]: r["steps"] for r in program.custom_io}
    assert steps["q_in"] == [{"op": "quantize", "scale": pytest.approx(0.05), "zero_point": 2}]
    assert steps["q_out"][0] == {"op": "dequantize", "scale": pytest.approx(0.1),
                                 "zero_point": -1}
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(2, 6)
    got = run_model(program.to_model(), {"q_in": x})["q_out"]
    q = np.clip(np.rint(x / np.float32(0.05)) + 2, -128, 127).astype(np.int8)
    ref = run_model(model, {"q_in": q})["q_out"]
    np.testing.assert_array_equal(got, ((ref.astype(np.float32) + 1) * np.float32(0.1))
                                  .astype(np.float16))


def test_int8_model_io_without_qdq_cannot_become_float(tmp_path):
    from onnx import TensorProto as TP
    from onnx import helper

    graph = helper.make_graph([helper.make_node("Neg", ["a"], ["b"])], "g",
                              [helper.make_tensor_value_info("a", TP.INT8, [3])],
                              [helper.make_tensor_value_info("b", TP.INT8, [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (tmp_path / "c.yaml").write_text("- IOName: a\n  Precision: float\n")
    with pytest.raises(ConfigError, match="'a' is int8 in the model, and no per-tensor "
                                          "DequantizeLinear"):
        run_pass(model, "custom-io", {"config": str(tmp_path / "c.yaml")})


def test_pass_needs_a_config():
    with pytest.raises(ConfigError, match="needs the custom I/O list file"):
        run_pass(seed_model(), "custom-io")


def test_no_change_entries_compile_to_the_model(tmp_path):
    (tmp_path / "c.yaml").write_text("- IOName: input_0\n  Layout: NCHW\n  Precision: float\n")
    program = run_pass(seed_model(), "custom-io", {"config": str(tmp_path / "c.yaml"),
                                                   "conversions": "device"})
    assert program.custom_io[0]["steps"] == []
    assert [n.op for n in program.graphs["default"].nodes] == \
        [n.op for n in aicc.Program.from_model(seed_model()).graphs["default"].nodes]


@pytest.mark.parametrize("argv,match", [
    (["-aic-preproc"], "-aic-preproc moves the custom I/O conversions onto the device, but no "
                       "-custom-IO-list-file"),
    (["-custom-IO-list-file=BAD"], "custom_io.yaml: entry 1 \\(IOName 'x'\\): unknown key "
                                   "'Layot'"),
    (["-custom-IO-list-file=MISSING"], "custom I/O list file not found"),
    (["-custom-IO-list-file=GOOD", "-dump-custom-IO-config-template=t.yaml"],
     "-dump-custom-IO-config-template writes a template and exits without compiling; "
     "-custom-IO-list-file would be ignored"),
    (["-custom-IO-list-file=NAMES"], "entry 1 \\(IOName 'input_0'\\): no such model input or "
                                     "output"),
])
def test_cli_refusals(tmp_path, example_model_path, capsys, argv, match):
    (tmp_path / "custom_io.yaml").write_text("- IOName: x\n  Layot: NHWC\n")
    (tmp_path / "good.yaml").write_text("- IOName: image\n  Layout: NHWC\n")
    (tmp_path / "names.yaml").write_text("- IOName: input_0\n  Layout: NHWC\n")
    subst = {"BAD": tmp_path / "custom_io.yaml", "MISSING": tmp_path / "none.yaml",
             "GOOD": tmp_path / "good.yaml", "NAMES": tmp_path / "names.yaml"}
    argv = [a.split("=")[0] + "=" + str(subst.get(a.split("=", 1)[1], a.split("=", 1)[1]))
            if "=" in a else a for a in argv]
    out = tmp_path / "out.qpc"
    code = main(["compile", f"-m={example_model_path}", f"-aic-binary-dir={out}"] + argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ")
    import re
    assert re.search(match, err), err
    assert not out.exists()


def test_layout_only_compiles_on_the_example(tmp_path, example_model_path):
    (tmp_path / "c.yaml").write_text("- IOName: image\n  Layout: NHWC\n")
    save_dir = tmp_path / "q"
    assert main(["compile", f"-m={example_model_path}", "-batchsize=2",
                 f"-custom-IO-list-file={tmp_path / 'c.yaml'}", f"-aic-binary-dir={save_dir}",
                 "-compile-only"]) == 0
    session = aicc.load(save_dir)
    assert session.inputs[0].shape == [2, 8, 8, 1] and session.inputs[0].layout == "NHWC"
    images = np.load(example_model_path.parent / "data" / "digits_test_images.npy")[:2]
    got = session.run({"image": np.ascontiguousarray(images.transpose(0, 2, 3, 1))})["logits"]
    ref = run_model(aicc.ir.load_model(example_model_path), {"image": images})["logits"]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def _aimet(tmp_path, acts):
    import json

    path = tmp_path / "enc.json"
    path.write_text(json.dumps({"version": "0.6.1", "activation_encodings": acts,
                                "param_encodings": {}}))
    return path


def test_external_quantization_gives_int8_scale_and_offset(tmp_path):
    from aicc.quant import tf_encoding

    enc = _aimet(tmp_path, {"input_0": [{"bitwidth": 8, "dtype": "int", "min": -1.0,
                                         "max": 3.0}]})
    (tmp_path / "c.yaml").write_text("- IOName: input_0\n  Precision: int8\n"
                                     "- IOName: input_1\n  Layout: NHWC\n")
    program = run_pass(seed_model(), "custom-io", {"config": str(tmp_path / "c.yaml"),
                                                   "encodings": str(enc)})
    expected = tf_encoding(-1.0, 3.0, 8, signed=False).with_storage(True)
    step = program.custom_io[0]["steps"][0]
    assert step["op"] == "dequantize"
    assert (step["scale"], step["zero_point"]) == (pytest.approx(expected.scale),
                                                   expected.zero_point)
    # Scale/Offset written in the custom I/O file are ignored in favour of the encodings
    (tmp_path / "c.yaml").write_text("- IOName: input_0\n  Precision: int8\n  Scale: 9.0\n"
                                     "  Offset: 0\n")
    program = run_pass(seed_model(), "custom-io", {"config": str(tmp_path / "c.yaml"),
                                                   "encodings": str(enc)})
    assert program.custom_io[0]["scale"] == pytest.approx(expected.scale)


@pytest.mark.parametrize("acts,match", [
    ({}, "'input_0' has no activation encoding there"),
    ({"input_0": [{"bitwidth": 16, "dtype": "float"}]}, "'input_0' is kept in float there"),
    ({"input_0": [{"bitwidth": 8, "dtype": "int"}]}, "has no scale there"),
    ({"input_0": [{"bitwidth": 16, "dtype": "int", "min": 0.0, "max": 1.0}]}, "is 16-bit there"),
])
def test_external_quantization_must_cover_int8_entries(tmp_path, acts, match):
    enc = _aimet(tmp_path, acts)
    (tmp_path / "c.yaml").write_text("- IOName: input_0\n  Precision: int8\n")
    with pytest.raises(ConfigError, match=match):
        run_pass(seed_model(), "custom-io", {"config": str(tmp_path / "c.yaml"),
                                             "encodings": str(enc)})


def test_cli_passes_external_quantization_to_custom_io(tmp_path, capsys):
    enc = _aimet(tmp_path, {"input_0": [{"bitwidth": 8, "dtype": "int", "min": -1.0,
                                         "max": 3.0}]})
    (tmp_path / "c.yaml").write_text("- IOName: input_0\n  Precision: int8\n")
    model = tmp_path / "seed.onnx"
    model.write_bytes(seed_model().SerializeToString())
    assert main(["compile", f"-m={model}", f"-custom-IO-list-file={tmp_path / 'c.yaml'}",
                 f"-external-quantization={enc}", "--print-pipeline"]) == 0
    text = capsys.readouterr().out
    assert f"custom-io{{config={tmp_path / 'c.yaml'} encodings={enc}}}" in text
    # without external quantization the same file lacks Scale/Offset: refused before any work
    assert main(["compile", f"-m={model}", f"-custom-IO-list-file={tmp_path / 'c.yaml'}",
                 "--print-pipeline"]) == 2
    assert "Precision int8 needs Scale and Offset" in capsys.readouterr().err
