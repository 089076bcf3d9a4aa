"""If, Loop and Scan on the interpreter: bodies reading outer-scope values, liveness of those
values, observers seeing body tensors by qualified name, and the default pipeline's passes
keeping what only a body reads. References are onnxruntime on the same model (exact: the bodies
here are elementwise float32 arithmetic that both compute identically)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import aicc
from aicc.backends.interpreter import Interpreter
from aicc.errors import BackendError
from aicc.testing import check_pass, run_pass

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from control_builders import if_model, loop_model, scan_model  # noqa: E402


def _ort(model: onnx.ModelProto, feeds: dict) -> dict:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def _same(got: dict, ref: dict) -> None:
    assert set(got) == set(ref)
    for name, want in ref.items():
        assert got[name].shape == want.shape and got[name].dtype == want.dtype, name
        np.testing.assert_allclose(got[name], want, rtol=1e-6, atol=1e-6, err_msg=name)


X23 = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)


@pytest.mark.parametrize("cond", [True, False])
def test_if_branches_read_outer_values(cond):
    model = if_model()
    feeds = {"x": X23, "c": np.array(cond)}
    got = Interpreter(model).run(feeds)
    _same(got, _ort(model, feeds))
    expected = X23 * 2 + np.arange(6, dtype=np.float32).reshape(2, 3) if cond else \
        np.ones((2, 3), np.float32)
    np.testing.assert_allclose(got["y"], expected, rtol=1e-6)


def test_outer_values_stay_alive_until_the_if_runs():
    """'a' and 'b' are read only inside the branches: they die after the If, not before."""
    steps = Interpreter(if_model()).schedule()
    order = [s.name for s in steps]
    assert order[-1] == "if_node"
    freed_by_if = set(steps[-1].frees)
    assert {"a", "b"} <= freed_by_if
    assert not any({"a", "b"} & set(s.frees) for s in steps[:-1])


@pytest.mark.parametrize("trip, expect_steps", [(4, 4), (0, 0), (1, 1)])
def test_loop_carried_state_and_scan_outputs(trip, expect_steps):
    model = loop_model(trip=None)
    feeds = {"x": np.array([1.0, -2.0, 0.5], np.float32), "n": np.array(trip, np.int64)}
    got = Interpreter(model).run(feeds)
    _same(got, _ort(model, feeds))
    assert got["accs"].shape == (expect_steps, 3)


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_state_and_outputs(reverse):
    model = scan_model(reverse=reverse)
    feeds = {"x": np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)}
    _same(Interpreter(model).run(feeds), _ort(model, feeds))


def _nested_model() -> onnx.ModelProto:
    """A Loop whose body holds an If whose then-branch reads ``w`` from the top-level graph."""
    then_g = helper.make_graph([helper.make_node("Add", ["acc_in", "w"], ["t"], name="t_add")],
                               "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT,
                                                                          [2])])
    else_g = helper.make_graph([helper.make_node("Sub", ["acc_in", "w"], ["e"], name="e_sub")],
                               "else", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT,
                                                                          [2])])
    body = helper.make_graph(
        [helper.make_node("Less", ["i", "two"], ["early"], name="early"),
         helper.make_node("If", ["early"], ["acc_out"], name="inner_if", then_branch=then_g,
                          else_branch=else_g),
         helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep")],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [2])])
    inits = [numpy_helper.from_array(np.array(5, np.int64), "n"),
             numpy_helper.from_array(np.array(True), "go"),
             numpy_helper.from_array(np.array(2, np.int64), "two")]
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "x"], ["w"], name="square"),
         helper.make_node("Loop", ["n", "go", "x"], ["y"], name="outer_loop", body=body)],
        "nested", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_nested_bodies_read_the_top_level_scope():
    model = _nested_model()
    feeds = {"x": np.array([1.5, -0.5], np.float32)}
    _same(Interpreter(model).run(feeds), _ort(model, feeds))


def test_observers_see_body_tensors_with_qualified_names():
    interp = Interpreter(_nested_model())
    assert "outer_loop/acc_in" in interp.inner_tensor_names()
    assert "outer_loop/inner_if/t" in interp.inner_tensor_names()
    seen: list[tuple[str, np.ndarray]] = []
    interp.run({"x": np.array([1.0, 2.0], np.float32)},
               observe=lambda name, value: seen.append((name, value.copy())))
    names = [n for n, _ in seen]
    assert names.count("outer_loop/early") == 5  # once per iteration
    assert names.count("outer_loop/inner_if/t") == 2 and names.count("outer_loop/inner_if/e") == 3
    assert names[-1] == "y"


def test_observe_names_may_pick_one_body_tensor():
    interp = Interpreter(loop_model())
    seen = []
    out = interp.run({"x": np.ones(3, np.float32)}, observe=lambda n, v: seen.append(n),
                     observe_names=["loop_node/xi"], outputs=["acc"])
    assert seen == ["loop_node/xi"] * 4
    assert out["acc"].shape == (3,)


def test_unsupported_op_in_a_body_is_named_with_its_path():
    model = if_model()
    then_g = next(a.g for a in model.graph.node[-1].attribute if a.name == "then_branch")
    then_g.node[0].op_type = "Hardmax"  # an op without an interpreter kernel
    problems = Interpreter.unsupported_nodes(model)
    assert problems == ["node 'if_node/then_add' (Hardmax)"]
    with pytest.raises(BackendError, match="if_node/then_add"):
        Interpreter(model)


# --- the default pipeline's passes on graphs with bodies --------------------------------------

def test_cleanup_keeps_nodes_only_a_branch_reads(registries):
    """Regression guard: 'mul' and 'add' feed nothing but the If's branches."""
    program = run_pass(if_model(), "cleanup", registries=registries)
    names = {n.name for n in program.graph().nodes}
    assert {"mul", "add", "if_node"} <= names
    check_pass(if_model(), "cleanup", registries=registries,
               feeds=[{"x": X23, "c": np.array(True)}, {"x": X23, "c": np.array(False)}])


@pytest.mark.parametrize("name", ["fold-constants", "fold-batchnorm", "cleanup"])
@pytest.mark.parametrize("build", [loop_model, scan_model, _nested_model])
def test_default_passes_preserve_bodies(registries, name, build):
    check_pass(build(), name, registries=registries)


@pytest.mark.parametrize("backend", ["interpreter", "cpu"])
@pytest.mark.parametrize("cond", [True, False])
def test_public_path_runs_if_models(backend, cond, tmp_path):
    model = if_model()
    feeds = {"x": X23, "c": np.array(cond)}
    qpc = aicc.compile(model, backend=backend, output=tmp_path / "m.qpc")
    _same(aicc.load(qpc).run(feeds), _ort(model, feeds))


def test_public_path_runs_a_nested_loop_on_the_interpreter(tmp_path):
    model = _nested_model()
    feeds = {"x": np.array([0.25, 3.0], np.float32)}
    qpc = aicc.compile(model, backend="interpreter", output=tmp_path / "m.qpc")
    _same(aicc.load(qpc).run(feeds), _ort(model, feeds))


def test_folding_a_value_only_a_branch_reads(registries):
    """k = two + one is constant and read only inside the then-branch: fold-constants turns it
    into a constant the branch still reads, and cleanup keeps it."""
    model = if_model()
    model.graph.node.insert(0, helper.make_node("Add", ["two", "one"], ["k"], name="k_add"))
    then_g = next(a.g for a in model.graph.node[-1].attribute if a.name == "then_branch")
    then_g.node[0].input[1] = "k"
    onnx.checker.check_model(model)
    feeds = [{"x": X23, "c": np.array(True)}, {"x": X23, "c": np.array(False)}]
    program = check_pass(model, "fold-constants", registries=registries, feeds=feeds)
    assert "k_add" not in {n.name for n in program.graph().nodes}
    program = check_pass(program.to_model(), "cleanup", registries=registries, feeds=feeds)
    got = Interpreter(program.to_model()).run(feeds[0])
    np.testing.assert_allclose(got["y"], X23 * 2 + 3, rtol=1e-6)


@pytest.mark.parametrize("direction", [0, 1])
def test_opset8_scan_with_sequence_lens(direction):
    """Scan of opset 8: batch axis first, per-entry lengths, zeros past a length."""
    F = TensorProto.FLOAT
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "row"], ["s_out"], name="sum"),
         helper.make_node("Identity", ["s_out"], ["y_t"], name="emit")], "body",
        [helper.make_tensor_value_info("s_in", F, [2]),
         helper.make_tensor_value_info("row", F, [2])],
        [helper.make_tensor_value_info("s_out", F, [2]),
         helper.make_tensor_value_info("y_t", F, [2])])
    node = helper.make_node("Scan", ["lens", "s0", "x"], ["s", "ys"], name="scan8", body=body,
                            num_scan_inputs=1, directions=[direction])
    graph = helper.make_graph(
        [node], "scan8",
        [helper.make_tensor_value_info("lens", TensorProto.INT64, [3]),
         helper.make_tensor_value_info("s0", F, [3, 2]),
         helper.make_tensor_value_info("x", F, [3, 4, 2])],
        [helper.make_tensor_value_info("s", F, [3, 2]),
         helper.make_tensor_value_info("ys", F, [3, 4, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)])
    model.ir_version = 4
    feeds = {"lens": np.array([4, 2, 1], np.int64), "s0": np.ones((3, 2), np.float32),
             "x": np.arange(24, dtype=np.float32).reshape(3, 4, 2)}
    _same(Interpreter(model).run(feeds), _ort(model, feeds))



def test_bodies_share_check_types_and_profile():
    interp = Interpreter(_nested_model(), check_types=True, profile=True)
    interp.run({"x": np.array([1.0, 2.0], np.float32)})
    assert interp.op_times["Loop"][0] == 1
    assert interp.op_times["If"][0] == 5 and interp.op_times["Less"][0] == 5
    # a body tensor contradicting its declared type is caught inside the body
    model = loop_model()
    body = model.graph.node[0].attribute[0].g
    body.output[1].type.tensor_type.elem_type = TensorProto.DOUBLE
    with pytest.raises(BackendError, match="acc_out.*declares float64"):
        Interpreter(model, check_types=True).run({"x": np.ones(3, np.float32)})


def test_fold_batchnorm_respects_a_reader_inside_a_branch(registries):
    """The Conv output feeds the BatchNormalization and, inside a branch, an If: folding the BN
    into the Conv would change what the branch reads, so the fold must not happen."""
    from builders import conv_bn_model

    model = conv_bn_model(act=None)
    F = TensorProto.FLOAT
    then_g = helper.make_graph([helper.make_node("Neg", ["y"], ["t"], name="t_neg")], "then",
                               [], [helper.make_tensor_value_info("t", F, [1, 6, 5, 5])])
    else_g = helper.make_graph([helper.make_node("Abs", ["y"], ["e"], name="e_abs")], "else",
                               [], [helper.make_tensor_value_info("e", F, [1, 6, 5, 5])])
    model.graph.node.append(helper.make_node("If", ["c"], ["branch"], name="uses_conv",
                                             then_branch=then_g, else_branch=else_g))
    model.graph.input.append(helper.make_tensor_value_info("c", TensorProto.BOOL, []))
    model.graph.output.append(helper.make_tensor_value_info("branch", F, [1, 6, 5, 5]))
    x = np.random.default_rng(0).standard_normal((1, 4, 5, 5)).astype(np.float32)
    program = check_pass(model, "fold-batchnorm", registries=registries,
                         feeds=[{"x": x, "c": np.array(True)}, {"x": x, "c": np.array(False)}])
    assert "bn" in {n.name for n in program.graph().nodes}
