"""Checks on the bundled example model and data under ``examples/``.

The assets are produced by ``examples/train_digits.py`` (which needs torch);
these tests only need onnx, onnxruntime and numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
MODEL_PATH = EXAMPLES / "digits_mobilenet.onnx"
DATA = EXAMPLES / "data"
CALIB_DIR = DATA / "digits_calib"
INPUT_LIST = CALIB_DIR / "input_list.txt"


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return onnx.load(str(MODEL_PATH))


@pytest.fixture(scope="module")
def initializers(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def test_model_passes_full_check(model):
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8
    assert {o.domain: o.version for o in model.opset_import}[""] == 17


def test_model_interface(model):
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert inp.name == "image"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert _dims(inp) == ["batch", 1, 8, 8]
    assert out.name == "logits"
    assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert _dims(out) == ["batch", 10]


def test_node_names_unique_and_set(model):
    names = [n.name for n in model.graph.node]
    assert all(names), "every node must be named"
    assert len(set(names)) == len(names)


def test_model_has_expected_op_kinds(model, initializers):
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("BatchNormalization") == 5
    assert ops.count("Clip") == 5
    assert ops.count("Conv") == 5
    assert ops.count("Gemm") == 1
    assert "GlobalAveragePool" in ops and "Flatten" in ops

    # Clip is ReLU6 with opset-13-style min/max initializer inputs
    for n in model.graph.node:
        if n.op_type == "Clip":
            assert len(n.input) == 3
            lo, hi = initializers[n.input[1]], initializers[n.input[2]]
            assert lo.shape == () and hi.shape == (), "Clip min/max must be scalars"
            assert float(lo) == 0.0 and float(hi) == 6.0

    # at least one depthwise Conv: group == number of output (== input) channels
    depthwise = []
    for n in model.graph.node:
        if n.op_type != "Conv":
            continue
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        weight = initializers[n.input[1]]  # [C_out, C_in/group, kH, kW]
        if group > 1 and group == weight.shape[0] and weight.shape[1] == 1:
            depthwise.append(n.name)
    assert len(depthwise) == 2, depthwise


def test_batchnorm_is_trained(model, initializers):
    for n in model.graph.node:
        if n.op_type != "BatchNormalization":
            continue
        scale, bias, mean, var = (initializers[i] for i in n.input[1:])
        assert not np.allclose(scale, 1.0), n.name
        assert not np.allclose(bias, 0.0), n.name
        assert not np.allclose(mean, 0.0), n.name
        assert not np.allclose(var, 1.0), n.name
        assert (var > 0).all(), n.name


def test_test_split_files():
    images = np.load(DATA / "digits_test_images.npy")
    labels = np.load(DATA / "digits_test_labels.npy")
    assert images.dtype == np.float32 and images.shape == (360, 1, 8, 8)
    assert labels.dtype == np.int64 and labels.shape == (360,)
    assert set(np.unique(labels).tolist()) == set(range(10))


def test_onnxruntime_accuracy(model):
    images = np.load(DATA / "digits_test_images.npy")
    labels = np.load(DATA / "digits_test_labels.npy")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = sess.run(["logits"], {"image": images})[0]
    assert logits.shape == (360, 10)
    accuracy = float((logits.argmax(axis=1) == labels).mean())
    assert accuracy >= 0.95, accuracy


def test_calibration_input_list():
    lines = INPUT_LIST.read_text().splitlines()
    assert len(lines) == 32
    assert len(set(lines)) == len(lines)
    test_images = np.load(DATA / "digits_test_images.npy").reshape(360, 64)
    for line in lines:
        assert line.strip() == line and line, repr(line)
        path = CALIB_DIR / line  # relative to the list's folder
        assert path.is_file(), line
        assert path.stat().st_size == 64 * 4, line
        sample = np.fromfile(path, dtype="<f4")
        assert np.isfinite(sample).all(), line
        # drawn from the train split, so never identical to a test image
        assert not (np.abs(test_images - sample).max(axis=1) == 0).any(), line
