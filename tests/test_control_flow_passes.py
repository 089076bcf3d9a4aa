"""``fold-if`` and ``unroll-loops`` (passes/lowering/fold_if.py, passes/lowering/unroll_loops.py): structure, semantics (check_pass on the interpreter and
onnxruntime), no-op and refusals; and the compile driver adding the lowering passes for a
backend whose op table lacks If/Loop/Scan/LSTM (aic100), through the public path."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import aicc
from aicc.cli import main
from aicc.compiler import lowering_request
from aicc.passes.lowering.lower import lowering_sequence
from aicc.errors import AiccError
from aicc.testing import check_pass, run_pass
from control_builders import if_model, loop_model, rnn_model, scan_model

X23 = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)


def _ops(program) -> collections.Counter:
    return collections.Counter(n.op for n in program.graph().nodes)


def _ort(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


# --- fold-if -----------------------------------------------------------------------------------

def test_fold_if_inlines_the_taken_branch(registries):
    program = check_pass(if_model(cond_from="constant"), "fold-if", registries=registries)
    graph = program.graph()
    assert _ops(program) == {"Mul": 1, "Add": 1, "Identity": 1}
    names = {n.name for n in graph.nodes}
    assert "mul" in names and "add" not in names  # the else branch's input is dead now
    assert "if_node/then_add" in names
    assert [t.name for t in graph.outputs] == ["y"]


def test_fold_if_leaves_a_dynamic_condition(registries):
    program = run_pass(if_model(cond_from="data"), "fold-if", registries=registries)
    assert _ops(program)["If"] == 1


def test_fold_if_strict_refuses_a_dynamic_condition(registries):
    with pytest.raises(AiccError, match=r"node 'if_node' \(If\): the condition 'c' is not a "
                                        r"constant \(computed by node 'gt' \(Greater\)\)"):
        run_pass(if_model(cond_from="data"), "fold-if", {"strict": True}, registries=registries)


def test_fold_if_after_fold_constants_folds_a_computed_condition(registries):
    from aicc.pipeline import Pipeline, run_pipeline
    from aicc.program import Program
    from aicc import ir

    model = if_model(cond_from="data")
    # make the condition's input a constant: ReduceSum(w) > 0 instead of ReduceSum(x)
    model.graph.node[2].input[0] = "w"
    program = Program.from_model(ir.load_model(model.SerializeToString()))
    pipeline = Pipeline.build(["fold-constants", ("fold-if", {"strict": True}), "cleanup"],
                              registries.passes)
    program = run_pipeline(pipeline, program, registries=registries)
    assert "If" not in _ops(program)


# --- unroll-loops ------------------------------------------------------------------------------

def test_unroll_loop_structure_and_numbers(registries):
    program = check_pass(loop_model(trip=4), "unroll-loops", registries=registries)
    ops = _ops(program)
    assert "Loop" not in ops and ops["Cast"] == 4 and ops["Concat"] == 1
    assert [t.name for t in program.graph().outputs] == ["acc", "accs"]


@pytest.mark.parametrize("trip", [0, 1])
def test_unroll_short_loops(registries, trip):
    model = loop_model(trip=trip)
    if trip == 0:  # zero iterations with a scan output: its shape is unknown
        with pytest.raises(AiccError, match="runs zero times and has scan outputs"):
            run_pass(model, "unroll-loops", registries=registries)
    else:
        check_pass(model, "unroll-loops", registries=registries)


@pytest.mark.parametrize("reverse", [False, True])
def test_unroll_scan(registries, reverse):
    program = check_pass(scan_model(reverse=reverse), "unroll-loops", registries=registries)
    assert "Scan" not in _ops(program) and _ops(program)["Gather"] == 5


def test_unroll_nested_loop_with_if(registries):
    from interpreter.test_interp_control import _nested_model

    program = check_pass(_nested_model(), "unroll-loops", registries=registries)
    assert _ops(program)["If"] == 5  # one copy of the inner If per iteration


def test_unroll_refuses_a_dynamic_trip_count(registries):
    with pytest.raises(AiccError, match=r"node 'loop_node' \(Loop\): the trip count 'n' is not a "
                                        r"constant"):
        run_pass(loop_model(trip=None), "unroll-loops", registries=registries)
    program = run_pass(loop_model(trip=None), "unroll-loops", {"strict": False},
                       registries=registries)
    assert _ops(program) == {"Loop": 1}  # no-op when not strict


def test_unroll_refuses_a_condition_computed_in_the_body(registries):
    model = loop_model(trip=3)
    body = model.graph.node[0].attribute[0].g
    keep = next(n for n in body.node if n.name == "keep")
    keep.op_type = "Not"
    with pytest.raises(AiccError, match="the body computes its condition 'cond_out'"):
        run_pass(model, "unroll-loops", registries=registries)


def test_unroll_limit(registries):
    with pytest.raises(AiccError, match=r"4 iterations exceed the unrolling limit of 3.*"
                                        r"max_iterations=4"):
        run_pass(loop_model(trip=4), "unroll-loops", {"max_iterations": 3},
                 registries=registries)
    with pytest.raises(AiccError, match=r"4 iterations of a 6-node body make 24 nodes, beyond "
                                        r"the limit of 20.*max_nodes=24"):
        run_pass(loop_model(trip=4), "unroll-loops", {"max_nodes": 20}, registries=registries)


def test_unroll_no_op_without_loops(registries):
    program = run_pass(if_model(), "unroll-loops", registries=registries)
    assert _ops(program) == {"Mul": 1, "Add": 1, "If": 1}


# --- the compile driver ------------------------------------------------------------------------

def test_lowering_steps_follow_the_backend_table(registries):
    from aicc.backends.aic100 import Aic100Backend
    from aicc.backends.cpu import CpuBackend
    from aicc.backends.interpreter import InterpreterBackend

    lstm = onnx.shape_inference.infer_shapes(rnn_model("LSTM"))
    assert lowering_request(InterpreterBackend(), lstm, registries) is None
    assert lowering_request(CpuBackend(), lstm, registries) is None
    assert lowering_request(Aic100Backend(), lstm, registries).options == {"ops": ["LSTM"]}
    assert lowering_sequence(frozenset({"LSTM"}), registries.passes) == [
        ("fold-constants", {}), ("lower-rnn", {"ops": ["LSTM"]})]
    from interpreter.test_interp_control import _nested_model
    request = lowering_request(Aic100Backend(), _nested_model(), registries)
    names = [n for n, _ in lowering_sequence(frozenset(request.options["ops"]),
                                             registries.passes)]
    assert names == ["fold-constants", "fold-if", "unroll-loops", "fold-constants", "fold-if",
                     "predicate-if"]


def test_lstm_runs_on_aic100_in_fp16_after_lowering(tmp_path):
    """The public path: -convert-to-fp16 on aic100 (no LSTM in its table) against
    onnxruntime on the original model; fp16 tolerance 2e-2 relative to the output range."""
    model = rnn_model("LSTM", seq=6, batch=2, inp=3, hidden=5, direction="bidirectional",
                      lens=[6, 4], initial=True, peepholes=True)
    path = tmp_path / "lstm.onnx"
    onnx.save(model, path)
    assert main(["compile", f"-m={path}", f"-aic-binary-dir={tmp_path / 'qpc'}", "-aic-hw",
                 "-convert-to-fp16", "-aic-num-cores=2"]) == 0
    manifest = (tmp_path / "qpc" / "manifest.json").read_text()
    assert "lower{ops=[LSTM]}" in manifest
    x = np.random.default_rng(7).standard_normal((6, 2, 3)).astype(np.float32)
    got = aicc.load(tmp_path / "qpc").run({"X": x})
    ref = _ort(model, {"X": x})
    for name, want in ref.items():
        scale = float(np.abs(want).max())
        np.testing.assert_allclose(got[name].astype(np.float32), want, rtol=0,
                                   atol=2e-2 * scale, err_msg=name)


@pytest.mark.parametrize("build, feeds", [
    (lambda: loop_model(trip=3), {"x": np.array([1.0, 2.0, -1.0], np.float32)}),
    (lambda: scan_model(reverse=True), {"x": np.arange(15, dtype=np.float32).reshape(5, 3)}),
    (lambda: if_model(cond_from="constant"), {"x": X23}),
])
def test_control_flow_runs_on_aic100_after_lowering(tmp_path, build, feeds):
    model = build()
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    assert main(["compile", f"-m={path}", f"-aic-binary-dir={tmp_path / 'qpc'}", "-aic-hw",
                 "-convert-to-fp16"]) == 0
    got = aicc.load(tmp_path / "qpc").run(feeds)
    for name, want in _ort(model, feeds).items():
        np.testing.assert_allclose(got[name].astype(np.float32), want, rtol=0,
                                   atol=2e-3 * float(np.abs(want).max()), err_msg=name)


def test_dynamic_if_on_aic100_runs_both_branches_and_selects(tmp_path):
    """An If chosen by the data (ReduceSum(x) > 0) is predicated on aic100 (predicate-if): both
    branches computed, Where picks the taken one; either way the result is onnxruntime's."""
    import onnxruntime as ort
    model = if_model(cond_from="data")
    qpc = aicc.compile(model, target="aic100", fp16=True, output=tmp_path / "q")
    session = aicc.load(qpc)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for sign in (1.0, -1.0):
        x = (sign * np.abs(np.random.default_rng(1).standard_normal((2, 3)))).astype(np.float32)
        want = ref.run(None, {"x": x})[0]
        np.testing.assert_allclose(session.run({"x": x})["y"], want, rtol=2e-3, atol=2e-3)


def test_explicit_pipeline_without_lowering_is_refused_up_front(tmp_path):
    fp16 = ("convert-fp16", {"all": True})
    with pytest.raises(AiccError, match=r"backend 'aic100' cannot run: node 'rnn' \(LSTM\)"):
        aicc.compile(rnn_model("LSTM"), backend="aic100", pipeline=[fp16, "cleanup"],
                     output=tmp_path / "m.qpc")
    assert not (tmp_path / "m.qpc").exists()
    qpc = aicc.compile(rnn_model("LSTM"), backend="aic100",
                       pipeline=["lower-rnn", fp16, "cleanup"], output=tmp_path / "m2.qpc")
    assert qpc.exists()


def test_streaming_lstm_with_state_inputs_on_aic100(tmp_path):
    """A voice-activity-style model: one step per call, (h, c) fed in and returned."""
    model = rnn_model("LSTM", seq=1, batch=1, inp=8, hidden=16, state_inputs=True)
    path = tmp_path / "vad.onnx"
    onnx.save(model, path)
    assert main(["compile", f"-m={path}", f"-aic-binary-dir={tmp_path / 'qpc'}", "-aic-hw",
                 "-convert-to-fp16"]) == 0
    session = aicc.load(tmp_path / "qpc")
    rng = np.random.default_rng(3)
    h = c = np.zeros((1, 1, 16), np.float32)
    h_ref = c_ref = h
    for _ in range(4):  # the states travel through four calls
        x = rng.standard_normal((1, 1, 8)).astype(np.float32)
        got = session.run({"X": x, "H0": h, "C0": c})
        ref = _ort(model, {"X": x, "H0": h_ref, "C0": c_ref})
        h, c = got["Y_h"].astype(np.float32), got["Y_c"].astype(np.float32)
        h_ref, c_ref = ref["Y_h"], ref["Y_c"]
        np.testing.assert_allclose(h, h_ref, rtol=0, atol=1e-2)
        np.testing.assert_allclose(c, c_ref, rtol=0, atol=1e-2)


def test_symbolic_sequence_length_bound_on_the_command_line(tmp_path, capsys):
    """lower-rnn runs after bind-symbols: -onnx-define-symbol makes the length static; without
    it the compile is refused naming the node and the flag to use."""
    model = rnn_model("GRU", direction="bidirectional")
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_param, dims[1].dim_param = "T", "B"
    path = tmp_path / "gru.onnx"
    onnx.save(model, path)
    code = main(["compile", f"-m={path}", f"-aic-binary-dir={tmp_path / 'no'}", "-aic-hw",
                 "-convert-to-fp16", "-onnx-define-symbol=B,2"])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "no").exists()
    assert "node 'rnn' (GRU): the sequence length of 'X' is not static" in err
    assert main(["compile", f"-m={path}", f"-aic-binary-dir={tmp_path / 'qpc'}", "-aic-hw",
                 "-convert-to-fp16", "-onnx-define-symbol=B,2", "-onnx-define-symbol=T,5"]) == 0
    x = np.random.default_rng(1).standard_normal((5, 2, 3)).astype(np.float32)
    got = aicc.load(tmp_path / "qpc").run({"X": x})
    for name, want in _ort(model, {"X": x}).items():
        np.testing.assert_allclose(got[name].astype(np.float32), want, rtol=0, atol=1e-2)


def test_trip_count_from_a_bound_shape_unrolls_on_aic100(tmp_path):
    """n = Shape(x)[0] with x's first dimension symbolic: bound on the command line, the
    driver's fold-constants makes the trip count a constant before unroll-loops."""
    from onnx import TensorProto, helper, numpy_helper

    F = TensorProto.FLOAT
    body = onnx.helper.make_graph(
        [helper.make_node("Gather", ["x", "i"], ["row"], name="row", axis=0),
         helper.make_node("Add", ["acc_in", "row"], ["acc_out"], name="acc"),
         helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep")], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", F, [3])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", F, [3])])
    graph = helper.make_graph(
        [helper.make_node("Shape", ["x"], ["shape"], name="shape"),
         helper.make_node("Gather", ["shape", "zero"], ["n"], name="n", axis=0),
         helper.make_node("Loop", ["n", "", "acc0"], ["total"], name="rows", body=body)],
        "rowsum", [helper.make_tensor_value_info("x", F, ["N", 3])],
        [helper.make_tensor_value_info("total", F, [3])],
        [numpy_helper.from_array(np.array(0, np.int64), "zero"),
         numpy_helper.from_array(np.zeros(3, np.float32), "acc0")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "rowsum.onnx"
    onnx.save(model, path)
    assert main(["compile", f"-m={path}", f"-aic-binary-dir={tmp_path / 'qpc'}", "-aic-hw",
                 "-convert-to-fp16", "-onnx-define-symbol=N,4"]) == 0
    x = np.arange(12, dtype=np.float32).reshape(4, 3) / 8
    got = aicc.load(tmp_path / "qpc").run({"x": x})
    np.testing.assert_allclose(got["total"].astype(np.float32), x.sum(0), rtol=2e-3)


def test_interpreter_table_lists_the_new_ops():
    from aicc.backends.interpreter import InterpreterBackend

    new = {"If", "Loop", "Scan", "LSTM", "GRU", "RNN", "ConvInteger", "MatMulInteger",
           "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul"}
    assert new <= InterpreterBackend.op_types


def _crnn_model() -> onnx.ModelProto:
    """A small CRNN text-recognizer head: Conv + Relu over a [1, 1, 8, 12] image, columns as
    time steps, a bidirectional LSTM, a MatMul to 6 classes and Softmax (as OCR models end)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(11)
    hidden, classes = 6, 6
    inits = {
        "conv_w": rng.uniform(-0.5, 0.5, (4, 1, 3, 3)), "conv_b": rng.uniform(-0.1, 0.1, 4),
        "W": rng.uniform(-0.4, 0.4, (2, 4 * hidden, 32)),
        "R": rng.uniform(-0.4, 0.4, (2, 4 * hidden, hidden)),
        "B": rng.uniform(-0.2, 0.2, (2, 8 * hidden)),
        "fc": rng.uniform(-0.5, 0.5, (2 * hidden, classes)),
    }
    initializers = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()]
    initializers.append(numpy_helper.from_array(np.array([12, 1, 32], np.int64), "seq_shape"))
    initializers.append(numpy_helper.from_array(np.array([12, 1, 2 * hidden], np.int64),
                                                "y_shape"))
    nodes = [
        helper.make_node("Conv", ["img", "conv_w", "conv_b"], ["f"], name="conv",
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["f"], ["fr"], name="relu"),
        helper.make_node("Transpose", ["fr"], ["cols"], name="cols", perm=[3, 0, 1, 2]),
        helper.make_node("Reshape", ["cols", "seq_shape"], ["seq"], name="seq"),
        helper.make_node("LSTM", ["seq", "W", "R", "B"], ["y"], name="bilstm", hidden_size=hidden,
                         direction="bidirectional"),
        helper.make_node("Transpose", ["y"], ["yt"], name="yt", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["yt", "y_shape"], ["feat"], name="feat"),
        helper.make_node("MatMul", ["feat", "fc"], ["logits"], name="fc"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(nodes, "crnn",
                              [helper.make_tensor_value_info("img", TensorProto.FLOAT,
                                                             [1, 1, 8, 12])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT,
                                                             [12, 1, classes])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("backend", ["interpreter", "aic100"])
def test_crnn_head_runs_on_every_backend(tmp_path, backend):
    model = _crnn_model()
    path = tmp_path / "crnn.onnx"
    onnx.save(model, path)
    flags = ["-aic-hw", "-convert-to-fp16", "-aic-num-cores=2"] if backend == "aic100" else \
        [f"--backend={backend}"]
    assert main(["compile", f"-m={path}", f"-aic-binary-dir={tmp_path / 'qpc'}", *flags]) == 0
    img = np.random.default_rng(2).uniform(0, 1, (1, 1, 8, 12)).astype(np.float32)
    got = aicc.load(tmp_path / "qpc").run({"img": img})["probs"].astype(np.float32)
    want = _ort(model, {"img": img})["probs"]
    atol = 1e-2 if backend == "aic100" else 1e-5  # fp16 on the device
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)
    assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.9


def test_lstm_weights_built_by_nodes_are_folded_before_lowering(tmp_path):
    """Exporters often write W = Unsqueeze(Constant) (Silero VAD's OpenVINO model does): the
    driver's fold-constants makes it a constant before lower-rnn (which refuses otherwise)."""
    from onnx import helper, numpy_helper

    model = rnn_model("LSTM", seq=3, batch=1, hidden=4)
    w = next(i for i in model.graph.initializer if i.name == "W")
    w2d = numpy_helper.to_array(w)[0]
    model.graph.initializer.remove(w)
    model.graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), "axis0"))
    model.graph.node.insert(0, helper.make_node(
        "Constant", [], ["W2d"], name="w_const", value=numpy_helper.from_array(w2d, "W2d")))
    model.graph.node.insert(1, helper.make_node("Unsqueeze", ["W2d", "axis0"], ["W"],
                                                name="w_unsqueeze"))
    onnx.checker.check_model(model)
    path = tmp_path / "lstm.onnx"
    onnx.save(model, path)
    with pytest.raises(AiccError, match="W 'W' is not a constant"):
        run_pass(model, "lower-rnn")
    assert main(["compile", f"-m={path}", f"-aic-binary-dir={tmp_path / 'qpc'}", "-aic-hw",
                 "-convert-to-fp16"]) == 0
    x = np.random.default_rng(5).standard_normal((3, 1, 3)).astype(np.float32)
    got = aicc.load(tmp_path / "qpc").run({"X": x})
    for name, want in _ort(model, {"X": x}).items():
        np.testing.assert_allclose(got[name].astype(np.float32), want, rtol=0, atol=1e-2)


def test_a_user_pipeline_may_unroll_before_folding_ifs(tmp_path):
    from interpreter.test_interp_control import _nested_model

    model = _nested_model()
    pipeline = ["unroll-loops", "fold-constants", ("fold-if", {"strict": True}),
                ("convert-fp16", {"all": True}), "cleanup"]
    qpc = aicc.compile(model, backend="aic100", pipeline=pipeline, output=tmp_path / "m.qpc")
    x = np.array([0.5, -1.5], np.float32)
    got = aicc.load(qpc).run({"x": x})["y"].astype(np.float32)
    np.testing.assert_allclose(got, _ort(model, {"x": x})["y"], rtol=2e-3)
