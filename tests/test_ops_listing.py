"""``aicc ops`` / ``aicc compile -operators-supported=onnx`` (issue 12): the listing says exactly
what a compile accepts and refuses, for every backend, because it is derived from the same check
(``Backend.unsupported_nodes``); these tests compile real one-node models and compare."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper

import aicc
from aicc.cli import main
from aicc.errors import BackendError
from aicc.opsupport import format_listing, lowering_passes, supported_ops

BACKENDS = ("cpu", "interpreter", "aic100")
#: ops whose support differs between backends (now or as work lands): unary float ops and
#: comparisons, each a valid one-node model at opset 17
UNARY = ("Relu", "Erf", "Round", "Softplus", "Sign", "Atan", "IsNaN", "HardSwish", "Elu")
COMPARE = ("Less", "LessOrEqual", "GreaterOrEqual", "Equal")


def _one_node(op: str) -> onnx.ModelProto:
    binary = op in COMPARE
    out_type = TP.BOOL if binary or op == "IsNaN" else TP.FLOAT
    inputs = [helper.make_tensor_value_info(n, TP.FLOAT, [2, 3]) for n in ("a", "b")[:1 + binary]]
    node = helper.make_node(op, [i.name for i in inputs], ["y"], name="the_node")
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", out_type,
                                                                                  [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def listings(registries):
    return {name: {o.op: o for o in supported_ops(registries.backends.get(name).cls())
                   if o.domain == ""} for name in BACKENDS}


@pytest.mark.parametrize("backend", BACKENDS)
def test_listing_agrees_with_what_compile_refuses(listings, backend, tmp_path, registries):
    lowered = lowering_passes(registries.passes)
    for op in UNARY + COMPARE:
        if op in lowered:   # a lowering pass may make an unlisted op compile: listed apart
            continue
        listed = op in listings[backend] and any(lo <= 17 <= hi
                                                 for lo, hi in listings[backend][op].opsets)
        try:
            aicc.compile(_one_node(op), backend=backend, output=tmp_path / f"{op}.qpc")
            refused = False
        except BackendError as e:
            refused = "cannot run: node 'the_node'" in str(e)
            assert refused or listed, (op, str(e))   # another failure only for a listed op
        assert refused != listed, (backend, op, "listed" if listed else "not listed")


def test_opset_ranges_follow_the_interpreter_kernels(listings):
    """The interpreter implements an op from some version on: older opsets are not listed."""
    from aicc.backends.interpreter.kernels import lookup
    versions: dict[str, list[int]] = {}
    for s in onnx.defs.get_all_schemas_with_history():
        if s.domain == "":
            versions.setdefault(s.name, []).append(s.since_version)
    for op, support in listings["interpreter"].items():
        entry = lookup(op)
        assert entry is not None, op
        first = min(v for v in versions[op] if v >= entry.min_version)
        assert support.opsets[0][0] == max(first, 7), op


def test_cpu_lists_onnxruntime_contrib_ops_and_their_types(registries):
    ops = {o.label: o for o in supported_ops(registries.backends.get("cpu").cls())}
    lstm = ops["com.microsoft.DynamicQuantizeLSTM"]
    assert lstm.opsets == ((1, 1),) and {"float32", "int8", "uint8"} <= set(lstm.dtypes)
    assert "float64" not in ops["Conv"].dtypes      # no double Conv kernel in onnxruntime


@dataclasses.dataclass
class _Entry:
    name: str
    cls: type


class _Passes:
    def __init__(self, *entries):
        self._entries = entries

    def entries(self):
        return list(self._entries)


def test_passes_declaring_lowerings_are_listed_for_backends_lacking_the_op(registries):
    class LowerMish(aicc.Pass):
        name = "lower-mish"
        lowers = ("Mish", "Relu")

    lowers = lowering_passes(_Passes(_Entry("cleanup", object), _Entry("lower-mish", LowerMish)))
    assert lowers == {"Mish": ["lower-mish"], "Relu": ["lower-mish"]}
    backend = registries.backends.get("aic100").cls()
    lines = format_listing({"aic100": backend}, lowers)
    has_mish = any(o.op == "Mish" for o in supported_ops(backend))
    assert ("    Mish: lower-mish" in lines) != has_mish
    assert "    Relu: lower-mish" not in lines              # aic100 runs Relu itself


def test_aicc_ops_cli(capsys):
    assert main(["ops", "--backend", "interpreter"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("backend 'interpreter': ")
    relu = next(line for line in out if line.split()[:1] == ["Relu"])
    assert "float32" in relu and "float16" in relu
    assert not any(line.startswith("backend 'cpu'") for line in out)


def test_compile_operators_supported(capsys):
    assert main(["compile", "-operators-supported=onnx", "-aic-hw"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("backend 'aic100': ") and "backend 'cpu'" not in out
    assert main(["compile", "-operators-supported=caffe2"]) == 2
    err = capsys.readouterr().err
    assert "-operators-supported: unknown framework 'caffe2'" in err
    assert "use -operators-supported=onnx" in err
    np.testing.assert_equal(main(["ops", "--backend", "nope"]), 2)


def test_flags_the_listing_would_ignore_are_refused(capsys, example_model_path):
    """The listing compiles nothing: a model or any compile flag beside it is refused (exit 2),
    never silently dropped."""
    assert main(["compile", "-operators-supported=onnx", f"-m={example_model_path}"]) == 2
    err = capsys.readouterr().err
    assert "lists operators and compiles nothing, so -m would do nothing" in err
