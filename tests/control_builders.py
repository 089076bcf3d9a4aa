"""Models with control flow and recurrence for tests: If, Loop, Scan, LSTM/GRU/RNN, built with
onnx.helper and random (seeded) weights."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F = TensorProto.FLOAT


def _model(graph: onnx.GraphProto, opset: int = 17) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def if_model(*, cond_from: str = "input", shape=(2, 3)) -> onnx.ModelProto:
    """y = If(cond, then: Add(a, w), else: Sub(b, x)) where a = Mul(x, 2) and b = Add(x, 1) are
    read only inside the branches (outer-scope values), w is an outer initializer.

    ``cond_from``: ``input`` (a bool graph input ``c``), ``data`` (ReduceSum(x) > 0) or
    ``constant`` (a true Constant node).
    """
    w = numpy_helper.from_array(np.arange(np.prod(shape), dtype=np.float32).reshape(shape), "w")
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    then_g = helper.make_graph([helper.make_node("Add", ["a", "w"], ["t"], name="then_add")],
                               "then", [], [helper.make_tensor_value_info("t", F, list(shape))])
    else_g = helper.make_graph([helper.make_node("Sub", ["b", "x"], ["e"], name="else_sub")],
                               "else", [], [helper.make_tensor_value_info("e", F, list(shape))])
    nodes = [helper.make_node("Mul", ["x", "two"], ["a"], name="mul"),
             helper.make_node("Add", ["x", "one"], ["b"], name="add")]
    inputs = [helper.make_tensor_value_info("x", F, list(shape))]
    if cond_from == "input":
        inputs.append(helper.make_tensor_value_info("c", TensorProto.BOOL, []))
    elif cond_from == "data":
        nodes += [helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
                  helper.make_node("Greater", ["s", "zero"], ["c"], name="gt")]
    else:
        nodes.append(helper.make_node("Constant", [], ["c"], name="cst",
                                      value=helper.make_tensor("v", TensorProto.BOOL, [], [1])))
    nodes.append(helper.make_node("If", ["c"], ["y"], name="if_node", then_branch=then_g,
                                  else_branch=else_g))
    inits = [w, two, one]
    if cond_from == "data":
        inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
    graph = helper.make_graph(nodes, "if_model", inputs,
                              [helper.make_tensor_value_info("y", F, list(shape))], inits)
    return _model(graph)


def loop_model(*, trip: int | None = 4, width: int = 3) -> onnx.ModelProto:
    """A Loop carrying ``acc`` (acc = acc * decay + x * i) with a scan output of each ``acc``;
    ``decay`` and ``x`` come from the outer scope. ``trip`` None: the count is a graph input."""
    body = helper.make_graph(
        [helper.make_node("Cast", ["i"], ["fi"], name="cast", to=F),
         helper.make_node("Mul", ["acc_in", "decay"], ["scaled"], name="scale"),
         helper.make_node("Mul", ["x", "fi"], ["xi"], name="xi"),
         helper.make_node("Add", ["scaled", "xi"], ["acc_out"], name="accumulate"),
         helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep"),
         helper.make_node("Identity", ["acc_out"], ["scan_out"], name="emit")],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", F, [width])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", F, [width]),
         helper.make_tensor_value_info("scan_out", F, [width])])
    inits = [numpy_helper.from_array(np.array(0.5, np.float32), "decay"),
             numpy_helper.from_array(np.array(True), "go"),
             numpy_helper.from_array(np.zeros(width, np.float32), "acc0")]
    inputs = [helper.make_tensor_value_info("x", F, [width])]
    if trip is None:
        inputs.append(helper.make_tensor_value_info("n", TensorProto.INT64, []))
    else:
        inits.append(numpy_helper.from_array(np.array(trip, np.int64), "n"))
    node = helper.make_node("Loop", ["n", "go", "acc0"], ["acc", "accs"], name="loop_node",
                            body=body)
    graph = helper.make_graph([node], "loop_model", inputs,
                              [helper.make_tensor_value_info("acc", F, [width]),
                               helper.make_tensor_value_info("accs", F, [None, width])], inits)
    return _model(graph)


def scan_model(*, steps: int = 5, width: int = 3, reverse: bool = False) -> onnx.ModelProto:
    """A Scan summing rows of ``x`` [steps, width] into a state (plus an outer ``bias``), with
    a scan output of each running sum."""
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "row"], ["s1"], name="sum"),
         helper.make_node("Add", ["s1", "bias"], ["s_out"], name="bias_add"),
         helper.make_node("Identity", ["s_out"], ["y_t"], name="emit")],
        "body",
        [helper.make_tensor_value_info("s_in", F, [width]),
         helper.make_tensor_value_info("row", F, [width])],
        [helper.make_tensor_value_info("s_out", F, [width]),
         helper.make_tensor_value_info("y_t", F, [width])])
    node = helper.make_node("Scan", ["s0", "x"], ["s", "ys"], name="scan_node", body=body,
                            num_scan_inputs=1, scan_input_directions=[int(reverse)])
    graph = helper.make_graph(
        [node], "scan_model",
        [helper.make_tensor_value_info("x", F, [steps, width])],
        [helper.make_tensor_value_info("s", F, [width]),
         helper.make_tensor_value_info("ys", F, [steps, width])],
        [numpy_helper.from_array(np.zeros(width, np.float32), "s0"),
         numpy_helper.from_array(np.full(width, 0.25, np.float32), "bias")])
    return _model(graph)


def rnn_model(op: str = "LSTM", *, seq: int = 5, batch: int = 2, inp: int = 3, hidden: int = 4,
              direction: str = "forward", layout: int = 0, bias: bool = True,
              lens: list[int] | None = None, initial: bool = False, peepholes: bool = False,
              seed: int = 0, lens_input: bool = False, state_inputs: bool = False,
              **attrs) -> onnx.ModelProto:
    """One LSTM/GRU/RNN node with random weights as initializers; X (and sequence_lens when
    ``lens_input``, the initial states when ``state_inputs``, as a streaming model feeds them
    back) are graph inputs. Outputs Y, Y_h (and Y_c for LSTM)."""
    rng = np.random.default_rng(seed)
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    dirs = 2 if direction == "bidirectional" else 1
    inits = [numpy_helper.from_array(rng.uniform(-0.6, 0.6, (dirs, gates * hidden, inp))
                                     .astype(np.float32), "W"),
             numpy_helper.from_array(rng.uniform(-0.6, 0.6, (dirs, gates * hidden, hidden))
                                     .astype(np.float32), "R")]
    names = ["X", "W", "R", "", "", "", "", ""]
    if bias:
        inits.append(numpy_helper.from_array(rng.uniform(-0.5, 0.5, (dirs, 2 * gates * hidden))
                                             .astype(np.float32), "B"))
        names[3] = "B"
    x_shape = [seq, batch, inp] if layout == 0 else [batch, seq, inp]
    inputs = [helper.make_tensor_value_info("X", F, x_shape)]
    if lens is not None and not lens_input:
        inits.append(numpy_helper.from_array(np.array(lens, np.int32), "L"))
        names[4] = "L"
    elif lens_input:
        inputs.append(helper.make_tensor_value_info("L", TensorProto.INT32, [batch]))
        names[4] = "L"
    state = [dirs, batch, hidden] if layout == 0 else [batch, dirs, hidden]
    if state_inputs:
        inputs.append(helper.make_tensor_value_info("H0", F, state))
        names[5] = "H0"
        if op == "LSTM":
            inputs.append(helper.make_tensor_value_info("C0", F, state))
            names[6] = "C0"
    elif initial:
        inits.append(numpy_helper.from_array(rng.standard_normal(state).astype(np.float32), "H0"))
        names[5] = "H0"
        if op == "LSTM":
            inits.append(numpy_helper.from_array(rng.standard_normal(state).astype(np.float32),
                                                 "C0"))
            names[6] = "C0"
    if peepholes:
        inits.append(numpy_helper.from_array(rng.uniform(-0.5, 0.5, (dirs, 3 * hidden))
                                             .astype(np.float32), "P"))
        names[7] = "P"
    while names and names[-1] == "":
        names.pop()
    outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, names, outs, name="rnn", hidden_size=hidden,
                            direction=direction, layout=layout, **attrs)
    outputs = [helper.make_tensor_value_info(o, F, [None] * (4 if o == "Y" else 3))
               for o in outs]
    return _model(helper.make_graph([node], "rnn_model", inputs, outputs, inits), opset=14)
