"""aicc.ir.load_model refuses the bad models of BAD_INPUTS.md 1-14, and accepts the legal oddities."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from aicc import ir
from aicc.errors import ModelError
from builders import add_model, conv_bn_model


def _save(model, path):
    path.write_bytes(model.SerializeToString())
    return path


def _external_model(tmp_path, location, *, offset=None, length=None, extra=None):
    """A model whose initializer 'c' lives in external data at ``location``."""
    model = add_model(shape=(2, 3))
    t = model.graph.initializer[0]
    data = t.raw_data or np.arange(3, dtype=np.float32).tobytes()
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    entries = {"location": location}
    if offset is not None:
        entries["offset"] = str(offset)
    if length is not None:
        entries["length"] = str(length)
    entries.update(extra or {})
    for k, v in entries.items():
        e = t.external_data.add()
        e.key, e.value = k, v
    return model, data


def test_loads_example_and_infers_shapes(example_model_path):
    model = ir.load_model(example_model_path)
    assert model.graph.value_info, "strict shape inference fills value_info"


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        ir.load_model(tmp_path / "nope.onnx")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        ir.load_model(p)


@pytest.mark.parametrize("payload", [b"\x00\x01garbage\xff" * 10, b"hello world",
                                     b'{"json": true}'])
def test_random_bytes(tmp_path, payload):
    p = tmp_path / "bad.onnx"
    p.write_bytes(payload)
    with pytest.raises(ModelError):
        ir.load_model(p)


def test_truncated_model(tmp_path, example_model_path):
    data = example_model_path.read_bytes()
    p = tmp_path / "trunc.onnx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError):
        ir.load_model(p)


def test_tensorproto_named_onnx(tmp_path):
    p = tmp_path / "tensor.onnx"
    p.write_bytes(numpy_helper.from_array(np.ones((2, 2), np.float32), "t").SerializeToString())
    with pytest.raises(ModelError):
        ir.load_model(p)


def test_newer_ir_version(tmp_path):
    model = add_model()
    model.ir_version = onnx.IR_VERSION + 1
    with pytest.raises(ModelError, match="IR version"):
        ir.load_model(_save(model, tmp_path / "m.onnx"))


def test_newer_opset(tmp_path):
    model = add_model()
    model.opset_import[0].version = ir.MAX_OPSET + 1
    with pytest.raises(ModelError, match="opset"):
        ir.load_model(_save(model, tmp_path / "m.onnx"))


def test_missing_opset_import(tmp_path):
    model = add_model()
    del model.opset_import[:]
    with pytest.raises(ModelError, match="opset_import"):
        ir.load_model(_save(model, tmp_path / "m.onnx"))


def test_external_data_inside_folder_loads(tmp_path):
    model, data = _external_model(tmp_path, "weights.bin")
    (tmp_path / "weights.bin").write_bytes(data)
    loaded = ir.load_model(_save(model, tmp_path / "m.onnx"))
    np.testing.assert_array_equal(numpy_helper.to_array(loaded.graph.initializer[0]),
                                  np.frombuffer(data, np.float32))


@pytest.mark.parametrize("location", ["../outside.bin", "a/../../outside.bin",
                                      "sub/../../outside.bin"])
def test_external_data_traversal(tmp_path, location):
    folder = tmp_path / "model"
    (folder / "a").mkdir(parents=True)
    (folder / "sub").mkdir()
    model, data = _external_model(folder, location)
    (tmp_path / "outside.bin").write_bytes(data)
    with pytest.raises(ModelError, match="escapes"):
        ir.load_model(_save(model, folder / "m.onnx"))


def test_external_data_absolute(tmp_path):
    outside = tmp_path / "outside.bin"
    model, data = _external_model(tmp_path, str(outside))
    outside.write_bytes(data)
    (tmp_path / "model").mkdir()
    with pytest.raises(ModelError, match="absolute"):
        ir.load_model(_save(model, tmp_path / "model" / "m.onnx"))


def test_external_data_symlink_file(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    model, data = _external_model(folder, "w.bin")
    (tmp_path / "secret.bin").write_bytes(data)
    os.symlink(tmp_path / "secret.bin", folder / "w.bin")
    with pytest.raises(ModelError, match="symbolic link"):
        ir.load_model(_save(model, folder / "m.onnx"))


def test_external_data_symlink_parent(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "elsewhere").mkdir()
    model, data = _external_model(folder, "link/w.bin")
    (tmp_path / "elsewhere" / "w.bin").write_bytes(data)
    os.symlink(tmp_path / "elsewhere", folder / "link")
    with pytest.raises(ModelError, match="symbolic link"):
        ir.load_model(_save(model, folder / "m.onnx"))


def test_external_data_hard_link(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    model, data = _external_model(folder, "w.bin")
    (tmp_path / "secret.bin").write_bytes(data)
    os.link(tmp_path / "secret.bin", folder / "w.bin")
    with pytest.raises(ModelError, match="hard link"):
        ir.load_model(_save(model, folder / "m.onnx"))


@pytest.mark.parametrize("offset,length,match", [("-4", None, "non-negative"),
                                                 ("abc", None, "non-negative"),
                                                 ("0", "4000", "beyond the end"),
                                                 ("100", None, "beyond the end")])
def test_external_data_bad_offsets(tmp_path, offset, length, match):
    model, data = _external_model(tmp_path, "w.bin", offset=offset, length=length)
    (tmp_path / "w.bin").write_bytes(data)
    with pytest.raises(ModelError, match=match):
        ir.load_model(_save(model, tmp_path / "m.onnx"))


def test_external_data_unknown_key(tmp_path):
    model, data = _external_model(tmp_path, "w.bin", extra={"basepath": "/etc"})
    (tmp_path / "w.bin").write_bytes(data)
    with pytest.raises(ModelError, match="unknown external-data key"):
        ir.load_model(_save(model, tmp_path / "m.onnx"))


def test_bytes_with_external_data_and_no_folder(tmp_path):
    model, _ = _external_model(tmp_path, "w.bin")
    with pytest.raises(ModelError, match="no folder"):
        ir.load_model(model.SerializeToString())


def test_initializer_dims_disagree_with_data(tmp_path):
    model = add_model(shape=(2, 3))
    t = model.graph.initializer[0]
    del t.dims[:]
    t.dims.extend([2**20, 2**20])
    with pytest.raises(ModelError, match="declare"):
        ir.load_model(_save(model, tmp_path / "m.onnx"))


def test_tensor_produced_twice(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="a"), helper.make_node("Neg", ["x"], ["y"], name="b")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelError, match="produced twice"):
        ir.load_model(_save(model, tmp_path / "m.onnx"))


def test_cycle(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "b"], ["a"], name="n1"),
         helper.make_node("Relu", ["a"], ["b"], name="n2")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelError, match="cycle"):
        ir.load_model(_save(model, tmp_path / "m.onnx"))


def test_unsorted_graph_is_accepted(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["a"], ["y"], name="second"),
         helper.make_node("Neg", ["x"], ["a"], name="first")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    # The ONNX checker itself requires sorted graphs; aicc names the problem clearly.
    with pytest.raises(ModelError, match="topologically|sorted|not"):
        ir.load_model(_save(model, tmp_path / "m.onnx"))


def test_unknown_op(tmp_path):
    graph = helper.make_graph([helper.make_node("FancyOp", ["x"], ["y"], name="n")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelError, match="FancyOp"):
        ir.load_model(_save(model, tmp_path / "m.onnx"))


def test_missing_attribute(tmp_path):
    graph = helper.make_graph([helper.make_node("Transpose", ["x"], ["y"], name="t",
                                                perm=[0, 1, 2])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelError):
        ir.load_model(_save(model, tmp_path / "m.onnx"))


def test_shapes_that_cannot_agree(tmp_path):
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, [4, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", "n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)  # the default checker accepts it...
    with pytest.raises(ModelError, match="shapes do not agree"):
        ir.load_model(_save(model, tmp_path / "m.onnx"))


def test_repeated_outputs_and_empty_optional_inputs_are_legal(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Clip", ["x", "", "hi"], ["y"], name="clip")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.array(1.0, np.float32), "hi")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    loaded = ir.load_model(_save(model, tmp_path / "m.onnx"))
    assert [o.name for o in loaded.graph.output] == ["y", "y"]


def test_nan_weights_zero_size_and_rank0_are_data(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "c"], ["y"], name="add"),
         helper.make_node("Concat", ["x", "empty"], ["z"], name="cat", axis=0)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.array(np.nan, np.float32), "c"),
         numpy_helper.from_array(np.zeros((0,), np.float32), "empty")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    ir.load_model(_save(model, tmp_path / "m.onnx"))


def test_save_roundtrip_is_deterministic(tmp_path):
    model = ir.load_model(conv_bn_model().SerializeToString())
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    ir.save_model(model, a)
    ir.save_model(model, b)
    assert a.read_bytes() == b.read_bytes()


def test_safe_file_name():
    assert ir.safe_file_name("../../etc/passwd") == "_.._etc_passwd"
    assert "/" not in ir.safe_file_name("a/b\\c")
    assert ir.safe_file_name("...") == "_"
