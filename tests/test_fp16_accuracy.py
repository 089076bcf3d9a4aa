"""fp16 results within tolerance (issue 12, item 5): with sample inputs, ``-convert-to-fp16`` runs
the fp16 program against the float one and keeps nodes in fp32 until the output error
(max |fp16 - fp32| / max |fp32| per output) is within ``-fp16-tolerance`` (default 0.02).

The model cancels: ``x + 1000`` rounds to fp16's step of 0.5 there, so ``(x + 1000) - 1000`` in
fp16 loses x to within 0.25 while x is in [0, 1] (a relative error near 0.25 downstream). The
fp32 reference is onnxruntime on the original model; results must be within the default
tolerance 0.02 of its largest output magnitude.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import aicc
from aicc.cli import main
from aicc.errors import UsageError
from aicc.passes.precision.accuracy import output_error

TOLERANCE = 0.02
BACKENDS = {"interpreter": {"target": "interpreter"},
            "aic100": {"target": "aic100", "num_cores": 2}}


def cancelling_model() -> onnx.ModelProto:
    """x [1, 64] -> Add(+1000) 'shift_up' -> Sub(-1000) 'shift_down' -> MatMul 'project' -> y."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array(1000.0, np.float32), "offset"),
             numpy_helper.from_array(rng.standard_normal((64, 8)).astype(np.float32), "w")]
    n = helper.make_node
    nodes = [n("Add", ["x", "offset"], ["up"], name="shift_up"),
             n("Sub", ["up", "offset"], ["down"], name="shift_down"),
             n("MatMul", ["down", "w"], ["y"], name="project")]
    graph = helper.make_graph(nodes, "cancel", [helper.make_tensor_value_info("x", TP.FLOAT,
                                                                              [1, 64])],
                              [helper.make_tensor_value_info("y", TP.FLOAT, [1, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _sample(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 64)).astype(np.float32)


def _input_list(tmp_path) -> str:
    for seed in (1, 2, 3):
        _sample(seed).tofile(tmp_path / f"x{seed}.raw")
    (tmp_path / "list.txt").write_text("x1.raw\nx2.raw\nx3.raw\n")
    return str(tmp_path / "list.txt")


def _error(session) -> float:
    x = _sample(0)
    ref = ort.InferenceSession(cancelling_model().SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    return output_error(session.run({"x": x}), {"y": ref})


def _compile(tmp_path, backend: str, **options):
    qpc = tmp_path / f"{backend}.qpc"
    aicc.compile(cancelling_model(), output=qpc, fp16=True, **BACKENDS[backend], **options)
    return aicc.load(qpc)


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_samples_keep_the_cancelling_nodes_in_fp32(tmp_path, caplog, backend):
    with caplog.at_level(logging.WARNING):
        session = _compile(tmp_path, backend, input_list=_input_list(tmp_path))
    assert _error(session) <= TOLERANCE
    precision = session.program_meta["node_precision"]
    assert (precision["shift_up"], precision["shift_down"], precision["project"]) == \
        ("float32", "float32", "float16")
    text = caplog.text
    assert "fp16 output error " in text and "on 3 sample(s) exceeds the tolerance 0.02 (max " \
        "|fp16 - fp32| / max |fp32| per output); 2 of 3 node(s) stay in fp32, error now " in text
    assert "'shift_up' (Add), 'shift_down' (Sub)" in text


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_the_old_behaviour_is_wrong_by_more_than_the_tolerance(tmp_path, backend):
    """What the check fixes: the same compile with the check off (as before it existed)."""
    session = _compile(tmp_path, backend, input_list=_input_list(tmp_path), fp16_tolerance="off")
    assert _error(session) > 5 * TOLERANCE
    assert set(session.program_meta["node_precision"].values()) == {"float16"}


def test_a_looser_tolerance_keeps_nothing_it_does_not_need(tmp_path):
    session = _compile(tmp_path, "interpreter", input_list=_input_list(tmp_path),
                       fp16_tolerance=0.9)
    assert set(session.program_meta["node_precision"].values()) == {"float16"}


def test_without_samples_nothing_changes(tmp_path):
    session = _compile(tmp_path, "interpreter")
    assert set(session.program_meta["node_precision"].values()) == {"float16"}
    assert _error(session) > 5 * TOLERANCE


def test_named_fp16_instances_are_never_overridden(tmp_path, caplog):
    npi = tmp_path / "npi.yaml"
    npi.write_text(yaml.safe_dump({"FP16NodeInstanceNames": ["up", "down"]}))
    with caplog.at_level(logging.WARNING):
        session = _compile(tmp_path, "interpreter", input_list=_input_list(tmp_path),
                           node_precision_info=str(npi))
    precision = session.program_meta["node_precision"]
    assert precision["shift_up"] == precision["shift_down"] == "float16"
    assert "and keeping every other node in fp32 still gives" in caplog.text
    assert "(the fp16 instances you named stay fp16: shift_down, shift_up)" in caplog.text


@pytest.mark.parametrize("value", ["bogus", "0", "1.5", "-0.1", "nan"])
def test_cli_refuses_a_bad_tolerance(tmp_path, capsys, value):
    model = tmp_path / "m.onnx"
    onnx.save(cancelling_model(), model)
    code = main(["compile", f"-m={model}", f"-aic-binary-dir={tmp_path / 'q'}", "-compile-only",
                 "-convert-to-fp16", f"-fp16-tolerance={value}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: -fp16-tolerance: expected a relative error in (0, 1) or "
                             f"'off', got '{value}'")
    assert not (tmp_path / "q").exists()


def test_python_refuses_a_bad_tolerance_naming_the_keyword(tmp_path):
    with pytest.raises(UsageError, match="fp16_tolerance.*expected a relative error"):
        aicc.compile(cancelling_model(), output=tmp_path / "q", fp16=True, fp16_tolerance=2)


@pytest.mark.parametrize("flags, message", [
    ([], "error: -fp16-tolerance bounds the error of an fp16 program, and nothing runs in fp16"),
    (["-convert-to-fp16"], "error: -fp16-tolerance is measured on sample inputs, and none were "
                           "given"),
])
def test_cli_refuses_a_tolerance_it_would_ignore(tmp_path, capsys, flags, message):
    model = tmp_path / "m.onnx"
    onnx.save(cancelling_model(), model)
    code = main(["compile", f"-m={model}", f"-aic-binary-dir={tmp_path / 'q'}", "-compile-only",
                 *flags, "-fp16-tolerance=0.05"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(message)
    assert not (tmp_path / "q").exists()


def test_cli_warning_says_how_to_keep_fp16(tmp_path, caplog):
    """The warning that nodes stay in fp32 names the flag that turns the check off, spelled as
    the CLI user types it."""
    model = tmp_path / "m.onnx"
    onnx.save(cancelling_model(), model)
    with caplog.at_level(logging.WARNING):
        code = main(["compile", f"-m={model}", f"-aic-binary-dir={tmp_path / 'q'}",
                     "-convert-to-fp16", f"-input-list-file={_input_list(tmp_path)}"])
    err = caplog.text
    assert code == 0
    assert "2 of 3 node(s) stay in fp32" in err
    assert "A looser -fp16-tolerance keeps fewer in fp32; 'off' keeps every node fp16" in err


def test_error_is_relative_to_the_outputs_scale_over_all_samples():
    """A sample whose output is tiny is judged against the output's range over the samples: an
    fp16-sized error on a near-zero probability is not a 10% error."""
    refs = [{"p": np.array([0.9], np.float32)}, {"p": np.array([0.001], np.float32)}]
    gots = [{"p": np.array([0.9], np.float32)}, {"p": np.array([0.0011], np.float32)}]
    assert output_error(gots, refs) == pytest.approx(1e-4 / 0.9, rel=1e-3)
    assert output_error(gots[1], refs[1]) == pytest.approx(0.1, rel=1e-3)
    assert output_error([{"p": np.array([np.inf], np.float32)}], refs[:1]) == float("inf")
