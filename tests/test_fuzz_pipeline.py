"""Differential fuzz: small random graphs through the default pipeline on every backend, compared
with onnxruntime on the original model.

Every generated graph holds a Conv followed by BatchNormalization (fold-batchnorm must fuse it),
a constant subgraph feeding the computation (fold-constants must evaluate it) and a node whose
output nothing reads (cleanup must drop it); each example asserts all three are gone from the
compiled graph, so every default-pipeline pass is exercised by every example. Between them sit a
random chain of elementwise ops, a Transpose/Reshape/Concat step and a MatMul or Gemm, drawn
from the ops all three backends declare. ``aic100`` runs with ``-convert-to-fp16``.

Tolerances: interpreter and cpu compute in float32, and folding BatchNormalization into the
Conv weights reorders float32 rounding: |got - ref| <= 1e-4 * (|ref| + max|ref|) + 1e-6.
aic100 computes in fp16: 8 fp16 ulps (8 * 2**-10) relative to the value plus the same relative
to the output's largest magnitude. The profile is derandomized (fixed examples in CI) and bounded
to ``MAX_EXAMPLES`` examples.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from aicc.compiler import CompileRequest, compile_model, default_pipeline
from aicc.pass_order import Requested
from aicc.plugins import load_registries

import aicc
from onnx_node_cases import FP16_RTOL, backend_op_types, registries

MAX_EXAMPLES = 10
BACKENDS = ("interpreter", "cpu", "aic100")
_UNARY = ("Relu", "Sigmoid", "Tanh", "Abs", "Neg")
_BINARY = ("Add", "Mul", "Sub")
_FP16_PIPELINE = default_pipeline(load_registries(), requested=[Requested("convert-fp16", {"all": True})])


@functools.cache
def _common_ops() -> frozenset[str]:
    ops = None
    for backend in BACKENDS:
        ops = backend_op_types(backend) if ops is None else ops & backend_op_types(backend)
    return ops


class _Builder:
    def __init__(self, rng: np.random.Generator):
        self.rng, self.nodes, self.inits, self.n = rng, [], [], 0

    def name(self, stem: str) -> str:
        self.n += 1
        return f"{stem}{self.n}"

    def const(self, shape, low=-1.0, high=1.0) -> str:
        name = self.name("w")
        self.inits.append(numpy_helper.from_array(
            self.rng.uniform(low, high, shape).astype(np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out


@st.composite
def graphs(draw):
    """(model, feeds): a Conv+BN, a constant subgraph, elementwise ops, a layout step, a
    MatMul/Gemm and a dead node."""
    ops = _common_ops()
    c, h, w = draw(st.integers(1, 3)), draw(st.integers(2, 5)), draw(st.integers(2, 5))
    cout, k = draw(st.integers(1, 4)), draw(st.sampled_from([1, 3]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    b = _Builder(rng)
    conv_in = [("x"), b.const([cout, c, k, k])] + ([b.const([cout])] if draw(st.booleans())
                                                    else [])
    y = b.node("Conv", conv_in, pads=[k // 2] * 4)
    y = b.node("BatchNormalization", [y, b.const([cout], 0.5, 2.0), b.const([cout]),
                                      b.const([cout]), b.const([cout], 0.5, 2.0)],
               epsilon=1e-5)
    b.node("Mul", [y, b.const([1])])  # dead: nothing reads it
    folded = b.node(draw(st.sampled_from(["Add", "Mul"])),
                    [b.const([1, cout, 1, 1]), b.const([1, cout, 1, 1])])  # constant subgraph
    for op in draw(st.lists(st.sampled_from([o for o in _UNARY + _BINARY if o in ops]),
                            min_size=1, max_size=3)):
        y = b.node(op, [y, folded] if op in _BINARY else [y])
    layout = draw(st.sampled_from([o for o in ("Transpose", "Reshape", "Concat") if o in ops]))
    rows, cols = cout, h * w
    if layout == "Transpose":
        y = b.node("Transpose", [y], perm=[0, 1, 3, 2])
    elif layout == "Concat":
        y = b.node("Concat", [y, y], axis=1)
        rows = 2 * cout
    shape = b.name("shape")
    b.inits.append(numpy_helper.from_array(np.array([rows, cols], np.int64), shape))
    y = b.node("Reshape", [y, shape])
    n = draw(st.integers(1, 4))
    if draw(st.sampled_from([o for o in ("MatMul", "Gemm") if o in ops])) == "MatMul":
        y = b.node("MatMul", [y, b.const([cols, n])])
    else:
        trans = draw(st.booleans())
        y = b.node("Gemm", [y, b.const([n, cols] if trans else [cols, n]), b.const([n])],
                   transB=int(trans), alpha=0.5)
    graph = helper.make_graph(b.nodes, "fuzz",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             [1, c, h, w])],
                              [helper.make_tensor_value_info(y, TensorProto.FLOAT, [rows, n])],
                              initializer=b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = {"x": rng.uniform(-2, 2, [1, c, h, w]).astype(np.float32)}
    return model, feeds


def _close(ref: np.ndarray, got: np.ndarray, rtol: float, atol: float) -> None:
    assert got.shape == ref.shape and got.dtype == np.float32, (got.shape, got.dtype)
    ref = ref.astype(np.float64)
    scale = float(np.max(np.abs(ref), initial=0.0))
    err = np.abs(got.astype(np.float64) - ref)
    bound = rtol * (np.abs(ref) + scale) + atol
    assert np.all(err <= bound), f"worst error {float(err.max())} at output scale {scale}"


def _compiled_ops(path: Path) -> list[str]:
    model = onnx.load(str(next(path.glob("*/model.onnx"))), load_external_data=False)
    return [n.op_type for n in model.graph.node]


@pytest.mark.slow
@settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(graphs())
def test_default_pipeline_matches_onnxruntime_on_every_backend(case):
    model, feeds = case
    onnx.checker.check_model(model, full_check=True)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    ref = ort.InferenceSession(model.SerializeToString(), so,
                               providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    before = [n.op_type for n in model.graph.node]
    for backend in BACKENDS:
        fp16 = backend == "aic100"
        with tempfile.TemporaryDirectory() as tmp:
            req = CompileRequest(model=model, backend=backend,
                                 pipeline=_FP16_PIPELINE if fp16 else None,
                                 output=Path(tmp) / "p.qpc")
            path, _, _ = compile_model(req, registries())
            after = _compiled_ops(path)
            got = aicc.load(path, registries=registries()).run(feeds)
        # fold-batchnorm, fold-constants and cleanup each removed what they must
        assert "BatchNormalization" not in after, (backend, after)
        assert after.count("Mul") + after.count("Add") < before.count("Mul") + \
            before.count("Add") - 1, (backend, before, after)
        assert len(after) <= len(before) - 3 + (after.count("Cast") if fp16 else 0), \
            (backend, before, after)
        out = next(iter(got.values()))
        if fp16:
            _close(ref, out, FP16_RTOL, 1e-3)
        else:
            _close(ref, out, 1e-4, 1e-6)
