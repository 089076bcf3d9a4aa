"""The interpreter agrees with onnxruntime on the bundled example model, original and compiled."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

import aicc
from aicc import ir
from aicc.backends.interpreter.engine import Interpreter


def test_interpreter_matches_onnxruntime_on_example(example_model_path):
    images = np.load(example_model_path.parent / "data" / "digits_test_images.npy")
    labels = np.load(example_model_path.parent / "data" / "digits_test_labels.npy")
    model = ir.load_model(example_model_path)
    got = Interpreter(model).run({"image": images})["logits"]
    ref = ort.InferenceSession(str(example_model_path)).run(None, {"image": images})[0]
    assert got.dtype == np.float32 and got.shape == ref.shape
    # float32 tolerance documented in test_interp_vs_ort: rtol 1e-4 / atol 1e-5 of the output scale
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    assert (got.argmax(1) == labels).mean() == (ref.argmax(1) == labels).mean()


def test_interpreter_container_matches_cpu_container(tmp_path, example_model_path):
    images = np.load(example_model_path.parent / "data" / "digits_test_images.npy")[:64]
    interp = aicc.load(aicc.compile(example_model_path, backend="interpreter",
                                    output=tmp_path / "i")).run({"image": images})["logits"]
    cpu = aicc.load(aicc.compile(example_model_path, output=tmp_path / "c")).run(
        {"image": images})["logits"]
    np.testing.assert_allclose(interp, cpu, rtol=1e-4, atol=1e-5 * np.abs(cpu).max())


def test_observers_see_every_tensor_of_example(example_model_path):
    model = ir.load_model(example_model_path)
    seen = {}
    Interpreter(model).run({"image": np.zeros((2, 1, 8, 8), np.float32)},
                           observe=lambda name, arr: seen.setdefault(name, arr.shape))
    produced = {o for n in model.graph.node for o in n.output}
    assert produced <= set(seen) and "image" in seen
