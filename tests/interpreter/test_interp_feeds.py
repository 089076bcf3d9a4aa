"""Bad feeds are refused with a one-line DataError naming the input, what was expected and got."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from aicc.backends.interpreter.engine import Interpreter
from aicc.errors import DataError


def _model() -> onnx.ModelProto:
    """y = image * scale + offset; image (N, 3, 4, 4) and offset (N, 1, 1, 1), N symbolic."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["image", "scale"], ["t"]),
         helper.make_node("Add", ["t", "offset"], ["y"])],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 4, 4]),
         helper.make_tensor_value_info("offset", TensorProto.FLOAT, ["N", 1, 1, 1]),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [numpy_helper.from_array(np.array([2.0], np.float32), "scale")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def interp() -> Interpreter:
    return Interpreter(_model())


def _good(n: int = 2) -> dict:
    return {"image": np.ones((n, 3, 4, 4), np.float32),
            "offset": np.zeros((n, 1, 1, 1), np.float32)}


def _refused(interp, feeds) -> str:
    with pytest.raises(DataError) as info:
        interp.run(feeds)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_good_feeds_run_and_initializer_inputs_are_optional(interp):
    out = interp.run(_good())
    assert out["y"].dtype == np.float32 and out["y"].shape == (2, 3, 4, 4)
    assert np.all(out["y"] == 2)
    overridden = interp.run({**_good(), "scale": np.array([3.0], np.float32)})
    assert np.all(overridden["y"] == 3)


def test_missing_input(interp):
    text = _refused(interp, {"image": np.ones((2, 3, 4, 4), np.float32)})
    assert "input 'offset'" in text and "missing" in text and "float32" in text
    assert "image, offset" in text  # lists the inputs the caller must give


def test_extra_unknown_input(interp):
    text = _refused(interp, {**_good(), "imag": np.ones(1, np.float32)})
    assert "feed 'imag'" in text and "no such input" in text


def test_unknown_input_suggests_nearest_name(interp):
    feeds = _good()
    feeds["offsets"] = feeds.pop("offset")
    assert "did you mean 'offset'" in _refused(interp, feeds)


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32, np.uint8])
def test_wrong_dtype_is_refused_not_cast(interp, dtype):
    feeds = _good()
    feeds["image"] = feeds["image"].astype(dtype)
    text = _refused(interp, feeds)
    assert "input 'image'" in text
    assert f"dtype {np.dtype(dtype)}" in text and "expected float32" in text
    assert "never casts" in text


def test_wrong_rank(interp):
    feeds = _good()
    feeds["image"] = np.ones((2, 3, 16), np.float32)
    text = _refused(interp, feeds)
    assert "input 'image'" in text and "rank 3" in text and "expected rank 4" in text
    assert "(N, 3, 4, 4)" in text


def test_wrong_static_dim(interp):
    feeds = _good()
    feeds["image"] = np.ones((2, 3, 5, 4), np.float32)
    text = _refused(interp, feeds)
    assert "input 'image'" in text and "(2, 3, 5, 4)" in text and "(N, 3, 4, 4)" in text
    assert "dim 2 is 5, expected 4" in text


def test_symbolic_dims_must_agree_across_inputs(interp):
    feeds = _good()
    feeds["offset"] = np.zeros((3, 1, 1, 1), np.float32)
    text = _refused(interp, feeds)
    assert "'N'" in text and "input 'offset'" in text and "input 'image'" in text


def test_symbolic_dim_accepts_any_size(interp):
    assert interp.run(_good(5))["y"].shape == (5, 3, 4, 4)


def test_non_array_feed(interp):
    feeds = _good()
    feeds["image"] = feeds["image"].tolist()
    text = _refused(interp, feeds)
    assert "input 'image'" in text and "got a list" in text


def test_feeds_must_be_a_mapping(interp):
    assert "must map input names" in _refused(interp, [np.ones((2, 3, 4, 4), np.float32)])


def test_numpy_scalar_feed_is_accepted_as_0d():
    graph = helper.make_graph([helper.make_node("Neg", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert Interpreter(model).run({"x": np.float32(2)})["y"] == -2


def test_feed_is_never_modified_or_aliased_by_outputs():
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = np.arange(3, dtype=np.float32)
    y = Interpreter(model).run({"x": x})["y"]
    y[0] = 42
    assert x[0] == 0
