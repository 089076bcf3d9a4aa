"""Failures of the model zoo (issue 12, ``make zoo``), each reproduced on a small model built here
and checked through the public path (``aicc compile`` -> ``aicc.load`` -> ``Session.run``)
against onnxruntime on the original model.

fp16 tolerance (aic100 with ``-convert-to-fp16``): inputs, weights and every op's result round
to fp16 (relative spacing 2**-10 ~ 1e-3); a handful of rounded ops in a row stay within
``_FP16_REL`` = 1e-2 of the largest reference value.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import aicc
from aicc.cli import main

_FP16_REL = 1e-2


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def _compile_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], tmp_path, *flags: str
                 ) -> dict[str, np.ndarray]:
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    qpc = tmp_path / "qpc"
    assert main(["compile", f"-m={path}", f"-aic-binary-dir={qpc}", *flags]) == 0
    return aicc.load(qpc).run(feeds)


def _assert_fp16_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    for name, ref in want.items():
        scale = float(np.abs(ref).max())
        np.testing.assert_allclose(got[name].astype(np.float64), ref.astype(np.float64), rtol=0,
                                   atol=_FP16_REL * scale, err_msg=name)


# --- magika: OneHot, ReduceProd, ReduceSumSquare on aic100 ------------------------------------

def _byte_classifier(batch: int) -> onnx.ModelProto:
    """magika's shape in small: bytes one-hot encoded (int32 indices and depth, float values,
    as tf2onnx writes it), a dense layer, a LayerNorm decomposed with ReduceSumSquare, and a
    flatten whose size is the ReduceProd of the shape's tail."""
    rng = np.random.default_rng(0)
    width, depth, hidden = 16, 8, 4
    inits = [
        numpy_helper.from_array(np.array(depth, np.int32), "depth"),
        numpy_helper.from_array(np.array([0.0, 1.0], np.float32), "onoff"),
        numpy_helper.from_array(rng.standard_normal((depth, hidden)).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([1, 2], np.int64), "tail"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
        numpy_helper.from_array(np.array(1.0 / hidden, np.float32), "inv_n"),
    ]
    nodes = [
        helper.make_node("OneHot", ["bytes", "depth", "onoff"], ["hot"], axis=-1),
        helper.make_node("MatMul", ["hot", "w"], ["dense"]),
        helper.make_node("ReduceMean", ["dense"], ["mean"], axes=[2], keepdims=1),
        helper.make_node("Sub", ["dense", "mean"], ["centred"]),
        helper.make_node("ReduceSumSquare", ["centred"], ["sq"], axes=[2], keepdims=1),
        helper.make_node("Mul", ["sq", "inv_n"], ["var"]),
        helper.make_node("Sqrt", ["var"], ["std"]),
        helper.make_node("Div", ["centred", "std"], ["normed"]),
        helper.make_node("Shape", ["normed"], ["shape"]),
        helper.make_node("Gather", ["shape", "tail"], ["dims"]),
        helper.make_node("ReduceProd", ["dims"], ["flat_size"], axes=[0], keepdims=1),
        helper.make_node("Concat", ["minus_one", "flat_size"], ["flat_shape"], axis=0),
        helper.make_node("Reshape", ["normed", "flat_shape"], ["features"]),
    ]
    graph = helper.make_graph(
        nodes, "bytes", [helper.make_tensor_value_info("bytes", TensorProto.INT32,
                                                       [batch, width])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [batch, width * hidden])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def test_onehot_reduceprod_reducesumsquare_run_on_aic100(tmp_path):
    model = _byte_classifier(batch=2)
    feeds = {"bytes": np.random.default_rng(1).integers(0, 8, (2, 16)).astype(np.int32)}
    got = _compile_run(model, feeds, tmp_path, "-aic-hw", "-convert-to-fp16",
                       "-aic-num-cores=2")
    _assert_fp16_close(got, _ort(model, feeds))


def _batch_reductions(op: str) -> onnx.ModelProto:
    """A sigmoid reduced over the batch (dim 0) by ``op``, beside a per-sample relu."""
    graph = helper.make_graph(
        [helper.make_node("Sigmoid", ["x"], ["p"]),
         helper.make_node(op, ["p"], ["joint"], axes=[0], keepdims=0),
         helper.make_node("Relu", ["x"], ["r"])],
        "batch", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32])],
        [helper.make_tensor_value_info("joint", TensorProto.FLOAT, [32]),
         helper.make_tensor_value_info("r", TensorProto.FLOAT, [4, 32])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("op", ["ReduceProd", "ReduceSumSquare"])
def test_reductions_over_the_batch_keep_it_whole_on_four_cores(op, tmp_path):
    # one program over four cores and a batch of four: a reduction over dim 0 must not be split
    # over data-parallel groups (each would reduce its own sample)
    model = _batch_reductions(op)
    feeds = {"x": np.random.default_rng(2).standard_normal((4, 32)).astype(np.float32)}
    got = _compile_run(model, feeds, tmp_path, "-aic-hw", "-convert-to-fp16",
                       "-aic-num-cores=4", "--backend-option", "multicore=split")
    _assert_fp16_close(got, _ort(model, feeds))


def test_onehot_along_dim_0_does_not_split_the_batch(tmp_path):
    # OneHot with axis 0 puts the classes first: [depth, batch, ...]; with depth == batch the
    # shapes look batch-major, but splitting dim 0 would split the classes
    inits = [numpy_helper.from_array(np.array(4, np.int32), "depth"),
             numpy_helper.from_array(np.array([0.0, 1.0], np.float32), "onoff")]
    graph = helper.make_graph(
        [helper.make_node("OneHot", ["ids", "depth", "onoff"], ["hot"], axis=0),
         helper.make_node("Relu", ["hot"], ["y"])],
        "onehot0", [helper.make_tensor_value_info("ids", TensorProto.INT32, [4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    feeds = {"ids": np.random.default_rng(3).integers(0, 4, (4, 8)).astype(np.int32)}
    got = _compile_run(model, feeds, tmp_path, "-aic-hw", "-convert-to-fp16",
                       "-aic-num-cores=4", "--backend-option", "multicore=split")
    np.testing.assert_array_equal(got["y"], _ort(model, feeds)["y"])


# --- silero-vad on cpu: a branch dead for the bound shapes -----------------------------------

def _shape_guarded_model() -> onnx.ModelProto:
    """Silero VAD's structure in small: an If on an input value whose branch holds another If on
    a shape (``if x.size(1) == 1: x.squeeze(1)``). Once ``l`` is bound to 8 the Squeeze branch is
    dead and no longer type-checks, which made onnxruntime refuse the whole graph."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "l"])
    one = numpy_helper.from_array(np.array([1], np.int64), "one")
    squeeze = helper.make_graph([helper.make_node("Squeeze", ["x", "one"], ["s"])], "squeeze",
                                [], [helper.make_tensor_value_info("s", TensorProto.FLOAT, ["n"])],
                                [one])
    peak = helper.make_graph([helper.make_node("ReduceMax", ["x"], ["m"], axes=[1], keepdims=0)],
                             "peak", [], [helper.make_tensor_value_info("m", TensorProto.FLOAT,
                                                                        ["n"])])
    guarded = helper.make_graph(
        [helper.make_node("Shape", ["x"], ["shape"]),
         helper.make_node("Gather", ["shape", "axis"], ["length"]),
         helper.make_node("Equal", ["length", "unit"], ["single"]),
         helper.make_node("If", ["single"], ["a"], then_branch=squeeze, else_branch=peak)],
        "guarded", [], [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n"])],
        [numpy_helper.from_array(np.array(1, np.int64), "axis"),
         numpy_helper.from_array(np.array(1, np.int64), "unit")])
    mean = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["b"], axes=[1], keepdims=0)],
                             "mean", [], [helper.make_tensor_value_info("b", TensorProto.FLOAT,
                                                                        ["n"])])
    graph = helper.make_graph(
        [helper.make_node("If", ["use_peak"], ["y"], then_branch=guarded, else_branch=mean)],
        "vad", [x, helper.make_tensor_value_info("use_peak", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def test_bound_shapes_that_kill_a_branch_still_load_on_cpu(tmp_path):
    model = _shape_guarded_model()
    path = tmp_path / "vad.onnx"
    onnx.save(model, path)
    qpc = tmp_path / "qpc"
    assert main(["compile", f"-m={path}", f"-aic-binary-dir={qpc}", "--input-shape=x=2,8"]) == 0
    session = aicc.load(qpc)
    x = np.random.default_rng(4).standard_normal((2, 8)).astype(np.float32)
    for flag in (True, False):
        feeds = {"x": x, "use_peak": np.array(flag)}
        np.testing.assert_array_equal(session.run(feeds)["y"], _ort(model, feeds)["y"])


# --- hey-jarvis on aic100: an If chosen by the data ------------------------------------------

def _verified_detector() -> onnx.ModelProto:
    """openWakeWord's hey_jarvis in small: a score, and a verifier run only when the score
    passes 0.5 (an If whose condition is computed from the input's values)."""
    rng = np.random.default_rng(5)
    verify = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w2"], ["v"], transB=1),
         helper.make_node("Sigmoid", ["v"], ["p2"])], "verify", [],
        [helper.make_tensor_value_info("p2", TensorProto.FLOAT, [1, 1])],
        [numpy_helper.from_array(rng.standard_normal((1, 8)).astype(np.float32), "w2")])
    keep = helper.make_graph([helper.make_node("Identity", ["p1"], ["p"])], "keep", [],
                             [helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 1])])
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w1"], ["s"], transB=1),
         helper.make_node("Sigmoid", ["s"], ["p1"]),
         helper.make_node("GreaterOrEqual", ["p1", "half"], ["ge"]),
         helper.make_node("Cast", ["ge"], ["cond"], to=TensorProto.BOOL, name="cast_cond"),
         helper.make_node("If", ["cond"], ["y"], then_branch=verify, else_branch=keep,
                          name="verify_if")],
        "detector", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        [numpy_helper.from_array(rng.standard_normal((1, 8)).astype(np.float32), "w1"),
         numpy_helper.from_array(np.array(0.5, np.float32), "half")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_an_if_chosen_by_the_data_runs_on_aic100_both_branches(tmp_path):
    """predicate-if: both branches computed, a Where picks the taken one, whichever it is."""
    model = _verified_detector()
    qpc = aicc.compile(model, target="aic100", fp16=True, output=tmp_path / "q")
    assert "lower{ops=[If]}" in (qpc / "manifest.json").read_text()
    session = aicc.load(qpc)
    rng = np.random.default_rng(6)
    taken = set()
    for _ in range(40):
        feeds = {"x": (3 * rng.standard_normal((1, 8))).astype(np.float32)}
        want = _ort(model, feeds)
        taken.add(bool(_ort(_score_only(model), feeds)["p1"][0, 0] >= 0.5))
        # probabilities in [0, 1] from an fp16 Gemm and Sigmoid: within 1% (a wrong branch is a
        # different model: its probability differs by far more), 1e-5 near 0 (fp16 subnormals)
        np.testing.assert_allclose(session.run(feeds)["y"], want["y"], rtol=1e-2, atol=1e-5)
    assert taken == {True, False}


def _score_only(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.append(helper.make_tensor_value_info("p1", TensorProto.FLOAT, [1, 1]))
    return m


def test_branches_that_disagree_on_a_shape_are_refused_naming_the_node(tmp_path, capsys):
    model = _verified_detector()
    keep = next(a.g for a in model.graph.node[-1].attribute if a.name == "else_branch")
    # the else branch: a [1, 1] Identity -> a [1, 2] Concat
    keep.node[0].CopyFrom(helper.make_node("Concat", ["p1", "p1"], ["p"], axis=1))
    keep.output[0].CopyFrom(helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 2]))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "k"]))
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    code = main(["compile", f"-m={path}", f"-aic-binary-dir={tmp_path / 'qpc'}", "-aic-hw",
                 "-convert-to-fp16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not (tmp_path / "qpc").exists()
    assert len(err) == 1 and "predicate-if: node 'verify_if' (If): output 'y'" in err[0], err
    assert "[1, 1] from the then branch" in err[0] and "[1, 2] from the else branch" in err[0]
    assert "interpreter, cpu" in err[0]


def test_an_if_chosen_by_the_data_runs_on_cpu(tmp_path):
    model = _verified_detector()
    feeds = {"x": np.random.default_rng(6).standard_normal((1, 8)).astype(np.float32)}
    got = _compile_run(model, feeds, tmp_path)
    np.testing.assert_allclose(got["y"], _ort(model, feeds)["y"], rtol=1e-6)


def test_a_graph_onnxruntime_refuses_for_another_reason_is_still_refused(tmp_path, capsys):
    # the retry with free shapes is for bound shapes only: a branch with an op onnxruntime has
    # no CPU kernel for (Max of int16) fails both ways, and the first refusal is reported
    i16 = [2, 2]
    bad = helper.make_graph([helper.make_node("Max", ["a", "b"], ["m"])], "bad", [],
                            [helper.make_tensor_value_info("m", TensorProto.INT16, i16)])
    good = helper.make_graph([helper.make_node("Identity", ["a"], ["g"])], "good", [],
                             [helper.make_tensor_value_info("g", TensorProto.INT16, i16)])
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=bad, else_branch=good, name="pick")],
        "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
              helper.make_tensor_value_info("a", TensorProto.INT16, i16),
              helper.make_tensor_value_info("b", TensorProto.INT16, i16)],
        [helper.make_tensor_value_info("y", TensorProto.INT16, i16)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "bad.onnx"
    onnx.save(model, path)
    code = main(["compile", f"-m={path}", f"-aic-binary-dir={tmp_path / 'qpc'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and not (tmp_path / "qpc").exists()
    assert len(err) == 1 and "onnxruntime cannot load the graph" in err[0], err
    assert "Max" in err[0]


def _chained_ifs() -> onnx.ModelProto:
    """silero-vad op15's decoder in small: If_1's taken branch fixes the shape that If_2's
    condition reads, and the exporter declared that shape with a stale symbol ('m')."""
    def branch(name, nodes, out, shape):
        return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(
            out, TensorProto.FLOAT, shape or ["k"])])
    then1 = branch("then1", [helper.make_node("Concat", ["x", "x"], ["t1"], axis=0)], "t1", None)
    else1 = branch("else1", [helper.make_node("Identity", ["x"], ["e1"])], "e1", None)
    then2 = branch("then2", [helper.make_node("Relu", ["y"], ["t2"])], "t2", None)
    else2 = branch("else2", [helper.make_node("Neg", ["y"], ["e2"])], "e2", None)
    c = lambda name, v: helper.make_node("Constant", [], [name], value=numpy_helper.from_array(  # noqa: E731
        np.array(v, dtype=np.int64)))
    nodes = [
        helper.make_node("Shape", ["x"], ["sx"]), c("zero", 0), c("four", 4), c("eight", 8),
        helper.make_node("Gather", ["sx", "zero"], ["nx"], axis=0),
        helper.make_node("Equal", ["nx", "four"], ["c1"]),
        helper.make_node("If", ["c1"], ["y"], then_branch=then1, else_branch=else1),
        helper.make_node("Shape", ["y"], ["sy"]),
        helper.make_node("Gather", ["sy", "zero"], ["ny"], axis=0),
        helper.make_node("Equal", ["ny", "eight"], ["c2"]),
        helper.make_node("If", ["c2"], ["z"], then_branch=then2, else_branch=else2),
    ]
    graph = helper.make_graph(
        nodes, "chained", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["k"])],
        value_info=[helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m"])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], ir_version=8)


def test_an_if_decided_by_another_ifs_branch_folds_on_aic100(tmp_path):
    """Both conditions depend on shapes only once n is bound; the second only after the first
    If is folded and shapes are inferred afresh (not from the stale 'm')."""
    model = _chained_ifs()
    x = np.linspace(-1, 1, 4, dtype=np.float32)
    want = _ort(model, {"x": x})
    qpc = aicc.compile(model, target="aic100", fp16=True, symbols={"n": 4},
                       output=tmp_path / "q")
    got = aicc.load(qpc).run({"x": x})
    _assert_fp16_close(got, want)
    assert "lower{ops=[If]}" in (qpc / "manifest.json").read_text()


def test_quantized_model_with_a_dead_branch_loads_in_onnxruntime(tmp_path, capsys):
    """silero-vad int8: `aicc quantize --input_dim` binds the shapes that kill a branch; the
    written model keeps its dims free so onnxruntime loads it, and says so."""
    model = _shape_guarded_model()
    path = tmp_path / "vad.onnx"
    onnx.save(model, path)
    rng = np.random.default_rng(5)
    lines = []
    for i in range(4):
        rng.standard_normal((2, 8)).astype(np.float32).tofile(tmp_path / f"x{i}.raw")
        np.array(i % 2 == 0).tofile(tmp_path / f"p{i}.raw")
        lines.append(f"x:={tmp_path / f'x{i}.raw'} use_peak:={tmp_path / f'p{i}.raw'}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "q.onnx"
    assert main(["quantize", "--input_model", str(path), "--output_model", str(out),
                 "--input_list", str(tmp_path / "list.txt"), "--input_dim", "x", "2,8"]) == 0
    err = capsys.readouterr().err
    assert "written with free input and output dims" in err and "warning" not in err
    feeds = {"x": rng.standard_normal((2, 8)).astype(np.float32), "use_peak": np.array(True)}
    got = _ort(onnx.load(out), feeds)["y"]
    np.testing.assert_allclose(got, _ort(model, feeds)["y"], atol=0.05)


def test_predicate_if_preserves_the_function(registries):
    from aicc.testing import check_pass
    check_pass(_verified_detector(), "predicate-if", registries=registries)
