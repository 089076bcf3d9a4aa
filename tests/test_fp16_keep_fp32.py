"""fp16 that does not overflow silently (issue 12): with sample inputs, ``-convert-to-fp16`` keeps
the nodes whose values leave the fp16 range in fp32 and says so; without samples, the run says
which node first produced a non-finite value. The model is a decomposed LayerNorm whose squares
exceed 65504, as in the tf2onnx byte classifier (magika) that returned a wrong class in fp16.

Tolerance: fp16 elsewhere in the graph, 5e-2 of the largest output magnitude (issue 12's aic100
target); the fp32 reference is onnxruntime on the original model.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

import aicc
from aicc.cli import main

FEATURES = 32


def layernorm_classifier() -> onnx.ModelProto:
    """x [1, 4, 32] -> LayerNorm written out (ReduceMean, Sub, Mul d*d, ..., Reciprocal) -> MatMul
    -> logits [1, 4, 3]. With |x - mean| around 1000, d*d reaches 1e6: inf in fp16, and
    d * 1/sqrt(inf) = 0 gives finite but wrong logits."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array(1e-5, np.float32), "eps"),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, FEATURES).astype(np.float32), "gamma"),
             numpy_helper.from_array(rng.standard_normal(FEATURES).astype(np.float32) * 0.1,
                                     "beta"),
             numpy_helper.from_array(rng.standard_normal((FEATURES, 3)).astype(np.float32), "w")]
    n = helper.make_node
    nodes = [n("ReduceMean", ["x"], ["mean"], name="mean", axes=[-1]),
             n("Sub", ["x", "mean"], ["d"], name="center"),
             n("Mul", ["d", "d"], ["sq"], name="square"),
             n("ReduceMean", ["sq"], ["var"], name="variance", axes=[-1]),
             n("Add", ["var", "eps"], ["ve"], name="add_eps"),
             n("Sqrt", ["ve"], ["sd"], name="std"),
             n("Reciprocal", ["sd"], ["inv"], name="inv_std"),
             n("Mul", ["d", "inv"], ["normed"], name="normalize"),
             n("Mul", ["normed", "gamma"], ["scaled"], name="scale"),
             n("Add", ["scaled", "beta"], ["ln"], name="shift"),
             n("MatMul", ["ln", "w"], ["logits"], name="classify")]
    graph = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info("x", TP.FLOAT,
                                                                          [1, 4, FEATURES])],
                              [helper.make_tensor_value_info("logits", TP.FLOAT, [1, 4, 3])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _sample(seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((1, 4, FEATURES)) * 600 + 100) \
        .astype(np.float32)


def _reference(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


def _compile(tmp_path, *flags: str):
    model_path = tmp_path / "ln.onnx"
    onnx.save(layernorm_classifier(), model_path)
    qpc = tmp_path / "ln.qpc"
    assert main(["compile", f"-m={model_path}", f"-aic-binary-dir={qpc}", "-compile-only",
                 "-convert-to-fp16", *flags]) == 0
    return qpc


def _input_list(tmp_path) -> str:
    lines = []
    for seed in (1, 2, 3):
        _sample(seed).tofile(tmp_path / f"x{seed}.raw")
        lines.append(f"x{seed}.raw")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return str(tmp_path / "list.txt")


BACKENDS = {"interpreter": ["--backend=interpreter"], "aic100": ["-aic-hw", "-aic-num-cores=2"]}


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_samples_keep_overflowing_nodes_in_fp32(tmp_path, caplog, backend):
    with caplog.at_level(logging.WARNING):
        qpc = _compile(tmp_path, *BACKENDS[backend], f"-input-list-file={_input_list(tmp_path)}")
    assert "node 'square' (Mul) stays in fp32: output 'sq' reaches |x| = " in caplog.text
    # the reader of the squares stays too: a Cast to fp16 in front of it would overflow alike
    assert "node 'variance' (ReduceMean) stays in fp32: it reads 'sq'" in caplog.text
    x = _sample(0)
    ref = _reference(layernorm_classifier(), x)
    session = aicc.load(qpc)
    got = session.run({"x": x})["logits"]
    assert np.isfinite(got).all()
    assert np.abs(got - ref).max() <= 5e-2 * np.abs(ref).max()
    assert session.nonfinite == {}
    precision = session.program_meta["node_precision"]
    assert precision["square"] == "float32" and precision["classify"] == "float16"


def test_without_samples_the_run_names_the_first_overflowing_node(tmp_path, caplog):
    qpc = _compile(tmp_path, "--backend=interpreter")
    x = _sample(0)
    session = aicc.load(qpc)
    with caplog.at_level(logging.WARNING):
        got = session.run({"x": x})["logits"]
    ref = _reference(layernorm_classifier(), x)
    assert np.abs(got - ref).max() > 0.5 * np.abs(ref).max()   # finite, and wrong: as reported
    first = session.nonfinite["default"]["first"]
    assert (first["node"], first["op"], first["tensor"]) == ("square", "Mul", "sq_fp16")
    assert "the first node to produce one is 'square' (Mul, output 'sq_fp16'" in caplog.text
    assert "compile with sample inputs" in caplog.text


def test_cpu_run_notes_that_onnxruntime_computes_fp16_differently(tmp_path, capsys):
    qpc = _compile(tmp_path)
    _sample(0).tofile(tmp_path / "x.raw")
    capsys.readouterr()
    assert main(["run", "-t", str(qpc), "-i", str(tmp_path / "x.raw")]) == 0
    out = capsys.readouterr().out
    assert "note: backend 'cpu' computes this fp16 program as onnxruntime does" in out
    assert "--backend interpreter computes as the device does" in out
