"""aic100 against the interpreter node by node, on onnx's node test cases, for every op aic100
claims (``Aic100Backend.op_types``).

This is the lowering's own check, complementary to the cross-backend harness that runs onnx's
cases through ``aicc.compile``: each case goes straight into the backend (lowering, a plan split
over two cores, the device numerics) in the precision the device runs, float32 cases converted to
float16 (``aic100_node_cases``), and is compared with the interpreter running the same fp16 model
(which computes fp16 as the device does). Tolerance: ``aic100_node_cases.FP16_RTOL/FP16_ATOL``.

Every claimed op must agree on at least one case, so a lowering bug cannot hide behind the
table; a case aic100 refuses must be refused with aicc's BackendError up front (never a crash
while running) and is reported, not failed. The int8 forms of the tensor ops are checked in
``test_aic100_numerics.py`` (and ConvTranspose here, below).
"""

from __future__ import annotations

import collections
import functools

import numpy as np
import pytest
from onnx import TensorProto, numpy_helper

from aic100_models import compile_aic, qdq_op_model
from aic100_node_cases import agree, node_cases, to_fp16_case
from aicc.backends.aic100 import Aic100Backend
from aicc.backends.interpreter.engine import Interpreter
from aicc.backends.interpreter.kernels import supported_op_types
from aicc.errors import AiccError

#: claimed ops with no onnx node case that has an fp16 form, and what covers them instead
COVERED_ELSEWHERE = {
    "QuantizeLinear": "int8 programs: test_aic100_numerics.py (every quantized model)",
    "DequantizeLinear": "int8 programs: test_aic100_numerics.py (every quantized model)",
}


def _ops(case) -> set[str]:
    return {n.op_type for n in case.model.graph.node}


@functools.cache
def _by_op() -> dict[str, list[str]]:
    claimed = Aic100Backend.op_types
    out: dict[str, list[str]] = collections.defaultdict(list)
    for name, case in sorted(node_cases().items()):
        ops = _ops(case)
        if len(ops) == 1 and ops <= claimed:
            out[next(iter(ops))].append(name)
    return out


def _run_case(name: str) -> tuple[str, str]:
    """("agree" | "refused" | "no-fp16" | "differ", detail)."""
    case = node_cases()[name]
    inputs, _ = case.data_sets[0]
    inputs = [numpy_helper.to_array(x) if isinstance(x, TensorProto) else x for x in inputs]
    converted = to_fp16_case(case.model, inputs)
    if converted is None:
        return "no-fp16", "no valid float16 form"
    model, feeds = converted
    try:
        ref = Interpreter(model).run(feeds)
    except AiccError as e:
        return "no-fp16", f"the interpreter refuses the fp16 form: {e}"
    try:
        exe = compile_aic(model, num_cores=2, multicore="split")
    except AiccError as e:  # refused up front, with the reason
        return "refused", str(e).splitlines()[0]
    dev = exe.run(feeds)
    problems = [f"{k}: {why}" for k in ref if (why := agree(np.asarray(dev[k]),
                                                            np.asarray(ref[k]))) is not None]
    return ("differ", "; ".join(problems)) if problems else ("agree", "")


@pytest.mark.parametrize("op", sorted(Aic100Backend.op_types - set(COVERED_ELSEWHERE)))
def test_op_agrees_with_the_interpreter(op):
    names = _by_op().get(op, [])
    assert names, f"{op}: aic100 claims it but no onnx node case runs it alone"
    results = {n: _run_case(n) for n in names}
    differ = {n: d for n, (kind, d) in results.items() if kind == "differ"}
    assert not differ, differ
    agreed = [n for n, (kind, _) in results.items() if kind == "agree"]
    assert agreed, f"{op}: no case ran on aic100: {results}"


def test_claimed_ops_have_interpreter_kernels_and_exemptions_are_real():
    assert Aic100Backend.op_types <= supported_op_types()
    assert set(COVERED_ELSEWHERE) <= Aic100Backend.op_types


@pytest.mark.parametrize("per_channel", [True, False])
def test_int8_convtranspose_within_one_step(per_channel):
    """DQ -> ConvTranspose -> Q runs on int8 operands with int32 accumulation, requantized per
    output channel: within one quantization step of the interpreter's float arithmetic."""
    model = qdq_op_model("ConvTranspose", per_channel=per_channel, stride=2)
    x = np.random.default_rng(1).uniform(-3, 3, (2, 8, 9, 9)).astype(np.float32)
    exe = compile_aic(model, num_cores=2)
    step = next(s for s in exe.plan.low.steps if s.op == "ConvTranspose")
    assert step.kind == "tensor" and step.integer is not None and step.precision == "int8"
    got, ref = exe.run({"x": x})["y"], Interpreter(model).run({"x": x})["y"]
    assert np.max(np.abs(got - ref)) <= 0.08 + 1e-6  # one step of the output scale 0.08
