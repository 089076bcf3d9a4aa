"""The fp16 overflow report: nodes whose float outputs exceed 65504 on sample inputs, as a function,
as a convert-fp16 warning (or error), and from ``aicc compile -convert-to-fp16`` with input data."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from aicc import ir
from aicc.cli import main
from aicc.errors import DataError, PassError
from aicc.passes.precision.convert_fp16 import fp16_overflow_report
from aicc.testing import run_model, run_pass


def overflow_model(extra_op: str | None = None):
    """x -> Mul(1000) 'big' -> Mul(0.001) 'back' -> Relu 'y': fine in fp32, inf in fp16 when
    |x| > 65.5."""
    nodes = [helper.make_node("Mul", ["x", "k"], ["big"], name="scale_up"),
             helper.make_node("Mul", ["big", "inv"], ["back"], name="scale_down"),
             helper.make_node(extra_op or "Relu", ["back"], ["y"], name="last")]
    graph = helper.make_graph(nodes, "o", [helper.make_tensor_value_info("x", TP.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TP.FLOAT, [1, 4])],
                              [numpy_helper.from_array(np.array(1000.0, np.float32), "k"),
                               numpy_helper.from_array(np.array(0.001, np.float32), "inv")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return ir.load_model(model.SerializeToString())


SAMPLES = [{"x": np.array([[1.0, -2.0, 3.0, 4.0]], np.float32)},
           {"x": np.array([[100.0, -1.0, 0.5, 2.0]], np.float32)}]


def test_report_names_the_overflowing_node():
    report = fp16_overflow_report(overflow_model(), SAMPLES)
    assert [(r["node"], r["op"], r["tensor"]) for r in report] == [("scale_up", "Mul", "big")]
    assert report[0]["max_abs"] == pytest.approx(100000.0)
    assert fp16_overflow_report(overflow_model(), SAMPLES[:1]) == []
    # limited to the nodes that will run in fp16
    assert fp16_overflow_report(overflow_model(), SAMPLES, nodes={"last"}) == []


def test_report_falls_back_to_onnxruntime_when_the_interpreter_cannot_run():
    model = overflow_model(extra_op="Round")           # no interpreter kernel for Round
    report = fp16_overflow_report(model, SAMPLES)
    assert [r["node"] for r in report] == ["scale_up"]


def test_what_the_report_predicts_happens_in_fp16():
    """The interpreter computes fp16 ops in fp16 (onnxruntime's CPU kernels may widen)."""
    program = run_pass(overflow_model(), "convert-fp16", {"all": True})
    out = run_model(program.to_model(), SAMPLES[1], backend="interpreter")["y"]
    assert np.isinf(out[0, 0]) and np.isfinite(out[0, 1:]).all()


def _input_list(tmp_path, samples):
    lines = []
    for i, s in enumerate(samples):
        s["x"].tofile(tmp_path / f"x{i}.raw")
        lines.append(f"x{i}.raw")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return tmp_path / "list.txt"


def test_convert_fp16_warns_on_samples(tmp_path, caplog):
    listing = _input_list(tmp_path, SAMPLES)
    with caplog.at_level(logging.WARNING):
        run_pass(overflow_model(), "convert-fp16", {"all": True, "sample_inputs": str(listing),
                                                    "overflow": "warn"})
    assert "node 'scale_up' (Mul) output 'big' reaches |x| = 1e+05 on the samples, beyond " \
           "fp16's 65504" in caplog.text


def test_convert_fp16_overflow_error_mode(tmp_path):
    listing = _input_list(tmp_path, SAMPLES)
    with pytest.raises(PassError, match="1 tensor\\(s\\) overflow fp16 on the samples of graph "
                                        "'default': scale_up \\(1e\\+05\\)"):
        run_pass(overflow_model(), "convert-fp16", {"all": True, "sample_inputs": str(listing),
                                                    "overflow": "error"})


def test_samples_with_the_wrong_size_are_refused(tmp_path):
    (tmp_path / "x0.raw").write_bytes(b"\0" * 12)
    (tmp_path / "list.txt").write_text("x0.raw\n")
    with pytest.raises(DataError, match="has 12 bytes; input 'x' \\(float32, \\[1, 4\\]\\) "
                                        "needs 16"):
        run_pass(overflow_model(), "convert-fp16", {"all": True,
                                                    "sample_inputs": str(tmp_path / "list.txt")})


def test_compile_with_input_data_warns(tmp_path, caplog):
    model_path = tmp_path / "o.onnx"
    model_path.write_bytes(overflow_model().SerializeToString())
    for i, s in enumerate(SAMPLES):
        s["x"].tofile(tmp_path / f"x{i}.raw")
    (tmp_path / "in.json").write_text(json.dumps({"IO-files": [
        [{"path": f"x{i}.raw", "io-direction": "in", "map-to": "x", "data-type": "float32",
          "dims": [1, 4]}] for i in range(2)]}))
    with caplog.at_level(logging.WARNING):
        assert main(["compile", f"-m={model_path}", "-convert-to-fp16",
                     f"-json-input-file={tmp_path / 'in.json'}",
                     f"-aic-binary-dir={tmp_path / 'q'}", "-compile-only"]) == 0
    assert "node 'scale_up' (Mul) stays in fp32: output 'big' reaches |x| = 1e+05" in caplog.text


def test_custom_io_samples_are_converted_first(tmp_path, caplog):
    """Samples written for the custom I/O (int8 here) are converted to the model's before the
    float program runs."""
    (tmp_path / "c.yaml").write_text("- IOName: x\n  Precision: int8\n  Scale: 1.0\n"
                                     "  Offset: 0\n")
    np.array([[100, 1, 2, 3]], np.int8).tofile(tmp_path / "q.raw")
    (tmp_path / "list.txt").write_text("q.raw\n")
    with caplog.at_level(logging.WARNING):
        run_pass(overflow_model(), "convert-fp16",
                 {"all": True, "sample_inputs": str(tmp_path / "list.txt"),
                  "sample_custom_io": str(tmp_path / "c.yaml")})
    assert "node 'scale_up' (Mul) stays in fp32: output 'big'" in caplog.text


def test_compile_with_an_input_list_warns(tmp_path, caplog):
    """-input-list-file (quantization's flag) also feeds the fp16 overflow report."""
    listing = _input_list(tmp_path, SAMPLES)
    model_path = tmp_path / "o.onnx"
    model_path.write_bytes(overflow_model().SerializeToString())
    with caplog.at_level(logging.WARNING):
        assert main(["compile", f"-m={model_path}", "-convert-to-fp16",
                     f"-input-list-file={listing}", f"-aic-binary-dir={tmp_path / 'q'}",
                     "-compile-only"]) == 0
    assert "node 'scale_up' (Mul) stays in fp32: output 'big' reaches" in caplog.text
