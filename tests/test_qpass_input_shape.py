"""The ``input-shape`` pass (``--input-shape`` / ``--input_dim``): dims bound, shapes re-inferred,
outputs unchanged, contradictions refused."""

from __future__ import annotations

import pytest
from onnx import TensorProto, helper

from aicc.errors import ConfigError
from aicc.passes.input_shape import parse_input_shapes
from aicc.testing import check_pass, run_pass

from quant_builders import small_cnn


def test_binds_a_named_symbol_and_reinfers(registries):
    model = small_cnn(batch="N")
    prog = check_pass(model, "input-shape", {"shapes": ["x=2,3,8,8"]}, registries=registries)
    g = prog.graph()
    assert g.inputs[0].shape == [2, 3, 8, 8]
    assert g.outputs[0].shape == [2, 10]
    assert prog.symbols == {"N": 2}
    relu = next(n for n in g.nodes if n.name == "relu1")
    assert list(relu.outputs[0].shape) == [2, 8, 8, 8]


def test_binds_unknown_dims_and_is_a_no_op_when_already_static(registries):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    prog = check_pass(model, "input-shape", {"shapes": ["x=5,4"]}, registries=registries)
    assert prog.graph().inputs[0].shape == [5, 4] and prog.symbols == {}
    static = small_cnn()
    prog = run_pass(static, "input-shape", {"shapes": ["x=1,3,8,8"]}, registries=registries)
    assert prog.graph().inputs[0].shape == [1, 3, 8, 8]


@pytest.mark.parametrize("shape, message", [
    ("y=1,3,8,8", "the model has no input 'y'"),
    ("x=1,3,8", "input 'x' has rank 4"),
    ("x=1,4,8,8", "input 'x' dimension 1 is fixed at 3, not 4"),
])
def test_contradictions_are_refused(registries, shape, message):
    with pytest.raises(ConfigError, match=message):
        run_pass(small_cnn(batch="N"), "input-shape", {"shapes": [shape]},
                 registries=registries)


def test_parse_errors():
    assert parse_input_shapes(["a=1,2", "b:c=3"]) == {"a": [1, 2], "b:c": [3]}
    for bad, message in (("x", "is not NAME=D0,D1"), ("x=1,0", "dimension '0'"),
                         ("x=1,-2", "dimension '-2'"), ("x=a", "dimension 'a'")):
        with pytest.raises(ConfigError, match=message):
            parse_input_shapes([bad])
    with pytest.raises(ConfigError, match="two shapes"):
        parse_input_shapes(["x=1", "x=2"])


def test_a_bad_shape_is_named_as_the_caller_gave_it(tmp_path, capsys):
    """The Python API names the keyword, the CLI the flag typed (not always the flag)."""
    import aicc
    from aicc.cli import main

    model = tmp_path / "m.onnx"
    model.write_bytes(small_cnn(batch="N").SerializeToString())
    with pytest.raises(ConfigError, match=r"^input_shapes: 'x:1' is not NAME=D0,D1"):
        aicc.compile(model, output=tmp_path / "q", input_shapes=["x:1"])
    assert main(["compile", f"-m={model}", "--input-shape=x:1",
                 f"-aic-binary-dir={tmp_path / 'q'}"]) == 2
    assert "--input-shape: 'x:1' is not NAME=D0,D1" in capsys.readouterr().err
