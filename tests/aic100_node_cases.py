"""onnx's node test cases in the precision the AIC100 runs: float32 cases converted to float16
(graph I/O, initializers, Constant values, Cast targets) and input dims bound to the data's
shapes, for comparing the aic100 lowering with the interpreter node by node.

``FP16_RTOL`` / ``FP16_ATOL`` define fp16 agreement: ``|device - reference| <= FP16_ATOL *
max(1, max |reference|) + FP16_RTOL * |reference|``, non-finite values in the same places.
FP16_RTOL is two units in the last place of fp16 (10 stored mantissa bits: 2**-10 relative per
unit): the two sides may round an fp32 accumulation to fp16 on either side of a tie after summing
in a different order. FP16_ATOL covers cancellation in a sum whose terms are much larger than the
result, at one fp16 unit of the largest value. Integer and boolean results must be equal.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

__all__ = ["FP16_RTOL", "FP16_ATOL", "node_cases", "to_fp16_case", "agree"]

FP16_RTOL = 2.0 ** -9
FP16_ATOL = 2.0 ** -10


@functools.cache
def node_cases() -> dict[str, object]:
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = load_model_tests(kind="node")
    return {c.name: c for c in cases
            if {n.domain for n in c.model.graph.node} <= {"", "ai.onnx"}
            and not c.model.functions}


def _half_tensor(t: TensorProto) -> TensorProto:
    if t.data_type != TensorProto.FLOAT:
        return t
    out = numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name)
    return out


def to_fp16_case(model: onnx.ModelProto, inputs: list[np.ndarray]
                 ) -> tuple[onnx.ModelProto, dict[str, np.ndarray]] | None:
    """The case with every float32 tensor in float16, or None when it has no valid fp16 form
    (an input that must stay float32, such as Resize's scales)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    for node in g.node:  # LayerNormalization's optional Mean/InvStdDev stay float32: drop them
        if node.op_type == "LayerNormalization" and len(node.output) > 1:
            dropped = set(node.output[1:])
            del node.output[1:]
            keep = [vi for vi in g.output if vi.name not in dropped]
            del g.output[:]
            g.output.extend(keep)
    for vi in list(g.input) + list(g.output):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT16
    for i, t in enumerate(list(g.initializer)):
        g.initializer[i].CopyFrom(_half_tensor(t))
    for node in g.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and node.op_type == "Constant":
                a.t.CopyFrom(_half_tensor(a.t))
            if node.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.FLOAT16
    # the data's shapes replace symbolic or missing input dims (the device runs static shapes)
    fed = dict(zip([vi.name for vi in g.input if vi.name not in {t.name for t in g.initializer}],
                   inputs))
    for vi in g.input:
        if vi.name in fed and vi.type.HasField("tensor_type"):
            shape = vi.type.tensor_type.shape
            del shape.dim[:]
            for d in np.shape(fed[vi.name]):
                shape.dim.add().dim_value = int(d)
    del g.value_info[:]
    try:
        onnx.checker.check_model(m)
        onnx.shape_inference.infer_shapes(m, strict_mode=True)
    except Exception:  # onnx raises several types; no fp16 form
        return None
    names = [vi.name for vi in g.input if vi.name not in {t.name for t in g.initializer}]
    feeds = {}
    for name, x in zip(names, inputs):
        x = np.asarray(x)
        with np.errstate(over="ignore"):  # values beyond fp16 become inf, as on the device
            feeds[name] = x.astype(np.float16) if x.dtype == np.float32 else x
    return m, feeds


def agree(device: np.ndarray, reference: np.ndarray) -> str | None:
    """None when the two agree (see the module docstring), else what differs."""
    if device.shape != reference.shape or device.dtype != reference.dtype:
        return f"{device.dtype}{list(device.shape)} vs {reference.dtype}{list(reference.shape)}"
    if reference.dtype.kind != "f":
        bad = int(np.sum(device != reference))
        return None if bad == 0 else f"{bad} element(s) differ"
    d, r = device.astype(np.float64), reference.astype(np.float64)
    if not np.array_equal(np.isfinite(d), np.isfinite(r)) or not np.array_equal(
            d[~np.isfinite(d)], r[~np.isfinite(r)], equal_nan=True):
        return "non-finite values differ"
    fin = np.isfinite(r)
    if not fin.any():
        return None
    scale = max(1.0, float(np.max(np.abs(r[fin]))))
    err = np.abs(d[fin] - r[fin])
    limit = FP16_ATOL * scale + FP16_RTOL * np.abs(r[fin])
    if np.all(err <= limit):
        return None
    return f"max |error| {err.max():.3g} (limit {limit[np.argmax(err - limit)]:.3g})"
