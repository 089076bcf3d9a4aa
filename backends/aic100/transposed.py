"""ConvTranspose on the simulated AIC100: its geometry for the planner and cost model, and its
arithmetic for the device numerics.

A transposed convolution is a tensor-unit op: every input pixel is multiplied by a ``C/g x
(M/g x k)`` weight block (the MACs are ``input elements x M/g x prod(kernel)``) and the products
are scattered into the output. The planner sees it as a convolution with the output's rows and
channels to split, a reduction of ``C/g x prod(kernel) / prod(strides)`` per output element (what
one output element accumulates on average) and a halo of ``ceil(k / stride)`` input rows.

Numerics: fp16 operands with fp32 accumulation, rounded to fp16 once (as the other tensor ops);
the int8 form (DQ -> ConvTranspose -> Q) accumulates the zero-point-corrected 8-bit products
exactly (in float64, where every partial sum of 8-bit products is an integer) and requantizes per
output channel like Conv (``numerics.requantize``). The reduction is never split, so the plan's
row or channel split cannot change a result; the arithmetic is the interpreter's ConvTranspose
kernel run in that precision.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx

__all__ = ["convtranspose_geometry", "convtranspose", "weight_channel_axis"]


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def weight_channel_axis() -> int:
    """The output-channel axis of a ConvTranspose weight ``[C, M/g, k...]``."""
    return 1


def convtranspose_geometry(x_shape: tuple[int, ...], x_bytes: int, w_shape: tuple[int, ...],
                           w_bytes: int, out_shape: tuple[int, ...], out_bytes: int,
                           node: onnx.NodeProto) -> tuple[int, dict[str, Any]]:
    """(MACs, planner geometry) of a ConvTranspose with these shapes."""
    a = _attrs(node)
    group = int(a.get("group", 1))
    kernel = tuple(w_shape[2:])
    nd = len(kernel)
    strides = list(a.get("strides") or [1] * nd)
    cin, cout = x_shape[1], out_shape[1]
    k = math.prod(kernel) if kernel else 1
    macs = int(np.prod(x_shape, dtype=np.int64)) * (cout // group) * k
    out_rows = out_shape[0] * (out_shape[2] if len(out_shape) > 2 else 1)
    in_rows = x_shape[0] * (x_shape[2] if len(x_shape) > 2 else 1)
    in_row = x_bytes // max(1, in_rows)
    out_elements = int(np.prod(out_shape, dtype=np.int64))
    reduce = max(1, round(macs / max(1, out_elements)))
    halo = math.ceil(kernel[0] / strides[0]) if kernel else 0
    return macs, {
        "split": "conv", "rows": out_rows, "channels": cout, "reduce": reduce,
        "groups": group, "depthwise": group > 1 and group == cin, "n_per_group": cout // group,
        "halo_rows": halo, "in_row_bytes": in_row, "out_row_bytes": out_bytes // max(1, out_rows),
        "in_unit_bytes": in_row * max(1, halo), "w_unit_bytes": w_bytes // max(1, cout),
        "spatial": nd, "transposed": True}


def convtranspose(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, node: onnx.NodeProto,
                  version: int, work: type) -> np.ndarray:
    """The op in ``work`` precision (float32 for fp16 operands, float64 for integer ones)."""
    from aicc.backends.interpreter.kernels import NodeSpec, lookup, parse_attribute

    spec = NodeSpec(name=node.name or node.output[0], op_type="ConvTranspose", version=version,
                    attrs={a.name: parse_attribute(a) for a in node.attribute},
                    inputs=tuple(node.input), outputs=tuple(node.output))
    kernel = lookup("ConvTranspose").builder(spec)
    args = [x.astype(work, copy=False), w.astype(work, copy=False)]
    if bias is not None:
        args.append(bias.astype(work, copy=False))
    return np.asarray(kernel(*args))
