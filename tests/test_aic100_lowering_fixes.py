"""Lowering fixes found by the node-by-node agreement check and by BERT-large: what aic100 now
refuses up front (and how), embedding lookups in the cost model, and the batch analysis."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from aic100_models import compile_aic
from aicc.backends.interpreter.engine import Interpreter
from aicc.errors import BackendError


def _model(nodes, inputs, outputs, inits=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_types_the_device_lacks_are_refused_by_name():
    model = _model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.DOUBLE)],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 3])],
                   [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [2, 3])])
    with pytest.raises(BackendError, match=r"1 tensor\(s\) of a type the AIC100 does not have: "
                                           r"'y' \(float64\).*types it runs: bool, float16"):
        compile_aic(model)


def test_sequences_are_refused_by_name():
    seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT16, [2])
    model = _model([helper.make_node("Identity", ["s"], ["t"])], [seq],
                   [helper.make_tensor_sequence_value_info("t", TensorProto.FLOAT16, [2])])
    with pytest.raises(BackendError, match="'s' is a sequence, not a tensor"):
        compile_aic(model)


def test_an_empty_input_is_a_static_shape():
    # an empty axes list (reduce over everything) used to be refused as a symbolic dimension
    model = _model([helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 3]),
                    helper.make_tensor_value_info("axes", TensorProto.INT64, [0])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [1, 1])])
    feeds = {"x": np.arange(6, dtype=np.float16).reshape(2, 3),
             "axes": np.zeros(0, np.int64)}
    exe = compile_aic(model, num_cores=2)
    np.testing.assert_array_equal(exe.run(feeds)["y"], Interpreter(model).run(feeds)["y"])


def test_a_shape_fed_as_input_is_not_split_as_a_batch():
    # 'shape' has as many elements as the batch: it must still reach Reshape whole
    model = _model([helper.make_node("Reshape", ["x", "shape"], ["r"]),
                    helper.make_node("Relu", ["r"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 6]),
                    helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [4, 3])])
    exe = compile_aic(model, num_cores=2, multicore="split")
    assert not exe.plan.low.batch_separable
    feeds = {"x": np.arange(12, dtype=np.float16).reshape(2, 6) - 6,
             "shape": np.array([4, 3], np.int64)}
    np.testing.assert_array_equal(exe.run(feeds)["y"], Interpreter(model).run(feeds)["y"])


def _embedding(vocab: int, batch: int = 4):
    table = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((vocab, 64)).astype(np.float16), "table")
    return _model([helper.make_node("Gather", ["table", "ids"], ["e"]),
                   helper.make_node("Relu", ["e"], ["y"])],
                  [helper.make_tensor_value_info("ids", TensorProto.INT64, [batch, 16])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [batch, 16, 64])],
                  [table])


def test_an_embedding_lookup_reads_the_rows_it_gathers():
    small, big = (compile_aic(_embedding(v), num_cores=1) for v in (1000, 100_000))
    # the table's size does not change what a lookup reads, and it stays in DDR
    assert big.cost.ddr_bytes == small.cost.ddr_bytes
    rows, ids = 4 * 16 * 64 * 2, 4 * 16 * 8
    assert big.cost.ddr_bytes == 2 * rows + ids  # rows in, ids in, output out: not 12.8 MB
    assert next(a for a in big.plan.allocations if a.name == "table").placement == "ddr"
    # a table lookup keeps the samples apart: the batch can split
    assert big.plan.low.batch_separable
    ids = np.random.default_rng(1).integers(0, 100_000, (4, 16))
    exe = compile_aic(_embedding(100_000), num_cores=4, multicore="split")
    assert exe.plan.groups > 1
    np.testing.assert_array_equal(exe.run({"ids": ids})["y"],
                                  Interpreter(_embedding(100_000)).run({"ids": ids})["y"])
