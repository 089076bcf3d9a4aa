"""``lower-rnn`` (passes/lowering/lower_rnn.py, with its cell equations in passes/lowering/rnn_cells.py and node
emission in passes/lowering/emit.py): structure of the lowered graph, semantics on random inputs
(check_pass on the interpreter and onnxruntime, rtol 1e-4 / atol 1e-5), no-op and refusals."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aicc.errors import AiccError, ConfigError
from aicc.testing import check_pass, run_pass
from control_builders import rnn_model

#: what a lowered recurrent node may consist of (all in aic100's op table)
ELEMENTARY = {"MatMul", "Add", "Sub", "Mul", "Div", "Sigmoid", "Tanh", "Relu", "LeakyRelu",
              "HardSigmoid", "Abs", "Neg", "Exp", "Log", "Min", "Max", "Where", "Less", "Greater",
              "Gather", "Reshape", "Concat", "Transpose", "Identity", "Cast"}


def _ops(program) -> collections.Counter:
    return collections.Counter(n.op for n in program.graph().nodes)


def test_structure_of_a_lowered_lstm(registries):
    program = run_pass(rnn_model("LSTM", seq=4, direction="bidirectional"), "lower-rnn",
                       registries=registries)
    ops = _ops(program)
    assert "LSTM" not in ops and set(ops) <= ELEMENTARY
    # per direction: one input MatMul per gate over all steps, one recurrent MatMul per gate
    # per step after the first (a zero initial state has no recurrent term)
    assert ops["MatMul"] == 2 * (4 + 4 * 3)
    graph = program.graph()
    weights = {t.name for n in graph.nodes if n.op == "MatMul" for t in n.inputs[1:]}
    assert len(weights) == 2 * (4 + 4)  # W_g^T and R_g^T once each, shared by every step
    assert [t.name for t in graph.outputs] == ["Y", "Y_h", "Y_c"]


CASES = [
    ("LSTM", {}),
    ("LSTM", dict(direction="bidirectional", lens=[5, 3], initial=True, peepholes=True)),
    ("LSTM", dict(direction="reverse", lens=[2, 4], clip=0.8)),
    ("LSTM", dict(input_forget=1, activations=["HardSigmoid", "Softplus", "Softsign"])),
    ("LSTM", dict(direction="bidirectional", lens_input=True)),
    ("GRU", dict(direction="bidirectional", linear_before_reset=1, lens=[5, 1], initial=True)),
    ("GRU", dict(direction="reverse", bias=False)),
    ("GRU", dict(lens_input=True, linear_before_reset=1)),
    ("RNN", dict(direction="bidirectional", activations=["Elu", "ScaledTanh"],
                 activation_alpha=[0.5, 0.7], activation_beta=[1.1])),
    ("RNN", dict(activations=["ThresholdedRelu"], activation_alpha=[0.2], initial=True)),
    ("RNN", dict(activations=["Affine"], activation_alpha=[0.9], activation_beta=[0.1])),
    ("RNN", dict(activations=["LeakyRelu"], lens=[5, 5])),
    ("LSTM", dict(state_inputs=True, direction="bidirectional", peepholes=True)),
    ("GRU", dict(state_inputs=True, layout=0, lens=[3, 5])),
    ("LSTM", dict(state_inputs=True, direction="bidirectional", lens=[0, 4])),
    ("RNN", dict(state_inputs=True, direction="reverse", lens_input=True)),
]


@pytest.mark.parametrize("op, kw", CASES, ids=[f"{op}-{i}" for i, (op, _) in enumerate(CASES)])
def test_lowering_preserves_outputs(registries, op, kw):
    program = check_pass(rnn_model(op, **kw), "lower-rnn", registries=registries)
    assert op not in _ops(program)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_layout_1(registries, op):
    """onnxruntime runs no layout=1 recurrent op: the interpreter is the reference."""
    model = rnn_model(op, layout=1, direction="bidirectional", initial=True, lens=[3, 5])
    check_pass(model, "lower-rnn", backends=("interpreter",), registries=registries)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(op=st.sampled_from(["LSTM", "GRU", "RNN"]),
       direction=st.sampled_from(["forward", "reverse", "bidirectional"]),
       seq=st.integers(1, 4), batch=st.integers(1, 3), hidden=st.integers(1, 3),
       initial=st.booleans(), use_lens=st.booleans(), layout=st.sampled_from([0, 1]),
       extra=st.booleans(), seed=st.integers(0, 99))
def test_lowering_property(registries, op, direction, seq, batch, hidden, initial, use_lens,
                           layout, extra, seed):
    """Any combination the interpreter runs is lowered and gives the same outputs there."""
    kw = dict(seq=seq, batch=batch, inp=2, hidden=hidden, direction=direction, layout=layout,
              initial=initial, seed=seed)
    if use_lens:
        kw["lens"] = list(np.random.default_rng(seed).integers(0, seq + 1, batch))
    if extra:
        kw.update({"LSTM": dict(peepholes=True, clip=1.5), "GRU": dict(linear_before_reset=1),
                   "RNN": dict(activations=["Relu"] * (1 + (direction == "bidirectional")))}[op])
    check_pass(rnn_model(op, **kw), "lower-rnn", backends=("interpreter",), seeds=(seed,),
               registries=registries)


def test_no_op_without_recurrent_nodes(registries):
    from builders import add_model

    before = add_model(shape=(2, 3))
    program = run_pass(before, "lower-rnn", registries=registries)
    assert [n.op for n in program.graph().nodes] == [n.op_type for n in before.graph.node]


def test_only_the_listed_ops_are_lowered(registries):
    program = run_pass(rnn_model("LSTM"), "lower-rnn", {"ops": ["GRU", "RNN"]},
                       registries=registries)
    assert _ops(program) == {"LSTM": 1}


def test_dynamic_sequence_length_is_refused_naming_the_node(registries):
    model = rnn_model("GRU")
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "T"
    with pytest.raises(AiccError, match=r"node 'rnn' \(GRU\): the sequence length of 'X' is "
                                        r"not static.*bind it"):
        run_pass(model, "lower-rnn", registries=registries)


def test_unrolling_limit(registries):
    model = rnn_model("LSTM", seq=5, direction="bidirectional")
    with pytest.raises(AiccError, match=r"5 steps x 2 direction\(s\) exceed the unrolling "
                                        r"limit of 8.*max_steps=10"):
        run_pass(model, "lower-rnn", {"max_steps": 8}, registries=registries)
    run_pass(model, "lower-rnn", {"max_steps": 10}, registries=registries)


def test_weights_that_are_not_constants_are_refused(registries):
    from onnx import TensorProto, helper

    model = rnn_model("RNN")
    w = next(i for i in model.graph.initializer if i.name == "W")
    model.graph.initializer.remove(w)
    model.graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, w.dims))
    with pytest.raises(AiccError, match=r"node 'rnn' \(RNN\): W 'W' is not a constant"):
        run_pass(model, "lower-rnn", registries=registries)


def test_unknown_op_option_is_refused(registries):
    with pytest.raises((AiccError, ConfigError), match="'Conv' is not one of LSTM, GRU, RNN"):
        run_pass(rnn_model("RNN"), "lower-rnn", {"ops": ["Conv"]}, registries=registries)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_fp16_models_lower_to_fp16_ops(registries, op):
    """Constants follow W's dtype; per-op fp16 rounding stays within a few fp16 ulps of the
    interpreter's recurrent kernel (which rounds once per output)."""
    from onnx import TensorProto, numpy_helper

    from aicc.backends.interpreter import Interpreter

    model = rnn_model(op, initial=True, direction="bidirectional", lens=[5, 2])
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32:
            init.CopyFrom(numpy_helper.from_array(arr.astype(np.float16), init.name))
    for vi in list(model.graph.input) + list(model.graph.output):
        vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    lowered = run_pass(model, "lower-rnn", registries=registries).to_model()
    assert {i.data_type for i in lowered.graph.initializer} <= {TensorProto.FLOAT16,
                                                                TensorProto.INT64,
                                                                TensorProto.BOOL}
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float16)
    want, got = Interpreter(model).run({"X": x}), Interpreter(lowered).run({"X": x})
    for name in want:
        assert got[name].dtype == np.float16
        np.testing.assert_allclose(got[name].astype(np.float32), want[name].astype(np.float32),
                                   rtol=0, atol=4e-3, err_msg=name)


def test_constant_sequence_lens_beyond_the_sequence_are_refused(registries):
    with pytest.raises(AiccError, match=r"node 'rnn' \(GRU\): sequence_lens \[6, 2\] must lie "
                                        r"in \[0, 5\]"):
        run_pass(rnn_model("GRU", lens=[6, 2]), "lower-rnn", registries=registries)
