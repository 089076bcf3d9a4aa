"""Ifs inside a data-dependent If (silero-vad: the sample-rate input picks one of two networks,
each with Ifs on shapes inside) on a backend without If: ``predicate-if`` brings the inner Ifs
up, folds those the bound shapes decide and predicates the rest; checked through the public path
against onnxruntime on the original model, for every combination of the branches taken.

fp16 tolerance (aic100 with fp16): a few rounded elementwise ops on values in [-3, 3] stay within
1e-2 of the largest reference magnitude (fp16 relative spacing 2**-10); taking a wrong branch
changes values by far more (Relu vs Neg, Sigmoid vs Tanh).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import aicc
from aicc.cli import main
from aicc.errors import DataError

_FP16_REL = 1e-2
_SILERO = "silero_vad/data/silero_vad.onnx"


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def _const(name: str, value, dtype=np.int64) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name],
                            value=numpy_helper.from_array(np.array(value, dtype=dtype)))


def _branch(name: str, nodes: list, out: str, shape) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, [],
                             [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape)])


def _nested_model(rows, *, else_nodes=None) -> onnx.ModelProto:
    """y = 2 * (n == 1 ? Squeeze(x) : x) reshaped to [n, 4] when mode == 1 (the inner If is
    decided by the bound shape, and its branches differ in rank, as silero-vad's do), else
    (sum(x) > 0 ? Sigmoid(x) : Tanh(x)) (an inner If decided by the data)."""
    squeeze = _branch("squeeze", [_const("ax0", [0]),
                                  helper.make_node("Squeeze", ["x", "ax0"], ["sq"])], "sq", [4])
    keep = _branch("keep", [helper.make_node("Identity", ["x"], ["kp"])], "kp", [rows, 4])
    then_outer = _branch("by_shape", [
        helper.make_node("Shape", ["x"], ["sx"]), _const("zero", 0), _const("one", 1),
        helper.make_node("Gather", ["sx", "zero"], ["n0"], axis=0),
        helper.make_node("Equal", ["n0", "one"], ["is_one"]),
        helper.make_node("If", ["is_one"], ["picked"], then_branch=squeeze, else_branch=keep,
                         name="by_shape_if"),
        _const("flat", [-1, 4]), helper.make_node("Reshape", ["picked", "flat"], ["r"]),
        _const("two", 2.0, np.float32), helper.make_node("Mul", ["r", "two"], ["t"])],
        "t", [rows, 4])
    sig = _branch("sig", [helper.make_node("Sigmoid", ["x"], ["sg"])], "sg", [rows, 4])
    tanh = _branch("tanh", [helper.make_node("Tanh", ["x"], ["th"])], "th", [rows, 4])
    else_outer = _branch("by_data", else_nodes or [
        helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
        _const("zero_f", 0.0, np.float32),
        helper.make_node("Greater", ["total", "zero_f"], ["positive"]),
        helper.make_node("If", ["positive"], ["e"], then_branch=sig, else_branch=tanh,
                         name="by_data_if")], "e", [rows, 4])
    graph = helper.make_graph(
        [_const("mode_one", 1), helper.make_node("Equal", ["mode", "mode_one"], ["c"]),
         helper.make_node("If", ["c"], ["y"], then_branch=then_outer, else_branch=else_outer,
                          name="mode_if")],
        "nested", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, 4]),
                   helper.make_tensor_value_info("mode", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _feeds(rows: int, mode: int, sign: float, seed: int) -> dict[str, np.ndarray]:
    x = np.random.default_rng(seed).uniform(-1, 1, (rows, 4)).astype(np.float32)
    return {"x": (x + sign * 2).astype(np.float32), "mode": np.array(mode, np.int64)}


@pytest.mark.parametrize("rows", [1, 3])
def test_nested_ifs_in_a_data_dependent_if_run_on_aic100(tmp_path, rows):
    model = _nested_model("n")
    qpc = aicc.compile(model, target="aic100", fp16=True, symbols={"n": rows},
                       output=tmp_path / "q")
    session = aicc.load(qpc)
    for seed, (mode, sign) in enumerate([(1, 1.0), (1, -1.0), (0, 1.0), (0, -1.0)]):
        feeds = _feeds(rows, mode, sign, seed)
        want = _ort(model, feeds)["y"]
        got = session.run(feeds)["y"]
        np.testing.assert_allclose(got, want, rtol=0, atol=_FP16_REL * np.abs(want).max(),
                                   err_msg=f"mode={mode} sign={sign}")


def test_predicate_if_preserves_nested_ifs(registries):
    from aicc.testing import check_pass
    feeds = [_feeds(1, mode, sign, 7) for mode in (0, 1) for sign in (1.0, -1.0)]
    program = check_pass(_nested_model(1), "predicate-if", feeds=feeds, registries=registries)
    ops = [n.op for g in program.graphs.values() for n in g.nodes]
    assert "If" not in ops and ops.count("Where") == 2   # mode_if and by_data_if; by_shape folded


def test_a_loop_inside_a_data_dependent_branch_is_refused_naming_both(tmp_path, capsys):
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["acc", "x"], ["acc_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, ["n", 4])])
    loop = [_const("trips", 3), _const("go", True, np.bool_),
            helper.make_node("Loop", ["trips", "go", "x"], ["e"], body=body, name="sum3")]
    path = tmp_path / "m.onnx"
    onnx.save(_nested_model("n", else_nodes=loop), path)
    code = main(["compile", f"-m={path}", f"-aic-binary-dir={tmp_path / 'qpc'}", "-aic-hw",
                 "-convert-to-fp16", "-onnx-define-symbol=n,2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not (tmp_path / "qpc").exists()
    assert len(err) == 1 and "node 'mode_if' (If): its else_branch holds node 'sum3' (Loop)" \
        in err[0], err


def test_a_branch_the_bound_shapes_break_is_pruned_and_guarded(tmp_path, capsys, caplog):
    """The else branch multiplies by a [5, 4] matrix: valid for n = 5 only. Bound to n = 3,
    onnxruntime fails on every input taking it (silero-vad at 8 kHz given 16 kHz frames): the
    program keeps the then branch, says so, answers the inputs taking it, and refuses the others
    naming the If, the branch and the node."""
    w = numpy_helper.from_array(np.ones((5, 4), np.float32), "w")
    bad = [helper.make_node("Constant", [], ["wc"], value=w),
           helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0]),
           helper.make_node("MatMul", ["xt", "wc"], ["m"], name="project"),
           helper.make_node("Transpose", ["m"], ["e"], perm=[1, 0])]
    model = _nested_model("n", else_nodes=bad)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    qpc = tmp_path / "qpc"
    with caplog.at_level(logging.WARNING):
        code = main(["compile", f"-m={path}", f"-aic-binary-dir={qpc}", "-aic-hw",
                     "-convert-to-fp16", "-onnx-define-symbol=n,3", "-compile-only"])
    assert code == 0, capsys.readouterr().err
    assert "node 'mode_if' (If): its else_branch cannot run with the bound shapes (node " \
        "'project' (MatMul)" in caplog.text and "keeps the then_branch only" in caplog.text
    session = aicc.load(qpc)
    assert [d.name for d in session.outputs] == ["y"]
    for seed, sign in enumerate((1.0, -1.0)):
        feeds = _feeds(3, 1, sign, seed)
        want = _ort(model, feeds)["y"]
        got = session.run(feeds)
        assert list(got) == ["y"]
        np.testing.assert_allclose(got["y"], want, rtol=0, atol=_FP16_REL * np.abs(want).max())
    with pytest.raises(DataError, match="take the else_branch of If 'mode_if'.*"
                       "node 'project' \\(MatMul\\)"):
        session.run(_feeds(3, 0, 1.0, 5))


def _silero_path() -> Path | None:
    import os
    cache = Path(os.environ.get("AICC_ZOO_CACHE", Path.home() / ".cache" / "aicc-zoo"))
    found = sorted(cache.glob(f"models/silero_vad-*/{_SILERO}"))
    return found[-1] if found else None


def _silero_on_aic100(tmp_path, frame: int):
    """(the model, its session compiled for aic100 in fp16 with ``frame``-sample frames)."""
    path = _silero_path()
    if path is None:
        pytest.skip("silero-vad is not in the zoo cache (make zoo fetches it)")
    qpc = aicc.compile(str(path), target="aic100", fp16=True, output=tmp_path / "q",
                       input_shapes=[f"input=1,{frame}", "state=2,1,128"])
    return onnx.load(path), aicc.load(qpc)


@pytest.mark.slow
def test_silero_vad_at_16k_frames_runs_and_refuses_8k(tmp_path):
    """512-sample frames, which only its 16 kHz network accepts (onnxruntime fails on sr = 8000
    with them): the 8 kHz branch is pruned, sr = 16000 gives onnxruntime's answer, sr = 8000 is
    refused."""
    model, session = _silero_on_aic100(tmp_path, 512)
    rng = np.random.default_rng(8)
    feeds = {"input": (0.3 * rng.standard_normal((1, 512))).astype(np.float32),
             "state": (0.1 * rng.standard_normal((2, 1, 128))).astype(np.float32),
             "sr": np.array(16000, np.int64)}
    want, got = _ort(model, feeds), session.run(feeds)
    for name, ref in want.items():
        np.testing.assert_allclose(got[name], ref, rtol=0, atol=_FP16_REL * np.abs(ref).max())
    with pytest.raises(DataError, match="else_branch of If 'If_0'"):
        session.run({**feeds, "sr": np.array(8000, np.int64)})


@pytest.mark.slow
def test_silero_vad_runs_on_aic100_at_both_sample_rates(tmp_path):
    """The real model, 256-sample frames (which both of its networks accept): each sample rate
    gives onnxruntime's answer through the predicated program."""
    model, session = _silero_on_aic100(tmp_path, 256)
    rng = np.random.default_rng(3)
    for sr in (16000, 8000):
        feeds = {"input": (0.3 * rng.standard_normal((1, 256))).astype(np.float32),
                 "state": (0.1 * rng.standard_normal((2, 1, 128))).astype(np.float32),
                 "sr": np.array(sr, np.int64)}
        want, got = _ort(model, feeds), session.run(feeds)
        for name, ref in want.items():
            np.testing.assert_allclose(got[name], ref, rtol=0,
                                       atol=_FP16_REL * np.abs(ref).max(), err_msg=f"{sr} {name}")


def test_a_malformed_guard_in_the_manifest_is_refused(tmp_path):
    import json
    qpc = aicc.compile(_nested_model(1), target="cpu", output=tmp_path / "q")
    manifest = json.loads((qpc / "manifest.json").read_text())
    manifest["program"]["guards"] = {"default": [{"output": 3}]}
    (qpc / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(aicc.errors.ContainerError, match="program.guards"):
        aicc.load(qpc)
