"""The aic100 device report counts fp16 results that are inf or nan, per node, and says which
node overflowed from finite inputs and which only passed non-finite values on (issue 12)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from aic100_models import compile_aic


def _model():
    k = numpy_helper.from_array(np.array(300.0, np.float16), "k")
    one = numpy_helper.from_array(np.array(1.0, np.float16), "one")
    nodes = [helper.make_node("Mul", ["x", "k"], ["a"], name="scale1"),
             helper.make_node("Mul", ["a", "k"], ["b"], name="scale2"),
             helper.make_node("Add", ["b", "one"], ["y"], name="shift")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT16, [2, 4])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT16, [2, 4])], [k, one])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fp16_overflow_is_counted_per_node():
    exe = compile_aic(_model())
    x = np.ones((2, 4), np.float16)
    x[0, :3] = 1.0  # 300 * 300 = 90000 > 65504: three overflow in scale2
    x[0, 3] = 0.1
    x[1] = 0.5      # 22500: finite
    exe.run({"x": x})
    exe.run({"x": x})
    counts = exe.stats()["simulated"]["fp16_nonfinite"]
    assert counts == {"scale2": {"nonfinite": 6, "overflow": 6},
                      "shift": {"nonfinite": 6, "overflow": 0}}
    report = "\n".join(exe.report())
    assert "12 fp16 value(s) inf or nan in 2 node(s), 1 of them overflowing" in report
    assert "node 'scale2': 6 non-finite, 6 overflowed" in report
    assert "node 'shift': 6 non-finite (from its inputs)" in report


def test_finite_runs_say_so():
    exe = compile_aic(_model())
    exe.run({"x": np.full((2, 4), 0.1, np.float16)})
    assert exe.stats()["simulated"]["fp16_nonfinite"] == {}
    assert any("every fp16 result finite" in line for line in exe.report())
