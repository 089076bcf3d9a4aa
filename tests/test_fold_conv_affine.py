"""``fold-conv-affine``: a constant scale and shift after a Conv folded into its weights and bias
(PP-OCRv4 det's learnable affine blocks), and the aic100 compile that runs it.

fp16 tolerance (aic100): a Conv over 3x3x4 inputs in [-1, 1] rounds once to fp16 (relative spacing
2**-10); 1e-2 of the largest reference magnitude covers it and its inputs' rounding.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import aicc
from aicc.testing import check_pass

_FP16_REL = 1e-2


def _model(tail: list[onnx.NodeProto], consts: dict[str, np.ndarray], out: str = "y",
           extra_outputs: tuple[str, ...] = ()) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.uniform(-1, 1, (6, 4, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.uniform(-1, 1, 6).astype(np.float32), "b")]
    inits += [numpy_helper.from_array(v, k) for k, v in consts.items()]
    rank5 = any(v.ndim == 5 for v in consts.values())     # broadcasting adds an axis
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT,
                                             [1, 1, 6, 8, 8] if rank5 and n == out
                                             else [1, 6, 8, 8])
               for n in (out, *extra_outputs)]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         *tail], "affine", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _learnable_affine() -> onnx.ModelProto:
    """Conv -> Mul by a scalar -> Add of one value per channel -> Sub of a scalar -> Relu."""
    return _model([helper.make_node("Mul", ["s", "c"], ["m"], name="scale"),
                   helper.make_node("Add", ["m", "d"], ["a"], name="shift"),
                   helper.make_node("Sub", ["a", "e"], ["t"], name="unshift"),
                   helper.make_node("Relu", ["t"], ["y"], name="relu")],
                  {"s": np.array([1.7], np.float32),
                   "d": np.linspace(-1, 1, 6, dtype=np.float32).reshape(6, 1, 1),
                   "e": np.array(0.25, np.float32)})


def _ops(program) -> list[str]:
    return [n.op for g in program.graphs.values() for n in g.nodes]


def test_scale_and_shifts_fold_into_the_conv(registries):
    program = check_pass(_learnable_affine(), "fold-conv-affine", registries=registries)
    assert _ops(program) == ["Conv", "Relu"]
    conv = program.graphs["default"].nodes[0]
    assert conv.outputs[0].name == "t"          # the name the Relu reads is kept


@pytest.mark.parametrize("tail,consts,why", [
    ([helper.make_node("Mul", ["c", "s"], ["y"])], {"s": np.ones((1, 1, 8, 1), np.float32)},
     "varies along a spatial axis"),
    ([helper.make_node("Div", ["s", "c"], ["y"])], {"s": np.array(2.0, np.float32)},
     "c / y is not affine in y"),
    ([helper.make_node("Mul", ["c", "c"], ["y"])], {}, "no constant"),
    ([helper.make_node("Add", ["c", "s"], ["y"])], {"s": np.ones((1, 1, 1, 1, 1), np.float32)},
     "would add an axis"),
])
def test_what_does_not_fold(registries, tail, consts, why):
    program = check_pass(_model(tail, consts), "fold-conv-affine", registries=registries)
    assert _ops(program) == ["Conv", tail[0].op_type], why


def test_a_conv_output_read_twice_does_not_fold(registries):
    model = _model([helper.make_node("Mul", ["c", "s"], ["y"])], {"s": np.array(2, np.float32)},
                   extra_outputs=("c",))
    program = check_pass(model, "fold-conv-affine", registries=registries)
    assert _ops(program) == ["Conv", "Mul"]


def test_aic100_folds_the_affine_and_matches_onnxruntime(tmp_path):
    model = _learnable_affine()
    qpc = aicc.compile(model, target="aic100", fp16=True, output=tmp_path / "q")
    assert "fold-conv-affine" in (qpc / "manifest.json").read_text()
    x = np.random.default_rng(1).uniform(-1, 1, (1, 4, 8, 8)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = aicc.load(qpc).run({"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=0, atol=_FP16_REL * np.abs(want).max())
