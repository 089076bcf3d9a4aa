"""Containers with several specializations: weights the specializations share are stored once
(``weights.bin`` at the root, ONNX external data relative to the container root), loading stays
verified and safe, and writing stays deterministic."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import aicc
from aicc.container import SHARED_MIN_BYTES, SHARED_WEIGHTS, load_spec_model, read_manifest
from aicc.errors import ContainerError, ModelError
from spec_helpers import SEED_CONFIG, SEED_NAMES, SEED_SHAPES, load_example, write_json


@pytest.fixture(scope="module")
def cnn():
    return load_example("dynamic_cnn").build(channels=32)


@pytest.fixture
def qpc(tmp_path, cnn):
    config = write_json(tmp_path / "spec.json", SEED_CONFIG)
    return aicc.compile(cnn, output=tmp_path / "qpc", specializations=config)


def _weight_bytes(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer
               if len(t.raw_data) >= SHARED_MIN_BYTES)


def test_shared_weights_are_stored_once(qpc, cnn, tmp_path):
    manifest = read_manifest(qpc)
    assert SHARED_WEIGHTS in manifest["files"]
    assert [s["external_data"] for s in manifest["specializations"]] == ["container"] * 3
    single = aicc.compile(cnn, output=tmp_path / "one", symbols={"batch": 1, "height": 56,
                                                                  "width": 56})
    one_copy = _weight_bytes(onnx.load(single / "default" / "model.onnx"))
    assert one_copy > 30_000
    size = (qpc / SHARED_WEIGHTS).stat().st_size
    assert one_copy <= size < one_copy + 64 * 8  # one copy plus alignment
    for name in SEED_NAMES:
        assert (qpc / name / "model.onnx").stat().st_size < 8_000
        model = onnx.load(qpc / name / "model.onnx", load_external_data=False)
        ext = [t for t in model.graph.initializer
               if t.data_location == onnx.TensorProto.EXTERNAL]
        assert ext and all({e.key: e.value for e in t.external_data}["location"] == SHARED_WEIGHTS
                           for t in ext)
        small = [t for t in model.graph.initializer
                 if t.data_location != onnx.TensorProto.EXTERNAL]
        assert all(len(t.raw_data) < SHARED_MIN_BYTES for t in small)


def test_specializations_load_with_their_weights(qpc, cnn):
    import onnxruntime as ort
    ref = ort.InferenceSession(cnn.SerializeToString())
    session = aicc.load(qpc)
    for name, shape in zip(SEED_NAMES, SEED_SHAPES):
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        got = session.run({"image": x})["logits"]
        assert session.last_specialization == name
        np.testing.assert_allclose(got, ref.run(None, {"image": x})[0], rtol=1e-4, atol=1e-5)


def test_other_tools_can_load_a_spec_model_from_the_root(qpc):
    """As container.py documents: load external data with the container root as the base."""
    from onnx.external_data_helper import load_external_data_for_model
    import onnxruntime as ort
    model = onnx.load(qpc / SEED_NAMES[0] / "model.onnx", load_external_data=False)
    load_external_data_for_model(model, str(qpc))
    out = ort.InferenceSession(model.SerializeToString()).run(
        None, {"image": np.zeros((1, 3, 56, 56), np.float32)})[0]
    assert out.shape == (1, 10)


def test_altered_shared_weights_are_refused(qpc):
    data = bytearray((qpc / SHARED_WEIGHTS).read_bytes())
    data[100] ^= 1
    (qpc / SHARED_WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(ContainerError, match="'weights.bin' was altered"):
        aicc.load(qpc)
    (qpc / SHARED_WEIGHTS).unlink()
    with pytest.raises(ContainerError, match="'weights.bin' is missing"):
        aicc.load(qpc)


def _rewrite(qpc, rel, data):
    (qpc / rel).write_bytes(data)
    manifest = json.loads((qpc / "manifest.json").read_text())
    manifest["files"][rel] = hashlib.sha256(data).hexdigest()
    (qpc / "manifest.json").write_text(json.dumps(manifest))


def test_external_locations_stay_inside_the_container(qpc, tmp_path):
    """Even with checksums made to match, a location escaping the container is refused."""
    rel = f"{SEED_NAMES[0]}/model.onnx"
    model = onnx.load(qpc / rel, load_external_data=False)
    tensor = next(t for t in model.graph.initializer
                  if t.data_location == onnx.TensorProto.EXTERNAL)
    (tmp_path / "outside.bin").write_bytes(b"\0" * 1_000_000)
    for location in ("../outside.bin", str(tmp_path / "outside.bin"), "x/../../outside.bin"):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
        _rewrite(qpc, rel, model.SerializeToString())
        session = aicc.load(qpc)
        with pytest.raises(ModelError, match="escapes|absolute"):
            session.run({"image": np.zeros((1, 3, 56, 56), np.float32)})


def test_symlinked_shared_weights_are_refused(qpc, tmp_path):
    target = tmp_path / "elsewhere.bin"
    target.write_bytes((qpc / SHARED_WEIGHTS).read_bytes())
    (qpc / SHARED_WEIGHTS).unlink()
    (qpc / SHARED_WEIGHTS).symlink_to(target)
    with pytest.raises((ContainerError, ModelError), match="outside|symbolic"):
        aicc.load(qpc).run({"image": np.zeros((1, 3, 56, 56), np.float32)})


def test_unknown_external_data_mode_is_refused(qpc):
    manifest = json.loads((qpc / "manifest.json").read_text())
    manifest["specializations"][0]["external_data"] = "../"
    (qpc / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ContainerError, match="unknown external_data '../'"):
        aicc.load(qpc).run({"image": np.zeros((1, 3, 56, 56), np.float32)})
    with pytest.raises(ContainerError, match="unknown external_data"):
        load_spec_model(qpc, SEED_NAMES[0], external_data="elsewhere")


def test_containers_are_byte_identical(tmp_path, cnn):
    config = write_json(tmp_path / "spec.json", SEED_CONFIG)
    a = aicc.compile(cnn, output=tmp_path / "a", specializations=config)
    b = aicc.compile(cnn, output=tmp_path / "b", specializations=config)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_identical_initializers_dedupe_by_content(tmp_path):
    """Two initializers with the same bytes, dtype and dims share one blob; another dtype does
    not."""
    from onnx import TensorProto, helper
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w1"), numpy_helper.from_array(w.copy(), "w2"),
             numpy_helper.from_array(w.view(np.int32), "w3")]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["a"], name="m1"),
         helper.make_node("MatMul", ["a", "w2"], ["y"], name="m2"),
         helper.make_node("Identity", ["w3"], ["z"], name="i")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64]),
         helper.make_tensor_value_info("z", TensorProto.INT32, [64, 64])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    config = write_json(tmp_path / "n.json", {"specializations": [{"n": 1}, {"n": 2}, {"n": 8}]})
    qpc = aicc.compile(model, output=tmp_path / "q", specializations=config)
    assert (qpc / SHARED_WEIGHTS).stat().st_size < 2 * w.nbytes + 128
    session = aicc.load(qpc)
    x = np.ones((2, 64), np.float32)
    out = session.run({"x": x})
    np.testing.assert_allclose(out["y"], x @ w @ w, rtol=1e-4)
    np.testing.assert_array_equal(out["z"], w.view(np.int32))


def test_single_specialization_keeps_weights_inside(tmp_path, cnn):
    config = write_json(tmp_path / "one.json", {"specializations": [
        {"batch": 1, "height": 8, "width": 8}]})
    qpc = aicc.compile(cnn, output=tmp_path / "q", specializations=config)
    manifest = read_manifest(qpc)
    assert SHARED_WEIGHTS not in manifest["files"]
    assert manifest["specializations"][0]["external_data"] == "folder"
    assert manifest["specializations"][0]["name"] == "spec0-batch1-height8-width8"


def test_failed_compile_leaves_no_container(tmp_path, cnn):
    config = write_json(tmp_path / "bad.json", {"specializations": [
        {"batch": 1, "height": 8, "width": 8}, {"batch": 1, "height": 8}]})
    with pytest.raises(aicc.AiccError, match="entry 2"):
        aicc.compile(cnn, output=tmp_path / "q", specializations=config)
    assert not (tmp_path / "q").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".q.tmp")]
