"""onnx's node test cases through the public path: ``aicc.compile`` -> ``aicc.load`` -> ``run``.

This is the check that the default pipeline (fold-constants, fold-batchnorm, cleanup) does not
change what a model computes, on every backend:

* ``interpreter`` and ``cpu``: every default-domain case whose ops are all in the interpreter's op
  table ("the op list"), compared with onnx's own comparison (rtol 1e-3 / atol 1e-7 unless the
  case says otherwise);
* ``aic100`` with ``-convert-to-fp16`` (the same feature step the CLI adds): every case whose ops
  are all in the aic100 op table, within the fp16 tolerance of ``onnx_node_cases.fp16_close``.

Cases and ops come from the backends' declared op tables, so new ops are picked up with no edit
here. Each case is compiled once per backend; a case either passes, is refused up front for a
listed reason (``REFUSALS``: a clear ModelError/BackendError, never a wrong answer), or is listed
in ``EXCLUDED`` with the reason. Anything else fails the test, which also asserts the pass rate
and prints it (``-s``, and as a ``pass_rate`` user property).
"""

from __future__ import annotations

import logging
import re
import tempfile
import warnings
from pathlib import Path

import pytest

from aicc.errors import BackendError, ModelError

from onnx_node_cases import FP16_PIPELINE, fp16_close, op_list_cases, run_public

pytestmark = pytest.mark.slow

_ALIGN_CORNERS = ("align_corners with a fractional scale: onnx's reference divides by "
                  "(scale * input_length - 1), onnxruntime and the interpreter use the integer "
                  "output length (see tests/interpreter/test_interp_onnx_node.py)")
_FP16_INPUTS = ("the inputs (around 10000) are not representable in fp16 (spacing 8 there), so "
                "the softmax of their differences cannot be reproduced in fp16")

#: backend -> case name -> why the case does not pass
EXCLUDED: dict[str, dict[str, str]] = {
    "interpreter": {
        "test_resize_downsample_scales_linear_align_corners": _ALIGN_CORNERS,
        "test_resize_downsample_scales_cubic_align_corners": _ALIGN_CORNERS,
    },
    "cpu": {
        "test_resize_downsample_scales_linear_align_corners": _ALIGN_CORNERS,
        "test_resize_downsample_scales_cubic_align_corners": _ALIGN_CORNERS,
        "test_reduce_max_empty_set_bool": ("onnxruntime refuses ReduceMax over an empty bool "
                                           "set at run time (onnx defines it as False)"),
    },
    "aic100": {
        "test_resize_downsample_scales_linear_align_corners": _ALIGN_CORNERS,
        "test_resize_downsample_scales_cubic_align_corners": _ALIGN_CORNERS,
        **{name: _FP16_INPUTS for name in (
            "test_softmax_large_number", "test_softmax_large_number_expanded",
            "test_softmax_large_number_expanded_ver18", "test_logsoftmax_large_number",
            "test_logsoftmax_large_number_expanded",
            "test_logsoftmax_large_number_expanded_ver18")},
        "test_reduce_prod_default_axes_keepdims_example": (
            "the product 12! = 4.8e8 is beyond fp16's largest value 65504: inf in fp16, as on "
            "the device (given samples, -convert-to-fp16 keeps such a node in fp32)"),
        **{name: ("'axes' is a graph input: the aic100 lowering finds static shapes by running "
                  "the graph on zeros, so axes [0, 0] fail; shapes that depend on input values "
                  "need a clear refusal in backends/aic100/lower.py (h17's area)")
           for name in ("test_reduce_log_sum_asc_axes_expanded",
                        "test_reduce_log_sum_desc_axes_expanded")},
    },
}

#: backend -> (pattern of the refusal message, why that is a refusal and not a failure)
REFUSALS: dict[str, list[tuple[str, str]]] = {
    "interpreter": [
        (r"graph (input|output) '\w+' has type (optional|seq)\(",
         "non-tensor graph I/O (optional, "
         "sequence): the IR and the container carry tensors only"),
    ],
    "cpu": [
        (r"graph (input|output) '\w+' has type (optional|seq)\(", "non-tensor graph I/O"),
        (r"Could not find an implementation|Failed to find kernel",
         "onnxruntime has no CPU kernel for these types (float4e2m1, int16 Max/Min, uint Pow, "
         "uint64 TopK)"),
        (r"cannot be lowered to opset", "onnx's version converter cannot lower the op to the "
         "newest opset onnxruntime loads (Einsum-28/Range-27 on bfloat16/float16)"),
        (r"onnxruntime runs layout 0 only|one weight zero point per tensor only",
         "ONNX features onnxruntime's CPU kernels lack (batch-major RNNs, per-channel "
         "ConvInteger zero points), refused before compiling"),
    ],
    "aic100": [
        (r"graph (input|output) '\w+' has type (optional|seq)\(", "non-tensor graph I/O"),
        (r"has symbolic dimension", "the AIC100 runs static shapes; these inputs have unnamed "
                                    "dynamic dims that no symbol can bind"),
        (r"of a type the AIC100 does not have", "element types outside the aic100 backend's "
         "declared dtypes (float64, uint32/uint64, bfloat16, float8, 2-bit integers), refused "
         "by the lowering naming the tensors"),
        (r"compute in float32, which the AIC100 does not", "float64 compute, which the "
         "AIC100 does not have"),
    ],
}

#: the pass rate each backend must reach (passed / all cases it runs)
THRESHOLDS = {"interpreter": 0.99, "cpu": 0.90, "aic100": 0.80}


def _backend_cases(backend: str):
    return op_list_cases("aic100" if backend == "aic100" else "interpreter")


def _outcome(case, backend: str, folder: Path) -> tuple[str, str]:
    """("pass" | "refused" | "fail", detail)."""
    kwargs = {"pipeline": FP16_PIPELINE, "compare": fp16_close} if backend == "aic100" else {}
    try:
        run_public(case, backend, folder=folder, **kwargs)
    except (ModelError, BackendError) as e:
        text = str(e)
        for pattern, _ in REFUSALS[backend]:
            if re.search(pattern, text):
                return "refused", text.splitlines()[0]
        return "fail", f"{type(e).__name__}: {text.splitlines()[0][:300]}"
    except Exception as e:  # a wrong answer (AssertionError) or an internal error
        return "fail", f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    return "pass", ""


@pytest.mark.parametrize("backend", ["interpreter", "cpu", "aic100"])
def test_onnx_node_cases_through_the_public_path(backend, record_property, capsys):
    cases = _backend_cases(backend)
    assert cases, f"no onnx node case uses only ops of backend '{backend}'"
    excluded = EXCLUDED[backend]
    counts = {"pass": 0, "refused": 0, "fail": 0, "excluded": 0}
    failures, stale = {}, []
    logging.disable(logging.WARNING)  # opset-1 cases warn that they are converted, by design
    try:
        with tempfile.TemporaryDirectory(prefix=f"aicc-node-{backend}-") as tmp, \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name, case in cases.items():
                kind, detail = _outcome(case, backend, Path(tmp))
                if name in excluded:
                    counts["excluded"] += 1
                    if kind == "pass":
                        stale.append(name)
                    continue
                counts[kind] += 1
                if kind == "fail":
                    failures[name] = detail
    finally:
        logging.disable(logging.NOTSET)
    rate = counts["pass"] / len(cases)
    record_property("pass_rate", f"{counts['pass']}/{len(cases)}")
    with capsys.disabled():
        print(f"\n[onnx node cases, public path] {backend}: {counts['pass']}/{len(cases)} pass "
              f"({rate:.1%}); refused {counts['refused']}, excluded {counts['excluded']}"
              + (f"; excluded but passing now: {', '.join(stale)}" if stale else ""))
    assert not failures, "\n".join(f"{k}: {v}" for k, v in sorted(failures.items()))
    assert rate >= THRESHOLDS[backend], f"{backend}: pass rate {rate:.1%}"


def test_exclusions_name_cases_that_exist():
    for backend, table in EXCLUDED.items():
        known = set(_backend_cases(backend))
        unknown = sorted(set(table) - known)
        assert not unknown, f"{backend}: {unknown}"
        assert all(reason.strip() for reason in table.values())
